"""Offline, deterministic mini "video" corpus standing in for MUSIC / VGGSound.

Every clip is a real mp4 file (H.264 frames at ``fps`` plus 16 kHz mono audio) showing the emoji of one sound
class and sounding like that class: a General MIDI instrument rendered with fluidsynth, or a short recording
from Debian's ``sound-icons`` package scattered over the clip. Some training and validation clips also carry
an "off-screen" source that has no picture (espeak-ng speech or coloured noise); test clips are clean, like
VGGSound-Clean. A separate noisy pool (``videos/noisy``) holds clips of off-screen sounds only, none of them a
class: spoken sentences or scattered sound effects that no class uses, over a coloured-noise floor, under a
picture of an unrelated emoji. It plays the part of VGGSound's test-good-no-music list in MUSIC+: the "+" test
set mixes the clean test clips with interferers drawn from it. A separate set of augmented emoji images paired
with their class words stands in for CLIP's web-scale image-caption pretraining data. Everything follows from
the seed; each split has random streams of its own, so the noisy pool leaves the other splits unchanged.

Layout of the output directory::

    videos/{train,valid,test}/<class>/<class>_<split>_<NNN>.mp4
    videos/noisy/{speech,effects}/noisy_<NNN>.mp4
    clip_pretrain/images/<class>_<NNN>.jpg
    clip_pretrain/pairs.tsv    <absolute image path> TAB <label words>
    classes.tsv                <class> TAB <emoji> TAB <sound source>
    offscreen.tsv              <clip id> TAB <off-screen source> TAB <gain in dB relative to the on-screen source>
    noisy.tsv                  <clip id> TAB <sources> TAB <noise floor> TAB <its level in dB relative to them>
    .done                      the options as JSON, written last

A clip has ``ceil(duration * fps)`` frames (frame ``i`` shows second ``i / fps``), so its video stream may
outlast the audio by less than one frame. Decoded AAC audio can carry up to one 1024-sample AAC frame of
encoder padding after ``duration``; ``--audio_codec alac`` is lossless and exact. The directory is built under
a temporary name next to it and renamed when complete.
"""

import concurrent.futures as cf
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont
from scipy.signal import resample_poly
from tqdm import tqdm

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SOUND_ICONS = Path("/usr/share/sounds/sound-icons")
FORMAT_VERSION = 2  # 2: the noisy pool
# Recordings of the sound-icons package that no class uses: the noisy pool's sound effects (squeaks and beeps).
NOISY_EFFECTS = ("pisk-up.wav", "pisk-down.wav", "pipe.wav", "prompt.wav")
NOISY_KINDS = ("speech", "effects")

logger = logging.getLogger(__name__)


class MiniCorpusError(RuntimeError):
    """A one-line, user-facing reason why the mini corpus cannot be made."""


@dataclass(frozen=True)
class SoundClass:
    """One sound class of the mini corpus.

    Attributes:
        name: Lower-case identifier with underscores, e.g. ``acoustic_guitar``.
        emoji: The picture of the class (a Noto Color Emoji glyph).
        kind: ``"instrument"`` (a General MIDI program), ``"percussion"`` (the General MIDI drum kit on
            channel 10) or ``"effect"`` (a recording from Debian's ``sound-icons`` package).
        source: Human-readable description of the sound source.
        program: 0-based General MIDI program of an instrument.
        register: Lowest and highest MIDI note an instrument plays.
        chords: Whether the instrument sometimes plays chords instead of single notes.
        recording: File name of an effect in the ``sound-icons`` directory.
    """

    name: str
    emoji: str
    kind: str
    source: str
    program: int = 0
    register: Tuple[int, int] = (0, 0)
    chords: bool = False
    recording: str = ""

    @property
    def words(self) -> str:
        """The class name as label words, e.g. ``acoustic guitar``."""
        return self.name.replace("_", " ")


CLASSES: Tuple[SoundClass, ...] = (
    SoundClass("piano", "🎹", "instrument", "fluidsynth FluidR3_GM program 0 (Acoustic Grand Piano)",
               program=0, register=(45, 84), chords=True),
    SoundClass("violin", "🎻", "instrument", "fluidsynth FluidR3_GM program 40 (Violin)",
               program=40, register=(55, 88)),
    SoundClass("trumpet", "🎺", "instrument", "fluidsynth FluidR3_GM program 56 (Trumpet)",
               program=56, register=(55, 82)),
    SoundClass("acoustic_guitar", "🎸", "instrument", "fluidsynth FluidR3_GM program 24 (Acoustic Guitar nylon)",
               program=24, register=(40, 76), chords=True),
    SoundClass("drums", "🥁", "percussion", "fluidsynth FluidR3_GM standard drum kit (channel 10)"),
    SoundClass("saxophone", "🎷", "instrument", "fluidsynth FluidR3_GM program 65 (Alto Sax)",
               program=65, register=(49, 80)),
    SoundClass("accordion", "🪗", "instrument", "fluidsynth FluidR3_GM program 21 (Accordion)",
               program=21, register=(53, 84), chords=True),
    SoundClass("flute", "🪈", "instrument", "fluidsynth FluidR3_GM program 73 (Flute)",
               program=73, register=(60, 93)),
    SoundClass("canary", "🐦", "effect", "sound-icons canary-long.wav (recorded canary song)",
               recording="canary-long.wav"),
    SoundClass("water", "💧", "effect", "sound-icons glass-water-1.wav (recorded water in a glass)",
               recording="glass-water-1.wav"),
    SoundClass("beetle", "🐞", "effect", "sound-icons cockchafer-gentleman-1.wav (recorded cockchafer)",
               recording="cockchafer-gentleman-1.wav"),
    SoundClass("cat", "🐱", "effect", "sound-icons gummy-cat-2.wav (recorded squeaky toy cat)",
               recording="gummy-cat-2.wav"),
)
CLASSES_BY_NAME: Dict[str, SoundClass] = {c.name: c for c in CLASSES}
DISTRACTORS = ("🌳", "☁️", "🚗", "⭐", "🏠", "🌻", "⚽", "🍎", "🌙", "🎈")


@dataclass(frozen=True)
class MiniCorpusConfig:
    """Options that determine the content of a mini corpus (recorded in ``.done``).

    Attributes:
        classes: Names of the classes to include (see ``CLASSES``).
        num_train: Training clips per class.
        num_valid: Validation clips per class.
        num_test: Test clips per class.
        num_noisy: Clips of the noisy interferer pool (``videos/noisy``; alternately speech and effects).
        num_pretrain_images: Augmented emoji images per class for the CLIP stand-in pretraining.
        duration: Clip length in seconds.
        fps: Video frames per second.
        image_size: Width and height of the frames and pretraining images.
        offscreen_prob: Probability that a training or validation clip gets an off-screen source.
        offscreen_db: Range of the off-screen source's level relative to the on-screen one, in dB.
        audio_codec: ``aac`` (as in real videos) or ``alac`` (lossless) for the mp4 audio stream.
        seed: Seed of every random choice.
    """

    classes: Tuple[str, ...] = tuple(c.name for c in CLASSES)
    num_train: int = 24
    num_valid: int = 4
    num_test: int = 6
    num_noisy: int = 24
    num_pretrain_images: int = 40
    duration: float = 4.5
    fps: float = 1.0
    image_size: int = 224
    offscreen_prob: float = 0.5
    offscreen_db: Tuple[float, float] = (-15.0, -5.0)
    audio_codec: str = "aac"
    seed: int = 1

    def validate(self) -> None:
        """Raise ``MiniCorpusError`` naming the first invalid option."""
        unknown = [n for n in self.classes if n not in CLASSES_BY_NAME]
        if unknown:
            raise MiniCorpusError(f"unknown class {unknown[0]!r}; choose from: {' '.join(CLASSES_BY_NAME)}")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise MiniCorpusError("--classes must list at least one class, each once")
        counts = (self.num_train, self.num_valid, self.num_test, self.num_noisy, self.num_pretrain_images)
        if min(counts) < 0 or self.num_train + self.num_valid + self.num_test < 1:
            raise MiniCorpusError("clip and image counts must be >= 0, with at least one clip per class")
        if not 0.5 <= self.duration <= 60:
            raise MiniCorpusError(f"--duration must be in [0.5, 60] seconds, got {self.duration}")
        if not 0 < self.fps <= 30:
            raise MiniCorpusError(f"--fps must be in (0, 30], got {self.fps}")
        if self.image_size < 32 or self.image_size % 2:
            raise MiniCorpusError(f"--image_size must be an even number >= 32, got {self.image_size}")
        if not 0 <= self.offscreen_prob <= 1:
            raise MiniCorpusError(f"--offscreen_prob must be in [0, 1], got {self.offscreen_prob}")
        if len(self.offscreen_db) != 2 or not self.offscreen_db[0] <= self.offscreen_db[1] <= 20:
            raise MiniCorpusError(f"--offscreen_db must be LOW HIGH with LOW <= HIGH <= 20, got {self.offscreen_db}")
        if self.audio_codec not in ("aac", "alac"):
            raise MiniCorpusError(f"--audio_codec must be aac or alac, got {self.audio_codec!r}")
        if self.seed < 0:
            raise MiniCorpusError(f"--seed must be >= 0, got {self.seed}")

    @property
    def num_frames(self) -> int:
        """Video frames per clip: enough to cover ``duration``."""
        return max(1, math.ceil(self.duration * self.fps - 1e-6))

    @property
    def needs_speech(self) -> bool:
        """Whether some clip may get off-screen speech (espeak-ng)."""
        return (self.offscreen_prob > 0 and self.num_train + self.num_valid > 0) or self.num_noisy > 0

    def to_json(self) -> Dict[str, Any]:
        """The options as a JSON-serialisable dict, with the format version."""
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self), "classes": list(self.classes),
                "offscreen_db": list(self.offscreen_db)}


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (not on the order of the work)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _run(cmd: Sequence[str], what: str, stdin: Optional[bytes] = None) -> None:
    proc = subprocess.run(list(cmd), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no error output"]
        raise MiniCorpusError(f"{what} failed (exit status {proc.returncode}): {lines[-1]}")


def check_requirements(classes: Sequence[SoundClass], need_speech: bool, need_effects: bool = False) -> None:
    """Raise one ``MiniCorpusError`` line naming every missing tool or file and its Debian package.

    Args:
        classes: The classes to render.
        need_speech: Whether espeak-ng is needed (some clips may get off-screen speech).
        need_effects: Whether the noisy pool's recordings (``NOISY_EFFECTS``) are needed.
    """
    missing: List[Tuple[str, str]] = []
    if shutil.which("ffmpeg") is None:
        missing.append(("ffmpeg", "ffmpeg"))
    if any(c.kind != "effect" for c in classes):
        if shutil.which("fluidsynth") is None:
            missing.append(("fluidsynth", "fluidsynth"))
        if not SOUNDFONT.is_file():
            missing.append((str(SOUNDFONT), "fluid-soundfont-gm"))
    missing += [(str(SOUND_ICONS / c.recording), "sound-icons")
                for c in classes if c.kind == "effect" and not (SOUND_ICONS / c.recording).is_file()]
    missing += [(str(SOUND_ICONS / name), "sound-icons")
                for name in (NOISY_EFFECTS if need_effects else ()) if not (SOUND_ICONS / name).is_file()]
    if not EMOJI_FONT.is_file():
        missing.append((str(EMOJI_FONT), "fonts-noto-color-emoji"))
    if need_speech and shutil.which("espeak-ng") is None:
        missing.append(("espeak-ng", "espeak-ng"))
    if missing:
        what = ", ".join(f"{name} (Debian package {pkg})" for name, pkg in missing)
        packages = " ".join(dict.fromkeys(pkg for _, pkg in missing))
        raise MiniCorpusError(f"missing {what}; run tools/install.sh or: sudo apt-get install {packages}")


@dataclass(frozen=True)
class _Placement:
    emoji: str
    scale: float  # longest side as a fraction of the frame
    x: float  # centre as fractions of the frame
    y: float
    angle: float  # degrees, counter-clockwise


@dataclass(frozen=True)
class _Layout:
    colours: Tuple[Tuple[int, int, int], Tuple[int, int, int]]
    gradient: str
    main: _Placement
    distractor: Optional[_Placement]


_GRADIENTS = ("solid", "vertical", "horizontal", "diagonal", "radial")


@functools.lru_cache(maxsize=None)
def _emoji_bitmap(emoji: str) -> Image.Image:
    """The emoji as a tight RGBA bitmap; Noto Color Emoji only has a bitmap strike at size 109."""
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((80, 80), emoji, font=font, embedded_color=True, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        raise MiniCorpusError(f"{EMOJI_FONT} has no glyph for {emoji!r}")
    return canvas.crop(box)


def _sample_layout(emoji: str, rng: np.random.Generator, distractor: Optional[bool]) -> _Layout:
    scale = float(rng.uniform(0.45, 0.9))
    angle = float(rng.uniform(-15, 15)) if rng.random() < 0.5 else 0.0
    x, y = (float(v) for v in rng.uniform(scale / 2, 1 - scale / 2, size=2))
    if distractor is None:
        distractor = bool(rng.random() < 0.5)
    other = None
    if distractor:
        d_scale = float(rng.uniform(0.15, 0.3))
        # the corner farthest from the main emoji, nudged inwards
        dx, dy = (d_scale / 2 + float(v) for v in rng.uniform(0.0, 0.1, size=2))
        other = _Placement(DISTRACTORS[int(rng.integers(len(DISTRACTORS)))], d_scale,
                           dx if x > 0.5 else 1 - dx, dy if y > 0.5 else 1 - dy, float(rng.uniform(-20, 20)))
    colours = tuple(tuple(int(c) for c in rng.integers(0, 256, size=3)) for _ in range(2))
    gradient = _GRADIENTS[int(rng.integers(len(_GRADIENTS)))]
    return _Layout(colours, gradient, _Placement(emoji, scale, x, y, angle), other)


def _jitter(layout: _Layout, rng: np.random.Generator) -> _Layout:
    """The same picture slightly moved, resized and turned: the next frame of a clip."""
    main = layout.main
    dx, dy = rng.normal(0.0, 0.02, size=2)
    main = dataclasses.replace(main, x=main.x + float(dx), y=main.y + float(dy),
                               scale=main.scale * float(rng.uniform(0.95, 1.05)),
                               angle=main.angle + float(rng.uniform(-3, 3)))
    other = layout.distractor
    if other is not None:
        dx, dy = rng.normal(0.0, 0.01, size=2)
        other = dataclasses.replace(other, x=other.x + float(dx), y=other.y + float(dy))
    return dataclasses.replace(layout, main=main, distractor=other)


def _background(layout: _Layout, size: int) -> Image.Image:
    start, stop = (np.asarray(c, dtype=np.float32) for c in layout.colours)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    weight = {
        "solid": np.zeros_like(xx),
        "vertical": yy,
        "horizontal": xx,
        "diagonal": (xx + yy) / 2,
        "radial": np.clip(np.hypot(xx - 0.5, yy - 0.5) / math.sqrt(0.5), 0, 1),
    }[layout.gradient]
    pixels = start + weight[..., None] * (stop - start)
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")


def _paste(canvas: Image.Image, placement: _Placement) -> None:
    size = canvas.width
    bitmap = _emoji_bitmap(placement.emoji)
    factor = max(1.0, placement.scale * size) / max(bitmap.size)
    image = bitmap.resize((max(1, round(bitmap.width * factor)), max(1, round(bitmap.height * factor))),
                          Image.Resampling.LANCZOS)
    if placement.angle:
        image = image.rotate(placement.angle, resample=Image.Resampling.BICUBIC, expand=True)
    left = round(placement.x * size - image.width / 2)
    top = round(placement.y * size - image.height / 2)
    left = min(max(left, 0), size - image.width) if image.width <= size else (size - image.width) // 2
    top = min(max(top, 0), size - image.height) if image.height <= size else (size - image.height) // 2
    canvas.paste(image, (left, top), image)


def _draw(layout: _Layout, size: int) -> Image.Image:
    canvas = _background(layout, size)
    for placement in (layout.distractor, layout.main):
        if placement is not None:
            _paste(canvas, placement)
    return canvas


def render_emoji_frame(
    emoji: str, rng: np.random.Generator, size: int = 224, distractor: Optional[bool] = None
) -> Image.Image:
    """One augmented picture of an emoji.

    The emoji gets a random scale (0.45-0.9 of the frame), position, optional small rotation and a solid or
    gradient background; a small distractor emoji from ``DISTRACTORS`` sits in the farthest corner, under it.

    Args:
        emoji: The emoji to draw (must be in Noto Color Emoji).
        rng: Source of the random augmentation.
        size: Width and height of the picture.
        distractor: Whether to add a distractor; ``None`` adds one with probability 0.5.

    Returns:
        An RGB ``PIL.Image`` of ``size`` x ``size`` pixels.
    """
    return _draw(_sample_layout(emoji, rng, distractor), size)


@dataclass(frozen=True)
class _Note:
    start: float  # seconds
    end: float
    pitch: int
    velocity: int


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file_bytes(notes: Iterable[_Note], program: Optional[int], channel: int) -> bytes:
    """A Standard MIDI File (format 0, 120 bpm, 480 ticks per beat = 960 ticks per second) playing the notes.

    Args:
        notes: Notes with times in seconds; notes of the same pitch must not overlap.
        program: General MIDI program to select first, or ``None`` to send no program change.
        channel: 0-based MIDI channel (9 is the drum kit).

    Returns:
        The file content.
    """
    ticks_per_second = 960
    events = []
    for note in notes:
        on, off = round(note.start * ticks_per_second), round(note.end * ticks_per_second)
        events.append((on, 1, bytes((0x90 | channel, note.pitch, note.velocity))))
        events.append((off, 0, bytes((0x80 | channel, note.pitch, 0))))
    events.sort(key=lambda event: event[:2])  # at equal times, note-offs first
    track = bytearray(b"\x00\xff\x51\x03" + (500000).to_bytes(3, "big"))
    if program is not None:
        track += bytes((0, 0xC0 | channel, program))
    now = 0
    for tick, _, message in events:
        track += _varlen(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


_SCALES = (
    (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10), (0, 2, 3, 5, 7, 9, 10)
)
_STEPS = (-3, -2, -1, 0, 1, 2, 3)
_STEP_PROBS = (0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05)


def _melody_phrase(cls: SoundClass, rng: np.random.Generator, start: float, length: float) -> List[_Note]:
    """Random notes of one clip: its own tempo, key, scale, sub-register, rhythm and loudness."""
    beat = 60.0 / rng.uniform(70, 150)
    root, scale = int(rng.integers(12)), _SCALES[int(rng.integers(len(_SCALES)))]
    low, high = cls.register
    width = min(high - low, int(rng.integers(12, 21)))
    base = int(rng.integers(low, high - width + 1))
    pitches = [p for p in range(base, base + width + 1) if (p - root) % 12 in scale]
    beats = np.array([0.5, 1.0, 1.5, 2.0])
    beat_probs = rng.dirichlet(np.ones(len(beats)))
    loudness = int(rng.integers(65, 106))
    index = int(rng.integers(len(pitches)))
    end = start + length
    t = start + float(rng.uniform(0.0, 0.15))
    notes = []
    while t < end - 0.1:
        step = float(rng.choice(beats, p=beat_probs)) * beat
        if rng.random() >= 0.1:
            stop = min(t + step * float(rng.uniform(0.6, 0.95)), end)
            velocity = int(np.clip(loudness + rng.integers(-12, 13), 30, 127))
            chord = [index]
            if cls.chords and rng.random() < 0.3:
                chord += [j for j in (index + 2, index + 4) if j < len(pitches)]
            notes += [_Note(t, stop, pitches[j], velocity) for j in chord]
        index = int(np.clip(index + rng.choice(_STEPS, p=_STEP_PROBS), 0, len(pitches) - 1))
        t += step
    return notes


_KICK, _SNARE, _CRASH, _TOMS, _CYMBALS = 36, 38, 49, (50, 48, 47, 45), (42, 42, 46, 51)


def _drum_phrase(rng: np.random.Generator, start: float, length: float) -> List[_Note]:
    """A random one-bar groove (kick, snare, hats or ride, tom fills) repeated with variations."""
    step = 60.0 / rng.uniform(80, 160) / 4
    pattern = [(0, _KICK)] + [(s, _KICK) for s in range(2, 16, 2) if rng.random() < 0.25]
    pattern += [(4, _SNARE), (12, _SNARE)] + [(s, _SNARE) for s in range(16) if rng.random() < 0.06]
    cymbal = _CYMBALS[int(rng.integers(len(_CYMBALS)))]
    every = int(rng.choice([1, 2, 2, 4]))
    pattern += [(s, cymbal) for s in range(0, 16, every)]
    loudness = int(rng.integers(70, 111))
    end = start + length
    t0 = start + float(rng.uniform(0.0, 0.1))
    notes = [_Note(t0, t0 + 0.8 * step, _CRASH, loudness)] if rng.random() < 0.5 else []
    for bar in range(math.ceil(length / (16 * step)) + 1):
        events = pattern
        if rng.random() < 0.25:
            events = [e for e in pattern if e[0] < 12] + [(12 + i, tom) for i, tom in enumerate(_TOMS)]
        for s, pitch in events:
            t = t0 + (bar * 16 + s) * step
            if t < end - 0.1 and rng.random() >= 0.05:
                velocity = int(np.clip(loudness + rng.integers(-15, 16) - (10 if pitch == cymbal else 0), 20, 127))
                notes.append(_Note(t, min(t + 0.8 * step, end), pitch, velocity))
    return notes


def _render_instrument(cls: SoundClass, config: MiniCorpusConfig, workdir: Path) -> List[np.ndarray]:
    """All clips of an instrument: one long random MIDI file rendered once, cut into non-silent clips."""
    clip_len = round(config.duration * SAMPLE_RATE)
    n_clips = config.num_train + config.num_valid + config.num_test
    n_slots = math.ceil(n_clips * 1.5) + 4  # spare slots replace near-silent ones
    rng = _rng(config.seed, "melody", cls.name)
    notes = []
    for k in range(n_slots):
        if cls.kind == "percussion":
            notes += _drum_phrase(rng, k * config.duration, config.duration)
        else:
            notes += _melody_phrase(cls, rng, k * config.duration, config.duration)
    midi, wav = workdir / f"{cls.name}.mid", workdir / f"{cls.name}.wav"
    percussion = cls.kind == "percussion"
    midi.write_bytes(midi_file_bytes(notes, None if percussion else cls.program, 9 if percussion else 0))
    _run(["fluidsynth", "-ni", "-q", "-T", "wav", "-O", "float", "-F", str(wav), "-r", str(SAMPLE_RATE),
          "-g", "0.8", str(SOUNDFONT), str(midi)], f"fluidsynth ({cls.name})")
    audio = sf.read(wav, dtype="float32", always_2d=True)[0].mean(axis=1)
    midi.unlink()
    wav.unlink()
    return _slice_clips(audio, n_clips, clip_len, cls.name)


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    hop = SAMPLE_RATE // 20
    usable = len(audio) // hop * hop
    return np.sqrt(np.mean(audio[:usable].reshape(-1, hop).astype(np.float64) ** 2, axis=1))


def _slice_clips(audio: np.ndarray, n_clips: int, clip_len: int, name: str) -> List[np.ndarray]:
    """The first ``n_clips`` consecutive slices that sound during at least half of their 50-ms frames."""
    frames = _frame_rms(audio)
    threshold = 0.05 * float(np.percentile(frames, 95)) if frames.size else 0.0
    clips = []
    for k in range(len(audio) // clip_len):
        clip = audio[k * clip_len : (k + 1) * clip_len]
        if np.abs(clip).max() > 1e-4 and np.mean(_frame_rms(clip) > threshold) >= 0.5:
            clips.append(clip.copy())
            if len(clips) == n_clips:
                return clips
    raise MiniCorpusError(f"{name}: only {len(clips)} of the {n_clips} rendered clips are not near-silent")


def _load_recording(cls: SoundClass) -> np.ndarray:
    return _load_sound_icon(cls.recording)


def _load_sound_icon(name: str) -> np.ndarray:
    """A recording of the sound-icons package at 16 kHz, peak 1."""
    audio, rate = sf.read(SOUND_ICONS / name, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return audio / max(float(np.abs(audio).max()), 1e-6)


def _scatter_effect(recording: np.ndarray, clip_len: int, rng: np.random.Generator) -> np.ndarray:
    """Copies of a short recording at random times, gains and speeds (resampled by 45/50 ... 56/50)."""
    out = np.zeros(clip_len, dtype=np.float32)
    density = float(rng.uniform(0.7, 1.5))
    t = int(rng.uniform(0.0, 0.25) * SAMPLE_RATE)
    while t < clip_len:
        copy = resample_poly(recording, 50, int(rng.integers(45, 57))).astype(np.float32)
        copy = copy[: clip_len - t] * float(rng.uniform(0.35, 1.0))
        out[t : t + len(copy)] += copy
        gap = len(copy) * rng.uniform(0.7, 1.6) * density + rng.uniform(0.0, 0.3) * SAMPLE_RATE
        t += max(1, int(gap))
    return out


_SUBJECTS = ("the old man", "my sister", "a small dog", "the teacher", "our neighbour", "the driver",
             "somebody", "the children", "the new manager", "her cousin")
_VERBS = ("is waiting for", "talked about", "will bring", "found", "forgot", "is looking at", "painted",
          "sold", "wants to buy", "cleaned")
_OBJECTS = ("the red bicycle", "a new kitchen table", "the letters from yesterday", "some fresh bread",
            "the last train home", "an umbrella", "the garden gate", "three blue cups", "the weather report",
            "a box of old photos")
_TAILS = ("this morning", "after lunch", "in the rain", "before the meeting", "at the station", "last week",
          "again", "near the river", "on the way back", "without saying a word")
_VOICES = ("en-us", "en-us+f3", "en-gb+m3", "en-gb-x-rp+f2", "en-us+m7", "en-gb-scotland+f4")


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(str(rng.choice(words)) for words in (_SUBJECTS, _VERBS, _OBJECTS, _TAILS))


def _speech_pool(seed: int, workdir: Path, size: int = 6) -> List[np.ndarray]:
    """Spoken random sentences (espeak-ng, various voices, speeds and pitches) at 16 kHz."""
    rng = _rng(seed, "speech")
    pool = []
    for i in range(size):
        wav = workdir / f"speech_{i}.wav"
        text = ". ".join(_sentence(rng) for _ in range(2))
        voice = _VOICES[int(rng.integers(len(_VOICES)))]
        _run(["espeak-ng", "-w", str(wav), "-v", voice, "-s", str(int(rng.integers(130, 181))),
              "-p", str(int(rng.integers(30, 71))), text], "espeak-ng")
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
        wav.unlink()
        g = math.gcd(rate, SAMPLE_RATE)
        pool.append(resample_poly(audio.mean(axis=1), SAMPLE_RATE // g, rate // g).astype(np.float32))
    return pool


def _coloured_noise(rng: np.random.Generator, length: int, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), no energy below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    spectrum[freqs < 20] = 0
    spectrum[freqs >= 20] /= freqs[freqs >= 20] ** (exponent / 2)
    return np.fft.irfft(spectrum, length).astype(np.float32)


def _offscreen_source(
    rng: np.random.Generator, length: int, speech: Sequence[np.ndarray]
) -> Tuple[str, np.ndarray]:
    """An off-screen source: a stretch of the speech pool (with pauses) or coloured noise."""
    if speech and rng.random() < 0.6:
        return "speech", _speech_stretch(rng, length, speech)
    return _noise(rng, length)


def _speech_stretch(rng: np.random.Generator, length: int, speech: Sequence[np.ndarray]) -> np.ndarray:
    """``length`` samples of random sentences of the speech pool with pauses between them."""
    offset = int(rng.integers(0, SAMPLE_RATE))
    pieces, total = [], 0
    while total < offset + length:
        pieces += [speech[int(rng.integers(len(speech)))],
                   np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)]
        total += len(pieces[-2]) + len(pieces[-1])
    return np.concatenate(pieces)[offset : offset + length]


def _noise(rng: np.random.Generator, length: int) -> Tuple[str, np.ndarray]:
    """White, pink or brown noise and its name."""
    colour = int(rng.integers(3))
    return ("white_noise", "pink_noise", "brown_noise")[colour], _coloured_noise(rng, length, float(colour))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@dataclass(frozen=True)
class _ClipJob:
    clip_id: str
    emoji: str
    audio: np.ndarray
    path: Path
    config: MiniCorpusConfig


def _write_clip(job: _ClipJob) -> str:
    """Encode one clip: jittered frames of one emoji layout (H.264) plus its audio (AAC or ALAC) in mp4."""
    config = job.config
    rng = _rng(config.seed, "frames", job.clip_id)
    layout = _sample_layout(job.emoji, rng, None)
    frames = b"".join(_draw(_jitter(layout, rng), config.image_size).tobytes() for _ in range(config.num_frames))
    wav = job.path.with_suffix(".wav")
    sf.write(wav, job.audio, SAMPLE_RATE, subtype="FLOAT")
    audio_codec = ["-c:a", "aac", "-b:a", "64k"] if config.audio_codec == "aac" else ["-c:a", "alac"]
    size = f"{config.image_size}x{config.image_size}"
    _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
          "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-framerate", f"{config.fps:g}", "-i", "pipe:0",
          "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
          "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1",
          *audio_codec, "-ar", str(SAMPLE_RATE), "-ac", "1", "-map_metadata", "-1",
          "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(job.path)],
         f"ffmpeg ({job.clip_id})", stdin=frames)
    wav.unlink()
    return job.clip_id


def _write_pretrain_images(cls: SoundClass, config: MiniCorpusConfig, image_dir: Path) -> List[str]:
    """The class's augmented emoji images; returns their file names."""
    width = max(3, len(str(config.num_pretrain_images - 1)))
    names = []
    for i in range(config.num_pretrain_images):
        image = render_emoji_frame(cls.emoji, _rng(config.seed, "pretrain", cls.name, str(i)), config.image_size)
        names.append(f"{cls.name}_{i:0{width}d}.jpg")
        image.save(image_dir / names[-1], quality=90)
    return names


class _InlineExecutor(cf.Executor):
    """Runs each task at submission (``nj=1``): no worker processes, plain tracebacks."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:
            future.set_exception(err)
        return future


def _bounded_map(pool: cf.Executor, fn, jobs: Iterable[Any], limit: int) -> Iterator[Any]:
    """Results of ``fn`` over ``jobs`` in completion order, with at most ``limit`` jobs held at a time."""
    pending = set()
    for job in jobs:
        pending.add(pool.submit(fn, job))
        if len(pending) >= limit:
            finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            yield from (f.result() for f in finished)
    yield from (f.result() for f in cf.as_completed(pending))


def _clip_jobs(classes: Sequence[SoundClass], config: MiniCorpusConfig, sources: Dict[str, Any],
               speech: Sequence[np.ndarray], root: Path, offscreen: List[str]) -> Iterator[_ClipJob]:
    """Mixed audio and destination of every clip; appends rows of ``offscreen.tsv`` to ``offscreen``."""
    clip_len = round(config.duration * SAMPLE_RATE)
    counts = dict(zip(SPLITS, (config.num_train, config.num_valid, config.num_test)))
    for cls in classes:
        source = sources.pop(cls.name)
        k = 0
        for split in SPLITS:
            (root / "videos" / split / cls.name).mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                clip_id = f"{cls.name}_{split}_{i:03d}"
                if cls.kind == "effect":
                    audio = _scatter_effect(source, clip_len, _rng(config.seed, "effect", clip_id))
                else:
                    audio = source[k]
                k += 1
                rng = _rng(config.seed, "clip", clip_id)
                audio = audio * (float(rng.uniform(0.3, 0.9)) / max(float(np.abs(audio).max()), 1e-6))
                if split != "test" and rng.random() < config.offscreen_prob:
                    name, noise = _offscreen_source(rng, clip_len, speech)
                    gain_db = float(rng.uniform(*config.offscreen_db))
                    audio = audio + noise * (_rms(audio) / max(_rms(noise), 1e-9) * 10 ** (gain_db / 20))
                    offscreen.append(f"{clip_id}\t{name}\t{gain_db:.1f}\n")
                audio = audio * min(1.0, 0.95 / max(float(np.abs(audio).max()), 1e-6))
                yield _ClipJob(clip_id, cls.emoji, audio.astype(np.float32),
                               root / "videos" / split / cls.name / f"{clip_id}.mp4", config)


def _noisy_jobs(
    config: MiniCorpusConfig, speech: Sequence[np.ndarray], root: Path, rows: List[str]
) -> Iterator[_ClipJob]:
    """The noisy pool's clips (off-screen sounds only, under an unrelated emoji); appends rows of ``noisy.tsv``.

    Clip ``k`` is speech (``k`` even: sentences of the speech pool) or effects (``k`` odd: one or two recordings
    of ``NOISY_EFFECTS`` scattered over the clip), over a coloured-noise floor 20 to 10 dB below; the level is
    drawn as for the class clips. Its random streams (keys ``noisy``, ``frames``) belong to the pool only.
    """
    clip_len = round(config.duration * SAMPLE_RATE)
    effects = {name: _load_sound_icon(name) for name in NOISY_EFFECTS} if config.num_noisy else {}
    for kind in NOISY_KINDS:
        (root / "videos" / "noisy" / kind).mkdir(parents=True, exist_ok=True)
    for k in range(config.num_noisy):
        clip_id = f"noisy_{k:03d}"
        kind = NOISY_KINDS[k % len(NOISY_KINDS)]
        rng = _rng(config.seed, "noisy", clip_id)
        if kind == "speech":
            names = ["speech"]
            audio = _speech_stretch(rng, clip_len, speech)
        else:
            picks = rng.choice(len(NOISY_EFFECTS), size=int(rng.integers(1, 3)), replace=False)
            names = [NOISY_EFFECTS[int(i)] for i in picks]
            audio = sum(_scatter_effect(effects[name], clip_len, rng) for name in names)
        floor_name, floor = _noise(rng, clip_len)
        floor_db = float(rng.uniform(-20, -10))
        audio = audio + floor * (_rms(audio) / max(_rms(floor), 1e-9) * 10 ** (floor_db / 20))
        audio = audio * (float(rng.uniform(0.3, 0.9)) / max(float(np.abs(audio).max()), 1e-6))
        emoji = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        rows.append(f"{clip_id}\t{'+'.join(names)}\t{floor_name}\t{floor_db:.1f}\n")
        yield _ClipJob(clip_id, emoji, audio.astype(np.float32),
                       root / "videos" / "noisy" / kind / f"{clip_id}.mp4", config)


def _load_source(cls: SoundClass, config: MiniCorpusConfig, workdir: Path) -> Any:
    if cls.kind == "effect":
        return _load_recording(cls)
    return _render_instrument(cls, config, workdir)


def _build(root: Path, final_dir: Path, config: MiniCorpusConfig, nj: int) -> Dict[str, int]:
    """Write the whole corpus under ``root`` (absolute paths in pairs.tsv point into ``final_dir``)."""
    classes = [CLASSES_BY_NAME[name] for name in config.classes]
    workdir = root / ".work"
    workdir.mkdir()
    with cf.ThreadPoolExecutor(nj) as threads:
        speech_future = threads.submit(_speech_pool, config.seed, workdir) if config.needs_speech else None
        futures = {threads.submit(_load_source, cls, config, workdir): cls.name for cls in classes}
        sources = {}
        for future in tqdm(cf.as_completed(futures), total=len(futures), desc="sound sources", unit="class",
                           disable=None):
            sources[futures[future]] = future.result()
        speech = speech_future.result() if speech_future else []

    offscreen: List[str] = []
    noisy: List[str] = []
    image_dir = root / "clip_pretrain" / "images"
    image_dir.mkdir(parents=True)
    pool = cf.ProcessPoolExecutor(nj) if nj > 1 else _InlineExecutor()
    try:
        jobs = itertools.chain(_clip_jobs(classes, config, sources, speech, root, offscreen),
                               _noisy_jobs(config, speech, root, noisy))
        n_clips = len(classes) * (config.num_train + config.num_valid + config.num_test) + config.num_noisy
        with tqdm(total=n_clips, desc="clips", unit="clip", disable=None) as bar:
            for _ in _bounded_map(pool, _write_clip, jobs, limit=4 * nj):
                bar.update()
        futures = {cls.name: pool.submit(_write_pretrain_images, cls, config, image_dir) for cls in classes}
        pairs = []
        for cls in tqdm(classes, desc="pretrain images", unit="class", disable=None):
            pairs += [f"{final_dir / 'clip_pretrain' / 'images' / name}\t{cls.words}\n"
                      for name in futures[cls.name].result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(workdir)

    (root / "clip_pretrain" / "pairs.tsv").write_text("".join(pairs), encoding="utf-8")
    (root / "classes.tsv").write_text("".join(f"{c.name}\t{c.emoji}\t{c.source}\n" for c in classes),
                                      encoding="utf-8")
    (root / "offscreen.tsv").write_text("".join(offscreen), encoding="utf-8")
    (root / "noisy.tsv").write_text("".join(noisy), encoding="utf-8")
    per_class = (config.num_train, config.num_valid, config.num_test)
    return {**{split: len(classes) * n for split, n in zip(SPLITS, per_class)},
            "offscreen": len(offscreen), "noisy": len(noisy), "pretrain_images": len(pairs)}


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _older_format_of(previous: Any, options: Dict[str, Any]) -> bool:
    """Whether ``previous`` (an earlier ``.done``) has an older format version and, for every option it records,
    the value of ``options`` (options added since then are new, with their defaults)."""
    if not isinstance(previous, dict) or not previous.get("format_version", 0) < options["format_version"]:
        return False
    return all(key == "format_version" or options.get(key) == value for key, value in previous.items())


def make_mini_corpus(
    output_dir: Path, config: MiniCorpusConfig = MiniCorpusConfig(), nj: int = 2, overwrite: bool = False
) -> bool:
    """Generate the mini corpus into ``output_dir`` (see the module docstring for the layout).

    Args:
        output_dir: Destination directory; it must not exist, be empty, or hold a finished corpus.
        config: The content options.
        nj: Worker processes for rendering and encoding the clips.
        overwrite: Replace whatever ``output_dir`` holds.

    Returns:
        ``False`` when ``output_dir`` already holds a corpus made with the same options (nothing done),
        ``True`` after generating it.

    Raises:
        MiniCorpusError: Invalid options, a missing tool or file, a failing tool, or an ``output_dir`` that
            holds something else.
    """
    config.validate()
    if nj < 1:
        raise MiniCorpusError(f"--nj must be >= 1, got {nj}")
    output_dir = Path(os.path.abspath(output_dir))
    options = config.to_json()
    done = output_dir / ".done"
    if not overwrite and done.is_file():
        try:
            previous = json.loads(done.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous == options:
            logger.info("%s already holds this mini corpus (%s); nothing to do", output_dir, done)
            return False
        if not _older_format_of(previous, options):
            raise MiniCorpusError(f"{output_dir} holds a mini corpus made with different options; "
                                  "use a new --output_dir or --overwrite")
        logger.info("%s holds this mini corpus in an older format (%s); making it again", output_dir, done)
        overwrite = True
    if not overwrite and output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise MiniCorpusError(f"{output_dir} exists and is not a finished mini corpus; "
                              "use a new --output_dir or --overwrite")
    classes = [CLASSES_BY_NAME[name] for name in config.classes]
    check_requirements(classes, need_speech=config.needs_speech, need_effects=config.num_noisy > 0)

    start = time.perf_counter()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stats = _build(tmp, output_dir, config, nj)
        (tmp / ".done").write_text(json.dumps(options, indent=1) + "\n", encoding="utf-8")
        if output_dir.exists() or output_dir.is_symlink():
            old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
            output_dir.rename(old)
            tmp.rename(output_dir)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote %s: %d classes; clips train %d / valid %d / test %d (%d with off-screen sources) / noisy pool %d; "
        "%d pretraining images; %.1f MB in %.1f s",
        output_dir, len(classes), stats["train"], stats["valid"], stats["test"], stats["offscreen"],
        stats["noisy"], stats["pretrain_images"], _tree_size(output_dir) / 1e6, time.perf_counter() - start,
    )
    return True
