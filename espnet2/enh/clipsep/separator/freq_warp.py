"""Log-frequency warping of linear STFT bins, as a fixed interpolation matrix.

CLIPSep resamples the 513-bin magnitude spectrogram onto a 256-bin log-frequency grid before its U-Net
and resamples the predicted masks back afterwards. The reference implementation does this with a bilinear
``grid_sample(align_corners=True)`` whose time coordinate is the identity, so the operation is a linear
interpolation along frequency only. We express it as a ``(F_out, F_in)`` matrix: identical values, no
transposes, and it works on ``(..., F)`` tensors of any leading shape.

Grids (y in linspace(-1, 1, F_out), normalised source coordinate y'):
    warp:   y' = (21 ** ((y + 1) / 2) - 11) / 10
    unwarp: y' = log(10 * y + 11) / log(21) * 2 - 1

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023.
"""

import functools
import math

import torch

__all__ = ["interp_matrix", "log_freq_unwarp", "log_freq_warp"]


@functools.lru_cache(maxsize=16)
def _interp_matrix_cpu(num_in: int, num_out: int, inverse: bool) -> torch.Tensor:
    y = torch.linspace(-1.0, 1.0, num_out, dtype=torch.float64)
    if inverse:
        src = torch.log(10.0 * y + 11.0) / math.log(21.0) * 2.0 - 1.0
    else:
        src = (torch.pow(21.0, (y + 1.0) / 2.0) - 11.0) / 10.0
    # align_corners=True: -1 -> index 0, +1 -> index num_in - 1.
    pos = ((src + 1.0) / 2.0 * (num_in - 1)).clamp(0.0, num_in - 1.0)
    lo = pos.floor().long().clamp(max=num_in - 1)
    hi = (lo + 1).clamp(max=num_in - 1)
    frac = pos - lo.to(pos.dtype)
    mat = torch.zeros(num_out, num_in, dtype=torch.float64)
    rows = torch.arange(num_out)
    mat.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    mat.index_put_((rows, hi), frac, accumulate=True)
    return mat.float()


def interp_matrix(
    num_in: int, num_out: int, *, inverse: bool = False, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Return the ``(num_out, num_in)`` interpolation matrix of the warp (or its inverse grid).

    Args:
        num_in: Number of input frequency bins.
        num_out: Number of output frequency bins.
        inverse: False maps linear bins onto the log grid; True maps log-grid bins back to linear.
        device: Device of the returned matrix.
        dtype: Floating dtype of the returned matrix.
    """
    if num_in < 2 or num_out < 2:
        raise ValueError(f"warp needs at least 2 bins on each side, got {num_in} -> {num_out}")
    return _interp_matrix_cpu(num_in, num_out, inverse).to(device=device, dtype=dtype)


def log_freq_warp(spec: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
    """Resample linear-frequency bins onto the log-frequency grid.

    Args:
        spec: Real tensor ``(..., F)``, e.g. a magnitude spectrogram ``(B, T, 513)``.
        num_bins: Number of log-frequency bins.

    Returns:
        Tensor ``(..., num_bins)``.
    """
    mat = interp_matrix(spec.shape[-1], num_bins, device=spec.device, dtype=spec.dtype)
    return spec @ mat.transpose(0, 1)


def log_freq_unwarp(x: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Resample log-frequency bins back onto ``num_bins`` linear-frequency bins.

    Args:
        x: Real tensor ``(..., F_warp)``, e.g. masks ``(B, T, 256)``.
        num_bins: Number of linear bins, e.g. 513 for n_fft 1024.

    Returns:
        Tensor ``(..., num_bins)``.
    """
    mat = interp_matrix(x.shape[-1], num_bins, inverse=True, device=x.device, dtype=x.dtype)
    return x @ mat.transpose(0, 1)
