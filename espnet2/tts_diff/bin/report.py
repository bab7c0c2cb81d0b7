"""RESULTS.md of the synthesis recipe: relevance and probe-FD per system, the ceiling, chance, stage times.

Each ``--result`` names a row and the JSON written by ``espnet2.tts_diff.bin.probe evaluate`` (optionally also
the ``generate.json`` of ``espnet2.tts_diff.bin.generate_set`` or ``retrieve``, for the real-time factor); a
``--not_run`` row stands where a system could not run (e.g. ``not run (no pretrained prior)``), in the order the
rows are given. ``--modality`` adds, per system, the columns of CLIPSonic's Table 1: whether it is learnt without
text-audio pairs, and the query it was trained with (the ``QUERY`` of its row is then the inference query). Relevance is the
probe's accuracy of the query class on the generated clips; probe-FD is the Fréchet distance between Gaussians
fitted to the probe's embeddings of the generated and the real test clips (a Fréchet distance in the probe's
space, not FAD). A chance row (1 / number of probe classes) closes the table. ``--section`` adds a Markdown file
under a heading of its own, its headings one level down (the recipe: the sampler benchmark's steps table and
guidance sweep; its plot paths are relative to the recipe directory, where RESULTS.md is). ``--timings`` is the
recipe's ``stage<TAB>name<TAB>seconds`` file; stages whose name contains ``(concurrent)`` ran side by side: the
total counts the wall time of them all together (the recipe's row named ``side by side``), or without one,
the longest of them.

Example:
    python -m espnet2.tts_diff.bin.report --result "IQ|image|exp/gen_test_iq/probe_eval.json|exp/gen_test_iq/generate.json" \\
        --result "ZS|text|exp/gen_test_zs/probe_eval.json" --section "Samplers|exp/benchmark_samplers/results.md" \\
        --timings exp/timings.tsv --output RESULTS.md
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

CONCURRENT = "(concurrent)"
SIDE_BY_SIDE = "side by side"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.report",
        description="RESULTS.md for the CLIPSonic recipe (relevance, probe-FD, stage wall times).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--result", dest="rows", action="append", default=[], type=lambda spec: ("result", spec),
        help="SYSTEM|QUERY|PROBE_EVAL_JSON[|GENERATE_JSON], repeatable, one table row each (at least one)",
    )  # fmt: skip
    parser.add_argument(
        "--not_run", dest="rows", action="append", type=lambda spec: ("not_run", spec),
        help="SYSTEM|QUERY|REASON, repeatable: a row without figures, in its place among the --result rows",
    )  # fmt: skip
    parser.add_argument(
        "--modality", action="append", default=[],
        help="SYSTEM|NO_PAIRS|TRAINING_QUERY, repeatable: the columns 'no text-audio pairs' and 'training query' "
             "(then QUERY is the inference query); '-' where a system has none",
    )  # fmt: skip
    parser.add_argument("--no_fd", action="append", default=[], help="SYSTEM whose probe-FD is not shown (self)")
    parser.add_argument("--timings", type=Path, default=None, help="TSV 'stage<TAB>name<TAB>seconds'")
    parser.add_argument("--title", default="CLIPSonic synthesis results", help="report title")
    parser.add_argument("--note", action="append", default=[], help="extra line under the table, repeatable")
    parser.add_argument(
        "--section", action="append", default=[],
        help="TITLE|MARKDOWN_FILE, repeatable: the file's text under '## TITLE', after the table",
    )  # fmt: skip
    parser.add_argument(
        "--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
        help="two SYSTEM names of --result rows: the paired per-clip relevance difference A - B in percentage "
             "points with a 90 %% bootstrap interval (needs the evaluations' per-clip 'correct'; repeatable)",
    )  # fmt: skip
    parser.add_argument("--gauge", type=Path, default=None, help="speed-gauge JSON (espnet2.enh.clipsep.bin.gauge)")
    parser.add_argument("--output", type=Path, default=Path("RESULTS.md"), help="Markdown file to write")
    page = parser.add_argument_group("listening page (the rows with a GENERATE_JSON: their clips are its wav.scp)")
    page.add_argument("--html_dir", type=Path, default=None, help="write the page here (index.html, audio/, img/)")
    page.add_argument("--utt2label", type=Path, default=None, help="'<key> <query class>': each row's text query")
    page.add_argument("--query_image", type=Path, default=None,
                      help="'<key> <picture or directory of frames>': each row's image query")
    page.add_argument("--per_class", type=int, default=1, help="rows per class")
    return parser


def load_json(path: Path, what: str) -> Dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None


class Row(NamedTuple):
    """One system of the table: its evaluation (and generation report), or the reason it did not run."""

    system: str
    query: str
    ev: Optional[Dict]
    gen: Optional[Dict]
    gen_json: Optional[Path] = None
    reason: Optional[str] = None


def parse_result(spec: str) -> Row:
    parts = spec.split("|")
    if len(parts) not in (3, 4) or not all(parts):
        raise ValueError(f"--result {spec!r}: expected SYSTEM|QUERY|PROBE_EVAL_JSON[|GENERATE_JSON]")
    ev = load_json(Path(parts[2]), "probe evaluation")
    for key in ("relevance", "relevance_chance", "probe_fd", "num_generated"):
        if key not in ev:
            raise ValueError(f"{parts[2]}: no {key!r} (not written by espnet2.tts_diff.bin.probe evaluate?)")
    gen = load_json(Path(parts[3]), "generation report") if len(parts) == 4 else None
    return Row(parts[0], parts[1], ev, gen, Path(parts[3]) if len(parts) == 4 else None)


def parse_not_run(spec: str) -> Row:
    parts = spec.split("|")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--not_run {spec!r}: expected SYSTEM|QUERY|REASON")
    return Row(parts[0], parts[1], None, None, reason=parts[2])


def parse_rows(specs: Sequence[Tuple[str, str]]) -> List[Row]:
    """The ``--result`` and ``--not_run`` rows in the order given; at least one ``--result``."""
    if not any(kind == "result" for kind, _ in specs):
        raise ValueError("at least one --result is needed")
    return [parse_result(spec) if kind == "result" else parse_not_run(spec) for kind, spec in specs]


def parse_modality(specs: Sequence[str], rows: Sequence[Row]) -> Dict[str, Tuple[str, str]]:
    """``{system: (no text-audio pairs, training query)}`` from ``--modality SYSTEM|NO_PAIRS|TRAINING_QUERY``."""
    names = {r.system for r in rows}
    out = {}
    for spec in specs:
        parts = spec.split("|")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"--modality {spec!r}: expected SYSTEM|NO_PAIRS|TRAINING_QUERY")
        if parts[0] not in names:
            raise ValueError(f"--modality: no row named {parts[0]!r} (rows: {', '.join(sorted(names))})")
        out[parts[0]] = (parts[1], parts[2])
    return out


def parse_section(spec: str) -> Tuple[str, Path]:
    title, sep, path = spec.partition("|")
    if not sep or not title or not path:
        raise ValueError(f"--section {spec!r}: expected TITLE|MARKDOWN_FILE")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: section file not found")
    return title, Path(path)


def percent_se(p: float, n: int) -> str:
    """An accuracy over ``n`` clips in percent with its binomial standard error, ``"33.3 ± 7.9"``."""
    se = math.sqrt(p * (1 - p) / n) if n > 0 else float("nan")
    return f"{100 * p:.1f} ± {100 * se:.1f}"


def result_rows(results: Sequence[Row], no_fd: Sequence[str], modality: Optional[Dict] = None) -> List[Tuple[str, ...]]:
    """One row per result; with ``mel_columns`` two more: the figures on the mel before the vocoder; with
    ``modality``, the two columns of CLIPSonic's Table 1 after the system's name."""
    rows = []
    scored = [r for r in results if r.ev is not None]
    mel_columns, fad_column, clap_column = has_mel(scored), has_fad(scored), has_clap(scored)
    extra = 2 * mel_columns + fad_column + clap_column
    for system, query, ev, gen, _, reason in results:
        first = (system,) + (modality.get(system, ("-", "-")) if modality else ()) + (query,)
        if ev is None:
            rows.append(first + (reason, "-") + ("-",) * extra + ("-", "-"))
            continue
        fd = "-" if system in no_fd else f"{ev['probe_fd']:.2f}"
        rtf = f"{gen['rtf']:.3f}" if gen and "rtf" in gen else "-"
        n = int(ev["num_generated"])
        row = first + (percent_se(ev["relevance"], n), fd)
        if mel_columns:
            mel_fd = "-" if system in no_fd or "mel_probe_fd" not in ev else f"{ev['mel_probe_fd']:.2f}"
            row += (percent_se(ev["mel_relevance"], n) if "mel_relevance" in ev else "-", mel_fd)
        if fad_column:
            row += ("-" if system in no_fd or "fad_vggish" not in ev else f"{ev['fad_vggish']:.3f}",)
        if clap_column:
            row += ("-" if "clap_score" not in ev else f"{ev['clap_score']:.3f}",)
        rows.append(row + (str(ev["num_generated"]), rtf))
    chance = {round(r.ev["relevance_chance"], 6) for r in scored}
    if len(chance) != 1:
        raise ValueError(f"the results were evaluated with different probes (chance levels {sorted(chance)})")
    first = ("chance",) + (("-", "-") if modality else ()) + ("-",)
    rows.append(first + (f"{100 * chance.pop():.1f}", "-") + ("-",) * extra + ("-", "-"))
    return rows


def has_mel(results: Sequence[Row]) -> bool:
    """Whether any evaluation also scored the mel before the vocoder (``probe evaluate --gen_mel_scp``)."""
    return any(r.ev is not None and "mel_relevance" in r.ev for r in results)


def has_fad(results: Sequence[Row]) -> bool:
    """Whether any evaluation also has the VGGish FAD (``probe evaluate --vggish``)."""
    return any(r.ev is not None and "fad_vggish" in r.ev for r in results)


def has_clap(results: Sequence[Row]) -> bool:
    """Whether any evaluation also has the CLAP score (``probe evaluate --clap``)."""
    return any(r.ev is not None and "clap_score" in r.ev for r in results)


def timing_rows(timings: Sequence[Tuple[str, str, float]]) -> List[Tuple[str, ...]]:
    from espnet2.enh.clipsep.eval.report import format_seconds

    rows = [(stage, name, format_seconds(sec)) for stage, name, sec in timings]
    serial = sum(sec for _, name, sec in timings if CONCURRENT not in name)  # with the side-by-side rows
    if any(SIDE_BY_SIDE in name for _, name, _ in timings):
        rows.append(("total", "wall time (the concurrent stages as they ran side by side)", format_seconds(serial)))
    else:
        parallel = max((sec for _, name, sec in timings if CONCURRENT in name), default=0.0)
        rows.append(("total", "wall time (concurrent stages count once, the longest)", format_seconds(serial + parallel)))
    return rows


def comparison_rows(results: Sequence[Row], pairs) -> List[Tuple[str, ...]]:
    """Rows ``(A - B, clips, relevance difference [90 % CI] in pp, mel relevance difference or -)``."""
    from espnet2.enh.clipsep.eval.intervals import paired_difference

    by_name = {r.system: r.ev for r in results if r.ev is not None}
    rows = []
    for a, b in pairs:
        for name in (a, b):
            if name not in by_name:
                raise ValueError(f"--compare: no --result named {name!r} (results: {', '.join(by_name)})")
        for name in (a, b):
            if "correct" not in by_name[name]:
                raise ValueError(f"--compare {name!r}: its evaluation has no per-clip 'correct' (re-run the probe)")
        def diff(key):
            pa = {k: 100.0 * v for k, v in by_name[a][key].items()}
            pb = {k: 100.0 * v for k, v in by_name[b][key].items()}
            return paired_difference(pa, pb)

        d = diff("correct")
        mel = diff("mel_correct").format(1) if all("mel_correct" in by_name[n] for n in (a, b)) else "-"
        rows.append((f"{a} - {b}", str(d.n), d.format(1), mel))
    return rows


def write_page(args, results) -> Optional[Path]:
    """The listening page of the rows whose clips are known (a ``generate.json`` beside their ``wav.scp``)."""
    from espnet2.enh.clipsep.files.kaldi_table import read_table
    from espnet2.tts_diff.listening import PageSystem, build_listening_page

    if args.html_dir is None:
        return None
    if args.per_class < 1:
        raise ValueError("--per_class must be >= 1")
    systems = []
    for r in results:
        if r.gen_json is not None:
            scp = r.gen_json.parent / "wav.scp"
            systems.append(PageSystem(r.system, r.query, scp, {k: int(v) for k, v in r.ev.get("correct", {}).items()}))
    if not systems:
        raise ValueError("--html_dir: no --result with a GENERATE_JSON (the clips to play)")
    labels = read_table(args.utt2label) if args.utt2label is not None else None
    images = read_table(args.query_image) if args.query_image is not None else None
    return build_listening_page(systems, args.html_dir, f"{args.title}: listening page", labels, images,
                                args.per_class)  # fmt: skip


def build(args, results=None) -> str:
    from espnet2.enh.clipsep.eval.gauge import read_gauge
    from espnet2.enh.clipsep.eval.report import environment_line, gauge_lines, markdown_table, read_timings

    results = results if results is not None else parse_rows(args.rows)
    modality = parse_modality(args.modality, results)
    lines = [f"# {args.title}", "", environment_line(), ""]
    header = ("system",) + (("no text-audio pairs", "training query", "inference query") if modality else ("query",))
    header += ("relevance (%)", "probe-FD")
    if has_mel(results):
        header += ("mel relevance (%)", "mel probe-FD")
    if has_fad(results):
        header += ("FAD (VGGish)",)
    if has_clap(results):
        header += ("CLAP score",)
    lines.append(markdown_table(header + ("clips", "RTF"), result_rows(results, args.no_fd, modality)))
    lines += [
        "relevance: accuracy of the query class by the offline probe classifier on each clip (labels are used "
        "only here), ± its binomial standard error sqrt(p (1 - p) / clips). probe-FD: Fréchet distance between "
        "Gaussians of the probe's embeddings of these clips and of the real test clips (lower is closer; not "
        "FAD). RTF: generation wall time / audio duration.",
        "",
    ]
    if modality:
        lines += [
            "no text-audio pairs / training query / inference query: the columns of CLIPSonic's Table 1 (seed 002): "
            "whether the system learns text-queried synthesis without any text paired with audio (labels included), "
            "the query it was trained with, and the query it answers here.",
            "",
        ]
    if has_mel(results):
        lines += [
            "mel relevance / mel probe-FD: the same probe on the log-mel each clip was vocoded from, before the "
            "vocoder: the generator alone (for GT resynthesis, the real clip's own mel).",
            "",
        ]
    if has_fad(results):
        lines += [
            "FAD (VGGish): Fréchet Audio Distance between the VGGish embeddings of the 0.96-s examples of these "
            "clips and of the real test clips (lower is closer).",
            "",
        ]
    if has_clap(results):
        lines += [
            "CLAP score: mean cosine similarity between the LAION-CLAP audio embedding of each clip and the CLAP "
            "text embedding of its query label (reference-free; higher is closer to the text).",
            "",
        ]
    if args.compare:
        lines += [
            "Paired differences (the same test clips and seeds in both modes): mean per-clip difference of relevance "
            "in percentage points, 90 % BCa bootstrap interval (10,000 resamples, seed 0); an interval that excludes "
            "0 is a difference these clips resolve.",
            "",
            markdown_table(("comparison", "clips", "relevance (pp) [90 % CI]", "mel relevance (pp) [90 % CI]"),
                           comparison_rows(results, args.compare)),
        ]
    sampling = sorted({
        f"{g['sampler']}, {g['steps']} steps, guidance w = {g['guidance']}" for g in (r.gen for r in results)
        if g and g.get("mode") != "resynthesis" and "sampler" in g
    })  # fmt: skip
    if sampling:
        lines += [f"Sampling: {'; '.join(sampling)}; key i of the test set is sampled with seed i in every mode.", ""]
    lines += [note + "\n" for note in args.note]
    for spec in args.section:
        title, path = parse_section(spec)
        text = path.read_text(encoding="utf-8").strip()
        if text.startswith("# "):  # the file's own title gives way to TITLE
            text = text.split("\n", 1)[1].strip() if "\n" in text else ""
        body = ["#" + line if line.startswith("#") else line for line in text.splitlines()]  # nested headings
        lines += [f"## {title}", ""] + body + [""]
    if args.timings is not None:
        lines += ["## Stage wall times", "", markdown_table(("stage", "what", "wall time"), timing_rows(read_timings(args.timings)))]
    if args.gauge is not None:
        reading = read_gauge(args.gauge)
        if reading is None:
            raise FileNotFoundError(f"{args.gauge}: speed-gauge reading not found")
        lines += ["## Speed gauge", ""] + gauge_lines(reading, []) + [""]
    return "\n".join(lines)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        from espnet2.enh.clipsep.eval.report import kept_history

        results = parse_rows(args.rows)
        text = build(args, results)
        page = write_page(args, results)
        if page is not None:
            link = Path(os.path.relpath(page.resolve(), args.output.resolve().parent)).as_posix()
            text += f"\nListening page (each query's text and image, a player per system): [{link}]({link})\n"
        history = kept_history(args.output)  # hand-written notes from "## Run history" on are kept
        text += ("\n" + history) if history else ""
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, args.output)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
