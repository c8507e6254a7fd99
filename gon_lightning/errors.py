"""Errors the user can fix; the CLI prints their message and exits non-zero instead of a traceback."""


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a wrong path, an impossible option combination."""
