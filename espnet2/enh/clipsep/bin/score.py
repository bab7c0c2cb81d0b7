"""Score separated audio against references (DESIGN §6) and write a score directory.

Writes ``per_item.tsv``, ``skipped.txt`` and ``summary.json`` (mean, SEM and median of each metric) to
``--output_dir``; the metric definitions live in :mod:`espnet2.enh.clipsep.eval.scoring`.

Examples:
    python -m espnet2.enh.clipsep.bin.score --mix_scp data/test_mix/wav.scp \\
        --ref_scp data/test_mix/spk1.scp --ref_scp data/test_mix/spk2.scp \\
        --inf_scp exp/X/infer_text/spk1.scp --output_dir exp/X/score_text --nj 2
    # PIT baseline: keep, per item, the output with the highest SDR against the target
    python -m espnet2.enh.clipsep.bin.score ... --inf_scp exp/pit/infer/spk1.scp \\
        --inf_scp exp/pit/infer/spk2.scp --oracle_select --output_dir exp/pit/score
    # Several systems on one test set: the mixture's scores are computed once and reused
    python -m espnet2.enh.clipsep.bin.score ... --mix_cache exp/score_mix_test.tsv
"""

import argparse
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet2.enh.clipsep.files.kaldi_table import read_table
from espnet2.enh.clipsep.eval.scoring import (
    BSS_BACKENDS,
    ItemJob,
    ItemResult,
    MixScores,
    build_summary,
    read_mix_cache,
    score_item,
    write_mix_cache,
    write_score_dir,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.score",
        description="BSS-Eval v4 (museval's window=inf values, target row) and SI-SDR scores of separated audio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--mix_scp", type=Path, required=True, help="mixture wav.scp ('<key> <audio>')")
    parser.add_argument(
        "--ref_scp", type=Path, action="append", required=True,
        help="reference scp, given twice: first the target (s1), then the interferer (s2)",
    )  # fmt: skip
    parser.add_argument(
        "--inf_scp", type=Path, action="append", required=True,
        help="estimate scp; several only with --oracle_select (one per model output)",
    )  # fmt: skip
    parser.add_argument(
        "--oracle_select", action="store_true",
        help="per item, keep the --inf_scp output with the highest SDR against the target (PIT baseline)",
    )  # fmt: skip
    parser.add_argument(
        "--oracle_complement", action="store_true",
        help="per item, keep the --inf_scp output or the mixture minus it, whichever has the higher SDR against "
             "the target (PIT scored as the reference scores it: output 1 and its complement mask)",
    )  # fmt: skip
    parser.add_argument("--output_dir", type=Path, required=True, help="where the score files go")
    parser.add_argument(
        "--allow_missing", action="store_true",
        help="score only keys present in every scp instead of failing on the first missing key",
    )  # fmt: skip
    parser.add_argument(
        "--mix_cache", type=Path, default=None,
        help="TSV of the mixtures' own scores (sdr_mix, si_sdr_mix), read if present and updated: items whose "
             "mixture and references are unchanged (same digest) reuse them instead of a second BSS-Eval call",
    )  # fmt: skip
    parser.add_argument(
        "--backend", default="fast", choices=BSS_BACKENDS,
        help="fast: museval's values from the closed-form SDR and fast_bss_eval's projections (SIR, SAR); "
             "museval: the museval call itself (slower; the reference the fast backend is tested against)",
    )  # fmt: skip
    parser.add_argument("--nj", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level"
    )
    return parser


def build_jobs(
    mix_scp: Path,
    ref_scps: Sequence[Path],
    inf_scps: Sequence[Path],
    oracle_select: bool,
    allow_missing: bool,
    mix_cache: Optional[MixScores] = None,
    backend: str = "fast",
    complement: bool = False,
) -> List[ItemJob]:
    """One :class:`ItemJob` per key, in sorted key order, after checking that the scps list the same keys.

    Raises:
        ValueError: on the first key (sorted) that one of the scps lacks, unless ``allow_missing``; then only
            keys present in every scp are kept (an error if none are).
    """
    if len(ref_scps) != 2:
        raise ValueError(f"--ref_scp must be given twice (target, interferer), got {len(ref_scps)}")
    if complement and (oracle_select or len(inf_scps) != 1):
        raise ValueError("--oracle_complement takes one --inf_scp (output 1) and no --oracle_select")
    if len(inf_scps) > 1 and not oracle_select:
        raise ValueError(f"{len(inf_scps)} --inf_scp given: several estimates need --oracle_select")
    files = [mix_scp, *ref_scps, *inf_scps]
    tables = [read_table(p) for p in files]
    every = sorted(set().union(*tables))
    common = [k for k in every if all(k in t for t in tables)]
    if len(common) < len(every):
        key = next(k for k in every if k not in common)
        path = next(p for p, t in zip(files, tables) if key not in t)
        if not allow_missing:
            raise ValueError(f"key {key} is missing from {path} (use --allow_missing to score the common keys)")
        logging.warning("%d of %d keys missing from some scp (first: %s in %s); scoring %d common keys",
                        len(every) - len(common), len(every), key, path, len(common))
    if not common:
        raise ValueError("no key is present in every scp")
    mix, s1, s2, *infs = tables
    cache = mix_cache or {}
    return [
        ItemJob(k, mix[k], (s1[k], s2[k]), [t[k] for t in infs], oracle_select, cache.get(k), backend, complement)
        for k in common
    ]


def _one_thread() -> None:
    # nj workers share the machine: one BLAS / torch thread each.
    import torch

    torch.set_num_threads(1)


def run_jobs(jobs: Sequence[ItemJob], nj: int) -> List[ItemResult]:
    """Scores ``jobs`` with ``nj`` worker processes (in-process for ``nj == 1``) behind a tqdm bar."""
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc="score", unit="item")
    if nj <= 1:
        return [score_item(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=nj, initializer=_one_thread) as pool:
        return list(tqdm(pool.map(score_item, jobs, chunksize=max(1, min(8, len(jobs) // (4 * nj)))), **bar))


def _fmt(stat: Dict[str, Optional[float]]) -> str:
    if stat["mean"] is None:
        return "n/a"
    sem = "n/a" if stat["sem"] is None else f"{stat['sem']:.2f}"
    return f"{stat['mean']:.2f} ± {sem} (median {stat['median']:.2f})"


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [score] %(levelname)s: %(message)s")
    try:
        if args.nj < 1:
            raise ValueError("--nj must be >= 1")
        cache = read_mix_cache(args.mix_cache) if args.mix_cache is not None else None
        jobs = build_jobs(
            args.mix_scp, args.ref_scp, args.inf_scp, args.oracle_select, args.allow_missing, cache, args.backend,
            args.oracle_complement,
        )
        results = run_jobs(jobs, args.nj)
        summary = build_summary(
            results,
            settings=dict(
                mix_scp=str(args.mix_scp), ref_scp=[str(p) for p in args.ref_scp],
                inf_scp=[str(p) for p in args.inf_scp], oracle_select=args.oracle_select,
                oracle_complement=args.oracle_complement,
                metric="museval.metrics.bss_eval(window=inf), target row; SI-SDR zero-mean",
                backend=args.backend,
            ),
        )  # fmt: skip
        write_score_dir(args.output_dir, results, summary)
        if args.mix_cache is not None:
            reused = sum(
                r.mix_digest is not None and j.mix_cached is not None and j.mix_cached[0] == r.mix_digest
                for j, r in zip(jobs, results)
            )
            write_mix_cache(args.mix_cache, cache, results)
            logging.info("mixture scores: %d of %d reused from %s", reused, len(jobs), args.mix_cache)
        if summary["mixture_model"]["half"]:
            logging.warning(
                "%d items have mix = (s1 + s2) / 2 with unscaled references: museval's SDR is gain-sensitive, so an "
                "estimate at the target's mixture level scores at most 6.02 dB", summary["mixture_model"]["half"]
            )  # fmt: skip
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"score: error: {err}", file=sys.stderr)
        return 2
    logging.info(
        "%s: n=%d skipped=%d | SDR %s | SDRi %s | SI-SDRi %s", args.output_dir, summary["n"], summary["n_skipped"],
        _fmt(summary["sdr"]), _fmt(summary["sdri"]), _fmt(summary["si_sdri"]),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
