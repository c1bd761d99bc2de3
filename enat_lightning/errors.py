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


class Terminated(UserError):
    """The run was asked to stop (SIGTERM) and stopped at a safe point; rerunning the command resumes it.
    The CLI exits with ``exit_code`` (128 + SIGTERM), as a killed process would, after the one line."""

    exit_code = 143


def env_flag(name: str) -> bool:
    """An on/off environment switch read as users expect: unset, "", "0", "false", "no", "off" mean off."""
    import os

    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the file, the real cause, and advice that fits that cause.

    The disk-full advice only for a full disk or quota (ENOSPC, EDQUOT); a read-only file system says
    so; everything else (an unreadable image, a truncated file, a broken pipe, a network mount) is
    named as it is. Outputs are atomic, so a failed write never leaves half a file."""
    import errno

    cause = e.strerror or str(e) or type(e).__name__
    files = [f for f in (getattr(e, "filename", None), getattr(e, "filename2", None)) if f]
    where = f" ({' -> '.join(str(f) for f in files)})" if files else ""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"{cause}{where}; nothing was half-written (outputs are atomic): free space or choose another "
                f"--out, then rerun")
    if e.errno == errno.EROFS:
        return f"{cause}{where}: that file system is read-only; choose another --out"
    return f"{cause}{where}"
