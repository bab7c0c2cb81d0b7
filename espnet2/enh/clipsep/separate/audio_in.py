"""Audio in: check and read a user's recording (any format soundfile or ffmpeg reads, any rate, up to 8 channels).

Files are read block by block, never whole; :class:`Resampler` brings each block to the model's rate with soxr
in a stream, so memory stays flat in the duration.
"""

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

from espnet2.enh.clipsep.errors import SeparationError, first_line

__all__ = [
    "BLOCK_FRAMES",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioInfo",
    "AudioStats",
    "Resampler",
    "as_channels_first",
    "check_rate_and_channels",
    "file_blocks",
    "open_audio",
    "resampled_length",
]

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
BLOCK_FRAMES = 1 << 16  # frames read (and resampled) at a time

PathLike = Union[str, os.PathLike]


@dataclass
class AudioInfo:
    """A checked audio input.

    Attributes:
        path: The file the user gave.
        readable: The file soundfile reads (``path``, or a float copy decoded by ffmpeg).
        sample_rate: Hz.
        channels: Channel count.
        frames: Samples per channel.
        peak: Largest absolute sample.
        std: Standard deviation of the down-mix and per channel ``(1 + C,)`` (for ``normalize_variance``).
    """

    path: Path
    readable: Path
    sample_rate: int
    channels: int
    frames: int
    peak: float = 0.0
    std: Optional[np.ndarray] = None


def check_rate_and_channels(sample_rate, channels: int, name: str) -> int:
    """Validate a sample rate and channel count; returns the rate as an int."""
    if not isinstance(sample_rate, (int, np.integer)) and not float(sample_rate).is_integer():
        raise SeparationError(f"{name}: sample rate {sample_rate} is not a whole number of Hz")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise SeparationError(
            f"{name}: sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
        )
    if channels < 1:
        raise SeparationError(f"{name}: no audio channels")
    if channels > MAX_CHANNELS:
        raise SeparationError(f"{name}: {channels} channels; at most {MAX_CHANNELS} are supported")
    return rate


class AudioStats:
    """Running peak, finiteness and variance of blocks ``(C, n)``: down-mix first, then each channel."""

    def __init__(self, channels: int):
        self.n, self.peak = 0, 0.0
        self.s = np.zeros(channels + 1)
        self.ss = np.zeros(channels + 1)

    def update(self, block: np.ndarray, name: str) -> None:
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            kind = "NaN" if np.isnan(block[tuple(bad)]) else "Inf"
            raise SeparationError(f"{name}: {kind} sample at channel {bad[0]}, sample {self.n + bad[1]}")
        x = np.concatenate([block.mean(0, keepdims=True), block]).astype(np.float64)
        self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))
        self.s += x.sum(1)
        self.ss += np.square(x).sum(1)
        self.n += block.shape[1]

    def std(self) -> np.ndarray:
        if self.n < 2:
            return np.ones_like(self.s)
        return np.sqrt(np.maximum(self.ss - self.s**2 / self.n, 0.0) / (self.n - 1))


def _decode_with_ffmpeg(path: Path, workdir: Path, libsndfile_error: str) -> Path:
    """Decode the first audio stream of a container soundfile cannot read to float W64 (same rate/channels)."""
    from espnet2.enh.clipsep.video import VideoError, probe

    if shutil.which("ffmpeg") is None:
        raise SeparationError(f"{path}: not a readable audio file ({libsndfile_error}; ffmpeg not installed)")
    try:
        info = probe(path)
    except VideoError:
        raise SeparationError(f"{path}: not a readable audio file ({libsndfile_error})") from None
    if not info.has_audio:
        raise SeparationError(f"{path}: no audio stream")
    out = workdir / "decoded.w64"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-map", "0:a:0", "-vn",
           "-c:a", "pcm_f32le", "-f", "w64", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise SeparationError(f"{path}: corrupt audio (ffmpeg: {last[-1].strip() if last else proc.returncode})")
    return out


def _wav_header(path: Path) -> Optional[Tuple[int, int]]:
    """``(sample_rate, channels)`` from a RIFF/WAVE ``fmt `` chunk, or None when ``path`` is not such a file."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(head):
            channels, rate = struct.unpack("<HI", head[pos + 10 : pos + 16])
            return rate, channels
        pos += 8 + size + (size & 1)
    return None


def open_audio(path: PathLike, workdir: Path) -> AudioInfo:
    """Check an audio file completely (one streaming pass) before anything is separated or written.

    Raises:
        SeparationError: missing, a directory, not a regular file (a pipe, a device), not audio, corrupt or truncated, 0 samples, NaN/Inf samples,
            more than 8 channels, a sample rate outside [1 kHz, 768 kHz].
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise SeparationError(f"{path}: file not found")
    if path.is_dir():
        raise SeparationError(f"{path}: is a directory, not an audio file")
    if not path.is_file():  # reading a named pipe or a device would wait, or never end
        raise SeparationError(f"{path}: not a regular file (a pipe, device or socket); give an audio file")
    readable = path
    try:
        info = soundfile.info(str(path))
    except soundfile.LibsndfileError as err:
        message = str(err.error_string) if getattr(err, "error_string", "") else first_line(err)
        header = _wav_header(path)
        if header is not None:  # a WAV file that libsndfile refuses: say which field is wrong
            rate, channels = header
            check_rate_and_channels(rate, channels, str(path))
            raise SeparationError(f"{path}: invalid WAV file (libsndfile: {message})") from None
        readable = _decode_with_ffmpeg(path, workdir, f"libsndfile: {message}")
        info = soundfile.info(str(readable))
    except (OSError, RuntimeError) as err:
        raise SeparationError(f"{path}: cannot read ({type(err).__name__}: {first_line(err)})") from None
    rate = check_rate_and_channels(info.samplerate, info.channels, str(path))
    if "(should be" in (info.extra_info or ""):  # libsndfile: a chunk shorter than its header says
        raise SeparationError(f"{path}: truncated audio (the header promises more data than the file holds)")
    stats = AudioStats(info.channels)
    try:
        with soundfile.SoundFile(str(readable)) as f:
            declared = f.frames
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                stats.update(block.T, str(path))
    except soundfile.LibsndfileError as err:
        problem = f"corrupt or truncated audio after {stats.n} samples (libsndfile: {err.error_string})"
        raise SeparationError(f"{path}: {problem}") from None
    if stats.n == 0:
        raise SeparationError(f"{path}: no samples (0 frames)")
    if declared > 0 and stats.n < declared:
        raise SeparationError(f"{path}: truncated audio ({stats.n} of {declared} samples readable)")
    return AudioInfo(path, readable, rate, info.channels, stats.n, stats.peak, stats.std())


def file_blocks(audio: AudioInfo) -> Iterator[np.ndarray]:
    import soundfile

    try:
        with soundfile.SoundFile(str(audio.readable)) as f:
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                yield np.ascontiguousarray(block.T)
    except soundfile.LibsndfileError as err:
        raise SeparationError(f"{audio.path}: read error ({err.error_string})") from None


def as_channels_first(waveform, name: str = "waveform") -> Tuple[np.ndarray, bool]:
    """A waveform ``(T,)`` or ``(C, T)`` (numpy or torch) as float32 ``(C, T)``; also whether it was torch."""
    is_torch = isinstance(waveform, torch.Tensor)
    x = waveform.detach().cpu().numpy() if is_torch else np.asarray(waveform)
    if x.dtype.kind not in "fiu":
        raise SeparationError(f"{name}: not a numeric waveform (dtype {x.dtype})")
    if x.dtype.kind in "iu":  # integer PCM, as soundfile's dtype='int16' etc. gives it
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise SeparationError(f"{name}: expected (T,) or (C, T) samples, got shape {tuple(x.shape)}")
    if x.shape[0] > MAX_CHANNELS:
        raise SeparationError(
            f"{name}: {x.shape[0]} channels; at most {MAX_CHANNELS} are supported (waveforms are (C, T), "
            "channels first)"
        )
    return np.ascontiguousarray(x, dtype=np.float32), is_torch


class Resampler:
    """Streaming soxr resampler of ``(C, n)`` blocks (soxr's stream output equals its one-shot output)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int):
        import soxr

        self.stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")
        self.channels = channels

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(y.reshape(-1, self.channels).T)


def resampled_length(frames: int, in_rate: int, out_rate: int) -> int:
    """Length of ``frames`` samples resampled from ``in_rate`` to ``out_rate`` (rounded, as soxr does)."""
    return int(math.floor(frames * out_rate / in_rate + 0.5))
