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

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from typeguard import typechecked

from espnet2.enh.clipsep.clip.image_query import read_image_query
from espnet2.enh.clipsep.clip.resolve import clip_for_model
from espnet2.enh.clipsep.errors import SeparationError, SeparationWarning, first_line, reraise_as
from espnet2.enh.clipsep.files.model_files import ModelFiles, resolve_model
from espnet2.enh.clipsep.files.writing import check_output_dir, slug
from espnet2.enh.clipsep.separate.audio_in import (
    BLOCK_FRAMES,
    AudioStats,
    Resampler,
    as_channels_first,
    check_rate_and_channels,
    file_blocks,
    open_audio,
    resampled_length,
)
from espnet2.enh.clipsep.separate.audio_out import OUTPUT_FORMATS, ExactLength, OutputFiles
from espnet2.enh.clipsep.separate.build import build_model
from espnet2.enh.clipsep.separate.overlap_add import OverlapAdd

__all__ = ["Query", "Separator"]

PathLike = Union[str, os.PathLike]
QueryLike = Union[None, str, Sequence[str]]


@dataclass(frozen=True)
class Query:
    """One output's query: its name (for file names) and CLIP embedding ``(D,)``."""

    name: str
    embedding: Optional[torch.Tensor]


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
            query_encoder: A ready :class:`~espnet2.enh.clipsep.clip.encoder.CLIPQueryEncoder` (overrides the two
                above).
            device: ``auto``, ``cpu``, ``cuda``.
            cache_dir: ``espnet_model_zoo`` cache for packs and tags.
            **kwargs: :class:`Separator` options (``chunk_seconds``, ``overlap_seconds``, ``mask_type``, ...).

        Returns:
            The :class:`Separator`.
        """
        with reraise_as(SeparationError):
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
        with reraise_as(SeparationError):
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
        with reraise_as(SeparationError):
            _, frames = read_image_query(path)
        try:
            return self.query_encoder.encode_images([frames])[0]
        except (ValueError, OSError) as err:
            raise SeparationError(f"{path}: {first_line(err)}") from None

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
        progress: Optional[Callable[[float, float], None]] = None,
    ) -> None:
        """Stream input blocks ``(C, n)`` through resampling, chunked separation and resampling to ``sink``.

        ``sink`` receives output blocks ``(Q, B, m)`` (``B`` = C with ``per_channel``, else 1), in all exactly
        ``frames`` samples at the input rate (``keep_input_rate``) or their resampled length at the model's.
        ``progress(done, total)`` is called with seconds of input separated so far and in all, first with 0.
        """
        batch = channels if per_channel else 1
        scale = None
        if self.normalize_variance and std is not None:
            s = std[1:] if per_channel else std[:1]
            scale = torch.from_numpy(np.maximum(s, 1e-8).astype(np.float32))[:, None]
        engine = OverlapAdd(self._chunk_fn(queries, scale), self.chunk, self.overlap, align=self.query_type == "none")
        out_rate = rate if keep_input_rate else self.fs
        down = Resampler(rate, self.fs, batch) if rate != self.fs else None
        up = Resampler(self.fs, out_rate, len(queries) * batch) if out_rate != self.fs else None
        exact = ExactLength(frames if keep_input_rate else resampled_length(frames, rate, self.fs), sink)

        def emit(y: Optional[torch.Tensor], last: bool = False) -> None:
            y_np = np.zeros((len(queries), batch, 0), np.float32) if y is None else y.numpy()
            if up is not None:
                q, b, n = y_np.shape
                y_np = up(y_np.reshape(q * b, n), last=last).reshape(q, b, -1)
            exact(y_np)

        total, done = frames / rate, 0
        if progress is not None:
            progress(0.0, total)
        with self._mode(remove):
            for block in blocks:
                x = block if per_channel else block.mean(0, keepdims=True)
                if down is not None:
                    x = down(x)
                emit(engine.push(torch.from_numpy(x)))
                done += block.shape[1]
                if progress is not None:
                    progress(done / rate, total)
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
        self._check_length(x.shape[1], rate, "waveform")
        stats = AudioStats(x.shape[0])
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

    def _check_length(self, frames: int, rate: int, name: str) -> None:
        """Refuse an input shorter than one STFT frame of the model: there is nothing to separate."""
        length = resampled_length(frames, rate, self.fs)
        if length < self.n_fft:
            at = f" ({length} at the model's {self.fs} Hz)" if rate != self.fs else ""
            raise SeparationError(
                f"{name}: {frames} samples at {rate} Hz{at}: shorter than one STFT frame of the model "
                f"({self.n_fft} samples at {self.fs} Hz, {1000 * self.n_fft / self.fs:.0f} ms)"
            )

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
        progress: Optional[Callable[[float, float], None]] = None,
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
            progress: Called as ``progress(done, total)`` with the seconds of input separated so far and the
                file's duration, first with ``done = 0`` and last with ``done = total``, one call per block
                read (:data:`BLOCK_FRAMES` samples), so a long file reports as it goes.

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
            self._check_length(audio.frames, audio.sample_rate, str(audio.path))
            check_output_dir(output_dir)
            channels = audio.channels if per_channel else 1
            out_rate = audio.sample_rate if keep_input_rate else self.fs
            files = OutputFiles(outputs, out_rate, channels, audio_format, overwrite)
            try:
                if audio.peak == 0.0:
                    warnings.warn(f"{audio.path}: all samples are zero; writing silence", SeparationWarning, 2)
                    length = audio.frames
                    if not keep_input_rate:
                        length = resampled_length(audio.frames, audio.sample_rate, self.fs)
                    for start in range(0, length, BLOCK_FRAMES):
                        files.write(np.zeros((len(queries), channels, min(BLOCK_FRAMES, length - start)), np.float32))
                    if progress is not None:
                        progress(audio.frames / audio.sample_rate, audio.frames / audio.sample_rate)
                else:
                    self._run(file_blocks(audio), audio.sample_rate, audio.channels, audio.frames, queries,
                              per_channel, keep_input_rate, remove, audio.std, files.write, progress)  # fmt: skip
                files.commit()
            except BaseException:
                files.abort()
                raise
        return outputs
