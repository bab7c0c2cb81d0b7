"""Train the CLIPSonic-PD diffusion prior (CLIP text embedding -> CLIP image embedding).

The prior learns from (image, caption) pairs, never from audio. Pairs come either as cached embeddings
(``--image_scp`` + ``--text_scp``, npy or kaldi_ark scp files with the same keys; an image entry of shape
``(num_frames, D)`` gives one pair per frame) or as a pairs file (``--pairs``: ``<image path>\\t<caption>`` per
line) encoded here with :class:`~espnet2.enh.clipsep.clip.encoder.CLIPQueryEncoder` (captions are template-ensembled,
as text queries are at test time). ESPnet has no embedding-to-embedding task, so training is a small
self-contained loop (:func:`espnet2.tts_diff.prior.fit_prior`). Writes ``<output>`` (state dict),
``<output>.yaml`` (the prior's conf; suffix replaced) and ``<output>.json`` (report).

Examples:
    python -m espnet2.tts_diff.bin.train_prior --pairs downloads/mini/clip_pretrain/pairs.tsv \\
        --clip_model clipsep-tiny --clip_pretrained exp/mini/clip/clipsep-tiny.pt --output exp/mini/prior/prior.pt
    python -m espnet2.tts_diff.bin.train_prior --image_scp dump/clip/pretrain/image.scp \\
        --text_scp dump/clip/pretrain/text.scp --output exp/prior/prior.pt
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from espnet2.utils.types import str2bool


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.train_prior",
        description="Train a diffusion prior mapping CLIP text embeddings to CLIP image embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--image_scp", type=Path, help="npy/kaldi_ark scp of image embeddings, (D,) or (F, D)")
    src.add_argument("--pairs", type=Path, help="TSV: '<image path>\\t<caption>' per line")
    parser.add_argument("--text_scp", type=Path, default=None, help="with --image_scp: text embeddings, same keys")
    parser.add_argument("--clip_model", default="ViT-B-32", help="with --pairs: open_clip model name or JSON config")
    parser.add_argument("--clip_pretrained", default="openai", help="with --pairs: open_clip tag or checkpoint")
    parser.add_argument("--templates", nargs="+", default=None, help="with --pairs: caption templates (CLIPSep's)")
    parser.add_argument("--output", type=Path, required=True, help="state dict to write (+ .yaml, .json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    group = parser.add_argument_group("prior")
    group.add_argument("--d_model", type=int, default=256, help="transformer width")
    group.add_argument("--num_layers", type=int, default=4, help="transformer layers")
    group.add_argument("--num_heads", type=int, default=4, help="attention heads")
    group.add_argument("--num_steps", type=int, default=1000, help="diffusion steps (cosine schedule)")
    group.add_argument("--cond_drop_prob", type=float, default=0.1, help="text dropout for guidance")
    group.add_argument("--predict", choices=("x0", "eps"), default="x0", help="network target")
    group.add_argument("--renorm_x0", type=str2bool, default=True, help="project predicted x0 onto the sphere")
    group = parser.add_argument_group("training")
    group.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    group.add_argument("--batch_size", type=int, default=64, help="pairs per step")
    group.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate")
    group.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    group.add_argument("--warmup_steps", type=int, default=100, help="linear warm-up, then cosine decay")
    group.add_argument("--seed", type=int, default=0, help="seed of init and training randomness")
    group.add_argument("--device", default="cpu", help="cpu, cuda[:n] or auto (training and CLIP)")
    group.add_argument("--num_threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def read_embeddings(scp: Path) -> Dict[str, np.ndarray]:
    """``{key: float32 array}`` of an npy or kaldi_ark scp (errors name the scp and key)."""
    import kaldiio

    from espnet2.enh.clipsep.files.kaldi_table import read_table

    out = {}
    for key, value in read_table(scp).items():
        try:
            arr = np.load(value) if value.endswith(".npy") else kaldiio.load_mat(value)
        except (OSError, ValueError) as err:
            raise ValueError(f"{scp}: {key}: cannot read {value} ({err.__class__.__name__}: {err})") from err
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
            raise ValueError(f"{scp}: {key}: expected shape (D,) or (F, D), got {arr.shape}")
        out[key] = arr
    if not out:
        raise ValueError(f"{scp}: no entries")
    return out


def pairs_from_scp(image_scp: Path, text_scp: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Stacked ``(N, D)`` image and ``(N, D_text)`` text embeddings of matching keys (one row per frame)."""
    images, texts = read_embeddings(image_scp), read_embeddings(text_scp)
    img_rows, txt_rows = [], []
    for key, img in images.items():
        if key not in texts:
            raise ValueError(f"{text_scp}: no text embedding for key {key!r} of {image_scp}")
        txt = texts[key]
        if txt.ndim != 1:
            raise ValueError(f"{text_scp}: {key}: expected a (D,) text embedding, got {txt.shape}")
        img = img[None] if img.ndim == 1 else img
        img_rows.append(img)
        txt_rows.append(np.repeat(txt[None], len(img), axis=0))
    dims = {a.shape[1] for a in img_rows}
    if len(dims) != 1:
        raise ValueError(f"{image_scp}: entries have different dimensions {sorted(dims)}")
    return np.concatenate(img_rows), np.concatenate(txt_rows)


def pairs_from_tsv(args) -> Tuple[np.ndarray, np.ndarray]:
    """Encode the images and captions of a pairs file with CLIP."""
    from tqdm import tqdm

    from espnet2.enh.clipsep.clip.fit import read_pairs
    from espnet2.enh.clipsep.clip.encoder import CLIPSEP_TEMPLATES, CLIPQueryEncoder

    pairs = read_pairs(args.pairs)
    encoder = CLIPQueryEncoder(
        args.clip_model,
        None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
        device=args.device,
        templates=args.templates or CLIPSEP_TEMPLATES,
    )
    encoder.model  # a missing checkpoint fails before any progress output
    captions = sorted({p.label for p in pairs})
    text = dict(zip(captions, encoder.encode_text(captions).numpy()))
    images = []
    bs = encoder.batch_size
    for i in tqdm(range(0, len(pairs), bs), desc="encode images", unit="batch"):
        images.append(encoder.encode_images([[p.image] for p in pairs[i : i + bs]]).numpy())
    return np.concatenate(images), np.stack([text[p.label] for p in pairs])


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [train_prior] %(levelname)s: %(message)s")
    try:
        import torch

        from espnet2.tts_diff.prior import DiffusionPrior, fit_prior, save_prior

        if args.num_threads > 0:
            torch.set_num_threads(args.num_threads)
        if args.output.exists() and not args.overwrite:
            raise FileExistsError(f"{args.output}: exists (pass --overwrite to replace it)")
        if (args.image_scp is None) != (args.text_scp is None):
            raise ValueError("--text_scp goes with --image_scp (and not with --pairs)")
        if args.steps < 1 or args.batch_size < 1:
            raise ValueError("--steps and --batch_size must be >= 1")
        if args.image_scp is not None:
            image, text = pairs_from_scp(args.image_scp, args.text_scp)
            source = {"image_scp": str(args.image_scp), "text_scp": str(args.text_scp)}
        else:
            image, text = pairs_from_tsv(args)
            source = {"pairs": str(args.pairs), "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained}
        logging.info("%d pairs: image dim %d, text dim %d", len(image), image.shape[1], text.shape[1])
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        torch.manual_seed(args.seed)
        conf = dict(
            embed_dim=int(image.shape[1]), text_dim=int(text.shape[1]), d_model=args.d_model,
            num_layers=args.num_layers, num_heads=args.num_heads, num_steps=args.num_steps,
            cond_drop_prob=args.cond_drop_prob, predict=args.predict, renorm_x0=args.renorm_x0,
        )
        prior = DiffusionPrior(**conf).to(device)
        report = fit_prior(
            prior, torch.from_numpy(image), torch.from_numpy(text), steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, seed=args.seed,
        )
        report.update(num_pairs=len(image), num_threads=torch.get_num_threads(), image_norm=float(prior.image_norm),
                      **source)
        save_prior(prior, conf, args.output, extra=source)
        report_path = args.output.with_suffix(".json")
        tmp = report_path.with_name(report_path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, report_path)
        logging.info(
            "%d steps in %.1f s: loss %.4f -> %.4f; wrote %s",
            report["steps"], report["wall_seconds"], report["initial_loss"], report["final_loss"], args.output,
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as err:
        print(f"train_prior: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
