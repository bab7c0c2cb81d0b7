"""The errors of the synthesis API: :class:`GenerationError`, a subclass of the toolkit's one base error."""

from espnet2.enh.clipsep.errors import CLIPSepError

__all__ = ["GenerationError", "GenerationWarning"]


class GenerationError(CLIPSepError):
    """A bad input, model or option of the synthesis API: the message is one line, ``<file or option>: <problem>``."""


class GenerationWarning(UserWarning):
    """Something the user should know that does not stop generation (e.g. the Griffin-Lim fallback)."""
