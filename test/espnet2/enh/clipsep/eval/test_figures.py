"""Report figures (matplotlib, Agg): what each figure shows, and atomic PNG writing."""

import numpy as np
import pytest
from PIL import Image

from espnet2.enh.clipsep.eval import figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures a call would have saved, instead of PNGs."""
    out = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: out.append(fig))
    return out


def test_distribution_figure_draws_every_item_over_a_box_per_group(drawn, tmp_path):
    groups = {"A": [1.0, 2.0, 3.0, 10.0], "B": [-1.0, 0.5]}
    figures.distribution_figure(groups, tmp_path / "d.png", "SDRi (dB)", "t")
    (ax,) = drawn[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"] and ax.get_ylabel() == "SDRi (dB)"
    points = [c.get_offsets() for c in ax.collections]
    assert [sorted(p[:, 1]) for p in points] == [groups["A"], groups["B"]]
    assert all(abs(x - i) <= 0.15 for i, p in enumerate(points, 1) for x in p[:, 0])  # jittered around its box
    flat = {(round(float(np.mean(line.get_xdata())), 2), float(line.get_ydata()[0])) for line in ax.lines
            if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]}
    assert (1.0, 2.5) in flat and (2.0, -0.25) in flat  # the medians, centred on their boxes


def test_line_figure_leaves_out_missing_and_non_positive_log_points(drawn, tmp_path):
    panels = [dict(title="p", xlabel="steps", ylabel="s", logx=True, logy=True,
                   series={"a": [(10, 1.0), (1, None), (100, 0.0), (1000, 3.0)], "b": [(5, 2.0)]})]
    figures.line_figure(panels, tmp_path / "l.png")
    (ax,) = drawn[0].axes
    lines = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"a": [(10, 1.0), (1000, 3.0)], "b": [(5, 2.0)]}
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_save_figure_writes_a_png_atomically(tmp_path):
    figures.distribution_figure({"A": [0.0, 1.0]}, tmp_path / "d.png", "y", "t")
    with Image.open(tmp_path / "d.png") as img:
        assert img.format == "PNG" and img.width > 300
    assert [p.name for p in tmp_path.iterdir()] == ["d.png"]  # no temporary file left


def test_thumbnail_and_unreadable_image(tmp_path):
    Image.new("RGB", (320, 240), (10, 200, 30)).save(tmp_path / "f.png")
    assert figures.image_thumbnail(tmp_path / "f.png", tmp_path / "t.jpg") == (160, 120)
    with Image.open(tmp_path / "t.jpg") as img:
        assert img.size == (160, 120) and np.asarray(img)[60, 80, 1] > 150
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad\.jpg: not a readable image"):
        figures.image_thumbnail(tmp_path / "bad.jpg", tmp_path / "t2.jpg")
    assert not list(tmp_path.glob(".*tmp"))
