"""Enhancement model that forwards per-source query embeddings from the data files to the separator.

ESPnet's ``ESPnetEnhancementModel`` builds the separator's ``additional`` dict from a fixed list and drops any
other batch entry. This subclass passes ``query{n}`` and ``text_query{n}`` through; what the separator does
with them (CLIPSep, LabelSep, the CLIPSep-Hybrid text/image mix) is its own configuration.
"""

import re
from typing import Dict, Optional

import torch
from espnet2.enh.espnet_model import ESPnetEnhancementModel

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

    def forward_enhance(self, speech_mix, speech_lengths, additional=None, fs=None):
        additional = dict(additional or {})
        additional.update(self._queries)
        return super().forward_enhance(speech_mix, speech_lengths, additional, fs=fs)
