"""Errors the user can fix; the CLI prints their message and exits non-zero instead of a traceback."""

from __future__ import annotations

from typing import Any

MODEL = "model.init_args."  # the full path of a model option, as `--model.init_args.nz` names it
DATA = "data.init_args."


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a wrong path, an impossible option combination."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any: jsonargparse wraps errors raised while instantiating classes."""
    while error is not None and not isinstance(error, UserError):
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
