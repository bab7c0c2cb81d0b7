"""List the videos of a local corpus copy and assign them to splits.

Each lister returns :class:`Splits`, ``{split: [VideoItem(uid, path, label), ...]}`` with items sorted by uid.
Utterance ids are made of ``[A-Za-z0-9_-]`` only and are unique across the whole corpus: one source file always
gets the same uid, whichever splits list it (VGGSound's test subsets overlap), and two different files never share
one. A split listed from one of CLIPSep's CSV files also keeps the file's row order (``Splits.orders``): CLIPSep
pairs evaluation item ``i`` by the row index ``i`` (``random.seed(i)``), so the fixed mixtures need it.

* ``folder``: ``ROOT/<split>/<class>/*.mp4`` with splits among train/valid/test/noisy (our generated mini corpus;
  ``noisy`` is its pool of interferer clips for the "+" test set).
* ``music``: the MUSIC dataset, ``ROOT/<instrument>/<youtube_id>.mp4`` or ``ROOT/solo/<instrument>/...``.
  Either CLIPSep's split files (``--splits_dir`` = ``clipsep/data/MUSIC/solo`` of github.com/sony/CLIPSep:
  train.csv, val.csv, test.csv), or a seeded per-instrument split: the sorted files of each instrument are
  shuffled with ``random.Random(seed)``, the first ``test_ratio`` become test and ``valid_ratio`` of the rest
  valid.
* ``vggsound``: mp4 files named ``<youtube_id>_<start>....mp4`` anywhere below ROOT; the evaluation splits
  come from CLIPSep's CSV files (``clipsep/data/vggsound``), everything else is train.
"""

import csv
import logging
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
FOLDER_SPLITS = ("train", "valid", "test", "noisy")
MUSIC_INSTRUMENTS = (
    "accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute",
    "saxophone", "trumpet", "tuba", "violin", "xylophone",
)
MUSIC_CSV_SPLITS = {"train": "train.csv", "valid": "val.csv", "test": "test.csv"}
VGGSOUND_CSV_SPLITS = {
    "valid": "val.csv",
    "test": "test.csv",
    "test_good": "test-good.csv",  # VGGSound-Clean
    "test_no_music": "test-no-music.csv",
    "test_good_no_music": "test-good-no-music.csv",
}
CLIPSEP_URL = "https://github.com/sony/CLIPSep"
# In a data dir listed from a CSV: one line per CSV row, in the file's order, the row's uid or "-" (no local video).
ORDER_FILE = "csv_order"
ORDER_MISSING = "-"
YOUTUBE_ID_LENGTH = 11


class VideoItem(NamedTuple):
    """One video of a split: utterance id, source file and class label (underscores allowed)."""

    uid: str
    path: Path
    label: str


class Entry(NamedTuple):
    """A lister's raw item: uid base, source file, label and its row in the split's CSV (``None``: no CSV)."""

    base: str
    path: Path
    label: str
    row: Optional[int] = None


class Splits(Dict[str, List[VideoItem]]):
    """``{split: [VideoItem, ...]}`` (sorted by uid) plus ``orders``: for each split listed from a CSV file, the
    uid of each CSV row in the file's order (``None`` where no local video matched the row)."""

    def __init__(self, items: Dict[str, List[VideoItem]], orders: Optional[Dict[str, List[Optional[str]]]] = None):
        super().__init__(items)
        self.orders: Dict[str, List[Optional[str]]] = dict(orders or {})


def sanitize_uid(name: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_-]`` by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "video"


def split_order(splits: Sequence[str]) -> List[str]:
    """Splits in a readable order: train, valid, test, then the other test subsets alphabetically."""
    first = [s for s in ("train", "valid", "test") if s in splits]
    return first + sorted(s for s in splits if s not in first)


def assign_uids(entries: Dict[str, List[Entry]], num_rows: Optional[Dict[str, int]] = None) -> Splits:
    """Turn ``{split: [Entry]}`` into sorted :class:`VideoItem` lists with unique uids.

    The same path gets the same uid in every split; a base already taken by another path gets ``-2``, ``-3``...
    (decided in :func:`split_order` and path order, hence deterministic, and train keeps the plain names).

    Args:
        entries: The lister's items per split.
        num_rows: Row count of each split's CSV file; such a split gets ``orders[split]``, the uid of each row
            (a row matched by several local files takes the first in path order).
    """
    num_rows = num_rows or {}
    by_path: Dict[Path, str] = {}
    taken = set()
    splits: Dict[str, List[VideoItem]] = {}
    orders: Dict[str, List[Optional[str]]] = {split: [None] * n for split, n in num_rows.items()}
    for split in split_order(list(entries)):
        items, seen = [], set()
        for base, path, label, row in sorted(entries[split], key=lambda e: (str(e.path), e.base)):
            if path in seen:
                if row is not None and orders[split][row] is None:
                    orders[split][row] = by_path[path]  # listed twice in one split (a duplicated CSV row)
                continue
            seen.add(path)
            uid = by_path.get(path)
            if uid is None:
                base = sanitize_uid(base)
                uid, n = base, 1
                while uid in taken:
                    n += 1
                    uid = f"{base}-{n}"
                taken.add(uid)
                by_path[path] = uid
            items.append(VideoItem(uid, path, label))
            if row is not None and orders[split][row] is None:
                orders[split][row] = uid
        splits[split] = sorted(items)
    return Splits({split: splits[split] for split in sorted(splits)}, orders)


def _videos(directory: Path, recursive: bool = False) -> List[Path]:
    """Video files of a directory (hidden files ignored), sorted."""
    files = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(
        p for p in files
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: corpus root directory not found")
    return root


def list_folder(root: Path) -> Splits:
    """List ``ROOT/<split>/<class>/*.mp4``; uid ``<class>-<stem>``, label = class directory name.

    Args:
        root: Corpus root with some of the sub-directories train, valid and test.

    Returns:
        ``{split: items}`` for each split directory that holds at least one video.
    """
    root = _check_root(Path(root))
    entries: Dict[str, List[Entry]] = {}
    for split in FOLDER_SPLITS:
        if not (root / split).is_dir():
            continue
        classes = sorted(d for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith("."))
        items = [Entry(f"{c.name}-{p.stem}", p, c.name) for c in classes for p in _videos(c)]
        if items:
            entries[split] = items
    if not entries:
        raise ValueError(f"{root}: no videos in {'/'.join(FOLDER_SPLITS)}/<class>/ sub-directories")
    return assign_uids(entries)


def _music_videos(root: Path) -> Dict[str, List[Path]]:
    """``{instrument: sorted videos}`` from ``ROOT/<instrument>`` and ``ROOT/solo/<instrument>``."""
    found: Dict[str, Dict[str, Path]] = defaultdict(dict)
    for parent in (root, root / "solo"):
        if not parent.is_dir():
            continue
        for d in sorted(parent.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or (parent == root and d.name == "solo"):
                continue
            if d.name not in MUSIC_INSTRUMENTS:
                logging.warning("music: ignoring %s (not one of the 11 MUSIC instruments)", d)
                continue
            for p in _videos(d):
                found[d.name].setdefault(p.stem, p)  # the same video under ROOT and ROOT/solo counts once
    return {k: [v[s] for s in sorted(v)] for k, v in sorted(found.items())}


def list_music(
    root: Path,
    seed: int = 1234,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.1,
    splits_dir: Optional[Path] = None,
) -> Splits:
    """List the MUSIC solo videos and split them; uid ``<instrument>-<youtube id>``, label = instrument.

    Args:
        root: ``ROOT/<instrument>/*.mp4`` or ``ROOT/solo/<instrument>/*.mp4``.
        seed: Seed of the per-instrument shuffle.
        test_ratio: Fraction of each instrument's videos that goes to test.
        valid_ratio: Fraction of each instrument's remaining (train) videos that goes to valid.
        splits_dir: CLIPSep's ``clipsep/data/MUSIC/solo`` folder; when given, its CSV files decide the splits
            and the ratios are not used.

    Returns:
        ``{"train": ..., "valid": ..., "test": ...}`` (empty splits left out).
    """
    root = _check_root(Path(root))
    videos = _music_videos(root)
    if not videos:
        raise ValueError(f"{root}: no videos in <instrument>/ or solo/<instrument>/ sub-directories")
    if splits_dir is not None:
        return _music_from_csv(videos, Path(splits_dir))
    if not (0 <= test_ratio < 1 and 0 <= valid_ratio < 1):
        raise ValueError("--test_ratio and --valid_ratio must be in [0, 1)")
    entries: Dict[str, List[Entry]] = defaultdict(list)
    for instrument, paths in videos.items():
        shuffled = list(paths)
        random.Random(seed).shuffle(shuffled)
        n_test = round(len(shuffled) * test_ratio)
        n_valid = round((len(shuffled) - n_test) * valid_ratio)
        parts = {
            "test": shuffled[:n_test],
            "valid": shuffled[n_test : n_test + n_valid],
            "train": shuffled[n_test + n_valid :],
        }
        for split, part in parts.items():
            entries[split] += [Entry(f"{instrument}-{p.stem}", p, instrument) for p in part]
    return assign_uids({k: v for k, v in entries.items() if v})


def _music_from_csv(videos: Dict[str, List[Path]], splits_dir: Path) -> Splits:
    rows = _read_split_csvs(splits_dir, MUSIC_CSV_SPLITS, "clipsep/data/MUSIC/solo")
    local = {(instrument, p.stem): p for instrument, paths in videos.items() for p in paths}
    entries: Dict[str, List[Entry]] = defaultdict(list)
    missing: Dict[str, int] = defaultdict(int)
    listed = set()
    for split, split_rows in rows.items():
        for row, fields in enumerate(split_rows):
            if fields is None:
                continue
            audio_path, label = fields
            key = (Path(audio_path).parent.name or label, Path(audio_path).stem)
            listed.add(key)
            if key in local:
                entries[split].append(Entry(f"{key[0]}-{key[1]}", local[key], key[0], row))
            else:
                missing[split] += 1
    _log_missing("music", missing)
    unlisted = len(set(local) - listed)
    if unlisted:
        logging.warning("music: %d local videos are in none of the split CSVs and are not used", unlisted)
    return assign_uids({k: v for k, v in entries.items() if v}, {k: len(v) for k, v in rows.items() if k in entries})


def _read_split_csvs(
    splits_dir: Path, names: Dict[str, str], where: str
) -> Dict[str, List[Optional[Tuple[str, str]]]]:
    """``{split: [(audio path, label) or None]}``, one entry per row of CLIPSep's
    ``audio_path,frames_dir,num_frames,label`` CSVs (see :func:`_csv_rows`)."""
    if not splits_dir.is_dir():
        raise FileNotFoundError(
            f"{splits_dir}: split CSV directory not found (get the folder {where}/ of {CLIPSEP_URL})"
        )
    rows = {}
    for split, name in names.items():
        path = splits_dir / name
        if path.is_file():
            rows[split] = list(_csv_rows(path))
    if not rows:
        raise FileNotFoundError(
            f"{splits_dir}: none of {', '.join(names.values())} found (get the folder {where}/ of {CLIPSEP_URL})"
        )
    return rows


def _csv_rows(path: Path) -> Iterable[Optional[Tuple[str, str]]]:
    """``(audio path, label)`` of each row as CLIPSep counts rows (every ``csv.reader`` row of two fields or more;
    ``MixDataset.__init__``), ``None`` for a row that names no clip (a header line, an empty path)."""
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if len(row) < 2:
                continue  # not a row for CLIPSep either
            if len(row) < 4:
                raise ValueError(f"{path}:{lineno}: expected audio_path,frames_dir,num_frames,label")
            if not row[0].strip() or (lineno == 1 and not row[2].strip().isdigit()):
                yield None  # a header line: a row (index) that names no clip
                continue
            yield row[0].strip(), ",".join(row[3:]).strip()


def _log_missing(corpus: str, missing: Dict[str, int]) -> None:
    total = sum(missing.values())
    if total:
        detail = ", ".join(f"{split} {n}" for split, n in sorted(missing.items()))
        logging.warning("%s: %d videos listed in the split CSVs are missing locally (%s)", corpus, total, detail)


def youtube_id(stem: str) -> str:
    """The YouTube id of a VGGSound file stem ``<11-char id>_<start>...``."""
    return stem[:YOUTUBE_ID_LENGTH]


def _start_seconds(stem: str) -> Optional[int]:
    match = re.match(r"_(\d+)", stem[YOUTUBE_ID_LENGTH:])
    return int(match.group(1)) if match else None


def read_vggsound_labels(path: Path) -> Dict[Tuple[str, Optional[int]], str]:
    """Labels of the official ``vggsound.csv`` (``youtube_id,start_seconds,label,split``, no header).

    Returns:
        ``{(id, start): label}`` plus ``{(id, None): label}`` for the first row of each id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels CSV not found")
    labels: Dict[Tuple[str, Optional[int]], str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected youtube_id,start_seconds,label,split")
            ytid, start, label = row[0].strip(), row[1].strip(), row[2].strip()
            if not start.isdigit():
                continue  # a header line
            labels[(ytid, int(start))] = label
            labels.setdefault((ytid, None), label)
    return labels


def list_vggsound(
    root: Path, splits_dir: Optional[Path], labels_csv: Optional[Path] = None, sets: Optional[Sequence[str]] = None
) -> Splits:
    """List local VGGSound videos; evaluation splits from CLIPSep's CSVs, every other video is train.

    Args:
        root: Directory (searched recursively) of ``<youtube_id>_<start>...mp4`` files.
        splits_dir: CLIPSep's ``clipsep/data/vggsound`` folder (``val.csv``, ``test.csv``, ``test-good.csv``,
            ``test-no-music.csv``, ``test-good-no-music.csv``; those present are used).
        labels_csv: The official ``vggsound.csv`` for train labels (else ``unknown``).
        sets: Only these evaluation splits (names of ``VGGSOUND_CSV_SPLITS``, their CSVs required) and no
            train split, e.g. ``["test_good_no_music"]`` for the MUSIC+ interferers.

    Returns:
        ``{split: items}``; uid = sanitised file stem; labels of evaluation items from the CSV rows; the order
        of each CSV in ``orders`` (a row names a YouTube id: the first local file of that id is its clip).
    """
    root = _check_root(Path(root))
    if splits_dir is None:
        raise ValueError(
            f"vggsound needs --splits_dir: the folder clipsep/data/vggsound/ of {CLIPSEP_URL} "
            f"({', '.join(VGGSOUND_CSV_SPLITS.values())})"
        )
    names = VGGSOUND_CSV_SPLITS
    if sets is not None:
        unknown = [s for s in sets if s not in VGGSOUND_CSV_SPLITS]
        if unknown or not sets:
            raise ValueError(f"unknown VGGSound set {unknown[0] if unknown else ''!r}; "
                             f"choose from: {' '.join(VGGSOUND_CSV_SPLITS)}")
        names = {s: VGGSOUND_CSV_SPLITS[s] for s in sets}
        absent = [n for n in names.values() if not (Path(splits_dir) / n).is_file()]
        if absent:
            raise FileNotFoundError(f"{Path(splits_dir) / absent[0]}: split CSV not found (get the folder "
                                    f"clipsep/data/vggsound/ of {CLIPSEP_URL})")
    rows = _read_split_csvs(Path(splits_dir), names, "clipsep/data/vggsound")
    local: Dict[str, List[Path]] = defaultdict(list)
    for p in _videos(root, recursive=True):
        local[youtube_id(p.stem)].append(p)
    if not local:
        raise ValueError(f"{root}: no video files found")
    labels = read_vggsound_labels(labels_csv) if labels_csv is not None else {}

    entries: Dict[str, List[Entry]] = defaultdict(list)
    missing: Dict[str, int] = defaultdict(int)
    listed = set()
    for split, split_rows in rows.items():
        for row, fields in enumerate(split_rows):
            if fields is None:
                continue
            audio_path, label = fields
            ytid = youtube_id(Path(audio_path).stem)
            listed.add(ytid)
            if ytid not in local:
                missing[split] += 1
            entries[split] += [Entry(p.stem, p, label, row) for p in local.get(ytid, [])]
    _log_missing("vggsound", missing)
    if sets is None:
        for ytid in sorted(set(local) - listed):
            for p in local[ytid]:
                label = labels.get((ytid, _start_seconds(p.stem))) or labels.get((ytid, None), "unknown")
                entries["train"].append(Entry(p.stem, p, label))
    return assign_uids({k: v for k, v in entries.items() if v}, {k: len(v) for k, v in rows.items() if k in entries})


def label_words(label: str) -> str:
    """A label as words for ``utt2label``: underscores become spaces, whitespace collapsed."""
    return " ".join(label.replace("_", " ").split()) or "unknown"
