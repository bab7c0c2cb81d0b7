#!/usr/bin/env python3
"""CPU speed and memory of ``Separator.separate_file`` (file in, file out) at paper size, chunked vs single pass.

The paper-size CLIPSep-NIT model (``conf/tuning/train_enh_clipsep_nit.yaml``, random weights, 30.3 M
parameters) separates a 16 kHz wav of each duration with one random 512-d query embedding (no CLIP run: CLIP
costs the same whatever the audio's length, ~60 ms per text query on 2 cores). Each (duration, mode) runs in
a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own; the input wav is written by the
parent beforehand.

Reported: real-time factor (wall time of ``separate_file`` / audio duration; reading, resampling, chunking,
writing included), the share of it spent in the model (STFT + U-Net + iSTFT), peak RSS and its increase over
the process right after building the model. Modes: ``chunked`` (the default 8 s chunks, 1 s cross-faded
overlap) and ``single`` (``chunk_seconds=None``: one pass over the whole input, memory grows with it; not run
above ``--single_max`` seconds, where the extrapolated memory is printed instead).

Example:
    python local/benchmark_separate.py --durations 4 60 600 --threads 2
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "tuning" / "train_enh_clipsep_nit.yaml"
FS = 16000


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/benchmark_separate.py",
        description="RTF and peak memory of CLIPSep file separation at paper size (chunked vs single pass).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML to build the model")
    parser.add_argument("--durations", type=float, nargs="+", default=[4.0, 60.0, 600.0], help="seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--chunk_seconds", type=float, default=8.0, help="chunk length of the chunked mode")
    parser.add_argument("--overlap_seconds", type=float, default=1.0, help="overlap of the chunked mode")
    parser.add_argument("--single_max", type=float, default=60.0, help="longest input run in a single pass")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, audio and query")
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)  # wav, mode, duration
    return parser


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def write_input(path: Path, seconds: float, seed: int) -> None:
    """Noise plus a gated tone, written block by block (so the parent's memory stays small too)."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    total, block = int(round(seconds * FS)), 10 * FS
    with soundfile.SoundFile(str(path), "w", FS, 1, "PCM_16") as f:
        for start in range(0, total, block):
            t = (np.arange(start, min(total, start + block)) / FS)[:, None]
            x = 0.1 * rng.standard_normal(t.shape) + 0.2 * np.sin(2 * np.pi * 440 * t) * (np.sin(t) > 0)
            f.write(x.astype(np.float32))


def run_worker(args: argparse.Namespace) -> dict:
    import torch

    from espnet2.enh.clipsep.separate import Query, Separator
    from espnet2.enh.clipsep.task import CLIPSepTask

    wav, mode, duration = Path(args.worker[0]), args.worker[1], float(args.worker[2])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_args = CLIPSepTask.get_parser().parse_args(["--config", str(args.config)])
    model = CLIPSepTask.build_model(train_args).eval()
    params = sum(p.numel() for p in model.parameters())
    chunk = args.chunk_seconds if mode == "chunked" else None
    sep = Separator(model, fs=FS, chunk_seconds=chunk, overlap_seconds=args.overlap_seconds, device="cpu")
    query = [Query("q", torch.randn(sep.query_dim, generator=torch.Generator().manual_seed(args.seed)))]

    model_time, calls = 0.0, 0
    make_fn = sep._chunk_fn

    def timed_chunk_fn(*a, **kw):
        fn = make_fn(*a, **kw)

        def timed(x):
            nonlocal model_time, calls
            start = time.perf_counter()
            y = fn(x)
            model_time += time.perf_counter() - start
            calls += 1
            return y

        return timed

    sep._chunk_fn = timed_chunk_fn

    # Time spent in the model's parts (forward hooks): STFT, U-Net, the rest of the separator, iSTFT.
    parts = {"stft": model.encoder, "unet": model.separator.unet, "separator": model.separator, "istft": model.decoder}
    spent = dict.fromkeys(parts, 0.0)
    def clock(name, sign):
        def hook(*_):
            spent[name] += sign * time.perf_counter()

        return hook

    for name, module in parts.items():
        module.register_forward_pre_hook(clock(name, -1))
        module.register_forward_hook(clock(name, +1))
    rss_built = _max_rss_mib()

    # Warm-up (not timed; one-time allocations and oneDNN kernels): one chunk-sized pass, FLOPs counted.
    from torch.utils.flop_counter import FlopCounterMode

    warm = sep.chunk or 2 * FS
    with FlopCounterMode(display=False) as counter:
        make_fn(query, None)(torch.randn(1, warm) * 0.1)
    gflop_per_audio_s = counter.get_total_flops() / 1e9 / (warm / FS)
    for name in spent:
        spent[name] = 0.0
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        (path,) = sep.separate_file(wav, out, queries=query)
        wall = time.perf_counter() - start
        import soundfile

        frames = soundfile.info(str(path)).frames
    return {
        "duration_s": duration, "mode": mode, "params": params, "threads": torch.get_num_threads(),
        "chunk_samples": sep.chunk, "overlap_samples": sep.overlap, "calls": calls, "wall_s": wall,
        "model_s": model_time, "rtf": wall / duration, "rss_built_mib": rss_built, "rss_peak_mib": _max_rss_mib(),
        "frames_out": frames, "torch": torch.__version__, "gflop_per_audio_s": gflop_per_audio_s,
        "stft_s": spent["stft"], "unet_s": spent["unet"], "masks_s": spent["separator"] - spent["unet"],
        "istft_s": spent["istft"],
    }  # fmt: skip


def run_in_subprocess(args: argparse.Namespace, wav: Path, mode: str, duration: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(wav), mode, str(duration),
           "--config", str(args.config), "--threads", str(args.threads), "--seed", str(args.seed),
           "--chunk_seconds", str(args.chunk_seconds), "--overlap_seconds", str(args.overlap_seconds)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"benchmark worker ({mode}, {duration} s) failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(args)), flush=True)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark_separator import _cpu_name

    results = []
    with tempfile.TemporaryDirectory(prefix="clipsep-bench-") as tmp:
        for duration in args.durations:
            wav = Path(tmp) / f"in_{duration:g}s.wav"
            write_input(wav, duration, args.seed)
            for mode in ("single", "chunked"):
                if mode == "single" and duration > args.single_max:
                    results.append({"duration_s": duration, "mode": mode, "skipped": True})
                    continue
                r = run_in_subprocess(args, wav, mode, duration)
                assert r["frames_out"] == int(round(duration * FS)), r
                results.append(r)
                print(f"# {mode} {duration:g} s: RTF {r['rtf']:.3f}, peak {r['rss_peak_mib']:.0f} MiB", file=sys.stderr)
            wav.unlink()

    done = [r for r in results if not r.get("skipped")]
    first = done[0]
    singles = [r for r in done if r["mode"] == "single"]
    per_second = None
    if len(singles) >= 2:  # single-pass memory grows linearly: extrapolate from the two longest runs
        a, b = sorted(singles, key=lambda r: r["duration_s"])[-2:]
        per_second = (b["rss_peak_mib"] - a["rss_peak_mib"]) / (b["duration_s"] - a["duration_s"])
    print(f"# CLIPSep file separation benchmark ({args.config.name}, random weights)")
    print()
    print(f"- CPU: {_cpu_name()} ({os.cpu_count()} logical cores visible); torch {first['torch']}, "
          f"{first['threads']} intra-op thread(s)")
    print(f"- parameters: {first['params']:,}; one random 512-d query; 16 kHz PCM wav in, float wav out")
    chunked = next((r for r in done if r["mode"] == "chunked"), None)
    if chunked:
        print(f"- chunked: {chunked['chunk_samples']} samples ({chunked['chunk_samples'] / FS:.2f} s) per chunk, "
              f"{chunked['overlap_samples'] / FS:g} s cross-faded overlap; single: one pass over the whole input")
    print("- RTF = wall time of Separator.separate_file / audio duration (one run each, in a fresh process, after "
          "one untimed chunk-sized warm-up pass); model = share of the wall time in STFT + separator + iSTFT, "
          "U-Net = share in the U-Net alone")
    print(f"- compute: {first['gflop_per_audio_s']:.1f} GFLOP per second of audio and pass (chunked adds the "
          "overlap: x L / (L - O))")
    print()
    print("| audio (s) | mode | model calls | RTF | wall (s) | model | U-Net | STFT+iSTFT | peak RSS (MiB) "
          "| over built model (MiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if r.get("skipped"):
            est = "not run"
            if per_second is not None:
                last = singles[-1]
                mib = last["rss_peak_mib"] + per_second * (r["duration_s"] - last["duration_s"])
                est = f"~{mib / 1024:.0f} GiB (extrapolated)"
            print(f"| {r['duration_s']:g} | single | - | not run | - | - | - | - | {est} | - |")
            continue
        print(
            f"| {r['duration_s']:g} | {r['mode']} | {r['calls']} | {r['rtf']:.3f} | {r['wall_s']:.1f} "
            f"| {100 * r['model_s'] / r['wall_s']:.0f} % | {100 * r['unet_s'] / r['wall_s']:.0f} % "
            f"| {100 * (r['stft_s'] + r['istft_s']) / r['wall_s']:.0f} % | {r['rss_peak_mib']:.0f} "
            f"| {r['rss_peak_mib'] - r['rss_built_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
