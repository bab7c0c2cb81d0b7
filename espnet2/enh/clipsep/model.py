"""Enhancement model that forwards per-source query embeddings from the data files to the separator.

ESPnet's ``ESPnetEnhancementModel`` builds the separator's ``additional`` dict from a fixed list and drops any
other batch entry. This subclass passes ``query{n}`` and ``text_query{n}`` through; what the separator does
with them (CLIPSep, LabelSep, the CLIPSep-Hybrid text/image mix) is its own configuration.

In training, when every loss that counts is computed on the separator's masks (CLIPSep's weighted BCE, with or
without the NIT wrapper), the separated signals are never used: the model then asks a separator that offers
``forward_masks`` for the masks alone and skips the linear-frequency outputs and the inverse STFT (about a fifth
of a tiny training step in a CPU profile). Losses, gradients and everything outside training are unchanged.
"""

import re
from typing import Dict, Optional

import torch
from espnet2.enh.espnet_model import ESPnetEnhancementModel
from espnet2.enh.loss.criterions.tf_domain import FrequencyDomainLoss

__all__ = ["QUERY_RE", "CLIPSepEnhancementModel"]

QUERY_RE = re.compile(r"^(text_)?query\d+$")


class CLIPSepEnhancementModel(ESPnetEnhancementModel):
    """``ESPnetEnhancementModel`` + query forwarding (same constructor arguments)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._queries: Dict[str, torch.Tensor] = {}

    def forward(self, speech_mix: torch.Tensor, speech_mix_lengths: Optional[torch.Tensor] = None, **kwargs):
        # The parent's forward calls forward_enhance; queries ride along on the instance for that call
        # (each DDP rank / DataParallel replica runs its own instance).
        self._queries = {k: v for k, v in kwargs.items() if QUERY_RE.match(k)}
        try:
            return super().forward(speech_mix, speech_mix_lengths, **kwargs)
        finally:
            self._queries = {}

    def masks_suffice(self) -> bool:
        """Whether training needs only the separator's masks (see the module docstring)."""
        if self.mask_module is not None or self.always_forward_in_48k or not self.loss_wrappers:
            return False
        if not hasattr(self.separator, "forward_masks"):
            return False
        for wrapper in self.loss_wrappers:
            c = wrapper.criterion
            if getattr(c, "only_for_test", False):
                continue
            if not (isinstance(c, FrequencyDomainLoss) and c.compute_on_mask):
                return False
            if getattr(c, "is_noise_loss", False) or getattr(c, "is_dereverb_loss", False):
                return False
        return True

    def forward_enhance(self, speech_mix, speech_lengths, additional=None, fs=None):
        additional = dict(additional or {})
        additional.update(self._queries)
        if self.training and self.masks_suffice():
            feature_mix, _ = self.encoder(speech_mix, speech_lengths, fs=fs)
            return None, feature_mix, None, self.separator.forward_masks(feature_mix, additional)
        return super().forward_enhance(speech_mix, speech_lengths, additional, fs=fs)
