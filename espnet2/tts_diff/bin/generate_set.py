"""Generate audio for a set of queries with a trained CLIPSonic (the synthesis recipe's generation stage).

One query per key of a Kaldi-style table; each mode gives the generator a different CLIP embedding:

- ``--spembs_scp``: the embedding as is, ``(D,)`` (IQ: the test clip's image embedding; ZS: the text
  embedding of its query, zero-shot across CLIP's modality gap);
- ``--text_scp`` + ``--prior``: text embeddings mapped to image embeddings by the diffusion prior (PD);
- ``--query_text`` + ``--prior``: PD with LAION's pretrained DALL·E 2 prior (``latest.pth``, its
  ``prior_config.json`` beside it; :mod:`espnet2.tts_diff.dalle2_prior`), which reads the query *texts*
  (``'<key> <text>'``, e.g. ``utt2label``, through ``--query_template``) with its own CLIP ViT-L-14; the generator
  must then be trained on open_clip ViT-L-14/openai image embeddings (768-d);
- ``--wav_scp``: no generation; the real clips' mel (the model's own feature extractor and normalisation)
  through the embedded vocoder, the ground-truth resynthesis ceiling.

The model is loaded with ``TTSDiffTask.build_model_from_file`` and must embed its vocoder
(``espnet2.tts_diff.bin.embed_vocoder``). Key ``i`` (in sorted order) is sampled with seed ``--seed + i``, so
the modes share their initial noise (LAION's prior also draws key ``i``'s image embedding with that seed;
train_prior's prior draws all keys from one generator seeded with ``--seed``); queries are sampled
``--batch_size`` at a time (one network call per step for the batch, each key from its own seeded generator), so
the clips do not depend on the batch size beyond float rounding. ``--utt2label`` (evaluation only) gives each
key's query class, which is copied to the output's ``utt2label`` and, with ``--max_per_class``, selects the
first keys of every class; the generator never reads it. Writes ``<output_dir>/wav/<key>.wav`` (16-bit, temporary names, then renamed),
``wav.scp``, ``utt2label`` and ``generate.json`` (settings, wall time, real-time factor), and the mel the
vocoder was given, de-normalised to the feature extractor's log-mel, as ``mel/<key>.npy`` ``(T, n_mels)`` with
``mel.scp``: ``espnet2.tts_diff.bin.probe evaluate --gen_mel_scp`` scores it before the vocoder, which tells a
weak generator from a weak vocoder.

Example:
    python -m espnet2.tts_diff.bin.generate_set --train_config exp/tts_clipsonic_vocoder/config.yaml \\
        --model_file exp/tts_clipsonic_vocoder/model.pth --spembs_scp dump/raw/test/text_spembs.scp \\
        --utt2label dump/raw/test/utt2label --output_dir exp/tts_clipsonic_vocoder/gen_test_zs
    python -m espnet2.tts_diff.bin.generate_set --train_config ... --model_file ... \
        --query_text dump/raw/test/utt2label --query_template "a photo of {}" --prior laion_prior/latest.pth \
        --utt2label dump/raw/test/utt2label --output_dir exp/tts_clipsonic_vocoder/gen_test_pd_laion
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.generate_set",
        description="Generate one clip per query (IQ/ZS embeddings, PD via the prior) or resynthesise real clips.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the generator")
    parser.add_argument("--model_file", type=Path, required=True, help="its weights (with the embedded vocoder)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--spembs_scp", type=Path, help="CLIP embeddings to condition on (npy/kaldi_ark scp)")
    src.add_argument("--text_scp", type=Path, help="CLIP text embeddings, mapped by --prior (PD)")
    src.add_argument("--wav_scp", type=Path, help="real clips to resynthesise through the vocoder")
    src.add_argument("--query_text", type=Path,
                     help="'<key> <text>' query texts (e.g. utt2label), mapped by LAION's DALL-E 2 --prior (PD)")
    parser.add_argument("--prior", type=Path, default=None,
                        help="with --text_scp: train_prior's prior (.pt, its .yaml beside it); with --query_text: "
                        "LAION's DALL-E 2 prior (latest.pth, prior_config.json beside it)")  # fmt: skip
    parser.add_argument("--query_template", default="{}", help="with --query_text: the prior's text, '{}' the query")
    parser.add_argument("--prior_clip_pretrained", default=None,
                        help="LAION prior: its CLIP ViT-L-14 weights, open_clip tag or local file (default: openai)")
    parser.add_argument("--utt2label", type=Path, default=None, help="'<key> <query class>' (evaluation only)")
    parser.add_argument("--max_per_class", type=int, default=0, help="first N keys per class (0: all)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where wav/, wav.scp, utt2label go")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance weight w (default: the config's)")
    parser.add_argument("--sampler", default=None, help="ddpm, ddim or dpmpp (default: the config's)")
    parser.add_argument("--num_frames", type=int, default=None, help="frames per clip (default: the config's inference_frames)")
    parser.add_argument("--seed", type=int, default=0, help="key i is sampled with seed + i")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="queries sampled at once (the same samples whatever its value, up to float rounding)")
    parser.add_argument("--prior_steps", type=int, default=64, help="prior sampling steps")
    parser.add_argument("--prior_sampler", default="ddim", help="prior sampler")
    parser.add_argument("--prior_guidance", type=float, default=0.0, help="prior guidance weight (LAION's prior: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:n] or auto")
    parser.add_argument("--num_threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def select_keys(keys: List[str], labels: Optional[Dict[str, str]], max_per_class: int, source: Path) -> List[str]:
    """Sorted keys; with ``max_per_class`` > 0 the first that many of every class."""
    keys = sorted(keys)
    if labels is not None:
        missing = [k for k in keys if k not in labels]
        if missing:
            raise ValueError(f"no query class for {len(missing)} key(s) of {source}, e.g. {missing[0]!r}")
    if max_per_class <= 0:
        return keys
    if labels is None:
        raise ValueError("--max_per_class needs --utt2label")
    seen: Dict[str, int] = {}
    out = []
    for k in keys:
        seen[labels[k]] = seen.get(labels[k], 0) + 1
        if seen[labels[k]] <= max_per_class:
            out.append(k)
    return out


def load_embedding(value: str, key: str, source: Path):
    import kaldiio
    import numpy as np

    try:
        arr = np.load(value) if value.endswith(".npy") else kaldiio.load_mat(value)
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: {key}: cannot read {value} ({err})") from err
    return np.asarray(arr, dtype=np.float32)


def write_wav(path: Path, wav, fs: int) -> None:
    import numpy as np
    import soundfile as sf

    tmp = path.with_name(f".{path.stem}.tmp.wav")
    sf.write(tmp, np.clip(wav, -1.0, 1.0), fs, subtype="PCM_16")
    os.replace(tmp, path)


def write_npy(path: Path, array) -> None:
    """``np.save`` under a temporary name, then rename."""
    import numpy as np

    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [generate_set] %(levelname)s: %(message)s")
    try:
        import numpy as np
        import torch

        from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic
        from espnet2.enh.clipsep.files.weights import build_model_weights_only
        from espnet2.tts_diff.task import TTSDiffTask

        if args.num_threads > 0:
            torch.set_num_threads(args.num_threads)
        if args.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
        if (args.text_scp is None and args.query_text is None) != (args.prior is None):
            raise ValueError(
                "--prior goes with --text_scp (train_prior's prior) or --query_text (LAION's DALL-E 2 prior), for PD; "
                "give --spembs_scp for IQ/ZS"
            )
        if args.query_template.count("{}") != 1:
            raise ValueError(f"--query_template must contain one '{{}}', got {args.query_template!r}")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        for p in (args.train_config, args.model_file):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: file not found")
        model, _ = build_model_weights_only(TTSDiffTask, args.train_config, args.model_file, device)
        model.eval()
        tts = model.tts
        if getattr(tts, "vocoder", None) is None:
            raise ValueError(
                f"{args.model_file}: no embedded vocoder (run espnet2.tts_diff.bin.embed_vocoder first)"
            )
        prior = None
        if args.prior is not None:  # checked before any sampling
            from espnet2.tts_diff.dalle2_prior import Dalle2Prior
            from espnet2.tts_diff.generate import load_prior_file

            prior = load_prior_file(args.prior, device, clip_pretrained=args.prior_clip_pretrained)
            if isinstance(prior, Dalle2Prior) != (args.query_text is not None):
                raise ValueError(
                    f"{args.prior}: LAION's DALL-E 2 prior maps query texts (give --query_text)"
                    if isinstance(prior, Dalle2Prior)
                    else f"{args.prior}: train_prior's prior maps text embeddings (give --text_scp, not --query_text)"
                )
            if isinstance(prior, Dalle2Prior):
                prior.check_sampling(args.prior_steps, args.prior_sampler, args.prior_guidance)
                if prior.embed_dim != tts.spk_embed_dim:
                    raise ValueError(
                        f"{args.prior}: gives {prior.embed_dim}-d image embeddings, the model takes "
                        f"{tts.spk_embed_dim}-d (train it on CLIP ViT-L-14/openai embeddings)"
                    )
        source = args.spembs_scp or args.text_scp or args.wav_scp or args.query_text
        table = read_table(source)
        labels = read_table(args.utt2label) if args.utt2label is not None else None
        keys = select_keys(list(table), labels, args.max_per_class, source)
        if not keys:
            raise ValueError(f"{source}: no entries")
        index = {k: i for i, k in enumerate(sorted(table))}

        conds = None
        if args.query_text is not None:
            from tqdm import tqdm

            texts = [args.query_template.replace("{}", table[k].strip()) for k in keys]
            out = []
            for n in tqdm(range(0, len(keys), args.batch_size), desc="prior", unit="batch", disable=args.quiet):
                part = keys[n : n + args.batch_size]
                gens = [torch.Generator(device=device).manual_seed(args.seed + index[k]) for k in part]
                try:
                    out.append(prior.sample_texts(
                        texts[n : n + len(part)], steps=args.prior_steps, sampler=args.prior_sampler,
                        guidance=args.prior_guidance, generator=gens,
                    ).cpu())  # fmt: skip
                except RuntimeError as err:  # its CLIP's weights not available offline: say which option
                    raise RuntimeError(str(err).replace("--clip_pretrained", "--prior_clip_pretrained")) from None
            conds = torch.cat(out)
        elif args.spembs_scp is not None or args.text_scp is not None:
            embs = np.stack([load_embedding(table[k], k, source) for k in keys])
            if embs.ndim != 2:
                raise ValueError(f"{source}: expected (D,) embeddings, got shape {embs.shape[1:]}")
            conds = torch.from_numpy(embs)
            if prior is not None:
                gen = torch.Generator(device=device).manual_seed(args.seed)
                conds = prior.sample(
                    conds.to(device), steps=args.prior_steps, sampler=args.prior_sampler,
                    guidance=args.prior_guidance, generator=gen,
                ).cpu() * float(prior.image_norm)  # fmt: skip
            if conds.shape[1] != tts.spk_embed_dim:
                raise ValueError(f"{source}: embeddings of size {conds.shape[1]}, the model takes {tts.spk_embed_dim}")

        wav_dir, mel_dir = args.output_dir / "wav", args.output_dir / "mel"
        wav_dir.mkdir(parents=True, exist_ok=True)
        mel_dir.mkdir(parents=True, exist_ok=True)
        @torch.no_grad()
        def generated():  # (key, normalised mel (T, n_mels)): args.batch_size queries at a time, in key order
            for n in range(0, len(keys), args.batch_size):
                part = keys[n : n + args.batch_size]
                mels = tts.sample(
                    conds[n : n + len(part)].to(device), seeds=[args.seed + index[k] for k in part],
                    steps=args.steps, guidance=args.guidance, sampler=args.sampler, num_frames=args.num_frames,
                )  # fmt: skip
                yield from zip(part, mels)

        @torch.no_grad()
        def resynthesised():  # (key, normalised mel of the real clip), one clip at a time
            from espnet2.tts_diff.probe import read_wav

            for key in keys:
                speech = torch.from_numpy(read_wav(table[key], tts.fs))[None].to(device)
                feats, lengths = model.feats_extract(speech, torch.tensor([speech.shape[1]], device=device))
                if model.normalize is not None:
                    feats, lengths = model.normalize(feats, lengths)
                yield key, feats[0, : int(lengths[0])]

        from tqdm import tqdm

        out_scp, out_mel, out_labels, audio_seconds = {}, {}, {}, 0.0
        start = time.perf_counter()
        clips = resynthesised() if conds is None else generated()
        what = "resynthesise" if conds is None else "generate"
        for key, mel in tqdm(clips, total=len(keys), desc=what, unit="clip", disable=args.quiet):
            with torch.no_grad():
                wav = tts.vocoder.inference(mel).view(-1)
                if model.normalize is not None:  # GlobalMVN.inverse works in place
                    mel, _ = model.normalize.inverse(mel.clone()[None], torch.tensor([len(mel)], device=device))
                    mel = mel[0]
            wav = wav.cpu().numpy()
            path = wav_dir / f"{key}.wav"
            write_wav(path, wav, tts.fs)
            out_scp[key] = str(path.resolve())
            mel_path = mel_dir / f"{key}.npy"
            write_npy(mel_path, mel.float().cpu().numpy())
            out_mel[key] = str(mel_path.resolve())
            if labels is not None:
                out_labels[key] = labels[key]
            audio_seconds += len(wav) / tts.fs
            logging.debug("%s: %d samples", key, len(wav))
        wall = time.perf_counter() - start
        write_table_atomic(args.output_dir / "wav.scp", out_scp)
        write_table_atomic(args.output_dir / "mel.scp", out_mel)
        if labels is not None:
            write_table_atomic(args.output_dir / "utt2label", out_labels)
        mode = "resynthesis" if conds is None else ("prior" if args.prior is not None else "embedding")
        report = dict(
            mode=mode, source=str(source), prior=None if args.prior is None else str(args.prior),
            prior_format=None if prior is None else type(prior).__name__,
            query_template=args.query_template if args.query_text is not None else None,
            num_clips=len(keys), steps=args.steps or tts.steps, guidance=tts.guidance if args.guidance is None
            else args.guidance, sampler=args.sampler or tts.sampler, seed=args.seed, wall_seconds=round(wall, 2),
            audio_seconds=round(audio_seconds, 2), rtf=round(wall / max(audio_seconds, 1e-9), 4), device=device,
            num_threads=torch.get_num_threads(),
        )  # fmt: skip
        tmp = args.output_dir / "generate.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.output_dir / "generate.json")
        logging.info("%d clips (%s) in %.1f s (RTF %.3f); wrote %s", len(keys), mode, wall, report["rtf"], args.output_dir)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"generate_set: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
