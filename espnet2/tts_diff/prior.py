"""Diffusion prior (CLIPSonic-PD): CLIP text embedding -> CLIP image embedding.

CLIPSonic's generator is conditioned on CLIP *image* embeddings; at test time a text query can be used directly
(ZS, zero-shot, suffering CLIP's text/image modality gap) or first mapped by this prior to a plausible image
embedding (PD). As in DALL-E 2, the prior is a Gaussian diffusion model over the (L2-normalised) image embedding,
conditioned on the text embedding, whose network predicts the clean embedding ``x0``; here a small transformer
encoder reads four tokens ``[text, time, noisy image, query]`` and the query token's output is the prediction.
Condition dropout (the text replaced by a learned null embedding) enables classifier-free guidance. To share the
samplers of the audio diffusion model, :meth:`DiffusionPrior.eps_model` wraps the ``x0`` prediction as an
``eps`` prediction, ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``.

Embeddings are handled as directions: image and text inputs are L2-normalised and scaled by ``sqrt(D)`` (unit
variance per dimension), and :meth:`DiffusionPrior.sample` returns unit vectors. ``image_norm`` holds the mean
norm of the raw training image embeddings, so ``prior.sample(...) * prior.image_norm`` is on the raw scale a
generator trained on unnormalised CLIP image embeddings expects.

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023. A. Ramesh et al., "Hierarchical Text-Conditional Image Generation
    with CLIP Latents", arXiv:2204.06125, 2022 (the diffusion prior).
"""

import math
import os
import pickle
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet2.tts_diff.diffusion import cosine_alphas_cumprod, q_sample
from espnet2.tts_diff.samplers import SAMPLERS, cfg_model_fn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer timesteps ``(B,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class DiffusionPrior(torch.nn.Module):
    """Transformer denoiser over a CLIP image embedding, conditioned on a CLIP text embedding.

    Args:
        embed_dim: Dimension D of the CLIP image embedding (512 for ViT-B/32).
        text_dim: Dimension of the CLIP text embedding (``embed_dim`` when None).
        d_model: Transformer width.
        num_layers: Transformer encoder layers.
        num_heads: Attention heads.
        num_steps: Diffusion steps of the cosine schedule.
        cond_drop_prob: Probability of replacing the text by the null embedding in training (for CFG).
        predict: ``"x0"`` (DALL-E 2) or ``"eps"``: what the network predicts.
        renorm_x0: At sampling, project the predicted ``x0`` onto the sphere of radius ``sqrt(D)`` (where
            training targets lie) before turning it into ``eps``.
    """

    @typechecked
    def __init__(
        self,
        embed_dim: int = 512,
        text_dim: Optional[int] = None,
        d_model: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        num_steps: int = 1000,
        cond_drop_prob: float = 0.1,
        predict: str = "x0",
        renorm_x0: bool = True,
    ):
        super().__init__()
        if predict not in ("x0", "eps"):
            raise ValueError(f"predict must be 'x0' or 'eps', got {predict!r}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must lie in [0, 1), got {cond_drop_prob}")
        if min(embed_dim, d_model, num_layers, num_heads, num_steps) < 1 or d_model % num_heads:
            raise ValueError("sizes must be positive and d_model divisible by num_heads")
        self.embed_dim = embed_dim
        self.text_dim = embed_dim if text_dim is None else text_dim
        self.d_model = d_model
        self.num_steps = num_steps
        self.cond_drop_prob = cond_drop_prob
        self.predict = predict
        self.renorm_x0 = renorm_x0
        self.text_in = torch.nn.Linear(self.text_dim, d_model)
        self.x_in = torch.nn.Linear(embed_dim, d_model)
        self.time_in = torch.nn.Sequential(
            torch.nn.Linear(d_model, d_model), torch.nn.SiLU(), torch.nn.Linear(d_model, d_model)
        )
        self.query = torch.nn.Parameter(torch.zeros(d_model))
        self.pos = torch.nn.Parameter(torch.randn(4, d_model) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward=4 * d_model, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = torch.nn.Sequential(torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, embed_dim))
        self.null_text = torch.nn.Parameter(torch.randn(self.text_dim) / math.sqrt(self.text_dim))
        self.register_buffer("image_norm", torch.ones(()))
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(num_steps).float(), persistent=False)

    def _scaled(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb, dim=-1) * math.sqrt(emb.size(-1))

    def null_cond(self, batch: int) -> torch.Tensor:
        """The learned null text embedding ``(batch, text_dim)`` (unconditional branch of CFG)."""
        return self.null_text.expand(batch, -1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Raw network output.

        Args:
            x_t: Noisy scaled image embeddings ``(B, D)``.
            t: Timesteps ``(B,)`` (long, in ``[0, num_steps)``).
            text_emb: Text embeddings ``(B, text_dim)`` (any scale; normalised here).

        Returns:
            The prediction of ``x0`` or ``eps`` (per ``predict``), ``(B, D)``.
        """
        b = x_t.size(0)
        tokens = torch.stack(
            [
                self.text_in(self._scaled(text_emb)),
                self.time_in(timestep_embedding(t, self.d_model)),
                self.x_in(x_t),
                self.query.expand(b, -1),
            ],
            dim=1,
        )  # (B, 4, d_model)
        h = self.encoder(tokens + self.pos)
        return self.out(h[:, -1])

    def eps_model(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``eps`` prediction ``(B, D)`` whatever the network predicts: the ``model(x, t, cond)`` of the samplers."""
        out = self(x_t, t, text_emb)
        if self.predict == "eps":
            return out
        a = self.alphas_cumprod[t].to(x_t.dtype)[:, None]
        x0 = F.normalize(out, dim=-1) * math.sqrt(self.embed_dim) if self.renorm_x0 else out
        return (x_t - a.sqrt() * x0) / (1.0 - a).sqrt()

    def loss(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Diffusion training loss (mean squared error of the ``x0`` or ``eps`` prediction).

        Args:
            image_emb: CLIP image embeddings ``(B, D)`` (any scale; normalised here).
            text_emb: The paired CLIP text embeddings ``(B, text_dim)``.
            generator: Source of the timesteps, noise and condition dropout (global RNG when None).

        Returns:
            Scalar loss.
        """
        b, dev = image_emb.size(0), image_emb.device
        x0 = self._scaled(image_emb)
        t = torch.randint(0, self.num_steps, (b,), generator=generator, device=dev)
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_t = q_sample(x0, t, self.alphas_cumprod, noise)
        drop = torch.rand(b, generator=generator, device=dev) < self.cond_drop_prob
        cond = torch.where(drop[:, None], self.null_cond(b).to(text_emb.dtype), text_emb)
        pred = self(x_t, t, cond)
        return F.mse_loss(pred, x0 if self.predict == "x0" else noise)

    def model_fn(self, text_emb: torch.Tensor, guidance: float = 0.0) -> Callable:
        """``model_fn(x, t) -> eps`` for the samplers.

        Args:
            text_emb: Text embeddings ``(B, text_dim)``.
            guidance: Classifier-free guidance weight w of
                :func:`~espnet2.tts_diff.samplers.cfg_model_fn`: ``(1 + w) eps(text) - w eps(null)``; 0: none.
        """
        return cfg_model_fn(self.eps_model, text_emb, self.null_text, guidance)

    @torch.no_grad()
    def sample(
        self,
        text_emb: torch.Tensor,
        steps: int = 64,
        sampler: str = "ddim",
        guidance: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Draw image embeddings for text embeddings.

        Args:
            text_emb: CLIP text embeddings ``(B, text_dim)``.
            steps: Sampling steps (at most ``num_steps``).
            sampler: Key of ``espnet2.tts_diff.samplers.SAMPLERS`` (``ddpm``, ``ddim``, ``dpmpp``).
            guidance: Classifier-free guidance weight w, ``(1 + w) eps(text) - w eps(null)`` (0: none).
            generator: Source of the initial noise (and of DDPM's noise); same generator state, same output.

        Returns:
            L2-normalised image embeddings ``(B, D)``.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r} (choose from {', '.join(sorted(SAMPLERS))})")
        if not 1 <= steps <= self.num_steps:
            raise ValueError(f"steps must lie in [1, {self.num_steps}], got {steps}")
        if text_emb.dim() != 2 or text_emb.size(1) != self.text_dim:
            raise ValueError(f"text_emb must have shape (B, {self.text_dim}), got {tuple(text_emb.shape)}")
        was_training = self.training
        self.eval()
        dev = self.alphas_cumprod.device
        text_emb = text_emb.to(dev, torch.float32)
        x_T = torch.randn(text_emb.size(0), self.embed_dim, generator=generator, device=dev)
        x = SAMPLERS[sampler](self.model_fn(text_emb, guidance), x_T, self.alphas_cumprod, steps, generator=generator)
        self.train(was_training)
        return F.normalize(x, dim=-1)


def fit_prior(
    prior: DiffusionPrior,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 0.01,
    warmup_steps: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, float]:
    """Train the prior in place on paired embeddings with AdamW (linear warm-up, cosine decay).

    ESPnet has no embedding-to-embedding task, so this is a small self-contained loop over in-memory tensors.
    Also sets ``prior.image_norm`` to the mean norm of ``image_emb``.

    Args:
        prior: The prior to train.
        image_emb: Image embeddings ``(N, D)``.
        text_emb: The paired text embeddings ``(N, text_dim)``.
        steps: Optimiser steps.
        batch_size: Pairs per step (drawn uniformly with replacement).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps.
        seed: Seed of batches, timesteps, noise and condition dropout.
        progress: Show a tqdm bar.

    Returns:
        ``{"steps", "wall_seconds", "initial_loss", "final_loss"}`` (losses: means over the first / last 10 %).
    """
    from tqdm import tqdm

    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.size(0) != text_emb.size(0):
        raise ValueError(f"need (N, D) and (N, D_text) embeddings, got {tuple(image_emb.shape)}, {tuple(text_emb.shape)}")
    if image_emb.size(1) != prior.embed_dim or text_emb.size(1) != prior.text_dim:
        raise ValueError(
            f"embedding dims {image_emb.size(1)}/{text_emb.size(1)} do not match the prior's "
            f"{prior.embed_dim}/{prior.text_dim}"
        )
    dev = prior.alphas_cumprod.device
    image_emb, text_emb = image_emb.float().to(dev), text_emb.float().to(dev)
    prior.image_norm.fill_(float(image_emb.norm(dim=1).mean()))
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=weight_decay)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(steps - warmup_steps, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    prior.train()
    losses = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="train prior", unit="step", disable=not progress, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(0, image_emb.size(0), (batch_size,), generator=gen, device=dev)
        loss = prior.loss(image_emb[idx], text_emb[idx], generator=gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    prior.eval()
    k = max(steps // 10, 1)
    return {
        "steps": steps,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "initial_loss": sum(losses[:k]) / k,
        "final_loss": sum(losses[-k:]) / k,
    }


def save_prior(prior: DiffusionPrior, conf: Dict, path: Union[str, os.PathLike], extra: Optional[Dict] = None) -> None:
    """Write ``path`` (state dict) and ``<path minus suffix>.yaml`` (``prior_conf`` + ``extra``), atomically."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(prior.state_dict(), tmp)
    conf_path = path.with_suffix(".yaml")
    tmp_conf = conf_path.with_name(conf_path.name + ".tmp")
    tmp_conf.write_text(yaml.safe_dump({"prior_conf": dict(conf), **(extra or {})}), encoding="utf-8")
    os.replace(tmp, path)
    os.replace(tmp_conf, conf_path)


def load_prior(path: Union[str, os.PathLike], device: str = "cpu") -> DiffusionPrior:
    """Load a prior written by :func:`save_prior` (conf from ``<path minus suffix>.yaml``), in eval mode."""
    import yaml

    path = Path(path)
    conf_path = path.with_suffix(".yaml")
    for p in (path, conf_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: prior file not found")
    meta = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or not isinstance(meta.get("prior_conf"), dict):
        raise ValueError(f"{conf_path}: expected a mapping with key 'prior_conf'")
    prior = DiffusionPrior(**meta["prior_conf"])
    try:
        prior.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a prior state dict matching {conf_path} ({str(err).splitlines()[0]})") from err
    return prior.to(device).eval()
