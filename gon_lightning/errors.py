"""Errors the user can fix; the CLI prints their message and exits non-zero instead of a traceback."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MODEL = "model.init_args."  # the full path of a model option, as `--model.init_args.nz` names it
DATA = "data.init_args."


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a wrong path, an impossible option combination."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any: jsonargparse wraps errors raised while instantiating classes."""
    while error is not None and not isinstance(error, UserError):
        attached = getattr(error, "gon_lightning_user_error", None)  # see `attach`
        if attached is not None:
            return attached
        error = error.__cause__ or error.__context__
    return error


def require(ok: bool, option: str, value: Any, needs: str) -> None:
    """Refuse an option value: `option` is its full path (`model.init_args.nz`), `needs` what it must be."""
    if not ok:
        raise UserError(f"{option} must be {needs}, got {value!r}")


def positive(option: str, value: Any) -> None:
    require(isinstance(value, (int, float)) and value > 0, option, value, "positive")


def positive_int(option: str, value: Any) -> None:
    require(isinstance(value, int) and value >= 1, option, value, "a positive integer")


def positive_ints(prefix: str, **values: Any) -> None:
    """`positive_int` for several options of one group (`prefix`: e.g. "images.")."""
    for name, value in values.items():
        positive_int(prefix + name, value)


# A write that fails for one of these is the file system's doing, not the program's: the user can fix it
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class WriteError(UserError):
    """A file could not be written: its disk is full, over quota, read-only, or not ours to write."""


ONLY_WRITES_FAIL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # a refused read is EACCES or EPERM too


def write_failure(error: BaseException | None, errnos: Any = WRITE_FAILURES) -> OSError | None:
    """The OSError of a failed write behind `error`, if any (torch.save wraps it in a RuntimeError); `errnos`:
    the errors that count."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in errnos:
            return error
        error = error.__cause__ or error.__context__
    return None


def write_error(
    error: BaseException, what: str, folder: Any, survived: str, errnos: Any = WRITE_FAILURES
) -> WriteError | None:
    """The one line a failed write of `what` into `folder` deserves (what survived it included), or None when
    `error` is not the file system refusing a write (`errnos`, as `write_failure`)."""
    cause = write_failure(error, errnos)
    if cause is None:
        return None
    reason = WRITE_FAILURES[cause.errno]
    return WriteError(f"could not write {what} to {folder}: {reason} ({errno.errorcode[cause.errno]}); {survived}")


@contextmanager
def writing(what: str, folder: Any, survived: Callable[[], str]) -> Iterator[None]:
    """Turn a write refused by the file system (full, over quota, read-only, no permission) into a `WriteError`
    naming `folder`, `what` was being written and `survived()`: what is still intact."""
    try:
        yield
    except Exception as error:
        failed = write_error(error, what, folder, survived())
        if failed is None:
            raise
        raise failed from error


def attach(error: BaseException, cause: UserError) -> None:
    """Make `cause` what the CLI says when `error` ends the command: a callback's `on_exception` sees the error
    Lightning then re-raises, and cannot replace it."""
    error.gon_lightning_user_error = cause  # type: ignore[attr-defined]
