"""Results report: a Markdown results table and one HTML listening page with matplotlib figures.

Inputs are score directories written by :mod:`espnet2.enh.clipsep.bin.score` and the scps the scores came from.
The page shows, per example, the query (its text, or a thumbnail of the query image), players for the mixture,
the target, each system's estimate and its residual (mixture - estimate), and one figure of spectrograms
(:func:`espnet2.enh.clipsep.eval.figures.example_figure`). Examples are chosen per system at its best, median
and worst SDRi, plus some per class; a per-class SDRi table and a distribution plot summarise the whole set.
"""

import html
import importlib.metadata
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet2.enh.clipsep.files.kaldi_table import read_table
from espnet2.enh.clipsep.eval.gauge import read_gauge
from espnet2.enh.clipsep.eval.figures import distribution_figure, example_figure, image_thumbnail
from espnet2.enh.clipsep.eval.intervals import paired_difference
from espnet2.enh.clipsep.eval.page import audio_tag, document, figure_tag, html_table, image_tag, slug
from espnet2.enh.clipsep.eval.retrieval import clip_retrieval
from espnet2.enh.clipsep.eval.scoring import SUMMARY_METRICS, load_audio, read_score_dir
from espnet2.enh.clipsep.files.writing import write_text_atomic, write_wav_atomic

__all__ = [
    "HISTORY_HEADING",
    "TABLE_HEADER",
    "Example",
    "Result",
    "build_report",
    "class_rows",
    "comparison_rows",
    "gauge_lines",
    "is_complement",
    "kept_history",
    "retrieval_line",
    "environment_line",
    "estimate_scp_value",
    "format_seconds",
    "format_stat",
    "load_result",
    "markdown_table",
    "parse_result",
    "pick_examples",
    "query_image_file",
    "read_timings",
    "results_rows",
    "timings_rows",
]

TABLE_HEADER = (
    "System", "Query", "N (skipped)", "SDR", "SDRi", "SI-SDRi", "SDRi median", "SI-SDRi median"
)  # fmt: skip


HISTORY_HEADING = "## Run history"  # from this heading on, a results file is kept when the report rewrites it


def kept_history(path: Path) -> str:
    """The hand-written tail of an existing results file: from its ``## Run history`` line to the end ("" if none).

    The report regenerates everything above that heading; dated notes of earlier runs below it survive.
    """
    path = Path(path)
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(HISTORY_HEADING):
            return "".join(lines[i:])
    return ""


@dataclass
class Result:
    """One ``--result SYSTEM|QUERY|SCORE_DIR|INF_SCP[,INF_SCP2...]`` with its loaded scores."""

    system: str
    query: str
    score_dir: Path
    inf_scps: List[Path]
    summary: Dict[str, object] = field(default_factory=dict)
    rows: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.system} ({self.query})"


def parse_result(spec: str) -> Result:
    """Parses ``SYSTEM|QUERY|SCORE_DIR|INF_SCP`` (INF_SCP: comma-separated when scored with oracle selection)."""
    parts = spec.split("|")
    if len(parts) != 4 or not all(p.strip() for p in parts):
        raise ValueError(f"--result {spec!r}: expected SYSTEM|QUERY|SCORE_DIR|INF_SCP")
    system, query, score_dir, inf = (p.strip() for p in parts)
    return Result(system, query, Path(score_dir), [Path(p) for p in inf.split(",")])


def load_result(result: Result) -> Result:
    """Fills ``summary`` and ``rows`` from the score directory (clear error if it is missing)."""
    result.summary, result.rows = read_score_dir(result.score_dir)
    missing = [k for k in ("n", "n_skipped", *SUMMARY_METRICS) if k not in result.summary]
    if missing:
        raise ValueError(f"{result.score_dir / 'summary.json'}: missing {', '.join(missing)}")
    return result


# --------------------------------------------------------------------------------------------- tables


def format_stat(stat: Optional[Dict[str, Optional[float]]], sem: bool = True) -> str:
    """``"mean ± sem"`` (2 decimals; sem omitted when undefined) or ``"median"`` with ``sem=False``."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if not sem:
        return f"{stat['median']:.2f}"
    return f"{stat['mean']:.2f}" if stat.get("sem") is None else f"{stat['mean']:.2f} ± {stat['sem']:.2f}"


def results_rows(results: Sequence[Result]) -> List[Tuple[str, ...]]:
    """Table body: one row per result (columns ``TABLE_HEADER``), then the "Mixture" row (SDR_mix only)."""
    rows = []
    for r in results:
        s = r.summary
        rows.append((
            r.system, r.query, f"{s['n']} ({s['n_skipped']})", format_stat(s["sdr"]), format_stat(s["sdri"]),
            format_stat(s["si_sdri"]), format_stat(s["sdri"], sem=False), format_stat(s["si_sdri"], sem=False),
        ))  # fmt: skip
    first = results[0].summary
    rows.append(("Mixture", "-", f"{first['n']} ({first['n_skipped']})", format_stat(first["sdr_mix"]),
                 "-", "-", "-", "-"))  # fmt: skip
    return rows


def read_timings(path: Path) -> List[Tuple[str, str, float]]:
    """``(stage, name, seconds)`` rows of a ``stage<TAB>name<TAB>seconds`` TSV (an optional header is skipped)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: timings file not found")
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 3:
            raise ValueError(f"{path}:{lineno}: expected 'stage<TAB>name<TAB>seconds'")
        try:
            rows.append((cells[0], cells[1], float(cells[2])))
        except ValueError:
            if lineno == 1:
                continue  # header
            raise ValueError(f"{path}:{lineno}: seconds {cells[2]!r} is not a number") from None
    return rows


def format_seconds(seconds: float) -> str:
    """``"12.3 s"`` below a minute, else ``"h:mm:ss"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def timings_rows(timings: Sequence[Tuple[str, str, float]]) -> List[Tuple[str, ...]]:
    rows = [(stage, name, format_seconds(sec)) for stage, name, sec in timings]
    rows.append(("total", "", format_seconds(sum(t[2] for t in timings))))
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_line() -> str:
    """Date (UTC), Python / torch / espnet versions, CPU count and the git commit of the working directory."""
    parts = [
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), f"Python {platform.python_version()}",
        f"torch {_version('torch')}", f"espnet {_version('espnet')}", f"{os.cpu_count()} CPUs",
    ]  # fmt: skip
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        if commit:
            parts.append(f"git {commit}")
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Example:
    """A key shown on the page and why it was chosen (e.g. ``"median SDRi of CLIPSep-NIT (text)"``)."""

    key: str
    why: List[str] = field(default_factory=list)


def _sdri_order(result: Result, keys: Sequence[str]) -> List[str]:
    """``keys`` with a finite SDRi in ``result``, from the lowest SDRi to the highest (ties by key)."""
    finite = [k for k in keys if math.isfinite(result.rows[k]["sdri"])]
    return sorted(finite, key=lambda k: (result.rows[k]["sdri"], k))


def pick_examples(
    results: Sequence[Result], tables: Sequence[Dict[str, str]], labels: Dict[str, str], per_class: int = 1
) -> List[Example]:
    """The examples of the page, each key once with every reason it was chosen.

    Among the keys scored in every result and present in every table: for each result the keys of its best,
    median and worst SDRi; then, per class of ``labels`` (sorted), the ``per_class`` keys nearest the class's
    median SDRi of the first result.
    """
    keys = sorted(set.intersection(*(set(r.rows) for r in results), *(set(t) for t in tables)))
    picked: Dict[str, Example] = {}

    def add(key: str, why: str) -> None:
        picked.setdefault(key, Example(key)).why.append(why)

    for r in results:
        order = _sdri_order(r, keys)
        if order:
            add(order[-1], f"best SDRi of {r.name}")
            add(order[(len(order) - 1) // 2], f"median SDRi of {r.name}")
            add(order[0], f"worst SDRi of {r.name}")
    if per_class > 0 and labels and results:
        for label in sorted({labels[k] for k in keys if k in labels}):
            order = _sdri_order(results[0], [k for k in keys if labels.get(k) == label])
            mid = (len(order) - 1) / 2
            for key in sorted(order, key=lambda k: (abs(order.index(k) - mid), k))[:per_class]:
                add(key, f"class {label}")
    return list(picked.values())


def class_rows(results: Sequence[Result], labels: Dict[str, str]) -> List[Tuple[str, ...]]:
    """Per class of ``labels``: the number of items and each result's SDRi mean ± SEM over that class."""
    rows = []
    for label in sorted(set(labels.values())):
        cells, counts = [], set()
        for r in results:
            values = [r.rows[k]["sdri"] for k in r.rows if labels.get(k) == label and math.isfinite(r.rows[k]["sdri"])]
            counts.add(len(values))
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.2f}")
            else:
                cells.append(f"{np.mean(values):.2f} ± {np.std(values, ddof=1) / math.sqrt(len(values)):.2f}")
        if max(counts, default=0) > 0:
            rows.append((label, "/".join(str(c) for c in sorted(counts)), *cells))
    return rows


def query_image_file(value: str) -> Path:
    """The picture of an image query: the file itself, or the middle frame of a directory of frames."""
    path = Path(value)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not frames:
            raise ValueError(f"{path}: no .jpg/.png frames for the query thumbnail")
        return frames[(len(frames) - 1) // 2]
    return path


def is_complement(result: Result) -> bool:
    """Whether ``result`` was scored with ``--oracle_complement`` (chosen 1 = the mixture minus output 1)."""
    return bool((result.summary.get("settings") or {}).get("oracle_complement"))


def estimate_scp_value(result: Result, tables: Dict[Path, Dict[str, str]], key: str) -> str:
    """The scp value of the output scored for ``key`` (per-item ``chosen`` index into ``result.inf_scps``; with
    ``--oracle_complement`` always output 1, whose complement :func:`is_complement` tells apart)."""
    if is_complement(result):
        return tables[result.inf_scps[0]][key]
    chosen = int(result.rows[key]["chosen"])
    if chosen >= len(result.inf_scps):
        raise ValueError(
            f"result {result.name}: {key} was scored on output {chosen} but only {len(result.inf_scps)} INF_SCP "
            "given (list every output, comma-separated)"
        )
    return tables[result.inf_scps[chosen]][key]


COMPARISON_HEADER = ("Comparison", "Paired items", "SDRi difference [90 % CI]", "SI-SDRi difference [90 % CI]")


def _find_result(results: Sequence[Result], spec: str) -> Result:
    system, _, query = spec.rpartition("|")
    for r in results:
        if r.system == system and r.query == query:
            return r
    names = ", ".join(f"{r.system}|{r.query}" for r in results)
    raise ValueError(f"--compare: no result {spec!r} (results: {names})")


def comparison_rows(results: Sequence[Result], comparisons: Sequence[Tuple[str, str]]) -> List[Tuple[str, ...]]:
    """One row per ``(A, B)`` pair of ``SYSTEM|QUERY`` names: the paired per-item difference A - B of SDRi and of
    SI-SDRi over the items both scored, with 90 % bootstrap intervals (:func:`paired_difference`)."""
    rows = []
    for a_spec, b_spec in comparisons:
        a, b = _find_result(results, a_spec), _find_result(results, b_spec)
        cells = []
        for metric in ("sdri", "si_sdri"):
            d = paired_difference({k: v[metric] for k, v in a.rows.items()}, {k: v[metric] for k, v in b.rows.items()})
            cells.append(d.format())
        rows.append((f"{a.name} - {b.name}", str(d.n), *cells))
    return rows


def gauge_lines(gauge: Optional[Dict[str, object]], step_times: Sequence[Tuple[str, float, int]]) -> List[str]:
    """Markdown lines of the speed gauge: the fixed workload's reading and each system's seconds per step."""
    lines = []
    if gauge is not None:
        lines.append(
            f"Gauge: {gauge['ms']} ms (median of {gauge['repeats']}; fastest {gauge['ms_min']} ms) for "
            f"{gauge['workload']}. Times on another machine compare after scaling by the ratio of the gauges."
        )
    if step_times:
        lines.append("")
        lines.append(markdown_table(("System", "s/step", "Steps"), [(n, f"{t:.3f}", str(k)) for n, t, k in step_times]))
    return lines


def retrieval_line(image_scp: Path, text_scp: Path, utt2label: Path) -> str:
    """One sentence on the CLIP model's alignment on held-out clips (:func:`clip_retrieval`)."""
    from espnet2.fileio.npy_scp import NpyScpReader

    labels = read_table(utt2label)
    image, text = NpyScpReader(str(image_scp)), NpyScpReader(str(text_scp))
    r = clip_retrieval({k: image[k] for k in image.keys()}, {k: text[k] for k in text.keys()}, labels)
    return (
        f"CLIP model on the {r['clips']} held-out test clips ({r['labels']} labels, chance "
        f"{100 * r['chance']:.1f} %): zero-shot image-to-text top-1 {100 * r['image_to_text_top1']:.1f} %, "
        f"text-to-image R-precision {100 * r['text_to_image_r_precision']:.1f} % (cosine similarity; "
        "the query space the separators are trained in on images and tested in on text)."
    )


def build_report(
    results: Sequence[Result],
    mix_scp: Path,
    ref_scp: Path,
    output: Path,
    html_dir: Path,
    title: str,
    per_class: int = 1,
    label_file: Optional[Path] = None,
    timings: Optional[Path] = None,
    progress: bool = True,
    comparisons: Sequence[Tuple[str, str]] = (),
    gauge: Optional[Path] = None,
    step_times: Sequence[Tuple[str, float, int]] = (),
    retrieval: Optional[Tuple[Path, Path, Path]] = None,
    query_text: Optional[Path] = None,
    query_image: Optional[Path] = None,
) -> None:
    """Writes ``output`` (Markdown), ``html_dir/index.html``, ``html_dir/audio/*.wav`` and ``html_dir/img/*``.

    ``results`` must already be loaded (:func:`load_result`). ``label_file`` (``<key> <class>``) gives the
    per-class table and examples; ``query_text`` (``<key> <text>``) and ``query_image`` (``<key> <picture or
    directory of frames>``) show each example's query. ``comparisons`` are ``(A, B)`` pairs of ``SYSTEM|QUERY``
    names reported as paired differences A - B; ``gauge`` is a speed-gauge JSON
    (:mod:`espnet2.enh.clipsep.eval.gauge`) and ``step_times`` ``(system, seconds per step, steps)`` rows;
    ``retrieval`` ``(image scp, text scp, utt2label)`` of the test clips adds the CLIP alignment line.

    Raises:
        FileNotFoundError, ValueError: one clear line on missing or inconsistent inputs.
    """
    from tqdm import tqdm

    if not results:
        raise ValueError("no --result given")
    mix_table, ref_table = read_table(mix_scp), read_table(ref_scp)
    inf_tables = {p: read_table(p) for r in results for p in r.inf_scps}
    labels = read_table(label_file) if label_file is not None else {}
    texts = read_table(query_text) if query_text is not None else {}
    images = read_table(query_image) if query_image is not None else {}
    timing_rows = timings_rows(read_timings(timings)) if timings is not None else []
    examples = pick_examples(results, [mix_table, ref_table, *inf_tables.values()], labels, per_class)
    compared = comparison_rows(results, comparisons)
    speed = gauge_lines(read_gauge(gauge) if gauge is not None else None, step_times)
    clip_line = retrieval_line(*retrieval) if retrieval is not None else ""
    per_class_table = class_rows(results, labels) if labels else []
    class_header = ("Class", "Items", *(f"{r.name} SDRi" for r in results))

    html_dir = Path(html_dir)
    (html_dir / "audio").mkdir(parents=True, exist_ok=True)
    (html_dir / "img").mkdir(parents=True, exist_ok=True)
    table = results_rows(results)
    env = environment_line()
    mix_means = {format_stat(r.summary["sdr_mix"]) for r in results}
    mix_note = "" if len(mix_means) <= 1 else f" Scored sets differ: the Mixture row is that of {results[0].name}."
    what = (
        "Scores in dB: museval BSS-Eval v4, `bss_eval([s1, s2], [est, mix - est], window=inf)`, target row "
        "(DESIGN §6; computed by the fast backend, equal to museval within 1e-6 dB), and zero-mean SI-SDR; SDRi / SI-SDRi are improvements over the mixture. Cells are mean ± SEM "
        "over the N scored items, medians alongside; skipped = near-silent items (sum|x| <= 1e-5)." + mix_note
    )
    distribution_figure(
        {r.name: [v["sdri"] for v in r.rows.values() if math.isfinite(v["sdri"])] for r in results},
        html_dir / "img" / "sdri_distribution.png", "SDRi (dB)", "SDRi per test item",
    )  # fmt: skip

    def wav(name: str, x: np.ndarray, rate: int) -> str:
        write_wav_atomic(html_dir / "audio" / name, np.clip(x, -1.0, 1.0), rate, "PCM_16")
        return audio_tag(f"audio/{name}")

    sections = []
    for j, ex in enumerate(tqdm(examples, desc="report", unit="example", disable=not progress)):
        key = ex.key
        mix, rate = load_audio(mix_table[key])
        target, _ = load_audio(ref_table[key])
        rows = [("Mixture", wav(f"ex{j}_mixture.wav", mix, rate), "", ""),
                ("Target", wav(f"ex{j}_target.wav", target, rate), "", "")]  # fmt: skip
        estimates = []
        for i, r in enumerate(results):
            est, est_rate = load_audio(estimate_scp_value(r, inf_tables, key))
            if est_rate != rate:
                raise ValueError(f"{key}: estimate of {r.name} is {est_rate} Hz, mixture {rate} Hz")
            n = min(len(mix), len(est))
            if is_complement(r) and int(r.rows[key]["chosen"]) == 1:  # the scored estimate: mixture - output 1
                est = mix[:n] - est[:n]
            stem = f"ex{j}_r{i}_{slug(r.system)}_{slug(r.query)}"
            row = r.rows[key]
            note = f"SDRi {row['sdri']:.2f} dB, SI-SDRi {row['si_sdri']:.2f} dB"
            rows.append((r.name, wav(f"{stem}.wav", est, rate), wav(f"{stem}_residual.wav", mix[:n] - est[:n], rate),
                         note))  # fmt: skip
            estimates.append((r.name, est[:n]))
        n = min([len(mix), len(target)] + [len(e) for _, e in estimates])
        png = f"img/ex{j}.png"
        example_figure(mix[:n], target[:n], [(name, e[:n]) for name, e in estimates], rate,
                       f"{key}" + (f" ({labels[key]})" if key in labels else ""), html_dir / png)  # fmt: skip
        query = []
        if key in texts:
            query.append(f"<span>text query: <q>{html.escape(texts[key])}</q></span>")
        if key in images:
            width, height = image_thumbnail(query_image_file(images[key]), html_dir / "img" / f"ex{j}_query.jpg")
            query.append("<span>image query:</span>" + image_tag(f"img/ex{j}_query.jpg", f"image query of {key}",
                                                                   width, height))  # fmt: skip
        label = labels.get(key, "")
        heading = html.escape(key) + (f" &mdash; {html.escape(label)}" if label else "")
        sections.append(
            f"<section>\n<h3>{heading}</h3>\n<p class=\"why\">{html.escape('; '.join(ex.why))}</p>\n"
            + (f"<div class=\"query\">{''.join(query)}</div>\n" if query else "")
            + html_table(("", "Output", "Residual (mixture - output)", "Scores"), rows, raw=(1, 2))
            + figure_tag(png, f"{key}: spectrograms (log frequency) and effective masks")
            + "</section>\n"
        )

    body = [f"<p>{html.escape(what.replace('`', ''))}</p>\n", html_table(TABLE_HEADER, table)]
    if clip_line:
        body.append(f"<p>{html.escape(clip_line)}</p>\n")
    body.append(figure_tag("img/sdri_distribution.png", "SDRi per test item, one box per system"))
    if per_class_table:
        body.append("<h2>SDRi per class</h2>\n" + html_table(class_header, per_class_table))
    if compared:
        body.append(f"<h2>Paired differences</h2>\n{html_table(COMPARISON_HEADER, compared)}")
    if timing_rows:
        body.append("<h2>Wall time per stage</h2>\n" + html_table(("Stage", "Name", "Wall time"), timing_rows))
    body.append(f"<p>{html.escape(env)}</p>\n<h2>Examples</h2>\n")
    body.append("".join(sections) or "<p>No key is scored in every result.</p>\n")
    write_text_atomic(html_dir / "index.html", document(title, "".join(body)))

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    link = Path(os.path.relpath(os.path.abspath(html_dir / "index.html"), os.path.abspath(output.parent))).as_posix()
    md = [f"# {title}\n", f"{what}\n", markdown_table(TABLE_HEADER, table)]
    if clip_line:
        md.append(clip_line + "\n")
    if per_class_table:
        md += ["## SDRi per class\n", "Mean ± SEM in dB over the test items of each class (the target's class).\n",
               markdown_table(class_header, per_class_table)]  # fmt: skip
    if compared:
        md += [
            "## Paired differences\n",
            "Per-item differences over the items both systems scored (the same mixtures), mean and 90 % BCa "
            "bootstrap interval in dB (10,000 resamples, seed 0): an interval that excludes 0 is a difference "
            "this test set resolves.\n",
            markdown_table(COMPARISON_HEADER, compared),
        ]
    if timing_rows:
        md += ["## Wall time per stage\n", markdown_table(("Stage", "Name", "Wall time"), timing_rows)]
    if speed:
        md += ["## Speed gauge\n", "\n".join(speed) + "\n"]
    md += [f"Environment: {env}.\n", f"Listening page (queries, players, spectrograms, per-class table, SDRi "
           f"distribution): [{link}]({link})\n"]  # fmt: skip
    history = kept_history(output)
    write_text_atomic(output, "\n".join(md) + ("\n" + history if history else ""))
