"""Fixtures of the separation tests: a tiny experiment directory, the released checkpoint's layout filled with
random values, a recipe-like tree with a pack and its CLIP, and test signals."""

import argparse
import json
import math
import os
import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import yaml

from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
from espnet2.enh.clipsep.clip.fit import save_state_dict
from espnet2.enh.clipsep.files.pack import pack_model
from espnet2.enh.clipsep.task import CLIPSepTask

CONF = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "enh1" / "conf" / "tiny"
FS = 16000
TSV = Path(__file__).parent / "data" / "clipsep_nit_checkpoint_keys.tsv"
DTYPES = {"torch.float32": torch.float32, "torch.int64": torch.int64}


def _read_tsv() -> Dict[str, tuple]:
    table = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        table[key] = (dims, DTYPES[dtype])
    return table


def _synthetic_checkpoint() -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        key: (
            torch.tensor(index, dtype=dtype)
            if dtype == torch.int64
            else torch.randn(shape, generator=gen, dtype=dtype)
        )
        for index, (key, (shape, dtype)) in enumerate(_read_tsv().items())
    }


def _experiment(tmp_path: Path, config: str) -> Path:
    """config.yaml from the task's own dry run + random weights, as training leaves them."""
    exp = tmp_path / Path(config).stem
    CLIPSepTask.main(cmd=["--config", str(CONF / config), "--iterator_type", "none", "--dry_run", "true",
                          "--output_dir", str(exp), "--use_tensorboard", "false", "--use_matplotlib", "false"])
    args = argparse.Namespace(**yaml.safe_load((exp / "config.yaml").read_text()))
    torch.manual_seed(0)
    model = CLIPSepTask.build_model(args)
    torch.save(model.state_dict(), exp / "model.pth")
    return exp




def _liven(model_file, seed=0):
    """Replace the near-zero reference init (masks ~ 0.5 everywhere) by fan-in scaled random weights, so that
    the masks depend on the input and the query."""
    state = torch.load(model_file, weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point() and value.dim() >= 2:
            state[key] = torch.randn(value.shape, generator=gen) / math.sqrt(value[0].numel())
    torch.save(state, model_file)


def _build_recipe(root):
    exp = _experiment(root, "train_enh_clipsep_nit.yaml")
    _liven(exp / "model.pth")
    torch.manual_seed(0)
    clip = CLIPQueryEncoder("clipsep-tiny", pretrained=None, device="cpu")
    save_state_dict(clip.model, root / "clip" / "clipsep-tiny.pt")
    (root / "clip" / "clipsep-tiny.pt.json").write_text(json.dumps({"clip_model": "clipsep-tiny"}))
    _pack(root, "packed.zip")
    return root


def _pack(root, outpath, options=()):
    """Pack as the recipe does: from its directory, so that the archive holds relative paths."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            pack_model(CLIPSepTask, "train_enh_clipsep_nit/config.yaml", "train_enh_clipsep_nit/model.pth", outpath, options)
    finally:
        os.chdir(cwd)


def _noise(seconds, fs=FS, channels=None, seed=0, amp=0.3):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * fs),) if channels is None else (channels, int(seconds * fs))
    t = np.arange(shape[-1]) / fs
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    return (amp * (rng.uniform(-0.5, 0.5, shape) + tone)).astype(np.float32)




@pytest.fixture(scope="session")
def synthetic_checkpoint():
    """``synthetic_checkpoint()``: the released CLIPSep-NIT checkpoint's 83 tensors (names, shapes, dtypes from
    ``data/clipsep_nit_checkpoint_keys.tsv``), seeded random values."""
    return _synthetic_checkpoint


@pytest.fixture(scope="session")
def checkpoint_keys():
    """``checkpoint_keys()``: ``{name: (shape, dtype)}`` of the released checkpoint's tensors."""
    return _read_tsv


@pytest.fixture(scope="session")
def pack_into():
    """``pack_into(root, outpath, options=())``: pack ``root``'s tiny experiment as the recipe does."""
    return _pack


@pytest.fixture(scope="session")
def make_experiment():
    """``make_experiment(dir, config)``: ``dir/<config stem>/{config.yaml, model.pth}`` from a ``conf/tiny`` config."""
    return _experiment


@pytest.fixture(scope="session")
def noise():
    """``noise(seconds, fs=16000, channels=None, seed=0, amp=0.3)``: a seeded test signal, float32."""
    return _noise


@pytest.fixture(scope="session")
def recipe(tmp_path_factory):
    """``<root>/train_enh_clipsep_nit/{config.yaml,model.pth}``, ``<root>/clip/clipsep-tiny.pt(.json)``, a pack;
    built once per session."""
    return _build_recipe(tmp_path_factory.mktemp("exp"))
