"""The separation results as the CLIPSep paper lays them out (its Tables 2 and 3).

One row per system and test query; per test set, the mean SDR ± SEM, the mean SDRi ± SEM and the median SDR; a
Mixture row per set; rows a run did not produce are listed with the reason ("not run (no BERT weights)"), so the
table always says which rows ran. Below it, the paper's claim as a paired per-item difference (CLIPSep-NIT -
CLIPSep with text queries, 90 % bootstrap interval) on each set, then each set's detailed report.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos", ICLR 2023,
    Table 2 (MUSIC: mean SDR ± SEM and median per query modality) and Table 3 (MUSIC+ and VGGSound-Clean+).
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet2.enh.clipsep.eval.intervals import paired_difference
from espnet2.enh.clipsep.eval.report import (
    HISTORY_HEADING,
    Result,
    environment_line,
    format_stat,
    gauge_lines,
    kept_history,
    load_result,
    markdown_table,
    read_timings,
    timings_rows,
)
from espnet2.enh.clipsep.files.writing import write_text_atomic

__all__ = [
    "TableEntry",
    "claim_rows",
    "detail_section",
    "paper_rows",
    "parse_entry",
    "parse_not_run",
    "write_paper_results",
]


@dataclass
class TableEntry:
    """One ``--row SET|SYSTEM|TRAINING QUERY|TEST QUERY|SCORE_DIR`` with its loaded scores."""

    test_set: str
    system: str
    train_query: str
    test_query: str
    result: Optional[Result] = None
    reason: str = ""  # why the row did not run (then ``result`` is None)

    @property
    def row_key(self) -> Tuple[str, str, str]:
        return self.system, self.train_query, self.test_query


def _fields(spec: str, n: int, what: str) -> List[str]:
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) != n or not all(parts):
        raise ValueError(f"{spec!r}: expected {what}")
    return parts


def parse_entry(spec: str, load: bool = True) -> TableEntry:
    """``SET|SYSTEM|TRAINING QUERY|TEST QUERY|SCORE_DIR`` -> :class:`TableEntry` (scores loaded with ``load``)."""
    test_set, system, train_q, test_q, score_dir = _fields(
        spec, 5, "SET|SYSTEM|TRAINING QUERY|TEST QUERY|SCORE_DIR"
    )
    result = Result(system, test_q, Path(score_dir), [])
    return TableEntry(test_set, system, train_q, test_q, load_result(result) if load else result)


def parse_not_run(spec: str) -> TableEntry:
    """``SYSTEM|TRAINING QUERY|TEST QUERY|REASON``: a row listed in every set as "not run (REASON)"."""
    system, train_q, test_q, reason = _fields(spec, 4, "SYSTEM|TRAINING QUERY|TEST QUERY|REASON")
    return TableEntry("*", system, train_q, test_q, None, reason)


def paper_header(sets: Sequence[Tuple[str, str]]) -> Tuple[str, ...]:
    cells = ["System", "Training query", "Test query"]
    for _, label in sets:
        cells += [f"{label}: SDR", f"{label}: SDRi", f"{label}: SDR median"]
    return tuple(cells)


def paper_rows(entries: Sequence[TableEntry], sets: Sequence[Tuple[str, str]]) -> List[Tuple[str, ...]]:
    """Table body: a row per (system, training query, test query) in first-seen order, then the Mixture row.

    Args:
        entries: Scored entries (``result`` loaded) and not-run entries (``reason`` set, ``test_set`` "*").
        sets: ``(set name, column label)`` in column order.
    """
    order: List[Tuple[str, str, str]] = []
    by_cell: Dict[Tuple[Tuple[str, str, str], str], TableEntry] = {}
    reasons: Dict[Tuple[str, str, str], str] = {}
    for e in entries:
        if e.row_key not in order:
            order.append(e.row_key)
        if e.result is None:
            reasons[e.row_key] = e.reason
        else:
            by_cell[e.row_key, e.test_set] = e
    rows = []
    for key in order:
        cells = list(key)
        for name, _ in sets:
            e = by_cell.get((key, name))
            if e is None:
                why = reasons.get(key, "not run on this set")
                cells += [f"not run ({why})" if key in reasons else "not run", "", ""]
                continue
            s = e.result.summary
            cells += [format_stat(s["sdr"]), format_stat(s["sdri"]), format_stat(s["sdr"], sem=False)]
        rows.append(tuple(cells))
    mixture = ["Mixture", "-", "-"]
    for name, _ in sets:
        scored = [e for (k, n), e in by_cell.items() if n == name]
        if scored:
            s = scored[0].result.summary
            mixture += [format_stat(s["sdr_mix"]), "-", format_stat(s["sdr_mix"], sem=False)]
        else:
            mixture += ["not run", "", ""]
    rows.append(tuple(mixture))
    return rows


CLAIM_HEADER = ("Test set", "Paired items", "SDRi difference [90 % CI]", "SI-SDRi difference [90 % CI]")


def claim_rows(
    entries: Sequence[TableEntry], sets: Sequence[Tuple[str, str]], a: Tuple[str, str], b: Tuple[str, str]
) -> List[Tuple[str, ...]]:
    """Per set where both ran: the paired per-item difference ``a - b`` (``(system, test query)`` pairs)."""
    rows = []
    for name, label in sets:
        found = {}
        for e in entries:
            if e.result is not None and e.test_set == name and (e.system, e.test_query) in (a, b):
                found[e.system, e.test_query] = e.result
        if a not in found or b not in found:
            continue
        cells = []
        for metric in ("sdri", "si_sdri"):
            d = paired_difference(
                {k: v[metric] for k, v in found[a].rows.items()}, {k: v[metric] for k, v in found[b].rows.items()}
            )
            cells.append(d.format())
        rows.append((label, str(d.n), *cells))
    return rows


LINK_RE = re.compile(r"(\[[^\]]*\]\()([^)\s]+)(\))")


def detail_section(path: Path, label: str, output_dir: Path = Path(".")) -> str:
    """A per-set report (:func:`espnet2.enh.clipsep.eval.report.build_report`'s Markdown) as a section: its
    title replaced by ``## <label>``, its headings one level down, its environment line and history dropped, and
    its relative links re-based from the report's folder to ``output_dir`` (where the section is written)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: per-set report not found")

    def rebase(match: "re.Match") -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "/")):
            return match.group(0)
        moved = os.path.relpath(os.path.abspath(path.parent / target), os.path.abspath(output_dir))
        return match.group(1) + Path(moved).as_posix() + match.group(3)

    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    while lines and not lines[0].strip():
        lines.pop(0)
    out = [f"## {label}", ""]
    for line in lines:
        if line.startswith(HISTORY_HEADING):
            break
        if line.startswith("Environment: "):
            continue
        line = LINK_RE.sub(rebase, line)
        out.append("#" + line if line.startswith("## ") else line)
    return "\n".join(out).rstrip() + "\n"


def write_paper_results(
    output: Path,
    title: str,
    entries: Sequence[TableEntry],
    sets: Sequence[Tuple[str, str]],
    details: Sequence[Tuple[str, Path]] = (),
    claim: Optional[Tuple[Tuple[str, str], Tuple[str, str]]] = (("CLIPSep-NIT", "text"), ("CLIPSep", "text")),
    timings: Optional[Path] = None,
    gauge: Optional[Dict[str, object]] = None,
    step_times: Sequence[Tuple[str, float, int]] = (),
) -> str:
    """Writes the paper-shaped results file (atomically, keeping its ``## Run history``); returns its text."""
    scored = [e for e in entries if e.result is not None]
    counts = []
    for name, label in sets:
        ns = {e.result.summary["n"] for e in scored if e.test_set == name}
        if ns:
            counts.append(f"{label}: {'/'.join(str(n) for n in sorted(ns))} mixtures")
    md = [
        f"# {title}\n",
        "Laid out as the CLIPSep paper's Tables 2 and 3: SDR in dB (museval BSS-Eval v4, window = inf, the "
        "target's row), mean ± SEM over the scored mixtures, SDRi = SDR - SDR of the mixture, and the median SDR; "
        "\"not run\" rows say why. " + ("; ".join(counts) + "." if counts else ""),
        "",
        markdown_table(paper_header(sets), paper_rows(entries, sets)),
    ]
    if claim is not None:
        rows = claim_rows(entries, sets, *claim)
        if rows:
            (sa, qa), (sb, qb) = claim
            md += [
                f"## The paper's claim: {sa} ({qa}) - {sb} ({qb})\n",
                "Paired per-item difference over the same mixtures, mean and 90 % BCa bootstrap interval in dB "
                "(10,000 resamples, seed 0); an interval above 0 supports the claim on that set.\n",
                markdown_table(CLAIM_HEADER, rows),
            ]
    for label, path in details:
        md.append(detail_section(path, label, Path(output).parent))
    if timings is not None:
        md += ["## Wall time per stage\n", markdown_table(("Stage", "Name", "Wall time"), timings_rows(read_timings(timings)))]
    speed = gauge_lines(gauge, step_times)
    if speed:
        md += ["## Speed gauge\n", "\n".join(speed) + "\n"]
    md.append(f"Environment: {environment_line()}.\n")
    text = "\n".join(md)
    history = kept_history(output)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, text + ("\n" + history if history else ""))
    return text
