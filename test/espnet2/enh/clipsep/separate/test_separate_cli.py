"""``python -m espnet2.enh.clipsep.bin.separate``: outputs, and one clear error line per bad input.

Every bad input must give exactly one ``error: <file>: <problem>`` line on stderr, a non-zero exit status (1: an
input failed, the others were separated; 2: nothing could start) and no output file, complete or partial.
The CLI runs in-process (``main(argv)``) on the tiny recipe tree of the ``recipe`` fixture (conftest.py).
"""

import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch

from espnet2.enh.clipsep.bin.separate import main


FS = 16000


@pytest.fixture
def model(recipe):
    return str(recipe / "train_enh_clipsep_nit")


@pytest.fixture(scope="module")
def loaded():
    """Separators loaded by this module's tests, by arguments."""
    return {}


@pytest.fixture
def loaded_once(monkeypatch, loaded):
    """Tests of input handling reuse one loaded Separator (loading itself is tested elsewhere here)."""
    from espnet2.enh.clipsep.separate import Separator

    original = Separator.from_pretrained.__func__

    def cached(cls, model, **kwargs):
        key = (str(model), tuple(sorted(kwargs.items(), key=str)))
        if key not in loaded:
            loaded[key] = original(cls, model, **kwargs)
        return loaded[key]

    monkeypatch.setattr(Separator, "from_pretrained", classmethod(cached))


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def _errors(lines):
    return [ln for ln in lines if ln.startswith("error:")]


def _files(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


# --------------------------------------------------------------------------------------------------
# What works
# --------------------------------------------------------------------------------------------------
def test_text_queries_and_several_files(noise, model, tmp_path, capsys):
    from espnet2.enh.clipsep.separate import Separator

    soundfile.write(tmp_path / "a.wav", noise(1.3, fs=44100, seed=1), 44100)
    soundfile.write(tmp_path / "b.flac", noise(2.2, channels=2, seed=2).T, FS)
    out = tmp_path / "out"
    rc, lines = _cli(capsys, "--model", model, "--query", "dog barking", "--query", "violin",
                     tmp_path / "a.wav", tmp_path / "b.flac", "-o", out, "--chunk_seconds", "1")
    assert rc == 0 and not _errors(lines)
    assert _files(out) == ["a_dog-barking.wav", "a_violin.wav", "b_dog-barking.wav", "b_violin.wav"]
    y, rate = soundfile.read(out / "a_violin.wav", dtype="float32")
    assert rate == FS and len(y) == round(1.3 * 44100 * FS / 44100)
    sep = Separator.from_pretrained(model, device="cpu", chunk_seconds=1.0)
    x, _ = soundfile.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(y, sep(x, 44100, query="violin"), atol=1e-6)


class _Terminal:
    """A stderr that says it is a terminal, so that tqdm draws its bars (it hides them from pipes)."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_counts_seconds_of_a_long_file_and_quiet_hides_it(noise, model, loaded_once, tmp_path,
                                                                    monkeypatch):
    """On a terminal, one bar per file counts seconds of audio (block by block: the next test); --quiet: none."""
    import sys

    seconds = 3 * (1 << 16) / FS + 0.5  # four blocks of espnet2.enh.clipsep.separate.audio_in.BLOCK_FRAMES
    soundfile.write(tmp_path / "long.wav", noise(seconds, seed=3), FS)
    out = []
    for quiet in ((), ("--quiet",)):
        term = _Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        rc = main(["--model", model, "--query", "violin", str(tmp_path / "long.wav"), "-o", str(tmp_path / "o"),
                   "--overwrite", *quiet])
        monkeypatch.undo()
        assert rc == 0
        out.append(term.buffer.getvalue())
    assert f"long.wav:   0%" in out[0] and f"0.0/{seconds:.1f} s audio" in out[0]
    assert f"long.wav: 100%" in out[0] and f"{seconds:.1f}/{seconds:.1f} s audio" in out[0]
    assert out[1] == ""


def test_separate_file_reports_progress_block_by_block(noise, model, loaded_once, tmp_path):
    from espnet2.enh.clipsep.separate import Separator
    from espnet2.enh.clipsep.separate.audio_in import BLOCK_FRAMES

    frames = 2 * BLOCK_FRAMES + 1000
    soundfile.write(tmp_path / "in.wav", noise(frames / FS, seed=4), FS)
    calls = []
    sep = Separator.from_pretrained(model, device="cpu")
    sep.separate_file(tmp_path / "in.wav", tmp_path / "o", query="violin", progress=lambda d, t: calls.append((d, t)))
    total = frames / FS
    assert calls == [(0.0, total), (BLOCK_FRAMES / FS, total), (2 * BLOCK_FRAMES / FS, total), (total, total)]


def test_remove_mode_and_input_rate(noise, model, tmp_path, capsys):
    x = noise(1.5, fs=22050, seed=3)
    soundfile.write(tmp_path / "noisy.wav", x, 22050, subtype="FLOAT")
    out = tmp_path / "out"
    assert _cli(capsys, "--model", model, "--query", "speech", tmp_path / "noisy.wav", "-o", out,
                "--keep_input_rate")[0] == 0
    assert _cli(capsys, "--model", model, "--query", "speech", "--remove", tmp_path / "noisy.wav", "-o", out,
                "--keep_input_rate")[0] == 0
    assert _files(out) == ["noisy_speech.wav", "noisy_without_speech.wav"]
    kept, rate = soundfile.read(out / "noisy_speech.wav", dtype="float32")
    removed, _ = soundfile.read(out / "noisy_without_speech.wav", dtype="float32")
    assert rate == 22050 and kept.shape == x.shape
    # Soft masks: the query and everything but the query add up to the mixture, as band-limited by the
    # round trip through the model's 16 kHz.
    ref = soxr.resample(soxr.resample(x, 22050, FS), FS, 22050)[: len(x)]
    np.testing.assert_allclose(kept + removed, ref, atol=1e-5)


def test_image_query_per_channel_and_flac(noise, model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    soundfile.write(tmp_path / "st.wav", noise(1.0, channels=2, seed=4).T, FS)
    rc, _ = _cli(capsys, "--model", model, "--image", tmp_path / "f.jpg", tmp_path / "st.wav", "-o", tmp_path / "o",
                 "--per_channel", "--format", "flac")
    assert rc == 0 and _files(tmp_path / "o") == ["st_image-f.flac"]
    info = soundfile.info(tmp_path / "o" / "st_image-f.flac")
    assert info.channels == 2 and info.frames == FS and info.samplerate == FS


def test_audio_of_a_video_file_through_ffmpeg(make_video, model, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4", seconds=2.0)  # AAC at 44.1 kHz, stereo: not for libsndfile
    rc, lines = _cli(capsys, "--model", model, "--query", "beep", video, "-o", tmp_path / "o")
    assert rc == 0 and not _errors(lines)
    assert abs(soundfile.info(tmp_path / "o" / "clip_beep.wav").duration - 2.0) < 0.1


def test_several_inputs_one_bad_the_others_are_separated(noise, model, loaded_once, tmp_path, capsys):
    soundfile.write(tmp_path / "good.wav", noise(0.5), FS)
    rc, lines = _cli(capsys, "--model", model, "--query", "x", tmp_path / "missing.wav", tmp_path / "good.wav",
                     "-o", tmp_path / "o")
    assert rc == 1 and _errors(lines) == [f"error: {tmp_path / 'missing.wav'}: file not found"]
    assert _files(tmp_path / "o") == ["good_x.wav"]


def test_inputs_with_the_same_name_are_not_written_over_each_other(noise, model, loaded_once, tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        soundfile.write(tmp_path / d / "take.wav", noise(0.5, seed=ord(d)), FS)
    rc, lines = _cli(capsys, "--model", model, "--query", "x", tmp_path / "a" / "take.wav", tmp_path / "b" / "take.wav",
                     "-o", tmp_path / "o", "--overwrite")
    assert rc == 1 and _errors(lines) == [
        f"error: {tmp_path / 'b' / 'take.wav'}: same output names as {tmp_path / 'a' / 'take.wav'} "
        "(separate them into different -o dirs)"
    ]
    assert _files(tmp_path / "o") == ["take_x.wav"]


def test_help_lists_the_options():
    from espnet2.enh.clipsep.bin.separate import get_parser

    text = get_parser().format_help()
    for option in ("--query", "--image", "--remove", "--per_channel", "--keep_input_rate", "--chunk_seconds",
                   "--device", "--overwrite", "--clip_model"):
        assert option in text


# --------------------------------------------------------------------------------------------------
# Bad audio inputs: exit 1, one line naming the file, nothing written
# --------------------------------------------------------------------------------------------------
def _wav_bytes(x, rate=FS, subtype="PCM_16"):
    with tempfile.TemporaryDirectory() as d:
        soundfile.write(Path(d) / "x.wav", x, rate, subtype=subtype)
        return (Path(d) / "x.wav").read_bytes()


def _signal(seconds, seed=0):
    """A deterministic test signal for the bad-input table (values do not matter, only the file's flaw)."""
    return (0.3 * np.random.default_rng(seed).uniform(-0.5, 0.5, int(round(seconds * FS)))).astype(np.float32)


def _with_rate(rate):
    data = bytearray(_wav_bytes(_signal(0.2)))
    data[24:28] = struct.pack("<I", rate)  # fmt chunk: sample rate
    return bytes(data)


def _corrupt_flac(path):
    soundfile.write(path, _signal(3.0), FS)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 400] = b"\xff" * 400
    path.write_bytes(bytes(data))


def _nan(kind):
    x = _signal(0.5)
    x[1234] = np.nan if kind == "nan" else np.inf
    return _wav_bytes(x, subtype="FLOAT")


BAD_AUDIO = {
    "missing_file": (None, "file not found"),
    "directory": ("dir", "is a directory"),
    "named_pipe": ("fifo", "not a regular file (a pipe, device or socket)"),
    "shorter_than_one_stft_frame": (_wav_bytes(_signal(300 / FS)), "300 samples at 16000 Hz: shorter than one STFT frame"),
    "not_audio": (b"hello, I am text\n" * 20, "not a readable audio file"),
    "truncated_wav": (_wav_bytes(_signal(1.0))[:12000], "truncated audio"),
    "corrupt_flac": ("flac", "corrupt or truncated audio"),
    "zero_samples": (_wav_bytes(np.zeros(0, np.float32)), "no samples"),
    "nan_samples": (_nan("nan"), "NaN sample at channel 0, sample 1234"),
    "inf_samples": (_nan("inf"), "Inf sample at channel 0, sample 1234"),
    "nine_channels": (_wav_bytes(np.zeros((100, 9), np.float32) + 0.1), "9 channels; at most 8"),
    "sample_rate_zero": (_with_rate(0), "sample rate 0 Hz is outside"),
    "sample_rate_absurd": (_with_rate(2**31 - 1), "sample rate 2147483647 Hz is outside"),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_input(model, loaded_once, tmp_path, capsys, case):
    content, problem = BAD_AUDIO[case]
    path = tmp_path / ("in.flac" if content == "flac" else "in.wav")
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # reading it would wait forever: refused before it is opened
    elif content == "flac":
        _corrupt_flac(path)
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    rc, lines = _cli(capsys, "--model", model, "--query", "violin", path, "-o", out)
    assert rc == 1
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and problem in lines[0], lines
    assert _files(out) == []  # nothing written, not even a temporary file


def test_all_zero_audio_warns_and_writes_silence(model, loaded_once, tmp_path, capsys):
    soundfile.write(tmp_path / "silent.wav", np.zeros((3000, 2), np.float32), 8000)
    rc, lines = _cli(capsys, "--model", model, "--query", "violin", tmp_path / "silent.wav", "-o", tmp_path / "o")
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("warning:") and "all samples are zero" in lines[0]
    y, rate = soundfile.read(tmp_path / "o" / "silent_violin.wav")
    assert rate == FS and len(y) == 6000 and not y.any()


# --------------------------------------------------------------------------------------------------
# Bad queries, models and outputs: exit 2 (nothing starts), or 1 for one file's output
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def mix(noise, tmp_path):
    soundfile.write(tmp_path / "mix.wav", noise(0.6), FS)
    return tmp_path / "mix.wav"


def test_empty_query(model, loaded_once, mix, tmp_path, capsys):
    rc, lines = _cli(capsys, "--model", model, "--query", "   ", mix, "-o", tmp_path / "o")
    assert rc == 2 and lines == ["error: query 1: empty text query"]
    assert _files(tmp_path / "o") == []


def test_query_longer_than_77_tokens_is_truncated_with_a_warning(model, loaded_once, mix, tmp_path, capsys):
    rc, lines = _cli(capsys, "--model", model, "--query", " ".join(["dog"] * 100), mix, "-o", tmp_path / "o")
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("warning:") and "truncated to 77" in lines[0]
    assert len(_files(tmp_path / "o")) == 1


def test_unreadable_image(model, loaded_once, mix, tmp_path, capsys):
    (tmp_path / "frame.jpg").write_text("not a picture")
    rc, lines = _cli(capsys, "--model", model, "--image", tmp_path / "frame.jpg", mix, "-o", tmp_path / "o")
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'frame.jpg'}: not a readable image")


def test_model_path_missing(mix, tmp_path, capsys):
    rc, lines = _cli(capsys, "--model", tmp_path / "nope" / "packed.zip", "--query", "x", mix, "-o", tmp_path / "o")
    assert rc == 2 and lines == [f"error: {tmp_path / 'nope' / 'packed.zip'}: model not found"]


def test_model_tag_that_cannot_be_fetched_offline(mix, tmp_path, capsys):
    rc, lines = _cli(capsys, "--model", "espnet/no_such_clipsep_model", "--cache_dir", tmp_path / "zoo",
                     "--query", "x", mix, "-o", tmp_path / "o")
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith("error: espnet/no_such_clipsep_model: model not found (not a local path")


def test_model_archive_with_a_member_escaping_the_target_dir(mix, tmp_path, capsys):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("meta.yaml", "files: {model_file: m.pth}\nyaml_files: {train_config: c.yaml}\n")
        zf.writestr("../../escaped.txt", "x")
    rc, lines = _cli(capsys, "--model", bad, "--cache_dir", tmp_path / "zoo", "--query", "x", mix, "-o", tmp_path / "o")
    assert rc == 2 and len(lines) == 1
    assert lines[0] == f"error: {bad}: archive member '../../escaped.txt' would be written outside the target directory"
    assert not list(tmp_path.parent.glob("escaped.txt")) and not (tmp_path / "zoo").exists()


def test_model_archive_neither_zip_nor_tar_is_one_line(mix, tmp_path, capsys):
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"not an archive at all\n" * 50)
    rc, lines = _cli(capsys, "--model", bad, "--cache_dir", tmp_path / "zoo", "--query", "x", mix, "-o", tmp_path / "o")
    assert (rc, lines) == (2, [f"error: {bad}: not a zip or tar model archive"])


def test_short_waveform_is_refused_with_its_length(model, loaded_once):
    from espnet2.enh.clipsep.separate import SeparationError, Separator

    sep = Separator.from_pretrained(model, device="cpu")
    with pytest.raises(SeparationError, match=r"^waveform: 1 samples at 44100 Hz \(0 at the model's 16000 Hz\): shorter"):
        sep(np.zeros(1, np.float32) + 0.1, 44100, query="violin")
    with pytest.raises(SeparationError, match=rf"waveform: {sep.n_fft - 1} samples at 16000 Hz: shorter"):
        sep(_signal((sep.n_fft - 1) / FS), FS, query="violin")
    assert sep(_signal(sep.n_fft / FS), FS, query="violin").shape == (sep.n_fft,)  # one frame is enough


class _Payload:
    """Unpickling this would create a file: weights_only loading must refuse before that happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_needs_pickle_execution_is_refused(model, mix, tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_bytes((Path(model) / "config.yaml").read_bytes())
    state = torch.load(Path(model) / "model.pth", weights_only=True)
    marker = tmp_path / "code_ran"
    torch.save({**state, "payload": _Payload(marker)}, exp / "model.pth")
    rc, lines = _cli(capsys, "--model", exp, "--query", "x", mix, "-o", tmp_path / "o")
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {exp / 'model.pth'}: checkpoint needs pickle code execution to load; refused")
    assert not marker.exists()


def test_output_dir_not_writable(model, loaded_once, mix, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores modes: use a read-only file system instead
            locked = Path("/sys")
            try:
                tempfile.mkstemp(dir=locked)
                pytest.skip("no unwritable directory available")
            except OSError:
                pass
        rc, lines = _cli(capsys, "--model", model, "--query", "x", mix, "-o", locked)
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {locked}: output directory is not writable")
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_output_file_exists_refused_unless_overwrite(noise, model, loaded_once, mix, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mix_violin.wav").write_bytes(b"keep me")
    rc, lines = _cli(capsys, "--model", model, "--query", "violin", mix, "-o", out)
    assert rc == 1
    assert lines == [f"error: {out / 'mix_violin.wav'}: output file exists (pass --overwrite to replace it)"]
    assert (out / "mix_violin.wav").read_bytes() == b"keep me"
    rc, lines = _cli(capsys, "--model", model, "--query", "violin", mix, "-o", out, "--overwrite")
    assert rc == 0 and soundfile.info(out / "mix_violin.wav").frames == len(noise(0.6))
    assert _files(out) == ["mix_violin.wav"]
