"""Generate the offline mini "video" corpus (mp4 clips of emoji pictures + instrument / effect sounds).

It stands in for MUSIC / VGGSound where no real dataset is available: a later recipe stage ingests the mp4
files with ffmpeg exactly as it ingests real videos. A finished directory holds ``.done``; running again with
the same options does nothing, with different options it fails unless ``--overwrite`` is given.

Examples:
    python local/make_mini_corpus.py --output_dir downloads/mini_corpus
    python local/make_mini_corpus.py --output_dir /tmp/tiny --classes piano drums canary \\
        --num_train 2 --num_valid 1 --num_test 1 --duration 2 --num_pretrain_images 5
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from mini_corpus import CLASSES, MiniCorpusConfig, MiniCorpusError, make_mini_corpus


def get_parser() -> argparse.ArgumentParser:
    defaults = MiniCorpusConfig()
    parser = argparse.ArgumentParser(
        prog="python local/make_mini_corpus.py",
        description="Generate the offline, deterministic mini video corpus (stand-in for MUSIC / VGGSound).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="destination directory")
    parser.add_argument("--classes", nargs="+", default=list(defaults.classes), metavar="NAME",
                        help=f"sound classes, from: {' '.join(c.name for c in CLASSES)}")
    parser.add_argument("--num_train", type=int, default=defaults.num_train, help="training clips per class")
    parser.add_argument("--num_valid", type=int, default=defaults.num_valid, help="validation clips per class")
    parser.add_argument("--num_test", type=int, default=defaults.num_test, help="test clips per class (clean)")
    parser.add_argument("--num_noisy", type=int, default=defaults.num_noisy,
                        help="clips of the noisy interferer pool (videos/noisy: off-screen speech and effects)")
    parser.add_argument("--num_pretrain_images", type=int, default=defaults.num_pretrain_images,
                        help="augmented emoji images per class for the CLIP stand-in pretraining")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="clip length in seconds")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="video frames per second")
    parser.add_argument("--image_size", type=int, default=defaults.image_size, help="frame width and height")
    parser.add_argument("--offscreen_prob", type=float, default=defaults.offscreen_prob,
                        help="probability that a training / validation clip gets an off-screen source")
    parser.add_argument("--offscreen_db", type=float, nargs=2, default=list(defaults.offscreen_db),
                        metavar=("LOW", "HIGH"), help="off-screen source level relative to the on-screen one (dB)")
    parser.add_argument("--audio_codec", choices=("aac", "alac"), default=defaults.audio_codec,
                        help="mp4 audio codec (alac is lossless)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument("--nj", type=int, default=2, help="worker processes")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever --output_dir holds")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [make_mini_corpus] %(levelname)s: %(message)s")
    config = MiniCorpusConfig(
        classes=tuple(args.classes),
        num_train=args.num_train,
        num_valid=args.num_valid,
        num_test=args.num_test,
        num_noisy=args.num_noisy,
        num_pretrain_images=args.num_pretrain_images,
        duration=args.duration,
        fps=args.fps,
        image_size=args.image_size,
        offscreen_prob=args.offscreen_prob,
        offscreen_db=tuple(args.offscreen_db),
        audio_codec=args.audio_codec,
        seed=args.seed,
    )
    try:
        make_mini_corpus(args.output_dir, config, nj=args.nj, overwrite=args.overwrite)
    except (MiniCorpusError, OSError) as err:
        print(f"make_mini_corpus: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("make_mini_corpus: interrupted (the partial output was removed)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
