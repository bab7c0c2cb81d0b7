"""python -m espnet2.enh.clipsep.bin.dump_frames: (F, S, S, 3) uint8 npy per clip, an scp, resume, clear errors."""

import os

import numpy as np
import pytest
from PIL import Image

from espnet2.enh.clipsep.bin import dump_frames
from espnet2.enh.clipsep.preprocessor import CLIPSepMixPreprocessor

COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (250, 250, 0), (0, 120, 240)]


def _picture(colour, size=(20, 16)):
    return Image.new("RGB", size, colour)


@pytest.fixture
def frames_scp(tmp_path):
    """Clip a: a directory of 5 flat-colour PNG frames (20 x 16) named out of creation order; clip b: one image
    file, 24 x 8, black with a green middle third."""
    clip_a = tmp_path / "media" / "a"
    clip_a.mkdir(parents=True)
    for i in reversed(range(len(COLOURS))):
        _picture(COLOURS[i]).save(clip_a / f"{i:06d}.png")
    (clip_a / "notes.txt").write_text("not a frame")
    b = Image.new("RGB", (24, 8), (0, 0, 0))
    b.paste((0, 255, 0), (8, 0, 16, 8))
    b.save(tmp_path / "media" / "b.png")
    scp = tmp_path / "frames.scp"
    scp.write_text(f"a {clip_a}\nb {tmp_path / 'media' / 'b.png'}\n")
    return scp


def _read(scp):
    return {k: np.load(v) for k, v in (line.split(" ", 1) for line in scp.read_text().splitlines())}


def _run(scp, out, *extra):
    return dump_frames.main(["--frames_scp", str(scp), "--output_dir", str(out), *extra])


def test_writes_every_frame_resized_in_time_order(frames_scp, tmp_path):
    out = tmp_path / "out"
    assert _run(frames_scp, out, "--size", "8") == 0
    stored = _read(out / "frames.scp")
    assert sorted(stored) == ["a", "b"]
    a, b = stored["a"], stored["b"]
    assert a.dtype == np.uint8 and a.shape == (5, 8, 8, 3)
    for i, colour in enumerate(COLOURS):  # a flat colour stays that colour through resize and crop
        np.testing.assert_allclose(a[i].reshape(-1, 3), np.tile(colour, (64, 1)), atol=1)
    # Shorter side 8 already: no resize; the centre 8 x 8 of the 24 x 8 picture is its green third.
    assert b.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(b[0], np.broadcast_to(np.array([0, 255, 0], np.uint8), (8, 8, 3)))
    assert not list(out.rglob("*.tmp"))


def test_center_frames_for_valid_and_test_match_the_preprocessor(frames_scp, tmp_path):
    out = tmp_path / "out"
    assert _run(frames_scp, out, "--size", "4", "--center_frames", "3", "--name", "query") == 0
    stored = _read(out / "query.scp")
    assert stored["a"].shape == (3, 4, 4, 3) and stored["b"].shape == (1, 4, 4, 3)
    np.testing.assert_allclose(stored["a"][:, 0, 0], np.array(COLOURS[1:4]), atol=1)
    # The evaluation preprocessor keeps exactly these 3 frames (and repeats b's one frame).
    fixed = CLIPSepMixPreprocessor(False)("x", {"query1": stored["a"], "query2": stored["b"]})
    np.testing.assert_array_equal(fixed["query1"], stored["a"].astype(np.float32))
    np.testing.assert_array_equal(fixed["query2"], np.repeat(stored["b"], 3, axis=0).astype(np.float32))


def test_parallel_jobs_write_the_same(frames_scp, tmp_path):
    assert _run(frames_scp, tmp_path / "one", "--size", "6") == 0
    assert _run(frames_scp, tmp_path / "two", "--size", "6", "--nj", "2") == 0
    one, two = _read(tmp_path / "one" / "frames.scp"), _read(tmp_path / "two" / "frames.scp")
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_resume_skips_finished_clips_and_redoes_another_size(frames_scp, tmp_path):
    out = tmp_path / "out"
    assert _run(frames_scp, out, "--size", "8") == 0
    npy = out / "data" / "frames" / "a.npy"
    os.utime(npy, (1, 1))
    assert _run(frames_scp, out, "--size", "8") == 0
    assert npy.stat().st_mtime == 1  # untouched
    assert _run(frames_scp, out, "--size", "4") == 0
    assert _read(out / "frames.scp")["a"].shape == (5, 4, 4, 3)


def test_errors_are_one_line_and_keep_finished_clips(frames_scp, tmp_path, capsys):
    out = tmp_path / "out"
    broken = tmp_path / "media" / "c"
    broken.mkdir()
    (broken / "000000.png").write_text("not a picture")
    frames_scp.write_text(frames_scp.read_text() + f"c {broken}\n")
    assert _run(frames_scp, out, "--size", "8") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (tqdm's bar aside)
    assert errors == [f"dump_frames: error: {broken / '000000.png'}: not a readable image (UnidentifiedImageError)"]
    assert sorted(_read(out / "frames.scp")) == ["a", "b"]  # the scp lists the complete files only

    frames_scp.write_text(f"d {tmp_path / 'missing'}\n")
    assert _run(frames_scp, tmp_path / "out2") == 2
    assert "is neither a frames directory nor an image" in capsys.readouterr().err
    empty = tmp_path / "media" / "empty"
    empty.mkdir()
    frames_scp.write_text(f"e {empty}\n")
    assert _run(frames_scp, tmp_path / "out3") == 2
    assert f"{empty}: no frames" in capsys.readouterr().err
    assert _run(frames_scp, tmp_path / "out4", "--size", "0") == 2


def test_dumped_frames_query_an_sop_model_at_inference(frames_scp, tmp_path, make_experiment, noise):
    """The recipe's test path: dump_frames --center_frames 3 -> per-source query scp -> bin.inference."""
    import soundfile

    from espnet2.enh.clipsep.bin import inference

    assert _run(frames_scp, tmp_path / "dump", "--size", "32", "--center_frames", "3") == 0
    stored = dict(line.split(" ", 1) for line in (tmp_path / "dump" / "frames.scp").read_text().splitlines())
    mix = tmp_path / "m0.wav"
    soundfile.write(mix, noise(1.0), 16000, subtype="FLOAT")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"m0 {mix}\n")
    (data / "query1.scp").write_text(f"m0 {stored['a']}\n")
    (data / "query2.scp").write_text(f"m0 {stored['b']}\n")
    exp = make_experiment(tmp_path, "train_enh_sop.yaml")
    rc = inference.main([
        "--train_config", str(exp / "config.yaml"), "--model_file", str(exp / "model.pth"),
        "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech_mix,sound",
        "--data_path_and_name_and_type", f"{data / 'query1.scp'},query1,npy",
        "--data_path_and_name_and_type", f"{data / 'query2.scp'},query2,npy",
        "--output_dir", str(tmp_path / "infer"), "--num_workers", "0",
    ])  # fmt: skip
    assert rc == 0
    for n in (1, 2):
        out, rate = soundfile.read((tmp_path / "infer" / "wavs" / str(n) / "m0.wav"))
        assert rate == 16000 and out.shape == (16000,) and np.isfinite(out).all() and np.abs(out).max() > 0
