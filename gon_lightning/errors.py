"""Errors the user can fix; the CLI prints their message and exits non-zero instead of a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a wrong path, an impossible option combination."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any: jsonargparse wraps errors raised while instantiating classes."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error
