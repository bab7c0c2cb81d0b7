"""Offline probe classifier for evaluating generated audio: relevance and probe-FD.

FAD (VGGish) and CLAP need pretrained weights that are not reachable offline, so generated audio is judged by a
small CNN trained on the corpus' own clips and labels (labels are used only here, for evaluation; the generator
never sees them). It gives two figures, each under its own name:

* **relevance**: accuracy of the probe on generated audio against the class of the query that produced it;
* **probe-FD**: the Fréchet distance between Gaussians fitted to the probe's embeddings of two sets of clips
  (generated vs real). It is *not* FAD: the embedding is this probe's, trained on this corpus.

The probe reads the generator's mel features (ESPnet ``LogMelFbank``: 16 kHz, n_fft 2048, hop 512, 64 bands,
0-8 kHz, log10), then three Conv3x3-BN-ReLU-MaxPool blocks, a masked mean over time of the (channel x
frequency) maps, a linear embedding and a linear classifier on its ReLU.

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023. M. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium", NeurIPS 2017 (the Fréchet distance).
"""

import os
import pickle
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from typeguard import typechecked

from espnet2.tts.feats_extract.log_mel_fbank import LogMelFbank

WavLike = Union[np.ndarray, torch.Tensor]


class ProbeClassifier(torch.nn.Module):
    """Log-mel CNN: waveform -> embedding -> class logits.

    Args:
        num_classes: Number of classes.
        embed_dim: Size of the embedding used for probe-FD.
        channels: Output channels of the conv blocks (each halves time and frequency).
        dropout: Dropout before the classifier.
        fs: Sampling rate in Hz.
        n_fft: FFT size of the mel front-end.
        hop_length: Hop in samples.
        n_mels: Mel bands.
        fmin: Lowest mel frequency in Hz.
        fmax: Highest mel frequency in Hz.
    """

    @typechecked
    def __init__(
        self,
        num_classes: int,
        embed_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64),
        dropout: float = 0.2,
        fs: int = 16000,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 64,
        fmin: int = 0,
        fmax: int = 8000,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if embed_dim < 1 or not channels or min(channels) < 1:
            raise ValueError("embed_dim and channels must be positive (and channels non-empty)")
        self.num_classes = num_classes
        self.fs = fs
        self.feats = LogMelFbank(
            fs=fs, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, log_base=10.0
        )
        self.input_norm = torch.nn.BatchNorm2d(1)
        blocks, c_in = [], 1
        for c in channels:
            blocks += [
                torch.nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(c),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c
        self.convs = torch.nn.Sequential(*blocks)
        self.num_pools = len(channels)
        bins = n_mels
        for _ in channels:
            bins = (bins + 1) // 2
        self.embed = torch.nn.Linear(c_in * bins, embed_dim)
        self.classifier = torch.nn.Sequential(
            torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(embed_dim, num_classes)
        )

    def forward(
        self, speech: torch.Tensor, speech_lengths: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Classify waveforms.

        Args:
            speech: Waveforms ``(B, N)``, zero-padded.
            speech_lengths: Valid samples ``(B,)`` (all ``N`` when None).

        Returns:
            Tuple of logits ``(B, num_classes)`` and embeddings ``(B, embed_dim)``.
        """
        if speech_lengths is None:
            speech_lengths = torch.full((speech.size(0),), speech.size(1), dtype=torch.long, device=speech.device)
        feats, feats_lens = self.feats(speech, speech_lengths)  # (B, T, M)
        return self.forward_feats(feats, feats_lens)

    def forward_feats(
        self, feats: torch.Tensor, feats_lens: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Classify log-mel features directly (e.g. a generator's de-normalised mel, before any vocoder).

        Args:
            feats: log10 mel ``(B, T, n_mels)`` of this probe's front-end (``self.feats``), zero-padded.
            feats_lens: Valid frames ``(B,)`` (all ``T`` when None).

        Returns:
            Tuple of logits ``(B, num_classes)`` and embeddings ``(B, embed_dim)``.
        """
        if feats_lens is None:
            feats_lens = torch.full((feats.size(0),), feats.size(1), dtype=torch.long, device=feats.device)
        h = self.convs(self.input_norm(feats.unsqueeze(1)))  # (B, C, T', M')
        h = h.transpose(2, 3).flatten(1, 2)  # (B, C * M', T'): frequency position is kept
        t_lens = feats_lens
        for _ in range(self.num_pools):
            t_lens = torch.div(t_lens + 1, 2, rounding_mode="floor")
        t_lens = t_lens.clamp(min=1, max=h.size(2))
        mask = (torch.arange(h.size(2), device=h.device)[None] < t_lens[:, None]).to(h.dtype)  # (B, T')
        pooled = (h * mask[:, None]).sum(dim=2) / t_lens[:, None].to(h.dtype)  # (B, C * M')
        emb = self.embed(pooled)
        return self.classifier(emb), emb


def _pad(items: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad along the first axis: ``(N, T_max, ...)`` and the lengths ``(N,)``."""
    lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
    out = torch.zeros(len(items), int(lengths.max()), *items[0].shape[1:])
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return out, lengths


def _as_tensors(items: Sequence[WavLike], n_mels: Optional[int] = None) -> List[torch.Tensor]:
    """Float tensors: non-empty waveforms ``(T,)``, or with ``n_mels`` log-mels ``(T, n_mels)``."""
    out = []
    for i, x in enumerate(items):
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
        if n_mels is None and (x.dim() != 1 or x.numel() == 0):
            raise ValueError(f"waveform {i} must be a non-empty 1-D array, got shape {tuple(x.shape)}")
        if n_mels is not None and (x.dim() != 2 or len(x) == 0 or x.shape[1] != n_mels):
            raise ValueError(f"mel {i} must be a non-empty (T, {n_mels}) array, got shape {tuple(x.shape)}")
        out.append(x)
    return out


@torch.no_grad()
def probe_outputs(
    probe: ProbeClassifier,
    wavs: Sequence[WavLike],
    batch_size: int = 16,
    mels: bool = False,
    progress: Optional[str] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings of whole clips in eval mode.

    Args:
        probe: The probe (its mode is restored afterwards).
        wavs: N waveforms of any lengths (1-D arrays at ``probe.fs``), or with ``mels`` N log10 mels
            ``(T, n_mels)`` of the probe's front-end (:meth:`ProbeClassifier.forward_feats`).
        batch_size: Clips per forward pass (clips of similar length are batched together).
        mels: Whether ``wavs`` are log-mels.
        progress: Label of a tqdm bar over the clips (None: no bar).

    Returns:
        Tuple of logits ``(N, num_classes)`` and embeddings ``(N, embed_dim)`` in input order.
    """
    from tqdm import tqdm

    tensors = _as_tensors(wavs, probe.feats.get_parameters()["n_mels"] if mels else None)
    forward = probe.forward_feats if mels else probe
    was_training = probe.training
    probe.eval()
    order = sorted(range(len(tensors)), key=lambda i: len(tensors[i]))
    device = next(probe.parameters()).device
    logits = torch.zeros(len(tensors), probe.num_classes)
    embs = torch.zeros(len(tensors), probe.embed.out_features)
    bar = tqdm(total=len(order), desc=progress, unit="clip", disable=progress is None)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x, lens = _pad([tensors[i] for i in idx])
        lo, em = forward(x.to(device), lens.to(device))
        logits[idx], embs[idx] = lo.cpu(), em.cpu()
        bar.update(len(idx))
    bar.close()
    probe.train(was_training)
    return logits, embs


def relevance(
    probe: ProbeClassifier, wavs: Sequence[WavLike], class_ids: Sequence[int], batch_size: int = 16
) -> float:
    """Accuracy of the probe against the class each waveform was generated for.

    Args:
        probe: A trained probe.
        wavs: N waveforms.
        class_ids: N class indices (the query class of each waveform).
        batch_size: Clips per forward pass.

    Returns:
        The fraction of waveforms whose predicted class is their query class.
    """
    if len(wavs) != len(class_ids) or not len(wavs):
        raise ValueError(f"need as many class ids as waveforms (> 0), got {len(class_ids)} and {len(wavs)}")
    logits, _ = probe_outputs(probe, wavs, batch_size)
    return float((logits.argmax(dim=1) == torch.as_tensor(list(class_ids))).float().mean())


def gaussian_stats(emb: Union[np.ndarray, torch.Tensor]) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of embeddings ``(N, D)``, N >= 2."""
    emb = np.asarray(emb.detach().cpu() if isinstance(emb, torch.Tensor) else emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"need embeddings of shape (N >= 2, D), got {emb.shape}")
    return emb.mean(axis=0), np.cov(emb, rowvar=False).reshape(emb.shape[1], emb.shape[1])


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((mat + mat.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a covariance ``(D, D)`` (negative rounding eigenvalues clipped to 0)."""
    return _psd_sqrt(np.asarray(cov, np.float64))


def frechet_distance_to_reference(emb: np.ndarray, ref_mu: np.ndarray, ref_cov: np.ndarray, ref_sqrt: np.ndarray) -> float:
    """Fréchet distance between the Gaussian of embeddings ``(N, D)`` and a fixed reference ``N(ref_mu, ref_cov)``.

    The same value as ``frechet_distance_from_stats(*gaussian_stats(emb), ref_mu, ref_cov)``, computed from the
    ``N`` centred rows ``Xc``: ``tr((cov ref_cov)^(1/2))`` is the sum of the singular values of
    ``Xc ref_cov^(1/2) / sqrt(N - 1)`` (``ref_sqrt`` = :func:`psd_sqrt` of ``ref_cov``, computed once), an
    ``N x D`` SVD instead of ``D x D`` eigenproblems: for many small sets against one reference (bootstrap draws).
    """
    x = np.asarray(emb, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] != len(ref_mu):
        raise ValueError(f"need embeddings of shape (N >= 2, {len(ref_mu)}), got {x.shape}")
    n, mu = x.shape[0], x.mean(axis=0)
    xc = x - mu
    tr_sqrt = np.linalg.svd(xc @ ref_sqrt, compute_uv=False).sum() / np.sqrt(n - 1)
    fd = float(((mu - ref_mu) ** 2).sum() + (xc**2).sum() / (n - 1) + np.trace(ref_cov) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


def frechet_distance_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2).

    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``; the trace of the matrix square root is computed
    as the sum of square roots of the eigenvalues of the symmetric PSD matrix ``cov1^(1/2) cov2 cov1^(1/2)``
    (same eigenvalues as ``cov1 cov2``), so it is real and stable for the rank-deficient covariances of small
    sets.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: means {mu1.shape} {mu2.shape}, covariances {cov1.shape} {cov2.shape}")
    s1 = _psd_sqrt(cov1)
    mid = s1 @ cov2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0.0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


def frechet_distance(emb_a: Union[np.ndarray, torch.Tensor], emb_b: Union[np.ndarray, torch.Tensor]) -> float:
    """probe-FD: Fréchet distance between Gaussians fitted to embeddings ``(N_a, D)`` and ``(N_b, D)``."""
    return frechet_distance_from_stats(*gaussian_stats(emb_a), *gaussian_stats(emb_b))


def train_probe(
    probe: ProbeClassifier,
    wavs: Sequence[WavLike],
    class_ids: Sequence[int],
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 3e-3,
    segment: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, float]:
    """Train the probe with Adam and cross-entropy on random crops (random gain in [0.5, 1.5]).

    Args:
        probe: The probe to train in place.
        wavs: N training waveforms at ``probe.fs``.
        class_ids: N class indices.
        epochs: Passes over the data.
        batch_size: Clips per step.
        lr: Adam learning rate (cosine-decayed to 0).
        segment: Crop length in samples (shorter clips are zero-padded); None: the shortest clip.
        seed: Seed of initialisation-independent randomness (crops, gains, order).
        progress: Show a tqdm bar.

    Returns:
        ``{"steps", "wall_seconds", "final_loss", "train_accuracy"}`` (accuracy of the last epoch's batches).
    """
    from tqdm import tqdm

    tensors = _as_tensors(wavs)
    labels = torch.as_tensor(list(class_ids), dtype=torch.long)
    if len(tensors) != len(labels) or not len(tensors):
        raise ValueError(f"need as many class ids as waveforms (> 0), got {len(labels)} and {len(tensors)}")
    if labels.min() < 0 or labels.max() >= probe.num_classes:
        raise ValueError(f"class ids must lie in [0, {probe.num_classes})")
    segment = segment or min(t.numel() for t in tensors)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(tensors) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    probe.train()
    start = time.perf_counter()
    loss_value, correct, seen = float("nan"), 0, 0
    device = next(probe.parameters()).device
    bar = tqdm(total=total, desc="train probe", unit="step", disable=not progress)
    for epoch in range(epochs):
        order = list(range(len(tensors)))
        rng.shuffle(order)
        correct = seen = 0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            crops = []
            for i in idx:
                w = tensors[i]
                off = rng.randint(0, max(w.numel() - segment, 0))
                crops.append(w[off : off + segment])
            x, lens = _pad(crops)
            x = x * (0.5 + torch.rand(len(idx), 1, generator=gen))
            logits, _ = probe(x.to(device), lens.to(device))
            loss = torch.nn.functional.cross_entropy(logits, labels[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_value = loss.item()
            correct += int((logits.argmax(1).cpu() == labels[idx]).sum())
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
    bar.close()
    probe.eval()
    return {
        "steps": total,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "final_loss": loss_value,
        "train_accuracy": correct / max(seen, 1),
    }


def read_wav(path: Union[str, os.PathLike], fs: int) -> np.ndarray:
    """Read a mono wav at ``fs`` as float32 ``(N,)``; one clear error naming the file otherwise."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"{path}: not a readable audio file ({err})") from err
    if rate != fs:
        raise ValueError(f"{path}: sampling rate {rate} Hz, expected {fs} Hz")
    if wav.shape[0] == 0:
        raise ValueError(f"{path}: empty audio")
    return wav.mean(axis=1)


def save_probe(probe: ProbeClassifier, conf: Dict, classes: Sequence[str], path: Union[str, os.PathLike]) -> None:
    """Write ``path`` (state dict) and ``<path minus suffix>.yaml`` (``probe_conf`` and ``classes``), atomically."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(probe.state_dict(), tmp)
    conf_path = path.with_suffix(".yaml")
    tmp_conf = conf_path.with_name(conf_path.name + ".tmp")
    conf = {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()}
    tmp_conf.write_text(yaml.safe_dump({"probe_conf": conf, "classes": list(classes)}), encoding="utf-8")
    os.replace(tmp, path)
    os.replace(tmp_conf, conf_path)


def load_probe(path: Union[str, os.PathLike]) -> Tuple[ProbeClassifier, List[str]]:
    """Load a probe written by :func:`save_probe`; returns ``(probe in eval mode, class names)``."""
    import yaml

    path = Path(path)
    conf_path = path.with_suffix(".yaml")
    for p in (path, conf_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: probe file not found")
    meta = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or "probe_conf" not in meta or "classes" not in meta:
        raise ValueError(f"{conf_path}: expected keys 'probe_conf' and 'classes'")
    classes = [str(c) for c in meta["classes"]]
    probe = ProbeClassifier(num_classes=len(classes), **meta["probe_conf"])
    try:
        probe.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a probe state dict matching {conf_path} ({str(err).splitlines()[0]})") from err
    return probe.eval(), classes
