#!/usr/bin/env python3
"""The two scoring backends on the same estimates: equal values, and how much faster ``fast`` is.

Each ``--inf_scp`` (a system's ``spk1.scp``) is scored against the test mixtures twice, once per backend of
``espnet2.enh.clipsep.eval.scoring.bss_target`` (``museval``: the museval call; ``fast``: closed-form SDR and
fast_bss_eval's projections), in one process each, single-threaded, so that the times compare. Prints, per
metric, the largest absolute difference over every item of every system, the seconds per item of each backend
and their ratio, as one JSON object; the exit status is 1 if a difference reaches ``--tolerance``.

Example:
    python local/benchmark_scoring.py --mix_scp data/mini/test_mix/wav.scp \\
        --ref_scp data/mini/test_mix/spk1.scp --ref_scp data/mini/test_mix/spk2.scp \\
        --inf_scp exp/mini/enh_clipsep_nit/infer_test_text/spk1.scp
"""

import argparse
import json
import sys
import time
from pathlib import Path

from espnet2.enh.clipsep.eval.scoring import BSS_BACKENDS, PER_ITEM_COLUMNS, ItemJob, score_item
from espnet2.enh.clipsep.files.kaldi_table import read_table


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/benchmark_scoring.py",
        description="Scores estimates with both BSS-Eval backends; prints the largest difference and the speed-up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--mix_scp", type=Path, required=True, help="mixture wav.scp")
    parser.add_argument("--ref_scp", type=Path, action="append", required=True, help="target, then interferer scp")
    parser.add_argument("--inf_scp", type=Path, action="append", required=True, help="estimate scp, repeatable")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest difference allowed (dB)")
    return parser


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    if len(args.ref_scp) != 2:
        print("benchmark_scoring: error: --ref_scp must be given twice (target, interferer)", file=sys.stderr)
        return 2
    mix, s1, s2 = (read_table(p) for p in (args.mix_scp, *args.ref_scp))
    jobs = []
    for scp in args.inf_scp:
        est = read_table(scp)
        jobs += [(str(scp), k, mix[k], (s1[k], s2[k]), [est[k]]) for k in sorted(est)]
    results, seconds = {}, {}
    for backend in BSS_BACKENDS:
        start = time.perf_counter()
        results[backend] = [
            score_item(ItemJob(k, m, refs, infs, backend=backend)) for _, k, m, refs, infs in tqdm(jobs, desc=backend)
        ]
        seconds[backend] = time.perf_counter() - start
    metrics = PER_ITEM_COLUMNS[1:-1]
    diff = {name: 0.0 for name in metrics}
    for fast, ref in zip(results["fast"], results["museval"]):
        if (fast.skipped is None) != (ref.skipped is None):
            print(f"benchmark_scoring: error: {fast.key}: skipped by one backend only", file=sys.stderr)
            return 1
        for name in metrics if fast.skipped is None else ():
            diff[name] = max(diff[name], abs(fast.metrics[name] - ref.metrics[name]))
    report = dict(
        items=len(jobs), systems=len(args.inf_scp), max_abs_diff_db=diff,
        s_per_item={b: round(seconds[b] / len(jobs), 4) for b in BSS_BACKENDS},
        speedup=round(seconds["museval"] / seconds["fast"], 2), tolerance_db=args.tolerance,
    )  # fmt: skip
    print(json.dumps(report, indent=1))
    return 0 if max(diff.values()) < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
