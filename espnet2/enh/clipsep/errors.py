"""The errors users see: one base class, one subclass per package.

Every problem with a user's input, model or option is raised as a :class:`CLIPSepError` whose message is one
line, ``<file or option>: <problem>``; the command-line tools print that line and exit 2. Code shared by
separation and synthesis (CLIP, model files, weights) raises the base class; the separation API raises
:class:`SeparationError`, the synthesis API its own ``espnet2.tts_diff.errors.GenerationError``.
"""

import contextlib
from typing import Iterator, Type

__all__ = ["CLIPSepError", "SeparationError", "SeparationWarning", "first_line", "reraise_as"]


class CLIPSepError(ValueError):
    """A bad input, model or option: the message is one line, ``<file or option>: <problem>``."""


class SeparationError(CLIPSepError):
    """A bad input, model or output of the separation API."""


class SeparationWarning(UserWarning):
    """Something the user should know that does not stop the separation (silent input, truncated query)."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when the message is empty), at most ``limit`` chars."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


@contextlib.contextmanager
def reraise_as(error: Type[CLIPSepError]) -> Iterator[None]:
    """Re-raise a :class:`CLIPSepError` of shared code as ``error``, the calling package's own type (same message).

    Example:
        >>> with reraise_as(SeparationError):
        ...     files = resolve_model(path)
    """
    try:
        yield
    except CLIPSepError as err:
        if isinstance(err, error):
            raise
        raise error(str(err)) from None
