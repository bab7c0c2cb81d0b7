"""local/plot_operating_points.py: the committed measurements parse, the curve is drawn, bad lines are named."""

import importlib.util
from pathlib import Path

from PIL import Image

RECIPE = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "enh1"


def _script():
    spec = importlib.util.spec_from_file_location("plot_operating_points", RECIPE / "local" / "plot_operating_points.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_points_plot_with_their_table(tmp_path, capsys):
    script = _script()
    points = script.read_points(RECIPE / "local" / "operating_points.jsonl")
    assert {p["recipe"] for p in points} == {"enh1", "tts1"}
    assert all(p["score"] < script.TARGETS[p["recipe"]][0] for p in points)  # no point reached its target
    assert script.main(["--points", str(RECIPE / "local" / "operating_points.jsonl"), "--output",
                        str(tmp_path / "c.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + len(points) and table[2].startswith("| 1 | enh1 |")
    with Image.open(tmp_path / "c.png") as img:
        assert img.format == "PNG" and img.width > img.height


def test_a_bad_line_is_one_error(tmp_path, capsys):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"recipe": "enh1", "point": "x", "steps": 1, "cpu_s": 1, "score": 1}\n{"recipe": "enh1"}\n')
    assert _script().main(["--points", str(bad), "--output", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == f"plot_operating_points: error: {bad}:2: not an operating point (KeyError: 'cpu_s')"
    assert not (tmp_path / "c.png").exists()
