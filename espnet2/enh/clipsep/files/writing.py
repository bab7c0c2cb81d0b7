"""Writing files so that a reader never sees half of one: a temporary name in the same directory, then a rename."""

import os
import re
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from espnet2.enh.clipsep.errors import CLIPSepError

__all__ = ["check_output_dir", "slug", "write_text_atomic", "write_wav_atomic"]

PathLike = Union[str, os.PathLike]


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``; an identical file is left untouched
    (so that re-running a finished step changes nothing, not even a modification time)."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_wav_atomic(path: PathLike, audio: np.ndarray, rate: int, subtype: str = "FLOAT") -> None:
    """Write ``audio`` ``(T,)`` or ``(T, C)`` as a WAV file of ``subtype`` (soundfile's name: FLOAT, PCM_16, ...)."""
    import soundfile

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    soundfile.write(tmp, audio, rate, subtype=subtype, format="WAV")
    os.replace(tmp, path)


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe form of a query: ``"Dog barking!"`` -> ``dog-barking``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return s or "query"


def check_output_dir(output_dir: PathLike) -> None:
    """Create ``output_dir`` if needed and make sure a file can be created in it.

    Raises:
        CLIPSepError: the path is a file, or the directory cannot be written.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise CLIPSepError(f"{output_dir}: output path exists and is not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=output_dir, prefix=".clipsep-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CLIPSepError(f"{output_dir}: output directory is not writable ({err.strerror or err})") from None
