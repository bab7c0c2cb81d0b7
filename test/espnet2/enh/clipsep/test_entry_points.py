"""Every entry point under espnet2.enh.clipsep.bin answers --help with its options and their defaults."""

import pkgutil
import subprocess
import sys

import pytest

import espnet2.enh.clipsep.bin as bin_pkg

MODULES = sorted(m.name for m in pkgutil.iter_modules(bin_pkg.__path__))


def test_the_recipe_entry_points_exist():
    assert {"prepare_videos", "make_mini_corpus", "fit_clip", "embed", "mixtures", "train", "inference", "score",
            "report", "pack", "label_ids", "convert"} <= set(MODULES)


@pytest.mark.parametrize("name", [m for m in MODULES if m != "train"])
def test_help(name):
    module = __import__(f"espnet2.enh.clipsep.bin.{name}", fromlist=["get_parser"])
    text = module.get_parser().format_help()
    assert "usage:" in text and f"espnet2.enh.clipsep.bin.{name}" in text
    assert "(default:" in text  # ArgumentDefaultsHelpFormatter: defaults are listed


def test_train_help_is_espnets_with_our_names():
    out = subprocess.run([sys.executable, "-m", "espnet2.enh.clipsep.bin.train", "--help"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert "--separator" in out and "clipsep" in out and "clipsep_mix" in out
