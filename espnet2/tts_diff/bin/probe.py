"""Train the offline probe classifier, or evaluate generated audio with it (relevance, probe-FD).

``train`` fits :class:`~espnet2.tts_diff.probe.ProbeClassifier` on a Kaldi-style data dir (``wav.scp`` +
``utt2label``; labels are used only for evaluation) and writes ``<output>`` (state dict), ``<output>.yaml``
(conf and class names; the suffix of ``<output>`` is replaced) and ``<output>.json`` (report: wall time, accuracy
on ``--valid_dir``). ``evaluate`` reads generated wavs (a directory, key = file stem, or a ``wav.scp``), the
query label of each (``<key> <label>``) and real reference clips (a data dir), and writes JSON with relevance
(probe accuracy against the query class), its chance level, and probe-FD (Fréchet distance between the
probe's embeddings of generated and reference clips; not FAD) and, with ``--vggish`` weights, the FAD
(:mod:`espnet2.tts_diff.fad`) and, with ``--clap`` (a local Hugging Face CLAP directory; needs ``transformers``
on PYTHONPATH), the CLAP score (:mod:`espnet2.tts_diff.clap`).

Examples:
    python -m espnet2.tts_diff.bin.probe train --data_dir data/mini/train --valid_dir data/mini/valid \\
        --output exp/mini/probe/probe.pt
    python -m espnet2.tts_diff.bin.probe evaluate --probe exp/mini/probe/probe.pt --gen_dir exp/gen/wav \\
        --gen_labels exp/gen/utt2label --ref_dir data/mini/test --output exp/gen/probe_eval.json
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple


def get_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.probe",
        description="Offline probe classifier: train on labelled clips; evaluate generated audio "
        "(relevance, probe-FD).",
        formatter_class=fmt,
    )
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a probe on a data dir", formatter_class=fmt)
    tr.add_argument("--data_dir", type=Path, required=True, help="Kaldi-style dir with wav.scp and utt2label")
    tr.add_argument("--valid_dir", type=Path, default=None, help="held-out data dir for the report")
    tr.add_argument("--output", type=Path, required=True, help="state dict to write (+ .yaml conf, .json report)")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    tr.add_argument("--fs", type=int, default=16000, help="sampling rate of the clips")
    tr.add_argument("--embed_dim", type=int, default=128, help="embedding size (probe-FD space)")
    tr.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="conv block widths")
    tr.add_argument("--epochs", type=int, default=30, help="passes over the training clips")
    tr.add_argument("--batch_size", type=int, default=16, help="clips per step")
    tr.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine decay)")
    tr.add_argument("--segment_seconds", type=float, default=None, help="random crop length (None: shortest clip)")
    tr.add_argument("--seed", type=int, default=0, help="seed of init, crops and order")
    tr.add_argument("--num_threads", type=int, default=1, help="CPU threads (0: torch's default)")

    ev = sub.add_parser("evaluate", help="relevance and probe-FD of generated audio", formatter_class=fmt)
    ev.add_argument("--probe", type=Path, required=True, help="probe state dict written by 'train'")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--gen_dir", type=Path, help="directory of generated .wav files (key = file stem)")
    src.add_argument("--gen_scp", type=Path, help="'<key> <wav path>' file of generated audio")
    ev.add_argument(
        "--gen_mel_scp", type=Path, default=None,
        help="'<key> <npy>' log10 mel (T, n_mels) each generated clip was vocoded from (generate_set's mel.scp): "
        "also score the generator before the vocoder (mel_relevance, mel_probe_fd)",
    )  # fmt: skip
    ev.add_argument("--gen_labels", type=Path, required=True, help="'<key> <query label>' per generated clip")
    ev.add_argument("--ref_dir", type=Path, required=True, help="data dir (wav.scp) of real reference clips")
    ev.add_argument("--output", type=Path, required=True, help="JSON result to write")
    ev.add_argument(
        "--vggish", type=Path, default=None,
        help="VGGish weights (the PyTorch port's vggish-10086976.pth): also FAD (fad_vggish) vs the reference clips",
    )  # fmt: skip
    ev.add_argument(
        "--clap", type=Path, default=None,
        help="local Hugging Face CLAP directory (e.g. laion/clap-htsat-unfused; needs transformers): also the CLAP "
        "score (clap_score), the mean cosine of each clip's CLAP audio embedding and its query text's",
    )  # fmt: skip
    ev.add_argument(
        "--clap_template", default="{}", help="the CLAP text of a query: this with {} replaced by its label"
    )  # fmt: skip
    ev.add_argument(
        "--ref_cache", type=Path, default=None,
        help="directory keeping the reference clips' embeddings, keyed by wav.scp and the weights' files: "
        "later evaluations against the same references read them instead of the audio",
    )  # fmt: skip
    ev.add_argument("--batch_size", type=int, default=16, help="clips per forward pass")
    ev.add_argument("--num_threads", type=int, default=1, help="CPU threads (0: torch's default)")
    return parser


def read_wavs(table: Dict[str, str], source: Path, fs: int) -> List:
    """Waveforms of a ``{key: wav path}`` table, in its order (errors name ``source`` and the key)."""
    from espnet2.tts_diff.probe import read_wav

    wavs = []
    for key, value in table.items():
        if value.rstrip().endswith("|"):
            raise ValueError(f"{source}: {key}: piped commands are not supported, give a wav path")
        wavs.append(read_wav(value, fs))
    return wavs


def labelled_dir(data_dir: Path) -> Tuple[Dict[str, str], Dict[str, str]]:
    """``wav.scp`` and ``utt2label`` of a data dir; every utterance must have a label."""
    from espnet2.enh.clipsep.files.kaldi_table import read_table

    wav_scp, utt2label = data_dir / "wav.scp", data_dir / "utt2label"
    table, labels = read_table(wav_scp), read_table(utt2label)
    if not table:
        raise ValueError(f"{wav_scp}: no utterances")
    for key in table:
        if key not in labels:
            raise ValueError(f"{utt2label}: no label for utterance {key!r}")
    return table, labels


def atomic_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def per_class_accuracy(pred: Sequence[int], target: Sequence[int], classes: Sequence[str]) -> Dict[str, float]:
    out = {}
    for c, name in enumerate(classes):
        hits = [p == t for p, t in zip(pred, target) if t == c]
        if hits:
            out[name] = sum(hits) / len(hits)
    return out


def run_train(args) -> None:
    import torch

    from espnet2.tts_diff.probe import ProbeClassifier, probe_outputs, save_probe, train_probe

    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output}: exists (pass --overwrite to replace it)")
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch_size must be >= 1")
    table, labels = labelled_dir(args.data_dir)
    classes = sorted(set(labels[k] for k in table))
    if len(classes) < 2:
        raise ValueError(f"{args.data_dir / 'utt2label'}: need >= 2 classes, found {classes}")
    ids = {c: i for i, c in enumerate(classes)}
    wavs = read_wavs(table, args.data_dir / "wav.scp", args.fs)
    valid = None
    if args.valid_dir is not None:
        v_table, v_labels = labelled_dir(args.valid_dir)
        unknown = sorted(set(v_labels[k] for k in v_table) - set(classes))
        if unknown:
            raise ValueError(f"{args.valid_dir / 'utt2label'}: label {unknown[0]!r} is not a training class")
        valid = (read_wavs(v_table, args.valid_dir / "wav.scp", args.fs), [ids[v_labels[k]] for k in v_table])
    torch.manual_seed(args.seed)
    conf = dict(embed_dim=args.embed_dim, channels=list(args.channels), fs=args.fs)
    probe = ProbeClassifier(num_classes=len(classes), **conf)
    segment = None if args.segment_seconds is None else int(args.segment_seconds * args.fs)
    report = train_probe(
        probe, wavs, [ids[labels[k]] for k in table], epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, segment=segment, seed=args.seed, progress=not args.quiet,
    )
    report.update(num_clips=len(wavs), classes=classes, num_threads=torch.get_num_threads(), data_dir=str(args.data_dir))
    if valid is not None:
        logits, _ = probe_outputs(probe, valid[0])
        pred = logits.argmax(1).tolist()
        report["valid_dir"] = str(args.valid_dir)
        report["valid_accuracy"] = sum(p == t for p, t in zip(pred, valid[1])) / len(pred)
        report["valid_per_class_accuracy"] = per_class_accuracy(pred, valid[1], classes)
        logging.info("valid accuracy %.3f on %d clips", report["valid_accuracy"], len(pred))
    save_probe(probe, conf, classes, args.output)
    atomic_json(report, args.output.with_suffix(".json"))
    logging.info("trained in %.1f s; wrote %s", report["wall_seconds"], args.output)


def read_mels(table: Dict[str, str], source: Path, keys: Sequence[str], n_mels: int) -> list:
    """The finite ``(T, n_mels)`` arrays of ``keys`` in an npy scp."""
    import numpy as np

    mels = []
    for key in keys:
        if key not in table:
            raise ValueError(f"{source}: no mel for generated clip {key!r}")
        try:
            mel = np.load(table[key])
        except (OSError, ValueError) as err:
            raise ValueError(f"{table[key]}: cannot read an npy array ({err})") from err
        if mel.ndim != 2 or len(mel) == 0 or mel.shape[1] != n_mels or not np.isfinite(mel).all():
            raise ValueError(f"{table[key]}: expected a finite (T, {n_mels}) log-mel, got shape {mel.shape}")
        mels.append(mel)
    return mels


def reference_embeddings(args, ref: Dict[str, str], ref_scp: Path, probe, vggish):
    """Probe (and with ``vggish`` VGGish) embeddings of the reference clips, from ``--ref_cache`` when it has them.

    The cache file is named by a hash of ``ref_scp``'s text and the path, size and mtime of the probe (and VGGish)
    weights, so other references or retrained weights never hit it; it is written under a temporary name.
    """
    import hashlib

    import numpy as np

    from espnet2.tts_diff.probe import probe_outputs

    cache = None
    if args.ref_cache is not None:
        digest = hashlib.sha1(ref_scp.read_bytes())
        for f in (args.probe, args.vggish):
            if f is not None:
                st = Path(f).stat()
                digest.update(f"|{Path(f).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        cache = args.ref_cache / f"ref_{digest.hexdigest()[:16]}.npz"
        if cache.is_file():
            with np.load(cache) as data:
                logging.info("reference embeddings from %s", cache)
                return data["probe"], (data["vggish"] if vggish is not None else None)
    bar = None if args.quiet else "probe reference"
    wavs = read_wavs(ref, ref_scp, probe.fs)
    probe_emb = probe_outputs(probe, wavs, args.batch_size, progress=bar)[1].numpy()
    vggish_emb = None
    if vggish is not None:
        from espnet2.tts_diff.fad import vggish_embeddings

        vggish_emb = vggish_embeddings(vggish, wavs, probe.fs, progress=bar and "VGGish reference")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, probe=probe_emb, **({} if vggish_emb is None else {"vggish": vggish_emb}))
        os.replace(tmp, cache)
    return probe_emb, vggish_emb


def run_evaluate(args) -> None:
    from espnet2.enh.clipsep.files.kaldi_table import read_table
    from espnet2.tts_diff.probe import frechet_distance, load_probe, probe_outputs

    probe, classes = load_probe(args.probe)
    if args.gen_dir is not None:
        if not args.gen_dir.is_dir():
            raise FileNotFoundError(f"{args.gen_dir}: directory not found")
        gen = {p.stem: str(p) for p in sorted(args.gen_dir.glob("*.wav"))}
        if not gen:
            raise ValueError(f"{args.gen_dir}: no .wav files")
        gen_source = args.gen_dir
    else:
        gen, gen_source = read_table(args.gen_scp), args.gen_scp
        if not gen:
            raise ValueError(f"{args.gen_scp}: no entries")
    query = read_table(args.gen_labels)
    ids = {c: i for i, c in enumerate(classes)}
    target = []
    for key in gen:
        if key not in query:
            raise ValueError(f"{args.gen_labels}: no label for generated clip {key!r}")
        if query[key] not in ids:
            raise ValueError(f"{args.gen_labels}: label {query[key]!r} of {key!r} is not a probe class")
        target.append(ids[query[key]])
    ref_scp = args.ref_dir / "wav.scp"
    ref = read_table(ref_scp)
    if len(gen) < 2 or len(ref) < 2:
        raise ValueError(f"probe-FD needs >= 2 generated and >= 2 reference clips, got {len(gen)} and {len(ref)}")
    vggish = None
    if args.vggish is not None:  # loaded first: missing weights fail before any audio is read
        from espnet2.tts_diff.fad import load_vggish

        vggish = load_vggish(args.vggish)
    clap = None
    if args.clap is not None:  # likewise: a missing model or transformers fails before any audio is read
        from espnet2.tts_diff.clap import load_clap

        rest = args.clap_template.replace("{}", "")
        if args.clap_template.count("{}") != 1 or "{" in rest or "}" in rest:
            raise ValueError(f"--clap_template {args.clap_template!r}: needs one {{}} (the label) and no other braces")
        clap = load_clap(args.clap)
    bar = None if args.quiet else "probe"
    gen_wavs = read_wavs(gen, gen_source, probe.fs)
    mels = None
    if args.gen_mel_scp is not None:  # read (and checked) before any audio goes through the probe
        n_mels = probe.feats.get_parameters()["n_mels"]
        mels = read_mels(read_table(args.gen_mel_scp), args.gen_mel_scp, list(gen), n_mels)
    gen_logits, gen_emb = probe_outputs(probe, gen_wavs, args.batch_size, progress=bar)
    ref_emb, ref_vggish = reference_embeddings(args, ref, ref_scp, probe, vggish)
    pred = gen_logits.argmax(1).tolist()
    result = {
        "relevance": sum(p == t for p, t in zip(pred, target)) / len(pred),
        "relevance_chance": 1.0 / len(classes),
        "relevance_per_class": per_class_accuracy(pred, target, classes),
        # per clip, whether the probe heard the query class: paired comparisons of two modes on the same keys
        "correct": {key: int(p == t) for key, p, t in zip(gen, pred, target)},
        "probe_fd": frechet_distance(gen_emb, ref_emb),
        "probe_fd_note": "Frechet distance between Gaussians of the probe's embeddings (not FAD)",
        "num_generated": len(gen),
        "num_reference": len(ref),
        "probe": str(args.probe),
        "reference": str(args.ref_dir),
    }
    if mels is not None:
        mel_logits, mel_emb = probe_outputs(probe, mels, args.batch_size, mels=True, progress=bar and "probe mel")
        mel_pred = mel_logits.argmax(1).tolist()
        result["mel_relevance"] = sum(p == t for p, t in zip(mel_pred, target)) / len(mel_pred)
        result["mel_correct"] = {key: int(p == t) for key, p, t in zip(gen, mel_pred, target)}
        result["mel_probe_fd"] = frechet_distance(mel_emb, ref_emb)
        result["mel_note"] = "the same figures on the mel given to the vocoder (the generator alone)"
        logging.info("before the vocoder: relevance %.3f, probe-FD %.3f", result["mel_relevance"], result["mel_probe_fd"])
    if vggish is not None:
        from espnet2.tts_diff.fad import frechet_audio_distance, vggish_embeddings

        gen_vggish = vggish_embeddings(vggish, gen_wavs, probe.fs, progress=bar and "VGGish")
        result["fad_vggish"] = frechet_audio_distance(gen_vggish, ref_vggish)
        result["fad_note"] = f"FAD: Frechet distance of VGGish embeddings of 0.96-s examples ({args.vggish})"
        logging.info("FAD (VGGish) %.3f", result["fad_vggish"])
    if clap is not None:
        from espnet2.tts_diff.clap import clap_scores, mean_and_sem

        texts = [args.clap_template.format(query[key]) for key in gen]
        scores = clap_scores(*clap, gen_wavs, probe.fs, texts, args.batch_size, progress=bar and "CLAP")
        result["clap_score"], result["clap_score_sem"] = mean_and_sem(scores)
        result["clap_note"] = (
            f"CLAP score: mean cosine similarity of each clip's CLAP audio embedding and the text embedding of "
            f"{args.clap_template!r} with its query label ({args.clap}); clap_score_sem: its standard error"
        )
        logging.info("CLAP score %.3f ± %.3f", result["clap_score"], result["clap_score_sem"])
    atomic_json(result, args.output)
    logging.info(
        "relevance %.3f (chance %.3f), probe-FD %.3f; wrote %s",
        result["relevance"], result["relevance_chance"], result["probe_fd"], args.output,
    )


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [probe] %(levelname)s: %(message)s")
    try:
        import torch

        if args.num_threads > 0:
            torch.set_num_threads(args.num_threads)
        (run_train if args.command == "train" else run_evaluate)(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError, ImportError) as err:
        print(f"probe: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
