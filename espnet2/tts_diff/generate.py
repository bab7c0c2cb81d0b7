"""Text- and image-queried audio generation with a trained CLIPSonic model.

``Generator.from_pretrained(MODEL)`` loads a generator from a packed zip (``espnet2.bin.pack tts``, unpacked
offline by ``espnet_model_zoo``), an experiment directory (``config.yaml`` + weights) or an ``espnet_model_zoo``
tag (model resolution is the separation side's :func:`espnet2.enh.clipsep.files.model_files.resolve_model`), with the
CLIP model that turns queries into embeddings and, for PD, the diffusion prior. Calling it generates waveforms:

* **ZS** (zero-shot): the CLIP text embedding conditions the generator directly (it was trained on CLIP image
  embeddings, so this crosses CLIP's modality gap);
* **PD**: the text embedding is mapped by the diffusion prior to an image embedding first;
* **IQ**: the image embedding of a picture, a video (the 3 frames at 1 fps around its middle), or a frames
  directory (the 3 frames around its middle).

Sample ``k`` of every query is drawn with seed ``seed + k`` (a private ``torch.Generator`` for the prior and
one for the mel sampler), so a sample is reproduced by its seed alone, whatever else is in the batch.
Waveforms come from the vocoder embedded in the model (``espnet2.tts_diff.bin.embed_vocoder``); without one,
from Griffin-Lim on the de-normalised log-mel (ESPnet's ``Spectrogram2Waveform``), with a warning.

Where the companions of a model are looked for (explicit arguments always win):

* CLIP: ``<name>.pt`` with its ``<name>.pt.json`` (``{"clip_model": <name>}``, as ``fit_clip`` writes) in the
  experiment directory, its parent, their ``clip/`` sub-directories, or anywhere in an unpacked pack
  (:func:`espnet2.enh.clipsep.clip.resolve.find_recipe_clip`); else CLIP ViT-B-32/openai for a 512-d model.
* Prior: a state dict (``*.pt``/``*.pth``) with its ``.yaml`` holding ``prior_conf`` (as ``train_prior``
  writes), in the same places and their ``prior/`` sub-directories.

A prior given explicitly (``prior=``, ``--prior FILE``) is either that, or LAION's pretrained DALL·E 2 prior
(``latest.pth``/``best.pth`` of huggingface.co/laion/DALLE2-PyTorch, its ``prior_config.json`` beside it; see
:mod:`espnet2.tts_diff.dalle2_prior`): a file with no ``.yaml`` beside it is read as the latter. That prior maps
the text query itself (its own CLIP ViT-L-14 text encoder, shared with the model's CLIP when that is the same), so
the model must be trained on open_clip ``ViT-L-14``/``openai`` image embeddings (768-d).

Example:
    >>> gen = Generator.from_pretrained("exp/mini/tts_clipsonic/packed.zip")
    >>> wavs = gen(text=["playing violin", "dog barking"], mode="pd", num=2)   # 4 arrays (T,) at gen.fs
    >>> [w] = gen(image="frame.jpg")                                          # IQ

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023.
"""

import argparse
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml
from typeguard import typechecked

from espnet2.enh.clipsep.errors import first_line, reraise_as
from espnet2.tts_diff.errors import GenerationError, GenerationWarning

PathLike = Union[str, os.PathLike]
ImageArg = Union[None, PathLike, "PIL.Image.Image", Sequence]  # noqa: F821

MODES = ("zs", "pd", "iq")
PRIOR_SUFFIXES = (".pt", ".pth")
# Largest log10 mel magnitude given to Griffin-Lim: a full-scale sine gives ~2.7 with n_fft 2048.
MAX_LOG10_MEL = 4.0


@dataclass(frozen=True, eq=False)
class Condition:
    """One query: a file-name-safe ``name``, its ``mode`` and its CLIP embedding ``(D,)``.

    For ``pd`` the embedding is the text embedding; the prior draws an image embedding per sample (LAION's
    DALL·E 2 prior reads ``text``, the query itself, instead).
    """

    name: str
    mode: str
    embedding: torch.Tensor
    text: Optional[str] = None


def _device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenerationError(f"device {device}: CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise GenerationError(f"device {device}: {first_line(err)}") from None


# ================================================================================================
# Model files
# ================================================================================================
def _fix_relative_paths(config: Path) -> Path:
    """The config itself, or a patched copy whose ``normalize_conf.stats_file`` resolves from here.

    A recipe's ``config.yaml`` holds paths relative to the recipe directory (ESPnet runs from there); when the
    stats file is not found from the working directory it is looked up relative to the config's ancestors.
    """
    args = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    stats = (args.get("normalize_conf") or {}).get("stats_file")
    if args.get("normalize") is None or not stats or Path(stats).is_file():
        return config
    for root in config.resolve().parents:
        if (root / stats).is_file():
            args["normalize_conf"]["stats_file"] = str(root / stats)
            fd, tmp = tempfile.mkstemp(prefix="clipsonic-config-", suffix=".yaml")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(args, f, sort_keys=False, allow_unicode=True)
            return Path(tmp)
    raise GenerationError(f"{config}: normalize_conf.stats_file {stats} not found (run from the recipe directory)")


def build_model(train_config: Path, model_file: Path) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build the ESPnet TTS model with ``TTSDiffTask`` and load its weights (``weights_only``), on CPU, eval mode.

    Every tensor of the checkpoint must fit the model; only the feature front-end's and normaliser's buffers,
    which the config rebuilds, may be absent from it.

    Raises:
        GenerationError: The config does not build a CLIPSonic model, or the weights do not fit it.
    """
    from espnet2.enh.clipsep.files.weights import load_weights
    from espnet2.tts_diff.model import CLIPSonic
    from espnet2.tts_diff.task import TTSDiffTask

    config = _fix_relative_paths(train_config)
    try:
        model, args = TTSDiffTask.build_model_from_file(config, None, "cpu")
    except GenerationError:
        raise
    except Exception as err:
        raise GenerationError(
            f"{train_config}: cannot build a model from this config ({type(err).__name__}: {first_line(err)})"
        ) from None
    finally:
        if config != train_config:
            config.unlink(missing_ok=True)
    if not isinstance(model.tts, CLIPSonic):
        raise GenerationError(f"{train_config}: tts is {type(model.tts).__name__}, not clipsonic")
    with reraise_as(GenerationError):
        state = load_weights(model_file)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(("feats_extract.", "normalize."))]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise GenerationError(
            f"{model_file}: weights do not fit {train_config} (missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise GenerationError(f"{model_file}: weights do not fit {train_config} ({first_line(err)})") from None
    return model.eval(), args


def find_prior(search_dirs: Sequence[Path], pack_root: Optional[Path] = None) -> Optional[Path]:
    """The diffusion prior beside a model: a state dict with a ``.yaml`` holding ``prior_conf``.

    Looked for in ``search_dirs`` and their ``prior/`` sub-directories, and anywhere under ``pack_root``.

    Returns:
        The one candidate, or None (none, or several: then pass one explicitly).
    """
    candidates = [p for d in search_dirs for pattern in ("*", "prior/*") for p in sorted(Path(d).glob(pattern))]
    if pack_root is not None:
        candidates += sorted(pack_root.rglob("*"))
    found = {}
    for path in candidates:
        conf = path.with_suffix(".yaml")
        if path.suffix not in PRIOR_SUFFIXES or not path.is_file() or not conf.is_file():
            continue
        try:
            meta = yaml.safe_load(conf.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("prior_conf"), dict):
            found[path.resolve()] = path
    if len(found) > 1:
        logging.warning("several diffusion priors beside the model (%s); pass one with --prior", ", ".join(map(str, found)))
    return next(iter(found.values())) if len(found) == 1 else None


# ================================================================================================
# Vocoding
# ================================================================================================
class GriffinLim:
    """Griffin-Lim on a de-normalised log-mel, with ESPnet's ``Spectrogram2Waveform`` and the model's fbank conf.

    Args:
        feats_extract: The model's ``LogMelFbank`` (its STFT/mel settings and log base are used).
        n_iter: Griffin-Lim iterations.
    """

    def __init__(self, feats_extract: torch.nn.Module, n_iter: int = 32):
        from espnet2.utils.griffin_lim import Spectrogram2Waveform

        params = dict(feats_extract.get_parameters())
        self.hop = int(params["n_shift"])
        self.n_iter = n_iter
        self.to_wav = Spectrogram2Waveform(**params, griffin_lim_iters=n_iter)
        log_base = getattr(getattr(feats_extract, "logmel", None), "log_base", 10.0)
        # Spectrogram2Waveform expects log10 mel; convert from the model's base (None: natural log).
        self.to_log10 = 1.0 / math.log(10.0) if log_base is None else math.log10(log_base)

    def __call__(self, mel: torch.Tensor, num_samples: int) -> np.ndarray:
        """De-normalised log-mel ``(T, n_mels)`` -> waveform ``(num_samples,)`` (trimmed or zero-padded).

        The log10 mel is clamped to ``[-10, MAX_LOG10_MEL]`` first: an (under-)trained generator can predict
        values whose ``10 ** x`` overflows.
        """
        log10_mel = (mel.detach().float().cpu() * self.to_log10).clamp(-10.0, MAX_LOG10_MEL)
        wav = self.to_wav(log10_mel).numpy().astype(np.float32)
        out = np.zeros(num_samples, np.float32)
        out[: min(num_samples, len(wav))] = wav[:num_samples]
        return out


# ================================================================================================
# Image queries
# ================================================================================================
def query_frames(image) -> Tuple[str, list]:
    """The frames of one image query and a name for it (see :func:`~espnet2.enh.clipsep.clip.image_query.read_image_query`).

    Raises:
        GenerationError: Missing or unreadable file, a video ffmpeg cannot decode.
    """
    from espnet2.enh.clipsep.clip.image_query import read_image_query

    with reraise_as(GenerationError):
        return read_image_query(image)


# ================================================================================================
# The generator
# ================================================================================================
class Generator:
    """Generate audio from text or image queries with a trained CLIPSonic model.

    Args:
        model: An ``ESPnetTTSModel`` whose ``tts`` is :class:`~espnet2.tts_diff.model.CLIPSonic` (e.g. from
            :func:`build_model`).
        query_encoder: A :class:`~espnet2.enh.clipsep.clip.encoder.CLIPQueryEncoder` of the CLIP that made the training
            embeddings (needed for text and image queries, not for embeddings given directly).
        prior: A :class:`~espnet2.tts_diff.prior.DiffusionPrior` or LAION's
            :class:`~espnet2.tts_diff.dalle2_prior.Dalle2Prior` (needed for mode ``pd``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        prior_steps: Sampling steps of the prior.
        prior_sampler: Sampler of the prior (``ddpm``, ``ddim``, ``dpmpp``; LAION's: its own ``ddim``, or ``ddpm``
            over all its steps).
        prior_guidance: Guidance weight w of the prior (0: none; LAION's prior takes none).
        griffin_lim_iters: Griffin-Lim iterations when the model embeds no vocoder.
        clip_x0: Clamp the predicted normalised mel to ``[-clip_x0, clip_x0]`` while sampling (None: the model config's ``clip_x0``).
    """

    @typechecked
    def __init__(
        self,
        model: torch.nn.Module,
        query_encoder: Optional[object] = None,
        prior: Optional[torch.nn.Module] = None,
        device: str = "auto",
        prior_steps: int = 64,
        prior_sampler: str = "ddim",
        prior_guidance: float = 0.0,
        griffin_lim_iters: int = 32,
        clip_x0: Optional[float] = None,
    ):
        from espnet2.tts_diff.model import CLIPSonic
        from espnet2.tts_diff.samplers import SAMPLERS

        tts = getattr(model, "tts", None)
        if not isinstance(tts, CLIPSonic):
            raise GenerationError(f"model: expected an ESPnet TTS model holding CLIPSonic, got {type(tts).__name__}")
        if prior_sampler not in SAMPLERS:
            raise GenerationError(f"prior_sampler: choose from {', '.join(sorted(SAMPLERS))}, got {prior_sampler!r}")
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.tts = tts
        self.fs = int(tts.fs)
        self.embed_dim = int(tts.spk_embed_dim)
        self.query_encoder = query_encoder
        if query_encoder is not None and int(query_encoder.embed_dim) != self.embed_dim:
            raise GenerationError(
                f"CLIP {getattr(query_encoder, 'model_name', '?')}: gives {query_encoder.embed_dim}-d embeddings, "
                f"the model takes {self.embed_dim}-d"
            )
        self.prior = None if prior is None else prior.to(self.device).eval()
        if prior is not None and (prior.embed_dim != self.embed_dim or prior.text_dim != self.embed_dim):
            raise GenerationError(
                f"prior: maps {prior.text_dim}-d text to {prior.embed_dim}-d image embeddings, the model takes "
                f"{self.embed_dim}-d" + (" (LAION's DALL·E 2 prior needs a model trained on CLIP ViT-L-14/openai "
                                         "embeddings)" if _is_dalle2(prior) else "")
            )
        if _is_dalle2(prior):
            try:
                prior.check_sampling(prior_steps, prior_sampler, prior_guidance)
            except ValueError as err:
                raise GenerationError(f"prior: {first_line(err)}") from None
            if _same_clip(query_encoder, prior.clip_model, prior.clip_pretrained):  # one ViT-L-14 for both
                from espnet2.tts_diff.dalle2_prior import Dalle2TextEncoder

                prior.use_text_encoder(Dalle2TextEncoder(query_encoder))
        self.prior_steps = prior_steps
        self.prior_sampler = prior_sampler
        self.prior_guidance = prior_guidance
        self.clip_x0 = clip_x0
        self.source: Optional[str] = None
        self.griffin_lim = None
        if model.feats_extract is not None:
            self.hop = int(model.feats_extract.get_parameters()["n_shift"])
        else:
            self.hop = int(getattr(tts.vocoder, "upsample_factor", 0))
        if tts.vocoder is None:
            if model.feats_extract is None or model.normalize is None:
                raise GenerationError("model: no embedded vocoder, and no fbank/normalize to run Griffin-Lim from")
            self.griffin_lim = GriffinLim(model.feats_extract, griffin_lim_iters)
            warnings.warn(
                f"the model embeds no vocoder: waveforms come from Griffin-Lim ({griffin_lim_iters} iterations) of "
                "the de-normalised mel, at low quality; embed a trained HiFi-GAN with "
                "python -m espnet2.tts_diff.bin.embed_vocoder",
                GenerationWarning,
                stacklevel=2,
            )

    # --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: PathLike,
        clip_model: Optional[str] = None,
        clip_pretrained: Optional[str] = None,
        prior: Union[None, PathLike, torch.nn.Module] = None,
        device: str = "auto",
        query_encoder: Optional[object] = None,
        cache_dir: Optional[PathLike] = None,
        prior_clip_pretrained: Optional[str] = None,
        **kwargs,
    ) -> "Generator":
        """Load a trained generator with its CLIP model and, when found or given, its diffusion prior.

        Args:
            model: Packed zip/tar, experiment directory (``config.yaml`` + ``valid.loss.best.pth``/``model.pth``/
                ...), a weights file with ``config.yaml`` beside it, or an ``espnet_model_zoo`` tag.
            clip_model: open_clip model name (``ViT-B-32``, ``clipsep-tiny``) or JSON config; default: the CLIP
                found beside the model (see the module docstring), else ViT-B-32 for a 512-d model.
            clip_pretrained: open_clip tag or local weights file (``openai`` for ViT-B-32; ``none``: random
                weights, tests only).
            prior: A prior file (``train_prior``'s state dict, its ``.yaml`` beside it; or LAION's DALL·E 2 prior,
                ``latest.pth`` with its ``prior_config.json``) or module; default: the ``train_prior`` one found
                beside the model (PD then fails with a clear error when there is none).
            device: ``auto``, ``cpu``, ``cuda``.
            query_encoder: A ready ``CLIPQueryEncoder`` (overrides ``clip_model``/``clip_pretrained``).
            cache_dir: ``espnet_model_zoo`` cache for packs and tags (its default when None).
            prior_clip_pretrained: Weights of a LAION prior's CLIP ViT-L-14 (an open_clip tag or a local file;
                default: its config's, ``openai``).
            **kwargs: :class:`Generator` options (``prior_steps``, ``griffin_lim_iters``, ...).

        Returns:
            The :class:`Generator`.

        Raises:
            GenerationError: One line naming the file and the problem.
        """
        from espnet2.enh.clipsep.files.model_files import resolve_model

        with reraise_as(GenerationError):
            files = resolve_model(model, cache_dir)
        if files.train_config is None:
            raise GenerationError(f"{model}: no config.yaml beside the weights")
        net, _ = build_model(files.train_config, files.model_file)
        dim = int(net.tts.spk_embed_dim)
        search = tuple(files.search_dirs)
        if query_encoder is None:
            query_encoder = _clip_encoder(files, dim, clip_model, clip_pretrained, _device(device))
        if prior is None:
            found = find_prior(search, files.pack_root)
            if found is not None:
                logging.info("diffusion prior of this model: %s", found)
                prior = found
        if prior is not None and not isinstance(prior, torch.nn.Module):
            prior = load_prior_file(Path(prior), clip_pretrained=prior_clip_pretrained)
        gen = cls(net, query_encoder=query_encoder, prior=prior, device=device, **kwargs)
        gen.source = str(model)
        return gen

    # --------------------------------------------------------------------------------------------
    def encode(
        self,
        text: Union[None, str, Sequence[str]] = None,
        image: ImageArg = None,
        embedding: Optional[Union[torch.Tensor, np.ndarray]] = None,
        mode: Optional[str] = None,
    ) -> List[Condition]:
        """Queries -> conditions, in the order texts, images, embeddings.

        Args:
            text: Text queries (a string or a list); each is CLIP's mean over the prompt templates.
            image: One or a list of image queries (PIL images, pictures, videos, frames directories).
            embedding: Precomputed CLIP image embeddings ``(D,)`` or ``(N, D)`` (used as IQ conditions).
            mode: For texts ``zs`` (default) or ``pd``; ``iq`` asks for image queries only.

        Returns:
            One :class:`Condition` per query.
        """
        from PIL import Image

        from espnet2.enh.clipsep.files.writing import slug

        if mode is not None and mode not in MODES:
            raise GenerationError(f"mode: choose from {', '.join(MODES)}, got {mode!r}")
        texts = [text] if isinstance(text, str) else list(text or [])
        if image is None:
            images = []
        elif isinstance(image, (str, os.PathLike, Image.Image)):
            images = [image]
        else:
            images = list(image)
        embs = [] if embedding is None else list(torch.as_tensor(np.asarray(embedding), dtype=torch.float32).reshape(-1, self.embed_dim))
        if not (texts or images or embs):
            raise GenerationError("no query: give a text, an image or an embedding")
        for i, q in enumerate(texts, 1):
            if not isinstance(q, str) or not q.strip():
                raise GenerationError(f"text {i}: empty text query")
        if mode == "iq" and texts:
            raise GenerationError("mode iq: takes image queries, not text (use mode zs or pd for text)")
        if mode in ("zs", "pd") and not texts:
            raise GenerationError(f"mode {mode}: needs a text query")
        text_mode = mode if mode in ("zs", "pd") else "zs"
        if texts and text_mode == "pd" and self.prior is None:
            raise GenerationError(
                "mode pd: needs the diffusion prior (python -m espnet2.tts_diff.bin.train_prior); none was found "
                "beside the model: pass --prior FILE (prior=)"
            )
        if (texts or images) and self.query_encoder is None:
            raise GenerationError("text and image queries need the model's CLIP (pass clip_model/clip_pretrained)")
        out: List[Condition] = []
        if texts:
            for q, e in zip(texts, self._clip(lambda enc: enc.encode_text([q.strip() for q in texts]))):
                out.append(Condition(slug(q), text_mode, e, text=q.strip()))
        for img in images:
            name, frames = query_frames(img)
            out.append(Condition(name, "iq", self._clip(lambda enc: enc.encode_images([frames]))[0]))
        for i, e in enumerate(embs, 1):
            if not torch.isfinite(e).all() or not float(e.abs().sum()):
                raise GenerationError(f"embedding {i}: expected {self.embed_dim} finite values, not all zero")
            out.append(Condition(f"embedding{i}", "iq", e))
        return out

    def _clip(self, fn):
        try:
            return fn(self.query_encoder)
        except RuntimeError as err:  # CLIP weights not available offline: query.py's message says what to do
            raise GenerationError(first_line(err)) from None
        except (ValueError, FileNotFoundError) as err:
            raise GenerationError(first_line(err)) from None

    # --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def condition_for(self, cond: Condition, seed: int) -> torch.Tensor:
        """The generator's conditioning vector ``(D,)`` for one sample: the prior's draw for ``pd``."""
        emb = cond.embedding.to(self.device)
        if cond.mode != "pd":
            return emb
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        options = dict(steps=self.prior_steps, sampler=self.prior_sampler, guidance=self.prior_guidance, generator=gen)
        if _is_dalle2(self.prior):  # LAION's prior encodes the query text with its own CLIP
            if cond.text is None:
                raise GenerationError(f"{cond.name}: LAION's DALL·E 2 prior needs the query text, not only an embedding")
            try:
                image = self.prior.sample_texts([cond.text], **options)
            except (RuntimeError, ValueError, FileNotFoundError) as err:  # e.g. its CLIP's weights not available
                raise GenerationError(
                    f"DALL·E 2 prior: {first_line(err).replace('--clip_pretrained', '--prior_clip_pretrained')}"
                ) from None
        else:
            image = self.prior.sample(emb[None], **options)
        return image[0] * self.prior.image_norm

    @torch.no_grad()
    def sample(
        self,
        cond: Condition,
        seed: int = 0,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        sampler: Optional[str] = None,
        num_frames: Optional[int] = None,
    ) -> Dict[str, Union[np.ndarray, torch.Tensor]]:
        """One sample (:meth:`sample_batch` of one condition).

        Args:
            cond: A condition from :meth:`encode`.
            seed: Seed of this sample (prior and mel sampler each get a ``torch.Generator`` seeded with it).
            steps: Sampling steps (default: the model config's).
            guidance: Classifier-free guidance weight w (default: the config's; 0: none).
            sampler: ``ddpm``, ``ddim`` or ``dpmpp`` (default: the config's).
            num_frames: Mel frames to generate (default: the config's ``inference_frames``).

        Returns:
            ``wav`` float32 ``(num_frames * hop,)``; ``feat_gen`` normalised mel ``(num_frames, n_mels)``;
            ``mel`` the same de-normalised to the feature extractor's log-mel (what the vocoder hears);
            ``spembs`` the conditioning vector ``(D,)``.
        """
        return self.sample_batch([cond], [seed], steps, guidance, sampler, num_frames)[0]

    @torch.no_grad()
    def sample_batch(
        self,
        conds: Sequence[Condition],
        seeds: Sequence[int],
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        sampler: Optional[str] = None,
        num_frames: Optional[int] = None,
    ) -> List[Dict[str, Union[np.ndarray, torch.Tensor]]]:
        """Samples of several conditions at once: the mel sampler makes one network call per step for them all.

        Sample ``i`` is :meth:`sample` of ``conds[i]`` with seed ``seeds[i]`` (each seeds its own generators),
        up to the float rounding of batched convolutions; the vocoder runs per sample.

        Args:
            conds: Conditions from :meth:`encode`.
            seeds: One seed per condition.
            steps, guidance, sampler, num_frames: As in :meth:`sample`.

        Returns:
            One dict per condition, as :meth:`sample` returns.
        """
        from espnet2.tts_diff.samplers import SAMPLERS

        if len(conds) != len(seeds) or not conds:
            raise GenerationError(f"sample_batch: {len(conds)} conditions and {len(seeds)} seeds (need as many, >= 1)")
        if sampler is not None and sampler not in SAMPLERS:
            raise GenerationError(f"sampler: choose from {', '.join(sorted(SAMPLERS))}, got {sampler!r}")
        if steps is not None and steps < 1:
            raise GenerationError(f"steps: must be >= 1, got {steps}")
        num_frames = self.tts.inference_frames if num_frames is None else int(num_frames)
        if num_frames < 1:
            raise GenerationError(f"num_frames: must be >= 1, got {num_frames}")
        spembs = torch.stack([self.condition_for(c, s) for c, s in zip(conds, seeds)])
        feats = self.tts.sample(
            spembs, seeds=[int(s) for s in seeds], steps=steps, guidance=guidance, sampler=sampler,
            num_frames=num_frames, clip_x0=self.clip_x0,
        )  # fmt: skip
        mels = feats
        if self.model.normalize is not None:  # GlobalMVN.inverse works in place
            lengths = torch.full((len(feats),), num_frames, dtype=torch.long, device=feats.device)
            mels, _ = self.model.normalize.inverse(feats.clone(), lengths)
        length = num_frames * self.hop
        outs = []
        for feat, mel, emb in zip(feats, mels, spembs):
            if self.griffin_lim is None:
                wav = self.tts.vocoder.inference(feat).view(-1).float().cpu().numpy()[:length]
                wav = np.pad(wav, (0, length - len(wav))).astype(np.float32)
            else:
                wav = self.griffin_lim(mel, length)
            outs.append(dict(wav=wav, feat_gen=feat.cpu(), mel=mel.float().cpu(), spembs=emb.cpu()))
        return outs

    def iterate(
        self, conds: Sequence[Condition], num: int = 1, seed: int = 0, batch_size: int = 1, **options
    ) -> Iterator[Tuple[int, int, np.ndarray]]:
        """``(i, k, waveform)`` for condition ``i`` and ``k < num``, sample ``k`` drawn with seed ``seed + k``.

        Samples are drawn ``batch_size`` at a time (:meth:`sample_batch`), in the order they are yielded.
        """
        if num < 1:
            raise GenerationError(f"num: must be >= 1, got {num}")
        if batch_size < 1:
            raise GenerationError(f"batch_size: must be >= 1, got {batch_size}")
        todo = [(i, k) for i in range(len(conds)) for k in range(num)]
        for n in range(0, len(todo), batch_size):
            part = todo[n : n + batch_size]
            outs = self.sample_batch([conds[i] for i, _ in part], [seed + k for _, k in part], **options)
            for (i, k), out in zip(part, outs):
                yield i, k, out["wav"]

    def __call__(
        self,
        text: Union[None, str, Sequence[str]] = None,
        image: ImageArg = None,
        embedding: Optional[Union[torch.Tensor, np.ndarray]] = None,
        mode: Optional[str] = None,
        steps: Optional[int] = 25,
        guidance: Optional[float] = 1.5,
        seed: int = 0,
        sampler: Optional[str] = "dpmpp",
        num: int = 1,
        num_frames: Optional[int] = None,
        batch_size: int = 8,
    ) -> List[np.ndarray]:
        """Generate ``num`` waveforms per query.

        Args:
            text: Text queries (see :meth:`encode`).
            image: Image queries (pictures, videos, frames directories, PIL images).
            embedding: CLIP image embeddings ``(D,)`` or ``(N, D)``.
            mode: ``zs`` (default for text) or ``pd`` for text; ``iq`` for images.
            steps: Sampling steps (None: the config's).
            guidance: Guidance weight w (None: the config's).
            seed: Sample ``k`` of each query uses seed ``seed + k``.
            sampler: ``ddpm``, ``ddim`` or ``dpmpp`` (None: the config's).
            num: Samples per query.
            num_frames: Mel frames (None: the config's ``inference_frames``); each waveform has ``num_frames * hop``
                samples.
            batch_size: Samples generated at once (the same samples, up to float rounding, whatever its value).

        Returns:
            Waveforms float32 ``(num_frames * hop,)`` at :attr:`fs`, query-major (query 0's ``num`` samples first).
        """
        conds = self.encode(text, image, embedding, mode)
        options = dict(steps=steps, guidance=guidance, sampler=sampler, num_frames=num_frames)
        return [wav for _, _, wav in self.iterate(conds, num=num, seed=seed, batch_size=batch_size, **options)]


def _same_clip(encoder: Optional[object], model_name: str, pretrained: Optional[str]) -> bool:
    """Whether a query encoder is CLIP ``model_name`` with weights ``pretrained`` (a tag, or the same file)."""
    if encoder is None or getattr(encoder, "model_name", None) != model_name:
        return False
    mine = getattr(encoder, "pretrained", None)
    if mine == pretrained:
        return True
    return mine is not None and pretrained is not None and Path(mine).is_file() and Path(mine).resolve() == Path(pretrained).resolve()


def _is_dalle2(prior: Optional[torch.nn.Module]) -> bool:
    from espnet2.tts_diff.dalle2_prior import Dalle2Prior

    return isinstance(prior, Dalle2Prior)


def load_prior_file(path: PathLike, device: str = "cpu", clip_pretrained: Optional[str] = None) -> torch.nn.Module:
    """A prior file, in eval mode: ``train_prior``'s (a ``.yaml`` beside it), else LAION's DALL·E 2 prior.

    Args:
        path: ``train_prior``'s state dict, or LAION's ``latest.pth``/``best.pth`` (``prior_config.json`` beside it).
        device: Torch device.
        clip_pretrained: For LAION's prior: its CLIP ViT-L-14 weights (open_clip tag or local file; default
            ``openai``).

    Raises:
        GenerationError: One line naming the file and the problem.
    """
    from espnet2.tts_diff.dalle2_prior import load_dalle2_prior
    from espnet2.tts_diff.prior import load_prior

    path = Path(path)
    ours = path.with_suffix(".yaml").is_file()
    try:
        return load_prior(path, device) if ours else load_dalle2_prior(path, device, clip_pretrained=clip_pretrained)
    except (FileNotFoundError, ValueError) as err:
        hint = "" if ours or not path.is_file() else f" (a prior of train_prior needs its {path.with_suffix('.yaml').name} beside it)"
        raise GenerationError(first_line(err) + hint) from None
    except Exception as err:
        raise GenerationError(f"{path}: cannot load as a diffusion prior ({type(err).__name__}: {first_line(err)})") from None


def _clip_encoder(files, dim: int, clip_model: Optional[str], clip_pretrained: Optional[str], device: torch.device):
    """The CLIP of a model: explicit arguments, else the recipe's weights beside it, else ViT-B-32/openai (512-d)."""
    from espnet2.enh.clipsep.clip.resolve import clip_for_model

    with reraise_as(GenerationError):
        return clip_for_model(files, dim, clip_model, clip_pretrained, str(device))
