#!/usr/bin/env python3
"""Quality against CPU time for one mini operating point: a measuring instrument, not a training recipe.

Trains the model of a training config (built by ``CLIPSepTask``, with its preprocessor, loss wrappers and
optimiser settings; ``--set key=value`` overrides any config entry) in this process, single-threaded, with the
config's batch size, gradient clipping and a warm-up + linear-decay schedule stretched over ``--steps``
(peak ``optim_conf.lr``, 50 warm-up steps, down to a tenth at the last step, as the mini configs do). Every
``--eval_every`` steps it separates the prepared test mixtures with text queries and with image queries and
prints one JSON line: mean SDRi (museval's window=inf target-row SDR, ``scoring.sdr_target``) with its SEM,
the same on 72 fixed mixtures of training clips with image queries (how far test is from train: overfitting or
slow learning), and the CPU seconds spent in training steps so far. ESPnet's trainer runs the same steps in the recipe (with its
own data loader and validation); this tool exists to compare operating points at equal CPU time quickly.

Example (from egs2/clipsep/enh1, after ``./run.sh --stop_stage 4``):
    python local/operating_point.py --config conf/tiny/train_enh_clipsep_nit.yaml --steps 2800 \\
        --set batch_size=4 --set separator_conf.unet_layers=5
"""

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/operating_point.py",
        description="Train a mini config in-process and print test SDRi (text and image queries) against CPU time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="training YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry (dotted path, list indices as numbers; YAML value)")
    parser.add_argument("--steps", type=int, default=2800, help="training steps")
    parser.add_argument("--eval_every", type=int, default=700, help="steps between evaluations")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, mixtures and queries")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile training steps 11..10+N (torch.profiler) and print where their CPU time "
                        "goes: data preparation, forward, backward and optimiser, and the costliest operators")
    parser.add_argument("--data", type=Path, default=Path("data/mini"), help="Kaldi-style data dirs (stage 1, 4)")
    parser.add_argument("--dump", type=Path, default=Path("dump/mini"), help="CLIP embeddings (stage 3)")
    return parser


def apply_overrides(cfg: dict, sets) -> dict:
    import yaml

    for spec in sets:
        key, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"--set {spec!r}: expected KEY=VALUE")
        node, parts = cfg, key.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return cfg


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    import soundfile
    import torch
    import yaml
    from espnet2.fileio.npy_scp import NpyScpReader
    from espnet2.fileio.read_text import read_2columns_text

    from espnet2.enh.clipsep.eval.scoring import sdr_target
    from espnet2.enh.clipsep.task import CLIPSepTask

    torch.set_num_threads(1)
    cfg = apply_overrides(yaml.safe_load(args.config.read_text()), args.set)
    train, mix_dir = args.data / "train", args.data / "test_mix"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "config.yaml"
        conf.write_text(yaml.safe_dump(cfg))
        targs = CLIPSepTask.get_parser().parse_args([
            "--config", str(conf), "--output_dir", tmp,
            "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech_ref1,sound",
            "--train_data_path_and_name_and_type", f"{args.dump}/clip/train/image_frames.scp,query1,npy",
            "--train_shape_file", "unused", "--valid_data_path_and_name_and_type", "unused,speech_mix,sound",
            "--valid_shape_file", "unused",
        ])  # fmt: skip
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = CLIPSepTask.build_model(targs)
    mixer = CLIPSepTask.build_preprocess_fn(targs, train=True)
    wavs = {k: soundfile.read(v, dtype="float32")[0] for k, v in read_2columns_text(train / "wav.scp").items()}
    frames = NpyScpReader(str(args.dump / "clip" / "train" / "image_frames.scp"))
    queries = {k: frames[k] for k in wavs}
    keys = sorted(wavs)
    tables = {n: read_2columns_text(mix_dir / n) for n in ("wav.scp", "spk1.scp", "text_query1.scp", "query1.scp")}
    test = []
    for key in sorted(tables["wav.scp"]):
        mix = soundfile.read(tables["wav.scp"][key], dtype="float32")[0]
        s1 = soundfile.read(tables["spk1.scp"][key], dtype="float64")[0]
        test.append((mix, s1, np.load(tables["text_query1.scp"][key]), np.load(tables["query1.scp"][key])))

    # 72 fixed training mixtures of test length (random.seed(1234)), image queries: the train-side reference.
    state, segment = random.getstate(), mixer.segment
    random.seed(1234)
    mixer.segment = len(test[0][0])
    train_mixes = [mixer(k, {"speech_ref1": wavs[k], "query1": queries[k]}) for k in random.sample(keys, 72)]
    mixer.segment = segment
    random.setstate(state)
    train_set = [(m["speech_mix"], m["speech_ref1"].astype(np.float64), None, m["query1"]) for m in train_mixes]

    def evaluate(image: bool, items=test):
        model.eval()
        out = []
        with torch.no_grad():
            for mix, s1, text_q, image_q in items:
                q = torch.as_tensor(image_q if image else text_q, dtype=torch.float32).reshape(1, -1)
                x = torch.as_tensor(mix)[None]
                est = model.forward_enhance(x, torch.tensor([x.shape[1]]), {"query1": q})[0][0][0].double().numpy()
                n = min(len(est), len(s1))
                out.append(sdr_target(s1[:n], est[:n]) - sdr_target(s1[:n], mix[:n].astype(np.float64)))
        model.train()
        return float(np.mean(out)), float(np.std(out, ddof=1) / math.sqrt(len(out)))

    lr = float(cfg["optim_conf"]["lr"])
    opt = torch.optim.Adam(model.parameters(), **cfg["optim_conf"])
    warm, bs, clip = 50, int(cfg["batch_size"]), float(cfg.get("grad_clip", 1.0))
    model.train()
    cpu = 0.0
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimiser": 0.0}
    profiled = range(11, 11 + args.profile)
    profiler = None
    for step in range(1, args.steps + 1):
        if step == profiled.start and args.profile:
            from torch.profiler import ProfilerActivity, profile

            profiler = profile(activities=[ProfilerActivity.CPU])
            profiler.__enter__()
        t0 = time.process_time()
        frac = min(1.0, (step - warm) / max(1, args.steps - warm))
        for group in opt.param_groups:
            group["lr"] = lr * step / warm if step < warm else lr * (1.0 - 0.9 * frac)
        items = [mixer(k, {"speech_ref1": wavs[k], "query1": queries[k]}) for k in random.sample(keys, bs)]
        batch = {n: torch.as_tensor(np.stack([it[n] for it in items])) for n in items[0]}
        batch["speech_mix_lengths"] = torch.full((bs,), batch["speech_mix"].shape[1])
        start = time.process_time()
        loss, _, _ = model(**batch)
        t2 = time.process_time()
        opt.zero_grad()
        loss.backward()
        t3 = time.process_time()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        end = time.process_time()
        cpu += end - start
        if step in profiled:
            for name, seconds in zip(phases, (start - t0, t2 - start, t3 - t2, end - t3)):
                phases[name] += seconds
        if profiler is not None and step == profiled[-1]:
            profiler.__exit__(None, None, None)
            total = sum(phases.values())
            print(json.dumps({"profile_steps": args.profile, **{f"{k}_share": round(v / total, 3) for k, v in
                                                                  phases.items()}, "ms_per_step": round(1000 * total / args.profile, 1)}))  # fmt: skip
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
            profiler = None
        if step % args.eval_every == 0 or step == args.steps:
            text, text_sem = evaluate(image=False)
            image, image_sem = evaluate(image=True)
            train_image, _ = evaluate(image=True, items=train_set)
            print(json.dumps(dict(
                step=step, cpu_s=round(cpu, 1), s_per_step=round(cpu / step, 4), text_sdri=round(text, 3),
                text_sem=round(text_sem, 3), image_sdri=round(image, 3), image_sem=round(image_sem, 3), train_image_sdri=round(train_image, 3),
                config=str(args.config), set=args.set, seed=args.seed,
            )), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
