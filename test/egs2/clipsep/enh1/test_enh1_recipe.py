"""The separation recipe end to end, reduced (few clips, few steps): what `./run.sh` does, in CI.

Every stage runs through the recipe's own shell scripts and entry points; only sizes are cut down.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "enh1"
TOOLS = ("ffmpeg", "ffprobe", "fluidsynth", "espeak-ng")


def _run(args, tmp, timeout=1200):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    base = [
        "--datadir", f"{tmp}/data", "--dumpdir", f"{tmp}/dump", "--expdir", f"{tmp}/exp",
        "--mini_corpus_dir", f"{tmp}/mini", "--corpus_root", f"{tmp}/mini/videos", "--results", f"{tmp}/RESULTS.md",
        "--mini_corpus_opts", "--classes piano violin canary drums --num_train 4 --num_valid 1 --num_test 2 "
                              "--num_pretrain_images 6 --duration 3",
        "--fit_clip_opts", "--steps 30",
        "--enh_configs", "conf/tiny/train_enh_clipsep_nit.yaml conf/tiny/train_enh_pit.yaml",
        "--enh_args", "--max_epoch 1 --num_iters_per_epoch 3 --batch_size 2",
        "--mix_segment", "32000", "--examples_per_class", "1",
    ]  # fmt: skip
    proc = subprocess.run(["./run.sh", *base, *args], cwd=RECIPE, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def recipe(require_tools, tmp_path_factory):
    require_tools(*TOOLS)
    tmp = tmp_path_factory.mktemp("enh1")
    out = _run([], tmp)
    return tmp, out


def test_every_stage_ran_and_logged(recipe):
    tmp, out = recipe
    for n in range(1, 10):
        assert f"Stage {n}:" in out, f"stage {n} missing from the log"
    assert "Successfully finished." in out
    stages = [line.split("\t")[0] for line in (tmp / "exp" / "timings.tsv").read_text().splitlines()]
    assert stages == [str(n) for n in range(1, 10)]


def test_data_dirs(recipe):
    tmp, _ = recipe
    for split, n in (("train", 16), ("valid", 4), ("test", 8)):
        d = tmp / "data" / split
        assert len((d / "wav.scp").read_text().splitlines()) == n
        assert len((d / "frames.scp").read_text().splitlines()) == n
        assert (d / "utt2label").is_file() and not (d / "utt2category").exists()
    assert len((tmp / "data" / "test_mix" / "text_query1.scp").read_text().splitlines()) == 8


def test_results_table_and_report(recipe):
    tmp, _ = recipe
    results = (tmp / "RESULTS.md").read_text()
    for row in ("CLIPSep-NIT | text", "CLIPSep-NIT | image", "PIT (U-Net) | oracle", "Mixture"):
        assert row in results, results
    assert "SDRi" in results and "SI-SDRi" in results
    html = tmp / "exp" / "report_test" / "index.html"
    assert html.is_file() and list((tmp / "exp" / "report_test").rglob("*.png"))
    assert "## SDRi per class" in results and "| piano |" in results
    score = tmp / "exp" / "enh_clipsep_nit" / "infer_test_text" / "score" / "summary.json"
    assert score.is_file()


def test_report_page_in_a_browser(recipe, require_tools, artifacts_dir):
    """The listening page as Chromium renders it: queries, players that load, images, no console error."""
    from espnet2.enh.clipsep.eval.browser import check_page

    require_tools("chromium")
    tmp, _ = recipe
    html = tmp / "exp" / "report_test" / "index.html"
    found = check_page(html, screenshot=artifacts_dir / "enh1_report_test.png")
    assert found.ok, found.problems
    page = html.read_text()
    sections = page.count("<section>")
    assert sections >= 3 and found.audios == sections * (2 + 2 * 3)  # mix, target; 3 results x (estimate, residual)
    assert page.count("text query: <q>") == sections and page.count('alt="image query of') == sections
    assert found.images == 1 + 2 * sections  # distribution plot; per example its figure and query thumbnail
    assert "<h2>SDRi per class</h2>" in page


def test_packs_reload(recipe):
    tmp, out = recipe
    for exp in ("enh_clipsep_nit", "enh_pit"):
        names = zipfile.ZipFile(tmp / "exp" / exp / "packed.zip").namelist()
        assert "meta.yaml" in names and any(n.endswith("config.yaml") for n in names)
    assert out.count("tensors identical") == 2


def test_a_moved_pack_separates_by_text(recipe, tmp_path):
    """The pack carries the fitted CLIP: copied alone elsewhere it answers a text query as the experiment does."""
    import shutil

    import numpy as np

    from espnet2.enh.clipsep.separate import Separator

    tmp, _ = recipe
    names = zipfile.ZipFile(tmp / "exp" / "enh_clipsep_nit" / "packed.zip").namelist()
    assert any(n.endswith("clipsep-tiny.pt") for n in names) and any(n.endswith("clipsep-tiny.pt.json") for n in names)
    moved = tmp_path / "elsewhere" / "model.zip"
    moved.parent.mkdir()
    shutil.copy(tmp / "exp" / "enh_clipsep_nit" / "packed.zip", moved)
    x = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    alone = Separator.from_pretrained(moved, cache_dir=tmp_path / "cache", device="cpu")(x, 16000, query="piano")
    at_home = Separator.from_pretrained(tmp / "exp" / "enh_clipsep_nit", device="cpu")(x, 16000, query="piano")
    assert alone.shape == x.shape and np.abs(alone).max() > 0
    np.testing.assert_allclose(alone, at_home, atol=1e-6)


def test_training_resumes_and_data_prep_is_a_no_op(recipe):
    tmp, _ = recipe
    wavs = sorted((tmp / "data" / "media").rglob("*.wav"))
    before = [p.stat().st_mtime_ns for p in wavs]
    _run(["--stage", "1", "--stop_stage", "1"], tmp)
    assert [p.stat().st_mtime_ns for p in wavs] == before
    _run(["--stage", "5", "--stop_stage", "5", "--enh_configs", "conf/tiny/train_enh_clipsep_nit.yaml",
          "--enh_args", "--max_epoch 2 --num_iters_per_epoch 3 --batch_size 2"], tmp)
    log = (tmp / "exp" / "enh_clipsep_nit" / "train.log").read_text()
    assert "The training was resumed using" in log and "2epoch results" in log and "1epoch results" not in log
