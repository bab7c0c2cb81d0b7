"""Results report: a Markdown results table, spectrogram PNGs (Pillow only) and one HTML listening page.

Inputs are score directories written by :mod:`espnet2.enh.clipsep.bin.score` and the scps the scores came from.
For each example key and result, one PNG stacks four panels (frequency low at the bottom): the log-magnitude
spectrograms of the mixture, the target and the estimate, and the *effective mask* ``|STFT(est)| / |STFT(mix)|``
clipped to [0, 1] — the ratio the output realises, not the model's internal mask.
"""

import html
import importlib.metadata
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet2.enh.clipsep.files.kaldi_table import read_table
from espnet2.enh.clipsep.eval.gauge import read_gauge
from espnet2.enh.clipsep.eval.intervals import paired_difference
from espnet2.enh.clipsep.eval.retrieval import clip_retrieval
from espnet2.enh.clipsep.eval.scoring import SUMMARY_METRICS, load_audio, read_score_dir
from espnet2.enh.clipsep.files.writing import write_text_atomic, write_wav_atomic

__all__ = [
    "DB_RANGE",
    "TABLE_HEADER",
    "Result",
    "build_report",
    "comparison_rows",
    "gauge_lines",
    "retrieval_line",
    "colormap",
    "environment_line",
    "estimate_scp_value",
    "format_seconds",
    "format_stat",
    "html_table",
    "load_result",
    "markdown_table",
    "parse_result",
    "pick_examples",
    "png_size",
    "read_timings",
    "render_example_png",
    "results_rows",
    "stft_magnitude",
    "timings_rows",
    "to_unit_db",
]

N_FFT, HOP = 1024, 256
DB_RANGE = (-80.0, 0.0)  # dB re. a full-scale sinusoid; fixed so panels and examples compare
PANEL_W, PANEL_H, LABEL_H, LEFT, MARGIN = 512, 128, 16, 44, 6
# Anchor colours of a perceptually uniform dark-blue -> green -> yellow map, interpolated linearly.
_CMAP = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
     [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]],
    dtype=np.float64,
)  # fmt: skip
TABLE_HEADER = (
    "System", "Query", "N (skipped)", "SDR", "SDRi", "SI-SDRi", "SDRi median", "SI-SDRi median"
)  # fmt: skip


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


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


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


# --------------------------------------------------------------------------------------- spectrograms


def stft_magnitude(wav: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Magnitude of the centred STFT with a periodic Hann window.

    Args:
        wav: (T,) signal.
    Returns:
        (n_fft // 2 + 1, 1 + T // hop) magnitudes scaled so that a full-scale sinusoid peaks at 1.
    """
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    pad = n_fft // 2
    x = np.pad(wav.astype(np.float64), pad, mode="reflect" if len(wav) > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T / (window.sum() / 2.0)


def to_unit_db(mag: np.ndarray, db_range: Tuple[float, float] = DB_RANGE) -> np.ndarray:
    """20·log10(mag) mapped from ``db_range`` to [0, 1] (clipped); same shape as ``mag``."""
    db = 20.0 * np.log10(np.maximum(mag, 1e-12))
    return np.clip((db - db_range[0]) / (db_range[1] - db_range[0]), 0.0, 1.0)


def colormap(values: np.ndarray) -> np.ndarray:
    """Maps (H, W) values in [0, 1] to (H, W, 3) uint8 RGB with the ``_CMAP`` anchors."""
    pos = np.clip(values, 0.0, 1.0) * (len(_CMAP) - 1)
    anchors = np.arange(len(_CMAP))
    rgb = np.stack([np.interp(pos, anchors, _CMAP[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _panel(values: np.ndarray):
    """(F, N) values in [0, 1], row 0 = lowest frequency -> PANEL_W x PANEL_H RGB image, low frequency at bottom."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(values[::-1], dtype=np.float32), mode="F")
    img = img.resize((PANEL_W, PANEL_H), Image.Resampling.BILINEAR)
    return Image.fromarray(colormap(np.asarray(img)), mode="RGB")


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def png_size() -> Tuple[int, int]:
    """(width, height) of every example PNG."""
    return LEFT + PANEL_W + MARGIN, LABEL_H + 4 * (LABEL_H + PANEL_H) + LABEL_H


def render_example_png(
    mix: np.ndarray, target: np.ndarray, est: np.ndarray, rate: int, title: str, path: Path
) -> None:
    """Writes the four-panel PNG (mixture, target, estimate, effective mask) of one example.

    Args:
        mix, target, est: (T,) signals of equal length.
        rate: sample rate (for the axis labels).
        title: ASCII-rendered header line.
        path: PNG to write (atomically).
    """
    from PIL import Image, ImageDraw, ImageFont

    mags = [stft_magnitude(x) for x in (mix, target, est)]
    mask = np.clip(mags[2] / np.maximum(mags[0], 1e-10), 0.0, 1.0)
    lo, hi = DB_RANGE
    names = [f"{n} - log magnitude, {lo:.0f}..{hi:.0f} dB" for n in ("mixture", "target", "estimate")]
    panels = [(names[i], to_unit_db(m)) for i, m in enumerate(mags)]
    panels.append(("effective mask |est|/|mix|, 0..1", mask))
    width, height = png_size()
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((LEFT, 2), _ascii(title), fill="black", font=font)
    top_khz = rate / 2000.0
    for i, (label, values) in enumerate(panels):
        y = LABEL_H + i * (LABEL_H + PANEL_H)
        draw.text((LEFT, y + 2), label, fill="black", font=font)
        canvas.paste(_panel(values), (LEFT, y + LABEL_H))
        draw.text((2, y + LABEL_H), f"{top_khz:g}kHz", fill="black", font=font)
        draw.text((2, y + LABEL_H + PANEL_H - 12), "0", fill="black", font=font)
    draw.text((LEFT, height - LABEL_H + 2), f"time 0..{len(mix) / rate:.2f} s", fill="black", font=font)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def pick_examples(results: Sequence[Result], tables: Sequence[Dict[str, str]], num: int) -> List[str]:
    """The first ``num`` sorted keys scored in every result and present in every given scp table."""
    keys = set.intersection(*(set(r.rows) for r in results), *(set(t) for t in tables))
    return sorted(keys)[:num]


def estimate_scp_value(result: Result, tables: Dict[Path, Dict[str, str]], key: str) -> str:
    """The scp value of the output scored for ``key`` (per-item ``chosen`` index into ``result.inf_scps``)."""
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
    num_examples: int = 4,
    label_file: Optional[Path] = None,
    timings: Optional[Path] = None,
    progress: bool = True,
    comparisons: Sequence[Tuple[str, str]] = (),
    gauge: Optional[Path] = None,
    step_times: Sequence[Tuple[str, float, int]] = (),
    retrieval: Optional[Tuple[Path, Path, Path]] = None,
) -> None:
    """Writes ``output`` (Markdown), ``html_dir/index.html``, ``html_dir/audio/*.wav`` and ``html_dir/img/*.png``.

    ``results`` must already be loaded (:func:`load_result`). ``comparisons`` are ``(A, B)`` pairs of
    ``SYSTEM|QUERY`` names reported as paired differences A - B; ``gauge`` is a speed-gauge JSON
    (:mod:`espnet2.enh.clipsep.eval.gauge`) and ``step_times`` ``(system, seconds per step, steps)`` rows;
    ``retrieval`` ``(image scp, text scp, utt2label)`` of the test clips adds the CLIP alignment line. Raises ``FileNotFoundError`` / ``ValueError`` with
    one clear line on missing or inconsistent inputs.
    """
    from tqdm import tqdm

    if not results:
        raise ValueError("no --result given")
    mix_table, ref_table = read_table(mix_scp), read_table(ref_scp)
    inf_tables = {p: read_table(p) for r in results for p in r.inf_scps}
    labels = read_table(label_file) if label_file is not None else {}
    timing_rows = timings_rows(read_timings(timings)) if timings is not None else []
    examples = pick_examples(results, [mix_table, ref_table, *inf_tables.values()], num_examples)
    compared = comparison_rows(results, comparisons)
    speed = gauge_lines(read_gauge(gauge) if gauge is not None else None, step_times)
    clip_line = retrieval_line(*retrieval) if retrieval is not None else ""

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

    sections = []
    for j, key in enumerate(tqdm(examples, desc="report", unit="example", disable=not progress)):
        mix, rate = load_audio(mix_table[key])
        target, _ = load_audio(ref_table[key])
        write_wav_atomic(html_dir / "audio" / f"ex{j}_mixture.wav", np.clip(mix, -1.0, 1.0), rate, "PCM_16")
        write_wav_atomic(html_dir / "audio" / f"ex{j}_target.wav", np.clip(target, -1.0, 1.0), rate, "PCM_16")
        players = [("Mixture", f"audio/ex{j}_mixture.wav", ""), ("Target", f"audio/ex{j}_target.wav", "")]
        figures = []
        for i, r in enumerate(results):
            est, est_rate = load_audio(estimate_scp_value(r, inf_tables, key))
            if est_rate != rate:
                raise ValueError(f"{key}: estimate of {r.name} is {est_rate} Hz, mixture {rate} Hz")
            stem = f"ex{j}_r{i}_{_slug(r.system)}_{_slug(r.query)}"
            write_wav_atomic(html_dir / "audio" / f"{stem}.wav", np.clip(est, -1.0, 1.0), rate, "PCM_16")
            row = r.rows[key]
            note = f"SDRi {row['sdri']:.2f} dB, SI-SDRi {row['si_sdri']:.2f} dB"
            players.append((r.name, f"audio/{stem}.wav", note))
            n = min(len(mix), len(target), len(est))
            render_example_png(mix[:n], target[:n], est[:n], rate, f"{key} | {r.system} | {r.query}",
                               html_dir / "img" / f"{stem}.png")  # fmt: skip
            figures.append((r.name, f"img/{stem}.png"))
        label = labels.get(key, "")
        rows_html = "".join(
            f"<tr><th>{html.escape(name)}</th><td><audio controls preload=\"none\" src=\"{html.escape(src)}\">"
            f"</audio></td><td>{html.escape(note)}</td></tr>\n"
            for name, src, note in players
        )
        figs_html = "".join(
            f"<figure><img src=\"{html.escape(src)}\" alt=\"{html.escape(name)} spectrograms\">"
            f"<figcaption>{html.escape(name)}</figcaption></figure>\n"
            for name, src in figures
        )
        heading = html.escape(key) + (f" &mdash; {html.escape(label)}" if label else "")
        sections.append(f"<section>\n<h3>{heading}</h3>\n<table>\n{rows_html}</table>\n{figs_html}</section>\n")

    timings_html = ""
    if timing_rows:
        timings_html = "<h2>Wall time per stage</h2>\n" + html_table(("Stage", "Name", "Wall time"), timing_rows)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        "figure{display:inline-block;margin:4px}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(what.replace('`', ''))}</p>\n"
        f"{html_table(TABLE_HEADER, table)}"
        + (f"<p>{html.escape(clip_line)}</p>\n" if clip_line else "")
        + (f"<h2>Paired differences</h2>\n{html_table(COMPARISON_HEADER, compared)}" if compared else "")
        + f"{timings_html}<p>{html.escape(env)}</p>\n"
        f"<h2>Examples</h2>\n{''.join(sections) or '<p>No key is scored in every result.</p>'}</body>\n</html>\n"
    )
    write_text_atomic(html_dir / "index.html", page)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    link = Path(os.path.relpath(os.path.abspath(html_dir / "index.html"), os.path.abspath(output.parent))).as_posix()
    md = [f"# {title}\n", f"{what}\n", markdown_table(TABLE_HEADER, table)]
    if clip_line:
        md.append(clip_line + "\n")
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
    md += [f"Environment: {env}.\n", f"Listening examples and spectrograms: [{link}]({link})\n"]
    write_text_atomic(output, "\n".join(md))

