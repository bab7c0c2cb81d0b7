"""Measure the machine-speed gauge (a fixed CPU workload) and write it as JSON for the results reports.

Examples:
    python -m espnet2.enh.clipsep.bin.gauge --output exp/mini/gauge.json
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet2.enh.clipsep.eval.gauge import GAUGE_WORKLOAD, measure_gauge, write_gauge


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.gauge",
        description=f"Time the speed gauge ({GAUGE_WORKLOAD}); the median in ms is the machine's reading.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default: print only)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs (after 3 warm-up runs)")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    if args.repeats < 1:
        print("gauge: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    reading = measure_gauge(repeats=args.repeats)
    if args.output is not None:
        write_gauge(args.output, reading)
    print(json.dumps(reading))
    return 0


if __name__ == "__main__":
    sys.exit(main())
