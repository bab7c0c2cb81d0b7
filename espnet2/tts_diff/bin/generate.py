"""Generate audio from text or image queries with a trained CLIPSonic model: ``<out>/<query>_<k>.wav``.

A thin command line over :class:`espnet2.tts_diff.generate.Generator`. MODEL is a packed zip
(``espnet2.bin.pack tts``), an experiment directory or an ``espnet_model_zoo`` tag. Sample ``k`` of each query
is drawn with seed ``--seed + k``, so ``--seed 3 --num 1`` reproduces ``<query>_3.wav`` of a ``--seed 0 --num 4``
run. Files are written under a temporary name and renamed; existing outputs are refused unless ``--overwrite``
(checked before anything is generated). A bad input prints one ``error: <file>: <problem>`` line (exit status 2).

Examples:
    python -m espnet2.tts_diff.bin.generate --model packed.zip --text "playing violin" --num 4 -o out
    python -m espnet2.tts_diff.bin.generate --model exp/tts_clipsonic --text "dog barking" --mode pd -o out
    python -m espnet2.tts_diff.bin.generate --model packed.zip --image frame.jpg --image clip.mp4 -o out
    python -m espnet2.tts_diff.bin.generate --model exp/vitl14/tts_clipsonic --text "dog barking" --mode pd \
        --prior laion_prior/latest.pth -o out   # LAION's DALL·E 2 prior (prior_config.json beside it)

Reference:
    H.-W. Dong et al., "CLIPSonic: Text-to-Audio Synthesis with Unlabeled Videos and Pretrained
    Language-Vision Models", WASPAA 2023.
"""

import argparse
import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import List


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.generate",
        description="Generate audio from text (ZS, PD) or image (IQ) queries with a trained CLIPSonic model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="packed zip, experiment dir or espnet_model_zoo tag")
    parser.add_argument("-o", "--output_dir", type=Path, required=True, help="where <query>_<k>.wav go")
    parser.add_argument("--text", action="append", default=[], help="text query (repeatable)")
    parser.add_argument(
        "--image", action="append", default=[], type=Path,
        help="image query: a picture, a video (3 frames at 1 fps around its middle) or a frames dir; repeatable",
    )  # fmt: skip
    parser.add_argument("--mode", choices=("zs", "pd", "iq"), default=None,
                        help="zs: CLIP text embedding; pd: text -> diffusion prior; iq: images (default: zs for "
                        "text, iq for images)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance weight w (0: none)")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default="dpmpp", help="sampler")
    parser.add_argument("--seed", type=int, default=0, help="sample k of each query uses seed + k")
    parser.add_argument("--num", type=int, default=1, help="samples per query")
    parser.add_argument("--num_frames", type=int, default=None, help="mel frames (default: the model's segment)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="samples generated at once (the same samples whatever its value, up to float rounding)")
    parser.add_argument("--prior", type=Path, default=None,
                        help="diffusion prior: train_prior's file (its .yaml beside it; default: found beside the "
                        "model) or LAION's DALL-E 2 prior latest.pth/best.pth (prior_config.json beside it; the model "
                        "must be trained on CLIP ViT-L-14/openai embeddings)")  # fmt: skip
    parser.add_argument("--prior_clip_pretrained", default=None,
                        help="LAION prior: its CLIP ViT-L-14 weights, an open_clip tag or a local file (default: openai)")
    parser.add_argument("--prior_steps", type=int, default=64, help="sampling steps of the prior")
    parser.add_argument("--prior_guidance", type=float, default=0.0, help="guidance weight of the prior (LAION's: 0)")
    parser.add_argument("--clip_model", default=None, help="open_clip model (default: the recipe's, else ViT-B-32)")
    parser.add_argument("--clip_pretrained", default=None, help="open_clip tag or weights file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--cache_dir", type=Path, default=None, help="espnet_model_zoo cache (its default)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--log_level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar (errors and warnings still print)")
    return parser


def _import_quietly():
    """Import the generator module; ESPnet's TTS import prints unrelated noise (nltk downloads, flash-attn)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import espnet2.tts_diff.task  # noqa: F401
    from espnet2.tts_diff import generate

    return generate


def output_names(names: List[str], num: int) -> List[List[str]]:
    """``<name>_<k>.wav`` per query and sample; repeated query names get ``-2``, ``-3``, ... suffixes."""
    seen, out = set(), []
    for name in names:
        base, i = name, 2
        while name in seen:
            name, i = f"{base}-{i}", i + 1
        seen.add(name)
        out.append([f"{name}_{k}.wav" for k in range(num)])
    return out


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(levelname)s: %(message)s")
    generate = _import_quietly()
    GenerationError = generate.GenerationError
    import soundfile
    import torch
    from tqdm import tqdm

    from espnet2.enh.clipsep.errors import reraise_as
    from espnet2.enh.clipsep.files.writing import check_output_dir

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        for name, value, low in (("--num", args.num, 1), ("--steps", args.steps, 1), ("--prior_steps", args.prior_steps, 1),
                                 ("--batch_size", args.batch_size, 1)):
            if value < low:
                raise GenerationError(f"{name}: must be >= {low}, got {value}")
        if args.num_frames is not None and args.num_frames < 1:
            raise GenerationError(f"--num_frames: must be >= 1, got {args.num_frames}")
        if not args.text and not args.image:
            raise GenerationError("no query: give --text and/or --image")
        if args.prior is not None and not args.prior.is_file():
            raise GenerationError(f"{args.prior}: prior file not found")
        with reraise_as(GenerationError):
            check_output_dir(args.output_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", generate.GenerationWarning)
            gen = generate.Generator.from_pretrained(
                args.model, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, prior=args.prior,
                device=args.device, cache_dir=args.cache_dir, prior_steps=args.prior_steps,
                prior_guidance=args.prior_guidance, prior_clip_pretrained=args.prior_clip_pretrained,
            )  # fmt: skip
        for w in caught:
            if issubclass(w.category, generate.GenerationWarning):
                tqdm.write(f"warning: {w.message}", file=sys.stderr)
        conds = gen.encode(text=args.text, image=args.image, mode=args.mode)
        names = output_names([c.name for c in conds], args.num)
        paths = [[args.output_dir / n for n in row] for row in names]
        existing = [p for row in paths for p in row if p.exists()]
        if existing and not args.overwrite:
            raise GenerationError(f"{existing[0]}: output file exists (pass --overwrite to replace it)")
        options = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, num_frames=args.num_frames)
        total = len(conds) * args.num
        samples = gen.iterate(conds, num=args.num, seed=args.seed, batch_size=args.batch_size, **options)
        bar = tqdm(samples, total=total, unit="sample",
                   desc="generate", file=sys.stderr, disable=True if args.quiet else None)  # fmt: skip
        for i, k, wav in bar:
            path = paths[i][k]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                soundfile.write(str(tmp), wav.clip(-1.0, 1.0), gen.fs, subtype="FLOAT", format="WAV")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            logging.info("wrote %s", path)
    except GenerationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {total} file(s) to {args.output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
