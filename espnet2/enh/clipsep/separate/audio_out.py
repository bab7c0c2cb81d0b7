"""Audio out: one output file per query, written under hidden temporary names and renamed when all are complete."""

import contextlib
import os
from pathlib import Path
from typing import Callable, Sequence, Tuple

import numpy as np

from espnet2.enh.clipsep.errors import SeparationError

__all__ = ["OUTPUT_FORMATS", "ExactLength", "OutputFiles"]

OUTPUT_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


class ExactLength:
    """Pass ``(..., n)`` blocks on until ``target`` samples have gone through; pad with zeros at the end."""

    def __init__(self, target: int, sink: Callable[[np.ndarray], None]):
        self.left, self.sink = target, sink

    def __call__(self, y: np.ndarray) -> None:
        if self.left > 0 and y.shape[-1]:
            self.sink(y[..., : self.left])
            self.left -= min(self.left, y.shape[-1])

    def close(self, shape: Tuple[int, ...]) -> None:
        if self.left > 0:
            self.sink(np.zeros((*shape, self.left), dtype=np.float32))
            self.left = 0


class OutputFiles:
    """Output files written under hidden temporary names in their directory, renamed when all are complete."""

    def __init__(self, paths: Sequence[Path], rate: int, channels: int, audio_format: str, overwrite: bool):
        import soundfile

        fmt, subtype = OUTPUT_FORMATS[audio_format]
        self.paths = list(paths)
        self.overwrite = overwrite
        self.tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in self.paths]
        self.files = []
        try:
            for tmp in self.tmps:
                self.files.append(soundfile.SoundFile(str(tmp), "w", rate, channels, subtype, format=fmt))
        except Exception:
            self.abort()
            raise

    def write(self, y: np.ndarray) -> None:
        """``y`` ``(Q, C, n)``: one block for each output file."""
        for f, block in zip(self.files, y):
            f.write(np.ascontiguousarray(np.clip(block, -1.0, 1.0).T))  # CLIPSep clips outputs to [-1, 1]

    def commit(self) -> None:
        for f in self.files:
            f.close()
        for tmp, path in zip(self.tmps, self.paths):
            if path.exists() and not self.overwrite:
                raise SeparationError(f"{path}: output file exists (pass --overwrite to replace it)")
            os.replace(tmp, path)

    def abort(self) -> None:
        for f in self.files:
            with contextlib.suppress(Exception):
                f.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)
