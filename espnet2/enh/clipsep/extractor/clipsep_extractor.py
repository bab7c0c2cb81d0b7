"""CLIPSep as an ESPnet target-speaker-extraction extractor: the query embedding is the "enrollment".

ESPnet's TSE task (``espnet2.tasks.enh_tse``) calls its extractor once per target with that target's auxiliary
input. With ``share_encoder: false`` the auxiliary input reaches the extractor as loaded, so an ``enroll_ref{n}``
that holds a CLIP embedding (an npy from ``espnet2.enh.clipsep.bin.embed``, read by the task's preprocessor with
``--load_spk_embedding true``) becomes the query of a one-output :class:`CLIPSepSeparator`. The same U-Net,
projection and mask synthesis as the separator; no noise heads: noise invariant training pairs all of a
mixture's queries with the noise heads at once, which a per-target call cannot do (CLIPSep-NIT stays in our
enhancement task).

Reference:
    H.-W. Dong, N. Takahashi, Y. Mitsufuji, J. McAuley, T. Berg-Kirkpatrick, "CLIPSep: Learning
    Text-queried Sound Separation with Noisy Unlabeled Videos", ICLR 2023.
"""

from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from espnet2.enh.extractor.abs_extractor import AbsExtractor
from typeguard import typechecked

from espnet2.enh.clipsep.separator.clipsep_separator import CLIPSepSeparator

__all__ = ["CLIPSepExtractor"]


class CLIPSepExtractor(AbsExtractor):
    """Query-conditioned mask extractor: one CLIPSep output for the query in ``input_aux``.

    Args:
        input_dim: Linear frequency bins of the STFT encoder (513 for n_fft 1024).
        query_dim: Dimension of the query embeddings (512 for CLIP ViT-B/32).
        num_masks: k, the number of intermediate U-Net masks.
        unet_channels: Width of the U-Net's first level (ngf).
        unet_layers: Number of U-Net levels.
        warp_bins: Log-frequency bins the magnitude is warped to before the U-Net.
        mask_type: ``soft`` or ``binary`` masks at inference.
        mask_threshold: Threshold for ``mask_type: binary``.
        remove: At inference, output everything but the query.
        eps: Added to the magnitude before the log.
    """

    @typechecked
    def __init__(
        self,
        input_dim: int,
        query_dim: int = 512,
        num_masks: int = 32,
        unet_channels: int = 64,
        unet_layers: int = 7,
        warp_bins: int = 256,
        mask_type: str = "soft",
        mask_threshold: float = 0.5,
        remove: bool = False,
        eps: float = 1e-10,
    ):
        super().__init__()
        self.separator = CLIPSepSeparator(
            input_dim, num_spk=1, query_type="clip", query_dim=query_dim, num_masks=num_masks,
            unet_channels=unet_channels, unet_layers=unet_layers, warp_bins=warp_bins, mask_type=mask_type,
            mask_threshold=mask_threshold, remove=remove, eps=eps,
        )  # fmt: skip

    def forward(
        self,
        input: torch.Tensor,
        ilens: torch.Tensor,
        input_aux: torch.Tensor,
        ilens_aux: torch.Tensor,
        suffix_tag: str = "",
        additional: Optional[Dict] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, OrderedDict]:
        """Extract the sound the query describes.

        Args:
            input: Mixture STFT ``(B, T, F)`` (complex).
            ilens: Frame counts ``(B,)``.
            input_aux: The query embedding ``(B, D)``, or ``(B, 1, D)`` as the TSE preprocessor loads an npy
                ``(D,)``; ``(B, Q, D)`` combines Q queries by their mean.
            ilens_aux: Unused (embeddings have no length).
            suffix_tag: Appended to the keys of ``others`` (the task passes ``_spk{n}``).
            additional: Unused.

        Returns:
            masked: ``(B, T, F)``, the mixture STFT times the query's linear-frequency mask.
            ilens: ``(B,)``.
            others: ``mask{suffix_tag}``, the soft mask on the warped grid ``(B, T, warp_bins)``.
        """
        query = input_aux.real if torch.is_complex(input_aux) else input_aux
        if query.dim() == 3 and query.shape[1] == 1:
            query = query[:, 0]
        masked, ilens, others = self.separator(input, ilens, {"query1": query})
        return masked[0], ilens, OrderedDict([(f"mask{suffix_tag}", others["mask_spk1"])])
