"""The synthesis recipe end to end, reduced (few classes, clips and steps): what `./run.sh --systems all` does, in CI.

Every stage runs through the recipe's own shell scripts and entry points (stage 1 through the separation
recipe's); only sizes are cut down. Every row of the table runs (CLIPSonic-IQ / -ZS / -PD, CLIPSynth-Text /
-Hybrid, the retrieval baseline, the resynthesis), but PD with a pretrained prior, for which there is no file.
"""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

RECIPE = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "tts1"
TOOLS = ("ffmpeg", "ffprobe", "fluidsynth", "espeak-ng")
CLASSES = ("piano", "violin", "canary", "drums")
PER_CLASS = 2
HOP, N_MELS = 512, 64  # conf/tiny/train_clipsonic.yaml: mel hop, bands
# the generated length: the tiny config's inference_frames (whole clips, apart from the training crop)
TINY_CONF = yaml.safe_load((RECIPE / "conf" / "tiny" / "train_clipsonic.yaml").read_text())
GEN_FRAMES = TINY_CONF["tts_conf"]["inference_frames"]
NAMES = {"iq": "CLIPSonic-IQ", "zs": "CLIPSonic-ZS", "pd": "CLIPSonic-PD (trained prior)", "text": "CLIPSynth-Text",
         "hybrid": "CLIPSynth-Hybrid", "retrieval": "retrieval", "gt": "GT resynthesis (vocoder, ceiling)"}


def _run(args, tmp, timeout=1200, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    base = [
        "--datadir", f"{tmp}/data", "--clip_dumpdir", f"{tmp}/clip_dump", "--clip_expdir", f"{tmp}/enh1_exp",
        "--mini_corpus_dir", f"{tmp}/mini", "--dumpdir", f"{tmp}/dump", "--expdir", f"{tmp}/exp",
        "--results", f"{tmp}/RESULTS.md",
        "--enh1_opts", f'--mini_corpus_opts "--classes {" ".join(CLASSES)} --num_train 4 --num_valid 1 --num_test 2 '
                       '--num_pretrain_images 6 --duration 3" --fit_clip_opts "--steps 30"',
        "--tts_args", "--max_epoch 1 --num_iters_per_epoch 3 --batch_size 2",
        "--vocoder_args", "--max_epoch 1 --num_iters_per_epoch 2 --batch_size 2",
        "--prior_opts", "--steps 20 --d_model 32 --num_layers 1",
        "--probe_opts", "--epochs 2",
        "--gen_args", "--steps 3", "--max_per_class", str(PER_CLASS),
        "--benchmark_opts", "--max_per_class 1 --grid ddpm:6 ddim:2 dpmpp:2,3 --guidances 0 1.5 --sweep_steps 2 "
                            "--num_timed 1 --num_frames 8",
    ]  # fmt: skip
    proc = subprocess.run(["./run.sh", *base, *args], cwd=RECIPE, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if not check:
        return proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def recipe(require_tools, tmp_path_factory):
    require_tools(*TOOLS)
    tmp = tmp_path_factory.mktemp("tts1")
    out = _run(["--systems", "all"], tmp)
    return tmp, out


def _gen_dir(tmp: Path, system: str) -> Path:
    if system in ("text", "hybrid"):
        return tmp / "exp" / f"tts_clipsynth_{system}_vocoder" / f"gen_test_{system}"
    if system == "retrieval":
        return tmp / "exp" / "retrieval" / "gen_test_retrieval"
    return tmp / "exp" / "tts_clipsonic_vocoder" / f"gen_test_{system}"


def _table(tmp: Path) -> dict:
    return dict(line.split() for line in tmp.read_text().splitlines())


def test_every_stage_ran_and_logged(recipe):
    tmp, out = recipe
    for n in range(1, 11):
        assert f"Stage {n}:" in out, f"stage {n} missing from the log"
    assert "[enh1]" in out and "Successfully finished." in out
    stages = [line.split("\t")[0] for line in (tmp / "exp" / "timings.tsv").read_text().splitlines()]
    assert stages[:2] == ["1", "2"] and sorted(stages[2:5]) == ["3", "3 hybrid", "3 text"]  # the generators
    assert stages[5:] == ["4", "5", "6", "2-6", "7", "8", "9", "10"]  # 2-6: side by side
    # --train_jobs 2: stage 2 beside the probe and the prior; the generator and the vocoder start after it
    lines = [line for line in out.splitlines() if "[enh1]" not in line]  # the separation recipe has a stage 2 too

    def at(text):
        return next(i for i, line in enumerate(lines) if text in line)

    assert at("Stage 6: train the probe") < at("Stage 2 done")
    assert at("Stage 2 done") < min(at("Stage 3: train"), at("Stage 5: train the vocoder"))


def test_tts_data_dirs(recipe):
    tmp, _ = recipe
    raw = tmp / "dump" / "raw"
    for split, n in (("train", 16), ("valid", 4), ("test", 8)):
        keys = [line.split()[0] for line in (raw / split / "wav.scp").read_text().splitlines()]
        assert len(keys) == n
        emb = [line.split() for line in (raw / split / "spembs.scp").read_text().splitlines()]
        assert [k for k, _ in emb] == keys and all(Path(p).is_absolute() and Path(p).is_file() for _, p in emb)
        assert set((raw / split / "text").read_text().split()[1::2]) == {"clip"}  # a dummy token, never a label
    assert not (raw / "train" / "utt2label").exists()
    assert (tmp / "exp" / "stats" / "train" / "feats_stats.npz").is_file()


def test_text_systems_train_on_the_label_text_then_the_frames(recipe):
    """CLIPSynth-Text / -Hybrid: the training labels' text embeddings, computed here (the separation recipe makes
    them for valid/test only), in row 0 of each clip's stack, its frames after; validated on the valid text."""
    tmp, out = recipe
    raw = tmp / "dump" / "raw"
    labels = _table(tmp / "data" / "train" / "utt2label")
    texts = _table(tmp / "dump" / "clip" / "train" / "text.scp")  # tts1's own: ../enh1 has none for train
    assert not (tmp / "clip_dump" / "clip" / "train" / "text.scp").exists()
    frames, stacks = _table(raw / "train" / "spembs.scp"), _table(raw / "train" / "hybrid_spembs.scp")
    assert sorted(stacks) == sorted(frames) == sorted(texts) == sorted(labels)
    by_label = {}
    for key, path in stacks.items():
        stack, text, image = np.load(path), np.load(texts[key]), np.load(frames[key])
        np.testing.assert_array_equal(stack[0], text)
        np.testing.assert_array_equal(stack[1:], image)
        by_label.setdefault(labels[key], []).append(text)
    for embs in by_label.values():  # one text per label: "a photo of {label}" ...
        assert all(np.array_equal(e, embs[0]) for e in embs)
    assert (raw / "valid" / "text_spembs.scp").is_file()
    for system, p in (("text", 1.0), ("hybrid", 0.5)):
        exp = tmp / "exp" / f"tts_clipsynth_{system}"
        conf = yaml.safe_load((exp / "config.yaml").read_text())
        assert conf["tts_conf"]["text_cond_prob"] == p
        data = [tuple(d) for d in conf["train_data_path_and_name_and_type"]]
        assert (str(raw / "train" / "hybrid_spembs.scp"), "spembs", "npy") in data
        valid = [tuple(d) for d in conf["valid_data_path_and_name_and_type"]]
        assert (str(raw / "valid" / "text_spembs.scp"), "spembs", "npy") in valid
        assert "epoch results" in (exp / "train.log").read_text()
        assert f"Stage 3 {system}: train the generator CLIPSynth-{system.capitalize()}" in out


def test_generated_audio(recipe):
    import torch

    from espnet2.tts_diff.probe import load_probe

    tmp, _ = recipe
    gen = tmp / "exp" / "tts_clipsonic_vocoder"
    for mode in ("iq", "zs", "pd", "text", "hybrid"):
        lines = (_gen_dir(tmp, mode) / "wav.scp").read_text().splitlines()
        assert len(lines) == PER_CLASS * len(CLASSES)
        mels = _table(_gen_dir(tmp, mode) / "mel.scp")
        for line in lines:
            key, path = line.split()
            wav, fs = sf.read(path)
            assert fs == 16000 and wav.shape == (GEN_FRAMES * HOP,) and np.isfinite(wav).all()
            mel = np.load(mels[key])  # the de-normalised log10 mel the vocoder was given
            assert mel.shape == (GEN_FRAMES, N_MELS) and np.isfinite(mel).all()
    gt_mels = dict(line.split() for line in (gen / "gen_test_gt" / "mel.scp").read_text().splitlines())
    for line in (gen / "gen_test_gt" / "wav.scp").read_text().splitlines():
        key, path = line.split()
        real_path = next(p for p in (tmp / "data" / "media").rglob(f"{key}.wav"))
        real = sf.info(real_path)
        assert sf.info(path).frames == (1 + real.frames // HOP) * HOP  # one hop per mel frame
        # GT: the mel is the real clip's own log-mel, the probe's front-end of the same clip.
        probe, _ = load_probe(tmp / "exp" / "probe" / "probe.pt")
        x, _ = sf.read(real_path, dtype="float32")
        ref, _ = probe.feats(torch.from_numpy(x)[None], torch.tensor([len(x)]))
        np.testing.assert_allclose(np.load(gt_mels[key]), ref[0].numpy(), atol=1e-4)


def test_retrieval_is_the_nearest_training_clip_cropped_to_the_generated_length(recipe):
    """The retrieval row: for each test label's text embedding, the training clip of highest cosine with its
    3-middle-frame image embedding, its audio around its centre, as long as the generated clips."""
    tmp, _ = recipe
    raw, out = tmp / "dump" / "raw", _gen_dir(tmp, "retrieval")
    bank = _table(raw / "train" / "spembs.scp")
    keys = sorted(bank)
    images = np.stack([np.load(bank[k])[max(len(np.load(bank[k])) - 3, 0) // 2:][:3].mean(0) for k in keys])
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = _table(raw / "test" / "text_spembs.scp")
    wavs, train_wavs = _table(out / "wav.scp"), _table(raw / "train" / "wav.scp")
    rows = [line.split("\t") for line in (out / "retrieved.tsv").read_text().splitlines()]
    assert [q for q, _, _ in rows] == sorted(wavs) and len(rows) == PER_CLASS * len(CLASSES)
    for query, match, cos in rows:
        text = np.load(texts[query])
        sims = images @ (text / np.linalg.norm(text))
        assert match == keys[int(np.argmax(sims))] and float(cos) == pytest.approx(sims.max(), abs=1e-5)
        wav, fs = sf.read(wavs[query], dtype="float32")
        assert fs == 16000 and wav.shape == (GEN_FRAMES * HOP,)
        source, _ = sf.read(train_wavs[match], dtype="float32")
        n = min(len(source), GEN_FRAMES * HOP)  # the mini test clips are shorter: zero-padded at the end
        start = max(len(source) // 2 - GEN_FRAMES * HOP // 2, 0) if len(source) >= GEN_FRAMES * HOP else 0
        np.testing.assert_allclose(wav[:n], np.clip(source[start : start + n], -1, 1), atol=1 / 32768 + 1e-6)
        assert not wav[n:].any()
    assert json.loads((out / "generate.json").read_text())["mode"] == "retrieval"


def test_generation_batch_size_keeps_the_samples(recipe, tmp_path):
    """Stage 7 samples 8 queries per batch; one at a time gives the same clips (each key has its own seed)."""
    tmp, _ = recipe
    gen, raw = tmp / "exp" / "tts_clipsonic_vocoder", tmp / "dump" / "raw" / "test"
    cmd = [sys.executable, "-m", "espnet2.tts_diff.bin.generate_set", "--train_config", str(gen / "config.yaml"),
           "--model_file", str(gen / "model.pth"), "--spembs_scp", str(raw / "spembs.scp"), "--utt2label",
           str(raw / "utt2label"), "--max_per_class", str(PER_CLASS), "--steps", "3", "--device", "cpu",
           "--batch_size", "1", "--output_dir", str(tmp_path / "one"), "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the recipe's log has the progress bar over the clips; --quiet leaves it out
    n = PER_CLASS * len(CLASSES)
    assert f"generate: 100%" in (gen / "gen_test_iq" / "generate.log").read_text()
    assert f"{n}/{n}" in (gen / "gen_test_iq" / "generate.log").read_text() and "%|" not in proc.stderr
    batched = dict(line.split() for line in (gen / "gen_test_iq" / "mel.scp").read_text().splitlines())
    alone = dict(line.split() for line in (tmp_path / "one" / "mel.scp").read_text().splitlines())
    assert sorted(alone) == sorted(batched) and len(alone) == PER_CLASS * len(CLASSES)
    for key in alone:
        np.testing.assert_allclose(np.load(alone[key]), np.load(batched[key]), atol=1e-3)  # log10 mel: float rounding
    first = sorted(alone)[:2]
    assert not np.allclose(np.load(alone[first[0]]), np.load(alone[first[1]]), atol=1e-3)


def test_listening_page_in_a_browser(recipe, require_tools, artifacts_dir):
    """Stage 9's page: a row per class (its text and image query), a player per system that loads."""
    from espnet2.enh.clipsep.eval.browser import check_page

    require_tools("chromium")
    tmp, _ = recipe
    html = tmp / "exp" / "listen_test" / "index.html"
    found = check_page(html, screenshot=artifacts_dir / "tts1_listen_test.png")
    assert found.ok, found.problems
    page = html.read_text()
    systems = [NAMES[s] for s in ("iq", "zs", "pd", "text", "hybrid", "retrieval", "gt")]  # a player each
    assert all(f"<th>{s}" in page for s in systems) and "pretrained prior" not in page
    assert found.audios == len(CLASSES) * len(systems) and found.images == len(CLASSES)  # one image query per row
    assert all(f"<q>{c}</q>" in page for c in CLASSES)
    assert "listen_test/index.html" in (tmp / "RESULTS.md").read_text()


def test_results_table(recipe):
    tmp, _ = recipe
    results = (tmp / "RESULTS.md").read_text()
    number = r"\d+(\.\d+)?"
    pct = rf"{number} ± {number}"  # relevance in % with its binomial standard error
    n = PER_CLASS * len(CLASSES)
    assert "| system | no text-audio pairs | training query | inference query | relevance (%) |" in results
    for system in ("iq", "zs", "pd", "text", "hybrid", "gt"):
        # Table 1's two columns and the inference query, relevance, probe-FD, the same two on the mel before the vocoder
        assert re.search(rf"^\| {re.escape(NAMES[system])} \| [^|]+ \| [^|]+ \| [^|]+ \| {pct} \| {number} \| {pct} "
                         rf"\| {number} \| {n} \|", results, re.M), (system, results)  # fmt: skip
    # retrieval: real clips, no mel before a vocoder; PD with a pretrained prior: no file, a row that says so
    assert re.search(rf"^\| retrieval \| yes \| - \(nearest training clip\) \| [^|]+ \| {pct} \| {number} \| - \| - \| {n} \|",
                     results, re.M), results  # fmt: skip
    assert re.search(r"^\| CLIPSonic-PD \(pretrained prior\) \| yes \| image \| [^|]+ \| not run \(no pretrained prior\) \|",
                     results, re.M), results  # fmt: skip
    assert re.search(r"^\| CLIPSynth-Hybrid \| no \(labels\) \| image or label text \(p = 0\.5\) \|", results, re.M)
    order = [line.split("|")[1].strip() for line in results.splitlines() if line.startswith("| ")]
    rows = ["CLIPSonic-IQ", "CLIPSonic-ZS", "CLIPSonic-PD (trained prior)", "CLIPSonic-PD (pretrained prior)",
            "CLIPSynth-Text", "CLIPSynth-Hybrid", "retrieval", NAMES["gt"], "real test clips (probe accuracy)", "chance"]
    assert [r for r in order if r in rows] [: len(rows)] == rows  # Table 1 / Table 2's order
    for pair in ("CLIPSonic-PD (trained prior) - CLIPSonic-ZS", "CLIPSonic-ZS - CLIPSonic-IQ",
                 "CLIPSynth-Text - CLIPSynth-Hybrid", "CLIPSynth-Hybrid - CLIPSonic-ZS", "CLIPSonic-ZS - retrieval"):
        assert re.search(rf"^\| {re.escape(pair)} \| {n} \| [-+]\d", results, re.M), (pair, results)
    assert re.search(r"^\| chance \| - \| - \| - \| 25\.0 \|", results, re.M), results
    assert "mel relevance (%)" in results and "before the vocoder" in results
    assert "probe-FD" in results and "FAD" not in results.replace("not FAD", "")
    assert "Stage wall times" in results  # run.sh: --train_jobs 2; each training with its steps and time per step
    assert re.search(r"^\| 2-6 \| the concurrent stages, side by side \| [0-9:.]+ s? ?\|", results, re.M), results
    assert "| 2 | TTS data dirs, mel statistics (concurrent) |" in results
    assert "wall time (the concurrent stages as they ran side by side)" in results
    assert re.search(r"\| train generator \(concurrent\): 3 steps, \d\.\d{3} s/step \|", results), results
    for name in ("Text", "Hybrid"):
        assert re.search(rf"^\| 3 {name.lower()} \| train generator CLIPSynth-{name} \(concurrent\): 3 steps, \d\.\d{{3}} s/step \|",
                         results, re.M), results  # fmt: skip
    assert re.search(r"\| train vocoder \(concurrent\): 2 steps, \d\.\d{3} s/step \|", results), results
    # the sampler benchmark (stage 7): the steps table and the guidance sweep, one IQ query per class
    bench = tmp / "exp" / "tts_clipsonic_vocoder" / "benchmark_samplers_test"
    assert "## Sampler benchmark" in results and "### Samplers (w = 1.5)" in results, results
    steps_rows = re.findall(rf"^\| (DDPM|DDIM|DPM-Solver\+\+) \| (\d+) \| 1\.5 \| {number} \| n/a \| {number} \| {number} "
                            rf"\| {number} \| {number} \|$", results, re.M)  # fmt: skip  (audio, then the mel)
    assert [(name, int(n)) for name, n, *_ in steps_rows] == [("DDPM", 6), ("DDIM", 2), ("DPM-Solver++", 2),
                                                              ("DPM-Solver++", 3)], results  # fmt: skip
    assert f"{len(CLASSES)} IQ queries" in results and f"{bench}/samplers.png" in results
    assert "goal: n/a (needs DDPM-1000" in results  # the reduced grid has no DDPM-1000 baseline
    assert (bench / "samplers.png").stat().st_size > 0 and (bench / "guidance.png").stat().st_size > 0
    # its two shards ran as jobs of the generation pool (gen_jobs 2), then were merged; the sweep's w = 1.5 point
    # is the grid's 2-step DPM-Solver++ run, sampled once
    assert "2 shard(s) (queries i mod 2), 1 CPU thread(s) each" in results, results
    assert "The sweep's w = 1.5 row is the grid's DPM-Solver++ 2-step run" in results
    for i in range(2):
        assert "--shard" in (bench / f"shard{i}.log").read_text() and (bench / f"shard{i}.npz").is_file()


def test_pack_reloads_offline_and_generates(recipe, tmp_path):
    import torch

    from espnet2.enh.clipsep.files.pack import unpack_model
    from espnet2.tts_diff.prior import load_prior
    from espnet2.tts_diff.task import TTSDiffTask

    tmp, out = recipe
    packed = tmp / "exp" / "tts_clipsonic_vocoder" / "packed.zip"
    names = zipfile.ZipFile(packed).namelist()
    assert "meta.yaml" in names and any(n.endswith("feats_stats.npz") for n in names)
    assert any(n.endswith("prior/prior.pt") for n in names) and any(n.endswith("clip/clipsep-tiny.pt") for n in names)
    assert re.search(r"\d+ tensors identical, 1 prior\(s\) loaded", out)
    stats = tmp / "exp" / "stats"
    stats.rename(tmp / "stats_moved")  # the pack must not need the experiment's files
    try:
        info = unpack_model(packed, tmp_path / "cache")
        model, _ = TTSDiffTask.build_model_from_file(info["train_config"], info["model_file"], "cpu")
    finally:
        (tmp / "stats_moved").rename(stats)
    prior = load_prior(next((tmp_path / "cache").rglob("prior/prior.pt")))
    text = torch.from_numpy(np.load(next((tmp / "clip_dump" / "clip" / "test" / "data" / "text").glob("*.npy"))))
    emb = prior.sample(text[None], steps=2)[0]
    wav = model.tts.inference(torch.zeros(1, dtype=torch.long), spembs=emb, steps=2, seed=0, num_frames=4)["wav"]
    assert wav.shape == (4 * HOP,) and torch.isfinite(wav).all()


def test_failed_stage_2_stops_the_vocoder_and_the_run(recipe, tmp_path):
    """Stage 2 fails beside the probe and the prior: the vocoder waits for it, so it never starts; exit 1."""
    tmp, _ = recipe
    dirs = ["--dumpdir", f"{tmp_path}/dump", "--expdir", f"{tmp_path}/exp", "--results", f"{tmp_path}/R.md"]
    proc = _run(["--stage", "2", "--stop_stage", "6", "--test_set", "no_such_set", *dirs], tmp, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert "stage_5: not started: stage_2 failed" in out and "error: a stage of 2-6 failed" in out, out[-2000:]
    assert "stage_3: not started: stage_2 failed" in out
    assert "Stage 3: train" not in out and "Stage 5: train" not in out
    assert (tmp_path / "exp" / "probe" / "probe.pt").is_file()  # the stages beside it finished their work
    assert (tmp_path / "exp" / "prior" / "prior.pt").is_file()


def test_vggish_weights_add_fad(recipe, tmp_path):
    """Stage 8 again with VGGish weights (random here; a user's vggish-10086976.pth): an FAD column."""
    import torch

    from espnet2.tts_diff.fad import VGGish

    tmp, _ = recipe
    missing = _run(["--stage", "8", "--vggish", str(tmp_path / "no.pth")], tmp, timeout=120, check=False)
    assert missing.returncode == 1 and "no.pth: file not found (download https://" in missing.stdout + missing.stderr
    torch.manual_seed(0)
    model = VGGish()
    for m in model.modules():  # He initialisation: embeddings of order one, so the FAD shows in 3 decimals
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    weights = tmp_path / "vggish.pth"
    torch.save(model.state_dict(), weights)
    out = _run(["--stage", "8", "--stop_stage", "9", "--vggish", str(weights), "--results", f"{tmp_path}/R.md"], tmp)
    assert re.search(r"Stage 8: iq: relevance .*FAD \(VGGish\) \d+\.\d+", out), out[-2000:]
    results = (tmp_path / "R.md").read_text()
    assert "| FAD (VGGish) | clips | RTF |" in results
    for row in ("CLIPSonic-IQ", "CLIPSonic-ZS", "CLIPSonic-PD", "GT resynthesis"):
        assert re.search(rf"^\| {re.escape(row)}[^|]*( \| [^|]+){{7}} \| \d+\.\d{{3}} \| {PER_CLASS * len(CLASSES)} \|",
                         results, re.M), results  # fmt: skip
    gt = json.loads((tmp / "exp" / "tts_clipsonic_vocoder" / "gen_test_gt" / "probe_eval.json").read_text())
    assert gt["fad_vggish"] > 0.001  # the vocoder's resynthesis is not the real clips


def test_clap_model_adds_the_clap_score(clap_side, recipe, tmp_path):
    """Stage 8 again with a CLAP model (tiny, random; a user's laion/clap-htsat-unfused): a CLAP score column.

    transformers comes only into stage 8's evaluation processes (--clap_pythonpath), never into the others.
    """
    tmp, _ = recipe
    missing = _run(["--stage", "8", "--clap", str(tmp_path / "none")], tmp, timeout=120, check=False)
    assert missing.returncode == 1 and "none: no CLAP model there (download it: hf download" in missing.stdout + missing.stderr
    side, model = clap_side.pythonpath(), tmp_path / "clap"
    clip = next((tmp / "data" / "test").glob("wav.scp")).read_text().splitlines()[0]
    (tmp_path / "one.scp").write_text(clip + "\n")
    (tmp_path / "texts.json").write_text(json.dumps({"one": ["piano"]}))
    proc = clap_side.run([sys.executable, str(clap_side.helper), str(model), str(tmp_path / "one.scp"),
                           str(tmp_path / "texts.json"), str(tmp_path / "cosine.json")], pythonpath=side)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    no_path = _run(["--stage", "8", "--clap", str(model), "--clap_pythonpath", str(tmp_path)], tmp, timeout=120, check=False)
    assert no_path.returncode == 1 and "--clap needs transformers in stage 8" in no_path.stdout + no_path.stderr
    out = _run(["--stage", "8", "--stop_stage", "9", "--clap", str(model), "--clap_pythonpath", side,
                "--results", f"{tmp_path}/R.md"], tmp)  # fmt: skip
    assert re.search(r"Stage 8: iq: relevance .*CLAP score -?\d\.\d{3} ± \d\.\d{3}", out), out[-2000:]
    results = (tmp_path / "R.md").read_text()
    assert "| CLAP score | clips | RTF |" in results and "CLAP score: mean cosine similarity" in results
    for row in ("CLIPSonic-IQ", "CLIPSonic-ZS", "CLIPSonic-PD", "GT resynthesis"):
        assert re.search(rf"^\| {re.escape(row)}[^|]*( \| [^|]+){{7}} \| -?[01]\.\d{{3}} \| {PER_CLASS * len(CLASSES)} \|",
                         results, re.M), results  # fmt: skip
    iq = json.loads((tmp / "exp" / "tts_clipsonic_vocoder" / "gen_test_iq" / "probe_eval.json").read_text())
    assert -1.0 <= iq["clap_score"] <= 1.0 and iq["clap_score_sem"] > 0 and str(model) in iq["clap_note"]


def test_a_missing_pretrained_prior_file_stops_the_run(recipe, tmp_path):
    """--pretrained_prior FILE that is not there: one error line before any stage (checked before the trainings)."""
    tmp, _ = recipe
    proc = _run(["--systems", "pdp", "--pretrained_prior", str(tmp_path / "none.pth")], tmp, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "none.pth: file not found" in out and "Stage 1:" not in out
