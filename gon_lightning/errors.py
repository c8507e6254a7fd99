"""Errors the user can fix; the CLI prints their message and exits non-zero instead of a traceback."""

from __future__ import annotations

import errno
import importlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lightning_fabric.utilities.exceptions import MisconfigurationException

MODEL = "model.init_args."  # the full path of a model option, as `--model.init_args.nz` names it
DATA = "data.init_args."


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a wrong path, an impossible option combination."""


#: set to 1 to see the full traceback of any error, including those told in one line
DEBUG_ENV = "GON_LIGHTNING_DEBUG"
#: the loggers people use beside W&B, by class: the extra of gon-lightning that installs what each needs
LOGGER_EXTRAS = {"TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow"}
# jsonargparse's words for a class it could not instantiate
_CLASS_PATH = re.compile(r"Problem with given class_path '(?P<class_path>[\w.]+)'")
# Lightning's refusals that do not say which option to change, and what to do instead
_LIGHTNING_HINTS = {
    re.compile(r"No supported gpu backend found|CUDAAccelerator` can not run on your system|MPSAccelerator` can not"): (
        "--trainer.accelerator: no GPU can be used on this machine (torch sees none); use --trainer.accelerator cpu, "
        "or auto to take a GPU wherever there is one"
    ),
}


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and the errors behind it: jsonargparse and Lightning wrap what they catch."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any: jsonargparse wraps errors raised while instantiating classes."""
    for link in _chain(error):
        if isinstance(link, UserError):
            return link
        attached = getattr(link, "gon_lightning_user_error", None)  # see `attach`
        if attached is not None:
            return attached
    return None


def configuration_error(error: BaseException) -> str | None:
    """The one line a configuration error is told in, or None for anything else (a bug: its traceback is wanted).

    Configuration errors are ours (`UserError`), Lightning's refusals of an option combination
    (`MisconfigurationException`) and a class named in the config that cannot be built because a package it needs
    is missing (a logger's, say): jsonargparse reports those as a `class_path` problem caused by an ImportError.
    """
    chain = list(_chain(error))
    if (ours := user_error_in(error)) is not None:
        return str(ours)
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    given = next((found["class_path"] for e in chain if (found := _CLASS_PATH.search(str(e)))), None)
    if missing is not None and given is not None:
        return _missing_package(given, missing)
    refusal = next((e for e in chain if isinstance(e, MisconfigurationException)), None)
    if refusal is not None:
        message = " ".join(str(refusal).split())
        hint = next((hint for pattern, hint in _LIGHTNING_HINTS.items() if pattern.search(message)), None)
        return hint or f"Lightning refused the options: {message}"
    return None


def _missing_package(class_path: str, missing: ImportError) -> str:
    if extra := LOGGER_EXTRAS.get(class_path.rpartition(".")[2]):
        return f"{_option_of(class_path)} needs {extra}, which is not installed: pip install 'gon-lightning[{extra}]'"
    return f"{_option_of(class_path)} needs a package that is not installed: {missing}"


def _option_of(class_path: str) -> str:
    """The class as the command line gives it: `--trainer.logger TensorBoardLogger` (its constructor failed)."""
    from pytorch_lightning import Callback, LightningDataModule, LightningModule
    from pytorch_lightning.loggers import Logger

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return name
    options = {Logger: "--trainer.logger", Callback: "--trainer.callbacks", LightningModule: "--model"}
    options[LightningDataModule] = "--data"
    return next((f"{option} {name}" for base, option in options.items() if issubclass(cls, base)), name)


def debugging() -> bool:
    """Whether the user asked for tracebacks (`GON_LIGHTNING_DEBUG=1`)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


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
