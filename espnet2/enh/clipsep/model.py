"""Enhancement model that forwards per-source query embeddings from the data files to the separator.

ESPnet's ``ESPnetEnhancementModel`` builds the separator's ``additional`` dict from a fixed list and drops any
other batch entry. This subclass passes ``query{n}`` through, and implements the train-time modality mix of
CLIPSep-Hybrid: with probability ``text_query_prob`` a source's query is its ``text_query{n}`` instead.
"""

import re
from typing import Dict, Optional

import torch
from espnet2.enh.espnet_model import ESPnetEnhancementModel
from typeguard import typechecked

QUERY_RE = re.compile(r"^query(\d+)$")
TEXT_QUERY = "text_query{}"


class CLIPSepEnhancementModel(ESPnetEnhancementModel):
    """``ESPnetEnhancementModel`` + query forwarding.

    Args:
        text_query_prob: In training, the probability that a source's ``query{n}`` (image embedding) is
            replaced by its ``text_query{n}`` for a given example (0: CLIPSep; > 0: CLIPSep-Hybrid; needs
            ``text_query{n}`` data). Per example and source, a config probability, not a step schedule.
        **kwargs: ``ESPnetEnhancementModel`` arguments (encoder, separator, decoder, loss_wrappers, ...).
    """

    @typechecked
    def __init__(self, text_query_prob: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= text_query_prob <= 1.0:
            raise ValueError(f"text_query_prob must be in [0, 1], got {text_query_prob}")
        self.text_query_prob = text_query_prob
        self._queries: Dict[str, torch.Tensor] = {}

    def select_queries(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``query{n}`` tensors of a batch, with the train-time text/image mix applied."""
        queries = {k: v for k, v in batch.items() if QUERY_RE.match(k)}
        if not (self.training and self.text_query_prob > 0):
            return queries
        for key, q in queries.items():
            text = batch.get(TEXT_QUERY.format(QUERY_RE.match(key).group(1)))
            if text is None:
                raise ValueError(f"text_query_prob > 0 needs text_{key} next to {key} in the data")
            pick = torch.rand(q.shape[0], device=q.device) < self.text_query_prob
            queries[key] = torch.where(pick.view(-1, *([1] * (q.dim() - 1))), text.to(q.dtype), q)
        return queries

    def forward(self, speech_mix: torch.Tensor, speech_mix_lengths: Optional[torch.Tensor] = None, **kwargs):
        # The parent's forward calls forward_enhance; queries ride along on the instance for that call
        # (each DDP rank / DataParallel replica runs its own instance).
        self._queries = self.select_queries(kwargs)
        try:
            return super().forward(speech_mix, speech_mix_lengths, **kwargs)
        finally:
            self._queries = {}

    def forward_enhance(self, speech_mix, speech_lengths, additional=None, fs=None):
        additional = dict(additional or {})
        additional.update(self._queries)
        return super().forward_enhance(speech_mix, speech_lengths, additional, fs=fs)
