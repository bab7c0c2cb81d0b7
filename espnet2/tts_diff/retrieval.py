"""The retrieval baseline: a text query answered with the audio of the nearest training clip.

For a query's CLIP text embedding, the training clip whose CLIP image embedding is nearest in cosine
similarity is found, and its audio, cropped around its centre to the generated length, is the answer. It
needs no generator and no labels; it is the floor a generator has to beat with the same embeddings.

A training clip's image embedding is the one the other sets are queried with: a ``(D,)`` vector as is, a
per-frame stack ``(F, D)`` reduced to the mean of its ``num_frames`` middle frames
(:func:`espnet2.enh.clipsep.clip_window.middle_window`, the frames ``espnet2.enh.clipsep.bin.embed`` averages).

Reference:
    H.-W. Dong et al., "CLIPSynth: Learning Text-queried Sound Synthesis from Unlabeled Videos" (ICML 2023
    submission; seed 004, abstract): "CLIPSynth outperforms a retrieval-based baseline on MUSIC in terms of
    the Fréchet audio distance."
"""

from typing import Tuple

import numpy as np

from espnet2.enh.clipsep.clip_window import crop_around, middle_window

__all__ = ["centre_crop", "clip_embedding", "nearest"]


def clip_embedding(embedding: np.ndarray, num_frames: int = 3) -> np.ndarray:
    """One clip's image embedding ``(D,)`` from ``(D,)`` or a per-frame stack ``(F, D)``.

    Args:
        embedding: ``(D,)`` (returned as float32) or ``(F, D)`` (the mean of its ``num_frames`` middle rows).
        num_frames: Frames around the centre averaged from a stack.

    Raises:
        ValueError: another shape.
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim == 1:
        return embedding
    if embedding.ndim != 2 or embedding.shape[0] == 0:
        raise ValueError(f"expected a (D,) embedding or an (F, D) per-frame stack, got shape {embedding.shape}")
    return embedding[middle_window(embedding.shape[0], num_frames)].mean(axis=0)


def nearest(queries: np.ndarray, bank: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For each query, the bank row of highest cosine similarity (the first of equal ones) and that similarity.

    Args:
        queries: ``(Q, D)`` query embeddings (CLIP text).
        bank: ``(N, D)`` candidate embeddings (CLIP image, one per training clip).

    Returns:
        Indices into ``bank`` ``(Q,)`` (int64) and their cosine similarities ``(Q,)`` (float64).

    Raises:
        ValueError: mismatched sizes, an empty bank, or an all-zero vector (no direction to compare).
    """
    queries = np.asarray(queries, dtype=np.float64)
    bank = np.asarray(bank, dtype=np.float64)
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries (Q, D) and bank (N, D) must share D, got {queries.shape} and {bank.shape}")
    if len(bank) == 0:
        raise ValueError("empty bank: no training clip to retrieve")
    norms_q, norms_b = np.linalg.norm(queries, axis=1), np.linalg.norm(bank, axis=1)
    if (norms_q == 0).any() or (norms_b == 0).any():
        raise ValueError("an all-zero embedding has no cosine similarity")
    cos = (queries / norms_q[:, None]) @ (bank / norms_b[:, None]).T  # (Q, N)
    index = cos.argmax(axis=1)
    return index, cos[np.arange(len(queries)), index]


def centre_crop(audio: np.ndarray, length: int) -> np.ndarray:
    """``length`` samples around the centre of ``audio`` ``(T,)``; a shorter clip is zero-padded at its end."""
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    return crop_around(np.asarray(audio), len(audio) // 2, length)
