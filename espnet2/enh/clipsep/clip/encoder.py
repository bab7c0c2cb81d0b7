"""CLIP query encoder shared by separation (CLIPSep) and synthesis (CLIPSonic).

A frozen open_clip model turns text queries and video frames into query vectors. Embeddings are the raw
(unnormalised) CLIP outputs, as in CLIPSep: a text query is the mean over prompt templates, an image query
the mean over frames (3 frames at 1 fps around the clip centre). The encoder is a plain object, never an
``nn.Module`` attribute that could land in a trained model's ``state_dict``, and the model is only built on
first use. Training never runs CLIP: recipes cache embeddings with ``python -m espnet2.enh.clipsep.bin.embed``.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023. A. Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021.
"""

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from typeguard import typechecked

from espnet2.enh.clipsep.clip.image_query import ImageLike, load_image
from espnet2.enh.clipsep.errors import first_line
from espnet2.enh.clipsep.prompts import template_prompts

# The 4 prompt templates of the CLIPSep paper (its evaluation script used 5 with one duplicated).
CLIPSEP_TEMPLATES = (
    "a photo of {}",
    "a photo of the small {}",
    "a low resolution photo of a {}",
    "a photo of many {}",
)
CLIP_CONFIG_DIR = Path(__file__).with_name("configs")

__all__ = ["CLIPSEP_TEMPLATES", "CLIP_CONFIG_DIR", "CLIPQueryEncoder", "as_numpy", "register_configs"]


def register_configs() -> None:
    """Make our open_clip model configs (``clipsep-tiny``) known to open_clip by name (idempotent)."""
    import open_clip

    if "clipsep-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CLIP_CONFIG_DIR)


class CLIPQueryEncoder:
    """Encode text queries and video frames with a frozen open_clip model.

    Args:
        model_name: open_clip model name (``ViT-B-32`` as in CLIPSep), our tiny ``clipsep-tiny``, or a path
            to an open_clip JSON model config.
        pretrained: open_clip pretrained tag (e.g. ``openai``), a local checkpoint file (``.pt``, ``.bin``,
            ``.safetensors``, loaded with ``weights_only``), or None for random weights (tests only).
        device: ``cpu``, ``cuda[:n]`` or ``auto`` (CUDA when available).
        batch_size: Prompts or frames encoded per forward pass.
        templates: Prompt templates with one ``{}``; a text query is the mean over them.
        cache_dir: Where open_clip keeps downloaded weights (its default when None).
    """

    @typechecked
    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: Optional[str] = "openai",
        device: str = "auto",
        batch_size: int = 64,
        templates: Sequence[str] = CLIPSEP_TEMPLATES,
        cache_dir: Optional[str] = None,
    ):
        import open_clip

        register_configs()
        if model_name.endswith(".json"):
            if not Path(model_name).is_file():
                raise FileNotFoundError(f"{model_name}: CLIP model config not found")
            open_clip.add_model_config(model_name)
            model_name = Path(model_name).stem
        if open_clip.get_model_config(model_name) is None:
            known = ", ".join(m for m in open_clip.list_models() if m.startswith(("ViT-B", "clipsep")))
            raise ValueError(f"unknown CLIP model {model_name!r} (known include: {known})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not templates:
            raise ValueError("at least one prompt template is needed")
        for t in templates:
            if t.count("{}") != 1:
                raise ValueError(f"prompt template must contain exactly one '{{}}': {t!r}")
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.batch_size = batch_size
        self.templates = tuple(templates)
        self.cache_dir = cache_dir
        self._check_pretrained()
        self._model = None
        self._preprocess = None
        self._tokenizer = None

    # ----------------------------------------------------------------------------------------------
    def _check_pretrained(self) -> None:
        import open_clip

        p = self.pretrained
        if p is None or Path(p).is_file():
            return
        if p in open_clip.list_pretrained_tags_by_model(self.model_name):
            return
        looks_like_path = os.sep in p or Path(p).suffix in (".pt", ".pth", ".bin", ".safetensors")
        if looks_like_path:
            raise FileNotFoundError(f"{p}: CLIP checkpoint not found (model {self.model_name})")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(self.model_name)[:6]) or "none"
        raise ValueError(
            f"{p!r} is neither a file nor a pretrained tag of CLIP model {self.model_name} (tags: {tags})"
        )

    def _missing_weights_message(self, err: Exception) -> str:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained) or {}
        hub = cfg.get("hf_hub", "")
        repo, filename = os.path.split(hub) if hub else ("", "")
        where = []
        if repo:
            where.append(f"Hugging Face repo {repo}, file {filename or 'open_clip_model.safetensors'}")
        if cfg.get("url"):
            where.append(cfg["url"])
        return (
            f"CLIP weights {self.model_name}/{self.pretrained} are not available offline "
            f"({type(err).__name__}): download {' or '.join(where) or 'the checkpoint'} and pass its path "
            f"as --clip_pretrained /path/to/file (clip_pretrained: in YAML)"
        )

    @property
    def model(self) -> torch.nn.Module:
        """The frozen open_clip model (built on first access)."""
        if self._model is None:
            self._build()
        return self._model

    def _build(self) -> None:
        import open_clip

        kwargs = dict(device=self.device, cache_dir=self.cache_dir, weights_only=True)
        # open_clip logs its own error before raising; ours below says what to do, in one line.
        logging.disable(logging.ERROR)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=self.pretrained, **kwargs
            )
        except Exception as err:
            if self.pretrained is not None and Path(self.pretrained).is_file():
                raise ValueError(
                    f"{self.pretrained}: cannot load as CLIP {self.model_name} checkpoint "
                    f"({type(err).__name__}: {first_line(err, 200)})"
                ) from err
            if self.pretrained is not None:
                raise RuntimeError(self._missing_weights_message(err)) from err
            raise
        finally:
            logging.disable(logging.NOTSET)
        model.eval().requires_grad_(False)
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model_name)
        logging.info(
            "CLIP %s (%s) on %s, embed dim %d", self.model_name, self.pretrained, self.device, self.embed_dim
        )

    @property
    def tokenizer(self):
        """The open_clip tokenizer of the model (built on first access, without building the model)."""
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._tokenizer

    @property
    def context_length(self) -> int:
        """Tokens CLIP reads per prompt; the tokenizer truncates longer prompts (77 for OpenAI CLIP)."""
        return int(getattr(self.tokenizer, "context_length", None) or 77)

    def num_tokens(self, text: str) -> Optional[int]:
        """Tokens of ``text`` with the start and end tokens, before truncation (None if the tokenizer can't say)."""
        encode = getattr(self.tokenizer, "encode", None)
        return len(encode(text)) + 2 if callable(encode) else None

    @property
    def embed_dim(self) -> int:
        """Dimension of the query vectors."""
        import open_clip

        return int(open_clip.get_model_config(self.model_name)["embed_dim"])

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, queries: Sequence[str], templates: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Template-ensembled text embeddings.

        Args:
            queries: N query strings, e.g. ``["dog barking", "violin"]``.
            templates: Prompt templates (the encoder's when None).

        Returns:
            Tensor ``(N, D)`` (float32, CPU): the mean over templates of the raw CLIP text embeddings.
        """
        templates = self.templates if templates is None else tuple(templates)
        prompts = template_prompts(queries, templates)
        if not queries:
            return torch.zeros(0, self.embed_dim)
        model, tokenizer = self.model, self._tokenizer
        outs = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = tokenizer(prompts[i : i + self.batch_size]).to(self.device)
            outs.append(model.encode_text(tokens, normalize=False).float().cpu())
        emb = torch.cat(outs).view(len(queries), len(templates), -1)
        return emb.mean(dim=1)

    @torch.no_grad()
    def encode_images(self, clips: Sequence[Sequence[ImageLike]]) -> torch.Tensor:
        """Frame-averaged image embeddings.

        Args:
            clips: N clips, each a sequence of frames (paths or PIL images), e.g. the 3 frames around a
                video's centre from :func:`center_frames`.

        Returns:
            Tensor ``(N, D)`` (float32, CPU): per clip, the mean of its frames' raw CLIP image embeddings.
        """
        for i, frames in enumerate(clips):
            if isinstance(frames, (str, os.PathLike)) or len(frames) == 0:
                raise ValueError(f"clip {i} has no frames (expected a sequence of images)")
        counts = [len(frames) for frames in clips]
        flat = [f for frames in clips for f in frames]
        if not flat:
            return torch.zeros(0, self.embed_dim)
        model, preprocess = self.model, self._preprocess
        outs = []
        for i in range(0, len(flat), self.batch_size):
            batch = torch.stack([preprocess(load_image(f)) for f in flat[i : i + self.batch_size]])
            outs.append(model.encode_image(batch.to(self.device), normalize=False).float().cpu())
        emb = torch.cat(outs)
        return torch.stack([chunk.mean(dim=0) for chunk in emb.split(counts)])


def as_numpy(emb: torch.Tensor) -> np.ndarray:
    """float32 numpy copy of an embedding tensor."""
    return emb.detach().cpu().numpy().astype(np.float32)
