"""The CLIPSep audio U-Net: a log-magnitude spectrogram in, k feature maps out.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023.
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015.
"""

from typing import List

import torch
from torch import nn
from typeguard import typechecked

__all__ = ["DownBlock", "UNet", "UpBlock"]


class DownBlock(nn.Module):
    """Encoder level: ``[LeakyReLU(0.2)] -> Conv2d 4x4 stride 2 (no bias) -> [BatchNorm2d]``."""

    def __init__(self, in_channels: int, out_channels: int, activation: bool, norm: bool):
        super().__init__()
        self.act = nn.LeakyReLU(0.2) if activation else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, C_out, H / 2, W / 2)``."""
        return self.norm(self.conv(self.act(x)))


class UpBlock(nn.Module):
    """Decoder level: ``ReLU -> bilinear x2 -> Conv2d 3x3 -> [BatchNorm2d]``.

    The convolution has a bias only where no BatchNorm follows it.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool):
        super().__init__()
        self.act = nn.ReLU()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not norm)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, C_out, 2 H, 2 W)``."""
        return self.norm(self.conv(self.upsample(self.act(x))))


class UNet(nn.Module):
    """CLIPSep audio U-Net.

    ``input_norm`` (BatchNorm2d over the input channel) is followed by ``num_layers`` encoder levels
    of widths ``ngf * (1, 2, 4, 8, 8, ...)``. The outermost encoder level is a bare convolution and the
    innermost one has no BatchNorm. Each decoder level ``i`` takes the concatenation ``[skip_i, up]``
    of the matching encoder output and the level below, and the outermost decoder level maps to
    ``out_channels`` maps with a biased convolution and no normalisation. At the defaults this is the
    30,274,210-parameter network of the released CLIPSep checkpoints.

    ``down[i]`` and ``up[i]`` are level ``i`` (0 = outermost); ``up[0]`` produces the output.

    Reference:
        H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled
        Videos", ICLR 2023; O. Ronneberger et al., "U-Net: Convolutional Networks for Biomedical
        Image Segmentation", MICCAI 2015.
    """

    @typechecked
    def __init__(self, in_channels: int = 1, out_channels: int = 32, ngf: int = 64, num_layers: int = 7):
        """Build the network.

        Args:
            in_channels: Input channels (1 for a mono log-magnitude spectrogram).
            out_channels: Number of output feature maps k.
            ngf: Width of the outermost encoder level.
            num_layers: Number of down/up levels; inputs must have F and T divisible by
                ``2 ** num_layers``.
        """
        super().__init__()
        if min(in_channels, out_channels, ngf) < 1:
            raise ValueError(
                "in_channels, out_channels and ngf must be positive, "
                f"got {in_channels}, {out_channels}, {ngf}"
            )
        if num_layers < 2:
            raise ValueError(f"num_layers must be at least 2, got {num_layers}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers

        widths = [ngf * 2 ** min(i, 3) for i in range(num_layers)]
        inner = num_layers - 1
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.down = nn.ModuleList(
            DownBlock(
                in_channels if i == 0 else widths[i - 1],
                widths[i],
                activation=i > 0,
                norm=0 < i < inner,
            )
            for i in range(num_layers)
        )
        self.up = nn.ModuleList(
            UpBlock(
                widths[i] if i == inner else 2 * widths[i],
                widths[i - 1] if i > 0 else out_channels,
                norm=i > 0,
            )
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the feature maps.

        Args:
            x: Log-magnitude spectrogram ``(B, in_channels, F, T)``; F and T divisible by
                ``2 ** num_layers`` (pad beforehand).

        Returns:
            Feature maps ``(B, out_channels, F, T)``.
        """
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, F, T), got {tuple(x.shape)}")
        factor = 2**self.num_layers
        if x.size(2) % factor or x.size(3) % factor:
            raise ValueError(
                f"input F={x.size(2)} and T={x.size(3)} must both be divisible by "
                f"2**num_layers={factor}; pad the spectrogram first"
            )
        skips: List[torch.Tensor] = []
        h = self.input_norm(x)
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.up[-1](skips.pop())
        # The reference feeds LeakyReLU(skip) here (an in-place activation); the ReLU that opens every
        # UpBlock makes that identical to feeding the skip itself.
        for i in range(self.num_layers - 2, -1, -1):
            h = self.up[i](torch.cat([skips[i], h], dim=1))
        return h
