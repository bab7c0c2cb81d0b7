"""Turn a local folder of videos into Kaldi-style data directories of 16 kHz audio and 1-fps frames.

For each split ``S`` it writes ``OUTPUT_DIR/S/`` with ``wav.scp``, ``frames.scp``, ``utt2spk``, ``spk2utt``,
``utt2num_samples``, ``utt2num_frames``, ``utt2label`` (evaluation only) and ``skipped.tsv`` (``<path>\\t<reason>``
of every rejected video: corrupt, no-audio, no-frames, silent, too-short). Media go to
``MEDIA_DIR/{audio,frames}/<uid>`` (default ``OUTPUT_DIR/media``), shared by all splits so that overlapping
splits (VGGSound's test subsets) are extracted once. Every item is published atomically and reused when
present, so an interrupted run resumes and a repeated run rewrites nothing.

A split listed from one of CLIPSep's CSV files also gets ``csv_order`` (one line per CSV row, in order: its uid,
or ``-`` where no local video matched): CLIPSep pairs evaluation item ``i`` by its row (``local/mixtures.py``).
``--vggsound_root`` adds VGGSound evaluation lists to another corpus, as ``OUTPUT_DIR/vggsound_<set>``: the MUSIC+
interferers (``test_good_no_music``) while preparing MUSIC.

Examples:
    python local/prepare_videos.py --corpus folder --root downloads/mini --output_dir data
    python local/prepare_videos.py --corpus music --root /corpora/MUSIC --output_dir data \\
        --nj 8 --splits_dir CLIPSep/clipsep/data/MUSIC/solo \\
        --vggsound_root /corpora/vggsound/video --vggsound_splits_dir CLIPSep/clipsep/data/vggsound
    python local/prepare_videos.py --corpus vggsound --root /corpora/vggsound/video \\
        --output_dir data --splits_dir CLIPSep/clipsep/data/vggsound --labels_csv vggsound.csv
"""

import argparse
import json
import logging
import shutil
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from corpora import (
    ORDER_FILE,
    ORDER_MISSING,
    VGGSOUND_CSV_SPLITS,
    Splits,
    VideoItem,
    label_words,
    list_folder,
    list_music,
    list_vggsound,
    split_order,
)
from espnet2.enh.clipsep.files.writing import write_text_atomic
from espnet2.enh.clipsep.video import SKIP_REASONS, ExtractedVideo, VideoError, extract_video

PROG = "python local/prepare_videos.py"
SETTINGS_FILE = "extraction.json"


def get_parser() -> argparse.ArgumentParser:
    """The command-line options (``--help`` shows each with its default)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Extract 16 kHz mono audio and 1-fps frames from local videos into Kaldi-style data dirs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--corpus", choices=("folder", "music", "vggsound"), default="folder",
        help="folder: ROOT/<split>/<class>/*.mp4; music: ROOT/[solo/]<instrument>/*.mp4; "
        "vggsound: ROOT/**/<youtube_id>_<start>*.mp4",
    )
    parser.add_argument("--root", type=Path, default=None, help="corpus root directory; required")
    parser.add_argument("--output_dir", type=Path, default=Path("data"), help="where the <split>/ dirs go")
    parser.add_argument("--media_dir", type=Path, default=None,
                        help="where audio/<uid>.wav and frames/<uid>/ go; None = OUTPUT_DIR/media")
    parser.add_argument("--nj", type=int, default=4, help="parallel extraction processes")
    parser.add_argument("--fs", type=int, default=16000, help="audio sampling rate (Hz)")
    parser.add_argument("--fps", type=float, default=1, help="frames per second")
    parser.add_argument("--size", type=int, default=224, help="side of the square frames (short-side "
                        "bicubic resize, then centre crop)")
    parser.add_argument("--seed", type=int, default=1234, help="music: seed of the per-instrument shuffle")
    parser.add_argument("--test_ratio", type=float, default=0.2, help="music: test fraction per instrument")
    parser.add_argument("--valid_ratio", type=float, default=0.1, help="music: fraction of train kept for valid")
    parser.add_argument("--splits_dir", type=Path, default=None,
                        help="CLIPSep's split CSVs (github.com/sony/CLIPSep): clipsep/data/vggsound "
                        "(required for vggsound) or clipsep/data/MUSIC/solo (music, replaces the seeded split)")
    parser.add_argument("--labels_csv", type=Path, default=None,
                        help="vggsound: official vggsound.csv for train labels; None = 'unknown'")
    parser.add_argument("--vggsound_root", type=Path, default=None,
                        help="music / folder: also prepare VGGSound evaluation lists from this VGGSound video "
                        "folder, as OUTPUT_DIR/vggsound_<set> (MUSIC+ interferers); None = not")
    parser.add_argument("--vggsound_splits_dir", type=Path, default=None,
                        help="CLIPSep's clipsep/data/vggsound folder for --vggsound_root")
    parser.add_argument("--vggsound_sets", nargs="+", default=["test_good_no_music"],
                        choices=tuple(VGGSOUND_CSV_SPLITS), metavar="SET",
                        help=f"the lists --vggsound_root prepares, from: {' '.join(VGGSOUND_CSV_SPLITS)}")
    parser.add_argument("--min_duration", type=float, default=1.0, help="shorter videos are skipped (s)")
    parser.add_argument("--max_duration", type=float, default=None,
                        help="cut longer videos to this (s); None = keep all")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG also logs why each skipped video was rejected")
    return parser


@dataclass(frozen=True)
class Settings:
    """Options that determine the extracted media (a media dir holds one setting only)."""

    fs: int
    fps: float
    size: int
    max_duration: Optional[float]
    min_duration: float

    def media_key(self) -> Dict[str, object]:
        return {"fs": self.fs, "fps": self.fps, "size": self.size, "max_duration": self.max_duration}


@dataclass(frozen=True)
class Outcome:
    """What became of one video: extracted (``result``) or rejected (``error``)."""

    item: VideoItem
    result: Optional[ExtractedVideo] = None
    error: Optional[VideoError] = None


def extract_item(item: VideoItem, media_dir: Path, settings: Settings) -> Outcome:
    """Extract one video into ``media_dir``; a rejection is returned, not raised (runs in a worker process)."""
    try:
        result = extract_video(
            item.path,
            media_dir / "audio" / f"{item.uid}.wav",
            media_dir / "frames" / item.uid,
            fs=settings.fs,
            fps=settings.fps,
            size=settings.size,
            min_duration=settings.min_duration,
            max_duration=settings.max_duration,
        )
    except VideoError as err:
        return Outcome(item, error=err)
    return Outcome(item, result=result)


def check_media_settings(media_dir: Path, settings: Settings) -> None:
    """Record the extraction options in ``media_dir`` or refuse to mix media made with other options."""
    path = media_dir / SETTINGS_FILE
    key = settings.media_key()
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != key:
            raise ValueError(
                f"{media_dir} holds media extracted with {old}, not {key}: use another --media_dir or remove it"
            )
        return
    media_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(key, sort_keys=True) + "\n")


def _table(rows: Iterable[Tuple[str, object]]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(rows))


def write_data_dir(data_dir: Path, outcomes: List[Outcome], order: Optional[List[Optional[str]]] = None) -> None:
    """Write the Kaldi-style files of one split (sorted by uid), its ``skipped.tsv`` and, with ``order`` (the uid
    of each row of the split's CSV), ``csv_order`` (removed without)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ok = [o for o in outcomes if o.result is not None]
    files = {
        "wav.scp": [(o.item.uid, o.result.wav) for o in ok],
        "frames.scp": [(o.item.uid, o.result.frames_dir) for o in ok],
        "utt2spk": [(o.item.uid, o.item.uid) for o in ok],
        "spk2utt": [(o.item.uid, o.item.uid) for o in ok],
        "utt2num_samples": [(o.item.uid, o.result.num_samples) for o in ok],
        "utt2num_frames": [(o.item.uid, o.result.num_frames) for o in ok],
        "utt2label": [(o.item.uid, label_words(o.item.label)) for o in ok],
    }
    for name, rows in files.items():
        write_text_atomic(data_dir / name, _table(rows))
    skipped = sorted((str(o.item.path), o.error.reason) for o in outcomes if o.error is not None)
    write_text_atomic(data_dir / "skipped.tsv", "".join(f"{p}\t{r}\n" for p, r in skipped))
    if order is not None:
        write_text_atomic(data_dir / ORDER_FILE, "".join(f"{uid or ORDER_MISSING}\n" for uid in order))
    elif (data_dir / ORDER_FILE).exists():
        (data_dir / ORDER_FILE).unlink()  # left by an earlier listing from CSV files


def summary_line(split: str, outcomes: List[Outcome]) -> str:
    """``train: 12 ok, skipped 1 corrupt, 0 no-audio, 2 no-frames, 1 silent, 0 too-short``."""
    reasons = Counter(o.error.reason for o in outcomes if o.error is not None)
    ok = sum(o.result is not None for o in outcomes)
    return f"{split}: {ok} ok, skipped " + ", ".join(f"{reasons[r]} {r}" for r in SKIP_REASONS)


def run_extraction(
    items: List[VideoItem],
    media_dir: Path,
    settings: Settings,
    pool: Optional[ProcessPoolExecutor],
    desc: str,
) -> Dict[str, Outcome]:
    """Extract ``items`` (in ``pool``, or in this process without one) behind a tqdm bar."""
    from tqdm import tqdm

    outcomes: Dict[str, Outcome] = {}
    with tqdm(total=len(items), desc=desc, unit="video") as bar:
        if pool is None:
            for item in items:
                outcomes[item.uid] = extract_item(item, media_dir, settings)
                bar.update()
        else:
            futures = [pool.submit(extract_item, item, media_dir, settings) for item in items]
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[outcome.item.uid] = outcome
                bar.update()
    return outcomes


def list_splits(args: argparse.Namespace) -> Splits:
    """The corpus's ``{split: items}`` for the chosen ``--corpus``, plus the ``--vggsound_root`` lists."""
    if args.corpus == "folder":
        splits = list_folder(args.root)
    elif args.corpus == "music":
        splits = list_music(args.root, args.seed, args.test_ratio, args.valid_ratio, args.splits_dir)
    else:
        return list_vggsound(args.root, args.splits_dir, args.labels_csv)
    if args.vggsound_root is not None:
        extra = list_vggsound(args.vggsound_root, args.vggsound_splits_dir, sets=args.vggsound_sets)
        add_splits(splits, extra, "vggsound_")
    return splits


def add_splits(splits: Splits, extra: Splits, prefix: str) -> None:
    """Add the splits of another listing as ``<prefix><split>``; a uid naming different files fails."""
    paths = {item.uid: item.path for items in splits.values() for item in items}
    for split, items in extra.items():
        for item in items:
            if paths.setdefault(item.uid, item.path) != item.path:
                raise ValueError(f"{item.path}: its id {item.uid} is already the id of {paths[item.uid]}")
        splits[prefix + split] = items
        if split in extra.orders:
            splits.orders[prefix + split] = extra.orders[split]


def check_args(args: argparse.Namespace) -> None:
    """Reject missing or impossible options before anything is listed or written."""
    if args.root is None:
        raise ValueError("--root is required (the directory holding the corpus videos)")
    if not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root}: directory not found")
    if args.nj < 1 or args.fs < 1 or args.fps <= 0 or args.size < 1:
        raise ValueError("--nj, --fs, --fps and --size must be positive")
    if args.max_duration is not None and args.max_duration < args.min_duration:
        raise ValueError("--max_duration must be >= --min_duration")
    if args.vggsound_root is not None:
        if args.corpus == "vggsound":
            raise ValueError("--vggsound_root: the vggsound corpus lists its evaluation sets itself")
        if args.vggsound_splits_dir is None:
            raise ValueError("--vggsound_root needs --vggsound_splits_dir (CLIPSep's clipsep/data/vggsound folder)")
        if not args.vggsound_root.is_dir():
            raise FileNotFoundError(f"--vggsound_root {args.vggsound_root}: directory not found")
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found on PATH (apt-get install ffmpeg)")


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s [prepare_videos] %(levelname)s: %(message)s"
    )
    try:
        check_args(args)
        splits = list_splits(args)
        output_dir = args.output_dir.resolve()
        media_dir = (args.media_dir or args.output_dir / "media").resolve()
        settings = Settings(args.fs, args.fps, args.size, args.max_duration, args.min_duration)
        check_media_settings(media_dir, settings)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"prepare_videos: error: {err}", file=sys.stderr)
        return 2

    order = split_order(list(splits))
    logging.info("%s corpus at %s: %s", args.corpus, args.root,
                 ", ".join(f"{s} {len(splits[s])}" for s in order))
    done: Dict[str, Outcome] = {}  # by uid: a video shared by several splits is extracted once
    pool = ProcessPoolExecutor(max_workers=args.nj) if args.nj > 1 else None
    try:
        for split in order:
            todo = [item for item in splits[split] if item.uid not in done]
            if todo:
                done.update(run_extraction(todo, media_dir, settings, pool, desc=split))
            # Same file, same outcome; the label is this split's (CSV rows of different splits may differ).
            outcomes = [replace(done[item.uid], item=item) for item in splits[split]]
            for o in outcomes:
                if o.error is not None:
                    logging.debug("%s: skipped %s", split, o.error)
            write_data_dir(output_dir / split, outcomes, splits.orders.get(split))
            reused = sum(o.result is not None and o.result.reused for o in outcomes)
            logging.info("%s (%d reused; skipped files in %s)", summary_line(split, outcomes), reused,
                         output_dir / split / "skipped.tsv")
            if not any(o.result is not None for o in outcomes):
                logging.warning("%s: no usable video, its data files are empty", split)
    except (RuntimeError, OSError) as err:
        print(f"prepare_videos: error: {err}", file=sys.stderr)
        return 1
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
