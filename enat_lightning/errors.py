"""Errors every layer may raise (the bottom of the import graph: imports nothing of the package)."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment: the CLI prints it as one line, without a traceback.

    The message names the culprit (file, key, value) and what to do next.
    """
