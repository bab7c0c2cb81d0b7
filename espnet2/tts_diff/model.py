"""CLIPSonic: a CLIP-conditioned mel-spectrogram diffusion model, hosted by ESPnet's TTS task.

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023.
    A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
    J. Ho and T. Salimans, "Classifier-Free Diffusion Guidance", NeurIPS 2021 Workshop.
"""

import copy
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from espnet2.gan_tts.hifigan import HiFiGANGenerator
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.tts.abs_tts import AbsTTS
from torch import nn
from typeguard import typechecked

from espnet2.tts_diff.diffusion import cosine_alphas_cumprod, q_sample
from espnet2.tts_diff.samplers import SAMPLERS, cfg_model_fn, randn_rows
from espnet2.tts_diff.unet import MelUNet


class CLIPSonic(AbsTTS):
    """Mel diffusion conditioned on a CLIP embedding that arrives as ESPnet's ``spembs``.

    Training (``forward``): ESPnet's ``fbank`` + ``global_mvn`` give normalised log-mel frames; each
    clip is randomly cropped (or zero-padded) to ``segment_frames``; a timestep ``t ~ U{0..T-1}`` of the
    improved-DDPM cosine schedule and Gaussian noise give ``x_t``; the U-Net predicts the noise and the
    loss is its MSE over the valid frames. The L2-normalised CLIP embedding conditions the U-Net; with
    probability ``cond_drop_prob`` per example it is replaced by a learned null embedding (classifier-free
    guidance). The text input required by ``TTSTask`` is ignored.

    Which embedding of a training clip: a per-frame stack ``(F, D)`` gives the frame at the centre of the
    audio crop when ``frame_rate`` is set (the frame from the same segment), else a random frame.
    CLIPSynth-Text / -Hybrid (``text_cond_prob`` > 0) train on stacks whose row 0 is the CLIP embedding of the
    clip's label text (then its frames): per example the text row with probability ``text_cond_prob``, else
    the frame as above; these use labels, so they are the text-queried upper bounds, not CLIPSonic.

    Inference (``inference``): ``SAMPLERS[sampler]`` with ``steps`` steps and guidance
    ``eps = (1 + w) eps(x, c) - w eps(x, null)``; returns the normalised mel ``feat_gen`` and, when a
    vocoder is embedded, the waveform ``wav``.

    Reference:
        H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
        Language-Vision Models", WASPAA 2023; J. Ho and T. Salimans, "Classifier-Free Diffusion
        Guidance", 2021.
    """

    @typechecked
    def __init__(
        self,
        idim: int,
        odim: int,
        spk_embed_dim: int = 512,
        unet_conf: Optional[Dict[str, Any]] = None,
        num_train_steps: int = 4000,
        cond_drop_prob: float = 0.1,
        segment_frames: int = 128,
        inference_frames: Optional[int] = None,
        sampler: str = "dpmpp",
        steps: int = 25,
        guidance: float = 1.5,
        vocoder_conf: Optional[Dict[str, Any]] = None,
        fs: int = 16000,
        ema_decay: float = 0.0,
        clip_x0: Optional[float] = None,
        frame_rate: Optional[float] = None,
        hop_length: int = 512,
        text_cond_prob: float = 0.0,
    ):
        """Build the model.

        Args:
            idim: Vocabulary size (from ``TTSTask``; the text is ignored).
            odim: Number of mel bands (from the feature extractor).
            spk_embed_dim: CLIP embedding size (the ``spembs`` vectors).
            unet_conf: Keyword arguments of :class:`MelUNet` (``cond_dim`` is set to ``spk_embed_dim``).
            num_train_steps: Diffusion steps T of the cosine schedule.
            cond_drop_prob: Probability of replacing the CLIP embedding by the null embedding in training.
            segment_frames: Training crop length in frames.
            inference_frames: Default generated length in frames (None: ``segment_frames``); the U-Net is
                convolutional with global attention, so it may differ from the training crop.
            sampler: Default sampler, a key of ``SAMPLERS`` (``ddpm``, ``ddim``, ``dpmpp``).
            steps: Default number of sampling steps.
            guidance: Default classifier-free guidance weight w.
            vocoder_conf: Keyword arguments of ESPnet's ``HiFiGANGenerator``; when given, a frozen vocoder
                trained on the same normalised mel is embedded and ``inference`` also returns ``wav``.
            fs: Sampling rate of the audio.
            ema_decay: Keep an exponential moving average of the U-Net and null embedding, updated at the
                start of every training forward (so it trails the optimizer by one step), and use it for
                validation and sampling (improved DDPM samples from EMA weights). 0 disables it.
            clip_x0: Default clamp of each predicted normalised mel to ``[-clip_x0, clip_x0]`` while sampling
                (None: no clipping); an inference argument overrides it.
            frame_rate: Frames per second of the per-frame training stacks (frame ``i`` is the picture at
                second ``i / frame_rate``, as the data preparation extracts them). Set, a training clip is
                conditioned on the frame nearest the centre of its audio crop ("a frame from the same
                segment"); None: on a random frame of the clip.
            hop_length: Hop of the mel frames in samples (the feature extractor's ``hop_length``): places the
                audio crop in seconds for ``frame_rate``.
            text_cond_prob: In training, the probability per example of conditioning on the label text's CLIP
                embedding instead of an image frame (CLIPSynth-Text: 1; CLIPSynth-Hybrid: 0.5). When > 0, a
                per-frame stack holds the text embedding in row 0 and the frames after it (outside training
                the text row is the condition); ``(B, D)`` vectors are taken as they are (only with 1, in
                training: with a mix the model needs both).
        """
        super().__init__()
        if odim < 1 or spk_embed_dim < 1:
            raise ValueError(f"odim and spk_embed_dim must be positive, got {odim}, {spk_embed_dim}")
        if min(num_train_steps, segment_frames, steps, 1 if inference_frames is None else inference_frames) < 1:
            raise ValueError("num_train_steps, segment_frames, inference_frames and steps must be positive")
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if clip_x0 is not None and clip_x0 <= 0:
            raise ValueError(f"clip_x0 must be positive (or null), got {clip_x0}")
        if frame_rate is not None and frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive (or null), got {frame_rate}")
        if hop_length < 1:
            raise ValueError(f"hop_length must be positive, got {hop_length}")
        if not 0.0 <= text_cond_prob <= 1.0:
            raise ValueError(f"text_cond_prob must be in [0, 1], got {text_cond_prob}")
        unet_conf = dict(unet_conf or {})
        if unet_conf.setdefault("cond_dim", spk_embed_dim) != spk_embed_dim:
            raise ValueError(f"unet_conf.cond_dim {unet_conf['cond_dim']} != spk_embed_dim {spk_embed_dim}")
        # Attributes read by espnet2.bin.tts_inference.Text2Speech.
        self.spks = None
        self.langs = None
        self.spk_embed_dim = spk_embed_dim
        self.fs = fs

        self.odim = odim
        self.num_train_steps = num_train_steps
        self.cond_drop_prob = cond_drop_prob
        self.segment_frames = segment_frames
        self.inference_frames = segment_frames if inference_frames is None else inference_frames
        self.sampler = sampler
        self.steps = steps
        self.guidance = guidance
        self.unet = MelUNet(**unet_conf)
        self.null_cond = nn.Parameter(torch.randn(spk_embed_dim) / spk_embed_dim**0.5)
        self.clip_x0 = clip_x0
        self.frame_rate = frame_rate
        self.hop_length = hop_length
        self.text_cond_prob = text_cond_prob
        self.ema_decay = ema_decay
        self.ema_unet = None
        if ema_decay > 0:
            self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
            self.register_buffer("ema_null_cond", self.null_cond.detach().clone())
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # Derived from the config, so not saved in the state_dict.
        self.register_buffer(
            "alphas_cumprod", torch.as_tensor(cosine_alphas_cumprod(num_train_steps)), persistent=False
        )
        self.vocoder = None
        if vocoder_conf is not None:
            self.vocoder = HiFiGANGenerator(**vocoder_conf)
            self.vocoder.requires_grad_(False)
            self.vocoder.eval()

    def _nets(self) -> Tuple[nn.Module, torch.Tensor]:
        """The U-Net and null embedding to evaluate with: the EMA copies outside training, when kept."""
        if self.ema_unet is not None and not self.training:
            return self.ema_unet, self.ema_null_cond
        return self.unet, self.null_cond

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- d * ema + (1 - d) * current`` with ``d = min(ema_decay, (1 + n) / (10 + n))`` after ``n``
        updates (the usual warm-up, so early averages are not dominated by the random initialisation)."""
        n = int(self.ema_updates)
        d = min(self.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema_unet.parameters(), self.unet.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, p in zip(self.ema_unet.buffers(), self.unet.buffers()):
            e.copy_(p)
        self.ema_null_cond.lerp_(self.null_cond.detach(), 1 - d)
        self.ema_updates += 1

    @property
    def require_vocoder(self) -> bool:
        """Text2Speech builds a vocoder (Griffin-Lim) only when none is embedded."""
        return self.vocoder is None

    def train(self, mode: bool = True) -> "CLIPSonic":
        """Switch train/eval mode; the frozen vocoder always stays in eval mode."""
        super().train(mode)
        if self.vocoder is not None:
            self.vocoder.eval()
        return self

    def _condition(
        self, spembs: torch.Tensor, training: bool, centres: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """One L2-normalised CLIP vector per example from ``(B, D)`` or a zero-padded stack ``(B, N, D)``.

        A stack's rows are the clip's frames in time order (after the label text's embedding in row 0 when
        ``text_cond_prob`` > 0). In training a stack gives the frame nearest ``centres`` (seconds, ``(B,)``)
        when ``frame_rate`` is set and ``centres`` given, else a random frame; then, with ``text_cond_prob``,
        the text row instead with that probability per example. Outside training the text row is the condition
        when there is one, else the mean of the frames.
        """
        if spembs.dim() not in (2, 3) or spembs.shape[-1] != self.spk_embed_dim:
            raise ValueError(
                f"spembs must be (B, {self.spk_embed_dim}) or (B, N, {self.spk_embed_dim}), got {tuple(spembs.shape)}"
            )
        spembs = spembs.float()
        text_row = self.text_cond_prob > 0
        if spembs.dim() == 2:
            if training and 0 < self.text_cond_prob < 1:
                raise ValueError(
                    f"text_cond_prob {self.text_cond_prob} mixes text and image: spembs must be (B, N, D) stacks "
                    "with the label text's embedding in row 0 and the frames after it"
                )
            return F.normalize(spembs, dim=-1)
        valid = spembs.abs().sum(-1) > 0  # (B, N)
        if text_row:
            if not bool(valid[:, 0].all()):
                raise ValueError("spembs: row 0 (the label text's embedding, text_cond_prob > 0) is all-zero")
            text, spembs, valid = spembs[:, 0], spembs[:, 1:], valid[:, 1:]
            if not training or self.text_cond_prob == 1:
                return F.normalize(text, dim=-1)
        if not bool(valid.any(-1).all()):
            raise ValueError("spembs: an example has only all-zero embedding rows")
        rows = torch.arange(len(spembs), device=spembs.device)
        if not training:
            cond = (spembs * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        elif self.frame_rate is not None and centres is not None:
            # frame i is the picture at second i / frame_rate; the rows after the valid ones are padding
            last = valid.sum(-1) - 1
            index = torch.minimum((centres.to(spembs.device) * self.frame_rate).round().long().clamp(min=0), last)
            cond = spembs[rows, index]
        else:
            scores = torch.rand(valid.shape, device=spembs.device).masked_fill(~valid, -1.0)
            cond = spembs[rows, scores.argmax(-1)]
        if training and text_row:
            use_text = torch.rand(len(cond), device=cond.device) < self.text_cond_prob
            cond = torch.where(use_text[:, None], text, cond)
        return F.normalize(cond, dim=-1)

    def _crop(
        self, feats: torch.Tensor, feats_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random ``segment_frames`` window per example (zero-padded when shorter).

        Returns:
            Mel ``(B, 1, n_mels, S)``, the valid-frame mask ``(B, 1, 1, S)`` and the time of the centre of
            each window's valid frames in seconds ``(B,)`` (mel frame ``t`` is centred on sample
            ``t * hop_length``).
        """
        b, _, n_mels = feats.shape
        s = self.segment_frames
        lengths = feats_lengths.to(feats.device)
        starts = (torch.rand(b, device=feats.device) * (lengths - s + 1).clamp(min=1)).long()
        idx = starts[:, None] + torch.arange(s, device=feats.device)[None]  # (B, S)
        valid = idx < lengths[:, None]
        padded = F.pad(feats, (0, 0, 0, max(0, s + int(starts.max()) - feats.shape[1])))
        x0 = padded.gather(1, idx[..., None].expand(b, s, n_mels)) * valid[..., None]
        last = torch.minimum(starts + s, lengths).clamp(min=1) - 1  # the last valid frame of each window
        centres = (starts + last).float() / 2 * self.hop_length / self.fs
        return x0.transpose(1, 2)[:, None], valid[:, None, None].to(feats.dtype), centres

    def forward(
        self,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        feats: torch.Tensor,
        feats_lengths: torch.Tensor,
        spembs: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Noise-prediction loss on random crops.

        Args:
            text: Token ids ``(B, L)`` (ignored).
            text_lengths: ``(B,)`` (ignored).
            feats: Normalised log-mel ``(B, T, n_mels)``.
            feats_lengths: ``(B,)``.
            spembs: CLIP embeddings ``(B, D)`` or zero-padded per-frame stacks ``(B, N, D)``.

        Returns:
            The loss ``(1,)``, stats ``{"loss", "cond_dropped"}`` and the batch size as weight (the form
            ``force_gatherable`` gives for DataParallel).
        """
        if spembs is None:
            raise ValueError("CLIPSonic needs CLIP embeddings: add '<scp>,spembs,npy' (or kaldi_ark) to the data")
        if feats.shape[-1] != self.odim:
            raise ValueError(f"feats have {feats.shape[-1]} mel bands, the model was built for {self.odim}")
        if self.ema_unet is not None and self.training:
            self.update_ema()
        unet, null_cond = self._nets()
        b = feats.shape[0]
        x0, mask, centres = self._crop(feats, feats_lengths)
        cond = self._condition(spembs, training=self.training, centres=centres).to(x0.dtype)
        drop = torch.rand(b, device=x0.device) < self.cond_drop_prob
        cond = torch.where(drop[:, None], null_cond.to(cond.dtype)[None], cond)
        t = torch.randint(0, self.num_train_steps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = q_sample(x0, t, self.alphas_cumprod, noise).to(x0.dtype)
        eps = unet(x_t, t, cond)
        loss = ((eps - noise) ** 2 * mask).sum() / (mask.sum() * x0.shape[2]).clamp(min=1.0)
        stats = dict(loss=loss.detach(), cond_dropped=drop.float().mean())
        loss, stats, weight = force_gatherable((loss, stats, b), loss.device)
        return loss, stats, weight

    @torch.no_grad()
    def inference(
        self,
        text: torch.Tensor,
        feats: Optional[torch.Tensor] = None,
        spembs: Optional[torch.Tensor] = None,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        sampler: Optional[str] = None,
        seed: Optional[int] = None,
        num_frames: Optional[int] = None,
        clip_x0: Optional[float] = None,
        **kwargs,
    ) -> Dict[str, torch.Tensor]:
        """Generate one mel spectrogram (and waveform) from a CLIP embedding.

        Args:
            text: Token ids ``(L,)`` (ignored).
            feats: Optional reference mel ``(T, n_mels)``; only its length is used (default ``num_frames``).
            spembs: CLIP embedding ``(D,)`` (image or text), or ``(N, D)`` frame embeddings to average.
            steps: Sampling steps (default: the config's ``steps``).
            guidance: Guidance weight w (default: the config's ``guidance``).
            sampler: ``ddpm``, ``ddim`` or ``dpmpp`` (default: the config's ``sampler``).
            seed: Seed of a private ``torch.Generator`` (device of the model); ``None`` uses the global RNG.
            num_frames: Generated length in frames (default: ``len(feats)`` or ``inference_frames``).
            clip_x0: Clamp each predicted (normalised) mel to ``[-clip_x0, clip_x0]`` while sampling (default:
                the config's ``clip_x0``).
            **kwargs: Other decode options from ESPnet (e.g. ``use_teacher_forcing``), ignored.

        Returns:
            ``feat_gen``: normalised mel ``(T', n_mels)``; ``wav``: ``(T' * hop,)`` if a vocoder is embedded.
        """
        if spembs is None:
            raise ValueError("CLIPSonic.inference needs spembs (a CLIP image or text embedding)")
        if num_frames is None and feats is not None:
            num_frames = len(feats)
        feat_gen = self.sample(
            spembs[None], seeds=None if seed is None else [int(seed)], steps=steps, guidance=guidance,
            sampler=sampler, num_frames=num_frames, clip_x0=clip_x0,
        )[0]  # fmt: skip
        out = dict(feat_gen=feat_gen)
        if self.vocoder is not None:
            out["wav"] = self.vocoder.inference(feat_gen).view(-1)
        return out

    @torch.no_grad()
    def sample(
        self,
        spembs: torch.Tensor,
        seeds: Optional[Sequence[int]] = None,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        sampler: Optional[str] = None,
        num_frames: Optional[int] = None,
        clip_x0: Optional[float] = None,
    ) -> torch.Tensor:
        """Generate a batch of mel spectrograms, one network call per step for the whole batch.

        Row ``i`` draws its initial noise (and DDPM's per-step noise) from its own ``torch.Generator`` seeded
        with ``seeds[i]``, so it is the sample :meth:`inference` gives for that embedding and seed, whatever
        else is in the batch (up to float rounding of the batched convolutions).

        Args:
            spembs: CLIP embeddings ``(B, D)``, or zero-padded frame stacks ``(B, N, D)`` to average.
            seeds: One seed per row; ``None`` draws every row from the global RNG.
            steps: Sampling steps (default: the config's ``steps``).
            guidance: Guidance weight w (default: the config's ``guidance``).
            sampler: ``ddpm``, ``ddim`` or ``dpmpp`` (default: the config's ``sampler``).
            num_frames: Generated length in frames (default: ``inference_frames``).
            clip_x0: Clamp each predicted (normalised) mel to ``[-clip_x0, clip_x0]`` (default: the config's).

        Returns:
            Normalised mels ``(B, num_frames, n_mels)``.
        """
        sampler = self.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        steps = self.steps if steps is None else int(steps)
        guidance = self.guidance if guidance is None else float(guidance)
        num_frames = self.inference_frames if num_frames is None else int(num_frames)
        device = self.null_cond.device
        cond = self._condition(spembs.to(device), training=False)
        generators = None
        if seeds is not None:
            if len(seeds) != len(cond):
                raise ValueError(f"{len(seeds)} seeds for {len(cond)} embeddings")
            generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        shape = (len(cond), 1, self.odim, num_frames)
        x_t = randn_rows(shape, generators, device=device).to(self.null_cond.dtype)
        unet, null_cond = self._nets()
        clip_x0 = self.clip_x0 if clip_x0 is None else clip_x0
        model_fn = cfg_model_fn(unet, cond.to(x_t.dtype), null_cond, w=guidance)
        x0 = SAMPLERS[sampler](model_fn, x_t, self.alphas_cumprod, steps, generator=generators, clip_x0=clip_x0)
        return x0[:, 0].transpose(1, 2).to(self.null_cond.dtype)
