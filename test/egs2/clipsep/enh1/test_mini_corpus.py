"""make_mini_corpus: layout, decodable mp4s, determinism by seed, no-op re-runs, one-line errors."""

import json
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

import mini_corpus
import make_mini_corpus as cli



@pytest.fixture(autouse=True)
def tools(require_tools):
    """The corpus needs these tools and data packages (tools/install.sh installs them): missing ones fail."""
    require_tools("ffmpeg", "ffprobe", "fluidsynth", "espeak-ng")
    for path in (mini_corpus.SOUNDFONT, mini_corpus.EMOJI_FONT, mini_corpus.SOUND_ICONS / "canary-long.wav"):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run tools/install.sh (it installs the Debian packages)")

CLASSES = ("piano", "drums", "canary")
COUNTS = {"train": 2, "valid": 1, "test": 1}
DURATION = 2
SAMPLES = DURATION * 16000
AAC_FRAME = 1024
NOISY = 2
TINY = ["--classes", *CLASSES, "--num_train", "2", "--num_valid", "1", "--num_test", "1", "--num_noisy", str(NOISY),
        "--duration", str(DURATION), "--num_pretrain_images", "5", "--offscreen_prob", "1"]


def _make(out, *extra) -> int:
    return cli.main(["--output_dir", str(out), *TINY, *extra])


def _clips(root, splits=("train", "valid", "test", "noisy")):
    return sorted(p for split in splits for p in (root / "videos" / split).glob("*/*.mp4"))


def _streams(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_type,sample_rate,channels,width,height", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def _audio(path) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", "16000", "-f", "s16le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.int16).astype(np.float32) / 32768


def _frames(path) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", "fps=1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    assert len(out) % (224 * 224 * 3) == 0
    return np.frombuffer(out, np.uint8).reshape(-1, 224, 224, 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini") / "corpus"
    assert _make(out) == 0
    return out


def test_layout(corpus):
    ids = {split: sorted(p.stem for p in (corpus / "videos" / split).glob("*/*.mp4")) for split in COUNTS}
    for split, n in COUNTS.items():
        assert sorted(d.name for d in (corpus / "videos" / split).iterdir()) == sorted(CLASSES)
        assert ids[split] == sorted(f"{c}_{split}_{i:03d}" for c in CLASSES for i in range(n))
    rows = [line.split("\t") for line in (corpus / "classes.tsv").read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows] == list(CLASSES) and all(len(r) == 3 and r[1] and r[2] for r in rows)

    pairs = [line.split("\t") for line in (corpus / "clip_pretrain/pairs.tsv").read_text().splitlines()]
    assert len(pairs) == 5 * len(CLASSES)
    for path, words in pairs:
        assert path.startswith(str(corpus / "clip_pretrain" / "images")) and words in CLASSES
        with Image.open(path) as image:
            assert image.size == (224, 224) and image.mode == "RGB"

    offscreen = [line.split("\t") for line in (corpus / "offscreen.tsv").read_text().splitlines()]
    assert sorted(r[0] for r in offscreen) == sorted(ids["train"] + ids["valid"])  # --offscreen_prob 1
    assert all(-15 <= float(r[2]) <= -5 and r[1] for r in offscreen)

    # The noisy pool: alternately speech and effects (no class), over a noise floor 20 to 10 dB down.
    assert [p.relative_to(corpus / "videos" / "noisy").as_posix() for p in _clips(corpus, ["noisy"])] == [
        "effects/noisy_001.mp4", "speech/noisy_000.mp4"]
    noisy = [line.split("\t") for line in (corpus / "noisy.tsv").read_text().splitlines()]
    assert [(r[0], r[1] == "speech") for r in noisy] == [("noisy_000", True), ("noisy_001", False)]
    assert set(noisy[1][1].split("+")) <= set(mini_corpus.NOISY_EFFECTS)
    assert all(r[2] in ("white_noise", "pink_noise", "brown_noise") and -20 <= float(r[3]) <= -10 for r in noisy)
    assert json.loads((corpus / ".done").read_text())["classes"] == list(CLASSES)
    assert [p.name for p in corpus.parent.iterdir()] == ["corpus"]  # no temporary directory left


def test_clips_decode_to_audio_and_frames(corpus):
    clips = _clips(corpus)
    assert len(clips) == len(CLASSES) * sum(COUNTS.values()) + NOISY
    for path in clips:
        streams = _streams(path)
        assert (streams["audio"]["sample_rate"], streams["audio"]["channels"]) == ("16000", 1)
        assert (streams["video"]["width"], streams["video"]["height"]) == (224, 224)
        audio = _audio(path)
        assert abs(len(audio) - SAMPLES) <= AAC_FRAME, path.name
        assert np.sqrt(np.mean(audio[:SAMPLES] ** 2)) > 0.01 and np.abs(audio).max() < 1.0, path.name
        frames = _frames(path)
        assert len(frames) == DURATION, path.name
        assert frames.std() > 10 and np.abs(frames[0].astype(int) - frames[1]).mean() > 0.5, path.name


def test_seed_determines_content(corpus, tmp_path):
    other = tmp_path / "other"
    assert _make(other, "--seed", "2") == 0
    for name in ("piano/piano_train_000", "drums/drums_test_000", "canary/canary_valid_000"):
        split = name.split("_")[-2]
        a, b = _audio(corpus / "videos" / split / f"{name}.mp4"), _audio(other / "videos" / split / f"{name}.mp4")
        assert a.shape != b.shape or not np.array_equal(a, b), name

    assert _make(other, "--overwrite", "--nj", "1") == 0
    assert [p.relative_to(other) for p in _clips(other)] == [p.relative_to(corpus) for p in _clips(corpus)]
    for a, b in zip(_clips(corpus), _clips(other)):
        assert a.read_bytes() == b.read_bytes(), a.name  # hence identical decoded audio and frames
    for name in ("classes.tsv", "offscreen.tsv", "noisy.tsv", ".done"):
        assert (corpus / name).read_bytes() == (other / name).read_bytes()
    for a, b in zip(sorted((corpus / "clip_pretrain/images").iterdir()),
                    sorted((other / "clip_pretrain/images").iterdir())):
        assert a.read_bytes() == b.read_bytes()


def test_noisy_pool_leaves_the_other_splits_unchanged(corpus, tmp_path):
    """The pool has random streams of its own: the clips of train/valid/test are the same bytes without it."""
    other = tmp_path / "no_pool"
    assert cli.main(["--output_dir", str(other), *TINY, "--num_noisy", "0"]) == 0
    assert not _clips(other, ["noisy"]) and (other / "noisy.tsv").read_text() == ""
    clean = ("train", "valid", "test")
    ours, theirs = _clips(corpus, clean), _clips(other, clean)
    assert [p.relative_to(other) for p in theirs] == [p.relative_to(corpus) for p in ours]
    for a, b in zip(ours, theirs):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert (corpus / "offscreen.tsv").read_bytes() == (other / "offscreen.tsv").read_bytes()


def test_older_format_is_made_again():
    options = mini_corpus.MiniCorpusConfig().to_json()
    old = {k: v for k, v in options.items() if k != "num_noisy"}
    assert mini_corpus._older_format_of({**old, "format_version": 1}, options)
    assert not mini_corpus._older_format_of({**old, "format_version": 1, "seed": 7}, options)  # other options
    assert not mini_corpus._older_format_of(options, options) and not mini_corpus._older_format_of(None, options)


def test_rerun_is_a_noop_and_other_options_fail(corpus, capsys):
    before = {p: p.stat().st_mtime_ns for p in [corpus, corpus / ".done", *_clips(corpus)]}
    assert _make(corpus) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before

    capsys.readouterr()
    assert _make(corpus, "--seed", "3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("make_mini_corpus: error: ") and "--overwrite" in err[0]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_failure_leaves_nothing(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise mini_corpus.MiniCorpusError("boom")

    monkeypatch.setattr(mini_corpus, "_write_pretrain_images", broken)
    assert _make(tmp_path / "out", "--nj", "1") == 2
    assert capsys.readouterr().err.strip() == "make_mini_corpus: error: boom"
    assert list(tmp_path.iterdir()) == []


def test_missing_tool_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert _make(tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("make_mini_corpus: error: missing ffmpeg (Debian package ffmpeg)")
    assert "fluidsynth (Debian package fluidsynth)" in err[0] and "espeak-ng (Debian package espeak-ng)" in err[0]
    assert "tools/install.sh" in err[0] and not (tmp_path / "out").exists()


def test_missing_recording_names_file_and_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mini_corpus, "SOUND_ICONS", tmp_path)
    assert cli.main(["--output_dir", str(tmp_path / "out"), "--classes", "water"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'glass-water-1.wav'} (Debian package sound-icons)" in err[0]


@pytest.mark.parametrize(
    "args, message",
    [(["--classes", "kazoo"], "unknown class 'kazoo'"), (["--duration", "0"], "--duration"),
     (["--image_size", "225"], "--image_size"), (["--offscreen_prob", "2"], "--offscreen_prob"),
     (["--num_noisy", "-1"], "counts must be >= 0"),
     (["--offscreen_db", "5", "-5"], "--offscreen_db")],
)
def test_invalid_options(tmp_path, capsys, args, message):
    assert cli.main(["--output_dir", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_classes():
    names = [c.name for c in mini_corpus.CLASSES]
    assert len(names) == len(set(names)) >= 10 and all(n == n.lower() and " " not in n for n in names)
    kinds = [c.kind for c in mini_corpus.CLASSES]
    assert kinds.count("instrument") + kinds.count("percussion") >= 7 and kinds.count("effect") >= 2
    emojis = {c.emoji for c in mini_corpus.CLASSES}
    assert len(emojis) == len(names) and not emojis & set(mini_corpus.DISTRACTORS)
    assert mini_corpus.CLASSES_BY_NAME["acoustic_guitar"].words == "acoustic guitar"


def test_render_emoji_frame():
    first = mini_corpus.render_emoji_frame("🎻", np.random.default_rng(0))
    again = mini_corpus.render_emoji_frame("🎻", np.random.default_rng(0))
    assert first.size == (224, 224) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    plain = mini_corpus.render_emoji_frame("🎻", np.random.default_rng(0), size=96, distractor=False)
    busy = mini_corpus.render_emoji_frame("🎻", np.random.default_rng(0), size=96, distractor=True)
    assert plain.size == (96, 96) and not np.array_equal(np.asarray(plain), np.asarray(busy))
    for cls in mini_corpus.CLASSES:
        assert np.asarray(mini_corpus.render_emoji_frame(cls.emoji, np.random.default_rng(1))).std() > 10


def test_midi_file_bytes():
    notes = [mini_corpus._Note(0.0, 0.5, 60, 100), mini_corpus._Note(0.5, 1.0, 60, 90)]
    data = mini_corpus.midi_file_bytes(notes, program=40, channel=0)
    assert data[:4] == b"MThd" and struct.unpack(">IHHH", data[4:14]) == (6, 0, 1, 480)
    assert data[14:18] == b"MTrk" and struct.unpack(">I", data[18:22])[0] == len(data) - 22
    track = data[22:]
    assert track.endswith(b"\x00\xff\x2f\x00") and b"\x00\xc0\x28" in track
    # at 0.5 s (480 ticks = 0x83 0x60) the first note ends before the second starts
    assert b"\x83\x60\x80\x3c\x00\x00\x90\x3c\x5a" in track
