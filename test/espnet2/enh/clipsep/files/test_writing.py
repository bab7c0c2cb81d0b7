"""Atomic writes, output directories and file-name slugs."""

import os

import numpy as np
import pytest
import soundfile

from espnet2.enh.clipsep.errors import CLIPSepError
from espnet2.enh.clipsep.files.writing import check_output_dir, slug, write_text_atomic, write_wav_atomic


def test_text_is_replaced_and_an_identical_file_is_left_untouched(tmp_path):
    path = tmp_path / "f.txt"
    write_text_atomic(path, "one\n")
    os.utime(path, (1, 1))
    write_text_atomic(path, "one\n")
    assert path.stat().st_mtime == 1  # same content: not rewritten
    write_text_atomic(path, "two\n")
    assert path.read_text() == "two\n" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("subtype, tol", [("FLOAT", 0.0), ("PCM_16", 1 / 32768)])
def test_wav_round_trips_at_its_subtype(tmp_path, subtype, tol):
    x = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    write_wav_atomic(tmp_path / "x.wav", x, 8000, subtype)
    y, rate = soundfile.read(tmp_path / "x.wav", dtype="float32")
    assert rate == 8000 and soundfile.info(tmp_path / "x.wav").subtype == subtype
    np.testing.assert_allclose(y, x, atol=tol)


def test_output_dir_is_created_or_refused_in_one_line(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(CLIPSepError, match=r"file: output path exists and is not a directory$"):
        check_output_dir(tmp_path / "file")


def test_slug():
    assert slug("Dog barking!") == "dog-barking" and slug("???") == "query" and len(slug("a" * 100)) == 48
