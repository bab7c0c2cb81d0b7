"""Generator / generate CLI: ZS, PD and IQ from an exp dir and a packed zip, seeds, Griffin-Lim fallback, errors."""

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

from espnet2.tts_diff.bin import generate as cli
from espnet2.tts_diff.generate import GenerationError, GenerationWarning, Generator
from espnet2.tts_diff.prior import DiffusionPrior, save_prior

TINY = Path(__file__).resolve().parents[3] / "egs2" / "clipsep" / "tts1" / "conf" / "tiny" / "train_clipsonic.yaml"
DIM, N_MELS, HOP, FRAMES = 64, 64, 512, 8
VOCODER = dict(
    in_channels=N_MELS, channels=16, upsample_scales=[8, 8, 4, 2], upsample_kernel_sizes=[16, 16, 8, 4],
    resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]],
)  # fmt: skip
PRIOR = dict(embed_dim=DIM, d_model=32, num_layers=1, num_heads=2, num_steps=100)
FAST = dict(steps=3, num_frames=FRAMES)


def _dry_run(root: Path, extra: list) -> None:
    """config.yaml of the tiny YAML through TTSDiffTask, with paths relative to ``root`` (as a recipe's)."""
    from espnet2.tts_diff.task import TTSDiffTask

    d = Path("data")
    d.mkdir()
    sf.write(d / "a.wav", np.zeros(16000), 16000)
    np.save(d / "a.npy", np.ones(DIM, np.float32))
    for name, line in (("wav.scp", "a data/a.wav"), ("spembs.scp", "a data/a.npy"), ("text", "a ab"), ("shape", "a 16000")):
        (d / name).write_text(line + "\n")
    (d / "tokens.txt").write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    np.savez(d / "feats_stats.npz", count=100.0, sum=np.full(N_MELS, -300.0), sum_square=np.full(N_MELS, 910.0))
    args = ["--config", str(TINY), "--iterator_type", "none", "--dry_run", "true", "--output_dir", "exp"]
    for s in ("train", "valid"):
        for f, n, t in (("text", "text", "text"), ("wav.scp", "speech", "sound"), ("spembs.scp", "spembs", "npy")):
            args += [f"--{s}_data_path_and_name_and_type", f"data/{f},{n},{t}"]
        args += [f"--{s}_shape_file", "data/shape"]
    args += ["--token_list", "data/tokens.txt", "--token_type", "char", "--cleaner", "none", "--g2p", "none",
             "--normalize_conf", "stats_file=data/feats_stats.npz", "--use_tensorboard", "false",
             "--use_matplotlib", "false", "--ngpu", "0"]  # fmt: skip
    TTSDiffTask.main(cmd=args + extra)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """exp/ (embedded vocoder, prior/, clip/), its packed zip, and exp_gl/ (no vocoder, no prior, no CLIP)."""
    from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
    from espnet2.main_funcs.pack_funcs import pack
    from espnet2.tts_diff.task import TTSDiffTask

    root = tmp_path_factory.mktemp("gen")
    with contextlib.chdir(root):
        _dry_run(root, ["--tts_conf", "vocoder_conf=" + yaml.safe_dump(VOCODER, default_flow_style=True).strip()])
        torch.manual_seed(0)
        model, _ = TTSDiffTask.build_model_from_file("exp/config.yaml", None, "cpu")
        torch.save(model.state_dict(), "exp/model.pth")
        Path("exp/clip").mkdir()
        torch.manual_seed(0)
        torch.save(CLIPQueryEncoder("clipsep-tiny", None, device="cpu").model.state_dict(), "exp/clip/clipsep-tiny.pt")
        Path("exp/clip/clipsep-tiny.pt.json").write_text(json.dumps({"clip_model": "clipsep-tiny"}))
        torch.manual_seed(0)
        save_prior(DiffusionPrior(**PRIOR), PRIOR, "exp/prior/prior.pt")
        pack(
            files={"model_file": "exp/model.pth"}, yaml_files={"train_config": "exp/config.yaml"},
            outpath="packed.zip",
            option=["data/feats_stats.npz", "exp/prior/prior.pt", "exp/prior/prior.yaml", "exp/clip/clipsep-tiny.pt",
                    "exp/clip/clipsep-tiny.pt.json"],
        )  # fmt: skip
        # The same generator without its vocoder (Griffin-Lim), and without prior or CLIP beside it.
        gl = Path("exp_gl")
        gl.mkdir()
        conf = yaml.safe_load(Path("exp/config.yaml").read_text())
        del conf["tts_conf"]["vocoder_conf"]
        (gl / "config.yaml").write_text(yaml.safe_dump(conf))
        torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("tts.vocoder.")}, gl / "model.pth")
        Image.new("RGB", (48, 48), (220, 30, 30)).save("red.png")
        Path("frames").mkdir()
        for i, c in enumerate([(0, 0, 0), (0, 0, 250), (0, 250, 0), (250, 0, 0), (9, 9, 9)]):
            Image.new("RGB", (48, 48), c).save(f"frames/{i:06d}.jpg")
    # Loaded from the repo's cwd: the exp dir's relative stats path is resolved against its ancestors.
    gen = Generator.from_pretrained(root / "exp", device="cpu")
    return dict(root=root, gen=gen, clip=str(root / "exp/clip/clipsep-tiny.pt"))


def test_loads_exp_dir_with_the_recipes_clip_prior_and_vocoder(assets):
    gen = assets["gen"]
    assert gen.fs == 16000 and gen.hop == HOP and gen.griffin_lim is None
    assert gen.query_encoder.model_name == "clipsep-tiny" and Path(gen.query_encoder.pretrained).name == "clipsep-tiny.pt"
    assert isinstance(gen.prior, DiffusionPrior) and gen.prior.num_steps == PRIOR["num_steps"]
    state = torch.load(assets["root"] / "exp/model.pth", weights_only=True)
    assert torch.equal(gen.model.tts.null_cond.detach(), state["tts.null_cond"])


@pytest.mark.parametrize("mode", ["zs", "pd", "iq"])
def test_each_mode_gives_finite_waveforms_of_num_frames_times_hop(assets, mode):
    query = dict(image=[assets["root"] / "red.png", assets["root"] / "frames"]) if mode == "iq" else dict(text=["violin", "dog"])
    wavs = assets["gen"](**query, mode=mode, num=2, **FAST)
    assert len(wavs) == 4
    for w in wavs:
        assert w.dtype == np.float32 and w.shape == (FRAMES * HOP,) and np.isfinite(w).all() and np.abs(w).max() > 0
    assert not np.array_equal(wavs[0], wavs[2])  # the two queries differ


def test_seeds_reproduce_and_differ(assets):
    gen = assets["gen"]
    a = gen(text="violin", mode="pd", seed=5, num=2, **FAST)
    b = gen(text="violin", mode="pd", seed=5, num=2, **FAST)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # sample k uses seed + k
    np.testing.assert_allclose(gen(text="violin", mode="pd", seed=6, **FAST)[0], a[1], atol=1e-5)  # alone or batched
    assert not np.array_equal(gen(text="violin", mode="pd", seed=7, **FAST)[0], a[0])


def test_batch_size_does_not_change_the_samples(assets):
    gen = assets["gen"]
    one = gen(text=["violin", "dog"], mode="pd", seed=2, num=2, batch_size=1, **FAST)
    three = gen(text=["violin", "dog"], mode="pd", seed=2, num=2, batch_size=3, **FAST)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a, b, atol=1e-5)
    conds = gen.encode(text=["violin", "dog"], mode="zs")
    outs = gen.sample_batch(conds, [4, 9], **FAST)
    for cond, seed, out in zip(conds, [4, 9], outs):
        alone = gen.sample(cond, seed=seed, **FAST)
        assert set(out) == set(alone) and out["wav"].shape == (FRAMES * HOP,)
        torch.testing.assert_close(out["mel"], alone["mel"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["wav"], alone["wav"], atol=1e-5)
    assert (outs[0]["mel"] - outs[1]["mel"]).abs().max() > 1e-3
    with pytest.raises(GenerationError, match="2 conditions and 1 seeds"):
        gen.sample_batch(conds, [1], **FAST)
    with pytest.raises(GenerationError, match="batch_size: must be >= 1"):
        gen(text="violin", batch_size=0, **FAST)


def test_pd_is_prior_sample_then_inference_with_the_same_seed(assets):
    gen = assets["gen"]
    [text_emb] = gen.query_encoder.encode_text(["violin"])
    image_emb = gen.prior.sample(text_emb[None], steps=gen.prior_steps, sampler=gen.prior_sampler,
                                 generator=torch.Generator().manual_seed(3))[0]  # fmt: skip
    conf = dict(steps=3, guidance=1.5, sampler="dpmpp", seed=3, num_frames=FRAMES)
    manual = gen.model.tts.inference(torch.zeros(1, dtype=torch.long), spembs=image_emb, **conf)
    zs = gen.model.tts.inference(torch.zeros(1, dtype=torch.long), spembs=text_emb, **conf)
    [pd] = gen(text="violin", mode="pd", seed=3, **FAST)
    [zs_gen] = gen(text="violin", mode="zs", seed=3, **FAST)
    np.testing.assert_allclose(pd, manual["wav"].numpy(), atol=1e-6)
    np.testing.assert_allclose(zs_gen, zs["wav"].numpy(), atol=1e-6)
    # the two conditions give two mels (the barely trained vocoder may map both to nearly the same waveform)
    assert (manual["feat_gen"] - zs["feat_gen"]).abs().max() > 1e-3
    # sample() also returns the de-normalised log-mel the vocoder was given (what the benchmark's mel columns score)
    [cond] = gen.encode(text="violin", mode="pd")
    out = gen.sample(cond, seed=3, **FAST)
    np.testing.assert_allclose(out["wav"], pd, atol=1e-6)
    denorm, _ = gen.model.normalize.inverse(out["feat_gen"].clone()[None], torch.tensor([FRAMES]))
    assert out["mel"].shape == (FRAMES, gen.model.tts.odim) and not torch.equal(out["mel"], out["feat_gen"])
    torch.testing.assert_close(out["mel"], denorm[0])


def test_packed_zip_finds_its_clip_and_prior_and_matches_the_exp_dir(assets, tmp_path):
    gen = Generator.from_pretrained(assets["root"] / "packed.zip", device="cpu", cache_dir=tmp_path)
    assert gen.prior is not None and gen.query_encoder.model_name == "clipsep-tiny"
    for mode in ("zs", "pd"):
        np.testing.assert_array_equal(gen(text="dog", mode=mode, **FAST)[0], assets["gen"](text="dog", mode=mode, **FAST)[0])


def test_griffin_lim_fallback_with_a_warning_and_pd_needs_a_prior(assets):
    with pytest.warns(GenerationWarning, match="Griffin-Lim"):
        gen = Generator.from_pretrained(assets["root"] / "exp_gl", clip_model="clipsep-tiny",
                                        clip_pretrained=assets["clip"], device="cpu", griffin_lim_iters=4,
                                        clip_x0=3.0)  # fmt: skip
    assert gen.prior is None and gen.griffin_lim is not None
    [w] = gen(text="dog", steps=2, num_frames=FRAMES)
    assert w.shape == (FRAMES * HOP,) and np.isfinite(w).all() and np.abs(w).max() > 0
    with pytest.raises(GenerationError, match="mode pd: needs the diffusion prior.*--prior"):
        gen(text="dog", mode="pd")
    gen_pd = Generator.from_pretrained(assets["root"] / "exp_gl", query_encoder=gen.query_encoder,
                                       prior=assets["root"] / "exp/prior/prior.pt", device="cpu")  # fmt: skip
    assert gen_pd.prior is not None


def test_errors_are_one_line(assets, tmp_path):
    gen = assets["gen"]
    cases = [
        (lambda: Generator.from_pretrained(tmp_path / "nope.zip"), "nope.zip: model not found"),
        (lambda: Generator.from_pretrained(tmp_path), "model directory without config.yaml"),
        (lambda: Generator.from_pretrained(assets["root"] / "exp_gl", device="cpu"), "do not say which CLIP"),
        (lambda: gen(text=["violin", "  "]), "text 2: empty text query"),
        (lambda: gen(), "no query"),
        (lambda: gen(text="violin", mode="iq"), "mode iq"),
        (lambda: gen(image=tmp_path / "missing.png"), "missing.png: image not found"),
        (lambda: gen(text="violin", sampler="euler"), "sampler: choose from"),
        (lambda: gen(text="violin", num=0), "num: must be >= 1"),
    ]
    for fn, message in cases:
        with pytest.raises(GenerationError, match=message) as err:
            fn()
        assert "\n" not in str(err.value)


def test_cli_writes_files_and_refuses_existing_ones(assets, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--model", str(assets["root"] / "exp"), "-o", str(out), "--device", "cpu", "--steps", "2",
            "--num_frames", str(FRAMES), "--num", "2"]  # fmt: skip
    assert cli.main(base + ["--text", "Playing violin!", "--text", "dog", "--mode", "pd", "--seed", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dog_0.wav", "dog_1.wav", "playing-violin_0.wav", "playing-violin_1.wav"]
    wav, rate = sf.read(out / "dog_1.wav", dtype="float32")
    assert rate == 16000 and wav.shape == (FRAMES * HOP,)
    alone = assets["gen"](text="dog", mode="pd", seed=5, steps=2, num_frames=FRAMES)[0].clip(-1, 1)
    np.testing.assert_allclose(wav, alone, atol=1e-5)  # the CLI sampled it in a batch of 4
    capsys.readouterr()
    assert cli.main(base + ["--text", "dog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {out / 'dog_0.wav'}: output file exists (pass --overwrite to replace it)"
    assert cli.main(base + ["--text", "dog", "--overwrite", "--image", str(assets["root"] / "red.png")]) == 0
    assert (out / "image-red_1.wav").is_file() and not list(out.glob(".*tmp"))
    for extra, message in ((["--text", ""], "error: text 1: empty text query"),
                           (["--text", "x", "--prior", "no.pt"], "error: no.pt: prior file not found")):  # fmt: skip
        assert cli.main(base + extra) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == message
    shutil.rmtree(out)


def test_cli_progress_bar_on_a_terminal_and_quiet(assets, tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    base = ["--model", str(assets["root"] / "exp"), "--device", "cpu", "--steps", "2", "--num_frames", str(FRAMES),
            "--text", "dog", "--num", "2", "--overwrite"]  # fmt: skip
    shown = []
    for quiet in ((), ("--quiet",)):
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        assert cli.main(base + ["-o", str(tmp_path / "o"), *quiet]) == 0
        monkeypatch.undo()
        shown.append(term.getvalue())
    assert "generate: 100%" in shown[0] and "2/2" in shown[0]
    assert "%|" not in shown[1]


def test_cli_help_lists_defaults_and_names_are_unique():
    text = cli.get_parser().format_help()
    assert "espnet2.tts_diff.bin.generate" in text and "(default: 25)" in text and "(default: dpmpp)" in text
    assert cli.output_names(["dog", "dog", "cat"], 2) == [["dog_0.wav", "dog_1.wav"], ["dog-2_0.wav", "dog-2_1.wav"],
                                                          ["cat_0.wav", "cat_1.wav"]]  # fmt: skip


def _benchmark_module():
    import importlib.util

    path = TINY.parents[2] / "local" / "benchmark_samplers.py"
    spec = importlib.util.spec_from_file_location("benchmark_samplers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_table_goal_and_plots(tmp_path, monkeypatch):
    bench = _benchmark_module()
    assert bench.parse_grid(["ddpm:1000", "dpmpp:10,25"]) == [("ddpm", 1000), ("dpmpp", 10), ("dpmpp", 25)]
    with pytest.raises(ValueError, match="sampler:steps"):
        bench.parse_grid(["euler:10"])
    rows = [
        dict(sampler="ddpm", steps=1000, guidance=1.5, seconds=40.0, relevance=0.9, probe_fd=10.0),
        dict(sampler="dpmpp", steps=10, guidance=1.5, seconds=0.5, relevance=0.85, probe_fd=12.0),
        dict(sampler="dpmpp", steps=25, guidance=1.5, seconds=1.0, relevance=0.9, probe_fd=10.5),
    ]
    table = bench.markdown_table(rows).splitlines()
    assert table[0] == "| sampler | steps | w | s/sample | speed-up vs DDPM-1000 | relevance | probe-FD |"
    assert table[3] == "| DPM-Solver++ | 10 | 1.5 | 0.5000 | 80.0x | 0.850 | 12.000 |"
    goal = bench.goal_check(rows)
    assert ": MET;" in goal and "10 steps 80.0x, probe-FD +20.0 %" in goal and "25 steps 40.0x, probe-FD +5.0 %" in goal
    assert "NOT MET" in bench.goal_check([rows[0], dict(rows[2], seconds=2.0)])
    timing = [dict(r, relevance=None, probe_fd=None) for r in rows]
    assert "speed only" in bench.goal_check(timing) and bench.markdown_table(timing).splitlines()[2].endswith("| n/a | n/a |")
    assert bench.markdown_table(rows[1:], first="guidance", baseline=40.0).splitlines()[2].startswith("| 1.5 | DPM-Solver++ | 10 | 0.5000 | 80.0x")
    # with the mel before the vocoder: two more columns, and the goal checked on the mel as well
    mel_rows = [dict(r, mel_relevance=rel, mel_probe_fd=fd) for r, rel, fd in zip(rows, (1.0, 0.75, 0.5), (4.0, 4.2, 5.0))]
    mel_rows[2]["probe_fd"] = 11.5  # audio +15 %: not met at 25 steps; 10 steps is +20 %
    table = bench.markdown_table(mel_rows).splitlines()
    assert table[0].endswith("| relevance | probe-FD | mel relevance | mel probe-FD |")
    assert table[3] == "| DPM-Solver++ | 10 | 1.5 | 0.5000 | 80.0x | 0.850 | 12.000 | 0.750 | 4.200 |"
    goal = bench.goal_check(mel_rows)
    assert goal.startswith("goal (DPM-Solver++ <= 25 steps: >= 40x, probe-FD within 10 %): NOT MET;"), goal
    assert goal.endswith(". On the mel before the vocoder: MET; 10 steps 80.0x, probe-FD +5.0 %; 25 steps 40.0x, probe-FD +25.0 %")
    assert "On the mel" not in bench.goal_check(rows)  # no mel columns, no mel verdict
    from espnet2.enh.clipsep.eval import figures

    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    figures.line_figure(bench.sampler_panels(rows), tmp_path / "samplers.png")
    figures.line_figure(bench.guidance_panels(timing), tmp_path / "guidance.png")  # quality panels say n/a
    fd, sec = drawn[0].axes
    assert fd.get_xscale() == "log" and sec.get_yscale() == "log" and fd.get_xlabel() == "steps"
    assert sorted(line.get_label() for line in fd.get_lines()) == sorted({bench.SAMPLER_NAMES[r["sampler"]] for r in rows})
    assert [t.get_text() for ax in drawn[1].axes for t in ax.texts] == ["n/a", "n/a"]


def test_benchmark_jobs_merge_to_the_rows_of_one_job():
    from espnet2.tts_diff.probe import frechet_distance

    bench = _benchmark_module()
    assert bench.shard_of("1/2:/tmp/j1.npz") == (1, 2, Path("/tmp/j1.npz"))
    for bad in ("2/2:/tmp/x.npz", "1/2", "a/2:/tmp/x.npz"):
        with pytest.raises(ValueError, match="I/N:PATH"):
            bench.shard_of(bad)
    rng = np.random.default_rng(0)
    targets = np.array([0, 1, 2, 0, 1])
    ref = rng.normal(size=(20, 3))
    emb, mel_emb = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    pred, mel_pred = np.array([0, 1, 0, 0, 2]), np.array([0, 1, 2, 0, 1])  # 3 of 5 right; all 5 on the mel
    seconds = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    one = {"0_seconds": seconds, "0_query": np.arange(5), "0_pred": pred, "0_emb": emb, "0_mel_pred": mel_pred,
           "0_mel_emb": mel_emb}  # fmt: skip
    order = np.array([0, 2, 4, 1, 3])  # job 0 had queries 0, 2, 4 and job 1 had 1, 3: merged in job order
    two = {k: v[order] for k, v in one.items()}
    two["0_query"] = order
    settings = [("dpmpp", 10, 1.5)]
    (a,), (b,) = bench.aggregate(settings, one, targets, ref), bench.aggregate(settings, two, targets, ref)
    assert a["sampler"] == b["sampler"] and {k: v for k, v in a.items() if k != "sampler"} == pytest.approx(
        {k: v for k, v in b.items() if k != "sampler"}, rel=1e-12)  # the FD up to summation order
    assert a["relevance"] == pytest.approx(0.6) and a["mel_relevance"] == 1.0 and a["seconds"] == 3.0
    assert a["probe_fd"] == pytest.approx(frechet_distance(emb, ref)) and a["mel_probe_fd"] != a["probe_fd"]
    (timing,) = bench.aggregate(settings, {"0_seconds": seconds}, targets, None)  # no probe: time only
    assert timing["seconds"] == 3.0 and timing["relevance"] is None and timing["probe_fd"] is None


def test_benchmark_goal_gives_a_paired_bootstrap_interval():
    bench = _benchmark_module()
    rng = np.random.default_rng(1)
    emb, ref = rng.normal(size=(12, 3)), rng.normal(size=(30, 3))
    assert bench.fd_change_interval(emb, emb, ref, resamples=50) == (0.0, 0.0)  # the same samples: no change
    lo, hi = bench.fd_change_interval(emb + 3.0, emb, ref, resamples=50)  # shifted away from the references
    assert 0.0 < lo <= hi
    with pytest.raises(ValueError, match="paired"):
        bench.fd_change_interval(emb[:5], emb, ref)
    # records of a job-merged run: DPM-Solver++'s rows come in another query order than DDPM's; the samples are
    # paired by query, so identical per-query embeddings give an interval of exactly zero
    settings = [("ddpm", 1000, 1.5), ("dpmpp", 10, 1.5), ("dpmpp", 50, 1.5)]
    order = np.array([0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11])
    records = {"0_query": np.arange(12), "0_emb": emb, "0_mel_emb": emb + 1.0}
    for k in (1, 2):
        records.update({f"{k}_query": order, f"{k}_emb": emb[order], f"{k}_mel_emb": emb[order] + 1.0})
    rows = [dict(sampler=s, steps=n, guidance=w) for s, n, w in settings]
    bench.add_goal_intervals(rows, settings, records, ref)
    assert rows[1]["probe_fd_ci"] == (0.0, 0.0) and rows[1]["mel_probe_fd_ci"] == (0.0, 0.0)
    assert "probe_fd_ci" not in rows[0] and "probe_fd_ci" not in rows[2]  # only DPM-Solver++ at <= 25 steps
    goal = bench.goal_check([
        dict(sampler="ddpm", steps=1000, guidance=1.5, seconds=40.0, probe_fd=10.0),
        dict(sampler="dpmpp", steps=10, guidance=1.5, seconds=0.5, probe_fd=11.2, probe_fd_ci=(0.012, 0.142)),
    ])  # fmt: skip
    assert goal.endswith("NOT MET; 10 steps 80.0x, probe-FD +12.0 % (90 % interval +1.2..+14.2 %)"), goal


def test_benchmark_jobs_run_as_processes(tmp_path):
    bench = _benchmark_module()
    args = ["--model", "paper", "--config", str(TINY), "--grid", "ddpm:3", "dpmpp:2", "--guidances", "1",
            "--sweep_steps", "2", "--num_frames", "8", "--device", "cpu", "--out_dir", str(tmp_path)]  # fmt: skip
    assert bench.main(args + ["--jobs", "2"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in rows["samplers"]] == [("ddpm", 3), ("dpmpp", 2)]
    assert all(r["seconds"] > 0 and r["relevance"] is None for r in rows["samplers"] + rows["guidance"])
    assert "8 IQ queries" in (tmp_path / "results.md").read_text()
    assert "2 jobs at once (queries i mod 2), 1 CPU thread(s) each" in (tmp_path / "results.md").read_text()
    assert bench.main(args + ["--jobs", "0"]) == 2


def test_benchmark_shards_merge_and_repeated_settings(tmp_path, capsys):
    """Shards run one by one and merged give the rows of one run; a repeated setting reuses the samples."""
    bench = _benchmark_module()
    out = tmp_path / "out"
    args = ["--model", "paper", "--config", str(TINY), "--grid", "ddim:2", "dpmpp:2", "--guidance", "1.5",
            "--guidances", "0", "1.5", "--sweep_steps", "2", "--num_frames", "8", "--device", "cpu",
            "--threads", "1", "--out_dir", str(out)]  # fmt: skip
    shards = [tmp_path / f"shard{i}.npz" for i in range(2)]
    for i, path in enumerate(shards):
        assert bench.main(args + ["--shard", f"{i}/2:{path}"]) == 0
        assert not (out / "results.md").exists()  # a shard only writes its records
    with np.load(shards[1]) as data:
        assert list(data["0_seconds"].shape) == [4] and list(data["meta_shard"]) == [1, 2]  # queries 1, 3, 5, 7
        # the sweep's w = 1.5 point (setting 3) is the grid's DPM-Solver++ run (setting 1): its very samples
        assert np.array_equal(data["3_seconds"], data["1_seconds"])
        assert not np.array_equal(data["2_seconds"], data["1_seconds"])
    assert bench.main(args + ["--merge", *map(str, shards)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["sampler"], r["steps"], r["guidance"]) for r in rows["samplers"]] == [("ddim", 2, 1.5), ("dpmpp", 2, 1.5)]
    assert rows["guidance"][1]["seconds"] == rows["samplers"][1]["seconds"] > 0
    text = (out / "results.md").read_text()
    assert "8 IQ queries" in text and "2 shard(s) (queries i mod 2), 1 CPU thread(s) each" in text
    assert "The sweep's w = 1.5 row is the grid's DPM-Solver++ 2-step run" in text
    # bad merges: one line, exit 2, nothing written
    (out / "results.md").unlink()
    bad = [
        ([shards[0]], "shard 0/2, but 1 records files"),
        ([shards[0], shards[0]], "shard 0/2 again"),
        ([shards[0], tmp_path / "none.npz"], "none.npz: not a shard's records file"),
    ]
    other = [a if a != "dpmpp:2" else "dpmpp:3" for a in args]
    runs = [(args + ["--merge", *map(str, paths)], message) for paths, message in bad] + [
        (other + ["--merge", *map(str, shards)], "shard 0/2 was run with other settings"),
        (args + ["--merge", str(shards[0]), "--jobs", "2"], "not with --shard or --jobs"),
    ]
    capsys.readouterr()
    for argv, message in runs:
        assert bench.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --merge: ") and message in err[0], err
    assert not (out / "results.md").exists()


# ------------------------------------------------------------------------------------------------ LAION's DALL·E 2 prior
@pytest.fixture(scope="module")
def laion_prior(assets):
    """A tiny random prior in the layout of LAION's release (latest.pth + prior_config.json), on the exp's CLIP."""
    from espnet2.tts_diff.dalle2_prior import Dalle2Prior

    d = assets["root"] / "laion"
    d.mkdir()
    torch.manual_seed(0)
    prior = Dalle2Prior(dim=DIM, depth=1, heads=2, dim_head=32, num_timesteps=50, timesteps=50)
    torch.save(prior.state_dict(), d / "latest.pth")
    conf = {"clip": {"make": "openai", "model": "clipsep-tiny"}, "net": {"dim": DIM, "depth": 1}, "image_embed_dim": DIM,
            "timesteps": 50, "sample_timesteps": 8}  # fmt: skip
    (d / "prior_config.json").write_text(json.dumps({"prior": conf}))
    return d / "latest.pth"


def test_laion_prior_maps_the_query_text_for_pd(assets, laion_prior, tmp_path):
    from espnet2.tts_diff.dalle2_prior import Dalle2Prior

    load = dict(device="cpu", prior=laion_prior, prior_clip_pretrained=assets["clip"])
    gen = Generator.from_pretrained(assets["root"] / "exp", prior_steps=8, **load)
    assert isinstance(gen.prior, Dalle2Prior) and gen.prior.timesteps == 50
    assert gen.prior.text_encoder.encoder is gen.query_encoder  # the model's CLIP is the prior's: shared
    image = gen.prior.sample_texts(["violin"], steps=8, generator=torch.Generator().manual_seed(3))[0]
    conf = dict(steps=3, guidance=1.5, sampler="dpmpp", seed=3, num_frames=FRAMES)
    manual = gen.model.tts.inference(torch.zeros(1, dtype=torch.long), spembs=image, **conf)
    [pd] = gen(text="violin", mode="pd", seed=3, **FAST)
    np.testing.assert_allclose(pd, manual["wav"].numpy(), atol=1e-6)
    [cond] = gen.encode(text=" violin ", mode="pd")
    assert cond.text == "violin"
    zs = gen.sample(gen.encode(text="violin", mode="zs")[0], seed=3, **FAST)
    assert (gen.sample(cond, seed=3, **FAST)["mel"] - zs["mel"]).abs().max() > 1e-3
    for options, message in ((dict(prior_steps=8, prior_guidance=1.0), "prior: guidance 1.0: .*no unconditional branch"),
                             (dict(prior_steps=8, prior_sampler="dpmpp"), "prior: sampler dpmpp with 8 steps"),
                             (dict(), "prior: steps must lie in \\[1, 50\\], got 64")):  # fmt: skip
        with pytest.raises(GenerationError, match=message):
            Generator.from_pretrained(assets["root"] / "exp", **load, **options)
    out = tmp_path / "out"  # the command line: --prior of LAION's layout, its CLIP's weights
    assert cli.main(["--model", str(assets["root"] / "exp"), "-o", str(out), "--device", "cpu", "--text", "violin",
                     "--mode", "pd", "--seed", "3", "--steps", "3", "--num_frames", str(FRAMES), "--prior",
                     str(laion_prior), "--prior_clip_pretrained", assets["clip"], "--prior_steps", "8"]) == 0  # fmt: skip
    np.testing.assert_allclose(sf.read(out / "violin_0.wav", dtype="float32")[0], pd.clip(-1, 1), atol=1e-6)
    shutil.copy(assets["root"] / "exp/prior/prior.pt", tmp_path / "orphan.pt")  # train_prior's, without its .yaml
    with pytest.raises(GenerationError, match="orphan.pt: not a DALL·E 2 prior .*needs its orphan.yaml beside it"):
        Generator.from_pretrained(assets["root"] / "exp", device="cpu", prior=tmp_path / "orphan.pt")


def test_generate_set_pd_with_the_laion_prior(assets, laion_prior, tmp_path, capsys):
    from espnet2.tts_diff.bin import generate_set

    texts = tmp_path / "texts"
    texts.write_text("k1 violin\nk2 dog barking\nk3 violin\n")
    base = ["--train_config", "exp/config.yaml", "--model_file", "exp/model.pth", "--prior", str(laion_prior),
            "--prior_clip_pretrained", assets["clip"], "--prior_steps", "8", "--steps", "2", "--num_frames",
            str(FRAMES), "--quiet"]  # fmt: skip
    pd = ["--query_text", str(texts), "--query_template", "a photo of {}"]
    with contextlib.chdir(assets["root"]):
        for name, batch in (("a", "1"), ("b", "3")):
            assert generate_set.main(base + pd + ["--output_dir", str(tmp_path / name), "--batch_size", batch]) == 0
        report = json.loads((tmp_path / "a" / "generate.json").read_text())
        assert (report["mode"], report["prior_format"], report["query_template"]) == ("prior", "Dalle2Prior", "a photo of {}")
        wavs = {k: [sf.read(tmp_path / d / "wav" / f"{k}.wav")[0] for d in "ab"] for k in ("k1", "k2", "k3")}
        for a, b in wavs.values():  # each key's prior draw and mel from its own seed: the batch does not matter
            assert a.shape == (FRAMES * HOP,) and np.abs(a - b).max() <= 2 / 32768
        mels = {k: np.load(tmp_path / "a" / "mel" / f"{k}.npy") for k in ("k1", "k3")}
        assert np.abs(mels["k1"] - mels["k3"]).max() > 1e-3  # the same text, other seeds
        capsys.readouterr()
        errors = (
            (["--text_scp", str(texts)], f"{laion_prior}: LAION's DALL-E 2 prior maps query texts (give --query_text)"),
            (pd + ["--prior", "exp/prior/prior.pt"], "exp/prior/prior.pt: train_prior's prior maps text embeddings"),
            (pd + ["--prior_guidance", "2"], "guidance 2.0: the dalle2-pytorch 1.1.0 prior has no unconditional branch"),
            (pd + ["--query_template", "a photo"], "--query_template must contain one '{}'"),
        )
        for extra, message in errors:
            assert generate_set.main(base + extra + ["--output_dir", str(tmp_path / "err")]) == 2
            assert message in capsys.readouterr().err.strip().splitlines()[-1]
