"""Kaldi-style two-column tables (``<key> <value>`` per line: scp files, ``utt2label``, ...)."""

import os
from pathlib import Path
from typing import Dict, Union

PathLike = Union[str, os.PathLike]


def read_table(path: PathLike) -> Dict[str, str]:
    """``{key: value}`` in file order; blank lines skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line without a value, or a repeated key (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, _, value = line.strip().partition(" ")
            value = value.strip()
            if not value:
                raise ValueError(f"{path}:{lineno}: empty value for key {key!r}")
            if key in table:
                raise ValueError(f"{path}:{lineno}: duplicate key {key!r}")
            table[key] = value
    return table


def write_table_atomic(path: PathLike, table: Dict[str, str]) -> None:
    """Write ``table`` sorted by key to a temporary name, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")
    os.replace(tmp, path)
