"""Every entry point under espnet2.tts_diff.bin answers --help with its options and their defaults."""

import pkgutil

import pytest

import espnet2.tts_diff.bin as bin_pkg

MODULES = sorted(m.name for m in pkgutil.iter_modules(bin_pkg.__path__))


def test_the_recipe_entry_points_exist():
    assert {"train", "train_prior", "probe", "embed_vocoder", "generate", "generate_set", "report", "pack"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", [m for m in MODULES if m != "train"])  # train is ESPnet's TTSTask parser
def test_help(name):
    module = __import__(f"espnet2.tts_diff.bin.{name}", fromlist=["get_parser"])
    text = module.get_parser().format_help()
    assert "usage:" in text and f"espnet2.tts_diff.bin.{name}" in text
    assert "(default:" in text  # ArgumentDefaultsHelpFormatter: defaults are listed
