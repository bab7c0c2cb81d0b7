"""The CLIPSonic denoiser: a 2-D U-Net over the mel spectrogram, conditioned on the timestep and a CLIP vector.

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023.
    A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
"""

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from typeguard import typechecked


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (integer or real) timesteps.

    Args:
        t: Timesteps ``(B,)``.
        dim: Embedding size (even).
        max_period: Longest wavelength.

    Returns:
        ``(B, dim)``: ``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period ** (-k / (dim / 2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(num_groups, channels), channels)


class ResBlock(nn.Module):
    """``GN -> SiLU -> Conv3x3 -> GN -> FiLM(emb) -> SiLU -> Dropout -> Conv3x3`` plus a (1x1) skip.

    FiLM is the scale-shift norm of improved DDPM: ``h = GN(h) * (1 + scale) + shift`` with
    ``(scale, shift) = Linear(SiLU(emb))``.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = _norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, H, W)`` and ``emb`` ``(B, E)`` to ``(B, C_out, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions of a feature map, with a residual."""

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = _norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C / heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Conv3x3 with stride 2: ``(B, C, H, W) -> (B, C, H / 2, W / 2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then Conv3x3: ``(B, C, H, W) -> (B, C, 2 H, 2 W)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One U-Net stage: residual blocks, each optionally followed by self-attention."""

    def __init__(self, channels_in: Sequence[int], out_channels: int, emb_dim: int, attention: bool, cfg: dict):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c, out_channels, emb_dim, cfg["dropout"], cfg["num_groups"]) for c in channels_in
        )
        self.attns = nn.ModuleList(
            AttentionBlock(out_channels, cfg["num_heads"], cfg["num_groups"]) if attention else nn.Identity()
            for _ in channels_in
        )


class MelUNet(nn.Module):
    """Noise predictor ``eps(x_t, t, c)`` for mel spectrograms ``(B, 1, n_mels, T)``.

    ``conv_in`` is followed by ``len(channel_mults)`` resolution levels of widths
    ``base_channels * channel_mults[i]``, each with ``num_res_blocks`` residual blocks (self-attention after
    each block at the levels in ``attention_levels``) and a stride-2 convolution between levels; a middle
    ``ResBlock -> Attention -> ResBlock``; the mirrored decoder with ``num_res_blocks + 1`` blocks per level,
    each taking the matching encoder activation by concatenation; ``GN -> SiLU -> Conv3x3`` to the output.
    The conditioning vector ``emb = MLP(sinusoid(t)) + Linear(c)`` drives every residual block through
    FiLM. Inputs whose height or width is not a multiple of ``2 ** (len(channel_mults) - 1)`` are
    zero-padded at the end and the output is cropped back.

    The defaults (``base_channels=64, channel_mults=(1, 2, 3, 4), num_res_blocks=3, attention_levels=(2, 3)``,
    CLIP dimension 512) give 30,430,785 parameters, matching CLIPSonic's reported ~30.4 M; the paper gives no
    widths, so these are our choice.

    Reference:
        H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
        Language-Vision Models", WASPAA 2023; A. Nichol and P. Dhariwal, "Improved Denoising
        Diffusion Probabilistic Models", ICML 2021.
    """

    @typechecked
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        cond_dim: int = 512,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 3,
        attention_levels: Sequence[int] = (2, 3),
        num_heads: int = 4,
        dropout: float = 0.0,
        num_groups: int = 32,
    ):
        """Build the network.

        Args:
            in_channels: Input channels (1: the noisy mel).
            out_channels: Output channels (1: the predicted noise).
            cond_dim: Size of the conditioning vector (the CLIP embedding, 512 for ViT-B/32).
            base_channels: Width of the first level; also the sinusoidal timestep-embedding size.
            channel_mults: Width multiplier per resolution level.
            num_res_blocks: Residual blocks per encoder level (decoder levels have one more).
            attention_levels: Level indices (0 = full resolution) with self-attention.
            num_heads: Attention heads.
            dropout: Dropout inside residual blocks.
            num_groups: GroupNorm groups (reduced to ``gcd(num_groups, channels)`` where needed).
        """
        super().__init__()
        if min(in_channels, out_channels, cond_dim, base_channels, num_res_blocks, num_heads, num_groups) < 1:
            raise ValueError("MelUNet sizes must be positive")
        if base_channels % 2:
            raise ValueError(f"base_channels must be even (sinusoidal embedding), got {base_channels}")
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty list of positive ints, got {channel_mults}")
        if any(not 0 <= i < len(channel_mults) for i in attention_levels):
            raise ValueError(f"attention_levels {attention_levels} out of range for {len(channel_mults)} levels")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        cfg = dict(dropout=dropout, num_groups=num_groups, num_heads=num_heads)
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.cond_dim = cond_dim
        self.pad_multiple = 2 ** (len(channel_mults) - 1)

        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = nn.Linear(cond_dim, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        widths = [base_channels * m for m in channel_mults]
        skips = [base_channels]
        ch = base_channels
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, width in enumerate(widths):
            ins = [ch] + [width] * (num_res_blocks - 1)
            self.down.append(Level(ins, width, emb_dim, i in attention_levels, cfg))
            ch = width
            skips += [width] * num_res_blocks
            if i < len(widths) - 1:
                self.downsample.append(Downsample(ch))
                skips.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_dim, dropout, num_groups)
        self.mid_attn = AttentionBlock(ch, num_heads, num_groups)
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout, num_groups)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            ins = []
            for _ in range(num_res_blocks + 1):
                ins.append(ch + skips.pop())
                ch = width
            self.up.append(Level(ins, width, emb_dim, i in attention_levels, cfg))
            if i > 0:
                self.upsample.append(Upsample(ch))
        self.norm_out = _norm(ch, num_groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: Noisy mel ``(B, C_in, n_mels, T)``; any ``n_mels`` and ``T``.
            t: Diffusion timesteps ``(B,)`` (long or float).
            cond: Conditioning vectors ``(B, cond_dim)``.

        Returns:
            ``(B, C_out, n_mels, T)``.
        """
        height, width = x.shape[-2:]
        m = self.pad_multiple
        x = F.pad(x, (0, -width % m, 0, -height % m))
        emb = self.time_mlp(timestep_embedding(t, self.base_channels)) + self.cond_proj(cond.to(x.dtype))

        h = self.conv_in(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :height, :width]
