"""The synthesis listening page: one row per query (its text, its image), one player per system.

Built with the separation report's page machinery (:mod:`espnet2.enh.clipsep.eval.page`,
:func:`espnet2.enh.clipsep.eval.figures.image_thumbnail`), so both recipes' pages look and are checked alike
(``python -m espnet2.enh.clipsep.bin.check_page``). The clips are copied next to the page (16-bit WAV), so the
page folder is self-contained.
"""

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet2.enh.clipsep.eval.figures import image_thumbnail
from espnet2.enh.clipsep.eval.page import audio_tag, document, html_table, image_tag, slug
from espnet2.enh.clipsep.eval.report import query_image_file
from espnet2.enh.clipsep.files.kaldi_table import read_table
from espnet2.enh.clipsep.files.writing import write_text_atomic

__all__ = ["PageSystem", "build_listening_page", "pick_queries"]


@dataclass
class PageSystem:
    """One column of the page.

    Attributes:
        name: Column heading (e.g. ``CLIPSonic-ZS``).
        query: What it was given (e.g. ``label text (zero-shot)``).
        wav_scp: Its clips, ``<key> <wav>``.
        correct: Per key, whether the probe heard the query class (1) or not (0); empty when unknown.
    """

    name: str
    query: str
    wav_scp: Path
    correct: Dict[str, int] = field(default_factory=dict)


def pick_queries(keys: Sequence[str], labels: Dict[str, str], per_class: int) -> List[str]:
    """The first ``per_class`` keys (sorted) of every class, classes in sorted order; all keys without labels."""
    if not labels:
        return sorted(keys)
    out = []
    for label in sorted({labels[k] for k in keys if k in labels}):
        out += sorted(k for k in keys if labels.get(k) == label)[:per_class]
    return out


def build_listening_page(
    systems: Sequence[PageSystem],
    html_dir: Path,
    title: str,
    labels: Optional[Dict[str, str]] = None,
    images: Optional[Dict[str, str]] = None,
    per_class: int = 1,
) -> Path:
    """Writes ``html_dir/index.html`` with ``audio/`` and ``img/`` beside it; returns the page's path.

    Args:
        systems: The columns; a row is shown for a key every system has.
        labels: ``key -> query class``: the text of the row's query and the per-class choice of rows.
        images: ``key -> picture or directory of frames`` (the middle frame is shown): the image query.
        per_class: Rows per class.

    Raises:
        FileNotFoundError, ValueError: a missing table, clip or picture (one line naming it).
    """
    if not systems:
        raise ValueError("no system for the listening page")
    labels, images = labels or {}, images or {}
    tables = [read_table(s.wav_scp) for s in systems]
    keys = pick_queries(sorted(set.intersection(*(set(t) for t in tables))), labels, per_class)
    html_dir = Path(html_dir)
    (html_dir / "audio").mkdir(parents=True, exist_ok=True)
    (html_dir / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for j, key in enumerate(keys):
        cells = [html.escape(key), f"<q>{html.escape(labels[key])}</q>" if key in labels else ""]
        if images:
            if key in images:
                name = f"img/q{j}.jpg"
                width, height = image_thumbnail(query_image_file(images[key]), html_dir / name, width=96)
                cells.append(image_tag(name, f"image query of {key}", width, height))
            else:
                cells.append("")
        for s, table in zip(systems, tables):
            source = Path(table[key])
            if not source.is_file():
                raise FileNotFoundError(f"{s.wav_scp}: clip of {key} not found: {source}")
            name = f"audio/{slug(s.name)}_{j}{source.suffix}"
            shutil.copyfile(source, html_dir / name)
            mark = {1: " &#10003; heard as the query class", 0: " &#10007; heard as another class"}.get(
                s.correct.get(key), "")
            cells.append(audio_tag(name) + (f"<br><small>{mark.strip()}</small>" if mark else ""))
        rows.append(cells)
    header = ["Key", "Text query"] + (["Image query"] if images else []) + [f"{s.name}: {s.query}" for s in systems]
    intro = (
        f"<p>{len(keys)} queries ({per_class} per class); each column plays what a system made for the row's query. "
        "Marks: whether the probe classifier (the recipe's relevance) heard the query class in that clip.</p>\n"
    )
    page = html_dir / "index.html"
    write_text_atomic(page, document(title, intro + html_table(header, rows, raw=tuple(range(len(header))))))
    return page
