"""The decoders' warnings about a file, collected for that file alone (per thread), never shown as warnings.

Pillow's decompression-bomb warning is made an error meanwhile."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from .errors import detail

# While any thread decodes, one warnings state is in force process-wide: every UserWarning from the decoders is
# shown (not once per place, so each file gets its own), Pillow's bomb warning is an error, and ``showwarning``
# routes a warning raised by a decoding thread to that thread's list; other threads' warnings go where they went
# before. The state is entered by the first decoding thread and left by the last, under a lock, so concurrent
# decodes (the web service's worker threads) never restore each other's filters halfway, as overlapping
# ``warnings.catch_warnings()`` blocks would.
_DECODER_MODULES = r"(PIL|pydicom|coronet\.data\.imageio)(\.|$)"
_NOT_ABOUT_THE_FILE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)  # about code: passed on
_warnings_lock = threading.Lock()
_decoding: dict[int, list[str]] = {}  # thread id -> that thread's warnings
_warnings_state: list = []  # the entered catch_warnings, while any thread decodes
_passed_on = [warnings.showwarning]  # where other warnings go: the showwarning in force when decoding began


@contextmanager
def decoder_warnings() -> Iterator[list[str]]:
    """The warnings this thread raises inside the block: one line each, each once."""
    me = threading.get_ident()
    with _warnings_lock:
        if me in _decoding:  # nested: the outer block collects
            caught = _decoding[me]
            nested = True
        else:
            nested = False
            if not _decoding:
                state = warnings.catch_warnings()
                state.__enter__()
                warnings.filterwarnings("always", category=UserWarning, module=_DECODER_MODULES)
                # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; we want the limit itself
                # to be the hard stop (pydicom hands JPEG frames inside DICOM to Pillow too).
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                _warnings_state[:] = [state]
                if warnings.showwarning is not _route_warning:
                    _passed_on[0] = warnings.showwarning
                warnings.showwarning = _route_warning
            caught = _decoding[me] = []
    try:
        yield caught
    finally:
        if not nested:
            with _warnings_lock:
                del _decoding[me]
                if not _decoding:
                    _warnings_state.pop().__exit__(None, None, None)  # restores the filters and showwarning


def warned_text(caught: list[str]) -> str:
    """The warnings of one file as the end of its line: the first three, and how many more."""
    return (
        ("decoder warning: " if len(caught) == 1 else "decoder warnings: ")
        + "; ".join(caught[:3])
        + (f"; and {len(caught) - 3} more" if len(caught) > 3 else "")
    )


def _route_warning(message, category, filename, lineno, file=None, line=None) -> None:
    caught = _decoding.get(threading.get_ident())
    if caught is None or issubclass(category, _NOT_ABOUT_THE_FILE):
        _passed_on[0](message, category, filename, lineno, file, line)
        return
    text = detail(message if isinstance(message, BaseException) else Warning(message))
    if text not in caught:
        caught.append(text)
