#!/usr/bin/env python3
"""Quality and time per sample of CLIPSonic's samplers vs steps, and a guidance sweep (not a test).

Grid (default): DDPM at 1,000 steps (the paper's sampler) vs DDIM and DPM-Solver++(2M) at 10/25/50 steps, all
at guidance ``--guidance``; then the guidance sweep w in {0, 1, 1.5, 3, 5} with ``--sweep_sampler`` at
``--sweep_steps`` steps. Goal: DPM-Solver++ at <= 25 steps >= 40x faster than DDPM-1000 with probe-FD within
10 %. Prints a markdown table (sampler, steps, s/sample, speed-up vs DDPM-1000, relevance, probe-FD, and the same
two on the mel before the vocoder) and the goal check (on the audio, and again on the mel: what the sampler
itself changes, without the vocoder's own errors; each probe-FD change with its 90 % interval from a paired
bootstrap over the queries, since a dozen clips cannot settle a 10 % threshold on their own); writes
``samplers.png`` (probe-FD and s/sample vs steps), ``guidance.png`` (probe-FD and relevance vs w),
``results.json`` and ``results.md`` to ``--out_dir``. The PNGs are drawn with matplotlib
(:func:`espnet2.enh.clipsep.eval.figures.line_figure`, the report pages' figure module).

Queries are cached CLIP embeddings (``--queries``: npy/kaldi_ark scp, e.g. the test set's ``image.scp`` for IQ,
or ``text.scp`` with ``--mode zs|pd``); each query's class is ``utt2label`` of its key (its text for
``text.scp`` keys that are labels), scored by the probe classifier (``bin/probe.py``): relevance = accuracy of
the probe against the query's class; probe-FD = Fréchet distance in the probe's embedding space between the
generated clips and ``--references`` (a ``wav.scp``). probe-FD is *not* FAD. The mel columns score the
de-normalised log-mel each clip was vocoded from (as ``bin/probe.py evaluate --gen_mel_scp`` does).

s/sample: wall time of generating a batch of up to ``--batch_size`` queries at once (prior for PD, mel sampling
with one network call per step for the batch, then the vocoder or Griffin-Lim per clip) divided by its size,
median over the timed samples, after a warm-up; CUDA is synchronised. Every sampler is timed the same way, so
the speed-ups compare like with like. ``--jobs N`` runs N processes at once, query i in job
i mod N (same seeds, so the same samples and figures; on CPU each job has ``--threads``, default 1).
``--shard I/N:PATH`` runs one such job on its own and writes its records to PATH; ``--merge`` makes the tables and
plots from the N files (the tts1 recipe runs the shards beside its other generation jobs). A setting that repeats
an earlier one (the sweep's point at the grid's ``--guidance``) reuses its samples and times.
``--model paper`` (or any training YAML via ``--config``) times the paper-size U-Net with random weights: mel
sampling only, no quality ("n/a").

Examples:
    python local/benchmark_samplers.py --model exp/mini/tts_clipsonic/packed.zip --probe exp/mini/probe/probe.pt \\
        --queries dump/mini/clip/test/image.scp --utt2label data/mini/test/utt2label \\
        --references data/mini/test/wav.scp --out_dir exp/mini/benchmark_samplers
    python local/benchmark_samplers.py --model paper --grid ddpm:1000 dpmpp:10,25 --num_timed 2 --out_dir /tmp/b

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023. C. Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models", 2022. J. Song et al., "Denoising Diffusion Implicit Models", ICLR 2021.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "tuning" / "train_clipsonic.yaml"
DEFAULT_GRID = ("ddpm:1000", "ddim:10,25,50", "dpmpp:10,25,50")
DEFAULT_GUIDANCES = (0.0, 1.0, 1.5, 3.0, 5.0)
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM-Solver++"}
GOAL_SPEEDUP, GOAL_FD_REL = 40.0, 0.10


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/benchmark_samplers.py",
        description="Sampler quality/time vs steps and a guidance sweep for a CLIPSonic model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="packed zip / exp dir / tag, or 'paper' (random, timing)")
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="training YAML for --model paper")
    parser.add_argument("--probe", type=Path, default=None, help="probe classifier (bin/probe.py) for quality")
    parser.add_argument("--queries", type=Path, default=None, help="scp of CLIP embeddings (image.scp or text.scp)")
    parser.add_argument("--mode", choices=("iq", "zs", "pd"), default="iq", help="what the --queries are")
    parser.add_argument("--utt2label", type=Path, default=None, help="key -> class name of each query")
    parser.add_argument("--references", type=Path, default=None, help="wav.scp of real clips for probe-FD")
    parser.add_argument("--num_queries", type=int, default=32, help="queries used (first N of --queries)")
    parser.add_argument("--max_per_class", type=int, default=0,
                        help="with --utt2label: the first N queries of every class (sorted keys), then --num_queries")
    parser.add_argument("--num_timed", type=int, default=0,
                        help="samples timed per setting (0: every query; with a probe all queries are sampled anyway)")
    parser.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID), help="sampler:steps[,steps...]")
    parser.add_argument("--guidance", type=float, default=1.5, help="guidance weight of the sampler grid")
    parser.add_argument("--guidances", type=float, nargs="+", default=list(DEFAULT_GUIDANCES), help="sweep")
    parser.add_argument("--sweep_sampler", default="dpmpp", help="sampler of the guidance sweep")
    parser.add_argument("--sweep_steps", type=int, default=25, help="steps of the guidance sweep")
    parser.add_argument("--num_frames", type=int, default=None, help="mel frames (default: inference_frames)")
    parser.add_argument("--seed", type=int, default=0, help="sample of query i uses seed + i")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="queries sampled at once per job (each from its own seed: the same samples, up to float rounding)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 per job with --jobs > 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes sharing the queries (query i in job i mod N); the figures are the same")
    parser.add_argument("--shard", default=None, metavar="I/N:PATH",
                        help="sample and score only the queries i with i mod N = I and write their records to PATH"
                             " (.npz) for --merge; the N shards may run anywhere, e.g. side by side or as cluster jobs")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="PATH",
                        help="the tables and plots from the records of shards 0..N-1 (--shard I/N:PATH, same options)")
    parser.add_argument("--prior", type=Path, default=None, help="prior for --mode pd (default: beside the model)")
    parser.add_argument("--out_dir", type=Path, required=True, help="where the PNGs, results.json/.md go")
    return parser


# ================================================================================================
# Table, goal check, plots (pure helpers)
# ================================================================================================
def parse_grid(items: Sequence[str]) -> List[Tuple[str, int]]:
    """``["ddpm:1000", "ddim:10,25"]`` -> ``[("ddpm", 1000), ("ddim", 10), ("ddim", 25)]``."""
    out = []
    for item in items:
        name, _, steps = item.partition(":")
        if name not in SAMPLER_NAMES or not steps:
            raise ValueError(f"--grid {item!r}: expected sampler:steps[,steps] with sampler in {sorted(SAMPLER_NAMES)}")
        for s in steps.split(","):
            if not s.strip().isdigit() or int(s) < 1:
                raise ValueError(f"--grid {item!r}: steps must be positive integers")
            out.append((name, int(s)))
    return out


def _fmt(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def baseline_seconds(rows: Sequence[Dict]) -> Optional[float]:
    """s/sample of DDPM at 1,000 steps among ``rows`` (None if not run)."""
    return next((r["seconds"] for r in rows if r["sampler"] == "ddpm" and r["steps"] == 1000), None)


def markdown_table(rows: Sequence[Dict], first: str = "sampler", baseline: Optional[float] = None) -> str:
    """Rows ``{sampler, steps, guidance, seconds, relevance, probe_fd[, mel_relevance, mel_probe_fd]}`` as markdown.

    ``first="guidance"`` puts the guidance weight in the first column (the sweep's table). The speed-up is
    against ``baseline`` s/sample, by default the DDPM-1000 row of ``rows``. The two mel columns are there when
    any row has them.
    """
    base = baseline_seconds(rows) if baseline is None else baseline
    mel = any(r.get("mel_probe_fd") is not None for r in rows)
    head = ["w" if first == "guidance" else "sampler", "sampler" if first == "guidance" else "steps",
            "steps" if first == "guidance" else "w", "s/sample", "speed-up vs DDPM-1000", "relevance", "probe-FD"]  # fmt: skip
    head += ["mel relevance", "mel probe-FD"] if mel else []
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        name = SAMPLER_NAMES.get(r["sampler"], r["sampler"])
        speed = None if base is None or not r["seconds"] else base / r["seconds"]
        cols = [f"{r['guidance']:g}", name, str(r["steps"])] if first == "guidance" else [name, str(r["steps"]), f"{r['guidance']:g}"]
        cols += [_fmt(r["seconds"], ".4f"), "n/a" if speed is None else f"{speed:.1f}x",
                 _fmt(r.get("relevance"), ".3f"), _fmt(r.get("probe_fd"), ".3f")]  # fmt: skip
        cols += [_fmt(r.get("mel_relevance"), ".3f"), _fmt(r.get("mel_probe_fd"), ".3f")] if mel else []
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _goal_parts(base: Dict, fast: Sequence[Dict], key: str) -> Tuple[bool, bool, List[str]]:
    """(met, quality known, one text per fast row) of the goal with the probe-FD in ``key``."""
    parts, met = [], False
    for r in sorted(fast, key=lambda r: r["steps"]):
        speed = base["seconds"] / r["seconds"]
        fd_ok = None
        if base.get(key) is not None and r.get(key) is not None:
            rel = (r[key] - base[key]) / max(base[key], 1e-12)
            fd_ok = rel <= GOAL_FD_REL
            ci = r.get(f"{key}_ci")
            ci = "" if ci is None else f" (90 % interval {100 * ci[0]:+.1f}..{100 * ci[1]:+.1f} %)"
            parts.append(f"{r['steps']} steps {speed:.1f}x, probe-FD {100 * rel:+.1f} %{ci}")
        else:
            parts.append(f"{r['steps']} steps {speed:.1f}x, probe-FD n/a")
        met = met or (speed >= GOAL_SPEEDUP and fd_ok is not False and fd_ok is not None)
    return met, any(r.get(key) is not None for r in fast), parts


def goal_check(rows: Sequence[Dict]) -> str:
    """One line on the goal: DPM-Solver++ at <= 25 steps >= 40x faster than DDPM-1000, probe-FD within 10 %.

    The verdict is on the audio's probe-FD; with mel columns the same check on the mel follows (the samplers'
    own effect, without the vocoder's).
    """
    base = next((r for r in rows if r["sampler"] == "ddpm" and r["steps"] == 1000), None)
    fast = [r for r in rows if r["sampler"] == "dpmpp" and r["steps"] <= 25]
    if base is None or not fast:
        return "goal: n/a (needs DDPM-1000 and DPM-Solver++ at <= 25 steps in the grid)"
    met, quality, parts = _goal_parts(base, fast, "probe_fd")
    verdict = ("MET" if met else "NOT MET") if quality else "speed only (no quality without a probe)"
    line = f"goal (DPM-Solver++ <= 25 steps: >= {GOAL_SPEEDUP:.0f}x, probe-FD within {100 * GOAL_FD_REL:.0f} %): {verdict}; " + "; ".join(parts)
    mel_met, mel_quality, mel_parts = _goal_parts(base, fast, "mel_probe_fd")
    if mel_quality:
        line += f". On the mel before the vocoder: {'MET' if mel_met else 'NOT MET'}; " + "; ".join(mel_parts)
    return line


def sampler_panels(rows: Sequence[Dict]) -> List[Dict]:
    """probe-FD vs steps and s/sample vs steps, one line per sampler (DDPM-1000 a single point)."""
    fd, sec = {}, {}
    for r in rows:
        name = SAMPLER_NAMES.get(r["sampler"], r["sampler"])
        fd.setdefault(name, []).append((r["steps"], r.get("probe_fd")))
        sec.setdefault(name, []).append((r["steps"], r["seconds"]))
    return [
        dict(title="probe-FD vs steps (lower is better)", xlabel="steps", ylabel="probe-FD", series=fd, logx=True),
        dict(title="time per sample vs steps", xlabel="steps", ylabel="s/sample", series=sec, logx=True, logy=True),
    ]


def guidance_panels(rows: Sequence[Dict]) -> List[Dict]:
    """probe-FD vs w and relevance vs w."""
    fd = {"probe-FD": [(r["guidance"], r.get("probe_fd")) for r in rows]}
    rel = {"relevance": [(r["guidance"], r.get("relevance")) for r in rows]}
    return [
        dict(title="probe-FD vs guidance w", xlabel="w", ylabel="probe-FD", series=fd),
        dict(title="relevance vs guidance w", xlabel="w", ylabel="relevance", series=rel),
    ]


# ================================================================================================
# Running
# ================================================================================================
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_model(config: Path, device):
    """CLIPSonic with random weights from a training YAML's ``tts_conf`` (64 mel bands), eval mode."""
    import torch
    import yaml

    from espnet2.tts_diff.model import CLIPSonic

    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    tts_conf = dict(conf["tts_conf"])
    tts_conf.pop("vocoder_conf", None)
    torch.manual_seed(0)
    n_mels = int(conf.get("feats_extract_conf", {}).get("n_mels", 64))
    return CLIPSonic(idim=2, odim=n_mels, **tts_conf).to(device).eval()


def run_setting(sample_fn, conds: Sequence, indices: Sequence[int], sampler: str, steps: int, guidance: float,
                seed: int, num_timed: int, quality: bool, device, batch_size: int) -> Tuple[List[float], list]:  # fmt: skip
    """Seconds per sample of the timed batches after a warm-up, and the outputs of every sampled query.

    Query ``i`` of ``indices`` (positions in ``conds``) is sampled with seed ``seed + i``; queries go
    ``batch_size`` at a time through ``sample_fn(conds, seeds, ...)``, and a batch's wall time divided by its
    size is the time of each of its samples. The timed queries are those with ``i < num_timed`` (``num_timed``
    0: all), batched apart from the others; without ``quality`` only the timed ones are sampled.
    """
    num_timed = len(conds) if num_timed <= 0 else num_timed
    timed = [i for i in indices if i < num_timed]
    rest = [i for i in indices if i >= num_timed] if quality else []
    if not timed and not rest:
        return [], []
    first = (timed or rest)[:batch_size]
    sample_fn([conds[i] for i in first], [seed + i for i in first], sampler, min(steps, 2), guidance)  # warm-up
    outs, times = {}, []
    for group, is_timed in ((timed, True), (rest, False)):
        for n in range(0, len(group), batch_size):
            part = group[n : n + batch_size]
            _sync(device)
            start = time.perf_counter()
            batch = sample_fn([conds[i] for i in part], [seed + i for i in part], sampler, steps, guidance)
            _sync(device)
            if is_timed:
                times += [(time.perf_counter() - start) / len(part)] * len(part)
            outs.update(zip(part, batch))
    return times, [outs[i] for i in indices if i in outs]


def shard_of(spec: str) -> Tuple[int, int, Path]:
    """``"I/N:PATH"`` -> ``(I, N, PATH)`` (the internal ``--shard`` of one job)."""
    part, _, path = spec.partition(":")
    i, _, n = part.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n) and path):
        raise ValueError(f"--shard {spec!r}: expected I/N:PATH with 0 <= I < N")
    return int(i), int(n), Path(path)


def settings_of(args) -> List[Tuple[str, int, float]]:
    """(sampler, steps, guidance) of the grid at ``--guidance``, then of the sweep."""
    grid = [(s, n, args.guidance) for s, n in parse_grid(args.grid)]
    return grid + [(args.sweep_sampler, args.sweep_steps, w) for w in args.guidances]


def aggregate(settings: Sequence[Tuple[str, int, float]], records: Dict[str, np.ndarray], targets: np.ndarray,
              ref_emb: Optional[np.ndarray]) -> List[Dict]:  # fmt: skip
    """One table row per setting from the per-sample records of all jobs.

    ``records`` holds, per setting ``k``: ``{k}_seconds`` (timed samples), and with quality ``{k}_query``
    (query positions), ``{k}_pred`` / ``{k}_emb`` (probe class and embedding of the audio) and
    ``{k}_mel_pred`` / ``{k}_mel_emb`` (of the mel). ``targets``: the query classes by position.
    """
    from espnet2.tts_diff.probe import frechet_distance

    rows = []
    for k, (sampler, steps, guidance) in enumerate(settings):
        seconds = records[f"{k}_seconds"]
        row = dict(sampler=sampler, steps=steps, guidance=guidance,
                   seconds=float(np.median(seconds)) if len(seconds) else None, relevance=None, probe_fd=None)  # fmt: skip
        if ref_emb is not None:
            query = records[f"{k}_query"]
            for name in ("", "mel_"):
                row[f"{name}relevance"] = float(np.mean(records[f"{k}_{name}pred"] == targets[query]))
                row[f"{name}probe_fd"] = frechet_distance(records[f"{k}_{name}emb"], ref_emb)
        rows.append(row)
    return rows


def fd_change_interval(emb: np.ndarray, base_emb: np.ndarray, ref_emb: np.ndarray, resamples: int = 1000,
                       level: float = 0.9, seed: int = 0) -> Tuple[float, float]:  # fmt: skip
    """Paired bootstrap interval of the relative probe-FD change ``FD(emb) / FD(base_emb) - 1``.

    Args:
        emb: Embeddings ``(N, D)`` of one setting's samples, row ``i`` from query ``i``.
        base_emb: ``(N, D)`` of the baseline's samples of the same queries, in the same order.
        ref_emb: ``(M, D)`` of the reference clips (kept fixed).
        resamples: Bootstrap draws; each draws N queries with replacement for both settings at once.
        level: Central probability of the interval.
        seed: Seed of the draws.

    Returns:
        ``(lo, hi)`` quantiles of the relative change.
    """
    from espnet2.tts_diff.probe import frechet_distance_to_reference, gaussian_stats, psd_sqrt

    if emb.shape != base_emb.shape:
        raise ValueError(f"paired embeddings differ in shape: {emb.shape} vs {base_emb.shape}")
    ref = gaussian_stats(ref_emb)
    ref = (*ref, psd_sqrt(ref[1]))  # once: each draw then costs an N x D SVD per FD
    rng = np.random.default_rng(seed)
    changes = []
    for _ in range(resamples):
        idx = rng.integers(0, len(emb), len(emb))
        fd = frechet_distance_to_reference(emb[idx], *ref)
        base = frechet_distance_to_reference(base_emb[idx], *ref)
        changes.append(fd / max(base, 1e-12) - 1.0)
    lo, hi = np.quantile(changes, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def add_goal_intervals(rows: List[Dict], settings: Sequence[Tuple[str, int, float]], records: Dict[str, np.ndarray],
                       ref_emb: np.ndarray) -> None:  # fmt: skip
    """Give each DPM-Solver++ row of <= 25 steps ``probe_fd_ci`` / ``mel_probe_fd_ci`` against DDPM-1000 (in place)."""
    base = next((k for k, (s, n, _) in enumerate(settings[: len(rows)]) if (s, n) == ("ddpm", 1000)), None)
    if base is None:
        return
    for k, (sampler, steps, _) in enumerate(settings[: len(rows)]):
        if sampler == "dpmpp" and steps <= 25:
            for name in ("", "mel_"):
                emb, base_emb = (records[f"{j}_{name}emb"][np.argsort(records[f"{j}_query"])] for j in (k, base))
                rows[k][f"{name}probe_fd_ci"] = fd_change_interval(emb, base_emb, ref_emb)


def run_jobs(args, argv: Sequence[str], num_queries: int) -> Dict[str, np.ndarray]:
    """Run ``--jobs`` copies of this script, one per query shard, at once; merge their per-sample records."""
    import subprocess
    import tempfile

    threads = args.threads if args.threads > 0 else 1
    with tempfile.TemporaryDirectory(prefix="benchmark_jobs.") as tmp:
        paths = [Path(tmp) / f"job{i}.npz" for i in range(args.jobs)]
        procs = [
            subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--jobs", "1",
                              "--threads", str(threads), "--shard", f"{i}/{args.jobs}:{path}"])  # fmt: skip
            for i, path in enumerate(paths)
        ]
        codes = [p.wait() for p in procs]
        failed = [f"job {i} (exit {c})" for i, c in enumerate(codes) if c != 0]
        if failed:
            raise RuntimeError(f"{', '.join(failed)} of {args.jobs} failed; see the messages above")
        return merge_records(paths, settings_of(args), num_queries)[0]


def shard_meta(settings: Sequence[Tuple[str, int, float]], shard: Tuple[int, int, Path], num_queries: int,
               threads: int, batch_size: int) -> Dict[str, np.ndarray]:  # fmt: skip
    """What a shard's records file says about the run that made it (checked by :func:`merge_records`)."""
    return {"meta_settings": np.asarray([f"{s}:{n}:{w!r}" for s, n, w in settings]),
            "meta_shard": np.asarray(shard[:2], dtype=np.int64), "meta_num_queries": np.asarray(num_queries),
            "meta_threads": np.asarray(threads), "meta_batch_size": np.asarray(batch_size)}  # fmt: skip


def merge_records(paths: Sequence[Path], settings: Sequence[Tuple[str, int, float]],
                  num_queries: int) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:  # fmt: skip
    """Concatenate the per-sample records of shards ``0..N-1`` (``N = len(paths)``), in shard order.

    Returns:
        The merged records and the shards' ``threads`` and ``batch_size``.

    Raises:
        ValueError: A file is missing or unreadable, a shard is missing or repeated, or a shard was run with other
            settings or another query list.
    """
    parts, seen = [], {}
    want = [f"{s}:{n}:{w!r}" for s, n, w in settings]
    for path in paths:
        try:
            with np.load(path) as data:
                part = dict(data)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a shard's records file ({err})") from err
        if "meta_shard" not in part:
            raise ValueError(f"{path}: not a shard's records file (no meta_shard)")
        i, n = (int(v) for v in part["meta_shard"])
        if n != len(paths):
            raise ValueError(f"{path}: shard {i}/{n}, but {len(paths)} records files were given")
        if i in seen:
            raise ValueError(f"{path}: shard {i}/{n} again (also {seen[i]})")
        if list(part["meta_settings"]) != want or int(part["meta_num_queries"]) != num_queries:
            raise ValueError(f"{path}: shard {i}/{n} was run with other settings or queries than these options give")
        seen[i] = path
        parts.append((i, part))
    parts = [part for _, part in sorted(parts, key=lambda ip: ip[0])]
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0] if not key.startswith("meta_")}
    info = {"threads": int(parts[0]["meta_threads"]), "batch_size": int(parts[0]["meta_batch_size"])}
    return merged, info


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    import torch

    try:
        shard = shard_of(args.shard) if args.shard else None
        grid = parse_grid(args.grid)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.batch_size < 1:
        print(f"error: --jobs and --batch_size must be >= 1, got {args.jobs} and {args.batch_size}", file=sys.stderr)
        return 2
    if args.merge and (shard or args.jobs > 1):
        print("error: --merge: not with --shard or --jobs (it only aggregates the shards' records)", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    quality = args.model != "paper" and args.probe is not None
    if args.model != "paper" and args.queries is None:
        print("error: --queries: needed with a trained model (an image.scp or text.scp of CLIP embeddings)", file=sys.stderr)
        return 2
    if args.max_per_class > 0 and args.utt2label is None:
        print("error: --max_per_class: needs --utt2label", file=sys.stderr)
        return 2
    if quality and (args.references is None or args.utt2label is None):
        print("error: --probe: quality needs --references (wav.scp) and --utt2label", file=sys.stderr)
        return 2

    if args.model == "paper":
        tts = paper_model(args.config, device)
        nparams = sum(p.numel() for p in tts.parameters())
        print(f"model: {args.config.name} random weights ({nparams / 1e6:.1f} M parameters), timing only, on {device}")
        frames = args.num_frames or tts.inference_frames
        gen_emb = torch.randn(8, tts.spk_embed_dim, generator=torch.Generator().manual_seed(args.seed))
        conds = list(gen_emb)

        def sample_fn(conds, seeds, sampler, steps, guidance):
            return list(tts.sample(torch.stack(list(conds)), seeds=seeds, steps=steps, guidance=guidance,
                                   sampler=sampler, num_frames=frames))  # fmt: skip
    else:
        import kaldiio

        from espnet2.enh.clipsep.files.kaldi_table import read_table
        from espnet2.enh.clipsep.files.model_files import resolve_model
        from espnet2.tts_diff.generate import Condition, Generator, build_model, find_prior
        from espnet2.tts_diff.prior import load_prior

        # Queries are cached embeddings: no CLIP needed, only the model and (for PD) its prior.
        files = resolve_model(args.model)
        prior_file = args.prior or (find_prior(files.search_dirs, files.pack_root) if args.mode == "pd" else None)
        if args.mode == "pd" and prior_file is None:
            print("error: --mode pd: needs the diffusion prior (pass --prior FILE)", file=sys.stderr)
            return 2
        from espnet2.tts_diff.bin.generate_set import select_keys

        table = read_table(args.queries)
        labels = read_table(args.utt2label) if args.max_per_class > 0 else None
        try:
            keys = list(table) if labels is None else select_keys(list(table), labels, args.max_per_class, args.queries)
        except ValueError as err:  # a query without a class in --utt2label
            print(f"error: {args.utt2label}: {err}", file=sys.stderr)
            return 2
        keys = keys[: args.num_queries]
        if shard is None:
            print(f"model: {args.model} on {device}; {len(keys)} {args.mode} queries from {args.queries}")
        if args.merge or (shard is None and min(args.jobs, len(keys)) > 1):
            conds = keys  # the jobs or shards sample: this process only scores, so it never builds the model
        else:
            net, _ = build_model(files.train_config, files.model_file)
            gen = Generator(net, prior=None if prior_file is None else load_prior(prior_file), device=str(device))

            def load(value: str):  # an npy file (dump's npy scp) or a kaldi ark offset; (D,) or per-frame (F, D)
                emb = np.load(value) if value.endswith(".npy") else kaldiio.load_mat(value)
                return torch.as_tensor(np.asarray(emb, np.float32)).reshape(-1, gen.embed_dim).mean(0)

            conds = [Condition(k, args.mode, load(table[k])) for k in keys]

        def sample_fn(conds, seeds, sampler, steps, guidance):
            outs = gen.sample_batch(conds, seeds, steps=steps, guidance=guidance, sampler=sampler, num_frames=args.num_frames)
            return [(out["wav"], out["mel"]) for out in outs]

    class_ids, ref_emb, score = [], None, None
    if quality:
        from espnet2.enh.clipsep.files.kaldi_table import read_table
        from espnet2.tts_diff.probe import load_probe, probe_outputs, read_wav

        probe, classes = load_probe(args.probe)
        probe.to(device)
        labels = read_table(args.utt2label)
        index = {c: i for i, c in enumerate(classes)}
        for name in (c if isinstance(c, str) else c.name for c in conds):
            label = labels.get(name, name)
            if label not in index:
                print(f"error: {args.utt2label}: query {name}: label {label!r} is not a probe class", file=sys.stderr)
                return 2
            class_ids.append(index[label])
        if shard is None:  # the jobs' records are scored against the references here, once
            refs = [read_wav(p, probe.fs) for p in read_table(args.references).values()]
            ref_emb = probe_outputs(probe, refs)[1].numpy()
            print(f"probe: {args.probe} ({len(classes)} classes); {len(refs)} reference clips")

        def score(outs):  # probe class and embedding of the waveforms, then of the mels they were vocoded from
            figures = {}
            for name, items, mels in (("", [o[0] for o in outs], False), ("mel_", [o[1] for o in outs], True)):
                logits, emb = probe_outputs(probe, items, mels=mels)
                figures[f"{name}pred"], figures[f"{name}emb"] = logits.argmax(1).numpy(), emb.numpy()
            return figures

    settings = settings_of(args)
    threads_each, batch_size = (args.threads if args.threads > 0 else 1), args.batch_size
    args.jobs = min(args.jobs, len(conds))  # every job has a query
    if args.merge:
        try:
            records, info = merge_records(args.merge, settings, len(conds))
        except ValueError as err:
            print(f"error: --merge: {err}", file=sys.stderr)
            return 2
        args.jobs, threads_each, batch_size = len(args.merge), info["threads"], info["batch_size"]
    elif args.jobs > 1 and shard is None:
        try:
            records = run_jobs(args, sys.argv[1:] if cmd is None else list(cmd), len(conds))
        except (RuntimeError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    else:
        indices = list(range(len(conds)))[shard[0] :: shard[1]] if shard else list(range(len(conds)))
        tag = f"[job {shard[0]}/{shard[1]}] " if shard else ""
        records, first = {}, {}
        for k, (sampler, steps, guidance) in enumerate(settings):
            if (sampler, steps, guidance) in first:  # e.g. the sweep's point at the grid's w: the grid's samples
                j = first[(sampler, steps, guidance)]
                records.update({f"{k}_{key[len(f'{j}_'):]}": v for key, v in list(records.items()) if key.startswith(f"{j}_")})
                continue
            first[(sampler, steps, guidance)] = k
            times, outs = run_setting(sample_fn, conds, indices, sampler, steps, guidance, args.seed, args.num_timed,
                                      quality, device, args.batch_size)  # fmt: skip
            records[f"{k}_seconds"] = np.asarray(times, dtype=np.float64)
            line = f"  {tag}{SAMPLER_NAMES[sampler]:>13} {steps:>5} steps w={guidance:g}: {len(outs)} samples"
            if times:
                line += f", {statistics.median(times):.4f} s/sample"
            if score is not None:
                records[f"{k}_query"] = np.asarray(indices[: len(outs)], dtype=np.int64)
                records.update({f"{k}_{name}": v for name, v in score(outs).items()})
            print(line, file=sys.stderr, flush=True)
        if shard:
            tmp = shard[2].with_name(f".{shard[2].name}.tmp.npz")
            np.savez(tmp, **records, **shard_meta(settings, shard, len(conds), torch.get_num_threads(), args.batch_size))
            os.replace(tmp, shard[2])
            return 0
    rows_all = aggregate(settings, records, np.asarray(class_ids, dtype=np.int64), ref_emb)
    rows, sweep = rows_all[: len(grid)], rows_all[len(grid) :]
    if ref_emb is not None:
        add_goal_intervals(rows, settings, records, ref_emb)
    for r in rows_all:
        print(f"  {SAMPLER_NAMES[r['sampler']]:>13} {r['steps']:>5} steps w={r['guidance']:g}: {_fmt(r['seconds'], '.4f')} s/sample"
              + ("" if ref_emb is None else ", relevance {relevance:.3f}, probe-FD {probe_fd:.3f}; on the mel: relevance"
                 " {mel_relevance:.3f}, probe-FD {mel_probe_fd:.3f}".format(**r)), file=sys.stderr, flush=True)  # fmt: skip
    base = baseline_seconds(rows)
    threads = f"{torch.get_num_threads()} CPU thread(s)"
    if args.merge:
        threads = f"{args.jobs} shard(s) (queries i mod {args.jobs}), {threads_each} CPU thread(s) each"
    elif args.jobs > 1:
        threads = f"{args.jobs} jobs at once (queries i mod {args.jobs}), {threads_each} CPU thread(s) each"
    grid_settings = settings[: len(rows)]
    reused = [w for s_, n, w in settings[len(rows) :] if (s_, n, w) in grid_settings]
    reused = (f" The sweep's w = {reused[0]:g} row is the grid's {SAMPLER_NAMES[args.sweep_sampler]}"
              f" {args.sweep_steps}-step run (the same samples and times).") if reused else ""  # fmt: skip
    text = "\n".join([
        f"## Samplers (w = {args.guidance:g})", "", markdown_table(rows), "", goal_check(rows), "",
        f"## Guidance sweep ({SAMPLER_NAMES[args.sweep_sampler]}, {args.sweep_steps} steps)", "",
        markdown_table(sweep, first="guidance", baseline=base), "",
        f"{len(conds)} {args.mode.upper()} queries, one sample each (seed {args.seed} + query index); s/sample: wall"
        f" time of a batch of up to {batch_size} queries / its size, median over the"
        f" {min(args.num_timed, len(conds)) if args.num_timed > 0 else len(conds)} timed samples on {device}, {threads}."
        f" Plots: {args.out_dir}/samplers.png"
        f" (probe-FD and s/sample vs steps), {args.out_dir}/guidance.png (probe-FD and relevance vs w).{reused}",
    ])  # fmt: skip
    from espnet2.enh.clipsep.eval.figures import line_figure

    print(text)
    line_figure(sampler_panels(rows), args.out_dir / "samplers.png")
    line_figure(guidance_panels(sweep), args.out_dir / "guidance.png")
    (args.out_dir / "results.md").write_text(text + "\n", encoding="utf-8")
    (args.out_dir / "results.json").write_text(json.dumps(dict(samplers=rows, guidance=sweep), indent=1), encoding="utf-8")
    print(f"wrote {args.out_dir}/samplers.png, guidance.png, results.md, results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
