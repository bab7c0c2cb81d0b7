"""The pretrained DALL·E 2 diffusion prior of LAION (dalle2-pytorch 1.1.0 layout), for CLIPSonic-PD.

CLIPSonic-PD maps a text query to a CLIP *image* embedding with a pretrained diffusion prior before generating
(CLIPSonic, "Inference - Pretrained Diffusion Prior (CLIPSonic-PD)": "a pretrained diffusion prior model (Ramesh et
al., 2022)"). The public prior is LAION's, trained with lucidrains' dalle2-pytorch on OpenAI CLIP ViT-L/14
embeddings (768-d; dalle2-laion's configs: ``"clip": {"make": "openai", "model": "ViT-L/14"}``) and released at::

    https://huggingface.co/laion/DALLE2-PyTorch  ->  prior/latest.pth (or best.pth) + prior/prior_config.json

This module is that network and its samplers in the released state-dict layout (keys ``net.*``, optionally
``noise_scheduler.*`` and the ``clip.*`` of the embedded OpenAI CLIP, which are ignored), re-implemented in
plain torch after dalle2-pytorch 1.1.0 (``dalle2_pytorch/dalle2_pytorch.py``: ``DiffusionPriorNetwork``,
``CausalTransformer``, ``Attention``, ``DiffusionPrior.p_sample_loop_ddpm/_ddim`` and ``sample``), the version the
LAION release runs with (LAION-AI/dalle2-laion issues #20 and #34; its single ``net.null_text_embed`` became three
parameters in 1.9.0, lucidrains/DALLE2-pytorch#282, and 1.4.3 replaced the scaled dot-product attention used here by
cosine-similarity attention). tools/requirements-dalle2.txt pins that version for the tests, which check equal
outputs for equal noise on random weights in this layout.

The network reads ``max_text_len`` per-token CLIP text encodings (padding replaced by learned tokens), the CLIP
text embedding, a learned timestep embedding, the noisy image embedding and a learned query, through a causal
transformer (pre-norm, T5 relative position bias, rotary embeddings on the first ``min(32, dim_head)`` features,
one shared key/value head, SwiGLU feed-forward) whose output at the query predicts the clean image embedding,
scaled by ``sqrt(dim)`` (Crowson's scaling). Text conditioning is what dalle2-pytorch's ``OpenAIClipAdapter``
computes: the L2-normalised CLIP text embedding and CLIP's ``ln_final`` token features up to and including the
end token, zero elsewhere; :class:`Dalle2TextEncoder` computes them with open_clip (``ViT-L-14``, ``openai``).
Sampling is the reference's: DDPM over all ``timesteps`` steps, or its DDIM (eta 1, timesteps spaced on
``linspace(0, T, steps + 2)``) for fewer; ``sample`` draws ``num_samples_per_batch`` (2, as in DALL·E 2) embeddings
per text and keeps the one closest to the text embedding. Classifier-free guidance is not available: in this
version the network computes its guidance mask but never applies it (fixed in 1.9.0 with new parameters), so the
reference gives the same output for any guidance scale; a non-zero guidance weight is refused here.

A generator used with this prior must be conditioned on the same embedding space: CLIP image embeddings of
open_clip ``ViT-L-14`` with the ``openai`` weights (768-d). Its outputs are unit vectors up to the prior's error;
CLIPSonic L2-normalises its condition, so ``image_norm`` is 1.

Reference:
    A. Ramesh et al., "Hierarchical Text-Conditional Image Generation with CLIP Latents", arXiv:2204.06125, 2022
    (the diffusion prior, predicting x0, two samples ranked by CLIP similarity). H.-W. Dong et al., "CLIPSonic:
    Text-to-Audio Synthesis with Unlabeled Videos and Pretrained Language-Vision Models", WASPAA 2023 (PD).
    lucidrains/DALLE2-pytorch 1.1.0 and LAION's prior release (the layout and the computations).
"""

import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet2.enh.clipsep.errors import first_line

PathLike = Union[str, os.PathLike]
GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]

LAION_REPO = "https://huggingface.co/laion/DALLE2-PyTorch"
LAION_FILES = "prior/latest.pth (or prior/best.pth) and prior/prior_config.json"
CONFIG_NAME = "prior_config.json"
EOS_ID = 49407  # the end token of CLIP's BPE vocabulary (OpenAIClipAdapter.eos_id)
PB_RELAX_ALPHA = 128.0  # attention logits are shifted and rescaled by it (CogView's overflow trick, same softmax)
REL_POS_BUCKETS, REL_POS_MAX_DISTANCE = 32, 128  # RelPosBias defaults
NET_KEYS = ("dim", "depth", "dim_head", "heads", "ff_mult", "norm_in", "norm_out", "final_proj", "normformer",
            "rotary_emb", "num_timesteps", "num_time_embeds", "num_image_embeds", "num_text_embeds", "max_text_len")
PRIOR_KEYS = ("timesteps", "beta_schedule", "predict_x_start", "condition_on_text_encodings", "image_embed_scale",
              "sampling_clamp_l2norm", "sampling_final_clamp_l2norm", "init_image_embed_l2norm", "sample_timesteps")


# ------------------------------------------------------------------------------------------------ noise schedules
def _cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - (alphas_cumprod[1:] / alphas_cumprod[:-1]), 0, 0.999)


def _scaled_linspace(timesteps: int, power: float) -> torch.Tensor:
    scale = 1000 / timesteps
    start, end = (scale * 0.0001) ** (1 / power), (scale * 0.02) ** (1 / power)
    return torch.linspace(start, end, timesteps, dtype=torch.float64) ** power


def _sigmoid_betas(timesteps: int) -> torch.Tensor:
    scale = 1000 / timesteps
    start, end = scale * 0.0001, scale * 0.02
    return torch.sigmoid(torch.linspace(-6, 6, timesteps, dtype=torch.float64)) * (end - start) + start


# The beta schedules of dalle2-pytorch's NoiseScheduler (computed in float64, kept as float32 buffers).
BETA_SCHEDULES = {
    "cosine": _cosine_betas,  # Nichol & Dhariwal, s = 0.008, clipped at 0.999
    "linear": lambda t: _scaled_linspace(t, 1.0),
    "quadratic": lambda t: _scaled_linspace(t, 2.0),
    "sigmoid": _sigmoid_betas,
    "jsd": lambda t: 1.0 / torch.linspace(t, 1, t),  # float32, as the reference
}


class NoiseScheduler(torch.nn.Module):
    """The schedule buffers of dalle2-pytorch's ``NoiseScheduler`` (same names, so a checkpoint's values load)."""

    def __init__(self, beta_schedule: str, timesteps: int):
        super().__init__()
        betas = BETA_SCHEDULES[beta_schedule](timesteps)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = dict(
            betas=betas, alphas_cumprod=ac, alphas_cumprod_prev=ac_prev, sqrt_alphas_cumprod=ac.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - ac).sqrt(), log_one_minus_alphas_cumprod=torch.log(1.0 - ac),
            sqrt_recip_alphas_cumprod=(1.0 / ac).sqrt(), sqrt_recipm1_alphas_cumprod=(1.0 / ac - 1).sqrt(),
            posterior_variance=post_var, posterior_log_variance_clipped=torch.log(post_var.clamp(min=1e-20)),
            posterior_mean_coef1=betas * ac_prev.sqrt() / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
            p2_loss_weight=(1 + ac / (1 - ac)) ** -0.0,
        )  # fmt: skip
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))
        self.num_timesteps = timesteps

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """Buffer ``name`` at timesteps ``t`` ``(B,)``, as a column ``(B, 1)``."""
        return getattr(self, name)[t][:, None]


# ------------------------------------------------------------------------------------------------ the network
class LayerNorm(torch.nn.Module):
    """Bias-free layer norm (gain ``g``); ``stable`` divides by the row maximum first (the final norm)."""

    def __init__(self, dim: int, stable: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps, self.stable = eps, stable
        self.g = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=-1, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class SwiGLU(torch.nn.Module):
    """``a * silu(b)`` of the two halves of the last dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


class RotaryEmbedding(torch.nn.Module):
    """Rotary position embedding of rotary-embedding-torch 0.1.5 (interleaved pairs, ``freqs`` buffer)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)))

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """Rotate the first ``2 * len(freqs)`` features of ``t`` ``(..., N, d)`` by position along ``N``."""
        pos = torch.arange(t.shape[-2], device=t.device).type(self.freqs.dtype)
        freqs = torch.einsum("n,f->nf", pos, self.freqs).repeat_interleave(2, dim=-1).to(t)
        rot = freqs.shape[-1]
        head, tail = t[..., :rot], t[..., rot:]
        pairs = head.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((head * freqs.cos() + rotated * freqs.sin(), tail), dim=-1)


class RelPosBias(torch.nn.Module):
    """T5 relative position bias ``(heads, i, j)`` with ``REL_POS_BUCKETS`` log-spaced buckets."""

    def __init__(self, heads: int):
        super().__init__()
        self.relative_attention_bias = torch.nn.Embedding(REL_POS_BUCKETS, heads)

    def forward(self, i: int, j: int, device: torch.device) -> torch.Tensor:
        rel = torch.arange(j, device=device)[None, :] - torch.arange(i, device=device)[:, None]
        n = (-rel).clamp(min=0)
        exact = REL_POS_BUCKETS // 2  # the reference's operation order, so that the floors agree
        log_ratio = torch.log(n.clamp(min=1).float() / exact) / math.log(REL_POS_MAX_DISTANCE / exact)
        large = exact + (log_ratio * (REL_POS_BUCKETS - exact)).long()
        bucket = torch.where(n < exact, n, large.clamp(max=REL_POS_BUCKETS - 1))
        return self.relative_attention_bias(bucket).permute(2, 0, 1)


class Attention(torch.nn.Module):
    """Causal pre-norm attention with ``heads`` query heads, one key/value head and a learned null key/value.

    As in the reference, the relative position bias is added to logits already divided by ``PB_RELAX_ALPHA`` and
    the sum is multiplied back, so the bias weighs ``PB_RELAX_ALPHA`` times more than the scaled ``q.k`` logits.
    """

    def __init__(self, dim: int, dim_head: int, heads: int, rotary_emb: Optional[RotaryEmbedding]):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5 / PB_RELAX_ALPHA
        self.norm = LayerNorm(dim)
        self.null_kv = torch.nn.Parameter(torch.randn(2, dim_head))
        self.to_q = torch.nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = torch.nn.Linear(dim, dim_head * 2, bias=False)
        self.rotary_emb = rotary_emb
        self.to_out = torch.nn.Sequential(torch.nn.Linear(dim_head * heads, dim, bias=False), LayerNorm(dim))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, N, dim)``, ``attn_bias`` ``(heads, N, N + 1)`` -> ``(B, N, dim)``."""
        b, n = x.shape[:2]
        x = self.norm(x)
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) * self.scale  # (B, H, N, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # (B, N, d) each
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        k = torch.cat((self.null_kv[0].expand(b, 1, -1), k), dim=-2)
        v = torch.cat((self.null_kv[1].expand(b, 1, -1), v), dim=-2)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + attn_bias
        causal = torch.ones(n, n + 1, dtype=torch.bool, device=x.device).triu(2)  # the null key is always seen
        sim = sim.masked_fill(causal, -torch.finfo(sim.dtype).max)
        sim = (sim - sim.amax(dim=-1, keepdim=True).detach()) * PB_RELAX_ALPHA
        out = torch.einsum("bhij,bjd->bhid", sim.softmax(dim=-1), v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class CausalTransformer(torch.nn.Module):
    """The prior's transformer: ``depth`` x (attention, SwiGLU feed-forward), residual, then norm and projection."""

    def __init__(
        self, dim: int, depth: int, dim_head: int, heads: int, ff_mult: float, norm_in: bool, norm_out: bool,
        final_proj: bool, normformer: bool, rotary_emb: bool,
    ):  # fmt: skip
        super().__init__()
        identity = torch.nn.Identity
        self.init_norm = LayerNorm(dim) if norm_in else identity()
        self.rel_pos_bias = RelPosBias(heads)
        rotary = RotaryEmbedding(min(32, dim_head)) if rotary_emb else None  # shared by every layer
        inner = int(ff_mult * dim)
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList([
                Attention(dim, dim_head, heads, rotary),
                torch.nn.Sequential(  # indices as dalle2-pytorch's FeedForward (4 was its dropout)
                    LayerNorm(dim), torch.nn.Linear(dim, inner * 2, bias=False), SwiGLU(),
                    LayerNorm(inner) if normformer else identity(), identity(), torch.nn.Linear(inner, dim, bias=False),
                ),
            ])
            for _ in range(depth)
        )  # fmt: skip
        self.norm = LayerNorm(dim, stable=True) if norm_out else identity()
        self.project_out = torch.nn.Linear(dim, dim, bias=False) if final_proj else identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        x = self.init_norm(x)
        attn_bias = self.rel_pos_bias(n, n + 1, x.device)
        for attn, ff in self.layers:
            x = attn(x, attn_bias) + x
            x = ff(x) + x
        return self.project_out(self.norm(x))


class DiffusionPriorNetwork(torch.nn.Module):
    """Tokens ``[text encodings, text embed, time, noisy image embed, query]`` -> the query's output ``(B, dim)``."""

    def __init__(
        self, dim: int, num_timesteps: int, num_time_embeds: int, num_image_embeds: int, num_text_embeds: int,
        max_text_len: int, **transformer,
    ):  # fmt: skip
        super().__init__()
        self.dim, self.max_text_len = dim, max_text_len
        self.n_text, self.n_time, self.n_image = num_text_embeds, num_time_embeds, num_image_embeds

        def proj(n):  # a Linear only for several tokens, as the reference's Sequential(Linear or Identity, Rearrange)
            return torch.nn.Sequential(torch.nn.Linear(dim, dim * n) if n > 1 else torch.nn.Identity())

        self.to_text_embeds = proj(num_text_embeds)
        self.to_time_embeds = torch.nn.Sequential(torch.nn.Embedding(num_timesteps, dim * num_time_embeds))
        self.to_image_embeds = proj(num_image_embeds)
        self.learned_query = torch.nn.Parameter(torch.randn(dim))
        self.causal_transformer = CausalTransformer(dim=dim, **transformer)
        self.null_text_embed = torch.nn.Parameter(torch.randn(1, max_text_len, dim))  # learned padding (DALL-E 1)

    def forward(
        self, image_embed: torch.Tensor, t: torch.Tensor, text_embed: torch.Tensor,
        text_encodings: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:  # fmt: skip
        """Predict from noisy scaled image embeddings ``(B, dim)`` at timesteps ``t`` ``(B,)``.

        Args:
            text_embed: L2-normalised CLIP text embeddings ``(B, dim)``.
            text_encodings: CLIP token encodings ``(B, L, dim)``, zero where there is no token (None: none).
        """
        b, dim = image_embed.shape
        text_embed = self.to_text_embeds(text_embed).view(b, self.n_text, dim)
        image_embed = self.to_image_embeds(image_embed).view(b, self.n_image, dim)
        if text_encodings is None:
            text_encodings = image_embed.new_zeros(b, 0, dim)
        text_encodings = text_encodings[:, : self.max_text_len]
        text_encodings = F.pad(text_encodings, (0, 0, 0, self.max_text_len - text_encodings.shape[1]))
        present = (text_encodings != 0.0).any(dim=-1, keepdim=True)
        text_encodings = torch.where(present, text_encodings, self.null_text_embed.to(text_encodings.dtype))
        time_embed = self.to_time_embeds(t).view(b, self.n_time, dim)
        query = self.learned_query.expand(b, 1, dim)
        tokens = torch.cat((text_encodings, text_embed, time_embed, image_embed, query), dim=-2)
        return self.causal_transformer(tokens)[:, -1]


# ------------------------------------------------------------------------------------------------ the prior
class Dalle2Prior(torch.nn.Module):
    """LAION's DALL·E 2 prior (dalle2-pytorch 1.1.0 ``DiffusionPrior``): CLIP text -> CLIP image embedding.

    Args:
        dim: Embedding and transformer width (768 for ViT-L/14).
        depth: Transformer layers.
        dim_head: Width of an attention head.
        heads: Query heads.
        ff_mult: Feed-forward width over ``dim``.
        norm_in: Layer norm on the input tokens.
        norm_out: Final (stable) layer norm.
        final_proj: Final linear projection.
        normformer: Layer norm after the feed-forward activation.
        rotary_emb: Rotary embeddings on the first ``min(32, dim_head)`` features of queries and keys.
        num_timesteps: Rows of the learned timestep embedding.
        num_time_embeds: Tokens per timestep.
        num_image_embeds: Tokens per image embedding.
        num_text_embeds: Tokens per text embedding.
        max_text_len: Text encoding tokens (77 for CLIP).
        timesteps: Diffusion steps T.
        beta_schedule: ``cosine``, ``linear``, ``quadratic``, ``sigmoid`` or ``jsd``.
        predict_x_start: The network predicts the clean embedding (else the noise).
        condition_on_text_encodings: Give the token encodings to the network (else only learned padding).
        image_embed_scale: Scale of the diffused unit embeddings (None: ``sqrt(dim)``).
        sampling_clamp_l2norm: Project each predicted clean embedding onto the scaled sphere while sampling.
        sampling_final_clamp_l2norm: Project the final sample onto it.
        init_image_embed_l2norm: Start sampling from a point of that sphere.
        sample_timesteps: Default sampling steps (None: ``timesteps``, the DDPM chain).
        clip_model: open_clip model of the text encoder (``ViT-L-14`` for LAION's prior).
        clip_pretrained: Its weights: an open_clip tag (``openai``) or a local file.
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        depth: int,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: float = 4.0,
        norm_in: bool = False,
        norm_out: bool = True,
        final_proj: bool = True,
        normformer: bool = False,
        rotary_emb: bool = True,
        num_timesteps: int = 1000,
        num_time_embeds: int = 1,
        num_image_embeds: int = 1,
        num_text_embeds: int = 1,
        max_text_len: int = 77,
        timesteps: int = 1000,
        beta_schedule: str = "cosine",
        predict_x_start: bool = True,
        condition_on_text_encodings: bool = True,
        image_embed_scale: Optional[float] = None,
        sampling_clamp_l2norm: bool = False,
        sampling_final_clamp_l2norm: bool = False,
        init_image_embed_l2norm: bool = False,
        sample_timesteps: Optional[int] = None,
        clip_model: str = "ViT-L-14",
        clip_pretrained: Optional[str] = "openai",
    ):
        super().__init__()
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule: choose from {', '.join(BETA_SCHEDULES)}, got {beta_schedule!r}")
        sizes = dict(dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_timesteps=num_timesteps,
                     max_text_len=max_text_len, timesteps=timesteps, num_time_embeds=num_time_embeds,
                     num_image_embeds=num_image_embeds, num_text_embeds=num_text_embeds)  # fmt: skip
        bad = [f"{k} = {v}" for k, v in sizes.items() if v < 1]
        if bad or ff_mult <= 0:
            raise ValueError(f"sizes must be positive, got {', '.join(bad) or f'ff_mult = {ff_mult}'}")
        if timesteps > num_timesteps:
            raise ValueError(f"timesteps ({timesteps}) exceed the rows of the timestep embedding ({num_timesteps})")
        if sample_timesteps is not None and not 1 <= sample_timesteps <= timesteps:
            raise ValueError(f"sample_timesteps must lie in [1, {timesteps}], got {sample_timesteps}")
        self.net = DiffusionPriorNetwork(
            dim, num_timesteps, num_time_embeds, num_image_embeds, num_text_embeds, max_text_len, depth=depth,
            dim_head=dim_head, heads=heads, ff_mult=ff_mult, norm_in=norm_in, norm_out=norm_out, final_proj=final_proj,
            normformer=normformer, rotary_emb=rotary_emb,
        )  # fmt: skip
        self.noise_scheduler = NoiseScheduler(beta_schedule, timesteps)
        self.register_buffer("image_norm", torch.ones(()), persistent=False)  # outputs are (near) unit vectors
        self.embed_dim = self.text_dim = dim
        self.timesteps = timesteps
        self.predict_x_start = predict_x_start
        self.condition_on_text_encodings = condition_on_text_encodings
        self.image_embed_scale = float(dim**0.5 if image_embed_scale is None else image_embed_scale)
        self.sampling_clamp_l2norm = sampling_clamp_l2norm
        self.sampling_final_clamp_l2norm = sampling_final_clamp_l2norm
        self.init_image_embed_l2norm = init_image_embed_l2norm
        self.sample_timesteps = sample_timesteps
        self.clip_model, self.clip_pretrained = clip_model, clip_pretrained
        self._text_encoder: Optional["Dalle2TextEncoder"] = None  # a plain attribute: CLIP never enters state_dict

    @property
    def device(self) -> torch.device:
        return self.net.learned_query.device

    # -------------------------------------------------------------------------------------------- text
    @property
    def text_encoder(self) -> "Dalle2TextEncoder":
        """The CLIP text side (open_clip ``clip_model``/``clip_pretrained``), built on first use."""
        if self._text_encoder is None:
            from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder

            self._text_encoder = Dalle2TextEncoder(
                CLIPQueryEncoder(self.clip_model, self.clip_pretrained, device=str(self.device))
            )
        return self._text_encoder

    def use_text_encoder(self, encoder: "Dalle2TextEncoder") -> None:
        """Condition on ``encoder`` (e.g. one sharing the generator's ViT-L-14) instead of building one."""
        self._text_encoder = encoder

    # -------------------------------------------------------------------------------------------- network
    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text_embed: torch.Tensor, text_encodings: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The network's prediction ``(B, dim)`` (clean scaled embedding or noise) from ``x`` ``(B, dim)`` at ``t``."""
        if not self.condition_on_text_encodings:
            text_encodings = None
        return self.net(x, t, text_embed, text_encodings)

    def _x_start(self, x: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        ns = self.noise_scheduler
        if self.predict_x_start:
            x0 = pred
            if self.sampling_clamp_l2norm:
                x0 = F.normalize(x0, dim=-1) * self.image_embed_scale
            return x0
        x0 = ns.at("sqrt_recip_alphas_cumprod", t) * x - ns.at("sqrt_recipm1_alphas_cumprod", t) * pred
        return x0.clamp(-1.0, 1.0)

    # -------------------------------------------------------------------------------------------- sampling
    def _steps(self, steps: Optional[int]) -> int:
        steps = (self.sample_timesteps or self.timesteps) if steps is None else steps
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must lie in [1, {self.timesteps}], got {steps}")
        return steps

    def check_sampling(self, steps: Optional[int] = None, sampler: Optional[str] = None, guidance: float = 0.0) -> int:
        """Validate sampling options (ValueError naming the option); returns the number of steps."""
        steps = self._steps(steps)
        mismatch = sampler is not None and (sampler == "ddpm") != (steps == self.timesteps)
        if sampler not in (None, "ddpm", "ddim") or mismatch:
            raise ValueError(
                f"sampler {sampler} with {steps} steps: this prior samples with DDPM over all {self.timesteps} steps "
                "(sampler ddpm) or with its DDIM over fewer (ddim)"
            )
        if guidance != 0.0:
            raise ValueError(
                f"guidance {guidance}: the dalle2-pytorch 1.1.0 prior has no unconditional branch (its guidance mask is "
                "never applied, so the reference ignores the scale); use 0"
            )
        return steps

    @staticmethod
    def _randn(shape: Tuple[int, int], generator: GeneratorArg, device: torch.device) -> torch.Tensor:
        """Normal noise ``shape``: from one generator, or the rows of each of several generators in turn."""
        if generator is None or isinstance(generator, torch.Generator):
            return torch.randn(shape, generator=generator, device=device)
        rows = shape[0] // len(generator)
        return torch.cat([torch.randn((rows, shape[1]), generator=g, device=device) for g in generator])

    def _ddpm(self, x: torch.Tensor, cond: Dict, generator: GeneratorArg) -> torch.Tensor:
        ns, b = self.noise_scheduler, x.shape[0]
        for i in reversed(range(self.timesteps)):
            t = torch.full((b,), i, device=x.device, dtype=torch.long)
            x0 = self._x_start(x, t, self(x, t, **cond))
            mean = ns.at("posterior_mean_coef1", t) * x0 + ns.at("posterior_mean_coef2", t) * x
            noise = self._randn(tuple(x.shape), generator, x.device)  # drawn at t = 0 too, as the reference does
            x = mean + float(i > 0) * (0.5 * ns.at("posterior_log_variance_clipped", t)).exp() * noise
        return x

    def _ddim(self, x: torch.Tensor, cond: Dict, steps: int, eta: float, generator: GeneratorArg) -> torch.Tensor:
        ns, b = self.noise_scheduler, x.shape[0]
        alphas = ns.alphas_cumprod_prev  # the reference indexes alpha_t by alphas_cumprod_prev[t]
        times = list(reversed(torch.linspace(0.0, self.timesteps, steps=steps + 2)[:-1].int().tolist()))
        for time, time_next in zip(times[:-1], times[1:]):
            alpha, alpha_next = alphas[time], alphas[time_next]
            t = torch.full((b,), time, device=x.device, dtype=torch.long)
            pred = self(x, t, **cond)
            x0 = self._x_start(x, t, pred)
            if self.predict_x_start:
                eps = (ns.at("sqrt_recip_alphas_cumprod", t) * x - pred) / ns.at("sqrt_recipm1_alphas_cumprod", t)
            else:
                eps = pred
            c1 = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c2 = ((1 - alpha_next) - torch.square(c1)).sqrt()
            noise = self._randn(tuple(x.shape), generator, x.device) if time_next > 0 else 0.0
            x = x0 * alpha_next.sqrt() + c1 * noise + c2 * eps
        return x

    @torch.no_grad()
    def sample_loop(
        self, text_embed: torch.Tensor, text_encodings: Optional[torch.Tensor] = None, steps: Optional[int] = None,
        eta: float = 1.0, generator: GeneratorArg = None,
    ) -> torch.Tensor:  # fmt: skip
        """The reference's ``p_sample_loop``: DDPM for ``steps == timesteps``, else its DDIM; scaled ``(B, dim)``.

        Args:
            text_embed: L2-normalised CLIP text embeddings ``(B, dim)`` (the rows to sample for).
            text_encodings: Their token encodings ``(B, L, dim)`` (see :class:`Dalle2TextEncoder`).
            steps: Sampling steps (default ``sample_timesteps``, else ``timesteps``).
            eta: DDIM noise (1, the reference's default, is ancestral sampling).
            generator: Source of the initial noise and each step's noise: one generator, or one per group of
                ``B / len(generator)`` consecutive rows (each row group then depends on its own generator only).

        Returns:
            The final sample in the diffused scale (unit embeddings times ``image_embed_scale``) ``(B, dim)``.
        """
        steps = self._steps(steps)
        if generator is not None and not isinstance(generator, torch.Generator) and len(text_embed) % len(generator):
            raise ValueError(f"{len(generator)} generators for {len(text_embed)} rows (need a divisor)")
        cond = dict(text_embed=text_embed, text_encodings=text_encodings)
        x = self._randn((text_embed.shape[0], self.embed_dim), generator, self.device)
        if self.init_image_embed_l2norm:
            x = F.normalize(x, dim=-1) * self.image_embed_scale
        x = self._ddpm(x, cond, generator) if steps == self.timesteps else self._ddim(x, cond, steps, eta, generator)
        if self.predict_x_start and self.sampling_final_clamp_l2norm:
            x = F.normalize(x, dim=-1) * self.image_embed_scale
        return x

    @torch.no_grad()
    def sample(
        self,
        text_embed: torch.Tensor,
        text_encodings: Optional[torch.Tensor] = None,
        steps: Optional[int] = None,
        sampler: Optional[str] = None,
        guidance: float = 0.0,
        num_samples_per_batch: int = 2,
        eta: float = 1.0,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """Image embeddings for text conditions, as the reference's ``DiffusionPrior.sample``.

        Each text gets ``num_samples_per_batch`` samples; the one with the highest cosine similarity to the text
        embedding is kept, divided by ``image_embed_scale``.

        Args:
            text_embed: L2-normalised CLIP text embeddings ``(B, dim)``.
            text_encodings: CLIP token encodings ``(B, L, dim)`` (needed when ``condition_on_text_encodings``).
            steps: Sampling steps (default ``sample_timesteps``, else ``timesteps``).
            sampler: ``ddpm`` (``steps == timesteps``) or ``ddim`` (fewer); None: by ``steps``, as the reference.
            guidance: Must be 0: this layout has no unconditional branch (see the module docstring).
            num_samples_per_batch: Samples per text, ranked by similarity to it.
            eta: DDIM noise.
            generator: One generator for the whole batch, or one per text (each text's samples then depend on its
                own generator only, whatever else is in the batch).

        Returns:
            ``(B, dim)`` image embeddings (near unit norm).
        """
        steps = self.check_sampling(steps, sampler, guidance)
        if num_samples_per_batch < 1:
            raise ValueError(f"num_samples_per_batch must be >= 1, got {num_samples_per_batch}")
        if text_embed.dim() != 2 or text_embed.shape[1] != self.text_dim:
            raise ValueError(f"text_embed must have shape (B, {self.text_dim}), got {tuple(text_embed.shape)}")
        if self.condition_on_text_encodings and text_encodings is None:
            raise ValueError("text_encodings: this prior is conditioned on CLIP's token encodings; give them")
        if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != len(text_embed):
            raise ValueError(f"{len(generator)} generators for {len(text_embed)} texts (need one per text)")
        was_training = self.training
        self.eval()
        r, dev = num_samples_per_batch, self.device
        text_embed = text_embed.to(dev, torch.float32).repeat_interleave(r, dim=0)
        if text_encodings is not None:
            text_encodings = text_encodings.to(dev, torch.float32).repeat_interleave(r, dim=0)
        image = self.sample_loop(text_embed, text_encodings, steps, eta, generator) / self.image_embed_scale
        self.train(was_training)
        image, text_embed = image.view(-1, r, self.embed_dim), text_embed.view(-1, r, self.embed_dim)
        sims = (F.normalize(text_embed, dim=-1) * F.normalize(image, dim=-1)).sum(-1)  # (B, r)
        best = sims.topk(k=1).indices[..., None].expand(-1, 1, self.embed_dim)
        return image.gather(1, best)[:, 0]

    @torch.no_grad()
    def sample_texts(self, texts: Sequence[str], **kwargs) -> torch.Tensor:
        """:meth:`sample` for text queries, encoded by :attr:`text_encoder`; ``(len(texts), dim)``."""
        text_embed, text_encodings = self.text_encoder(texts)
        if text_encodings.shape[-1] != self.text_dim or text_embed.shape[-1] != self.text_dim:
            clip = getattr(self.text_encoder.encoder, "model_name", "?")
            raise ValueError(
                f"CLIP {clip}: gives {text_embed.shape[-1]}-d embeddings and {text_encodings.shape[-1]}-d token "
                f"encodings, the prior takes {self.text_dim}-d (LAION's: ViT-L-14)"
            )
        return self.sample(text_embed.to(self.device), text_encodings.to(self.device), **kwargs)


# ------------------------------------------------------------------------------------------------ text encoder
class Dalle2TextEncoder:
    """The text conditions of dalle2-pytorch's ``OpenAIClipAdapter.embed_text``, computed with open_clip.

    Returns the L2-normalised CLIP text embedding and the output of CLIP's final text layer norm (``ln_final``)
    per token, kept from the start token up to and including the first end token and zero elsewhere.

    Args:
        encoder: A :class:`~espnet2.enh.clipsep.clip.encoder.CLIPQueryEncoder` (its open_clip model and tokenizer
            are used; it may be shared with the generator's queries).
    """

    def __init__(self, encoder):
        self.encoder = encoder

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(text_embed (B, D), text_encodings (B, L, width))`` of CLIP token ids ``(B, L)``."""
        model = self.encoder.model
        dev = next(model.parameters()).device
        tokens = tokens[..., : int(getattr(model, "context_length", tokens.shape[-1]))].to(dev)
        before_eos = (tokens == EOS_ID).cumsum(dim=-1) == 0
        keep = F.pad(before_eos, (1, -1), value=True) & (tokens != 0)  # start .. first end token
        captured: List[torch.Tensor] = []
        handle = model.ln_final.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            embed = model.encode_text(tokens)
        finally:
            handle.remove()
        encodings = captured[-1].masked_fill(~keep[..., None], 0.0)
        return F.normalize(embed.float(), dim=-1), encodings.float()

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Text conditions of text queries (CLIP's tokenizer: 77 tokens, truncated with the end token kept)."""
        texts = [str(t).strip() for t in texts]
        if not texts or not all(texts):
            raise ValueError("text queries must be non-empty")
        return self.encode_tokens(self.encoder.tokenizer(texts))


# ------------------------------------------------------------------------------------------------ loading
def _unwrap(obj, path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict]]:
    """The prior's state dict in a checkpoint (plain, or a trainer's ``ema_model``/``model``) and its config."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    for key in ("ema_model", "model"):  # dalle2-pytorch's DiffusionPriorTrainer.save: prefer the EMA weights
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and not k.startswith("clip.")}
    return state, config


def infer_net_config(state: Dict[str, torch.Tensor], path: PathLike = "state dict") -> Dict:
    """Network sizes and switches from the shapes and key names of a prior state dict (``net.*`` keys)."""
    if "net.null_text_encodings" in state:
        raise ValueError(
            f"{path}: a dalle2-pytorch >= 1.9 prior (net.null_text_encodings; cosine-similarity attention), not the "
            f"1.1.0 layout of LAION's release this loader implements"
        )
    need = ("net.learned_query", "net.null_text_embed", "net.to_time_embeds.0.weight",
            "net.causal_transformer.layers.0.0.to_q.weight", "net.causal_transformer.layers.0.0.null_kv",
            "net.causal_transformer.layers.0.1.1.weight")  # fmt: skip
    missing = [k for k in need if k not in state]
    if missing:
        some = ", ".join(list(state)[:3]) or "none"
        raise ValueError(
            f"{path}: not a DALL·E 2 prior of dalle2-pytorch 1.1.0 (no {missing[0]}; keys include {some}); "
            f"download {LAION_FILES} from {LAION_REPO}"
        )
    pre = "net.causal_transformer."
    dim = state["net.learned_query"].shape[0]
    dim_head = state[pre + "layers.0.0.null_kv"].shape[1]
    time_rows, time_width = state["net.to_time_embeds.0.weight"].shape
    depth = len({k.split(".")[3] for k in state if k.startswith(pre + "layers.") and k.endswith(".0.to_q.weight")})

    def tokens(name):  # tokens per embedding: a Linear(dim, n * dim) only when n > 1
        return state[f"net.{name}.0.weight"].shape[0] // dim if f"net.{name}.0.weight" in state else 1

    return dict(
        dim=dim, depth=depth, dim_head=dim_head, heads=state[pre + "layers.0.0.to_q.weight"].shape[0] // dim_head,
        ff_mult=state[pre + "layers.0.1.1.weight"].shape[0] // 2 / dim, norm_in=pre + "init_norm.g" in state,
        norm_out=pre + "norm.g" in state, final_proj=pre + "project_out.weight" in state,
        normformer=pre + "layers.0.1.3.g" in state, rotary_emb=pre + "layers.0.0.rotary_emb.freqs" in state,
        num_timesteps=time_rows, num_time_embeds=time_width // dim,
        num_image_embeds=tokens("to_image_embeds"), num_text_embeds=tokens("to_text_embeds"),
        max_text_len=state["net.null_text_embed"].shape[1],
    )  # fmt: skip


def read_prior_config(config: Union[PathLike, Dict]) -> Dict:
    """:class:`Dalle2Prior` keyword arguments from a dalle2-pytorch prior config (``TrainDiffusionPriorConfig``
    JSON with a ``prior`` section, or that section), without the sizes it does not give."""
    source = config if isinstance(config, dict) else None
    if source is None:
        try:
            source = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{config}: cannot read the prior config ({first_line(err)})") from None
    prior = source.get("prior", source) if isinstance(source, dict) else None
    if not isinstance(prior, dict) or not isinstance(prior.get("net", {}), dict):
        raise ValueError(f"{config}: expected a dalle2-pytorch prior config (a 'prior' mapping with 'net')")
    for flag in ("predict_v", "self_cond"):  # later dalle2-pytorch features, another layout
        if prior.get(flag) or prior.get("net", {}).get(flag):
            raise ValueError(f"{config}: {flag} is set; this loader implements the dalle2-pytorch 1.1.0 prior")
    out = {k: prior["net"][k] for k in NET_KEYS if prior.get("net", {}).get(k) is not None}
    out.update({k: prior[k] for k in PRIOR_KEYS if prior.get(k) is not None})
    clip = prior.get("clip") or {}
    if clip:
        if clip.get("make", "openai") != "openai":
            raise ValueError(f"{config}: CLIP make {clip.get('make')!r}; only OpenAI CLIP (make 'openai') is supported")
        out["clip_model"] = str(clip.get("model", "ViT-L/14")).replace("/", "-")  # open_clip's name of it
        out["clip_pretrained"] = "openai"
    if prior.get("image_embed_dim") is not None:
        out["image_embed_dim"] = prior["image_embed_dim"]
    return out


def find_prior_config(path: PathLike) -> Optional[Path]:
    """The config beside a checkpoint: ``<name>.json``, else ``prior_config.json`` in its directory."""
    path = Path(path)
    for cand in (path.with_suffix(".json"), path.with_name(CONFIG_NAME)):
        if cand.is_file():
            return cand
    return None


def load_dalle2_prior(
    path: PathLike, device: str = "cpu", config: Optional[PathLike] = None, clip_pretrained: Optional[str] = None
) -> Dalle2Prior:
    """Load LAION's prior (or any dalle2-pytorch 1.1.0 prior checkpoint) in eval mode, float32.

    Sizes come from the state dict; the rest (schedule, objective, sampling switches, CLIP) from ``config``, else
    the ``prior_config.json`` beside the file, else the checkpoint's own ``config``, else dalle2-pytorch's defaults.
    ``noise_scheduler.*`` buffers, when saved, are used as they are (and give ``timesteps``; without them or a
    config, ``timesteps`` is the number of rows of the timestep embedding).

    Args:
        path: ``latest.pth``/``best.pth`` (a plain state dict, or a trainer checkpoint with ``ema_model``/``model``).
        device: Torch device.
        config: The prior config JSON (default: found beside ``path``).
        clip_pretrained: Weights of the text encoder's CLIP (an open_clip tag or a local ViT-L-14 file), overriding
            the config's (``openai``).

    Raises:
        FileNotFoundError: No such file (the message says what to download).
        ValueError: Not loadable, or not this layout; one line naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prior file not found; download {LAION_FILES} from {LAION_REPO}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types
        what = f"{type(err).__name__}: {first_line(err)}"
        raise ValueError(f"{path}: cannot read as a torch checkpoint of tensors ({what})") from None
    state, ckpt_config = _unwrap(obj, path)
    kwargs = infer_net_config(state, path)
    config_path = Path(config) if config is not None else find_prior_config(path)
    if config is not None and not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: prior config not found")
    given = read_prior_config(config_path) if config_path is not None else read_prior_config(ckpt_config or {})
    where = config_path or path
    if config_path is None and not ckpt_config:
        logging.info("%s: no %s beside it; dalle2-pytorch's defaults where the weights tell nothing", path, CONFIG_NAME)
    image_dim = given.pop("image_embed_dim", kwargs["dim"])
    for key, value in list(given.items()) + [("image_embed_dim", image_dim)]:
        have = kwargs.get("dim" if key == "image_embed_dim" else key)
        if key == "ff_mult":  # compared as the width it makes
            value, have = int(value * kwargs["dim"]), int(have * kwargs["dim"])
        if have is not None and value != have:
            raise ValueError(f"{where}: {key} = {value}, but the weights in {path} have {have}")
    kwargs.update(given)
    betas = state.get("noise_scheduler.betas")
    if betas is not None:
        if "timesteps" in given and given["timesteps"] != len(betas):
            raise ValueError(f"{where}: timesteps = {given['timesteps']}, but {path} has a {len(betas)}-step schedule")
        kwargs["timesteps"] = len(betas)
    kwargs.setdefault("timesteps", kwargs["num_timesteps"])  # no schedule saved or given: one per embedded step
    if clip_pretrained is not None:
        kwargs["clip_pretrained"] = clip_pretrained
    try:
        prior = Dalle2Prior(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {first_line(err)}") from None
    expected = prior.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith("noise_scheduler.")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit the dalle2-pytorch 1.1.0 prior layout (missing e.g. {missing[:2]}, unexpected "
            f"e.g. {unexpected[:2]})"
        )
    try:
        prior.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the inferred sizes ({first_line(err)})") from None
    logging.info(
        "DALL-E 2 prior %s: dim %d, depth %d, %d heads x %d, %d steps, CLIP %s/%s", path, prior.embed_dim,
        kwargs["depth"], kwargs["heads"], kwargs["dim_head"], prior.timesteps, prior.clip_model, prior.clip_pretrained,
    )  # fmt: skip
    return prior.to(device).eval()
