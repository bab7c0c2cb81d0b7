"""python -m espnet2.enh.clipsep.bin.embed: npy / kaldi_ark scp caches, skip-existing, clear errors."""

import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import torch
from PIL import Image

from espnet2.enh.clipsep.clip import encoder as query_module
from espnet2.enh.clipsep.bin import embed
from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
from espnet2.enh.clipsep.clip.image_query import center_frames


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(1)
    enc = CLIPQueryEncoder("clipsep-tiny", pretrained=None, device="cpu")
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(enc.model.state_dict(), path)
    return path


def _reference(ckpt):
    return CLIPQueryEncoder("clipsep-tiny", pretrained=str(ckpt), device="cpu")


def _load_scp(path, fmt="npy"):
    """What ESPnet's ``npy`` / ``kaldi_ark`` data types will read from the scp."""
    if fmt == "kaldi_ark":
        return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(path)).items()}
    return {k: np.load(v) for k, v in (line.split(" ", 1) for line in path.read_text().splitlines())}


def _args(ckpt, out, *extra):
    return ["--output_dir", str(out), "--clip_model", "clipsep-tiny", "--clip_pretrained", str(ckpt), *extra]


@pytest.fixture
def count_encoders(monkeypatch):
    built = []
    real = query_module.CLIPQueryEncoder

    def counting(*a, **k):
        built.append(1)
        return real(*a, **k)

    monkeypatch.setattr(query_module, "CLIPQueryEncoder", counting)
    return built


@pytest.mark.parametrize("fmt", ["npy", "kaldi_ark"])
def test_text_queries_cached_and_skipped(tmp_path, tiny_ckpt, fmt, count_encoders):
    text = tmp_path / "queries.txt"
    text.write_text("a dog barking\nb violin\n")
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--text", str(text), "--name", "query1", "--format", fmt)) == 0
    table = _load_scp(out / "query1.scp", fmt)
    ref = _reference(tiny_ckpt).encode_text(["dog barking", "violin"]).numpy()
    assert sorted(table) == ["a", "b"]
    np.testing.assert_allclose((table["a"]), ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((table["b"]), ref[1], rtol=1e-5, atol=1e-6)
    assert len(count_encoders) == 1

    # Re-run: nothing to compute, no CLIP model built; a new line: only it is computed.
    assert embed.main(_args(tiny_ckpt, out, "--text", str(text), "--name", "query1", "--format", fmt)) == 0
    assert len(count_encoders) == 1
    text.write_text("a dog barking\nb violin\nc cat meowing\n")
    assert embed.main(_args(tiny_ckpt, out, "--text", str(text), "--name", "query1", "--format", fmt)) == 0
    assert len(count_encoders) == 2
    table = _load_scp(out / "query1.scp", fmt)
    assert sorted(table) == ["a", "b", "c"]
    np.testing.assert_allclose((table["a"]), ref[0], rtol=1e-5, atol=1e-6)
    assert not list(out.rglob("*.tmp"))


def test_frames_dir_uses_three_centre_frames(tmp_path, tiny_ckpt):
    frames_dir = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for clip in ("clipA", "clipB"):
        (frames_dir / clip).mkdir(parents=True)
        for i in range(1, 6):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(frames_dir / clip / f"{i:06d}.jpg")
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--frames_dir", str(frames_dir), "--name", "image")) == 0
    table = _load_scp(out / "image.scp")
    centre = [frames_dir / "clipB" / f"{i:06d}.jpg" for i in (2, 3, 4)]
    ref = _reference(tiny_ckpt).encode_images([centre]).numpy()[0]
    np.testing.assert_allclose((table["clipB"]), ref, rtol=1e-4, atol=1e-5)


def _frame_clips(root, lengths, seed=0):
    rng = np.random.default_rng(seed)
    for clip, n in lengths.items():
        (root / clip).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / clip / f"{i:06d}.jpg")
    return root


@pytest.mark.parametrize("fmt", ["npy", "kaldi_ark"])
def test_per_frame_embeddings(tmp_path, tiny_ckpt, fmt):
    frames_dir = _frame_clips(tmp_path / "frames", {"clipA": 5, "clipB": 8, "clipC": 2})
    out = tmp_path / "out"
    common = ["--frames_dir", str(frames_dir), "--format", fmt, "--batch_size", "2"]
    assert embed.main(_args(tiny_ckpt, out, *common, "--name", "image")) == 0
    assert embed.main(_args(tiny_ckpt, out, *common, "--name", "image_frames", "--per_frame")) == 0
    mean, per_frame = _load_scp(out / "image.scp", fmt), _load_scp(out / "image_frames.scp", fmt)
    assert {k: v.shape for k, v in per_frame.items()} == {"clipA": (5, 64), "clipB": (8, 64), "clipC": (2, 64)}
    assert all(v.dtype == np.float32 for v in per_frame.values())
    for key, rows in per_frame.items():
        centre = center_frames(list(range(len(rows))), 3)
        np.testing.assert_allclose(rows[centre].mean(0), mean[key], rtol=1e-4, atol=1e-5)
    frame = frames_dir / "clipB" / "000001.jpg"
    single = _reference(tiny_ckpt).encode_images([[frame]])[0]
    np.testing.assert_allclose(per_frame["clipB"][0], single, rtol=1e-4, atol=1e-5)

    assert embed.main(_args(tiny_ckpt, out, *common, "--name", "capped", "--per_frame", "--max_frames", "4")) == 0
    capped = _load_scp(out / "capped.scp", fmt)
    assert capped["clipB"].shape == (4, 64) and capped["clipC"].shape == (2, 64)
    np.testing.assert_allclose(capped["clipB"], per_frame["clipB"][2:6], rtol=1e-4, atol=1e-5)


def test_per_frame_refuses_a_clip_mean_scp(tmp_path, tiny_ckpt, capsys):
    frames_dir = _frame_clips(tmp_path / "frames", {"clipA": 3})
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--frames_dir", str(frames_dir), "--name", "image")) == 0
    capsys.readouterr()
    assert embed.main(_args(tiny_ckpt, out, "--frames_dir", str(frames_dir), "--name", "image", "--per_frame")) == 2
    line = _one_error_line(capsys)
    assert "image.scp holds (D,) embeddings (e.g. clipA) but this run writes (num_frames, D)" in line


@pytest.mark.parametrize(
    "extra, message",
    [(["--text", "q.txt", "--per_frame"], "--per_frame needs image queries"),
     (["--frames_dir", "frames", "--max_frames", "4"], "--max_frames must be >= 1 and goes with --per_frame")],
)
def test_per_frame_bad_options(tmp_path, tiny_ckpt, capsys, extra, message):
    (tmp_path / "q.txt").write_text("a dog\n")
    _frame_clips(tmp_path / "frames", {"clipA": 3})
    extra = [str(tmp_path / e) if e in ("q.txt", "frames") else e for e in extra]
    assert embed.main(_args(tiny_ckpt, tmp_path / "out", *extra)) == 2
    assert message in _one_error_line(capsys)


def test_help():
    out = subprocess.run([sys.executable, "-m", "espnet2.enh.clipsep.bin.embed", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--clip_pretrained" in out.stdout


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embed: error: ")
    return err[0]


def test_missing_text_file(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--text", str(tmp_path / "nope.txt"))) == 2
    assert "nope.txt: file not found" in _one_error_line(capsys)
    assert not out.exists()


def test_empty_query_line(tmp_path, tiny_ckpt, capsys):
    text = tmp_path / "q.txt"
    text.write_text("a dog\nb violin\nc\n")
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--text", str(text))) == 2
    assert "q.txt:3: empty value for key 'c'" in _one_error_line(capsys)
    assert not out.exists()


def test_not_an_image_frame(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "frames" / "clip").mkdir(parents=True)
    (tmp_path / "frames" / "clip" / "000001.jpg").write_text("garbage")
    out = tmp_path / "out"
    assert embed.main(_args(tiny_ckpt, out, "--frames_dir", str(tmp_path / "frames"))) == 2
    assert "000001.jpg: not a readable image" in _one_error_line(capsys)
    assert not out.exists()


def test_offline_without_weights(tmp_path, capsys):
    text = tmp_path / "q.txt"
    text.write_text("a dog\n")
    out = tmp_path / "out"
    code = embed.main(["--output_dir", str(out), "--text", str(text), "--clip_model", "ViT-B-32", "--device", "cpu"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "ViT-B-32/openai" in line and "--clip_pretrained" in line
    assert not list(out.glob("*.scp"))
