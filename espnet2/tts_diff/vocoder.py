"""Vocoders for CLIPSonic's mel: a HiFi-GAN trained in ESPnet's GAN-TTS task, and an optional BigVGAN.

:class:`MelHiFiGAN` trains ESPnet's own ``HiFiGANGenerator`` against ESPnet's
``HiFiGANMultiScaleMultiPeriodDiscriminator`` with ESPnet's HiFi-GAN losses, through the stock
``python -m espnet2.bin.gan_tts_train --tts mel_hifigan``. ``ESPnetGANTTSModel`` computes its ``feats``
from the raw speech with the configured ``feats_extract`` and then applies the configured ``normalize``,
exactly as ``ESPnetTTSModel`` does for the CLIPSonic generator; given the generator's ``fbank`` conf and its
``global_mvn`` stats file, the vocoder learns to invert exactly the normalised mel CLIPSonic generates.
``python -m espnet2.tts_diff.bin.embed_vocoder`` then freezes the trained generator inside CLIPSonic.

:class:`BigVGANVocoder` wraps a user's local BigVGAN checkpoint (the ``bigvgan`` PyPI package) for the same
normalised mel, converting it to BigVGAN's natural-log input when the two mel front-ends agree.

Reference:
    J. Kong, J. Kim and J. Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient and High Fidelity
    Speech Synthesis", NeurIPS 2020.
    S. Lee et al., "BigVGAN: A Universal Neural Vocoder with Large-Scale Training", ICLR 2023.
"""

import copy
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from espnet2.gan_tts.abs_gan_tts import AbsGANTTS
from espnet2.gan_tts.hifigan import HiFiGANGenerator, HiFiGANMultiScaleMultiPeriodDiscriminator
from espnet2.gan_tts.hifigan.loss import (
    DiscriminatorAdversarialLoss,
    FeatureMatchLoss,
    GeneratorAdversarialLoss,
    MelSpectrogramLoss,
)
from espnet2.gan_tts.utils import get_random_segments, get_segments
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

# HiFi-GAN V1 (Kong et al., Table 5) with the upsampling re-factored for hop 512: 8 * 8 * 4 * 2 = 512.
GENERATOR_DEFAULTS: Dict[str, Any] = {
    "out_channels": 1,
    "channels": 512,
    "global_channels": -1,
    "kernel_size": 7,
    "upsample_scales": [8, 8, 4, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_additional_convs": True,
    "bias": True,
    "nonlinear_activation": "LeakyReLU",
    "nonlinear_activation_params": {"negative_slope": 0.1},
    "use_weight_norm": True,
}
# The HiFi-GAN paper's adversarial / feature-matching setting (sums over sub-discriminators and layers),
# as in ESPnet's VITS and JointText2Wav configs.
ADV_LOSS_DEFAULTS: Dict[str, Any] = {"average_by_discriminators": False, "loss_type": "mse"}
FEAT_MATCH_DEFAULTS: Dict[str, Any] = {
    "average_by_discriminators": False,
    "average_by_layers": False,
    "include_final_outputs": True,
}
# L1 on a natural-log mel as in HiFi-GAN; our choice: twice the time resolution of the 2048/512 input mel.
MEL_LOSS_DEFAULTS: Dict[str, Any] = {
    "fs": 16000,
    "n_fft": 1024,
    "hop_length": 256,
    "win_length": None,
    "window": "hann",
    "n_mels": 80,
    "fmin": 0,
    "fmax": None,
    "log_base": None,
}


def _merged(defaults: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A deep copy of ``defaults`` updated (one level deep) with ``overrides``."""
    return {**copy.deepcopy(defaults), **copy.deepcopy(overrides)}


@contextmanager
def _no_param_grads(module: torch.nn.Module) -> Iterator[None]:
    """Run ``module`` without building gradients for its own parameters (inputs still get theirs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class MelHiFiGAN(AbsGANTTS):
    """HiFi-GAN vocoder for ESPnet's GAN-TTS task: normalised mel frames -> waveform.

    The model ignores the text that ``GANTTSTask`` requires. In training it draws one random window of
    ``segment_size`` feature frames per utterance (``get_random_segments``, as ESPnet's VITS and JETS do),
    vocodes it, and cuts the matching ``segment_size * hop`` samples of the speech for the discriminator.
    Utterances shorter than a window are zero-padded. Generator turn (``optim_idx`` 0): adversarial +
    feature-matching + mel-L1 loss, with the discriminator's parameters excluded from the graph so only the
    generator receives gradients. Discriminator turn (``optim_idx`` 1): real/fake adversarial loss on the
    detached generator output. With ``cache_generator_outputs`` the generator output of the first turn is
    reused by the second (ESPnet's GAN trainer runs both turns on each batch).

    Reference:
        J. Kong, J. Kim and J. Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient and High
        Fidelity Speech Synthesis", NeurIPS 2020.
    """

    @typechecked
    def __init__(
        self,
        idim: int,
        odim: int,
        segment_size: int = 16,
        sampling_rate: int = 16000,
        generator_params: Dict[str, Any] = GENERATOR_DEFAULTS,
        discriminator_params: Dict[str, Any] = {},
        generator_adv_loss_params: Dict[str, Any] = ADV_LOSS_DEFAULTS,
        discriminator_adv_loss_params: Dict[str, Any] = ADV_LOSS_DEFAULTS,
        feat_match_loss_params: Dict[str, Any] = FEAT_MATCH_DEFAULTS,
        mel_loss_params: Dict[str, Any] = MEL_LOSS_DEFAULTS,
        lambda_adv: float = 1.0,
        lambda_feat_match: float = 2.0,
        lambda_mel: float = 45.0,
        cache_generator_outputs: bool = True,
        discriminator_start_steps: int = 0,
    ):
        """Build generator, discriminator and losses.

        Every ``*_params`` dict given in the config updates the defaults shown here key by key (one level
        deep), so a config may name only what it changes.

        Args:
            idim: Vocabulary size from ``GANTTSTask`` (the text is ignored).
            odim: Number of mel bands of ``feats`` (the generator's ``in_channels``).
            segment_size: Training window in feature frames (16 frames = 8,192 samples at hop 512, the
                HiFi-GAN paper's segment length).
            sampling_rate: Sampling rate of the waveform (used when saving audio).
            generator_params: Keyword arguments of ESPnet's ``HiFiGANGenerator`` except ``in_channels``;
                the product of ``upsample_scales`` must equal the feature hop (ESPnet asserts it).
            discriminator_params: Keyword arguments of ``HiFiGANMultiScaleMultiPeriodDiscriminator``;
                empty means ESPnet's defaults, HiFi-GAN V1's 3-scale MSD + MPD with periods 2, 3, 5, 7, 11.
            generator_adv_loss_params: Keyword arguments of ``GeneratorAdversarialLoss``.
            discriminator_adv_loss_params: Keyword arguments of ``DiscriminatorAdversarialLoss``.
            feat_match_loss_params: Keyword arguments of ``FeatureMatchLoss``.
            mel_loss_params: Keyword arguments of ``MelSpectrogramLoss`` (its own STFT, independent of the
                input features).
            lambda_adv: Weight of the generator adversarial loss.
            lambda_feat_match: Weight of the feature-matching loss.
            lambda_mel: Weight of the mel-spectrogram L1 loss.
            cache_generator_outputs: Reuse the first turn's generator output in the second turn.
            discriminator_start_steps: Mel-only warm-up: for the first this many generator updates the
                generator is trained on the mel loss alone and the discriminator is neither run nor
                updated (its turn returns a loss without parameters, so its optimizer skips the step).
                The count is a buffer, so a resumed training continues where it stopped.
        """
        super().__init__()
        if segment_size < 1:
            raise ValueError(f"segment_size must be positive, got {segment_size}")
        if discriminator_start_steps < 0:
            raise ValueError(f"discriminator_start_steps must be >= 0, got {discriminator_start_steps}")
        generator_params = _merged(GENERATOR_DEFAULTS, generator_params)
        if generator_params.setdefault("in_channels", odim) != odim:
            raise ValueError(f"generator_params.in_channels {generator_params['in_channels']} != odim {odim}")
        if generator_params["out_channels"] != 1:
            raise ValueError("MelHiFiGAN produces mono audio: generator_params.out_channels must be 1")
        # The complete HiFiGANGenerator kwargs: what CLIPSonic's vocoder_conf needs to rebuild it.
        self.generator_conf = generator_params
        self.generator = HiFiGANGenerator(**generator_params)
        self.discriminator = HiFiGANMultiScaleMultiPeriodDiscriminator(**discriminator_params)
        self.generator_adv_loss = GeneratorAdversarialLoss(**_merged(ADV_LOSS_DEFAULTS, generator_adv_loss_params))
        self.discriminator_adv_loss = DiscriminatorAdversarialLoss(
            **_merged(ADV_LOSS_DEFAULTS, discriminator_adv_loss_params)
        )
        self.feat_match_loss = FeatureMatchLoss(**_merged(FEAT_MATCH_DEFAULTS, feat_match_loss_params))
        self.mel_loss = MelSpectrogramLoss(**_merged(MEL_LOSS_DEFAULTS, mel_loss_params))
        self.segment_size = segment_size
        self.lambda_adv = lambda_adv
        self.lambda_feat_match = lambda_feat_match
        self.lambda_mel = lambda_mel
        self.cache_generator_outputs = cache_generator_outputs
        self._cache = None
        self.discriminator_start_steps = discriminator_start_steps
        # Generator turns taken in training (drives the mel-only warm-up; saved with the checkpoint).
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))

        # Attributes read by espnet2.bin.tts_inference.Text2Speech.
        self.fs = sampling_rate
        self.spks = None
        self.langs = None
        self.spk_embed_dim = None

    @property
    def require_raw_speech(self) -> bool:
        """The discriminator and the mel loss need the waveform."""
        return True

    @property
    def require_vocoder(self) -> bool:
        """The model outputs a waveform itself."""
        return False

    @property
    def hop(self) -> int:
        """Samples per feature frame (the generator's upsampling factor)."""
        return self.generator.upsample_factor

    def forward(
        self,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        feats: torch.Tensor,
        feats_lengths: torch.Tensor,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        forward_generator: bool = True,
        **kwargs,
    ) -> Dict[str, Any]:
        """One generator or discriminator turn on random windows of the batch.

        Args:
            text: Token ids ``(B, L)`` (ignored but for the batch size).
            text_lengths: ``(B,)`` (ignored).
            feats: Normalised log-mel ``(B, T_feats, odim)`` from ``ESPnetGANTTSModel``.
            feats_lengths: ``(B,)``.
            speech: Waveform ``(B, T_wav)``.
            speech_lengths: ``(B,)`` (the frames of ``feats`` already encode it).
            forward_generator: Generator turn if true, else discriminator turn.
            **kwargs: Other batch entries (``spembs``, ``utt_id``, ...), ignored.

        Returns:
            ``loss`` ``(1,)``, ``stats`` (the weighted loss terms), ``weight`` (the batch size) and
            ``optim_idx`` (0 generator, 1 discriminator), the form ESPnet's ``GANTrainer`` expects.
        """
        n_mels = self.generator_conf["in_channels"]
        if feats.shape[-1] != n_mels:
            raise ValueError(f"feats have {feats.shape[-1]} bands, the generator takes {n_mels}")
        batch_size = text.size(0)
        if self.warming_up:
            return self._warmup_turn(feats, feats_lengths, speech, forward_generator, batch_size)
        reuse_cache = self.cache_generator_outputs and self._cache is not None
        if reuse_cache:
            speech_hat_, speech_ = self._cache
        elif forward_generator or self.cache_generator_outputs:
            speech_hat_, speech_ = self._generate(feats, feats_lengths, speech)
        else:
            with torch.no_grad():  # the discriminator turn never back-propagates into the generator
                speech_hat_, speech_ = self._generate(feats, feats_lengths, speech)
        if self.training and self.cache_generator_outputs and not reuse_cache:
            self._cache = (speech_hat_, speech_)
        else:
            self._cache = None

        if forward_generator:
            with _no_param_grads(self.discriminator):
                p_hat = self.discriminator(speech_hat_)
                with torch.no_grad():
                    p = self.discriminator(speech_)
            adv_loss = self.lambda_adv * self.generator_adv_loss(p_hat)
            feat_match_loss = self.lambda_feat_match * self.feat_match_loss(p_hat, p)
            mel_loss = self.lambda_mel * self.mel_loss(speech_hat_, speech_)
            loss = adv_loss + feat_match_loss + mel_loss
            stats = dict(
                generator_loss=loss.item(),
                generator_adv_loss=adv_loss.item(),
                generator_feat_match_loss=feat_match_loss.item(),
                generator_mel_loss=mel_loss.item(),
            )
            optim_idx = 0
            if self.training:
                self.generator_steps += 1
        else:
            p_hat = self.discriminator(speech_hat_.detach())
            p = self.discriminator(speech_)
            real_loss, fake_loss = self.discriminator_adv_loss(p_hat, p)
            loss = real_loss + fake_loss
            stats = dict(
                discriminator_loss=loss.item(),
                discriminator_real_loss=real_loss.item(),
                discriminator_fake_loss=fake_loss.item(),
            )
            optim_idx = 1
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return {"loss": loss, "stats": stats, "weight": weight, "optim_idx": optim_idx}

    @property
    def warming_up(self) -> bool:
        """True while training in the mel-only warm-up (see ``discriminator_start_steps``)."""
        return self.training and int(self.generator_steps) < self.discriminator_start_steps

    def _warmup_turn(self, feats, feats_lengths, speech, forward_generator: bool, batch_size: int):
        """A warm-up turn: the generator on the mel loss alone; the discriminator does nothing."""
        self._cache = None
        if forward_generator:
            speech_hat_, speech_ = self._generate(feats, feats_lengths, speech)
            loss = self.lambda_mel * self.mel_loss(speech_hat_, speech_)
            stats = dict(generator_loss=loss.item(), generator_mel_loss=loss.item())
            self.generator_steps += 1
            optim_idx = 0
        else:
            # A leaf that requires grad: backward() works, no parameter gets a gradient, so the
            # optimizer leaves the discriminator (and its moments) untouched.
            loss = torch.zeros((), device=feats.device, requires_grad=True)
            stats = dict(discriminator_loss=0.0)
            optim_idx = 1
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return {"loss": loss, "stats": stats, "weight": weight, "optim_idx": optim_idx}

    def _generate(self, feats: torch.Tensor, feats_lengths: torch.Tensor, speech: torch.Tensor):
        """Vocode one random window per utterance; return it with the matching real waveform, ``(B, 1, S*hop)``."""
        s, hop = self.segment_size, self.hop
        c = feats.transpose(1, 2)  # (B, odim, T_feats)
        if c.shape[2] < s:
            c = F.pad(c, (0, s - c.shape[2]))
        c_, start_idxs = get_random_segments(c, feats_lengths.to(c.device), s)
        # A window may reach one frame past the last full hop of speech (centred STFT: T_feats = 1 + T//hop).
        speech = speech.unsqueeze(1)
        need = (int(start_idxs.max()) + s) * hop
        if speech.shape[2] < need:
            speech = F.pad(speech, (0, need - speech.shape[2]))
        speech_ = get_segments(speech, start_idxs * hop, s * hop)
        return self.generator(c_), speech_

    @torch.no_grad()
    def inference(self, text: torch.Tensor, feats: Optional[torch.Tensor] = None, **kwargs) -> Dict[str, torch.Tensor]:
        """Vocode a normalised mel.

        Args:
            text: Token ids (ignored; ``GANTTSTask`` passes one).
            feats: Normalised log-mel ``(T_feats, odim)``, e.g. CLIPSonic's ``feat_gen``.
            **kwargs: Other decode options from ESPnet, ignored.

        Returns:
            ``wav``: ``(T_feats * hop,)``.
        """
        if feats is None:
            raise ValueError(
                "MelHiFiGAN is a vocoder: pass feats (a normalised mel), or speech with use_teacher_forcing=True"
            )
        return {"wav": self.generator.inference(feats).view(-1)}


# BigVGAN config.json key -> the matching ESPnet fbank (LogMelFbank) parameter
_BIGVGAN_KEYS = {
    "sampling_rate": "fs",
    "n_fft": "n_fft",
    "hop_size": "hop_length",
    "win_size": "win_length",
    "num_mels": "n_mels",
    "fmin": "fmin",
    "fmax": "fmax",
}
_LOG_CLAMP_BIGVGAN = 1e-5  # BigVGAN's spectral_normalize_torch: log(clamp(mel, 1e-5))


def espnet_fbank_conf(feats_extract_conf: Dict[str, Any]) -> Dict[str, Any]:
    """The values ESPnet's ``fbank`` actually uses for the keys BigVGAN also has (its defaults filled in)."""
    conf = dict(fs=16000, n_fft=1024, hop_length=256, win_length=None, n_mels=80, fmin=80, fmax=7600)
    conf.update({k: v for k, v in feats_extract_conf.items() if k in conf})
    if conf["win_length"] is None:
        conf["win_length"] = conf["n_fft"]
    if conf["fmax"] is None:
        conf["fmax"] = conf["fs"] / 2
    log_base = feats_extract_conf.get("log_base", 10.0)
    if log_base != 10.0:
        raise ValueError(f"expected ESPnet's default log10 fbank, got log_base={log_base}")
    return conf


def bigvgan_mismatches(bigvgan_config: Dict[str, Any], feats_extract_conf: Dict[str, Any]) -> Dict[str, tuple]:
    """``{key: (BigVGAN value, ESPnet value)}`` for each mel parameter where the two front-ends differ."""
    espnet = espnet_fbank_conf(feats_extract_conf)
    out = {}
    for bkey, ekey in _BIGVGAN_KEYS.items():
        bval = bigvgan_config.get(bkey)
        if bkey == "fmax" and bval is None:
            bval = bigvgan_config.get("sampling_rate", 0) / 2
        if bval is None or float(bval) != float(espnet[ekey]):
            out[bkey] = (bval, espnet[ekey])
    window = feats_extract_conf.get("window", "hann")
    if window != "hann":  # BigVGAN always uses a Hann window
        out["window"] = ("hann", window)
    return out


def espnet_mel_to_bigvgan(feats: torch.Tensor, normalize: GlobalMVN) -> torch.Tensor:
    """Normalised ESPnet log10 mel ``(T, n_mels)`` -> BigVGAN's input ``(1, n_mels, T)``, ``ln(max(mel, 1e-5))``.

    Args:
        feats: Output of ESPnet's ``fbank`` + ``global_mvn`` (e.g. CLIPSonic's ``feat_gen``).
        normalize: The ``GlobalMVN`` that produced it (its ``inverse`` gives back the log10 mel).
    """
    log10_mel, _ = normalize.inverse(feats.clone()[None])  # GlobalMVN.inverse works in place
    ln_mel = (log10_mel * math.log(10.0)).clamp(min=math.log(_LOG_CLAMP_BIGVGAN))
    return ln_mel.transpose(1, 2)


class BigVGANVocoder(torch.nn.Module):
    """A user's pretrained BigVGAN applied to CLIPSonic's normalised ESPnet mel.

    What a user needs: ``pip install bigvgan`` (NVIDIA's package, 2.4.1; it pulls librosa, matplotlib,
    huggingface-hub, ...) and a local BigVGAN directory holding ``config.json`` and
    ``bigvgan_generator.pt`` whose mel front-end equals the generator's ``fbank`` (sampling rate, n_fft,
    hop, window, n_mels, fmin, fmax). No public 16 kHz / 64-band / hop-512 BigVGAN is known to us, so in
    practice that means a BigVGAN trained on such mels; the HiFi-GAN of :class:`MelHiFiGAN` is the
    default vocoder.

    How the features are mapped (only when the parameters above match): the normalised mel is
    de-normalised with the generator's ``global_mvn`` stats (:func:`espnet_mel_to_bigvgan`), giving
    ``log10(max(mel, 1e-10))``; multiplying by ln 10 and clamping at ln 1e-5 gives BigVGAN's
    ``ln(max(mel, 1e-5))``. Both use a Slaney librosa mel basis on the magnitude of a Hann-windowed STFT,
    so the values then agree up to the two magnitude floors (1e-10 vs sqrt(1e-9)). The framing differs:
    ESPnet centres frame t on sample ``t*hop`` (one frame more per clip), BigVGAN on ``t*hop + hop/2``;
    the first ``hop // 2`` output samples are dropped to compensate, so ``wav`` has
    ``T_feats * hop - hop // 2`` samples.

    Args:
        model_dir: Local BigVGAN directory (``config.json`` + ``bigvgan_generator.pt``).
        feats_extract_conf: The generator's ``feats_extract_conf`` (``fbank``).
        stats_file: The generator's ``global_mvn`` stats (``feats_stats.npz``).

    Raises:
        ValueError: The BigVGAN mel front-end differs from the generator's features (and how).
        ImportError: The ``bigvgan`` package is not installed.
    """

    def __init__(self, model_dir: Union[str, Path], feats_extract_conf: Dict[str, Any], stats_file: Union[str, Path]):
        super().__init__()
        model_dir = Path(model_dir)
        config_file = model_dir / "config.json"
        if not config_file.is_file() or not (model_dir / "bigvgan_generator.pt").is_file():
            raise FileNotFoundError(f"{model_dir} must hold config.json and bigvgan_generator.pt (a local BigVGAN)")
        config = json.loads(config_file.read_text())
        diff = bigvgan_mismatches(config, feats_extract_conf)
        if diff:
            detail = ", ".join(f"{k}: BigVGAN {b} vs ESPnet {e}" for k, (b, e) in diff.items())
            raise ValueError(
                "this BigVGAN was trained on different mel features than the generator produces "
                f"({detail}); a vocoder only inverts the features it was trained on. Train MelHiFiGAN "
                "(python -m espnet2.bin.gan_tts_train --tts mel_hifigan) on the generator's features instead."
            )
        try:
            from bigvgan import BigVGAN
            from bigvgan.env import AttrDict
        except ImportError as e:
            raise ImportError("BigVGANVocoder needs NVIDIA's bigvgan package: pip install bigvgan") from e
        self.hop = int(config["hop_size"])
        self.normalize = GlobalMVN(stats_file)
        # What BigVGAN.from_pretrained does for a local directory, without its hub layer (whose 2.4.1
        # signature breaks with current huggingface_hub) and with weights_only loading.
        self.bigvgan = BigVGAN(AttrDict(config), use_cuda_kernel=False)
        state = torch.load(model_dir / "bigvgan_generator.pt", map_location="cpu", weights_only=True)["generator"]
        try:
            self.bigvgan.load_state_dict(state)
            self.bigvgan.remove_weight_norm()
        except RuntimeError:  # a checkpoint saved with weight norm already removed
            self.bigvgan.remove_weight_norm()
            self.bigvgan.load_state_dict(state)
        self.bigvgan.eval()

    @torch.no_grad()
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Vocode a normalised mel ``(T, n_mels)`` -> waveform ``(T * hop - hop // 2,)``."""
        wav = self.bigvgan(espnet_mel_to_bigvgan(feats, self.normalize)).view(-1)
        return wav[self.hop // 2 :]
