"""Fréchet Audio Distance (FAD) with VGGish embeddings, for users who have the VGGish weights.

The metric CLIPSonic reports: Gaussians are fitted to the 128-d VGGish embeddings of every 0.96-s example of
the generated clips and of the reference clips, and their Fréchet distance is the FAD (lower is closer).
VGGish here is the PyTorch port's architecture and state-dict layout (``features.*``, ``embeddings.*``), so the
port's released weights load as they are::

    https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth

Embeddings are the raw 128-d output of the embedding layer (after its ReLU), without the AudioSet PCA and
8-bit quantisation, as FAD is usually computed.

Front end (VGGish's): mono, 16 kHz (other rates are resampled with torchaudio), frames of 25 ms every 10 ms
without padding, a periodic Hann window, the magnitude of a 512-point FFT, 64 mel bands between 125 and 7,500
Hz whose triangles are linear on the HTK mel scale (``1127 ln(1 + f / 700)``, the DC bin excluded), ``ln(mel +
0.01)``, then non-overlapping examples of 96 frames. A clip shorter than one example is zero-padded to 0.96 s.

Reference:
    K. Kilgour et al., "Fréchet Audio Distance: A Reference-free Metric for Evaluating Music Enhancement
    Algorithms", Interspeech 2019. S. Hershey et al., "CNN Architectures for Large-Scale Audio
    Classification", ICASSP 2017 (VGGish). H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with
    Unlabeled Videos and Pretrained Language-Vision Models", WASPAA 2023 (FAD of the generated audio).
"""

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from typeguard import typechecked

from espnet2.enh.clipsep.errors import first_line
from espnet2.tts_diff.probe import frechet_distance

VGGISH_FS = 16000
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
WINDOW, HOP, N_FFT = 400, 160, 512  # 25 ms, 10 ms, the next power of two
N_MELS, F_MIN, F_MAX, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_FRAMES = 96  # 0.96 s, examples do not overlap


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix() -> torch.Tensor:
    """VGGish's mel weights ``(N_FFT // 2 + 1, N_MELS)``: triangles linear in mel, the DC row zero."""
    bins_mel = _hz_to_mel(np.linspace(0.0, VGGISH_FS / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0] = 0.0
    return torch.from_numpy(weights).float()


def vggish_examples(wav: Union[np.ndarray, torch.Tensor], fs: int) -> torch.Tensor:
    """Log-mel examples of one clip.

    Args:
        wav: Waveform ``(T,)`` (or ``(T, C)``, down-mixed) in [-1, 1].
        fs: Its sampling rate; resampled to 16 kHz when different.

    Returns:
        ``(N, 1, 96, 64)`` with ``N = (frames - 96) // 96 + 1`` (at least 1).
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.dim() == 2:
        x = x.mean(dim=1)
    if x.dim() != 1:
        raise ValueError(f"expected a waveform (T,) or (T, C), got shape {tuple(x.shape)}")
    if fs != VGGISH_FS:
        import torchaudio

        x = torchaudio.functional.resample(x, fs, VGGISH_FS)
    need = WINDOW + HOP * (EXAMPLE_FRAMES - 1)  # samples of one whole example
    if x.numel() < need:
        x = torch.nn.functional.pad(x, (0, need - x.numel()))
    frames = x.unfold(0, WINDOW, HOP) * torch.hann_window(WINDOW, periodic=True)
    mag = torch.fft.rfft(frames, n=N_FFT).abs()
    logmel = torch.log(mag @ vggish_mel_matrix() + LOG_OFFSET)  # (frames, 64)
    return logmel.unfold(0, EXAMPLE_FRAMES, EXAMPLE_FRAMES).transpose(1, 2).unsqueeze(1)


class VGGish(torch.nn.Module):
    """VGGish: four VGG blocks on ``(N, 1, 96, 64)`` log-mel examples, then three linear layers to 128-d.

    Reference:
        S. Hershey et al., "CNN Architectures for Large-Scale Audio Classification", ICASSP 2017.
    """

    @typechecked
    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
                cin = v
        self.features = torch.nn.Sequential(*layers)
        self.embeddings = torch.nn.Sequential(
            torch.nn.Linear(512 * 6 * 4, 4096), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(4096, 4096), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(4096, 128), torch.nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 96, 64)`` -> ``(N, 128)``; the maps are flattened as (time, frequency, channel)."""
        x = self.features(examples)  # (N, 512, 6, 4)
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))


def load_vggish(path: Union[str, os.PathLike], device: str = "cpu") -> VGGish:
    """VGGish with the weights of ``path`` (a state dict, e.g. the PyTorch port's ``vggish-10086976.pth``).

    Raises:
        FileNotFoundError: No file at ``path``; the message says what to download.
        ValueError: The file is not a VGGish state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VGGish weights not found; download {VGGISH_URL} and pass its path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = VGGish()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not VGGish weights ({first_line(err)})") from err
    return model.to(device).eval()


@torch.no_grad()
def vggish_embeddings(
    model: VGGish,
    wavs: Sequence[Union[np.ndarray, torch.Tensor]],
    fs: int,
    batch_size: int = 64,
    progress: Optional[str] = None,
) -> np.ndarray:
    """The 128-d embedding of every example of every clip, ``(sum of N_i, 128)``, in clip order.

    Examples are batched across clips, ``batch_size`` at a time, so memory does not grow with the set.
    ``progress`` labels a tqdm bar over the clips (None: no bar).
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    out, pending = [], []
    for i, wav in enumerate(tqdm(wavs, desc=progress, unit="clip", disable=progress is None)):
        pending.append(vggish_examples(wav, fs))
        if sum(len(x) for x in pending) >= batch_size or i == len(wavs) - 1:
            batch = torch.cat(pending)
            out += [model(batch[j : j + batch_size].to(device)).cpu() for j in range(0, len(batch), batch_size)]
            pending = []
    return torch.cat(out).double().numpy() if out else np.zeros((0, 128))


def frechet_audio_distance(gen_emb: np.ndarray, ref_emb: np.ndarray) -> float:
    """FAD between the VGGish embeddings ``(N, 128)`` of generated and ``(M, 128)`` of reference examples."""
    return frechet_distance(gen_emb, ref_emb)
