#!/usr/bin/env python3
"""TTS-task data dirs for CLIPSonic from the separation recipe's data dirs and cached CLIP embeddings.

For every set, ``<output_dir>/<set>/`` gets what ESPnet's TTS task reads:

- ``wav.scp``    the 16 kHz clips (from ``<data_dir>/<set>/wav.scp``);
- ``text``       one dummy token per clip (``TTSTask`` requires text; the model ignores it, no label is used);
- ``spembs.scp`` the CLIP *image* embeddings as ``spembs``: per-frame stacks ``(F, D)`` for the training set
  (``image_frames.scp``), 3-frame centre means ``(D,)`` for the others (``image.scp``);
- test sets also ``text_spembs.scp`` (the CLIP *text* embeddings of the query labels, ``text.scp``) and
  ``utt2label`` (evaluation only: the query class of each clip); the validation set ``text_spembs.scp`` too
  when its ``text.scp`` exists (the validation queries of the text-trained systems);
- with ``--train_text_scp`` (the training clips' label-text embeddings), the training set also
  ``hybrid_spembs.scp``: per clip a stack ``(1 + F, D)``, the label text's embedding in row 0 and the frames
  after it, for CLIPSynth-Text / -Hybrid (``tts_conf.text_cond_prob``; these use the labels).

and ``<output_dir>/tokens.txt`` is the matching token list. Relative paths inside the embedding scp files are
resolved against ``--base_dir`` (the directory the separation recipe ran in) and written absolute, so the
files work from any directory. Every clip must have its embedding; files are written atomically.

Example (from egs2/clipsep/tts1):
    python local/prepare_tts_data.py --data_dir ../enh1/data/mini --clip_dir ../enh1/dump/mini/clip \\
        --base_dir ../enh1 --output_dir dump/mini/raw [--train_text_scp dump/mini/clip/train/text.scp]
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Dict

import numpy as np

from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic

TOKEN = "clip"
TOKENS = ("<blank>", "<unk>", TOKEN, "<sos/eos>")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/prepare_tts_data.py",
        description="TTS-task data dirs (wav.scp, dummy text, CLIP embeddings as spembs) for CLIPSonic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="parent of the Kaldi-style set dirs")
    parser.add_argument("--clip_dir", type=Path, required=True, help="parent of the per-set CLIP embedding dirs")
    parser.add_argument("--base_dir", type=Path, default=Path("."), help="relative scp paths resolve against it")
    parser.add_argument("--output_dir", type=Path, required=True, help="where <set>/ and tokens.txt go")
    parser.add_argument("--train_set", default="train", help="training set (per-frame image embeddings)")
    parser.add_argument("--valid_set", default="valid", help="validation set (image embeddings)")
    parser.add_argument("--test_sets", nargs="+", default=["test"], help="test sets (+ text embeddings, labels)")
    parser.add_argument("--train_text_scp", type=Path, default=None,
                        help="the training clips' label-text CLIP embeddings: also write hybrid_spembs.scp")
    return parser


def resolved(scp: Path, base_dir: Path) -> Dict[str, str]:
    """``{key: absolute path}`` of an scp whose relative paths are relative to ``base_dir``."""
    out = {}
    for key, value in read_table(scp).items():
        path = Path(value)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"{scp}: {key}: {path} not found")
        out[key] = str(path.resolve())
    return out


def matched(table: Dict[str, str], keys, source: Path) -> Dict[str, str]:
    missing = [k for k in keys if k not in table]
    if missing:
        raise ValueError(f"{source}: no entry for {len(missing)} clip(s), e.g. {missing[0]!r} (rerun stage 1)")
    return {k: table[k] for k in keys}


def load_array(value: str, key: str, source: Path) -> np.ndarray:
    """The float32 array an scp entry names (``.npy`` file or kaldi ark ``path:offset``)."""
    import kaldiio

    try:
        return np.asarray(np.load(value) if value.endswith(".npy") else kaldiio.load_mat(value), dtype=np.float32)
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: {key}: cannot read {value} ({err})") from err


def hybrid_stacks(frames: Dict[str, str], texts: Dict[str, str], out_dir: Path, sources) -> Dict[str, str]:
    """``{key: npy path}`` of ``(1 + F, D)`` stacks: the text embedding in row 0, then the image frame(s)."""
    data = out_dir / "data" / "hybrid_spembs"
    data.mkdir(parents=True, exist_ok=True)
    table = {}
    for key in frames:
        image = load_array(frames[key], key, sources[0])
        text = load_array(texts[key], key, sources[1])
        if text.ndim != 1 or image.shape[-1] != text.shape[0]:
            raise ValueError(f"{sources[1]}: {key}: text embedding {text.shape} does not match frames {image.shape}")
        path = data / f"{key}.npy"
        tmp = path.with_name(f".{key}.tmp.npy")
        np.save(tmp, np.concatenate([text[None], image.reshape(-1, text.shape[0])]).astype(np.float32))
        os.replace(tmp, path)
        table[key] = str(path.resolve())
    return table


def prepare_set(args, name: str, image_name: str, test: bool) -> int:
    src, out = args.data_dir / name, args.output_dir / name
    wavs = read_table(src / "wav.scp")
    if not wavs:
        raise ValueError(f"{src / 'wav.scp'}: no clips")
    clip = args.clip_dir / name
    files = {
        "wav.scp": wavs,
        "text": {k: TOKEN for k in wavs},
        "spembs.scp": matched(resolved(clip / f"{image_name}.scp", args.base_dir), wavs, clip / f"{image_name}.scp"),
    }
    if test or (name == args.valid_set and (clip / "text.scp").is_file()):
        files["text_spembs.scp"] = matched(resolved(clip / "text.scp", args.base_dir), wavs, clip / "text.scp")
    if test:
        files["utt2label"] = matched(read_table(src / "utt2label"), wavs, src / "utt2label")
    out.mkdir(parents=True, exist_ok=True)
    if name == args.train_set and args.train_text_scp is not None:
        texts = matched(resolved(args.train_text_scp, args.base_dir), wavs, args.train_text_scp)
        files["hybrid_spembs.scp"] = hybrid_stacks(
            files["spembs.scp"], texts, out, (clip / f"{image_name}.scp", args.train_text_scp)
        )
    for fname, table in files.items():
        write_table_atomic(out / fname, table)
    return len(wavs)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        counts = [f"{args.train_set}: {prepare_set(args, args.train_set, 'image_frames', False)}"]
        counts.append(f"{args.valid_set}: {prepare_set(args, args.valid_set, 'image', False)}")
        counts += [f"{t}: {prepare_set(args, t, 'image', True)}" for t in args.test_sets]
        tokens = args.output_dir / "tokens.txt"
        tmp = tokens.with_name(tokens.name + ".tmp")
        tmp.write_text("".join(t + "\n" for t in TOKENS), encoding="utf-8")
        tmp.replace(tokens)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"prepare_tts_data: error: {err}", file=sys.stderr)
        return 2
    print(f"prepare_tts_data: wrote {args.output_dir} ({', '.join(counts)} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
