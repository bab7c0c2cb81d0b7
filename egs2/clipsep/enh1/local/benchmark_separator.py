#!/usr/bin/env python3
"""CPU benchmark of the paper-size CLIPSep-NIT separator inside the real ESPnet model.

The model is built by ``CLIPSepTask.build_model`` from ``conf/tuning/train_enh_clipsep_nit.yaml`` (STFT n_fft
1024 / hop 256 at 16 kHz, 7-level U-Net, ngf 64, k 32, 2 noise heads) and run in eval mode under
``torch.no_grad`` on one clip per duration, in a single pass (no chunking), with random 512-d query vectors.
Each duration runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.

Reported per duration: real-time factor (median over ``--repeats`` timed runs after one warm-up; compute time
divided by audio duration, < 1 is faster than real time), floating-point operations of one pass (counted by
``torch.utils.flop_counter`` during the warm-up) and the achieved rate, peak RSS of the process, and the RSS
increase over the process after building the model (the forward pass's share).

Example:
    python local/benchmark_separator.py --durations 4 60 --threads 2 --repeats 3
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "tuning" / "train_enh_clipsep_nit.yaml"
FS = 16000


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/benchmark_separator.py",
        description="CPU real-time factor, parameter count and peak memory of the paper-size CLIPSep-NIT "
        "separator (eval mode, single pass).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML to build the model")
    parser.add_argument("--durations", type=float, nargs="+", default=[4.0, 60.0], help="clip lengths in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per duration (after 1 warm-up)")
    parser.add_argument("--num_queries", type=int, default=1, help="queries per pass (= separated outputs)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, audio and queries")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_worker(args: argparse.Namespace) -> dict:
    """Build the model, time ``args.repeats`` passes over one clip of ``args.worker`` seconds."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from espnet2.enh.clipsep.task import CLIPSepTask

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_args = CLIPSepTask.get_parser().parse_args(["--config", str(args.config)])
    model = CLIPSepTask.build_model(train_args).eval()
    num_params = sum(p.numel() for p in model.parameters())
    sep_params = sum(p.numel() for p in model.separator.parameters())
    query_dim = model.separator.query_proj.in_features

    length = int(round(args.worker * FS))
    gen = torch.Generator().manual_seed(args.seed)
    mix = torch.randn(1, length, generator=gen) * 0.1
    lengths = torch.tensor([length])
    queries = {f"query{n}": torch.randn(1, query_dim, generator=gen) for n in range(1, args.num_queries + 1)}
    rss_built = _max_rss_mib()

    times = []
    with torch.no_grad():
        # Warm-up pass, also counting the floating-point operations (not timed).
        with FlopCounterMode(display=False) as counter:
            model.forward_enhance(mix, lengths, queries)
        for _ in range(args.repeats):
            start = time.perf_counter()
            est = model.forward_enhance(mix, lengths, queries)[0]
            times.append(time.perf_counter() - start)
    assert len(est) == args.num_queries and est[0].shape == mix.shape
    return {
        "duration_s": args.worker,
        "frames": int(model.encoder(mix, lengths)[1][0]),
        "params": num_params,
        "separator_params": sep_params,
        "threads": torch.get_num_threads(),
        "times_s": times,
        "rtf": statistics.median(times) / args.worker,
        "gflop": counter.get_total_flops() / 1e9,
        "rss_built_mib": rss_built,
        "rss_peak_mib": _max_rss_mib(),
        "torch": torch.__version__,
    }


def run_in_subprocess(args: argparse.Namespace, duration: float) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker", str(duration),
        "--config", str(args.config),
        "--repeats", str(args.repeats),
        "--num_queries", str(args.num_queries),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"benchmark worker for {duration} s failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(args)), flush=True)
        return

    results = [run_in_subprocess(args, d) for d in args.durations]
    first = results[0]
    print(f"# CLIPSep-NIT separator benchmark ({args.config.name})")
    print()
    print(f"- CPU: {_cpu_name()} ({os.cpu_count()} logical cores visible); torch {first['torch']}, "
          f"{first['threads']} intra-op thread(s)")
    print(f"- parameters: {first['params']:,} (separator {first['separator_params']:,}; STFT has none)")
    print(f"- eval mode, torch.no_grad, one pass per clip, {args.num_queries} random query vector(s); "
          f"RTF = median of {args.repeats} timed runs after 1 warm-up / audio duration")
    print()
    print("| audio (s) | STFT frames | RTF (median) | time per pass (s) | GFLOP per pass | GFLOP/s "
          "| peak RSS (MiB) | RSS after build (MiB) | forward share (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        median = statistics.median(r["times_s"])
        print(
            f"| {r['duration_s']:g} | {r['frames']} | {r['rtf']:.3f} | {median:.2f} "
            f"(min {min(r['times_s']):.2f}, max {max(r['times_s']):.2f}) | {r['gflop']:.1f} "
            f"| {r['gflop'] / median:.0f} | {r['rss_peak_mib']:.0f} "
            f"| {r['rss_built_mib']:.0f} | {r['rss_peak_mib'] - r['rss_built_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
