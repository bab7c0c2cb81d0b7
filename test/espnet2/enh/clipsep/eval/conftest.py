"""Shared helpers of the evaluation tests: synthetic signal sets written as wav files with their scp."""

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import soundfile

FS = 8000


def write_signal_set(root: Path, name: str, signals: Dict[str, np.ndarray], fs: int = FS) -> Path:
    """Writes ``root/name/<key>.wav`` (float) per signal and ``root/name.scp``; returns the scp's path."""
    (root / name).mkdir(parents=True, exist_ok=True)
    lines = []
    for key, x in signals.items():
        soundfile.write(root / name / f"{key}.wav", x, fs, subtype="FLOAT")
        lines.append(f"{key} {root / name / key}.wav\n")
    (root / f"{name}.scp").write_text("".join(lines))
    return root / f"{name}.scp"


@pytest.fixture(scope="session")
def write_set() -> Callable[..., Path]:
    """:func:`write_signal_set`."""
    return write_signal_set
