"""How well a CLIP model ties text to held-out pictures: the quality of the query space a separator inherits.

On the mini corpus the CLIP model is a tiny stand-in fitted in the recipe; its zero-shot transfer (train on
image queries, test on text queries) is only as good as the alignment measured here, on test clips it never saw.
"""

from typing import Dict, Mapping

import numpy as np

__all__ = ["clip_retrieval"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(x)
    if norm == 0 or not np.isfinite(norm):
        raise ValueError("a zero or non-finite embedding cannot be compared by cosine similarity")
    return x / norm


def clip_retrieval(
    image: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray], labels: Mapping[str, str]
) -> Dict[str, float]:
    """Zero-shot classification and text-to-image retrieval over held-out clips (cosine similarity).

    Args:
        image: Image embedding ``(D,)`` per clip key.
        text: Text embedding ``(D,)`` of the clip's label per clip key (one prompt embedding per label: the
            clips of a label share it; their mean is taken).
        labels: Label per clip key.

    Returns:
        ``clips`` and ``labels`` (counts), ``image_to_text_top1`` (fraction of clips whose nearest label text
        is their own), ``text_to_image_r_precision`` (per label with n clips, the fraction of its clips among
        the n images nearest to its text; mean over labels) and ``chance`` (1 / labels).

    Raises:
        ValueError: fewer than 2 labels, or a clip without an embedding.
    """
    keys = sorted(k for k in labels if k in image)
    missing = [k for k in keys if k not in text]
    if missing:
        raise ValueError(f"no text embedding for clip {missing[0]}")
    names = sorted({labels[k] for k in keys})
    if len(names) < 2:
        raise ValueError(f"retrieval needs clips of at least 2 labels, got {len(names)}")
    label_text = np.stack([_unit(np.mean([text[k] for k in keys if labels[k] == n], axis=0)) for n in names])
    images = np.stack([_unit(image[k]) for k in keys])
    truth = np.array([names.index(labels[k]) for k in keys])
    sim = images @ label_text.T  # (clips, labels)
    top1 = float(np.mean(sim.argmax(axis=1) == truth))
    r_prec = []
    for j in range(len(names)):
        n = int(np.sum(truth == j))
        nearest = np.argsort(-sim[:, j], kind="stable")[:n]
        r_prec.append(float(np.mean(truth[nearest] == j)))
    return dict(
        clips=len(keys), labels=len(names), image_to_text_top1=top1,
        text_to_image_r_precision=float(np.mean(r_prec)), chance=1.0 / len(names),
    )  # fmt: skip
