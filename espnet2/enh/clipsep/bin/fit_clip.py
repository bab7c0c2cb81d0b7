"""Fit a (tiny) open_clip model on labelled images: the offline stand-in for web-scale CLIP weights.

Reads ``<image path>\\t<label words>`` lines, trains contrastively with captions from the prompt templates
(one image per label per batch), and writes a plain ``state_dict`` that ``CLIPQueryEncoder(<clip_model>,
pretrained=<output>)`` and ``embed --clip_model <clip_model> --clip_pretrained <output>`` load, plus
``<output>.json`` with the fit report (steps, wall seconds, losses, same-label vs cross-label text-image cosine
and nearest-label accuracy on ``--valid_pairs``, or on the training pairs when none are given). Images are
decoded from disk at every step, so memory does not grow with the number of pairs.

Examples:
    python -m espnet2.enh.clipsep.bin.fit_clip --pairs data/clip_pretrain/train.tsv \\
        --valid_pairs data/clip_pretrain/valid.tsv --output exp/clip/clipsep_tiny.pt
    python -m espnet2.enh.clipsep.bin.fit_clip --pairs pairs.tsv --clip_model ViT-B-32 \\
        --init_pretrained vit_b_32_openai.pt --lr 1e-5 --steps 500 --output exp/clip/vit_b_32_ft.pt
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.fit_clip",
        description="Fit an open_clip model contrastively on (image, label) pairs with prompt-template captions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pairs", type=Path, required=True, help="TSV: '<image path>\\t<label words>' per line")
    parser.add_argument("--valid_pairs", type=Path, default=None, help="held-out pairs for the report")
    parser.add_argument(
        "--output", type=Path, default=Path("exp/clip/clipsep_tiny.pt"), help="state_dict to write (+ .json report)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--clip_model", default="clipsep-tiny", help="open_clip model name or JSON config")
    parser.add_argument(
        "--init_pretrained", default="none", help="starting weights: open_clip tag, local checkpoint or none"
    )
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps")
    parser.add_argument("--batch_size", type=int, default=32, help="images per step, one per label (capped)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight_decay", type=float, default=0.1, help="AdamW weight decay of matrices")
    parser.add_argument("--warmup_steps", type=int, default=50, help="linear warm-up, then cosine decay")
    parser.add_argument(
        "--templates", nargs="+", default=None, help="caption templates ('{}' = label); None: CLIPSep's 4"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of init, batches, captions and augmentation")
    parser.add_argument("--device", default="auto", help="cpu, cuda[:n] or auto")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=1,
        help="CPU threads (0: torch's default); the tiny model gains little from more, and contended cores cost 4x",
    )
    parser.add_argument(
        "--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level"
    )
    return parser


def write_report(report: dict, path: Path) -> None:
    """Write the fit report as indented JSON under a temporary name, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [fit_clip] %(levelname)s: %(message)s")
    try:
        from espnet2.enh.clipsep.clip.fit import fit_clip, read_pairs, save_state_dict
        from espnet2.enh.clipsep.clip.encoder import CLIPSEP_TEMPLATES

        if args.output.exists() and not args.overwrite:
            raise FileExistsError(f"{args.output}: exists (pass --overwrite to replace it)")
        pairs = read_pairs(args.pairs)
        valid = read_pairs(args.valid_pairs) if args.valid_pairs is not None else None
        result = fit_clip(
            pairs,
            valid_pairs=valid,
            clip_model=args.clip_model,
            init_pretrained=None if args.init_pretrained.lower() == "none" else args.init_pretrained,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            templates=args.templates or CLIPSEP_TEMPLATES,
            seed=args.seed,
            device=args.device,
            num_threads=args.num_threads,
        )
        save_state_dict(result.encoder.model, args.output)
        report_path = args.output.with_name(args.output.name + ".json")
        valid_name = None if args.valid_pairs is None else str(args.valid_pairs)
        write_report({**result.report, "pairs": str(args.pairs), "valid_pairs": valid_name}, report_path)
        r = result.report
        logging.info(
            "%d steps in %.1f s: loss %.3f -> %.3f (chance %.3f)",
            r["steps"], r["wall_seconds"], r["initial_loss"], r["final_loss"], r["chance_loss"],
        )
        logging.info(
            "on %s pairs (%d images, %d labels): text-image cosine same label %.3f vs different labels %.3f, "
            "nearest-label accuracy %.1f %%",
            r["evaluated_on"], r["num_images"], r["num_labels"], r["same_label_cosine"], r["cross_label_cosine"],
            100 * r["nearest_label_accuracy"],
        )
        logging.info("wrote %s and %s", args.output, report_path)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as err:
        print(f"fit_clip: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
