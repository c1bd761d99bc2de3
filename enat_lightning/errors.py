"""Errors every layer may raise (the bottom of the import graph: imports nothing of the package)."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment: the CLI prints it as one line, without a traceback.

    The message names the culprit (file, key, value) and what to do next.
    """


class InvalidInput(UserError, ValueError):
    """A bad value in the user's input (a flag, a config key, a spec or data file), raised where that input
    is checked. Also a ValueError, so Python callers may catch it as one."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user must provide (or build first) is absent. The message names it and the exact
    command that makes it. Also a FileNotFoundError for Python callers."""
