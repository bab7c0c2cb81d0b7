"""CLIPSep's training criterion: weighted binary cross-entropy on log-frequency masks.

``WeightedBCEMaskLoss`` is a mask-domain ``FrequencyDomainLoss``: ESPnet's
``ESPnetEnhancementModel._get_speech_masks`` calls its ``create_mask_label`` on the mixture and
source spectra and pairs the result with the separator's ``others["mask_spk{n}"]``. Each label
tensor carries the binary target and the per-bin weight stacked on a trailing dimension of size 2,
so the criterion is stateless and any wrapper (``fixed_order``, ``pit``, ``NoiseInvariantSolver``)
can pass ``ref[n]`` (or a batch slice of it) straight through.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled
    Videos", ICLR 2023.
"""

from typing import List, Optional

import torch
from typeguard import typechecked

from espnet2.enh.clipsep.separator.freq_warp import log_freq_warp
from espnet2.enh.loss.criterions.tf_domain import FrequencyDomainLoss

__all__ = ["WeightedBCEMaskLoss"]

# Same constants as PyTorch's binary_cross_entropy: logs clamped at -100 in the forward pass,
# denominator p * (1 - p) clamped at 1e-12 in the backward pass.
_LOG_MIN = -100.0
_GRAD_EPS = 1e-12


class _WeightedBCE(torch.autograd.Function):
    """Element-wise weighted BCE with PyTorch's clamping, finite gradients at p = 0 and p = 1.

    A plain ``-(y * log(p).clamp(-100) + ...)`` returns NaN gradients where p is exactly 0 or 1
    (0 / 0 in the backward of ``log``), which happens for saturated sigmoids and for the
    ``min(1, query + noise)`` masks of NIT. This follows ``F.binary_cross_entropy`` instead.
    """

    @staticmethod
    def forward(ctx, prob, label, weight):
        ctx.save_for_backward(prob, label, weight)
        log_p = torch.log(prob).clamp(min=_LOG_MIN)
        log_1mp = torch.log1p(-prob).clamp(min=_LOG_MIN)
        return -(label * log_p + (1.0 - label) * log_1mp) * weight

    @staticmethod
    def backward(ctx, grad_out):
        prob, label, weight = ctx.saved_tensors
        denom = (prob * (1.0 - prob)).clamp(min=_GRAD_EPS)
        return grad_out * weight * (prob - label) / denom, None, None


class WeightedBCEMaskLoss(FrequencyDomainLoss):
    """Weighted binary cross-entropy between predicted and binary masks on a log-frequency grid.

    Labels: ``y_n = warp|S_n| > label_threshold * warp(|X| + 1e-10)``; weights:
    ``clamp(log1p(warp(|X| + 1e-10)), weight_min, weight_max)``, both on ``warp_bins``
    log-frequency bins.

    Reference:
        H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled
        Videos", ICLR 2023.
    """

    @typechecked
    def __init__(
        self,
        warp_bins: int = 256,
        label_threshold: float = 0.5,
        weight_min: float = 1e-3,
        weight_max: float = 10.0,
        name: Optional[str] = None,
        only_for_test: bool = False,
    ):
        """Initialize the criterion.

        Args:
            warp_bins: Number of log-frequency bins of labels and predicted masks.
            label_threshold: A bin belongs to source n when ``|S_n| > label_threshold * |X|``.
            weight_min: Lower clamp of the per-bin weight ``log1p(|X|)``.
            weight_max: Upper clamp of the per-bin weight.
            name: Key of this loss in the reporter; "wbce" by default.
            only_for_test: Evaluate only outside training.
        """
        super().__init__(name if name is not None else "wbce", only_for_test=only_for_test)
        if weight_min > weight_max:
            raise ValueError(f"weight_min ({weight_min}) must not exceed weight_max ({weight_max})")
        self.warp_bins = warp_bins
        self.label_threshold = label_threshold
        self.weight_min = weight_min
        self.weight_max = weight_max

    @property
    def compute_on_mask(self) -> bool:
        return True

    @property
    def mask_type(self) -> str:
        # Binary |S_n| > 0.5 |X| on the log-frequency grid; not ESPnet's IBM (|S_n| >= all |S_m|).
        return "IBM_LOGFREQ"

    def create_mask_label(self, mix_spec, ref_spec, noise_spec=None) -> List[torch.Tensor]:
        """Build the warped binary labels and their weights.

        Args:
            mix_spec: Complex mixture spectrum (B, T, F), e.g. F = 513.
            ref_spec: List of N complex source spectra (B, T, F).
            noise_spec: Ignored (CLIPSep labels depend on the mixture and the source only).

        Returns:
            List of N float32 tensors (B, T, warp_bins, 2): ``[..., 0]`` the 0/1 label,
            ``[..., 1]`` the weight; detached.
        """
        with torch.no_grad(), torch.autocast(device_type=_device_type(mix_spec), enabled=False):
            mix_mag = abs(mix_spec).float() + 1e-10
            warped_mix = log_freq_warp(mix_mag, self.warp_bins)
            weight = torch.log1p(warped_mix).clamp(self.weight_min, self.weight_max)
            labels = []
            for spec in ref_spec:
                warped_src = log_freq_warp(abs(spec).float(), self.warp_bins)
                label = (warped_src > self.label_threshold * warped_mix).float()
                labels.append(torch.stack([label, weight], dim=-1))
        return labels

    def forward(self, ref: torch.Tensor, inf: torch.Tensor) -> torch.Tensor:
        """Per-sample weighted BCE, averaged over time and frequency.

        Args:
            ref: Label and weight from ``create_mask_label``, (B, T, F, 2).
            inf: Predicted mask in [0, 1], (B, T, F).

        Returns:
            loss: (B,), float32.
        """
        if ref.shape[-1] != 2 or ref.shape[:-1] != inf.shape:
            raise ValueError(
                f"expected ref (..., 2) from create_mask_label and inf of shape ref.shape[:-1], "
                f"got ref {tuple(ref.shape)} and inf {tuple(inf.shape)}; the separator must put "
                f"warped masks into others['mask_spk{{n}}']"
            )
        with torch.autocast(device_type=_device_type(inf), enabled=False):
            ref = ref.float()
            loss = _WeightedBCE.apply(inf.float(), ref[..., 0], ref[..., 1])
        return loss.flatten(1).mean(dim=1)


def _device_type(x) -> str:
    return x.device.type if hasattr(x, "device") else "cpu"
