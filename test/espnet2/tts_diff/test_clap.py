"""CLAP score: the helpers without transformers; ``probe evaluate --clap`` on a tiny random CLAP model.

transformers is not in the main environment (ESPnet would import it in every process), so everything that
needs it runs in a subprocess whose PYTHONPATH has the directory tools/install.sh keeps for it
(``.venv/clap-pythonpath``; or ``ESPNET_CLIPSEP_CLAP_PYTHONPATH``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from espnet2.tts_diff import clap
from espnet2.tts_diff.bin import probe as probe_cli
from espnet2.tts_diff.bin import report
from espnet2.tts_diff.probe import ProbeClassifier, save_probe

REPO = Path(__file__).resolve().parents[3]
FS = 16000
LABELS = ["low", "mid", "high"]
FREQS = {"low": 250.0, "mid": 1000.0, "high": 4000.0}
TEMPLATE = "a {} tone"

def write_clips(d: Path, prefix: str, seed: int, seconds=(0.4, 0.7, 1.0)) -> list:
    """Tones of each class, one per length, as ``<d>/<key>.wav``; returns ``[(key, label, path)]``."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for label in LABELS:
        for i, sec in enumerate(seconds):
            t = np.arange(int(sec * FS)) / FS
            wav = 0.5 * np.sin(2 * np.pi * FREQS[label] * t) + 0.02 * rng.standard_normal(len(t))
            key = f"{prefix}_{label}_{i}"
            sf.write(d / f"{key}.wav", wav.astype(np.float32), FS, subtype="FLOAT")
            out.append((key, label, d / f"{key}.wav"))
    return out


@pytest.fixture(scope="module")
def setup(clap_side, tmp_path_factory):
    """A tiny probe, generated and reference clips, query labels (matching and shuffled), the tiny CLAP model."""
    root = tmp_path_factory.mktemp("clap")
    torch.manual_seed(0)
    conf = dict(embed_dim=16, channels=[8, 16], fs=FS)
    save_probe(ProbeClassifier(num_classes=len(LABELS), **conf), conf, LABELS, root / "probe.pt")
    gen = write_clips(root / "gen", "gen", seed=0)
    ref = write_clips(root / "ref", "ref", seed=1, seconds=(0.5,))
    (root / "gen.scp").write_text("".join(f"{k} {p}\n" for k, _, p in gen))
    (root / "ref" / "wav.scp").write_text("".join(f"{k} {p}\n" for k, _, p in ref))
    shuffled = [gen[(i + 3) % len(gen)][1] for i in range(len(gen))]  # every clip gets another class's label
    (root / "labels").write_text("".join(f"{k} {lab}\n" for k, lab, _ in gen))
    (root / "labels_shuffled").write_text("".join(f"{k} {lab}\n" for (k, _, _), lab in zip(gen, shuffled)))
    texts = {"matching": [TEMPLATE.format(lab) for _, lab, _ in gen], "shuffled": [TEMPLATE.format(s) for s in shuffled]}
    (root / "texts.json").write_text(json.dumps(texts))
    side = clap_side.pythonpath()
    proc = clap_side.run([sys.executable, str(clap_side.helper), str(root / "model"), str(root / "gen.scp"),
                str(root / "texts.json"), str(root / "expected.json")], pythonpath=side)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, side, json.loads((root / "expected.json").read_text())


def evaluate_args(root: Path, labels: str, output: Path) -> list:
    return ["evaluate", "--probe", str(root / "probe.pt"), "--gen_scp", str(root / "gen.scp"), "--gen_labels",
            str(root / labels), "--ref_dir", str(root / "ref"), "--output", str(output)]  # fmt: skip


# ------------------------------------------------------------------------------------------- without transformers
def test_prepare_clip_resamples_and_down_mixes():
    t = np.arange(FS) / FS
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    out = clap.prepare_clip(tone, FS, 48000)
    assert out.dtype == np.float32 and out.shape == (48000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 48000 / len(out) == pytest.approx(1000.0, abs=1.0)  # the same tone at 48 kHz
    stereo = np.stack([tone, 0.5 * tone], axis=1)
    np.testing.assert_allclose(clap.prepare_clip(stereo, FS, FS), 0.75 * tone, atol=1e-6)  # mean of channels
    np.testing.assert_array_equal(clap.prepare_clip(tone, 48000, 48000), tone.astype(np.float32))  # no resampling
    with pytest.raises(ValueError, match="non-empty waveform"):
        clap.prepare_clip(np.zeros(0), FS, 48000)


def test_cosine_rows_and_mean_with_standard_error():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    expected = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(clap.cosine_rows(a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(clap.cosine_rows(3.0 * a, torch.from_numpy(0.5 * b)), expected, rtol=1e-12)  # scale-free
    np.testing.assert_allclose(clap.cosine_rows(a, a), np.ones(5), rtol=1e-12)
    np.testing.assert_allclose(clap.cosine_rows(a, -a), -np.ones(5), rtol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        clap.cosine_rows(a, b[:4])
    mean, sem = clap.mean_and_sem([0.1, 0.2, 0.3, 0.6])
    assert mean == pytest.approx(0.3) and sem == pytest.approx(np.std([0.1, 0.2, 0.3, 0.6], ddof=1) / 2)


def test_main_environment_does_not_see_transformers(clap_side):
    """ESPnet imports transformers at start-up whenever it can (~7 s per process): it must stay out of .venv."""
    assert subprocess.run([sys.executable, "-c", "import transformers"], env=clap_side.env(), capture_output=True).returncode != 0


def test_missing_model_dir_and_no_transformers_are_one_line_errors(tmp_path, capsys, monkeypatch):
    root = tmp_path
    torch.manual_seed(0)
    conf = dict(embed_dim=16, channels=[8, 16], fs=FS)
    save_probe(ProbeClassifier(num_classes=len(LABELS), **conf), conf, LABELS, root / "probe.pt")
    # clips that do not exist: CLAP is loaded before any audio is read, so its error comes first
    (root / "gen.scp").write_text("a /nonexistent/a.wav\nb /nonexistent/b.wav\n")
    (root / "labels").write_text("a low\nb mid\n")
    (root / "ref").mkdir()
    (root / "ref" / "wav.scp").write_text("r1 /nonexistent/r1.wav\nr2 /nonexistent/r2.wav\n")
    out = root / "eval.json"
    args = evaluate_args(root, "labels", out)
    for model_dir, what in ((root / "no_such_dir", "CLAP model directory not found"), (root, "no config.json")):
        capsys.readouterr()
        assert probe_cli.main(args + ["--clap", str(model_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{model_dir}: {what}" in err
        assert "hf download laion/clap-htsat-unfused" in err and f"--local-dir {model_dir}" in err
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an environment without it gives
    capsys.readouterr()
    assert probe_cli.main(args + ["--clap", str(root / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs transformers" in err and "pip install transformers==5.25.0" in err
    assert "pip install --target DIR" in err and "PYTHONPATH" in err and "7 s" in err
    assert probe_cli.main(args + ["--clap", str(root / "model"), "--clap_template", "no braces"]) == 2
    assert "--clap_template 'no braces': needs one {}" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- with transformers
def test_evaluate_clap_score_is_the_mean_cosine(clap_side, setup):
    root, side, expected = setup
    out = root / "eval.json"
    proc = clap_side.run([sys.executable, "-m", "espnet2.tts_diff.bin.probe", "evaluate", *evaluate_args(root, "labels", out)[1:],
                "--clap", str(root / "model"), "--clap_template", TEMPLATE], pythonpath=side)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    cosines = np.asarray(expected["matching"])
    assert len(cosines) == res["num_generated"] == 9
    assert res["clap_score"] == pytest.approx(cosines.mean(), abs=1e-5)
    assert res["clap_score_sem"] == pytest.approx(cosines.std(ddof=1) / 3, abs=1e-5)
    assert TEMPLATE in res["clap_note"] and str(root / "model") in res["clap_note"]
    assert "CLAP score" in proc.stderr and "relevance" in res and "probe_fd" in res
    # shuffled queries (each clip another class's text): another score, again the mean of its own cosines; in
    # batches of 2 clips and 2 texts, padded differently, the same figures
    shuffled_out = root / "eval_shuffled.json"
    proc = clap_side.run([sys.executable, "-m", "espnet2.tts_diff.bin.probe", "evaluate",
                *evaluate_args(root, "labels_shuffled", shuffled_out)[1:], "--clap", str(root / "model"),
                "--clap_template", TEMPLATE, "--batch_size", "2"], pythonpath=side)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    shuffled = json.loads(shuffled_out.read_text())["clap_score"]
    assert shuffled == pytest.approx(np.mean(expected["shuffled"]), abs=1e-5)
    assert abs(shuffled - res["clap_score"]) > 1e-4
    # the report's CLAP score column from this very JSON (its layout: test_tts_report.py)
    md = root / "RESULTS.md"
    assert report.main(["--result", f"ZS|label text|{out}", "--output", str(md)]) == 0
    row = rf"^\| ZS \| label text \| [^|]+ \| {res['probe_fd']:.2f} \| {res['clap_score']:.3f} \| 9 \| - \|$"
    assert re.search(row, md.read_text(), re.M), md.read_text()


def test_evaluate_without_transformers_on_the_path_says_how_to_install(clap_side, setup):
    root, _, _ = setup
    out = root / "eval_no_transformers.json"
    proc = clap_side.run([sys.executable, "-m", "espnet2.tts_diff.bin.probe", "evaluate", *evaluate_args(root, "labels", out)[1:],
                "--clap", str(root / "model")])  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "needs transformers" in err[0] and "pip install transformers==5.25.0" in err[0]
    assert not out.exists()
