"""python -m espnet2.tts_diff.bin.report: the rows' numbers, chance, included sections, wall times, clear errors."""

import json
from pathlib import Path

import pytest

from espnet2.tts_diff.bin import report


def _eval(path: Path, relevance: float, fd: float, n: int, mel: bool = True) -> Path:
    ev = dict(relevance=relevance, relevance_chance=1 / 12, probe_fd=fd, num_generated=n)
    if mel:
        ev.update(mel_relevance=relevance + 0.25, mel_probe_fd=fd / 2)
    path.write_text(json.dumps(ev))
    return path


@pytest.fixture
def files(tmp_path):
    iq = _eval(tmp_path / "iq.json", 0.375, 812.345, 36)
    gt = _eval(tmp_path / "gt.json", 0.6111, 1134.0, 72)
    gen = tmp_path / "generate.json"
    gen.write_text(json.dumps(dict(mode="embedding", rtf=0.4567, sampler="dpmpp", steps=25, guidance=1.5)))
    bench = tmp_path / "results.md"
    bench.write_text("## Samplers (w = 1.5)\n\n| sampler | steps |\n|---|---|\n| DDPM | 1000 |\n\nGoal: met\n")
    timings = tmp_path / "timings.tsv"
    timings.write_text("1\tdata\t100\n3\ttrain generator (concurrent): 1500 steps, 0.400 s/step\t600\n5\ttrain vocoder (concurrent)\t400\n7\tgen\t50\n")
    return tmp_path, iq, gt, gen, bench, timings


def test_rows_chance_section_and_wall_time(files):
    root, iq, gt, gen, bench, timings = files
    out = root / "out" / "RESULTS.md"
    assert report.main([
        "--result", f"IQ|image|{iq}|{gen}", "--result", f"GT|real clip|{gt}", "--section", f"Sampler benchmark|{bench}",
        "--timings", str(timings), "--note", "a note", "--output", str(out),
    ]) == 0  # fmt: skip
    text = out.read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| system") and not line.startswith("| stage")}  # fmt: skip
    # relevance in % +- the binomial SE sqrt(p (1 - p) / n): 0.375 of 36 -> 8.07 %; 0.625 of 36 -> 8.07 %
    assert rows["IQ"] == ["IQ", "image", "37.5 ± 8.1", "812.35", "62.5 ± 8.1", "406.17", "36", "0.457"]
    assert rows["GT"] == ["GT", "real clip", "61.1 ± 5.7", "1134.00", "86.1 ± 4.1", "567.00", "72", "-"]
    assert rows["chance"][:3] == ["chance", "-", "8.3"]
    assert "Sampling: dpmpp, 25 steps, guidance w = 1.5" in text and "a note" in text
    # the section: under its own heading, its headings nested one level down, after the results table
    assert "## Sampler benchmark\n\n### Samplers (w = 1.5)\n\n| sampler | steps |" in text
    assert text.index("## Sampler benchmark") > text.index("| chance")
    # concurrent stages count once (the longest): 100 + 600 + 50 s
    assert rows["total"][2] == "0:12:30"


def test_total_counts_the_side_by_side_wall_time_when_recorded():
    # the recipe's row for stages 3-6 as they ran at once (2 slots: 600 s, then 400 s + 120 s on the other)
    timings = [("1", "data", 100.0), ("3", "train generator (concurrent): 1500 steps, 0.400 s/step", 600.0),
               ("5", "train vocoder (concurrent)", 400.0), ("6", "train probe (concurrent)", 120.0),
               ("3-6", "the concurrent stages, side by side", 615.0), ("7", "gen", 50.0)]  # fmt: skip
    rows = report.timing_rows(timings)
    assert rows[-1] == ("total", "wall time (the concurrent stages as they ran side by side)", "0:12:45")
    assert rows[4] == ("3-6", "the concurrent stages, side by side", "0:10:15")
    assert report.timing_rows(timings[:4] + timings[5:])[-1][2] == "0:12:30"  # without it: the longest, 600 s


@pytest.mark.parametrize(
    "key, value, header, cell, note",
    [
        ("fad_vggish", 3.14159, "FAD (VGGish)", "3.142", "FAD (VGGish): Fréchet Audio Distance"),
        ("clap_score", 0.24681, "CLAP score", "0.247", "CLAP score: mean cosine similarity"),
    ],
)
def test_extra_metric_column_only_when_an_evaluation_has_it(files, key, value, header, cell, note):
    """FAD (probe evaluate --vggish) and the CLAP score (--clap): a column, "-" where an evaluation lacks it."""
    root, iq, gt, gen, bench, timings = files
    ev = json.loads(iq.read_text())
    iq.write_text(json.dumps(dict(ev, **{key: value})))
    out = root / f"{key}.md"
    assert report.main(["--result", f"IQ|image|{iq}", "--result", f"GT|real clip|{gt}", "--output", str(out)]) == 0
    text = out.read_text()
    assert f"| system | query | relevance (%) | probe-FD | mel relevance (%) | mel probe-FD | {header} | clips | RTF |" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| system")}  # fmt: skip
    assert rows["IQ"][6] == cell and rows["GT"][6] == "-" and len(rows["chance"]) == 9
    assert note in text
    iq.write_text(json.dumps(ev))
    assert report.main(["--result", f"IQ|image|{iq}", "--output", str(out)]) == 0
    assert header not in out.read_text()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("--section=no-bar", "expected TITLE|MARKDOWN_FILE"),
        ("--section=Title|/nonexistent/results.md", "/nonexistent/results.md: section file not found"),
        ("--result=IQ|image", "expected SYSTEM|QUERY|PROBE_EVAL_JSON"),
    ],
)
def test_bad_arguments_give_one_line_and_no_file(files, bad, message, capsys):
    root, iq, *_ = files
    out = root / "RESULTS.md"
    assert report.main(["--result", f"IQ|image|{iq}", bad, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_results_from_different_probes_are_refused(files, capsys):
    root, iq, *_ = files
    other = root / "other.json"
    other.write_text(json.dumps(dict(relevance=0.5, relevance_chance=0.25, probe_fd=1.0, num_generated=4)))
    assert report.main(["--result", f"IQ|image|{iq}", "--result", f"X|image|{other}", "--output", str(root / "R.md")]) == 2
    assert "different probes" in capsys.readouterr().err


def test_paired_relevance_differences_and_gauge(files):
    root, iq, gt, gen, bench, timings = files
    keys = [f"k{i}" for i in range(8)]
    for name, hits in (("zs", [1, 1, 1, 1, 0, 0, 0, 0]), ("pd", [1, 1, 1, 1, 1, 1, 0, 0])):
        ev = dict(relevance=sum(hits) / 8, relevance_chance=1 / 12, probe_fd=1.0, num_generated=8,
                  correct=dict(zip(keys, hits)))
        (root / f"{name}.json").write_text(json.dumps(ev))
    gauge = root / "gauge.json"
    gauge.write_text(json.dumps(dict(workload="W", ms=70.0, ms_min=60.0, ms_max=90.0, repeats=15, threads=1)))
    out = root / "RESULTS.md"
    assert report.main(["--result", f"ZS|text|{root / 'zs.json'}", "--result", f"PD|prior|{root / 'pd.json'}",
                        "--compare", "PD", "ZS", "--gauge", str(gauge), "--output", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| PD - ZS |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8" and cells[2].startswith("+25.0 [") and cells[3] == "-"
    assert "## Speed gauge" in text and "Gauge: 70.0 ms (median of 15; fastest 60.0 ms) for W." in text


def test_compare_needs_per_clip_results(files, capsys):
    root, iq, gt, gen, bench, timings = files
    out = root / "RESULTS.md"
    assert report.main(["--result", f"IQ|image|{iq}", "--result", f"GT|real|{gt}", "--compare", "IQ", "GT",
                        "--output", str(out)]) == 2
    assert "--compare 'IQ': its evaluation has no per-clip 'correct'" in capsys.readouterr().err and not out.exists()
    assert report.main(["--result", f"IQ|image|{iq}", "--compare", "IQ", "XX", "--output", str(out)]) == 2
    assert "--compare: no --result named 'XX'" in capsys.readouterr().err


def test_run_history_below_its_heading_survives_a_rewrite(files):
    root, iq, gt, gen, bench, timings = files
    out = root / "RESULTS.md"
    args = ["--result", f"IQ|image|{iq}|{gen}", "--output", str(out)]
    assert report.main(args) == 0
    first = out.read_text()
    history = "## Run history\n\n- 2026-12-06, commit abc1234: 15:00 wall at gauge 60.8 ms\n"
    out.write_text(first.replace("IQ", "stale") + "\n" + history)
    assert report.main(args) == 0
    text = out.read_text()
    assert text.endswith("\n" + history) and "stale" not in text  # the generated part is new, the history as written
    assert text.count("| IQ | image |") == 1 and text.count("## Run history") == 1


def test_table_1_columns_and_a_row_that_did_not_run(files):
    """--modality: CLIPSonic Table 1's columns; --not_run: a row without figures where it was given."""
    root, iq, gt, gen, bench, timings = files
    out = root / "RESULTS.md"
    assert report.main([
        "--result", f"IQ|image|{iq}|{gen}", "--not_run", "PD (pretrained prior)|text -> prior|not run (no pretrained prior)",
        "--result", f"GT|real clip|{gt}", "--modality", "IQ|-|image", "--modality", "PD (pretrained prior)|yes|image",
        "--output", str(out),
    ]) == 0  # fmt: skip
    text = out.read_text()
    assert ("| system | no text-audio pairs | training query | inference query | relevance (%) | probe-FD | "
            "mel relevance (%) | mel probe-FD | clips | RTF |") in text  # fmt: skip
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| system")]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[:4]]
    assert rows[0] == ["IQ", "-", "image", "image", "37.5 ± 8.1", "812.35", "62.5 ± 8.1", "406.17", "36", "0.457"]
    assert rows[1] == ["PD (pretrained prior)", "yes", "image", "text -> prior", "not run (no pretrained prior)",
                       "-", "-", "-", "-", "-"]  # fmt: skip
    assert rows[2][:4] == ["GT", "-", "-", "real clip"]  # no --modality: "-"
    assert rows[3][:5] == ["chance", "-", "-", "-", "8.3"]
    assert "the columns of CLIPSonic's Table 1" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--not_run", "X|q|why"], "at least one --result is needed"),
        (["--not_run", "X|q"], "expected SYSTEM|QUERY|REASON"),
        (["--modality", "Nope|yes|image"], "--modality: no row named 'Nope'"),
        (["--modality", "IQ|yes"], "expected SYSTEM|NO_PAIRS|TRAINING_QUERY"),
    ],
)
def test_bad_rows_give_one_line(files, args, message, capsys):
    root, iq, *_ = files
    extra = [] if args[0] == "--not_run" and args[1] == "X|q|why" else ["--result", f"IQ|image|{iq}"]
    assert report.main(extra + args + ["--output", str(root / "R.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not (root / "R.md").exists()
