"""Store each clip's frames as one ``(F, S, S, 3)`` uint8 npy file: the queries of SOP (``query_type: frames``).

Reads a Kaldi-style ``frames.scp`` (``<key> <frames directory>`` per line, the directory holding the clip's
1-fps frames named in time order; a single image file also works, as a one-frame clip), resizes every frame so
that its shorter side is ``--size`` (bicubic, as Sound of Pixels' evaluation transform) and crops the centre
``--size`` x ``--size`` square, and writes ``<output_dir>/data/<name>/<key>.npy`` plus ``<output_dir>/<name>.scp``.

For training write every frame (the mixing preprocessor picks a random centre frame and stacks the 3 around it);
for validation and test sets, ``--center_frames 3`` writes only the 3 frames around the clip's middle, the same
frames the CLIP image queries use. A stored frame costs ``3 * size**2`` bytes (150 kB at 224, 6.9 kB at 48).

Every npy file is written under a temporary name and renamed; the scp is replaced atomically and lists only
complete files, also after an error. Keys already in the scp with a file of the requested size are skipped, so an
interrupted run resumes.

Examples:
    python -m espnet2.enh.clipsep.bin.dump_frames --frames_scp data/train/frames.scp \\
        --output_dir dump/frames/train --size 224 --nj 8
    python -m espnet2.enh.clipsep.bin.dump_frames --frames_scp data/test/frames.scp \\
        --output_dir dump/frames/test --size 224 --center_frames 3
"""

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from espnet2.enh.clipsep.clip.image_query import IMAGE_SUFFIXES, center_frames, list_frames, load_image
from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic

__all__ = ["collect_clips", "dump_clip", "load_frames", "main"]

Job = Tuple[str, List[Path], Path, int]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.dump_frames",
        description="Store each clip's frames, resized, as a (F, S, S, 3) uint8 npy file and an scp (SOP queries).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--frames_scp", type=Path, required=True,
                        help="Kaldi-style file: '<key> <frames directory or image file>' per line")
    parser.add_argument("--output_dir", type=Path, required=True, help="where <name>.scp and data/<name>/ go")
    parser.add_argument("--name", default="frames", help="scp name")
    parser.add_argument("--size", type=int, default=224, help="side S of the stored square frames")
    parser.add_argument("--center_frames", type=int, default=None, metavar="N",
                        help="store only the N frames around each clip's middle (valid/test: 3); default: all")
    parser.add_argument("--nj", type=int, default=1, help="worker processes")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def load_frames(paths: Sequence[Path], size: int) -> np.ndarray:
    """Frames resized (shorter side ``size``, bicubic) and centre-cropped to ``size`` x ``size``.

    Returns:
        ``(len(paths), size, size, 3)`` uint8 RGB.

    Raises:
        ValueError / FileNotFoundError: one line naming an unreadable or missing image.
    """
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        img = load_image(path)
        w, h = img.size
        scale = size / min(w, h)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((rw, rh), Image.BICUBIC)
        left, top = (rw - size) // 2, (rh - size) // 2
        out[i] = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return out


def collect_clips(frames_scp: Path, center: Optional[int]) -> List[Tuple[str, List[Path]]]:
    """``(key, frame paths in time order)`` per scp line, checked before anything is written."""
    clips = []
    for key, value in read_table(frames_scp).items():
        path = Path(value)
        if path.is_dir():
            frames = list_frames(path)
            if not frames:
                raise ValueError(f"{path}: no frames (expected {', '.join(IMAGE_SUFFIXES)} files) for {key}")
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            frames = [path]
        else:
            raise FileNotFoundError(f"{frames_scp}: {key}: {path} is neither a frames directory nor an image")
        clips.append((key, center_frames(frames, center) if center else frames))
    return clips


def dump_clip(job: Job) -> Tuple[str, str, int]:
    """Write one clip's npy file atomically; returns ``(key, path, number of frames)``."""
    key, paths, target, size = job
    frames = load_frames(paths, size)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, frames)
    os.replace(tmp, target)
    return key, str(target), len(frames)


def _is_done(path: Optional[str], size: int) -> bool:
    if path is None or not Path(path).is_file():
        return False
    try:
        stored = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return stored.dtype == np.uint8 and stored.ndim == 4 and stored.shape[1:] == (size, size, 3)


def _run(jobs: List[Job], nj: int) -> Iterator[Tuple[str, str, int]]:
    if nj == 1:
        yield from map(dump_clip, jobs)
        return
    with ProcessPoolExecutor(max_workers=nj) as pool:
        yield from pool.map(dump_clip, jobs, chunksize=max(1, min(16, len(jobs) // (4 * nj))))


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [dump_frames] %(levelname)s: %(message)s")
    scp = args.output_dir / f"{args.name}.scp"
    table = None
    try:
        from tqdm import tqdm

        if args.size < 1 or args.nj < 1 or (args.center_frames is not None and args.center_frames < 1):
            raise ValueError("--size, --nj and --center_frames must be >= 1")
        clips = collect_clips(args.frames_scp, args.center_frames)
        data_dir = args.output_dir / "data" / args.name
        data_dir.mkdir(parents=True, exist_ok=True)
        table = read_table(scp) if scp.is_file() else {}
        todo = [(k, p, data_dir / f"{k}.npy", args.size) for k, p in clips if not _is_done(table.get(k), args.size)]
        logging.info("%d clips, %d already in %s, %d to write (%s frames, %d x %d)", len(clips),
                     len(clips) - len(todo), scp, len(todo),
                     f"{args.center_frames} centre" if args.center_frames else "all", args.size, args.size)
        num_frames = 0
        for key, path, n in tqdm(_run(todo, args.nj), total=len(todo), desc=f"dump_frames {args.name}",
                                 unit="clip"):
            table[key] = path
            num_frames += n
        logging.info("wrote %d frames of %d clips; %s lists %d", num_frames, len(todo), scp, len(table))
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"dump_frames: error: {err}", file=sys.stderr)
        return 2
    finally:
        if table is not None:
            write_table_atomic(scp, table)  # complete files only, also after an error
    return 0


if __name__ == "__main__":
    sys.exit(main())
