"""python -m espnet2.enh.clipsep.bin.report: table numbers, PNGs, one self-consistent HTML page, clear errors."""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from espnet2.enh.clipsep.bin import report, score
from espnet2.enh.clipsep.eval.report import PANEL_H, LABEL_H, colormap, png_size, stft_magnitude
from espnet2.enh.clipsep.eval.scoring import read_score_dir

FS = 8000
KEYS = ("k1", "k2", "k3")


def _write(root: Path, name: str, signals):
    (root / name).mkdir(parents=True, exist_ok=True)
    lines = []
    for key, x in signals.items():
        soundfile.write(root / name / f"{key}.wav", x, FS, subtype="FLOAT")
        lines.append(f"{key} {root / name / key}.wav\n")
    (root / f"{name}.scp").write_text("".join(lines))
    return root / f"{name}.scp"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic test set, two systems scored with score.py, a label file and a timings TSV."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    t = np.arange(FS) / FS
    s1 = {k: 0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i, k in enumerate(KEYS)}  # low-frequency target
    s2 = {k: 0.2 * rng.standard_normal(FS) for k in KEYS}
    mix = {k: s1[k] / 2 + s2[k] / 2 for k in KEYS}
    scps = {n: _write(root, n, d) for n, d in (("mix", mix), ("spk1", s1), ("spk2", s2))}
    systems = {}
    for name, (a, b) in {"SysA": (0.9, 0.1), "SysB": (0.6, 0.4)}.items():
        inf = _write(root, f"inf_{name}", {k: a * s1[k] + b * s2[k] for k in KEYS})
        assert score.main(["--mix_scp", str(scps["mix"]), "--ref_scp", str(scps["spk1"]), "--ref_scp",
                           str(scps["spk2"]), "--inf_scp", str(inf), "--output_dir", str(root / f"score_{name}")]) == 0
        systems[name] = (root / f"score_{name}", inf)
    (root / "utt2label").write_text("k1 violin & dog <1>\nk2 flute\nk3 cat\n")
    (root / "timings.tsv").write_text("stage\tname\tseconds\n5\ttrain\t3723\n6\tinference\t12.34\n")
    return root, scps, systems


def _args(root, scps, systems, *extra):
    results = ["--result", f"SysA|text|{systems['SysA'][0]}|{systems['SysA'][1]}",
               "--result", f"SysB|image|{systems['SysB'][0]}|{systems['SysB'][1]}"]
    return [*results, "--mix_scp", str(scps["mix"]), "--ref_scp", str(scps["spk1"]), "--label_file",
            str(root / "utt2label"), "--timings", str(root / "timings.tsv"), "--num_examples", "2",
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


def test_pngs_have_expected_size_and_orientation(built):
    pngs = sorted((built / "html" / "img").glob("*.png"))
    assert len(pngs) == 2 * 2  # 2 examples x 2 systems
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == png_size() and img.mode == "RGB"
    with Image.open(pngs[0]) as img:
        target = np.asarray(img, dtype=np.float64)[2 * LABEL_H + PANEL_H + LABEL_H:][:PANEL_H].sum(-1)
    assert target[-PANEL_H // 4:].mean() > target[: PANEL_H // 4].mean()  # low frequencies at the bottom


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
    assert parser.audio == 2 * (2 + 2)  # per example: mixture, target, two estimates
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


def test_stft_and_colormap():
    x = np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)
    mag = stft_magnitude(x)
    assert mag.shape == (513, 1 + FS // 256)
    assert mag[:, 10].argmax() == 128 and mag[:, 10].max() == pytest.approx(1.0, abs=1e-6)  # 1 kHz at 8 kHz
    rgb = colormap(np.array([[0.0, 0.5, 1.0]]))
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].sum() < rgb[0, 1].sum() < rgb[0, 2].sum()  # brighter with value


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
