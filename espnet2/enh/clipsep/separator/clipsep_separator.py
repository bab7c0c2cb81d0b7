"""CLIPSep separator: a U-Net's k intermediate masks mixed by per-source query vectors.

One class covers the paper's systems through constructor kwargs:

* CLIPSep (``query_type: clip``): each source's CLIP embedding is projected to q in (0, 1)^k, and its mask is
  ``sigmoid(sum_k scale_k * q_k * U_k + bias)``.
* CLIPSep-NIT (``num_noise_heads: 2``): noise heads map the mean of the pre-sigmoid query projections to extra
  masks that soak up off-screen sounds during training (see ``loss.NoiseInvariantSolver``); they never become
  outputs, and are returned in ``others`` only for the loss (``mask_nit{j}``) and, with ``return_noise``, as
  signals (``nit{j}``).
* LabelSep (``query_type: label``): a learned embedding per label id replaces the CLIP embedding.
* PIT (``query_type: none``): the same U-Net with a 1x1 head to ``num_spk`` masks and no query.
* SOP, Sound of Pixels (``query_type: frames``): each source's query is its raw frames, turned into q by an
  image network trained jointly with the U-Net (``SOPImageNet``: dilated ResNet-18, a convolution to k channels,
  max over frames and space, sigmoid); the mask formula is CLIPSep's. The CLIPSep paper's SOP baseline shares
  everything with CLIPSep but this query model (§4.1, Table 2).

Queries reach the separator through ``additional["query{n}"]`` (our model subclass forwards the data files'
``query{n}`` / ``text_query{n}`` entries): ``(B, D)`` embeddings, ``(B, Q, D)`` to combine Q queries by their
mean, label ids ``(B,)``/``(B, 1)`` for LabelSep, or frames ``(B, Q, H, W, 3)`` (``(B, H, W, 3)``: one frame)
of RGB pixel values in [0, 255] for SOP. The number of outputs is the number of queries given, so a
single text query at inference gives one output. CLIPSep-Hybrid's train-time modality mix is
``text_query_prob``: per example and source, the text embedding ``text_query{n}`` replaces ``query{n}``.

Reference:
    H.-W. Dong, N. Takahashi, Y. Mitsufuji, J. McAuley, T. Berg-Kirkpatrick, "CLIPSep: Learning
    Text-queried Sound Separation with Noisy Unlabeled Videos", ICLR 2023.
    H. Zhao, C. Gan, A. Rouditchenko, C. Vondrick, J. McDermott, A. Torralba, "The Sound of Pixels", ECCV 2018.
"""

import math
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet2.enh.separator.abs_separator import AbsSeparator
from typeguard import typechecked

from espnet2.enh.clipsep.separator.freq_warp import log_freq_unwarp, log_freq_warp
from espnet2.enh.clipsep.separator.sop_image_net import SOPImageNet
from espnet2.enh.clipsep.separator.unet import UNet

__all__ = [
    "MASK_TYPES",
    "NOISE_MASK_KEY",
    "NOISE_SIGNAL_KEY",
    "QUERY_KEY",
    "QUERY_TYPES",
    "TEXT_QUERY_KEY",
    "CLIPSepSeparator",
]

QUERY_TYPES = ("clip", "label", "none", "frames")
MASK_TYPES = ("soft", "binary")
QUERY_KEY = "query{}"
TEXT_QUERY_KEY = "text_query{}"
NOISE_MASK_KEY = "mask_nit{}"
NOISE_SIGNAL_KEY = "nit{}"


class CLIPSepSeparator(AbsSeparator):
    """Query-conditioned mask separator over a log-frequency U-Net (CLIPSep, CLIPSep-NIT, LabelSep, PIT, SOP).

    Args:
        input_dim: Linear frequency bins of the STFT encoder (513 for n_fft 1024).
        num_spk: Number of sources per training mixture (= queries per mixture; PIT: number of outputs).
        query_type: ``clip`` (embedding queries), ``label`` (LabelSep), ``none`` (PIT) or ``frames`` (SOP).
        query_dim: Dimension of the query embeddings (512 for CLIP ViT-B/32; unused by ``frames``).
        num_labels: Number of label ids for ``query_type: label``.
        num_masks: k, the number of intermediate U-Net masks.
        unet_channels: Width of the U-Net's first level (ngf).
        unet_layers: Number of U-Net levels; time is padded internally to a multiple of 2**unet_layers.
        warp_bins: Log-frequency bins the magnitude is warped to before the U-Net.
        num_noise_heads: Noise heads for noise invariant training (CLIPSep-NIT: 2; 0 disables).
        return_noise: Also return the noise heads' signals in ``others["nit{j}"]``.
        mask_type: ``soft`` masks, or ``binary`` (mask > mask_threshold) for the separated outputs at
            inference; the loss always sees the soft masks.
        mask_threshold: Threshold for ``mask_type: binary``.
        remove: At inference, output everything but the query (mask 1 - M).
        add_noise_head: At inference, add noise head j's mask to each query's mask (clipped at 1) before the
            output (CLIPSep-NIT with its noise heads kept, the paper's Figure 6; 0: off).
        text_query_prob: In training, the probability that a source's query is its ``text_query{n}``
            instead of ``query{n}`` (0: CLIPSep; 0.5: CLIPSep-Hybrid). A config probability per example and
            source, not a step schedule.
        text_query_per: What one draw of ``text_query_prob`` decides: ``example`` (each example and source on
            its own) or ``batch`` (the whole batch at once: every query of a batch is text, or every one an
            image, as CLIPSep-Hybrid trains: "one batch with all image queries and next with all text queries",
            Dong et al. 2023, Appendix C; here a coin per batch, the alternation in expectation).
        eps: Added to the magnitude before the log.
        image_net_conf: ``query_type: frames`` only: keyword arguments of ``SOPImageNet`` (``width``,
            ``image_size``, ``dilate_scale``, ``fc_kernel``, ``pool``, ``pretrained``); its ``num_channels`` is
            ``num_masks``.
    """

    @typechecked
    def __init__(
        self,
        input_dim: int,
        num_spk: int = 2,
        query_type: str = "clip",
        query_dim: int = 512,
        num_labels: int = 0,
        num_masks: int = 32,
        unet_channels: int = 64,
        unet_layers: int = 7,
        warp_bins: int = 256,
        num_noise_heads: int = 0,
        return_noise: bool = False,
        mask_type: str = "soft",
        mask_threshold: float = 0.5,
        remove: bool = False,
        add_noise_head: int = 0,
        text_query_prob: float = 0.0,
        eps: float = 1e-10,
        text_query_per: str = "example",
        image_net_conf: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if query_type not in QUERY_TYPES:
            raise ValueError(f"query_type must be one of {QUERY_TYPES}, got {query_type!r}")
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        if num_spk < 1:
            raise ValueError(f"num_spk must be >= 1, got {num_spk}")
        if query_type == "label" and num_labels < 1:
            raise ValueError("query_type 'label' (LabelSep) needs num_labels >= 1")
        if query_type == "none" and num_noise_heads:
            raise ValueError("noise heads (NIT) need query heads; query_type 'none' (PIT) has none")
        if query_type == "frames" and num_noise_heads:
            raise ValueError("noise heads (NIT) are not part of SOP: query_type 'frames' takes num_noise_heads 0")
        if image_net_conf is not None and query_type != "frames":
            raise ValueError(f"image_net_conf (SOP's image network) needs query_type 'frames', not {query_type!r}")
        if num_noise_heads and num_noise_heads != num_spk:
            raise ValueError(f"num_noise_heads ({num_noise_heads}) must equal num_spk ({num_spk}) for NIT")
        if not 0.0 <= text_query_prob <= 1.0:
            raise ValueError(f"text_query_prob must be in [0, 1], got {text_query_prob}")
        if text_query_per not in ("example", "batch"):
            raise ValueError(f"text_query_per must be 'example' or 'batch', got {text_query_per!r}")
        if text_query_prob and query_type != "clip":
            raise ValueError("text_query_prob needs embedding queries (query_type 'clip')")
        if not 0 <= add_noise_head <= num_noise_heads:
            raise ValueError(f"add_noise_head must be in [0, {num_noise_heads}] (the noise heads), got {add_noise_head}")
        if warp_bins % (2**unet_layers):
            raise ValueError(f"warp_bins ({warp_bins}) must be divisible by 2**unet_layers ({2**unet_layers})")

        self._num_spk = num_spk
        self.input_dim = input_dim
        self.query_type = query_type
        self.warp_bins = warp_bins
        self.time_multiple = 2**unet_layers
        self.return_noise = return_noise
        self.mask_type = mask_type
        self.mask_threshold = mask_threshold
        self.remove = remove
        self.add_noise_head = add_noise_head
        self.text_query_prob = text_query_prob
        self.text_query_per = text_query_per
        self.eps = eps

        self.unet = UNet(in_channels=1, out_channels=num_masks, ngf=unet_channels, num_layers=unet_layers)
        if query_type == "none":
            self.pit_head = torch.nn.Conv2d(num_masks, num_spk, kernel_size=1)
        else:
            if query_type == "frames":
                conf = dict(image_net_conf or {})
                if "num_channels" in conf:
                    raise ValueError("image_net_conf: num_channels is num_masks (the image network outputs k)")
                self.image_net = SOPImageNet(num_channels=num_masks, **conf)
            else:
                if query_type == "label":
                    self.label_embedding = torch.nn.Embedding(num_labels, query_dim)
                self.query_proj = torch.nn.Linear(query_dim, num_masks)
            self.noise_heads = torch.nn.ModuleList(
                torch.nn.Linear(num_masks, num_masks) for _ in range(num_noise_heads)
            )
            self.mask_scale = torch.nn.Parameter(torch.ones(num_masks))
            self.mask_bias = torch.nn.Parameter(torch.zeros(1))
        self._reference_init()

    def _reference_init(self) -> None:
        # Initialisation of the reference implementation (inherited from Sound of Pixels). SOP applies it to the
        # audio network only: its image network keeps torchvision's initialisation or ImageNet weights.
        skip = set(self.image_net.modules()) if self.query_type == "frames" else set()
        for m in self.modules():
            if m in skip:
                continue
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, 0.0, 0.001)
            elif isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(m.weight, 1.0, 0.02)
                torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0.0, 0.0001)

    @property
    def num_spk(self) -> int:
        return self._num_spk

    # ----------------------------------------------------------------------------------------------
    def audio_features(self, input: torch.Tensor) -> torch.Tensor:
        """U-Net feature maps of the mixture.

        Args:
            input: Mixture STFT ``(B, T, F)``, complex (or a real magnitude).

        Returns:
            Tensor ``(B, k, warp_bins, T)``.
        """
        if input.dim() != 3:
            raise ValueError(f"CLIPSepSeparator expects a single-channel (B, T, F) STFT, got {tuple(input.shape)}")
        mag = input.abs() if torch.is_complex(input) else input
        x = torch.log(log_freq_warp(mag.float() + self.eps, self.warp_bins))  # (B, T, Fw)
        num_frames = x.shape[1]
        pad = -num_frames % self.time_multiple
        if pad:
            x = F.pad(x, (0, 0, 0, pad), value=math.log(self.eps))  # silence
        feats = self.unet(x.transpose(1, 2).unsqueeze(1))  # (B, k, Fw, T')
        return feats[..., :num_frames]

    def select_queries(self, additional: Optional[Dict]) -> List[torch.Tensor]:
        """The ``query{n}`` tensors of ``additional``, with the train-time text/image mix applied."""
        additional = additional or {}
        queries = []
        while QUERY_KEY.format(len(queries) + 1) in additional:
            queries.append(additional[QUERY_KEY.format(len(queries) + 1)])
        if not queries:
            raise ValueError(
                "CLIPSepSeparator needs query embeddings in additional['query1'], ['query2'], ... "
                "(train and infer through espnet2.enh.clipsep's task, which forwards them)"
            )
        if not (self.training and self.text_query_prob > 0):
            return queries
        mixed = []
        batch_pick = torch.rand(1, device=queries[0].device) < self.text_query_prob  # text_query_per: batch
        for n, q in enumerate(queries, 1):
            text = additional.get(TEXT_QUERY_KEY.format(n))
            if text is None:
                raise ValueError(f"text_query_prob > 0 needs text_query{n} next to query{n} in the data")
            if self.text_query_per == "batch":
                pick = batch_pick.expand(q.shape[0])
            else:
                pick = torch.rand(q.shape[0], device=q.device) < self.text_query_prob
            mixed.append(torch.where(pick.view(-1, *([1] * (q.dim() - 1))), text.to(q.dtype), q))
        return mixed

    def query_logits(self, additional: Optional[Dict]) -> List[torch.Tensor]:
        """Pre-sigmoid query vectors, one ``(B, k)`` tensor per ``query{n}`` in ``additional``."""
        queries = self.select_queries(additional)
        if self.query_type == "frames":
            return self._frames_logits(queries)
        logits = []
        for n, q in enumerate(queries, 1):
            if self.query_type == "label":
                ids = q.long().reshape(q.shape[0], -1)[:, 0]
                if ids.min() < 0 or ids.max() >= self.label_embedding.num_embeddings:
                    raise ValueError(
                        f"query{n}: label id out of range [0, {self.label_embedding.num_embeddings})"
                    )
                emb = self.label_embedding(ids)
            else:
                if q.dim() == 3:  # (B, Q, D): several queries combined by their mean embedding
                    q = q.mean(dim=1)
                if q.dim() != 2 or q.shape[-1] != self.query_proj.in_features:
                    raise ValueError(
                        f"query{n}: expected (B, {self.query_proj.in_features}) or (B, Q, "
                        f"{self.query_proj.in_features}) embeddings, got {tuple(q.shape)}"
                    )
                emb = q.to(self.query_proj.weight.dtype)
            logits.append(self.query_proj(emb))
        return logits

    def _frames_logits(self, queries: List[torch.Tensor]) -> List[torch.Tensor]:
        # SOP: frames (B, Q, H, W, 3) -> the image network's pooled logits (B, k); their sigmoid is q. All
        # sources go through the network as one batch (one pass, fewer small operations on CPU; batch-norm
        # statistics are then over every source's frames, where SOP's code runs one call per source).
        frames = []
        for n, q in enumerate(queries, 1):
            if q.dim() == 4:  # (B, H, W, 3): one frame per example
                q = q.unsqueeze(1)
            if q.dim() != 5 or q.shape[-1] != 3:
                raise ValueError(
                    f"query{n}: expected frames (B, Q, H, W, 3) or (B, H, W, 3) for query_type 'frames', "
                    f"got {tuple(q.shape)}"
                )
            frames.append(q)
        if len({q.shape[1:] for q in frames}) > 1:
            return [self.image_net.pooled_logits(q) for q in frames]
        return list(self.image_net.pooled_logits(torch.cat(frames)).split([q.shape[0] for q in frames]))

    def _synthesize(self, feats: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        # feats (B, k, Fw, T), vec (B, k) in (0, 1) -> mask (B, T, Fw)
        logit = torch.einsum("bk,bkft->btf", vec * self.mask_scale, feats) + self.mask_bias
        return torch.sigmoid(logit)

    def forward_masks(self, input: torch.Tensor, additional: Optional[Dict] = None) -> OrderedDict:
        """The soft masks on the warped grid only: what the mask losses see, without the linear outputs.

        Args:
            input: Mixture STFT ``(B, T, F)`` (complex).
            additional: ``query1..queryN`` (see the module docstring); ignored for PIT.

        Returns:
            ``mask_spk{n}`` ``(B, T, warp_bins)`` per output, then, with noise heads, ``mask_nit{j}`` likewise.
        """
        feats = self.audio_features(input)
        masks = OrderedDict()
        if self.query_type == "none":
            logit = self.pit_head(feats)  # (B, N, Fw, T)
            for n, mask in enumerate(torch.sigmoid(logit).permute(1, 0, 3, 2).unbind(0), 1):
                masks[f"mask_spk{n}"] = mask
            return masks
        logits = self.query_logits(additional)
        for n, z in enumerate(logits, 1):
            masks[f"mask_spk{n}"] = self._synthesize(feats, torch.sigmoid(z))
        if len(self.noise_heads):
            # The NIT loss pairs each query with one noise head; at inference any number of queries works
            # (the heads only see the mean query logit and never become outputs).
            if self.training and len(logits) != len(self.noise_heads):
                raise ValueError(
                    f"NIT training needs one query per noise head: {len(self.noise_heads)} noise heads, "
                    f"got {len(logits)} queries"
                )
            mixture_logit = torch.stack(logits).mean(dim=0)
            for j, head in enumerate(self.noise_heads, 1):
                masks[NOISE_MASK_KEY.format(j)] = self._synthesize(feats, torch.sigmoid(head(mixture_logit)))
        return masks

    def forward(
        self,
        input: torch.Tensor,
        ilens: torch.Tensor,
        additional: Optional[Dict] = None,
    ) -> Tuple[List[torch.Tensor], torch.Tensor, OrderedDict]:
        """Separate one source per query.

        Args:
            input: Mixture STFT ``(B, T, F)`` (complex).
            ilens: Frame counts ``(B,)``.
            additional: ``query1..queryN`` (see the module docstring); ignored for PIT.

        Returns:
            masked: N tensors ``(B, T, F)``, the mixture STFT times each linear-frequency mask.
            ilens: ``(B,)``.
            others: ``mask_nit{j}`` (noise heads) then ``mask_spk{n}``, the soft masks on the warped grid
                ``(B, T, warp_bins)`` (what the loss sees), and ``nit{j}`` ``(B, T, F)`` if ``return_noise``.
        """
        masks = self.forward_masks(input, additional)
        others = OrderedDict()
        for j in range(1, len(masks) + 1):
            key = NOISE_MASK_KEY.format(j)
            if key not in masks:
                break
            others[key] = masks[key]
            if self.return_noise:
                others[NOISE_SIGNAL_KEY.format(j)] = input * log_freq_unwarp(masks[key], input.shape[-1])
        masked = []
        for n in range(1, len(masks) + 1):
            key = f"mask_spk{n}"
            if key not in masks:
                break
            others[key] = masks[key]
            warped = masks[key]
            if self.add_noise_head and not self.training:
                # Reference: clipsep/evaluate.py, calc_metrics with include_pit: clamp(query + noise head, max=1)
                warped = torch.clamp(warped + masks[NOISE_MASK_KEY.format(self.add_noise_head)], max=1.0)
            linear = log_freq_unwarp(warped, input.shape[-1])
            if not self.training:
                if self.mask_type == "binary":
                    linear = (linear > self.mask_threshold).to(linear.dtype)
                if self.remove:
                    linear = 1.0 - linear
            masked.append(input * linear)
        return masked, ilens, others
