"""espnet2.enh.clipsep.video: probing, 16 kHz mono audio, 1-fps 224x224 frames, typed rejections, reuse."""

import pickle
import subprocess

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from espnet2.enh.clipsep.video import (
    VideoError,
    extract_audio,
    extract_frames,
    extract_video,
    is_silent,
    probe,
)



@pytest.fixture(scope="module")
def videos(make_video, tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {
        "good": make_video(d / "good.mp4", 3),
        "portrait": make_video(d / "portrait.mp4", 2, size="240x320"),
        "silent": make_video(d / "silent.mp4", 2, audio="silence"),
        "no_audio": make_video(d / "no_audio.mp4", 2, audio=None),
        "audio_only": make_video(d / "audio_only.mp4", 2, video=False),
        "short": make_video(d / "short.mp4", 0.5),
        "corrupt": corrupt,
    }


def test_probe(videos):
    info = probe(videos["good"])
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (320, 240)
    assert info.duration == pytest.approx(3.0, rel=0.02)
    assert not probe(videos["audio_only"]).has_video
    assert not probe(videos["no_audio"]).has_audio


def test_extract_audio_downmixes_and_resamples(videos, tmp_path):
    n = extract_audio(videos["good"], tmp_path / "a.wav", fs=16000)
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == n == pytest.approx(3 * 16000, rel=0.01)
    assert not (tmp_path / "a.wav.tmp").exists()


@pytest.mark.parametrize("name, seconds", [("good", 3), ("portrait", 2)])
def test_extract_frames_count_size_and_geometry(videos, tmp_path, name, seconds):
    n = extract_frames(videos[name], tmp_path / "frames", fps=1, size=224)
    frames = sorted((tmp_path / "frames").iterdir())
    assert n == seconds == len(frames)
    assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(seconds)]
    for f in frames:
        with Image.open(f) as im:
            assert im.size == (224, 224) and im.format == "JPEG"
    # Frame 0 = the first picture scaled (short side 224, bicubic) and centre-cropped; a stretch would differ.
    first = tmp_path / "first.png"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(videos[name]), "-frames:v", "1", str(first)],
                   check=True)
    im = Image.open(first).convert("RGB")
    scale = 224 / min(im.size)
    w, h = max(224, round(im.width * scale)), max(224, round(im.height * scale))
    left, top = (w - 224) // 2, (h - 224) // 2
    ref = np.asarray(im.resize((w, h), Image.BICUBIC).crop((left, top, left + 224, top + 224)), dtype=float)
    got = np.asarray(Image.open(frames[0]).convert("RGB"), dtype=float)
    assert np.abs(got - ref).mean() < 20  # JPEG + chroma subsampling ~10; a stretched frame ~60
    assert not (tmp_path / "frames.tmp").exists()


def test_extract_video_good(videos, tmp_path):
    out = extract_video(videos["good"], tmp_path / "a" / "x.wav", tmp_path / "f" / "x")
    assert not out.reused
    assert out.num_samples == pytest.approx(48000, rel=0.01) and out.num_frames == 3
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.wav"]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["x"]


def test_extract_video_decodes_once_and_matches_the_separate_extractors(videos, tmp_path, monkeypatch):
    calls, real = [], subprocess.Popen  # subprocess.run goes through Popen too
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, *a, **k: calls.append(cmd[0]) or real(cmd, *a, **k))
    out = extract_video(videos["portrait"], tmp_path / "x.wav", tmp_path / "x")
    assert calls == ["ffprobe", "ffmpeg"]
    monkeypatch.undo()
    assert extract_audio(videos["portrait"], tmp_path / "y.wav") == out.num_samples
    assert extract_frames(videos["portrait"], tmp_path / "y") == out.num_frames == 2
    np.testing.assert_array_equal(sf.read(tmp_path / "x.wav")[0], sf.read(tmp_path / "y.wav")[0])
    for i in range(out.num_frames):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{i:06d}.jpg")) for d in ("x", "y"))
        np.testing.assert_array_equal(a, b)


def test_extract_video_reuses_complete_items(videos, tmp_path):
    wav, frames = tmp_path / "x.wav", tmp_path / "x"
    extract_video(videos["good"], wav, frames)
    mtimes = [p.stat().st_mtime_ns for p in [wav, *frames.iterdir()]]
    again = extract_video(videos["good"], wav, frames)
    assert again.reused and again.num_frames == 3
    assert [p.stat().st_mtime_ns for p in [wav, *frames.iterdir()]] == mtimes
    # An interrupted item (frames published, wav not) is extracted again.
    wav.unlink()
    assert not extract_video(videos["good"], wav, frames).reused and wav.is_file()


def test_max_duration_cuts(videos, tmp_path):
    out = extract_video(videos["good"], tmp_path / "x.wav", tmp_path / "x", max_duration=2)
    assert out.num_samples == pytest.approx(32000, rel=0.01) and out.num_frames == 2


@pytest.mark.parametrize(
    "name, reason",
    [("corrupt", "corrupt"), ("silent", "silent"), ("no_audio", "no-audio"),
     ("audio_only", "no-frames"), ("short", "too-short")],
)
def test_rejections_are_typed_and_leave_nothing(videos, tmp_path, name, reason):
    with pytest.raises(VideoError) as info:
        extract_video(videos[name], tmp_path / "audio" / "x.wav", tmp_path / "frames" / "x")
    err = info.value
    assert err.reason == reason and err.path == str(videos[name])
    assert str(err).startswith(f"{videos[name]}: {reason}") and "\n" not in str(err)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_missing_file_and_pickling(tmp_path):
    with pytest.raises(VideoError, match="file not found") as info:
        probe(tmp_path / "nope.mp4")
    copy = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries in prepare_videos --nj > 1
    assert (copy.path, copy.reason, str(copy)) == (info.value.path, "corrupt", str(info.value))


def test_is_silent(tmp_path):
    sf.write(str(tmp_path / "z.wav"), np.zeros(16000), 16000, subtype="PCM_16")
    sf.write(str(tmp_path / "s.wav"), 0.1 * np.sin(np.arange(16000) / 5), 16000, subtype="PCM_16")
    assert is_silent(tmp_path / "z.wav") and not is_silent(tmp_path / "s.wav")
