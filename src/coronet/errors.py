"""The one base class of coronet's domain errors: what a user did or has, said in one line.

The command line turns any of these (and the ``ValueError`` / ``FileNotFoundError`` a setting or
a path raises) into one line on stderr and exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class CoronetError(Exception):
    """A problem with the user's input, data, settings or files (not a bug)."""


#: What the command line reports in one line (exit status 2) instead of a traceback.
USER_ERRORS = (CoronetError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a missing-file error names its file)."""
    if isinstance(error, OSError) and error.filename and error.strerror:  # "[Errno 2] ..." reads badly
        return " ".join(f"{error.filename}: {error.strerror.lower()}".split())
    return " ".join((str(error) or type(error).__name__).split())


__all__ = ["CoronetError", "USER_ERRORS", "one_line"]
