"""Make fixed evaluation mixtures from a clip directory (validation and test sets), paired as CLIPSep pairs them.

Without ``--interferer_dir`` item i draws its interferers from the same list (``random.seed(i)``, then
``random.sample`` of the other items: the clean sets); with it, from that second list (``random.seed(i)``, then
``random.randint``: the "+" sets, ``evaluate.py -t TARGETS -t2 INTERFERERS``). See ``local/mixtures.py``.

Examples:
    # MUSIC-Clean, the plain VGGSound test set (interferers from the same list)
    python local/make_mixtures.py --source_dir data/test --output_dir data/test_mix \\
        --query query=dump/clip/test/image.scp --query text_query=dump/clip/test/text.scp
    # MUSIC+: MUSIC test targets, VGGSound test-good-no-music interferers
    python local/make_mixtures.py --source_dir data/music/test \\
        --interferer_dir data/music/vggsound_test_good_no_music --output_dir data/music/test_plus_mix \\
        --query text_query=dump/music/clip/test/text.scp
"""

import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/make_mixtures.py",
        description="Fixed mixtures for validation/test: item i draws its interferers with random.seed(i), "
        "from the same list (random.sample) or from --interferer_dir (random.randint), as CLIPSep does.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source_dir", type=Path, required=True,
                        help="clip dir with wav.scp [+ utt2label, csv_order]: the targets")
    parser.add_argument("--output_dir", type=Path, required=True, help="mixture dir to write")
    parser.add_argument(
        "--interferer_dir", type=Path, default=None,
        help="clip dir (wav.scp [+ utt2label, csv_order]) to draw the interferers from (the reference's second "
        "list, evaluate.py -t2); None = from --source_dir",
    )
    parser.add_argument(
        "--query", action="append", default=[], metavar="NAME=SCP",
        help="per-clip query scp, written per source as NAME1.scp, NAME2.scp, ... (repeatable); it must cover "
        "the targets; with --interferer_dir NAME2.scp is written only when it covers the drawn interferers too",
    )
    parser.add_argument("--num_spk", type=int, default=2,
                        help="sources drawn per mixture (with --interferer_dir the interferers are averaged into "
                        "spk2, as the reference does)")
    parser.add_argument("--segment", type=int, default=65535, help="max samples per mixture (CLIPSep: 65535)")
    parser.add_argument(
        "--distinct_labels", type=lambda s: s.lower() in ("1", "true", "yes"), default=False,
        help="with utt2label: never mix two clips of the same label (our rule; the reference has none)",
    )
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [mixtures] %(levelname)s: %(message)s")
    try:
        from mixtures import make_mixtures

        queries = {}
        for item in args.query:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--query {item!r}: expected NAME=SCP")
            queries[name] = Path(path)
        if args.num_spk < 2 or args.segment < 1:
            raise ValueError("--num_spk must be >= 2 and --segment >= 1")
        mixtures = make_mixtures(
            args.source_dir, args.output_dir, queries, args.num_spk, args.segment, args.distinct_labels,
            args.interferer_dir,
        )
        logging.info("wrote %d mixtures to %s", len(mixtures), args.output_dir)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"mixtures: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
