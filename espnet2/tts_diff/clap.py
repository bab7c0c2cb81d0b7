"""CLAP score: how well generated clips match their text queries, by a local LAION-CLAP model.

The metric CLIPSonic reports next to FAD: the cosine similarity between the CLAP audio embedding of a generated
clip and the CLAP text embedding of its text query, averaged over the clips (reference-free, like CLIPScore; no
rescaling). The model is a *local* Hugging Face CLAP directory, e.g. a download of ``laion/clap-htsat-unfused``
(config.json, model.safetensors, the tokenizer's files, preprocessor_config.json; about 600 MB)::

    hf download laion/clap-htsat-unfused --include "*.json" "*.txt" model.safetensors --local-dir DIR

It is read with ``transformers`` (``ClapModel``, ``ClapProcessor``), imported only inside :func:`load_clap`:
ESPnet imports ``transformers`` at start-up whenever it is importable (about 7 s more for every ESPnet
process), so the recipe's environment does not have it; put an install of it on ``PYTHONPATH`` only for the
evaluation (``tools/install.sh`` keeps one for the tests, see ``.venv/clap-pythonpath``).

Each clip is down-mixed, resampled to the feature extractor's rate (48 kHz for LAION's) and given to the
feature extractor as it is configured (LAION's unfused model: clips shorter than 10 s repeated and padded,
longer ones cropped at random, here with a fixed NumPy seed so that a score is reproducible).

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained Language-Vision
    Models", WASPAA 2023 (CLAP score). Y. Wu et al., "Large-Scale Contrastive Language-Audio Pretraining with
    Feature Fusion and Keyword-to-Caption Augmentation", ICASSP 2023 (LAION-CLAP). J. Hessel et al.,
    "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", EMNLP 2021.
"""

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

CLAP_REPO = "laion/clap-htsat-unfused"
TRANSFORMERS_PIN = "transformers==5.25.0"
CROP_SEED = 0  # NumPy seed of the feature extractor's random crops of clips longer than its max_length_s


def import_transformers():
    """The ``transformers`` module, or an ImportError of one line that says how to install it."""
    try:
        import transformers
        from transformers import ClapModel, ClapProcessor  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"the CLAP score needs transformers, which is not importable ({err}): pip install {TRANSFORMERS_PIN} "
            "(ESPnet then imports it in every process, about 7 s more start-up), or install it into a separate "
            f"directory (pip install --target DIR --no-deps {TRANSFORMERS_PIN} tokenizers==0.23.3) and put DIR "
            "on PYTHONPATH only for the evaluation"
        ) from None
    return transformers


def load_clap(path: Union[str, os.PathLike], device: str = "cpu") -> Tuple[torch.nn.Module, object]:
    """``(ClapModel, ClapProcessor)`` of a local Hugging Face CLAP directory, offline, in eval mode.

    Args:
        path: Directory with ``config.json``, the weights, the tokenizer and the feature extractor's files.
        device: Torch device of the model.

    Raises:
        FileNotFoundError: No directory or no ``config.json`` there; the message says what to download.
        ImportError: ``transformers`` is not importable; the message says how to install it.
        ValueError: The directory does not hold a loadable CLAP model and processor.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        what = "no config.json in the CLAP model directory" if path.is_dir() else "CLAP model directory not found"
        raise FileNotFoundError(
            f"{path}: {what}; download one there with: hf download {CLAP_REPO} --include '*.json' '*.txt' "
            f"model.safetensors --local-dir {path} (about 600 MB)"
        )
    transformers = import_transformers()
    extra = {"use_kernels": False} if int(transformers.__version__.split(".")[0]) >= 5 else {}  # no hub kernels
    try:
        model = transformers.ClapModel.from_pretrained(path, local_files_only=True, **extra)
        processor = transformers.ClapProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a loadable CLAP model directory ({first})") from err
    return model.to(device).eval(), processor


def prepare_clip(wav: Union[np.ndarray, torch.Tensor], fs: int, target_fs: int) -> np.ndarray:
    """One clip as CLAP's feature extractor takes it: mono float32 ``(T',)`` at ``target_fs``.

    Args:
        wav: Waveform ``(T,)`` (or ``(T, C)``, down-mixed) in [-1, 1].
        fs: Its sampling rate; resampled with torchaudio when it differs from ``target_fs``.
        target_fs: The feature extractor's ``sampling_rate``.
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.dim() == 2:
        x = x.mean(dim=1)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"expected a non-empty waveform (T,) or (T, C), got shape {tuple(x.shape)}")
    if fs != target_fs:
        import torchaudio

        x = torchaudio.functional.resample(x, fs, target_fs)
    return x.numpy()


def cosine_rows(a: Union[np.ndarray, torch.Tensor], b: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Cosine similarity of each row of ``a`` ``(N, D)`` with the same row of ``b`` ``(N, D)``, ``(N,)`` float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norm, 1e-12)


def mean_and_sem(scores: Sequence[float]) -> Tuple[float, float]:
    """The mean of per-clip scores and its standard error ``std (ddof 1) / sqrt(n)`` (NaN for one clip)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no scores")
    sem = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), sem


def _pooled(output) -> torch.Tensor:
    """The embedding of ``get_*_features``: a tensor (transformers 4) or an output's ``pooler_output`` (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def clap_scores(
    model: torch.nn.Module,
    processor,
    wavs: Sequence[Union[np.ndarray, torch.Tensor]],
    fs: int,
    texts: Sequence[str],
    batch_size: int = 16,
    progress: Optional[str] = None,
) -> np.ndarray:
    """Per-clip CLAP score: cosine of the audio embedding of ``wavs[i]`` and the text embedding of ``texts[i]``.

    Args:
        model: A ``ClapModel`` (:func:`load_clap`).
        processor: Its ``ClapProcessor`` (feature extractor and tokenizer).
        wavs: Waveforms at ``fs``, resampled to the feature extractor's ``sampling_rate``.
        fs: Their sampling rate.
        texts: The text query of each clip (each distinct text is embedded once).
        batch_size: Clips (and texts) per forward pass.
        progress: Label of a tqdm bar over the clips (None: no bar).

    Returns:
        ``(N,)`` float64 cosine similarities in [-1, 1], in clip order.
    """
    from tqdm import tqdm

    if len(wavs) != len(texts):
        raise ValueError(f"{len(wavs)} clips but {len(texts)} texts")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = next(model.parameters()).device
    extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    target_fs = int(extractor.sampling_rate)
    distinct = sorted(set(texts))
    text_emb = []
    for i in range(0, len(distinct), batch_size):
        tokens = tokenizer(list(distinct[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
        text_emb.append(_pooled(model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})).cpu())
    text_emb = torch.cat(text_emb) if text_emb else torch.zeros(0)
    row = {t: i for i, t in enumerate(distinct)}
    audio_emb = []
    state = np.random.get_state()
    np.random.seed(CROP_SEED)  # the extractor crops long clips with NumPy's global generator
    bar = tqdm(total=len(wavs), desc=progress, unit="clip", disable=progress is None)
    try:
        for i in range(0, len(wavs), batch_size):
            clips = [prepare_clip(w, fs, target_fs) for w in wavs[i : i + batch_size]]
            feats = extractor(clips, sampling_rate=target_fs, return_tensors="pt")
            inputs = {k: feats[k].to(device) for k in ("input_features", "is_longer") if k in feats}
            audio_emb.append(_pooled(model.get_audio_features(**inputs)).cpu())
            bar.update(len(clips))
    finally:
        bar.close()
        np.random.set_state(state)
    if not audio_emb:
        return np.zeros(0)
    return cosine_rows(torch.cat(audio_emb).double().numpy(), text_emb[[row[t] for t in texts]].double().numpy())
