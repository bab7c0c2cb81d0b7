"""Kaldi tables: read through ESPnet's reader, with one error line per problem; written atomically."""

import pytest

from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic


def test_read_keeps_file_order_and_values_with_spaces(tmp_path):
    (tmp_path / "t").write_text("b /x/b.wav\na a text query\nc\tx\n")
    assert list(read_table(tmp_path / "t").items()) == [("b", "/x/b.wav"), ("a", "a text query"), ("c", "x")]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a 1\n\nb 2\n", "t:2: blank line (one '<key> <value>' per line)"),
        ("a 1\nb\n", "t:2: empty value for key 'b'"),
        ("a 1\nb 2\na 3\n", "t:3: duplicate key 'a'"),
    ],
)
def test_bad_lines_are_one_error_naming_file_and_line(tmp_path, text, problem):
    (tmp_path / "t").write_text(text)
    with pytest.raises(ValueError) as err:
        read_table(tmp_path / "t")
    assert str(err.value) == f"{tmp_path / 't'}:{problem.split(':', 1)[1]}" and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        read_table(tmp_path / "nope")


def test_write_sorts_and_round_trips_without_leaving_a_temporary_file(tmp_path):
    write_table_atomic(tmp_path / "t", {"b": "2", "a": "x y"})
    assert (tmp_path / "t").read_text() == "a x y\nb 2\n"
    assert read_table(tmp_path / "t") == {"a": "x y", "b": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
