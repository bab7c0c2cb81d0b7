"""Zero-shot top-1 and text-to-image R-precision of a CLIP model on held-out clips."""

import numpy as np
import pytest

from espnet2.enh.clipsep.eval.retrieval import clip_retrieval

LABELS = {"a0": "cat", "a1": "cat", "b0": "dog", "b1": "dog", "c0": "owl"}
TEXT = {"cat": [1.0, 0.0, 0.0], "dog": [0.0, 1.0, 0.0], "owl": [0.0, 0.0, 1.0]}


def _text():
    return {k: np.array(TEXT[v]) * 3.0 for k, v in LABELS.items()}  # scale is irrelevant (cosine)


def test_perfectly_aligned_and_one_confusion():
    image = {k: np.array(TEXT[v]) + 0.1 for k, v in LABELS.items()}
    r = clip_retrieval(image, _text(), LABELS)
    assert r == dict(clips=5, labels=3, image_to_text_top1=1.0, text_to_image_r_precision=1.0, chance=1 / 3)
    image["b1"] = np.array([0.9, 0.0, 0.3])  # a dog picture that looks like a cat (and nothing like a dog)
    r = clip_retrieval(image, _text(), LABELS)
    assert r["image_to_text_top1"] == pytest.approx(4 / 5)
    # "cat": its 2 nearest pictures are a0, a1 (cosine 0.99 > b1's 0.95): 2/2; "dog": b0, then a picture of
    # another label (b1 is orthogonal to "dog"): 1/2; "owl": c0: 1/1.
    assert r["text_to_image_r_precision"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)


def test_errors():
    image = {k: np.array(TEXT[v]) for k, v in LABELS.items()}
    with pytest.raises(ValueError, match="no text embedding for clip c0"):
        clip_retrieval(image, {k: v for k, v in _text().items() if k != "c0"}, LABELS)
    with pytest.raises(ValueError, match="at least 2 labels"):
        clip_retrieval(image, _text(), {"a0": "cat", "a1": "cat"})
    image["a0"] = np.zeros(3)
    with pytest.raises(ValueError, match="zero or non-finite"):
        clip_retrieval(image, _text(), LABELS)
