"""Contrastive fitting of the tiny open_clip model on synthetic labelled shapes (clip_fit + bin/fit_clip)."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from espnet2.enh.clipsep.bin import fit_clip as fit_clip_cli
from espnet2.enh.clipsep.clip.fit import (
    ImagePair,
    OnePerLabelSampler,
    fit_clip,
    learning_rate,
    read_pairs,
    save_state_dict,
)
from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder

# One shape and colour per label, drawn at random position and size on a random grey background.
SHAPES = {"red circle": "ellipse", "green square": "rectangle", "blue triangle": "polygon", "yellow bar": "bar"}
COLOURS = {"red circle": (220, 30, 30), "green square": (30, 200, 40), "blue triangle": (30, 60, 230),
           "yellow bar": (240, 220, 20)}
STEPS = 60


def _draw(label, rng):
    grey = rng.randint(60, 200)
    img = Image.new("RGB", (64, 64), (grey, grey, grey))
    size = rng.randint(24, 44)
    x, y = rng.randint(0, 64 - size), rng.randint(0, 64 - size)
    draw, colour, shape = ImageDraw.Draw(img), COLOURS[label], SHAPES[label]
    if shape == "ellipse":
        draw.ellipse((x, y, x + size, y + size), fill=colour)
    elif shape == "rectangle":
        draw.rectangle((x, y, x + size, y + size), fill=colour)
    elif shape == "polygon":
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
    else:
        draw.rectangle((x, y + size // 3, x + size, y + 2 * size // 3), fill=colour)
    return img


def _write_pairs(directory, name, per_label, seed, labels=tuple(SHAPES)):
    rng = random.Random(seed)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for label in labels:
        for i in range(per_label):
            path = directory / "images" / f"{name}_{label.replace(' ', '_')}_{i}.png"
            _draw(label, rng).save(path)
            lines.append(f"{path}\t{label}\n")
    tsv = directory / f"{name}.tsv"
    tsv.write_text("".join(lines))
    return tsv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return _write_pairs(d, "train", 6, seed=0), _write_pairs(d, "valid", 3, seed=1)


def _fit(train, valid):
    return fit_clip(
        read_pairs(train), read_pairs(valid), steps=STEPS, warmup_steps=5, device="cpu", num_threads=1, progress=False
    )


@pytest.fixture(scope="module")
def fitted(data):
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    result = _fit(*data)
    assert torch.equal(before, torch.get_rng_state())  # the caller's RNG stream is left alone
    assert torch.get_num_threads() == threads
    return result


def test_loss_decreases_and_labels_separate(fitted):
    losses = fitted.losses
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
    r = fitted.report
    assert r["evaluated_on"] == "valid" and r["num_images"] == 12 and r["num_labels"] == 4
    assert r["same_label_cosine"] > r["cross_label_cosine"] + 0.2
    assert r["nearest_label_accuracy"] > 0.5


def test_report_is_json_with_the_fields(fitted):
    r = json.loads(json.dumps(fitted.report))
    for key in ("steps", "wall_seconds", "initial_loss", "final_loss", "chance_loss", "logit_scale",
                "same_label_cosine", "cross_label_cosine", "nearest_label_accuracy", "batch_size", "seed"):
        assert key in r, key
    assert r["steps"] == STEPS and r["batch_size"] == 4 and r["clip_model"] == "clipsep-tiny"
    assert r["final_loss"] == pytest.approx(np.mean(fitted.losses[-STEPS // 10 :]))


def test_checkpoint_loads_in_the_query_encoder(fitted, tmp_path):
    path = save_state_dict(fitted.encoder.model, tmp_path / "clip" / "tiny.pt")
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = CLIPQueryEncoder("clipsep-tiny", pretrained=str(path), device="cpu")
    torch.testing.assert_close(loaded.encode_text(["red circle"]), fitted.encoder.encode_text(["red circle"]))
    assert not any(p.requires_grad for p in fitted.encoder.model.parameters())


def test_cli_is_deterministic_and_writes_report(data, fitted, tmp_path, capsys):
    train, valid = data
    out = tmp_path / "exp" / "clip.pt"
    args = ["--pairs", str(train), "--valid_pairs", str(valid), "--output", str(out), "--steps", str(STEPS),
            "--warmup_steps", "5", "--device", "cpu", "--num_threads", "1"]
    assert fit_clip_cli.main(args) == 0
    report = json.loads((tmp_path / "exp" / "clip.pt.json").read_text())
    assert report["final_loss"] == fitted.report["final_loss"]  # same seed, same run
    loaded = CLIPQueryEncoder("clipsep-tiny", pretrained=str(out), device="cpu")
    torch.testing.assert_close(loaded.encode_text(["blue triangle"]), fitted.encoder.encode_text(["blue triangle"]))
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.pt", "clip.pt.json"]
    capsys.readouterr()
    assert fit_clip_cli.main(args) == 2  # no silent overwrite
    assert "exists (pass --overwrite" in _one_error_line(capsys)


def _pairs(counts):
    return [ImagePair(f"{label}{i}", label) for label, n in counts for i in range(n)]


def test_sampler_one_image_per_label():
    pairs = _pairs([("a", 3), ("b", 2), ("c", 4)])
    sampler = OnePerLabelSampler(pairs, batch_size=3, rng=random.Random(0))
    seen = {"a": [], "b": [], "c": []}
    for _ in range(4):
        batch = sampler()
        assert sorted(p.label for p in batch) == ["a", "b", "c"]
        for p in batch:
            seen[p.label].append(p.image)
    assert sorted(seen["b"][:2]) == ["b0", "b1"] and sorted(seen["a"][:3]) == ["a0", "a1", "a2"]  # full rounds
    assert len({p.label for p in OnePerLabelSampler(pairs, 2, random.Random(1))()}) == 2
    with pytest.raises(ValueError, match=r"batch_size must be in \[2, 3\]"):
        OnePerLabelSampler(pairs, batch_size=4, rng=random.Random(0))


def test_learning_rate_schedule():
    assert learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert learning_rate(99, 100, 1.0, 10) < 0.001


def test_help_lists_every_option_with_defaults():
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "espnet2.enh.clipsep.bin.fit_clip", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    for option in ("--pairs", "--valid_pairs", "--output", "--clip_model", "--init_pretrained", "--steps",
                   "--batch_size", "--lr", "--seed", "--device"):
        assert option in out.stdout, option
    assert "default: clipsep-tiny" in out.stdout and "exp/clip/clipsep_tiny.pt" in out.stdout


# ------------------------------------------------------------------------------------------------
# one clear error per bad input, before any training


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fit_clip: error: "), err
    return err[0]


def _run_bad(tmp_path, capsys, text):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(text)
    out = tmp_path / "out" / "clip.pt"
    assert fit_clip_cli.main(["--pairs", str(tsv), "--output", str(out), "--device", "cpu"]) == 2
    assert not out.parent.exists()
    return _one_error_line(capsys)


def test_missing_image(tmp_path, capsys, data):
    good = data[0].read_text().splitlines()[0]
    line = _run_bad(tmp_path, capsys, f"{good}\n{tmp_path / 'gone.jpg'}\tviolin\n")
    assert "pairs.tsv:2: " in line and "gone.jpg: image not found" in line


def test_line_without_tab(tmp_path, capsys, data):
    good = data[0].read_text().splitlines()[0]
    line = _run_bad(tmp_path, capsys, f"{good}\n{good.split(chr(9))[0]} violin\n")
    assert "pairs.tsv:2: expected '<image path><TAB><label words>'" in line


def test_only_one_label(tmp_path, capsys, data):
    lines = [ln for ln in data[0].read_text().splitlines() if ln.endswith("red circle")]
    line = _run_bad(tmp_path, capsys, "\n".join(lines) + "\n")
    assert "need images of at least 2 different labels, got 1" in line


def test_missing_pairs_file(tmp_path, capsys):
    assert fit_clip_cli.main(["--pairs", str(tmp_path / "nope.tsv"), "--output", str(tmp_path / "o.pt")]) == 2
    assert "nope.tsv: pairs file not found" in _one_error_line(capsys)
