"""Registration into ESPnet's ClassChoices, in-process and through the stock entry points."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet2.enh.clipsep import register as enh_register
from espnet2.enh.clipsep.register import add_to_choices, load_class, registered

REPO = Path(__file__).resolve().parents[4]
TINY_NIT = REPO / "egs2/clipsep/enh1/conf/tiny/train_enh_clipsep_nit.yaml"


def _run(args, **env):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.mark.parametrize("attr,name,path", registered(), ids=[r[1] for r in registered()])
def test_registered_in_enh_task(attr, name, path):
    from espnet2.tasks import enh

    cls = load_class(path)
    choices = getattr(enh, attr)
    assert name in choices.choices()
    assert choices.get_class(name) is cls
    assert issubclass(cls, load_class(enh_register.BASES[attr]))


def test_register_is_idempotent():
    from espnet2.tasks import enh

    before = dict(enh.separator_choices.classes)
    enh_register.register()
    enh_register.register()
    assert enh.separator_choices.classes == before


def test_add_to_choices_checks():
    from espnet2.enh.separator.abs_separator import AbsSeparator
    from espnet2.enh.separator.rnn_separator import RNNSeparator
    from espnet2.tasks import enh

    class NotASeparator:
        pass

    with pytest.raises(TypeError, match="not a subclass of AbsSeparator"):
        add_to_choices(enh.separator_choices, "bogus", NotASeparator, AbsSeparator)
    with pytest.raises(ValueError, match="lower case"):
        add_to_choices(enh.separator_choices, "CLIPSep", RNNSeparator, AbsSeparator)
    with pytest.raises(ValueError, match="already taken"):
        add_to_choices(enh.separator_choices, "clipsep", RNNSeparator, AbsSeparator)
    assert "bogus" not in enh.separator_choices.classes


def test_stock_enh_train_print_config_lists_our_separator():
    out = _run(["-m", "espnet2.bin.enh_train", "--separator", "clipsep", "--print_config"])
    assert out.returncode == 0, out.stderr[-2000:]
    conf = yaml.safe_load(out.stdout[out.stdout.index("log_level:"):])  # after ESPnet's import chatter
    assert conf["separator"] == "clipsep"
    assert {"query_type", "num_masks", "num_noise_heads", "warp_bins"} <= set(conf["separator_conf"])


def test_stock_enh_train_builds_our_separator_criterion_and_wrapper(tmp_path):
    out = _run([
        "-m", "espnet2.bin.enh_train", "--config", str(TINY_NIT), "--iterator_type", "none", "--dry_run", "true",
        "--output_dir", str(tmp_path), "--use_tensorboard", "false", "--use_matplotlib", "false",
    ])
    assert out.returncode == 0, out.stderr[-2000:]
    conf = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert conf["separator"] == "clipsep"
    assert [(c["name"], c["wrapper"]) for c in conf["criterions"]][0] == ("wbce", "noise_invariant")
    assert "CLIPSepSeparator" in out.stderr  # the model summary ESPnet logs


def test_hook_can_be_switched_off():
    code = "from espnet2.tasks import enh; print('clipsep' in enh.separator_choices.classes)"
    assert _run(["-c", code]).stdout.split()[-1] == "True"
    assert _run(["-c", code], ESPNET_CLIPSEP_AUTOREGISTER="0").stdout.split()[-1] == "False"


def test_hook_reaches_tts_task():
    code = (
        "import espnet2.tasks.tts, espnet2.tts_diff.register as r; "
        "print(r.REGISTER_CALLS, all(n in espnet2.tasks.tts.tts_choices.classes for _, n, _ in r.registered()))"
    )
    out = _run(["-c", code])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1", "True"]


def test_interpreter_startup_imports_no_torch_or_espnet():
    out = _run(["-X", "importtime", "-c", "pass"])
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "espnet_clipsep_hook" in imported  # our .pth ran
    assert not {m for m in imported if m.split(".")[0] in ("torch", "espnet2", "espnet", "numpy", "open_clip")}
