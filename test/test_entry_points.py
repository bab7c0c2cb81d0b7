"""Every command-line entry point (library ``bin/`` modules and the recipes' ``local/`` scripts) answers --help
with its options and their defaults; all in this process, none pays for an interpreter start."""

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

import pytest

import espnet2.enh.clipsep.bin as enh_bin
import espnet2.tts_diff.bin as tts_bin

REPO = Path(__file__).resolve().parents[1]
LOCAL_DIRS = [REPO / "egs2" / "clipsep" / "enh1" / "local", REPO / "egs2" / "clipsep" / "tts1" / "local"]
# ESPnet's task parsers -> a name of ours they must list once our classes are registered
ESPNET_PARSERS = {"espnet2.enh.clipsep.bin.train": "clipsep_mix", "espnet2.tts_diff.bin.train": "clipsonic"}


def _bin_modules():
    return [f"{pkg.__name__}.{m.name}" for pkg in (enh_bin, tts_bin) for m in pkgutil.iter_modules(pkg.__path__)]


def _local_scripts():
    return [p for d in LOCAL_DIRS for p in sorted(d.glob("*.py")) if "def get_parser" in p.read_text()]


def _load_script(path: Path):
    """Import a recipe script as ``python local/<name>.py`` runs it: its directory first on sys.path."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_recipe_{path.parent.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_the_recipe_entry_points_exist():
    names = {m.rsplit(".", 1)[1] for m in _bin_modules()}
    assert {"fit_clip", "embed", "train", "inference", "score", "report", "pack", "convert", "separate"} <= names
    assert {"train_prior", "probe", "embed_vocoder", "generate", "generate_set"} <= names
    scripts = {p.stem for p in _local_scripts()}
    assert {"prepare_videos", "make_mini_corpus", "make_mixtures", "label_ids", "prepare_tts_data"} <= scripts


@pytest.mark.parametrize(
    "target", [*_bin_modules(), *(str(p.relative_to(REPO)) for p in _local_scripts())]
)
def test_help(target):
    if target.endswith(".py"):
        path = REPO / target
        parser = _load_script(path).get_parser()
        name = f"local/{path.name}"
    elif target in ESPNET_PARSERS:
        task = importlib.import_module(target.replace(".bin.train", ".task"))
        parser = next(getattr(task, n) for n in ("CLIPSepTask", "TTSDiffTask") if hasattr(task, n)).get_parser()
        name = ESPNET_PARSERS[target]
    else:
        parser = importlib.import_module(target).get_parser()
        name = target
    text = parser.format_help()
    assert "usage:" in text
    if target in ESPNET_PARSERS:  # ESPnet's own parser, with our classes registered into its choices
        assert name in text
        return
    assert name in text
    assert "(default:" in text  # ArgumentDefaultsHelpFormatter: defaults are listed
