"""Write RESULTS.md laid out as the CLIPSep paper's Tables 2 and 3, from score directories of several test sets.

Examples:
    python -m espnet2.enh.clipsep.bin.results_table --set test=Clean --set test_plus=+ \\
        --row "test|CLIPSep-NIT|image|text|exp/nit/infer_test_text/score" \\
        --row "test_plus|CLIPSep-NIT|image|text|exp/nit/infer_test_plus_text/score" \\
        --not_run "BERTSep|text (BERT)|text (BERT)|no BERT weights" \\
        --detail "Clean test set=exp/report_test/results.md" --timings exp/timings.tsv --output RESULTS.md
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet2.enh.clipsep.bin.report import parse_step_time
from espnet2.enh.clipsep.eval.gauge import read_gauge
from espnet2.enh.clipsep.eval.paper_table import parse_entry, parse_not_run, write_paper_results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.results_table",
        description="RESULTS.md as the CLIPSep paper's Tables 2 and 3: a row per system and test query, per "
        "test set the mean SDR ± SEM, SDRi and median SDR; the NIT - CLIPSep paired difference; each set's details.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--set", action="append", required=True, metavar="NAME=LABEL",
                        help="a test set and its column label, in column order (repeatable)")
    parser.add_argument("--row", action="append", default=[], metavar="SET|SYSTEM|TRAIN_Q|TEST_Q|SCORE_DIR",
                        help="a scored result (repeatable)")
    parser.add_argument("--not_run", action="append", default=[], metavar="SYSTEM|TRAIN_Q|TEST_Q|REASON",
                        help="a row the run did not produce, listed with its reason (repeatable)")
    parser.add_argument("--detail", action="append", default=[], metavar="LABEL=MARKDOWN",
                        help="a per-set report (espnet2.enh.clipsep.bin.report) appended as a section (repeatable)")
    parser.add_argument("--claim", nargs=2, default=["CLIPSep-NIT|text", "CLIPSep|text"], metavar=("A", "B"),
                        help="SYSTEM|TEST_Q pair whose paired difference A - B is the paper's claim")
    parser.add_argument("--timings", type=Path, default=None, help="TSV 'stage<TAB>name<TAB>seconds'")
    parser.add_argument("--gauge", type=Path, default=None, help="speed-gauge JSON (espnet2.enh.clipsep.bin.gauge)")
    parser.add_argument("--step_time", action="append", default=[], metavar="SYSTEM|SECONDS_PER_STEP|STEPS",
                        help="a training's speed, for the speed-gauge section (repeatable)")
    parser.add_argument("--title", default="CLIPSep separation results", help="title")
    parser.add_argument("--output", type=Path, default=Path("RESULTS.md"), help="Markdown file to write")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _pair(spec: str, option: str):
    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(f"{option} {spec!r}: expected NAME=VALUE")
    return name.strip(), value.strip()


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [results_table] %(levelname)s: %(message)s")
    try:
        sets = [_pair(s, "--set") for s in args.set]
        names = {name for name, _ in sets}
        entries = [parse_entry(spec) for spec in args.row]
        for e in entries:
            if e.test_set not in names:
                raise ValueError(f"--row for set {e.test_set!r}, which no --set names ({', '.join(sorted(names))})")
        entries += [parse_not_run(spec) for spec in args.not_run]
        claim = tuple(tuple(p.rsplit("|", 1)) for p in args.claim)
        if any(len(p) != 2 for p in claim):
            raise ValueError(f"--claim {args.claim}: expected SYSTEM|TEST_Q SYSTEM|TEST_Q")
        write_paper_results(
            args.output, args.title, entries, sets,
            details=[(label, Path(path)) for label, path in (_pair(d, "--detail") for d in args.detail)],
            claim=claim, timings=args.timings, gauge=read_gauge(args.gauge) if args.gauge else None,
            step_times=[parse_step_time(s) for s in args.step_time],
        )  # fmt: skip
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"results_table: error: {err}", file=sys.stderr)
        return 2
    logging.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
