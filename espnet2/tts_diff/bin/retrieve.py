"""The retrieval baseline for a set of text queries: the audio of the training clip nearest to each query.

For every query key (a CLIP text embedding in ``--text_scp``), the training clip (``--bank_scp``: their CLIP
image embeddings, ``(D,)`` or per-frame stacks ``(F, D)`` reduced to their ``--image_frames`` middle frames) of
highest cosine similarity is picked, and its audio (``--bank_wav_scp``), cropped around its centre to the
generated length, is written as the query's clip. The length is ``--num_samples``, or that of the generator
whose ``config.yaml`` is ``--train_config`` (``inference_frames``, or ``--gen_frames`` as ``generate_set
--num_frames``, x the mel hop), so the clips are scored like the generated ones (``espnet2.tts_diff.bin.probe evaluate``). See :mod:`espnet2.tts_diff.retrieval`.

Writes what ``espnet2.tts_diff.bin.generate_set`` writes, apart from the mel: ``<output_dir>/wav/<key>.wav``
(16-bit, temporary names, then renamed), ``wav.scp``, ``utt2label`` (with ``--utt2label``: evaluation only,
and ``--max_per_class`` picks the first keys of each class), ``generate.json`` (``mode: retrieval``, wall time,
real-time factor), and ``retrieved.tsv``: ``<query key>\\t<training key>\\t<cosine>`` per query.

Example (from egs2/clipsep/tts1):
    python -m espnet2.tts_diff.bin.retrieve --text_scp dump/mini/raw/test/text_spembs.scp \\
        --bank_scp dump/mini/raw/train/spembs.scp --bank_wav_scp dump/mini/raw/train/wav.scp \\
        --train_config exp/mini/tts_clipsonic_vocoder/config.yaml --utt2label dump/mini/raw/test/utt2label \\
        --output_dir exp/mini/retrieval/gen_test_retrieval
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.retrieve",
        description="Retrieval baseline: per text query, the audio of the training clip of nearest CLIP image "
        "embedding (cosine), centre-cropped to the generated length.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--text_scp", type=Path, required=True, help="the queries' CLIP text embeddings (D,)")
    parser.add_argument("--bank_scp", type=Path, required=True,
                        help="the training clips' CLIP image embeddings, (D,) or per-frame (F, D)")
    parser.add_argument("--bank_wav_scp", type=Path, required=True, help="the training clips' audio")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--num_samples", type=int, help="samples per clip")
    length.add_argument("--train_config", type=Path,
                        help="a generator's config.yaml: its inference_frames x hop_length samples, its fs")
    parser.add_argument("--gen_frames", type=int, default=None,
                        help="with --train_config: mel frames per clip (generate_set --num_frames; default: the config's)")
    parser.add_argument("--fs", type=int, default=None, help="sampling rate (default: the config's, or 16000)")
    parser.add_argument("--image_frames", type=int, default=3, help="middle frames averaged from a per-frame stack")
    parser.add_argument("--utt2label", type=Path, default=None, help="'<key> <query class>' (evaluation only)")
    parser.add_argument("--max_per_class", type=int, default=0, help="first N keys per class (0: all)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where wav/, wav.scp, utt2label go")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def generated_length(train_config: Path, frames: Optional[int] = None) -> Tuple[int, int]:
    """``(samples, fs)`` of a generator's clips from its ``config.yaml``: ``frames`` (default ``inference_frames``
    or ``segment_frames``) mel frames of ``hop_length`` samples, as ``generate_set`` makes them."""
    import yaml

    if not train_config.is_file():
        raise FileNotFoundError(f"{train_config}: file not found")
    conf = yaml.safe_load(train_config.read_text(encoding="utf-8")) or {}
    tts = conf.get("tts_conf") or {}
    feats = conf.get("feats_extract_conf") or {}
    frames = frames or tts.get("inference_frames") or tts.get("segment_frames") or 128
    hop = feats.get("hop_length", 512)
    fs = tts.get("fs") or feats.get("fs") or 16000
    return int(frames) * int(hop), int(fs)


def load_array(value: str, key: str, source: Path):
    """The array an scp entry names (``.npy`` path or kaldi ark ``path:offset``); one error line otherwise."""
    import kaldiio
    import numpy as np

    try:
        return np.asarray(np.load(value) if value.endswith(".npy") else kaldiio.load_mat(value), dtype=np.float32)
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: {key}: cannot read {value} ({err})") from err


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [retrieve] %(levelname)s: %(message)s")
    try:
        import numpy as np
        from tqdm import tqdm

        from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic
        from espnet2.enh.clipsep.files.writing import write_wav_atomic
        from espnet2.tts_diff.bin.generate_set import select_keys
        from espnet2.tts_diff.probe import read_wav
        from espnet2.tts_diff.retrieval import centre_crop, clip_embedding, nearest

        if args.train_config is not None:
            num_samples, fs = generated_length(args.train_config, args.gen_frames)
        else:
            num_samples, fs = args.num_samples, 16000
        fs = args.fs or fs
        if num_samples < 1 or args.image_frames < 1:
            raise ValueError("--num_samples, --gen_frames and --image_frames must be positive")
        for p in (args.text_scp, args.bank_scp, args.bank_wav_scp):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: file not found")
        queries = read_table(args.text_scp)
        labels = read_table(args.utt2label) if args.utt2label is not None else None
        keys = select_keys(list(queries), labels, args.max_per_class, args.text_scp)
        if not keys:
            raise ValueError(f"{args.text_scp}: no entries")
        bank_table, bank_wavs = read_table(args.bank_scp), read_table(args.bank_wav_scp)
        bank_keys = sorted(bank_table)
        if not bank_keys:
            raise ValueError(f"{args.bank_scp}: no entries")
        missing = [k for k in bank_keys if k not in bank_wavs]
        if missing:
            raise ValueError(f"{args.bank_wav_scp}: no audio for {len(missing)} clip(s) of {args.bank_scp}, e.g. {missing[0]!r}")

        start = time.perf_counter()
        bank = np.stack([clip_embedding(load_array(bank_table[k], k, args.bank_scp), args.image_frames) for k in bank_keys])
        texts = np.stack([load_array(queries[k], k, args.text_scp) for k in keys])
        if texts.ndim != 2:
            raise ValueError(f"{args.text_scp}: expected (D,) embeddings, got shape {texts.shape[1:]}")
        if texts.shape[1] != bank.shape[1]:
            raise ValueError(f"{args.text_scp}: embeddings of size {texts.shape[1]}, {args.bank_scp}: {bank.shape[1]}")
        index, cosine = nearest(texts, bank)

        wav_dir = args.output_dir / "wav"
        wav_dir.mkdir(parents=True, exist_ok=True)
        out_scp: Dict[str, str] = {}
        out_labels: Dict[str, str] = {}
        lines = []
        for key, j, cos in tqdm(zip(keys, index, cosine), total=len(keys), desc="retrieve", unit="clip",
                                disable=args.quiet):  # fmt: skip
            match = bank_keys[int(j)]
            audio = centre_crop(read_wav(bank_wavs[match], fs), num_samples)
            path = wav_dir / f"{key}.wav"
            write_wav_atomic(path, np.clip(audio, -1.0, 1.0), fs, subtype="PCM_16")
            out_scp[key] = str(path.resolve())
            if labels is not None:
                out_labels[key] = labels[key]
            lines.append(f"{key}\t{match}\t{cos:.6f}\n")
        wall = time.perf_counter() - start
        write_table_atomic(args.output_dir / "wav.scp", out_scp)
        if labels is not None:
            write_table_atomic(args.output_dir / "utt2label", out_labels)
        tmp = args.output_dir / "retrieved.tsv.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, args.output_dir / "retrieved.tsv")
        audio_seconds = len(keys) * num_samples / fs
        report = dict(
            mode="retrieval", source=str(args.text_scp), bank=str(args.bank_scp), bank_size=len(bank_keys),
            num_clips=len(keys), num_samples=num_samples, image_frames=args.image_frames, wall_seconds=round(wall, 2),
            audio_seconds=round(audio_seconds, 2), rtf=round(wall / audio_seconds, 4),
            mean_cosine=round(float(np.mean(cosine)), 6),
        )  # fmt: skip
        tmp = args.output_dir / "generate.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.output_dir / "generate.json")
        logging.info("%d clips (retrieval from %d training clips, mean cosine %.3f) in %.1f s; wrote %s",
                     len(keys), len(bank_keys), report["mean_cosine"], wall, args.output_dir)  # fmt: skip
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"retrieve: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
