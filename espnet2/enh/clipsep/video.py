"""Turn a video file into 16 kHz mono audio and 1-fps square frames with ffmpeg.

``extract_video`` is the whole conversion of one file: probe, decode the audio and the frames in one ffmpeg
pass, check the audio, then publish both under their final names. Every rejection raises :class:`VideoError`
with a short ``reason`` (one of :data:`SKIP_REASONS`) so that callers can count them. Outputs are written to
temporary names and renamed only once complete, so an interrupted run never leaves a half-written item behind,
and an item whose outputs already exist is reused without running ffmpeg.

Frames: frame ``i`` (``%06d.jpg``, 0-based) is the picture at second ``i / fps`` (ffmpeg's ``fps`` filter), scaled
with bicubic interpolation so that its short side (in display aspect, i.e. portrait or landscape alike) is
``size``, then centre-cropped to ``size x size`` and stored as JPEG (quality 90).
"""

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import soundfile as sf
from PIL import Image

__all__ = [
    "FRAME_PATTERN",
    "JPEG_QUALITY",
    "SKIP_REASONS",
    "ExtractedVideo",
    "VideoError",
    "VideoInfo",
    "count_frames",
    "extract_audio",
    "extract_frames",
    "extract_video",
    "frame_filter",
    "is_silent",
    "probe",
]

PathLike = Union[str, os.PathLike]

SKIP_REASONS = ("corrupt", "no-audio", "no-frames", "silent", "too-short")
JPEG_QUALITY = 90
FRAME_PATTERN = "{:06d}.jpg"


class VideoError(Exception):
    """A video that cannot become a training or test item.

    Args:
        path: The video file.
        reason: One of :data:`SKIP_REASONS`.
        detail: What exactly went wrong (one line).
    """

    def __init__(self, path: PathLike, reason: str, detail: str = ""):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.detail = " ".join(detail.split())  # one line, whatever ffmpeg printed
        super().__init__(f"{self.path}: {reason}" + (f" ({self.detail})" if self.detail else ""))

    def __reduce__(self):
        # Rebuilt from its fields when it crosses a process boundary (the default would pass only the message).
        return type(self), (self.path, self.reason, self.detail)


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a file.

    Attributes:
        duration: Container duration in seconds (None when unknown).
        has_audio: Whether there is at least one audio stream.
        has_video: Whether there is at least one video stream that is not a cover picture.
        width: Coded width of the first video stream (0 without video).
        height: Coded height of the first video stream (0 without video).
    """

    duration: Optional[float]
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class ExtractedVideo:
    """The published outputs of one video.

    Attributes:
        wav: 16-bit PCM mono wav file.
        frames_dir: Directory of ``%06d.jpg`` frames.
        num_samples: Length of the wav in samples.
        num_frames: Number of frames.
        reused: True when the outputs already existed and ffmpeg was not run.
    """

    wav: Path
    frames_dir: Path
    num_samples: int
    num_frames: int
    reused: bool = False


def _run(cmd: List[str], path: PathLike) -> subprocess.CompletedProcess:
    """Run an ffmpeg tool; a non-zero exit becomes a ``corrupt`` VideoError quoting its last error line."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    except FileNotFoundError as err:
        raise RuntimeError(f"{cmd[0]} not found on PATH (apt-get install ffmpeg)") from err
    if proc.returncode != 0:
        detail = _last_line(proc.stderr, path) or f"{cmd[0]} exit code {proc.returncode}"
        raise VideoError(path, "corrupt", detail)
    return proc


def _last_line(stderr: bytes, path: PathLike) -> str:
    """The last non-empty line of an ffmpeg tool's stderr, without a leading ``<path>: ``."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line[len(f"{path}: ") :] if line.startswith(f"{path}: ") else line


def probe(path: PathLike) -> VideoInfo:
    """Read the streams and duration of a media file with ffprobe.

    Args:
        path: Media file.

    Returns:
        The file's :class:`VideoInfo`.

    Raises:
        VideoError: ``corrupt`` when the file is missing, unreadable or has no audio/video stream at all.
    """
    if not Path(path).is_file():
        raise VideoError(path, "corrupt", "file not found")
    proc = _run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)], path
    )
    try:
        meta = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as err:
        raise VideoError(path, "corrupt", f"unreadable ffprobe output: {err}") from err
    streams = meta.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    # A cover picture (e.g. in an .m4a) is a "video" stream with a single still image: not a video.
    video = [
        s for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic", 0)
    ]
    if not audio and not video:
        raise VideoError(path, "corrupt", "no audio or video stream")
    duration = _as_float(meta.get("format", {}).get("duration"))
    if duration is None:
        durations = [_as_float(s.get("duration")) for s in audio + video]
        duration = max((d for d in durations if d is not None), default=None)
    return VideoInfo(
        duration=duration,
        has_audio=bool(audio),
        has_video=bool(video),
        width=int(video[0].get("width", 0)) if video else 0,
        height=int(video[0].get("height", 0)) if video else 0,
    )


def _as_float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _limit(max_duration: Optional[float]) -> List[str]:
    """ffmpeg input options reading at most ``max_duration`` seconds."""
    return ["-t", f"{max_duration:g}"] if max_duration else []


def extract_audio(
    path: PathLike, out_wav: PathLike, fs: int = 16000, max_duration: Optional[float] = None
) -> int:
    """Decode the first audio stream to a 16-bit PCM mono wav (down-mixed and resampled by ffmpeg).

    The wav is written to ``<out_wav>.tmp`` and renamed, so ``out_wav`` is either complete or absent.

    Args:
        path: Video file.
        out_wav: Output wav file.
        fs: Output sampling rate in Hz.
        max_duration: Keep only the first ``max_duration`` seconds (None: all).

    Returns:
        The number of samples written.

    Raises:
        VideoError: ``corrupt`` when ffmpeg fails.
    """
    out_wav = Path(out_wav)
    tmp = out_wav.with_name(out_wav.name + ".tmp")
    try:
        _run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *_limit(max_duration), "-i", str(path), *_audio_output(fs),
             str(tmp)],
            path,
        )
        num_samples = sf.info(str(tmp)).frames
        os.replace(tmp, out_wav)
    finally:
        tmp.unlink(missing_ok=True)
    return num_samples


def frame_filter(fps: float = 1, size: int = 224) -> str:
    """The ffmpeg filter graph: ``fps`` sampling, bicubic short-side scaling to ``size``, centre crop.

    The scale uses the display aspect ratio (``dar``), so portrait, landscape and anamorphic videos all get
    their short side scaled to ``size`` without distortion before the square centre crop.
    """
    width = f"if(lt(dar,1),{size},ceil({size}*dar))"
    height = f"if(lt(dar,1),ceil({size}/dar),{size})"
    return f"fps={fps:g},scale='{width}':'{height}':flags=bicubic,setsar=1,crop={size}:{size}"


def _audio_output(fs: int) -> List[str]:
    """ffmpeg output options of the wav: first audio stream, down-mixed to mono, resampled to ``fs``, 16-bit PCM."""
    return ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(fs), "-c:a", "pcm_s16le", "-f", "wav"]


def _frames_output(fps: float, size: int) -> List[str]:
    """ffmpeg output options of the frames: first video stream through :func:`frame_filter`, raw RGB on stdout."""
    return ["-map", "0:v:0", "-an", "-vf", frame_filter(fps, size), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def _save_frames(cmd: List[str], path: PathLike, out_dir: Path, size: int) -> int:
    """Run ``cmd`` (ffmpeg streaming ``size x size`` RGB frames to stdout) and save each as a JPEG in ``out_dir``.

    Returns:
        The number of frames saved.

    Raises:
        VideoError: ``corrupt`` when ffmpeg fails.
    """
    frame_bytes = size * size * 3
    # stderr goes to a file: a pipe could fill up and block ffmpeg while we read its stdout.
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        except FileNotFoundError as error:
            raise RuntimeError(f"{cmd[0]} not found on PATH (apt-get install ffmpeg)") from error
        with proc:
            count = 0
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                image = Image.frombuffer("RGB", (size, size), buf, "raw", "RGB", 0, 1)
                image.save(out_dir / FRAME_PATTERN.format(count), quality=JPEG_QUALITY)
                count += 1
        err.seek(0)
        if proc.returncode != 0:
            detail = _last_line(err.read(), path) or f"ffmpeg exit code {proc.returncode}"
            raise VideoError(path, "corrupt", detail)
    return count


def _publish_dir(tmp: Path, out_dir: Path) -> None:
    """Rename the complete directory ``tmp`` to ``out_dir`` (replacing an existing one)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def extract_frames(
    path: PathLike, out_dir: PathLike, fps: float = 1, size: int = 224, max_duration: Optional[float] = None
) -> int:
    """Write the video's frames at ``fps`` as ``size x size`` JPEGs ``000000.jpg, 000001.jpg, ...``.

    ffmpeg streams raw RGB frames that are saved with Pillow into ``<out_dir>.tmp``, which is renamed to
    ``out_dir`` once all frames are written (an existing ``out_dir`` is replaced).

    Args:
        path: Video file.
        out_dir: Output directory.
        fps: Frames per second to keep.
        size: Side of the square output frames.
        max_duration: Keep only the first ``max_duration`` seconds (None: all).

    Returns:
        The number of frames written.

    Raises:
        VideoError: ``corrupt`` when ffmpeg fails, ``no-frames`` when it decodes no picture.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *_limit(max_duration), "-i", str(path), *_frames_output(fps, size)]
    try:
        count = _save_frames(cmd, path, tmp, size)
        if count == 0:
            raise VideoError(path, "no-frames", "no decodable picture")
        _publish_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count


def is_silent(wav: PathLike, peak_threshold: float = 1e-4, rms_threshold: float = 1e-5) -> bool:
    """Whether a wav file is (digitally) silent: peak below ``peak_threshold`` or RMS below ``rms_threshold``."""
    peak, energy, count = 0.0, 0.0, 0
    for block in sf.blocks(str(wav), blocksize=1 << 20, dtype="float64", always_2d=True):
        peak = max(peak, float(np.max(np.abs(block), initial=0.0)))
        energy += float(np.sum(np.square(block)))
        count += block.size
    return count == 0 or peak < peak_threshold or (energy / count) ** 0.5 < rms_threshold


def count_frames(frames_dir: PathLike) -> int:
    """Number of ``.jpg`` frames in a directory (0 when it does not exist)."""
    frames_dir = Path(frames_dir)
    return sum(1 for p in frames_dir.iterdir() if p.suffix == ".jpg") if frames_dir.is_dir() else 0


def extract_video(
    path: PathLike,
    out_wav: PathLike,
    out_frames_dir: PathLike,
    fs: int = 16000,
    fps: float = 1,
    size: int = 224,
    min_duration: float = 1.0,
    max_duration: Optional[float] = None,
) -> ExtractedVideo:
    """Convert one video into a wav and a frames directory, or reject it.

    Checks, in order: readable (``corrupt``), has audio (``no-audio``), has video (``no-frames``), long enough
    (``too-short``, from the container and again from the decoded audio), not silent (``silent``), at least one
    decodable frame (``no-frames``). The frames directory is published before the wav, so an existing wav next
    to a non-empty frames directory marks a complete item; such an item is returned as is (``reused``).

    Args:
        path: Video file.
        out_wav: Output wav file.
        out_frames_dir: Output frames directory.
        fs: Audio sampling rate in Hz.
        fps: Frames per second.
        size: Side of the square frames.
        min_duration: Shortest accepted duration in seconds.
        max_duration: Keep only the first ``max_duration`` seconds (None: all).

    Returns:
        The published outputs.

    Raises:
        VideoError: When the video is rejected; nothing is left under the output names then.
    """
    out_wav, out_frames_dir = Path(out_wav), Path(out_frames_dir)
    num_frames = count_frames(out_frames_dir)
    if out_wav.is_file() and num_frames > 0:
        num_samples = sf.info(str(out_wav)).frames
        if num_samples < min_duration * fs:
            raise VideoError(path, "too-short", f"{num_samples / fs:.2f} s of audio < {min_duration:g} s")
        return ExtractedVideo(out_wav, out_frames_dir, num_samples, num_frames, reused=True)

    info = probe(path)
    if not info.has_audio:
        raise VideoError(path, "no-audio", "no audio stream")
    if not info.has_video:
        raise VideoError(path, "no-frames", "no video stream")
    if info.duration is not None and info.duration < min_duration:
        raise VideoError(path, "too-short", f"{info.duration:.2f} s < {min_duration:g} s")

    out_wav.parent.mkdir(parents=True, exist_ok=True)
    out_frames_dir.parent.mkdir(parents=True, exist_ok=True)
    # One decoding pass writes both, to private names; the frames are published first, then the wav.
    staged = out_wav.with_name(out_wav.name + ".new")
    frames_tmp = out_frames_dir.with_name(out_frames_dir.name + ".tmp")
    shutil.rmtree(frames_tmp, ignore_errors=True)
    frames_tmp.mkdir()
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *_limit(max_duration), "-i", str(path),
           *_audio_output(fs), str(staged), *_frames_output(fps, size)]  # fmt: skip
    try:
        num_frames = _save_frames(cmd, path, frames_tmp, size)
        num_samples = sf.info(str(staged)).frames
        if num_samples < min_duration * fs:
            raise VideoError(path, "too-short", f"{num_samples / fs:.2f} s of audio < {min_duration:g} s")
        if is_silent(staged):
            raise VideoError(path, "silent", "digital silence")
        if num_frames == 0:
            raise VideoError(path, "no-frames", "no decodable picture")
        _publish_dir(frames_tmp, out_frames_dir)
        os.replace(staged, out_wav)
    finally:
        staged.unlink(missing_ok=True)
        shutil.rmtree(frames_tmp, ignore_errors=True)
    return ExtractedVideo(out_wav, out_frames_dir, num_samples, num_frames)
