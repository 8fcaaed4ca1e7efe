"""The reader's one-line errors: ImageReadError for any unreadable input, UnrecognisedImage for no image."""

from __future__ import annotations

from ...errors import CoronetError

_MAX_DETAIL = 160  # characters of an underlying library message we keep


class ImageReadError(CoronetError, ValueError):
    """The one error raised for every input :func:`read_image` cannot read.

    ``str(err)`` is ``f"{path}: {problem}"`` on a single line; any line break
    in either part is shown as a space so that log lines stay whole.
    """

    def __init__(self, path: str, problem: str) -> None:
        # Both parts go to Exception.args so the error pickles (e.g. across
        # DataLoader worker processes) and unpickles to an equal error.
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{one_line(self.path)}: {one_line(self.problem)}"


class UnrecognisedImage(ImageReadError):
    """Bytes that are no image of any format the reader knows (``problem``: "not an image (unrecognised
    format)")."""

    def __init__(self, path: str, problem: str = "not an image (unrecognised format)") -> None:
        super().__init__(path, problem)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, line breaks included, as one space."""
    return " ".join(str(text).split())


def detail(exc: BaseException) -> str:
    """A short, single-line description of a library exception."""
    text = one_line(str(exc)) or type(exc).__name__
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text
