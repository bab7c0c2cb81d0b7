"""python -m espnet2.enh.clipsep.bin.report: table numbers, figures, one self-consistent HTML page, clear errors."""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from espnet2.enh.clipsep.bin import report, score
from espnet2.enh.clipsep.eval import figures
from espnet2.enh.clipsep.eval.figures import stft_magnitude
from espnet2.enh.clipsep.eval.report import Result, class_rows, pick_examples
from espnet2.enh.clipsep.eval.scoring import read_score_dir

FS = 8000
KEYS = ("k1", "k2", "k3")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, write_set):
    """Synthetic test set, two systems scored with score.py, a label file and a timings TSV."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    t = np.arange(FS) / FS
    s1 = {k: 0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i, k in enumerate(KEYS)}  # low-frequency target
    s2 = {k: 0.2 * rng.standard_normal(FS) for k in KEYS}
    mix = {k: s1[k] / 2 + s2[k] / 2 for k in KEYS}
    scps = {n: write_set(root, n, d) for n, d in (("mix", mix), ("spk1", s1), ("spk2", s2))}
    systems = {}
    for name, (a, b) in {"SysA": (0.9, 0.1), "SysB": (0.6, 0.4)}.items():
        inf = write_set(root, f"inf_{name}", {k: a * s1[k] + b * s2[k] for k in KEYS})
        assert score.main(["--mix_scp", str(scps["mix"]), "--ref_scp", str(scps["spk1"]), "--ref_scp",
                           str(scps["spk2"]), "--inf_scp", str(inf), "--output_dir", str(root / f"score_{name}")]) == 0
        systems[name] = (root / f"score_{name}", inf)
    (root / "utt2label").write_text("k1 violin & dog <1>\nk2 flute\nk3 cat\n")
    (root / "query_text").write_text("k1 violin & dog <1>\nk2 flute\nk3 cat\n")
    lines = []
    for i, key in enumerate(KEYS):  # a directory of 3 frames per key; the middle one is the query's picture
        (root / "frames" / key).mkdir(parents=True)
        for f in range(3):
            Image.new("RGB", (64, 48), (80 * i, 60 * f, 200)).save(root / "frames" / key / f"{f:06d}.jpg")
        lines.append(f"{key} {root / 'frames' / key}\n")
    (root / "query_image").write_text("".join(lines))
    (root / "timings.tsv").write_text("stage\tname\tseconds\n5\ttrain\t3723\n6\tinference\t12.34\n")
    return root, scps, systems


def _args(root, scps, systems, *extra):
    results = ["--result", f"SysA|text|{systems['SysA'][0]}|{systems['SysA'][1]}",
               "--result", f"SysB|image|{systems['SysB'][0]}|{systems['SysB'][1]}"]
    return [*results, "--mix_scp", str(scps["mix"]), "--ref_scp", str(scps["spk1"]), "--label_file",
            str(root / "utt2label"), "--timings", str(root / "timings.tsv"), "--query_text", str(root / "query_text"),
            "--query_image", str(root / "query_image"),
            "--output", str(root / "out" / "RESULTS.md"), "--html_dir", str(root / "out" / "html"), *extra]


@pytest.fixture(scope="module")
def built(setup):
    root, scps, systems = setup
    assert report.main(_args(root, scps, systems)) == 0
    return root / "out"


def _mean_sem(x):
    return f"{np.mean(x):.2f} ± {np.std(x, ddof=1) / np.sqrt(len(x)):.2f}"


def test_results_table_rows(setup, built):
    _, _, systems = setup
    md = (built / "RESULTS.md").read_text()
    assert "| System | Query | N (skipped) | SDR | SDRi | SI-SDRi | SDRi median | SI-SDRi median |" in md
    assert "window=inf" in md and "mean ± SEM" in md
    for name, query in (("SysA", "text"), ("SysB", "image")):
        _, rows = read_score_dir(systems[name][0])
        col = {m: [r[m] for r in rows.values()] for m in ("sdr", "sdri", "si_sdri")}
        expected = (f"| {name} | {query} | 3 (0) | {_mean_sem(col['sdr'])} | {_mean_sem(col['sdri'])} | "
                    f"{_mean_sem(col['si_sdri'])} | {np.median(col['sdri']):.2f} | {np.median(col['si_sdri']):.2f} |")
        assert expected in md
    _, rows = read_score_dir(systems["SysA"][0])
    assert f"| Mixture | - | 3 (0) | {_mean_sem([r['sdr_mix'] for r in rows.values()])} | - | - | - | - |" in md
    assert "| 5 | train | 1:02:03 |" in md and "| 6 | inference | 12.3 s |" in md
    assert "Environment: " in md and "Python " in md and "espnet " in md
    assert "[html/index.html](html/index.html)" in md


def test_figures_are_pngs_named_on_the_page(built):
    pngs = sorted(p.name for p in (built / "html" / "img").glob("*.png"))
    page = (built / "html" / "index.html").read_text()
    assert "sdri_distribution.png" in pngs and all(f'src="img/{name}"' in page for name in pngs)
    examples = [p for p in pngs if p.startswith("ex")]
    assert len(examples) == page.count("<section>")
    for png in pngs:
        with Image.open(built / "html" / "img" / png) as img:
            assert img.format == "PNG" and img.width > 400


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.audio = [], 0

    def handle_starttag(self, tag, attrs):
        self.audio += tag == "audio"
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_html_references_existing_files_only(built):
    page = (built / "html" / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    sections = page.count("<section>")
    assert sections == 3  # k1..k3: each is some system's best, median or worst (three keys, two systems)
    assert parser.audio == sections * (2 + 2 * 2)  # mixture, target; per system its estimate and residual
    assert page.count("text query: <q>") == sections and page.count('alt="image query of') == sections
    assert "<q>violin &amp; dog &lt;1&gt;</q>" in page
    assert "median SDRi of SysA (text)" in page and "class flute" in page
    assert "<h2>SDRi per class</h2>" in page
    assert parser.links and all((built / "html" / link).is_file() for link in parser.links)
    assert all(not Path(link).is_absolute() for link in parser.links)
    assert "violin &amp; dog &lt;1&gt;" in page and "<1>" not in page
    assert "SysB (image)" in page and "SDRi" in page
    for wav in (built / "html" / "audio").glob("*.wav"):
        assert soundfile.info(str(wav)).samplerate == FS


def test_missing_score_dir_is_one_clear_error(setup, tmp_path, capsys):
    root, scps, systems = setup
    args = _args(root, scps, systems, "--output", str(tmp_path / "R.md"), "--html_dir", str(tmp_path / "h"))
    args[3] = f"SysB|image|{tmp_path / 'nope'}|{systems['SysB'][1]}"
    assert report.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("report: error:") and "nope" in err[0]
    assert not (tmp_path / "R.md").exists()


def test_malformed_result_spec_is_an_error(setup, tmp_path, capsys):
    root, scps, systems = setup
    args = _args(root, scps, systems, "--html_dir", str(tmp_path / "h"))
    args[1] = "SysA|text"
    assert report.main(args) == 2
    assert "SYSTEM|QUERY|SCORE_DIR|INF_SCP" in capsys.readouterr().err


def test_stft_magnitude():
    x = np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)
    mag = stft_magnitude(x)
    assert mag.shape == (513, 1 + FS // 256)
    assert mag[:, 10].argmax() == 128 and mag[:, 10].max() == pytest.approx(1.0, abs=1e-6)  # 1 kHz at 8 kHz


def test_residual_is_the_mixture_minus_the_estimate(setup, built):
    root, scps, systems = setup
    page = (built / "html" / "index.html").read_text()
    j = next(i for i in range(3) if f"audio/ex{i}_r0_SysA_text_residual.wav" in page)
    key = next(k for k in KEYS if f"<h3>{k}" in page.split("<section>")[j + 1])
    mix, _ = soundfile.read(root / "mix" / f"{key}.wav")
    est, _ = soundfile.read(root / "inf_SysA" / f"{key}.wav")
    res, _ = soundfile.read(built / "html" / "audio" / f"ex{j}_r0_SysA_text_residual.wav")
    np.testing.assert_allclose(res, mix - est, atol=1 / 32768)  # 16-bit PCM


def test_example_figure_axes(monkeypatch, tmp_path):
    """Log-frequency axis in Hz up to Nyquist, time in seconds, a colour bar per panel (dB; mask 0..1)."""
    shown = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: shown.setdefault("fig", fig))
    t = np.arange(FS) / FS
    tone, noise = 0.5 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.random.default_rng(0).standard_normal(FS)
    figures.example_figure(tone + noise, tone, [("Sys", tone + 0.5 * noise)], FS, "k", tmp_path / "x.png")
    fig = shown["fig"]
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    bars = [ax for ax in fig.axes if not ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == [
        "mixture", "target", "Sys: estimate", "Sys: effective mask |est| / |mix|"]
    assert sorted(ax.get_ylabel() for ax in bars) == ["dB", "dB", "dB", "mask"]
    for ax in panels:
        assert ax.get_yscale() == "log" and ax.get_ylim()[1] == FS / 2
        assert ax.get_xlim()[1] == pytest.approx((1 + FS // 256) * 256 / FS)  # seconds
    assert panels[2].get_xlabel() == "time (s)" and panels[0].get_ylabel() == "frequency (Hz)"
    mesh = panels[1].collections[0]  # target: the 1 kHz tone is its loudest band
    values = np.asarray(mesh.get_array()).reshape(512, -1)
    assert values.mean(1).argmax() + 1 == 128  # bin 128 of 1024 at 8 kHz = 1 kHz (bin 0 is not drawn)
    assert mesh.get_clim() == figures.DB_RANGE
    assert panels[3].collections[0].get_clim() == (0.0, 1.0)


def test_pick_examples_and_class_rows():
    rows = {"SysA": [3.0, 9.0, 1.0, 5.0, 7.0], "SysB": [2.0, 0.0, 4.0, 6.0, 8.0]}
    keys = ["a", "b", "c", "d", "e"]
    results = [Result(n, "text", Path("."), [], rows={k: {"sdri": v} for k, v in zip(keys, vals)})
               for n, vals in rows.items()]
    labels = {"a": "x", "b": "x", "c": "x", "d": "y", "e": "y"}
    picked = {e.key: e.why for e in pick_examples(results, [], labels, per_class=1)}
    # SysA ascending c 1, a 3, d 5, e 7, b 9; SysB b 0, a 2, c 4, d 6, e 8. Class x by SysA: c, a, b (median a);
    # class y: d, e (both half a rank from the middle: the first key, d).
    assert picked == {
        "b": ["best SDRi of SysA (text)", "worst SDRi of SysB (text)"],
        "d": ["median SDRi of SysA (text)", "class y"],
        "c": ["worst SDRi of SysA (text)", "median SDRi of SysB (text)"],
        "e": ["best SDRi of SysB (text)"],
        "a": ["class x"],
    }
    assert list(picked) == ["b", "d", "c", "e", "a"]
    table = class_rows(results, labels)
    assert table[0] == ("x", "3", f"{np.mean([3, 9, 1]):.2f} ± {np.std([3, 9, 1], ddof=1) / np.sqrt(3):.2f}",
                        f"{np.mean([2, 0, 4]):.2f} ± {np.std([2, 0, 4], ddof=1) / np.sqrt(3):.2f}")
    assert table[1][0] == "y" and table[1][2] == "6.00 ± 1.00"


def test_complement_result_reads_output_1(tmp_path):
    from espnet2.enh.clipsep.eval.report import Result, estimate_scp_value, is_complement

    tables = {tmp_path / "spk1.scp": {"k": "a.wav"}}
    result = Result("PIT", "oracle", tmp_path, list(tables), summary={"settings": {"oracle_complement": True}},
                    rows={"k": {"chosen": 1}})
    assert is_complement(result) and estimate_scp_value(result, tables, "k") == "a.wav"


def test_oracle_result_shows_the_chosen_output(tmp_path):
    from espnet2.enh.clipsep.eval.report import Result, estimate_scp_value

    tables = {tmp_path / "spk1.scp": {"k": "a.wav"}, tmp_path / "spk2.scp": {"k": "b.wav"}}
    result = Result("PIT", "oracle", tmp_path, list(tables), rows={"k": {"chosen": 1}})
    assert estimate_scp_value(result, tables, "k") == "b.wav"
    result.inf_scps = result.inf_scps[:1]
    with pytest.raises(ValueError, match="comma-separated"):
        estimate_scp_value(result, tables, "k")


def test_paired_differences_and_speed_gauge_sections(setup, tmp_path):
    root, scps, systems = setup
    gauge = tmp_path / "gauge.json"
    gauge.write_text('{"workload": "W", "ms": 61.5, "ms_min": 55.0, "ms_max": 70.0, "repeats": 15, "threads": 1}')
    out = tmp_path / "RESULTS.md"
    args = _args(root, scps, systems, "--compare", "SysA|text", "SysB|image", "--gauge", str(gauge),
                 "--step_time", "SysA|0.1234|2800", "--step_time", "SysB|0.2|100")
    args[args.index("--output") + 1] = str(out)
    assert report.main(args) == 0
    md = out.read_text()
    _, rows_a = read_score_dir(systems["SysA"][0])
    _, rows_b = read_score_dir(systems["SysB"][0])
    diff = np.mean([rows_a[k]["sdri"] - rows_b[k]["sdri"] for k in KEYS])
    assert diff > 1  # SysA leaks less of the interferer
    line = next(ln for ln in md.splitlines() if ln.startswith("| SysA (text) - SysB (image) |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "3" and cells[2].startswith(f"{diff:+.2f} [")
    assert "## Paired differences" in md and "90 % BCa" in md
    assert "Gauge: 61.5 ms (median of 15; fastest 55.0 ms) for W." in md
    assert "| SysA | 0.123 | 2800 |" in md and "| SysB | 0.200 | 100 |" in md


def test_unknown_comparison_or_step_time_is_one_clear_error(setup, tmp_path, capsys):
    root, scps, systems = setup
    assert report.main(_args(root, scps, systems, "--compare", "SysA|text", "SysC|text")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("report: error: --compare: no result 'SysC|text'") and "\n" not in err
    assert report.main(_args(root, scps, systems, "--step_time", "SysA|fast|10")) == 2
    assert "--step_time 'SysA|fast|10': expected SYSTEM|SECONDS_PER_STEP|STEPS" in capsys.readouterr().err


def test_clip_retrieval_line(setup, tmp_path):
    root, scps, systems = setup
    # c3 is a cat picture nearer to "dog" (top-1 2/3), but still the second nearest picture to "cat" (R-precision 1)
    emb = {"c1": ([1.0, 0.0], [2.0, 0.1], "cat"), "c2": ([0.0, 1.0], [0.1, 2.0], "dog"),
           "c3": ([1.0, 0.0], [0.15, 2.0], "cat")}
    lines = {"image": [], "text": [], "utt2label": []}
    for key, (text, image, label) in emb.items():
        for kind, vec in (("text", text), ("image", image)):
            np.save(tmp_path / f"{kind}_{key}.npy", np.array(vec, dtype=np.float32))
            lines[kind].append(f"{key} {tmp_path / f'{kind}_{key}.npy'}\n")
        lines["utt2label"].append(f"{key} {label}\n")
    paths = []
    for name in ("image", "text", "utt2label"):
        (tmp_path / name).write_text("".join(lines[name]))
        paths.append(str(tmp_path / name))
    out = tmp_path / "RESULTS.md"
    args = _args(root, scps, systems, "--retrieval", *paths)
    args[args.index("--output") + 1] = str(out)
    assert report.main(args) == 0
    assert ("CLIP model on the 3 held-out test clips (2 labels, chance 50.0 %): zero-shot image-to-text top-1 "
            "66.7 %, text-to-image R-precision 100.0 %") in out.read_text()


def test_run_history_below_its_heading_survives_a_rewrite(setup, tmp_path):
    root, scps, systems = setup
    out = tmp_path / "RESULTS.md"
    args = _args(root, scps, systems, "--output", str(out), "--html_dir", str(tmp_path / "h"), "--per_class", "0")
    assert report.main(args) == 0
    history = "## Run history\n\n2026-12-06, commit abc1234: 13:41 wall at gauge 59.6 ms.\n"
    out.write_text("# stale\n\n" + history)
    assert report.main(args) == 0
    text = out.read_text()
    assert text.endswith("\n" + history) and "stale" not in text and "| SysA | text |" in text
