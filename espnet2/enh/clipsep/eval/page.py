"""HTML listening pages: one ``index.html`` beside its ``audio/`` and ``img/`` folders, all links relative.

Shared by the separation report (:mod:`espnet2.enh.clipsep.eval.report`) and the synthesis report, so that both
pages look and behave the same: every text is escaped, players load their metadata (so a browser can tell a
broken source at once), and images carry their size and an ``alt`` text.
"""

import html
import re
from typing import Optional, Sequence

__all__ = ["audio_tag", "document", "figure_tag", "html_table", "image_tag", "slug"]

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1280px;margin:auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:middle}th{background:#f4f4f4}figure{display:inline-block;margin:6px}"
    "section{border-top:1px solid #ddd;margin-top:18px}.why{color:#666;font-size:90%}"
    ".query{display:flex;gap:12px;align-items:center;margin:6px 0}.query img{border:1px solid #ccc}"
    "audio{height:32px;width:200px}"
)


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], raw: Sequence[int] = ()) -> str:
    """A table; the cells of the columns listed in ``raw`` are HTML already (players), the rest is escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw else html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>\n"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def audio_tag(src: str, title: str = "") -> str:
    """An ``<audio>`` player of a relative ``src`` that loads its metadata on page load."""
    label = f' title="{html.escape(title)}"' if title else ""
    return f'<audio controls preload="metadata" src="{html.escape(src)}"{label}></audio>'


def image_tag(src: str, alt: str, width: Optional[int] = None, height: Optional[int] = None) -> str:
    size = (f' width="{width}"' if width else "") + (f' height="{height}"' if height else "")
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{size}>'


def figure_tag(src: str, caption: str) -> str:
    return f"<figure>{image_tag(src, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>\n"


def document(title: str, body: str) -> str:
    """The whole page: ``body`` is HTML; ``title`` is escaped."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}</body>\n</html>\n"
    )
