"""Contrastive fitting of an open_clip model on (image, label) pairs: the offline stand-in for web-scale CLIP.

No pretrained CLIP weights are reachable offline, so the mini recipe fits a tiny open_clip model (our
``clipsep-tiny`` config by default, random init) on labelled images before anything else uses CLIP. A caption
is drawn per image and step from the prompt templates (those of CLIPSep by default), so the text tower learns
the same prompts that :class:`~espnet2.enh.clipsep.clip.encoder.CLIPQueryEncoder` ensembles at query time. Each batch
holds at most one image per label, so the symmetric InfoNCE loss (open_clip's ``ClipLoss`` with the model's
learnable logit scale) never pushes apart an image and a caption of the same label. Images go through the
model's own train-time preprocessing (random resized crop); optimisation is AdamW with linear warm-up and a
cosine decay. Any open_clip model works the same way, e.g. fine-tuning ``ViT-B-32`` from a local checkpoint.

The fitted model is evaluated through the query path itself (template-mean text embeddings, raw image
embeddings): mean cosine of a label's text embedding with the mean image embedding of that label, the same
across different labels, and nearest-label accuracy of single images with the text embeddings as classifier.

Reference:
    A. Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch

from espnet2.enh.clipsep.clip.encoder import CLIPSEP_TEMPLATES, CLIPQueryEncoder
from espnet2.enh.clipsep.clip.image_query import check_image, load_image

__all__ = [
    "FitResult",
    "ImagePair",
    "OnePerLabelSampler",
    "evaluate",
    "fit_clip",
    "labels_of",
    "learning_rate",
    "read_pairs",
    "save_state_dict",
    "train_steps",
]


class ImagePair(NamedTuple):
    """One training example: an image file and the label words its captions are made from."""

    image: Path
    label: str


def read_pairs(path: Union[str, os.PathLike], check_images: bool = True) -> List[ImagePair]:
    """Read a pairs file: ``<image path>\\t<label words>`` per line (relative paths: from the current directory).

    Args:
        path: The TSV file.
        check_images: Verify every image header now, so a bad file fails before any training.

    Returns:
        The pairs in file order; label whitespace is normalised (``"french  horn "`` -> ``"french horn"``).

    Raises:
        FileNotFoundError: The pairs file or one of its images does not exist (one line naming it).
        ValueError: A malformed line, an unreadable image, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            image, tab, label = line.partition("\t")
            label = " ".join(label.split())
            if not tab or not image.strip() or not label:
                raise ValueError(f"{path}:{lineno}: expected '<image path><TAB><label words>', got {line[:80]!r}")
            image = Path(image.strip())
            if check_images:
                try:
                    check_image(image)
                except (FileNotFoundError, ValueError) as err:
                    raise type(err)(f"{path}:{lineno}: {err}") from err
            pairs.append(ImagePair(image, label))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def labels_of(pairs: Sequence[ImagePair], source: str = "pairs") -> List[str]:
    """Sorted distinct labels; at least 2 are needed for a contrastive loss and a cross-label score."""
    labels = sorted({p.label for p in pairs})
    if len(labels) < 2:
        raise ValueError(f"{source}: need images of at least 2 different labels, got {len(labels)} ({labels})")
    return labels


class OnePerLabelSampler:
    """Batches of distinct labels with one image each, so no two items of a batch share a label.

    Labels are drawn at random per batch; each label's images are visited in reshuffled rounds, so all of a
    label's images are used equally often.

    Args:
        pairs: Training pairs.
        batch_size: Labels per batch (at most the number of labels).
        rng: Source of randomness (seeded by the caller for reproducibility).
    """

    def __init__(self, pairs: Sequence[ImagePair], batch_size: int, rng: random.Random):
        self.by_label: Dict[str, List[ImagePair]] = {}
        for p in pairs:
            self.by_label.setdefault(p.label, []).append(p)
        self.labels = sorted(self.by_label)
        if not 2 <= batch_size <= len(self.labels):
            raise ValueError(f"batch_size must be in [2, {len(self.labels)}] (the number of labels), got {batch_size}")
        self.batch_size = batch_size
        self.rng = rng
        self._queues: Dict[str, List[ImagePair]] = {label: [] for label in self.labels}

    def _next_image(self, label: str) -> ImagePair:
        queue = self._queues[label]
        if not queue:
            queue.extend(self.by_label[label])
            self.rng.shuffle(queue)
        return queue.pop()

    def __call__(self) -> List[ImagePair]:
        return [self._next_image(label) for label in self.rng.sample(self.labels, self.batch_size)]


def learning_rate(step: int, steps: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``steps`` (step is 0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(encoder: CLIPQueryEncoder, pairs: Sequence[ImagePair]) -> Dict[str, float]:
    """Text-image agreement of a CLIP model through the query path (no augmentation).

    Args:
        encoder: The query encoder holding the model (template-mean text queries, single-image queries).
        pairs: Labelled images; at least 2 labels.

    Returns:
        ``same_label_cosine``: mean over labels of cos(text embedding, mean image embedding of the label);
        ``cross_label_cosine``: the same over all pairs of different labels; ``nearest_label_accuracy``:
        fraction of single images whose most similar text embedding is their own label's; and the counts
        ``num_images``, ``num_labels``.
    """
    labels = labels_of(pairs, "evaluation pairs")
    index = {label: i for i, label in enumerate(labels)}
    text = torch.nn.functional.normalize(encoder.encode_text(labels), dim=-1)
    images = encoder.encode_images([[p.image] for p in pairs])
    target = torch.tensor([index[p.label] for p in pairs])
    sums = torch.zeros(len(labels), images.shape[-1]).index_add_(0, target, images)
    means = torch.nn.functional.normalize(sums / torch.bincount(target, minlength=len(labels))[:, None], dim=-1)
    cos = text @ means.T
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    predicted = (torch.nn.functional.normalize(images, dim=-1) @ text.T).argmax(dim=-1)
    return {
        "same_label_cosine": cos.diagonal().mean().item(),
        "cross_label_cosine": cos[off_diagonal].mean().item(),
        "nearest_label_accuracy": (predicted == target).float().mean().item(),
        "num_images": len(pairs),
        "num_labels": len(labels),
    }


def save_state_dict(model: torch.nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Save ``model``'s plain CPU ``state_dict`` (``weights_only``-loadable) under a temporary name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


@dataclass
class FitResult:
    """What :func:`fit_clip` returns.

    Attributes:
        encoder: A query encoder holding the fitted model (frozen, eval mode), ready for ``encode_text``.
        losses: The training loss of every step.
        report: Settings, timings, losses and the evaluation metrics (JSON-serialisable).
    """

    encoder: CLIPQueryEncoder
    losses: List[float] = field(default_factory=list)
    report: Dict = field(default_factory=dict)


def fit_clip(
    pairs: Sequence[ImagePair],
    valid_pairs: Optional[Sequence[ImagePair]] = None,
    clip_model: str = "clipsep-tiny",
    init_pretrained: Optional[str] = None,
    steps: int = 800,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    warmup_steps: int = 50,
    templates: Sequence[str] = CLIPSEP_TEMPLATES,
    seed: int = 0,
    device: str = "auto",
    num_threads: int = 0,
    progress: bool = True,
) -> FitResult:
    """Fit an open_clip model contrastively on labelled images with template captions.

    Deterministic for a given seed on CPU; the caller's global torch RNG state is left untouched.

    Args:
        pairs: Training pairs (at least 2 labels).
        valid_pairs: Held-out pairs for the report (the training pairs when None).
        clip_model: open_clip model name (``clipsep-tiny``, ``ViT-B-32``, ...) or JSON model config.
        init_pretrained: Starting weights: open_clip tag or local checkpoint; None for random init.
        steps: Optimiser steps.
        batch_size: Images per step, one per label; capped at the number of labels.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay of matrices (not of biases, norms and the logit scale).
        warmup_steps: Linear warm-up steps (capped at ``steps``).
        templates: Caption templates with one ``{}``; each caption uses a random one.
        seed: Seed of initialisation, batch sampling, captions and augmentation.
        device: ``cpu``, ``cuda[:n]`` or ``auto``.
        num_threads: CPU threads while fitting (restored afterwards); 0 keeps torch's setting. On cores shared
            with other jobs, 1 thread is several times faster for the tiny model than 2 contended ones.
        progress: Show a tqdm bar with the running loss.

    Returns:
        The fitted model inside a query encoder, the per-step losses and the report.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if lr <= 0 or weight_decay < 0 or warmup_steps < 0 or num_threads < 0:
        raise ValueError("lr must be > 0; weight_decay, warmup_steps and num_threads >= 0")
    labels = labels_of(pairs, "training pairs")
    eval_pairs = pairs if valid_pairs is None else valid_pairs
    labels_of(eval_pairs, "validation pairs")
    if batch_size > len(labels):
        logging.info("batch_size %d capped at the number of labels, %d", batch_size, len(labels))
        batch_size = len(labels)
    warmup_steps = min(warmup_steps, steps)
    encoder = CLIPQueryEncoder(clip_model, pretrained=init_pretrained, device=device, templates=templates)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = encoder.model.train().requires_grad_(True)  # random init drawn under the seed
            logging.info(
                "fitting CLIP %s (%s, %.2f M parameters) on %d pairs of %d labels: %d steps of %d on %s",
                encoder.model_name, init_pretrained or "random init",
                sum(p.numel() for p in model.parameters()) / 1e6, len(pairs), len(labels), steps, batch_size,
                encoder.device,
            )
            start = time.perf_counter()
            losses = train_steps(
                encoder, pairs, steps, batch_size, lr, weight_decay, warmup_steps, random.Random(seed), progress
            )
            wall = time.perf_counter() - start
        model.eval().requires_grad_(False)
        start = time.perf_counter()
        metrics = evaluate(encoder, eval_pairs)
    finally:
        torch.set_num_threads(threads)
    tail = losses[-max(1, steps // 10) :]
    report = {
        "clip_model": encoder.model_name,
        "init_pretrained": init_pretrained,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_pairs": len(pairs),
        "num_labels": len(labels),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "templates": list(encoder.templates),
        "seed": seed,
        "device": str(encoder.device),
        "num_threads": num_threads or threads,
        "wall_seconds": round(wall, 2),
        "initial_loss": losses[0],
        "final_loss": sum(tail) / len(tail),  # mean over the last 10 % of steps
        "chance_loss": math.log(batch_size),
        "logit_scale": model.logit_scale.exp().item(),
        "evaluated_on": "train" if valid_pairs is None else "valid",
        **metrics,
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    return FitResult(encoder=encoder, losses=losses, report=report)


def train_steps(
    encoder: CLIPQueryEncoder,
    pairs: Sequence[ImagePair],
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    rng: random.Random,
    progress: bool = True,
) -> List[float]:
    """The optimisation loop of :func:`fit_clip` on ``encoder.model`` (in train mode, with gradients).

    Batch sampling and captions draw from ``rng``; augmentation from torch's global RNG.

    Returns:
        The loss of every step.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from tqdm import tqdm

    model, device = encoder.model, encoder.device
    train_transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=True)
    tokenizer = open_clip.get_tokenizer(encoder.model_name)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=device.type in ("cpu", "cuda"),  # ~10x faster than the per-tensor loop for a 3 M-row embedding
    )
    criterion = open_clip.ClipLoss()
    sampler = OnePerLabelSampler(pairs, batch_size, rng)
    losses: List[float] = []
    bar = tqdm(range(steps), desc="fit CLIP", unit="step", disable=not progress)
    for step in bar:
        batch = sampler()
        images = torch.stack([train_transform(load_image(p.image)) for p in batch]).to(device)
        tokens = tokenizer([rng.choice(encoder.templates).format(p.label) for p in batch]).to(device)
        loss = criterion(
            model.encode_image(images, normalize=True),
            model.encode_text(tokens, normalize=True),
            model.logit_scale.exp(),
            getattr(model, "logit_bias", None),
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as in CLIP: temperature never below 0.01
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    bar.close()
    return losses
