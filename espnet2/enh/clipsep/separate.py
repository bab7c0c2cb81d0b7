"""Separate any recording by a text or image query with a trained CLIPSep model.

``Separator.from_pretrained(MODEL)`` loads a model from a packed zip (``espnet2.bin.pack``, what the enh1
recipe's stage 9 writes), an experiment directory (``config.yaml`` + weights), an ``espnet_model_zoo`` tag, or
the released CLIPSep(-NIT) checkpoint (converted in memory, as ``bin/convert.py`` does on disk), together with
the CLIP model that made its query embeddings. Calling it separates a waveform; :meth:`Separator.separate_file`
streams a file of any length to one output file per query.

Audio: anything soundfile reads (wav, flac, ogg, mp3, ...), or, through ffmpeg, any container with an audio
stream (m4a, mp4, ...); any sample rate (resampled to the model's with soxr, streaming), any channel count up
to 8 (down-mixed by the mean, or separated per channel). Long audio is separated in chunks of ``chunk_seconds``
that overlap by ``overlap_seconds`` and are cross-faded (raised-cosine weights that sum to 1): memory stays
flat in the duration (audio is read, resampled, separated and written block by block; no full-length STFT is
ever built), and an input no longer than one chunk is one model pass, exactly as without chunking.

Example:
    >>> sep = Separator.from_pretrained("exp/mini/enh_clipsep_nit/packed.zip")
    >>> violin = sep(waveform, 44100, query="violin")              # (T',) at the model rate
    >>> both = sep(waveform, 44100, query=["violin", "speech"])    # (2, T')
    >>> sep.separate_file("in.wav", "out/", query=["dog barking"])  # [Path("out/in_dog-barking.wav")]
"""

import argparse
import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from typeguard import typechecked

PathLike = Union[str, os.PathLike]
QueryLike = Union[None, str, Sequence[str]]

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
BLOCK_FRAMES = 1 << 16  # frames read (and resampled) at a time
IMAGE_QUERY_FRAMES = 3  # frames around a video's middle, 1 fps, as CLIPSep's image queries
# Weights an experiment directory may hold, in order of preference (ESPnet's best model first).
CHECKPOINT_NAMES = ("valid.loss.best.pth", "model.pth", "valid.loss.ave.pth", "latest.pth")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
PAPER_CLIP = ("ViT-B-32", "openai")  # CLIPSep's CLIP (512-d embeddings)


class SeparationError(ValueError):
    """A bad input, model or output: the message is one line, ``<file>: <problem>``."""


class SeparationWarning(UserWarning):
    """Something the user should know that does not stop the separation (silent input, truncated query)."""


# ================================================================================================
# Models
# ================================================================================================
@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are.

    Attributes:
        train_config: ``config.yaml`` written by training (None for a released checkpoint).
        model_file: The weights.
        search_dirs: Directories to look in for the CLIP weights the recipe used (``*.pt``, ``clip/*.pt``).
        source: What the user passed.
        pack_root: Where a pack was unpacked (searched recursively: CLIP weights packed with ``--option``).
    """

    train_config: Optional[Path]
    model_file: Path
    search_dirs: Tuple[Path, ...]
    source: str
    pack_root: Optional[Path] = None


def _looks_like_path(name: str) -> bool:
    lower = name.lower()
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\"))
        or lower.endswith(ARCHIVE_SUFFIXES + CHECKPOINT_SUFFIXES + (".yaml",))
    )


def _experiment_weights(directory: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.glob("*.pth") if p.name != "checkpoint.pth")
    if len(found) == 1:
        return directory / found[0]
    raise SeparationError(
        f"{directory}: no model weights ({', '.join(CHECKPOINT_NAMES)})"
        + (f"; several candidates: {', '.join(found)}" if found else "")
    )


def _from_pack_info(info: Dict, source: str, near: Sequence[Path] = ()) -> ModelFiles:
    config, weights = info.get("train_config"), info.get("model_file")
    if not config or not weights:
        raise SeparationError(f"{source}: not an enhancement model pack (no train_config/model_file in meta.yaml)")
    root = next((d for d in Path(config).parents if (d / "meta.yaml").is_file()), None)
    dirs = tuple(dict.fromkeys([Path(config).parent, *near]))
    return ModelFiles(Path(config), Path(weights), dirs, source, root)


def resolve_model(model: PathLike, cache_dir: Optional[PathLike] = None) -> ModelFiles:
    """Find the config and weights of ``model``.

    Args:
        model: A packed zip/tar (checked with :func:`~espnet2.enh.clipsep.packing.check_archive`, unpacked
            offline by ``espnet_model_zoo``), an experiment directory (``config.yaml`` + ``valid.loss.best.pth``
            or ``model.pth``), a weights file with ``config.yaml`` beside it, the released CLIPSep checkpoint
            (no config: converted in memory), or an ``espnet_model_zoo`` tag (downloaded by its
            ``ModelDownloader``).
        cache_dir: Where ``espnet_model_zoo`` unpacks and downloads (its default when None).

    Returns:
        The :class:`ModelFiles`.

    Raises:
        SeparationError: Missing path, unusable archive, or a tag that cannot be fetched.
    """
    import zipfile

    from espnet2.enh.clipsep.packing import check_archive

    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.yaml"
        if not config.is_file():
            raise SeparationError(f"{path}: model directory without config.yaml")
        weights = _experiment_weights(path)
        return ModelFiles(config, weights, (path, path.parent), name)
    if path.is_file():
        is_torch_zip = False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            is_torch_zip = not any(Path(n).name == "meta.yaml" for n in names) and any(
                n.endswith("data.pkl") for n in names
            )
        if path.name.lower().endswith(CHECKPOINT_SUFFIXES) or is_torch_zip:
            config = path.with_name("config.yaml")
            if config.is_file():
                return ModelFiles(config, path, (path.parent, path.parent.parent), name)
            return ModelFiles(None, path, (path.parent, path.parent.parent), name)  # released checkpoint
        try:
            check_archive(path)
        except ValueError as err:
            raise SeparationError(str(err)) from None
        info = _zoo_call(lambda zoo: zoo.unpack_local_file(str(path.resolve())), cache_dir, path)
        # The recipe's pack sits in its experiment dir: exp/<dataset>/<model>/packed.zip beside exp/<dataset>/clip/.
        return _from_pack_info(info, name, near=(path.parent, path.parent.parent))
    if path.exists():
        raise SeparationError(f"{path}: not a model file or directory")
    if _looks_like_path(name):
        raise SeparationError(f"{path}: model not found")
    return _from_pack_info(_download_tag(name, cache_dir), name)


def _zoo_call(fn: Callable, cache_dir: Optional[PathLike], what: PathLike):
    from espnet_model_zoo.downloader import ModelDownloader

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            return fn(ModelDownloader(cache_dir))
    except SeparationError:
        raise
    except Exception as err:  # zipfile.BadZipFile, tarfile errors, "Format error: not found meta.yaml", ...
        problem = f"cannot unpack as a model pack ({type(err).__name__}: {_first_line(err)})"
        raise SeparationError(f"{what}: {problem}") from None


def _download_tag(tag: str, cache_dir: Optional[PathLike]) -> Dict:
    """Fetch an ``espnet_model_zoo`` tag; a downloaded archive is checked before it is unpacked."""
    from espnet2.enh.clipsep.packing import check_archive

    def fetch(zoo):
        try:
            where = Path(zoo.download(tag, quiet=True))
        except Exception as err:  # offline, unknown tag, HTTP errors
            raise SeparationError(
                f"{tag}: model not found (not a local path, and espnet_model_zoo cannot fetch it: "
                f"{type(err).__name__}: {_first_line(err)})"
            ) from None
        if where.is_dir():  # a Hugging Face snapshot: files, not an archive
            return zoo._unpack_cache_dir_for_huggingfase(str(where))
        try:
            check_archive(where)
        except ValueError as err:
            raise SeparationError(str(err)) from None
        return zoo.unpack_local_file(str(where))

    return _zoo_call(fetch, cache_dir, tag)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict read with ``torch.load(weights_only=True)``: checkpoints that need pickle code are refused."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SeparationError(
            f"{path}: checkpoint needs pickle code execution to load; refused (only weights_only checkpoints "
            f"load: {_first_line(err).split('.')[0]})"
        ) from None
    except Exception as err:  # RuntimeError (not a zip, truncated), EOFError, ...
        problem = f"not a readable PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})"
        raise SeparationError(f"{path}: {problem}") from None
    if isinstance(state, dict) and isinstance(state.get("module"), dict):  # DeepSpeed, as ESPnet's loader
        state = state["module"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SeparationError(f"{path}: not a state dict of tensors")
    return state


def build_model_weights_only(task, train_config, model_file, device: str = "cpu", strict: bool = True):
    """``task.build_model_from_file`` without its unpickling: the model is built from ``train_config`` alone and
    ``model_file`` is loaded with :func:`load_weights` (ESPnet's loader uses ``weights_only=False``).

    Returns:
        ``(model, train_args)`` as ``build_model_from_file`` gives them.
    """
    model, args = task.build_model_from_file(train_config, None, device)
    model.load_state_dict(load_weights(Path(model_file)), strict=strict)
    return model, args


def build_model(files: ModelFiles) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build the model with ``CLIPSepTask`` and load its weights strictly (weights only), on CPU, eval mode."""
    from espnet2.enh.clipsep.task import CLIPSepTask

    if files.train_config is None:
        return _build_from_reference(files.model_file)
    try:
        model, args = CLIPSepTask.build_model_from_file(files.train_config, None, "cpu")
    except Exception as err:
        raise SeparationError(
            f"{files.train_config}: cannot build a model from this config ({type(err).__name__}: {_first_line(err)})"
        ) from None
    state = load_weights(files.model_file)
    missing, unexpected = _compare_keys(model.state_dict(), state)
    if missing or unexpected:
        raise SeparationError(
            f"{files.model_file}: weights do not fit {files.train_config} "
            f"(missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        problem = f"weights do not fit {files.train_config} ({_first_line(err)})"
        raise SeparationError(f"{files.model_file}: {problem}") from None
    return model.eval(), args


def _compare_keys(expected: Dict, state: Dict) -> Tuple[List[str], List[str]]:
    return sorted(set(expected) - set(state)), sorted(set(state) - set(expected))


def _build_from_reference(path: Path) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """The released CLIPSep(-NIT) checkpoint, converted in memory like ``bin/convert.py``."""
    from espnet2.enh.clipsep.bin.convert import build_args, load_reference_state_dict
    from espnet2.enh.clipsep.checkpoint_converter import convert_reference_state_dict
    from espnet2.enh.clipsep.task import CLIPSepTask

    load_weights(path)  # the same refusal of pickle code as for any checkpoint
    try:
        state = convert_reference_state_dict(load_reference_state_dict(path), source=str(path))
    except ValueError as err:
        raise SeparationError(
            f"{path}: no config.yaml beside it, and not the released CLIPSep checkpoint ({_first_line(err)})"
        ) from None
    num_noise_heads = len({k.split(".")[1] for k in state if k.startswith("noise_heads.")})
    args = build_args(num_noise_heads)
    model = CLIPSepTask.build_model(args)
    model.load_state_dict({f"separator.{k}": v for k, v in state.items()}, strict=True)
    return model.eval(), args


def find_recipe_clip(
    search_dirs: Sequence[Path], embed_dim: int, pack_root: Optional[Path] = None
) -> Optional[Tuple[str, str]]:
    """The CLIP weights the enh1 recipe fitted next to the experiments (``<expdir>/clip/<model>.pt`` + ``.json``).

    Looked for in ``search_dirs`` and their ``clip/`` sub-directories, and anywhere under ``pack_root``.

    Returns:
        ``(clip_model, weights_file)`` of the one candidate whose embedding size is ``embed_dim``, or None.
    """
    import json

    import open_clip

    from espnet2.enh.clipsep.query import _register_configs

    _register_configs()
    found = {}
    sidecars = [s for d in search_dirs for s in sorted([*d.glob("*.pt.json"), *d.glob("clip/*.pt.json")])]
    if pack_root is not None:
        sidecars += sorted(pack_root.rglob("*.pt.json"))
    for sidecar in sidecars:
        weights = sidecar.with_name(sidecar.name[: -len(".json")])
        try:
            name = json.loads(sidecar.read_text(encoding="utf-8")).get("clip_model")
        except (OSError, ValueError, AttributeError):
            continue
        cfg = open_clip.get_model_config(name) if isinstance(name, str) else None
        if weights.is_file() and cfg and int(cfg.get("embed_dim", -1)) == embed_dim:
            found[weights.resolve()] = (name, str(weights))
    return next(iter(found.values())) if len(found) == 1 else None


# ================================================================================================
# Audio in
# ================================================================================================
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


class _Stats:
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
        SeparationError: missing, a directory, not audio, corrupt or truncated, 0 samples, NaN/Inf samples,
            more than 8 channels, a sample rate outside [1 kHz, 768 kHz].
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise SeparationError(f"{path}: file not found")
    if path.is_dir():
        raise SeparationError(f"{path}: is a directory, not an audio file")
    readable = path
    try:
        info = soundfile.info(str(path))
    except soundfile.LibsndfileError as err:
        message = str(err.error_string) if getattr(err, "error_string", "") else _first_line(err)
        header = _wav_header(path)
        if header is not None:  # a WAV file that libsndfile refuses: say which field is wrong
            rate, channels = header
            check_rate_and_channels(rate, channels, str(path))
            raise SeparationError(f"{path}: invalid WAV file (libsndfile: {message})") from None
        readable = _decode_with_ffmpeg(path, workdir, f"libsndfile: {message}")
        info = soundfile.info(str(readable))
    except (OSError, RuntimeError) as err:
        raise SeparationError(f"{path}: cannot read ({type(err).__name__}: {_first_line(err)})") from None
    rate = check_rate_and_channels(info.samplerate, info.channels, str(path))
    if "(should be" in (info.extra_info or ""):  # libsndfile: a chunk shorter than its header says
        raise SeparationError(f"{path}: truncated audio (the header promises more data than the file holds)")
    stats = _Stats(info.channels)
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


def _file_blocks(audio: AudioInfo) -> Iterator[np.ndarray]:
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


# ================================================================================================
# Chunked separation
# ================================================================================================
class OverlapAdd:
    """Chunked processing of a stream with overlapping chunks and a raised-cosine cross-fade.

    Chunk ``k`` covers samples ``[k H, k H + L)`` (``H = L - O``). In each overlap the earlier chunk fades out
    with ``1 - w`` and the later one fades in with ``w = sin^2``, so the weights sum to 1 and a process that is
    the same in both chunks (e.g. a constant gain) is reconstructed exactly. A chunk is processed only once it
    is known not to be the last; the last one is not faded out, the first not faded in, and the last one is
    extended backwards to a full ``L`` samples (its extra head is dropped), so that no chunk is shorter than
    ``L`` unless the whole input is. An input of at most ``L`` samples is therefore one unweighted call of ``fn``.
    Memory: at most ``2 L`` input samples and ``O`` output samples are held, whatever the stream's length.

    Args:
        fn: Maps a chunk ``(B, n)`` to outputs ``(Q, B, n)``.
        chunk: ``L`` in samples (None: one pass over the whole stream at :meth:`flush`).
        overlap: ``O`` in samples, at most ``L / 2``.
        align: Re-order each chunk's Q outputs to best match the previous chunk in their overlap (for PIT
            models, whose output order is arbitrary per chunk).
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], chunk: Optional[int], overlap: int = 0, align: bool = False
    ):
        if chunk is not None and (chunk < 1 or not 0 <= overlap <= chunk // 2):
            raise ValueError(f"need chunk >= 1 and 0 <= overlap <= chunk / 2, got chunk {chunk}, overlap {overlap}")
        self.fn, self.chunk, self.overlap = fn, chunk, overlap if chunk is not None else 0
        self.align = align
        t = (torch.arange(self.overlap, dtype=torch.float64) + 0.5) / max(self.overlap, 1)
        self.fade_in = torch.sin(0.5 * math.pi * t).pow(2).float()
        self.pending: List[torch.Tensor] = []  # input not yet processed, from the next chunk's start on
        self.previous: Optional[torch.Tensor] = None  # (B, L) input of the previous chunk
        self.tail: Optional[torch.Tensor] = None  # (Q, B, O) previous chunk's output in the next overlap
        self.calls = 0

    def _buffered(self) -> int:
        return sum(x.shape[-1] for x in self.pending)

    def _aligned(self, y: torch.Tensor) -> torch.Tensor:
        import itertools

        head = y[..., : self.overlap]
        perms = list(itertools.permutations(range(y.shape[0])))
        for b in range(y.shape[1]):
            scores = [sum(float(self.tail[q, b] @ head[p, b]) for q, p in enumerate(perm)) for perm in perms]
            y[:, b] = y[list(perms[int(np.argmax(scores))]), b]
        return y

    def _process(self, x: torch.Tensor, last: bool, skip: int = 0) -> torch.Tensor:
        y = self.fn(x)[..., skip:]
        self.calls += 1
        o = self.overlap
        if self.tail is not None and o:
            y = self._aligned(y.clone()) if self.align and y.shape[0] > 1 else y.clone()
            y[..., :o] = y[..., :o] * self.fade_in + self.tail * (1.0 - self.fade_in)
        if last:
            self.tail = self.previous = None
            return y
        self.previous = x
        hop = x.shape[-1] - o
        self.tail = y[..., hop:] if o else None
        return y[..., :hop]

    def push(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Add input ``(B, n)``; returns the finished output ``(Q, B, m)`` (None while nothing is final)."""
        if x.shape[-1]:
            self.pending.append(x)
        if self.chunk is None or self._buffered() <= self.chunk:
            return None
        buf = torch.cat(self.pending, dim=-1)
        outs, start, hop = [], 0, self.chunk - self.overlap
        while buf.shape[-1] - start > self.chunk:  # more input follows this chunk: it is not the last
            outs.append(self._process(buf[..., start : start + self.chunk], last=False))
            start += hop
        self.pending = [buf[..., start:]]
        return torch.cat(outs, dim=-1)

    def flush(self) -> Optional[torch.Tensor]:
        """Process what is left as the last chunk; returns its output ``(Q, B, m)`` (None if nothing is left)."""
        if not self._buffered():
            return None
        buf = torch.cat(self.pending, dim=-1)
        self.pending = []
        skip = 0
        if self.previous is not None and buf.shape[-1] < self.chunk:
            # Extend backwards with the previous chunk's input (it holds H = L - O >= L - len(buf) samples
            # before this chunk's start).
            skip = self.chunk - buf.shape[-1]
            hop = self.chunk - self.overlap
            buf = torch.cat([self.previous[..., hop - skip : hop], buf], dim=-1)
        return self._process(buf, last=True, skip=skip)


class _Resampler:
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


class _Exact:
    """Pass ``(..., n)`` blocks on until ``target`` samples have gone through; pad with zeros at the end."""

    def __init__(self, target: int, sink: Callable[[np.ndarray], None]):
        self.left, self.sink = target, sink

    def __call__(self, y: np.ndarray) -> None:
        if self.left > 0 and y.shape[-1]:
            self.sink(y[..., : self.left])
            self.left -= min(self.left, y.shape[-1])

    def close(self, shape: Tuple[int, ...]) -> None:
        if self.left > 0:
            self.sink(np.zeros((*shape, self.left), dtype=np.float32))
            self.left = 0


# ================================================================================================
# Output
# ================================================================================================
OUTPUT_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe form of a query: ``"Dog barking!"`` -> ``dog-barking``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return s or "query"


class _Outputs:
    """Output files written under hidden temporary names in their directory, renamed when all are complete."""

    def __init__(self, paths: Sequence[Path], rate: int, channels: int, audio_format: str, overwrite: bool):
        import soundfile

        fmt, subtype = OUTPUT_FORMATS[audio_format]
        self.paths = list(paths)
        self.overwrite = overwrite
        self.tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in self.paths]
        self.files = []
        try:
            for tmp in self.tmps:
                self.files.append(soundfile.SoundFile(str(tmp), "w", rate, channels, subtype, format=fmt))
        except Exception:
            self.abort()
            raise

    def write(self, y: np.ndarray) -> None:
        """``y`` ``(Q, C, n)``: one block for each output file."""
        for f, block in zip(self.files, y):
            f.write(np.ascontiguousarray(np.clip(block, -1.0, 1.0).T))  # CLIPSep clips outputs to [-1, 1]

    def commit(self) -> None:
        for f in self.files:
            f.close()
        for tmp, path in zip(self.tmps, self.paths):
            if path.exists() and not self.overwrite:
                raise SeparationError(f"{path}: output file exists (pass --overwrite to replace it)")
            os.replace(tmp, path)

    def abort(self) -> None:
        for f in self.files:
            with contextlib.suppress(Exception):
                f.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)


def check_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` if needed and make sure a file can be created in it."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SeparationError(f"{output_dir}: output path exists and is not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=output_dir, prefix=".clipsep-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SeparationError(f"{output_dir}: output directory is not writable ({err.strerror or err})") from None


# ================================================================================================
# The separator
# ================================================================================================
@dataclass(frozen=True)
class Query:
    """One output's query: its name (for file names) and CLIP embedding ``(D,)``."""

    name: str
    embedding: Optional[torch.Tensor]


def clip_for_model(
    files: ModelFiles,
    dim: Optional[int],
    clip_model: Optional[str],
    clip_pretrained: Optional[str],
    device: str = "cpu",
    error: type = SeparationError,
):
    """The CLIP encoder that made a model's query embeddings.

    Explicit ``clip_model``/``clip_pretrained`` win (``clip_pretrained="none"``: random weights, for tests);
    otherwise the weights the recipe fitted beside the model (:func:`find_recipe_clip`), else CLIPSep's
    ViT-B-32/openai for 512-d models. Anything else raises ``error`` with one line saying what to pass.

    Args:
        files: Where the model's files are (:func:`resolve_model`).
        dim: The model's query embedding size (None: unknown).
        clip_model: open_clip model name, or None.
        clip_pretrained: open_clip tag or weights file, or None.
        device: Device of the encoder.
        error: Exception class of the one-line errors (:class:`SeparationError` or a caller's own).

    Returns:
        A :class:`CLIPQueryEncoder` (its model is built lazily).
    """
    from espnet2.enh.clipsep.query import CLIPQueryEncoder

    random = clip_pretrained is not None and clip_pretrained.lower() == "none"
    if random:
        clip_pretrained = None  # random weights: tests only
    if clip_model is None or (clip_pretrained is None and not random):
        found = find_recipe_clip(files.search_dirs, dim, files.pack_root)
        if found is not None and clip_model in (None, found[0]):
            clip_model, clip_pretrained = found[0], clip_pretrained or found[1]
            logging.info("CLIP of this model (from the recipe's files): %s %s", clip_model, clip_pretrained)
        elif clip_model is None and dim == 512:
            clip_model, clip_pretrained = PAPER_CLIP[0], clip_pretrained or PAPER_CLIP[1]
            logging.info("CLIP: %s/%s (the papers'; pass clip_model to change)", *PAPER_CLIP)
        elif clip_model is None:
            raise error(
                f"{files.source}: the model takes {dim}-d CLIP embeddings and its files do not say which CLIP "
                "made them: pass --clip_model and --clip_pretrained (clip_model=, clip_pretrained=)"
            )
        elif clip_pretrained is None and clip_model == PAPER_CLIP[0]:
            clip_pretrained = PAPER_CLIP[1]
        elif clip_pretrained is None:
            raise error(f"CLIP {clip_model}: pass --clip_pretrained (an open_clip tag or a weights file)")
    try:
        return CLIPQueryEncoder(clip_model, clip_pretrained, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise error(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None


class Separator:
    """Query-conditioned separation of waveforms and files of any length with a trained CLIPSep model.

    Args:
        model: A ``CLIPSepEnhancementModel`` (encoder, ``clipsep`` separator, decoder), e.g. from
            ``CLIPSepTask.build_model_from_file``.
        fs: The model's sample rate in Hz.
        query_encoder: The CLIP model that made the training queries' embeddings (needed for text and image
            queries; not for embeddings given directly or for PIT models).
        chunk_seconds: Chunk length for long inputs, rounded to a length the U-Net needs no time padding for
            (None or 0: one pass over the whole input, memory grows with its duration).
        overlap_seconds: Overlap of consecutive chunks, cross-faded (rounded to STFT hops, at most half a chunk).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        mask_type: Override the separator's ``soft``/``binary`` masks.
        mask_threshold: Override the binary mask threshold.
    """

    @typechecked
    def __init__(
        self,
        model: torch.nn.Module,
        fs: int = 16000,
        query_encoder: Optional[object] = None,
        chunk_seconds: Optional[float] = 8.0,
        overlap_seconds: float = 1.0,
        device: str = "auto",
        mask_type: Optional[str] = None,
        mask_threshold: Optional[float] = None,
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SeparationError(f"device {device}: CUDA is not available")
        if chunk_seconds is not None and chunk_seconds < 0 or overlap_seconds < 0:
            raise SeparationError("chunk_seconds and overlap_seconds must be >= 0")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.fs = fs
        self.query_encoder = query_encoder
        separator = model.separator
        if mask_type not in (None, "soft", "binary"):
            raise SeparationError(f"mask_type must be soft or binary, got {mask_type!r}")
        # Inference-only separator attributes, set for each call and restored after it (the model is shared).
        given = (("mask_type", mask_type), ("mask_threshold", mask_threshold))
        self.options = {k: v for k, v in given if v is not None}
        for name in self.options:
            if not hasattr(separator, name):
                raise SeparationError(f"{name}: separator {type(separator).__name__} has no such option")
        self.query_type = getattr(separator, "query_type", "none")
        proj = getattr(separator, "query_proj", None)
        self.query_dim = proj.in_features if proj is not None else None
        self.hop = int(getattr(model.encoder, "hop_length", 1) or 1)
        self.n_fft = int(getattr(model.encoder, "n_fft", 0) or 0)
        multiple = int(getattr(separator, "time_multiple", 1))
        self.chunk = self._chunk_samples(chunk_seconds, multiple)
        overlap = int(round(overlap_seconds * fs / self.hop)) * self.hop
        self.overlap = 0 if self.chunk is None else min(overlap, (self.chunk // 2) // self.hop * self.hop)
        self.normalize_variance = bool(getattr(model, "normalize_variance", False))

    def _chunk_samples(self, seconds: Optional[float], multiple: int) -> Optional[int]:
        if not seconds:
            return None
        # Centred STFT: L samples -> L // hop + 1 frames; make that a multiple of the U-Net's 2^levels.
        blocks = max(1, round((seconds * self.fs / self.hop + 1) / multiple))
        return (blocks * multiple - 1) * self.hop

    # --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: PathLike,
        clip_model: Optional[str] = None,
        clip_pretrained: Optional[str] = None,
        query_encoder: Optional[object] = None,
        device: str = "auto",
        cache_dir: Optional[PathLike] = None,
        **kwargs,
    ) -> "Separator":
        """Load a trained model and the CLIP model its queries need.

        Args:
            model: Packed zip, experiment directory, ``espnet_model_zoo`` tag or released checkpoint (see
                :func:`resolve_model`).
            clip_model: open_clip model name (e.g. ``ViT-B-32``, ``clipsep-tiny``). A trained config does not
                record its CLIP; when None it is found in this order: the weights the enh1 recipe fitted
                beside the experiments (``<expdir>/clip/<name>.pt`` with its ``.json``, or such a file packed
                with ``--option``), then CLIPSep's ViT-B-32/openai for a model with 512-d queries.
            clip_pretrained: open_clip tag or local weights file for ``clip_model`` (``openai`` for ViT-B-32).
            query_encoder: A ready :class:`~espnet2.enh.clipsep.query.CLIPQueryEncoder` (overrides the two
                above).
            device: ``auto``, ``cpu``, ``cuda``.
            cache_dir: ``espnet_model_zoo`` cache for packs and tags.
            **kwargs: :class:`Separator` options (``chunk_seconds``, ``overlap_seconds``, ``mask_type``, ...).

        Returns:
            The :class:`Separator`.
        """
        files = resolve_model(model, cache_dir)
        net, args = build_model(files)
        fs = int((getattr(args, "preprocessor_conf", None) or {}).get("fs", 16000))
        sep = cls(net, fs=fs, device=device, **kwargs)
        if query_encoder is None and sep.query_type == "clip":
            query_encoder = sep._clip_for(files, clip_model, clip_pretrained)
        if query_encoder is not None and sep.query_dim is not None:
            dim = int(query_encoder.embed_dim)
            if dim != sep.query_dim:
                raise SeparationError(
                    f"{model}: the model takes {sep.query_dim}-d queries but CLIP "
                    f"{getattr(query_encoder, 'model_name', '?')} gives {dim}-d embeddings"
                )
        sep.query_encoder = query_encoder
        return sep

    def _clip_for(self, files: ModelFiles, clip_model: Optional[str], clip_pretrained: Optional[str]):
        return clip_for_model(files, self.query_dim, clip_model, clip_pretrained, str(self.device))

    # --------------------------------------------------------------------------------------------
    def encode_queries(
        self,
        query: QueryLike = None,
        image: Union[None, PathLike, Sequence[PathLike]] = None,
        embedding: Optional[Union[torch.Tensor, np.ndarray]] = None,
    ) -> List[Query]:
        """Query embeddings, in the order texts, images, embeddings.

        Args:
            query: Text queries (a string or a list); each is the mean over CLIP prompt templates. Longer
                prompts than CLIP's context (77 tokens) are truncated, with a warning.
            image: Pictures (one frame each) or video files (the 3 frames at 1 fps around the middle).
            embedding: Precomputed embeddings ``(D,)`` or ``(N, D)``.

        Returns:
            One :class:`Query` per output (for a PIT model, one per separated source, without embedding).
        """
        texts = [query] if isinstance(query, str) else list(query or [])
        images = [image] if isinstance(image, (str, os.PathLike)) else list(image or [])
        embs = []
        if embedding is not None:
            embs = list(torch.as_tensor(embedding, dtype=torch.float32).reshape(-1, self.query_dim or 1))
        if self.query_type == "none":
            if texts or images or embs:
                raise SeparationError("this model (PIT) takes no queries; it separates into all its outputs")
            return [Query(f"spk{n}", None) for n in range(1, self.model.separator.num_spk + 1)]
        if self.query_type != "clip":
            raise SeparationError(
                f"query_type {self.query_type!r} models are not queried by text or image (use bin.inference)"
            )
        if not (texts or images or embs):
            raise SeparationError("no query: give a text query, an image or an embedding")
        for i, q in enumerate(texts):
            if not isinstance(q, str) or not q.strip():
                raise SeparationError(f"query {i + 1}: empty text query")
        if (texts or images) and self.query_encoder is None:
            raise SeparationError("text and image queries need the model's CLIP (query_encoder / clip_model)")
        out: List[Query] = []
        if texts:
            self._warn_long_queries(texts)
            for q, e in zip(texts, self.query_encoder.encode_text([q.strip() for q in texts])):
                out.append(Query(slug(q), e))
        for img in images:
            out.append(Query("image-" + slug(Path(img).stem), self._encode_image(Path(img))))
        for i, e in enumerate(embs, 1):
            if e.numel() != self.query_dim or not torch.isfinite(e).all():
                raise SeparationError(f"embedding {i}: expected {self.query_dim} finite values")
            out.append(Query(f"embedding{i}", e))
        return out

    def _warn_long_queries(self, texts: Sequence[str]) -> None:
        enc = self.query_encoder
        if not hasattr(enc, "num_tokens"):
            return
        limit = enc.context_length
        for q in texts:
            counts = [enc.num_tokens(t.format(q.strip())) for t in enc.templates]
            longest = max((c for c in counts if c is not None), default=0)
            if longest > limit:
                warnings.warn(
                    f"query {q[:40]!r}...: {longest} tokens with its prompt template, more than CLIP's {limit}; "
                    f"truncated to {limit}",
                    SeparationWarning,
                    stacklevel=3,
                )

    def _encode_image(self, path: Path) -> torch.Tensor:
        from espnet2.enh.clipsep.query import IMAGE_SUFFIXES, center_frames, check_image, list_frames
        from espnet2.enh.clipsep.video import VideoError, extract_frames

        if not path.exists():
            raise SeparationError(f"{path}: image not found")
        if path.is_dir():
            raise SeparationError(f"{path}: is a directory, not an image or video")
        frames: List = [path]
        is_image = path.suffix.lower() in IMAGE_SUFFIXES
        try:
            check_image(path)
            is_image = True
        except (ValueError, FileNotFoundError) as err:
            if is_image:
                raise SeparationError(str(err)) from None
        with tempfile.TemporaryDirectory(prefix="clipsep-frames-") as tmp:
            if not is_image:
                try:
                    extract_frames(path, Path(tmp) / "frames", fps=1, size=224)
                except VideoError as err:
                    problem = f"not a readable image or video ({err.reason}: {err.detail})"
                    raise SeparationError(f"{path}: {problem}") from None
                except RuntimeError as err:  # ffmpeg missing
                    raise SeparationError(f"{path}: {err}") from None
                frames = center_frames(list_frames(Path(tmp) / "frames"), IMAGE_QUERY_FRAMES)
            try:
                return self.query_encoder.encode_images([frames])[0]
            except (ValueError, OSError) as err:
                raise SeparationError(str(err) if str(path) in str(err) else f"{path}: {err}") from None

    # --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _mode(self, remove: bool):
        """Set the separator's inference options (mask type, threshold, remove) for one call."""
        sep = self.model.separator
        options = {**self.options, **({"remove": True} if remove else {})}
        if remove and not hasattr(sep, "remove"):
            raise SeparationError(f"remove: separator {type(sep).__name__} has no such option")
        before = {k: getattr(sep, k) for k in options}
        for k, v in options.items():
            setattr(sep, k, v)
        try:
            yield
        finally:
            for k, v in before.items():
                setattr(sep, k, v)

    def _chunk_fn(self, queries: List[Query], scale: Optional[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        additional = {}
        for n, q in enumerate(queries, 1):
            if q.embedding is not None:
                additional[f"query{n}"] = q.embedding.to(self.device, torch.float32)[None]

        @torch.no_grad()
        def fn(x: torch.Tensor) -> torch.Tensor:
            batch, length = x.shape
            x = x.to(self.device, torch.float32)
            if scale is not None:
                x = x / scale.to(self.device)
            if length < self.n_fft:  # the centred STFT needs at least n_fft // 2 + 1 samples
                x = torch.nn.functional.pad(x, (0, self.n_fft - length))
            add = {k: v.expand(batch, -1) for k, v in additional.items()}
            ilens = torch.full((batch,), x.shape[1], dtype=torch.long, device=self.device)
            outs, *_ = self.model.forward_enhance(x, ilens, add)
            y = torch.stack([o[..., :length] for o in outs[: len(queries)]])  # (Q, B, n)
            if scale is not None:
                y = y * scale.to(self.device)
            return y.float().cpu()

        return fn

    def _run(
        self,
        blocks: Iterator[np.ndarray],
        rate: int,
        channels: int,
        frames: int,
        queries: List[Query],
        per_channel: bool,
        keep_input_rate: bool,
        remove: bool,
        std: Optional[np.ndarray],
        sink: Callable[[np.ndarray], None],
    ) -> None:
        """Stream input blocks ``(C, n)`` through resampling, chunked separation and resampling to ``sink``.

        ``sink`` receives output blocks ``(Q, B, m)`` (``B`` = C with ``per_channel``, else 1), in all exactly
        ``frames`` samples at the input rate (``keep_input_rate``) or their resampled length at the model's.
        """
        batch = channels if per_channel else 1
        scale = None
        if self.normalize_variance and std is not None:
            s = std[1:] if per_channel else std[:1]
            scale = torch.from_numpy(np.maximum(s, 1e-8).astype(np.float32))[:, None]
        engine = OverlapAdd(self._chunk_fn(queries, scale), self.chunk, self.overlap, align=self.query_type == "none")
        out_rate = rate if keep_input_rate else self.fs
        down = _Resampler(rate, self.fs, batch) if rate != self.fs else None
        up = _Resampler(self.fs, out_rate, len(queries) * batch) if out_rate != self.fs else None
        exact = _Exact(frames if keep_input_rate else resampled_length(frames, rate, self.fs), sink)

        def emit(y: Optional[torch.Tensor], last: bool = False) -> None:
            y_np = np.zeros((len(queries), batch, 0), np.float32) if y is None else y.numpy()
            if up is not None:
                q, b, n = y_np.shape
                y_np = up(y_np.reshape(q * b, n), last=last).reshape(q, b, -1)
            exact(y_np)

        with self._mode(remove):
            for block in blocks:
                x = block if per_channel else block.mean(0, keepdims=True)
                if down is not None:
                    x = down(x)
                emit(engine.push(torch.from_numpy(x)))
            if down is not None:
                emit(engine.push(torch.from_numpy(down(np.zeros((batch, 0), np.float32), last=True))))
            emit(engine.flush(), last=True)
        exact.close((len(queries), batch))

    # --------------------------------------------------------------------------------------------
    def __call__(
        self,
        waveform: Union[torch.Tensor, np.ndarray],
        sample_rate: int,
        query: QueryLike = None,
        image: Union[None, PathLike, Sequence[PathLike]] = None,
        embedding: Optional[Union[torch.Tensor, np.ndarray]] = None,
        remove: bool = False,
        per_channel: bool = False,
        keep_input_rate: bool = False,
    ) -> Union[torch.Tensor, np.ndarray]:
        """Separate a waveform.

        Args:
            waveform: ``(T,)`` or ``(C, T)`` samples (channels first, C <= 8), torch or numpy, any rate.
            sample_rate: Its sample rate in Hz.
            query: Text query or list of them (one output each).
            image: Picture or video file(s) as queries (one output each).
            embedding: Precomputed CLIP embeddings ``(D,)`` or ``(N, D)``.
            remove: Output everything but each query (mask ``1 - M``).
            per_channel: Separate each channel (outputs keep C channels) instead of the down-mix.
            keep_input_rate: Output at ``sample_rate`` (length ``T``) instead of the model's rate (length
                ``round(T * fs / sample_rate)``).

        Returns:
            Outputs ``(Q, T')``, or ``(Q, C, T')`` with ``per_channel``, as the input type (float32); a single
            text query (a string, no images or embeddings) gives ``(T')`` / ``(C, T')``. Silent input gives
            silence (with a :class:`SeparationWarning`).
        """
        x, is_torch = as_channels_first(waveform)
        rate = check_rate_and_channels(sample_rate, x.shape[0], "waveform")
        if x.shape[1] == 0:
            raise SeparationError("waveform: no samples (0 frames)")
        stats = _Stats(x.shape[0])
        stats.update(x, "waveform")
        queries = self.encode_queries(query, image, embedding)
        pieces: List[np.ndarray] = []
        if stats.peak == 0.0:
            warnings.warn("waveform: all samples are zero; the output is silence", SeparationWarning, stacklevel=2)
            length = x.shape[1] if keep_input_rate else resampled_length(x.shape[1], rate, self.fs)
            out = np.zeros((len(queries), x.shape[0] if per_channel else 1, length), np.float32)
        else:
            self._run(iter([x]), rate, x.shape[0], x.shape[1], queries, per_channel, keep_input_rate, remove,
                      stats.std(), pieces.append)
            out = np.clip(np.concatenate(pieces, axis=-1), -1.0, 1.0)  # CLIPSep clips outputs to [-1, 1]
        if not per_channel:
            out = out[:, 0]
        if isinstance(query, str) and image is None and embedding is None:
            out = out[0]
        return torch.from_numpy(np.ascontiguousarray(out)) if is_torch else out

    def output_paths(
        self, path: PathLike, output_dir: PathLike, queries: Sequence[Query], remove: bool, audio_format: str = "wav"
    ) -> List[Path]:
        """``<output_dir>/<stem>_<query>.<fmt>`` (``_without_<query>`` in remove mode), unique per query."""
        names, out = set(), []
        for q in queries:
            base = f"{Path(path).stem}_{'without_' if remove else ''}{q.name}"
            name, i = base, 2
            while name in names:
                name, i = f"{base}-{i}", i + 1
            names.add(name)
            out.append(Path(output_dir) / f"{name}.{audio_format}")
        return out

    def separate_file(
        self,
        path: PathLike,
        output_dir: PathLike,
        query: QueryLike = None,
        image: Union[None, PathLike, Sequence[PathLike]] = None,
        embedding: Optional[Union[torch.Tensor, np.ndarray]] = None,
        remove: bool = False,
        per_channel: bool = False,
        keep_input_rate: bool = False,
        overwrite: bool = False,
        audio_format: str = "wav",
        queries: Optional[List[Query]] = None,
    ) -> List[Path]:
        """Separate one audio file, streaming, into one file per query in ``output_dir``.

        The input is checked completely first (see :func:`open_audio`); outputs are written under hidden
        temporary names in ``output_dir`` and renamed only when all are complete, so a failure leaves nothing.

        Args:
            path: Audio file (any format soundfile or ffmpeg reads).
            output_dir: Created if missing.
            query, image, embedding, remove, per_channel, keep_input_rate: As for :meth:`__call__`.
            overwrite: Replace existing outputs (else refused).
            audio_format: ``wav`` (32-bit float) or ``flac`` (24-bit).
            queries: Already encoded queries (from :meth:`encode_queries`; then query/image/embedding are
                ignored), to encode them once for many files.

        Returns:
            The output files, in query order.
        """
        if audio_format not in OUTPUT_FORMATS:
            raise SeparationError(f"audio format {audio_format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
        output_dir = Path(output_dir)
        queries = queries if queries is not None else self.encode_queries(query, image, embedding)
        outputs = self.output_paths(path, output_dir, queries, remove, audio_format)
        if not overwrite:
            for p in outputs:
                if p.exists():
                    raise SeparationError(f"{p}: output file exists (pass --overwrite to replace it)")
        with tempfile.TemporaryDirectory(prefix="clipsep-separate-") as work:
            audio = open_audio(path, Path(work))
            check_output_dir(output_dir)
            channels = audio.channels if per_channel else 1
            out_rate = audio.sample_rate if keep_input_rate else self.fs
            files = _Outputs(outputs, out_rate, channels, audio_format, overwrite)
            try:
                if audio.peak == 0.0:
                    warnings.warn(f"{audio.path}: all samples are zero; writing silence", SeparationWarning, 2)
                    length = audio.frames
                    if not keep_input_rate:
                        length = resampled_length(audio.frames, audio.sample_rate, self.fs)
                    for start in range(0, length, BLOCK_FRAMES):
                        files.write(np.zeros((len(queries), channels, min(BLOCK_FRAMES, length - start)), np.float32))
                else:
                    self._run(_file_blocks(audio), audio.sample_rate, audio.channels, audio.frames, queries,
                              per_channel, keep_input_rate, remove, audio.std, files.write)  # fmt: skip
                files.commit()
            except BaseException:
                files.abort()
                raise
        return outputs
