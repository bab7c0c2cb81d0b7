"""Where a source sits in its clip: the audio window and the frame-embedding window around a centre.

Shared by the training-time mixing preprocessor (random centres) and the fixed evaluation mixtures (clip
centres), so both crop the same way. Pure numpy.
"""

import numpy as np

__all__ = ["center_frame_mean", "crop_around", "middle_window"]


def middle_window(length: int, num: int) -> slice:
    """The ``num`` consecutive indices in the middle of ``range(length)`` (all of them if fewer).

    The one definition of "the frames around the clip centre": image queries cached per clip and per-frame
    embeddings reduced at evaluation time both use it, so they agree for even frame counts too.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    start = max(length - num, 0) // 2
    return slice(start, start + num)


def center_frame_mean(query: np.ndarray, center: int, num_frames: int) -> np.ndarray:
    """Mean of ``num_frames`` rows of a per-frame embedding ``(F, D)`` around row ``center`` -> ``(D,)``.

    A ``(D,)`` query (or LabelSep's integer label id) is returned as is. The window is shifted to stay inside
    ``[0, F)``.
    """
    if query.ndim < 2 or not np.issubdtype(query.dtype, np.floating):
        return query
    n = query.shape[0]
    start = min(max(center - (num_frames - 1) // 2, 0), max(n - num_frames, 0))
    return query[start : start + num_frames].mean(axis=0)


def crop_around(audio: np.ndarray, center: int, length: int) -> np.ndarray:
    """``length`` samples of ``audio`` centred on sample ``center`` (shifted inside; zero-padded if short)."""
    start = min(max(center - length // 2, 0), max(len(audio) - length, 0))
    out = audio[start : start + length]
    if len(out) < length:
        out = np.pad(out, (0, length - len(out)))
    return out
