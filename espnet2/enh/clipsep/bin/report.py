"""Collect score directories into RESULTS.md and one HTML listening page (queries, players, figures).

Examples:
    python -m espnet2.enh.clipsep.bin.report \\
        --result "CLIPSep-NIT|text|exp/nit/score_text|exp/nit/infer_text/spk1.scp" \\
        --result "CLIPSep-NIT|image|exp/nit/score_image|exp/nit/infer_image/spk1.scp" \\
        --result "PIT|oracle|exp/pit/score|exp/pit/infer/spk1.scp,exp/pit/infer/spk2.scp" \\
        --mix_scp data/test_mix/wav.scp --ref_scp data/test_mix/spk1.scp --label_file data/test_mix/utt2label \\
        --query_text data/test_mix/utt2label --query_image exp/report/query_frames.scp \\
        --timings exp/timings.tsv --output RESULTS.md --html_dir exp/report
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet2.enh.clipsep.eval.report import build_report, load_result, parse_result


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.report",
        description="RESULTS.md table and an HTML listening page (queries, players, spectrograms, per-class "
        "table, SDRi distribution) from score directories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--result", action="append", required=True,
        help="SYSTEM|QUERY|SCORE_DIR|INF_SCP, repeatable; INF_SCP lists every output, comma-separated, for "
        "results scored with --oracle_select",
    )  # fmt: skip
    parser.add_argument("--mix_scp", type=Path, required=True, help="mixture wav.scp")
    parser.add_argument("--ref_scp", type=Path, required=True, help="target reference scp (spk1.scp)")
    parser.add_argument("--label_file", type=Path, default=None,
                        help="utt2label ('<key> <class>'): the per-class table and examples")
    parser.add_argument("--query_text", type=Path, default=None, help="'<key> <text query>' shown with each example")
    parser.add_argument("--query_image", type=Path, default=None,
                        help="'<key> <picture, or directory of frames (the middle one is shown)>' of each image query")
    parser.add_argument("--timings", type=Path, default=None, help="TSV 'stage<TAB>name<TAB>seconds'")
    parser.add_argument(
        "--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
        help="SYSTEM|QUERY names of two results: report the paired per-item difference A - B with a 90 %% "
             "bootstrap interval (repeatable)",
    )  # fmt: skip
    parser.add_argument("--gauge", type=Path, default=None, help="speed-gauge JSON (espnet2.enh.clipsep.bin.gauge)")
    parser.add_argument(
        "--step_time", action="append", default=[],
        help="SYSTEM|SECONDS_PER_STEP|STEPS of a training, for the speed-gauge section (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--retrieval", nargs=3, type=Path, default=None, metavar=("IMAGE_SCP", "TEXT_SCP", "UTT2LABEL"),
        help="CLIP embeddings of the test clips (image, label text) and their labels: report the CLIP model's "
             "zero-shot top-1 and text-to-image R-precision",
    )  # fmt: skip
    parser.add_argument("--title", default="CLIPSep separation results", help="report title")
    parser.add_argument("--per_class", type=int, default=1,
                        help="examples per class on the page, besides each system's best, median and worst SDRi")
    parser.add_argument("--output", type=Path, default=Path("RESULTS.md"), help="Markdown file to write")
    parser.add_argument("--html_dir", type=Path, required=True, help="directory for index.html, audio/, img/")
    parser.add_argument(
        "--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level"
    )
    return parser


def parse_step_time(spec: str):
    """``SYSTEM|SECONDS_PER_STEP|STEPS`` -> ``(system, seconds, steps)``."""
    parts = spec.split("|")
    try:
        if len(parts) != 3 or not parts[0].strip():
            raise ValueError
        return parts[0].strip(), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"--step_time {spec!r}: expected SYSTEM|SECONDS_PER_STEP|STEPS") from None


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [report] %(levelname)s: %(message)s")
    try:
        if args.per_class < 0:
            raise ValueError("--per_class must be >= 0")
        results = [load_result(parse_result(spec)) for spec in args.result]
        step_times = [parse_step_time(spec) for spec in args.step_time]
        build_report(
            results, args.mix_scp, args.ref_scp, args.output, args.html_dir, args.title,
            per_class=args.per_class, label_file=args.label_file, timings=args.timings,
            query_text=args.query_text, query_image=args.query_image,
            comparisons=[tuple(pair) for pair in args.compare], gauge=args.gauge, step_times=step_times,
            retrieval=tuple(args.retrieval) if args.retrieval else None,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    logging.info("wrote %s and %s", args.output, args.html_dir / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
