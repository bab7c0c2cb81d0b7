"""Separate any recording by a text or image query with a trained CLIPSep model.

The public API, split along its seams: where a model's files are (``files.model_files``) and how a CLIPSep model
is built from them (:mod:`.build`), audio in (:mod:`.audio_in`), streaming overlap-add (:mod:`.overlap_add`),
audio out (:mod:`.audio_out`) and the :class:`Separator` itself (:mod:`.separator`).

Example:
    >>> from espnet2.enh.clipsep.separate import Separator
    >>> sep = Separator.from_pretrained("exp/mini/enh_clipsep_nit/packed.zip")
    >>> violin = sep(waveform, 44100, query="violin")              # (T',) at the model rate
    >>> sep.separate_file("in.wav", "out/", query=["dog barking"])  # [Path("out/in_dog-barking.wav")]
"""

from espnet2.enh.clipsep.errors import CLIPSepError, SeparationError, SeparationWarning
from espnet2.enh.clipsep.files.model_files import ModelFiles, resolve_model
from espnet2.enh.clipsep.separate.audio_in import AudioInfo, open_audio
from espnet2.enh.clipsep.separate.audio_out import OUTPUT_FORMATS
from espnet2.enh.clipsep.separate.build import build_model
from espnet2.enh.clipsep.separate.overlap_add import OverlapAdd
from espnet2.enh.clipsep.separate.separator import Query, Separator

__all__ = [
    "OUTPUT_FORMATS",
    "AudioInfo",
    "CLIPSepError",
    "ModelFiles",
    "OverlapAdd",
    "Query",
    "SeparationError",
    "SeparationWarning",
    "Separator",
    "build_model",
    "open_audio",
    "resolve_model",
]
