"""A tiny random BERT in bert-base-uncased's file layout, and its embeddings computed directly with transformers.

transformers is not in the main environment (ESPnet would import it in every process): the model is written, and
everything that runs it runs, in a subprocess whose PYTHONPATH has the directory tools/install.sh keeps for it
(``clap_side``, test/conftest.py).
"""

import json
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import numpy as np
import pytest

HELPER = Path(__file__).with_name("tiny_bert.py")
# Label texts of different token lengths (so batches pad), with a word the vocabulary lacks ([UNK]) and capitals.
TEXTS = ["dog barking", "violin", "people sobbing", "Cat playing the violin", "engine idling", "dogs",
         "a photo of many dogs"]


class TinyBert(NamedTuple):
    dir: Path  # the model directory
    broken: Path  # the same, its weights lacking one encoder parameter
    texts: List[str]
    ref: Dict[str, np.ndarray]  # "<pooling>/<i>" -> (HIDDEN,) float32; "ids/<i>" -> token ids
    pythonpath: str  # where transformers is


@pytest.fixture(scope="session")
def tiny_bert(clap_side, tmp_path_factory) -> TinyBert:
    root = tmp_path_factory.mktemp("bert")
    (root / "texts.json").write_text(json.dumps(TEXTS))
    side = clap_side.pythonpath()
    proc = clap_side.run([sys.executable, str(HELPER), str(root / "bert-base-uncased"), str(root / "broken"),
                          str(root / "texts.json"), str(root / "reference.npz")], pythonpath=side)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(root / "reference.npz") as npz:
        ref = {k: npz[k] for k in npz.files}
    return TinyBert(root / "bert-base-uncased", root / "broken", TEXTS, ref, side)
