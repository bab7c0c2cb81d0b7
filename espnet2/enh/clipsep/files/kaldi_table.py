"""Kaldi-style two-column tables (``<key> <value>`` per line: scp files, ``utt2label``, ...).

Read with ESPnet's own ``espnet2.fileio.read_text.read_2columns_text``; this module turns its failures into one
error line naming the file, the line and the problem, refuses empty values, and adds an atomic writer.
"""

import os
from pathlib import Path
from typing import Dict, Union

from espnet2.enh.clipsep.files.writing import write_text_atomic

__all__ = ["read_table", "write_table_atomic"]

PathLike = Union[str, os.PathLike]


def read_table(path: PathLike) -> Dict[str, str]:
    """``{key: value}`` in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a blank line, a line without a value, or a repeated key (naming the file and line).
    """
    from espnet2.fileio.read_text import read_2columns_text

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    seen = set()  # checked first, so that each problem is one line naming the file and the line
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(maxsplit=1)
        if not parts:
            raise ValueError(f"{path}:{lineno}: blank line (one '<key> <value>' per line)")
        if len(parts) == 1:
            raise ValueError(f"{path}:{lineno}: empty value for key {parts[0]!r}")
        if parts[0] in seen:
            raise ValueError(f"{path}:{lineno}: duplicate key {parts[0]!r}")
        seen.add(parts[0])
    return read_2columns_text(path)


def write_table_atomic(path: PathLike, table: Dict[str, str]) -> None:
    """Write ``table`` sorted by key to a temporary name, then rename it to ``path``."""
    write_text_atomic(path, "".join(f"{key} {table[key]}\n" for key in sorted(table)))
