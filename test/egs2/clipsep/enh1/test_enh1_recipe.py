"""The separation recipe end to end, reduced (few clips, few steps): what `./run.sh` does, in CI.

Every stage runs through the recipe's own shell scripts and entry points; only sizes are cut down.
"""

import os
import shutil
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
                              "--num_pretrain_images 6 --duration 3 --num_noisy 4",
        "--fit_clip_opts", "--steps 30",
        # BERTSep without --bert_dir: listed as not run; NIT also with noise head 1 kept (Figure 6)
        "--enh_configs", "conf/tiny/train_enh_clipsep_nit.yaml conf/tiny/train_enh_pit.yaml "
                         "conf/tiny/train_enh_bertsep.yaml", "--noise_head_rows", "true",
        "--enh_args", "--max_epoch 1 --num_iters_per_epoch 3 --batch_size 2",
        "--mix_segment", "32000", "--examples_per_class", "1", "--plus_sets", "test_plus=test+noisy",
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


def _row(text: str, first: str, second: str = "", third: str = ""):
    wanted = [c for c in (first, second, third) if c]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[: len(wanted)] == wanted:
            return cells
    raise AssertionError(f"no row {first} {second} {third}:\n{text}")


def test_results_table_and_report(recipe):
    tmp, _ = recipe
    results = (tmp / "RESULTS.md").read_text()
    # the paper's layout: a row per system and test query, a column group per test set (Clean, +)
    header = _row(results, "System")
    assert header[:3] == ["System", "Training query", "Test query"] and header[3:6] == [
        "Clean: SDR", "Clean: SDRi", "Clean: SDR median"] and header[6] == "+: SDR"  # fmt: skip
    for system, train_q, test_q in (("CLIPSep-NIT", "image", "text"), ("CLIPSep-NIT", "image", "image"),
                                    ("CLIPSep-NIT", "image", "text + noise head 1"),
                                    ("PIT (U-Net)", "-", "- (oracle selection)")):  # fmt: skip
        cells = _row(results, system, train_q, test_q)
        assert len(cells) == 9 and all("±" in cells[i] for i in (3, 4, 6, 7)), cells
    assert _row(results, "BERTSep")[3] == "not run (no BERT weights)"
    assert _row(results, "Mixture")[3] != _row(results, "Mixture")[6]  # two different test sets
    assert "## Clean test set: test, 8 mixtures" in results and "## + test set: test_plus, 8 mixtures" in results
    mixes = (tmp / "data" / "test_plus_mix" / "mix2sources").read_text().splitlines()
    assert len(mixes) == 8 and all("noisy_" in line.split()[2] for line in mixes)  # interferers from the pool
    assert "SDRi" in results and "SI-SDRi" in results
    for dset in ("test", "test_plus"):
        html = tmp / "exp" / f"report_{dset}" / "index.html"
        assert html.is_file() and list((tmp / "exp" / f"report_{dset}").rglob("*.png"))
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
    assert sections >= 3 and found.audios == sections * (2 + 2 * 4)  # mix, target; 4 results x (estimate, residual)
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


@pytest.fixture(scope="module")
def every_system(recipe, clap_side, tmp_path_factory):
    """The other rows of the paper's tables on the same data, a few steps each: CLIPSep-Text, -Hybrid, SOP,
    LabelSep and BERTSep (a tiny random BERT in bert-base-uncased's layout, 32 wide), clean set only."""
    tmp, _ = recipe
    extra = tmp_path_factory.mktemp("every_system")
    helper = Path(__file__).resolve().parents[3] / "espnet2" / "enh" / "clipsep" / "bert" / "tiny_bert.py"
    (extra / "texts.json").write_text('["piano"]')
    proc = clap_side.run([sys.executable, str(helper), str(extra / "bert"), str(extra / "broken"),
                          str(extra / "texts.json"), str(extra / "ref.npz")], pythonpath=clap_side.pythonpath())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    bertsep = (RECIPE / "conf" / "tiny" / "train_enh_bertsep.yaml").read_text()
    assert "query_dim: 768" in bertsep
    (extra / "train_enh_bertsep.yaml").write_text(bertsep.replace("query_dim: 768", "query_dim: 32"))
    exp = extra / "exp"
    for sub in ("clip", "stats"):
        shutil.copytree(tmp / "exp" / sub, exp / sub)
    configs = " ".join(f"conf/tiny/train_enh_{n}.yaml" for n in ("clipsep_text", "clipsep_hybrid", "sop", "labelsep"))
    out = _run(["--stage", "3", "--stop_stage", "8", "--expdir", str(exp), "--results", str(extra / "RESULTS.md"),
                "--enh_configs", f"{configs} {extra / 'train_enh_bertsep.yaml'}", "--bert_dir", str(extra / "bert"),
                "--plus_sets", "", "--test_queries", "text"], tmp)  # fmt: skip
    return tmp, extra, out


def test_every_system_runs(every_system):
    tmp, extra, out = every_system
    results = (extra / "RESULTS.md").read_text()
    for system, train_q, test_q in (("CLIPSep-Text", "text", "text"), ("CLIPSep-Hybrid", "image + text", "text"),
                                    ("SOP", "image (SOP)", "image"), ("LabelSep", "label", "label"),
                                    ("BERTSep", "text (BERT)", "text")):  # fmt: skip
        cells = _row(results, system, train_q, test_q)
        assert "±" in cells[3] and "±" in cells[4], cells
    assert "+: SDR" not in results  # --plus_sets "": the clean set only
    # each system's data: training label text, SOP's 32x32 frames, BERT's 32-d label embeddings
    import numpy as np
    from espnet2.fileio.npy_scp import NpyScpReader

    assert len((tmp / "dump" / "clip" / "train" / "text.scp").read_text().splitlines()) == 16
    frames = NpyScpReader(str(tmp / "dump" / "frames" / "test" / "frames.scp"))
    assert all(frames[k].shape == (3, 32, 32, 3) and frames[k].dtype == np.uint8 for k in frames.keys())
    bert = NpyScpReader(str(tmp / "dump" / "bert" / "test" / "text.scp"))
    assert {bert[k].shape for k in bert.keys()} == {(32,)}
    for n in (1, 2):  # the validation mixtures carry every kind of query
        for name in ("query", "text_query", "frames", "bert_query", "label"):
            assert (tmp / "data" / "valid_mix" / f"{name}{n}.scp").is_file(), name
    train_log = (extra / "exp" / "enh_clipsep_text" / "train.log").read_text()
    assert "text_query1" in train_log
