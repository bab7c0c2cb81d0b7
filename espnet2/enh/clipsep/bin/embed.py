"""Cache CLIP (or BERT) query embeddings as npy or kaldi_ark scp files.

Text queries come from a Kaldi-style file (``<key> <query text>`` per line) and are template-ensembled; image
queries come from frame directories (one per clip, 1-fps frames named in time order) and are the mean over
the ``--num_frames`` frames around each clip's centre, shape ``(D,)``. With ``--per_frame`` every frame's
embedding is stored instead, shape ``(num_frames, D)`` float32 in time order, so that training can average 3
frames around a random centre as CLIPSep does; frames of several clips share each forward pass. A stored
clip costs ``num_frames * D * 4`` bytes (a 10-minute video at 1 fps with ViT-B/32: 1.2 MB); ``--max_frames``
keeps only that many frames around the centre of longer clips. Keys already in the output scp are skipped, so
an interrupted run resumes (an scp holding the other kind of image embedding is refused); the scp is replaced
atomically after each batch and only ever lists complete entries (an scp of another embedding size, e.g. CLIP's
where BERT's goes, is refused too).

With ``--text_encoder bert`` text queries go through a local BERT directory (``--bert_dir``,
``bert-base-uncased`` for BERTSep) instead of CLIP: the label text as is, the final [CLS] state (``(768,)``
float32 for bert-base), in the same scp layout, so a recipe swaps the scp in (see
:mod:`espnet2.enh.clipsep.bert.encoder` for what the reference fixes and what is ours). It needs
``transformers`` on ``PYTHONPATH`` (``PYTHONPATH=$(cat .venv/clap-pythonpath)``; not in the main environment).

Examples:
    python -m espnet2.enh.clipsep.bin.embed --text data/test/queries.txt --output_dir dump/clip/test \\
        --name text_query1
    python -m espnet2.enh.clipsep.bin.embed --frames_dir data/train/frames --output_dir dump/clip/train \\
        --name image --format kaldi_ark
    python -m espnet2.enh.clipsep.bin.embed --frames_scp data/train/frames.scp --output_dir dump/clip/train \\
        --name image_frames --per_frame
    PYTHONPATH=$(cat .venv/clap-pythonpath) python -m espnet2.enh.clipsep.bin.embed --text_encoder bert \\
        --bert_dir downloads/bert-base-uncased --text data/train/utt2label --output_dir dump/bert/train --name text
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.embed",
        description="Cache CLIP text or image (or BERT text) query embeddings as npy / kaldi_ark scp files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, help="Kaldi-style file: '<key> <query text>' per line")
    src.add_argument("--frames_dir", type=Path, help="directory with one sub-directory of frames per clip")
    src.add_argument("--frames_scp", type=Path, help="Kaldi-style file: '<key> <frames directory>' per line")
    parser.add_argument("--output_dir", type=Path, required=True, help="where <name>.scp and data/ go")
    parser.add_argument("--name", default="query", help="scp name (e.g. query1, text_query1, image)")
    parser.add_argument("--format", choices=("npy", "kaldi_ark"), default="npy", help="storage format")
    parser.add_argument("--clip_model", default="ViT-B-32", help="open_clip model name or JSON config")
    parser.add_argument(
        "--clip_pretrained", default="openai", help="open_clip pretrained tag or local checkpoint file"
    )
    parser.add_argument("--num_frames", type=int, default=3, help="frames around the centre averaged per clip")
    parser.add_argument(
        "--per_frame", action="store_true", help="store every frame's embedding, (num_frames, D), not the mean"
    )
    parser.add_argument(
        "--max_frames", type=int, default=None, help="with --per_frame: at most this many frames around the centre"
    )
    parser.add_argument(
        "--text_encoder", choices=("clip", "bert"), default="clip", help="text queries: CLIP, or BERT (BERTSep)"
    )
    parser.add_argument(
        "--bert_dir", type=Path, default=None, help="with --text_encoder bert: local bert-base-uncased directory"
    )
    parser.add_argument(
        "--bert_pooling", choices=("cls", "pooler", "mean"), default="cls", help="with --text_encoder bert"
    )
    parser.add_argument(
        "--templates", nargs="+", default=None,
        help="prompt templates ('{}' = query); default: CLIPSep's 4 with CLIP, the text as is with BERT",
    )  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=32, help="queries or clips per batch")
    parser.add_argument("--device", default="auto", help="cpu, cuda[:n] or auto")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


class EmbeddingWriter:
    """Writes embeddings to ``<output_dir>/data/<name>/`` and keeps ``<output_dir>/<name>.scp`` current."""

    def __init__(self, output_dir: Path, name: str, fmt: str):
        self.scp = output_dir / f"{name}.scp"
        self.data_dir = output_dir / "data" / name
        self.fmt = fmt
        self.table = read_table(self.scp) if self.scp.is_file() else {}
        self.ark = None
        if fmt == "kaldi_ark":
            n = 0
            while (self.data_dir / f"{name}.{n}.ark").exists():
                n += 1
            self.ark = self.data_dir / f"{name}.{n}.ark"  # a new part, never listed before this run

    def done(self, key: str) -> bool:
        if key not in self.table:
            return False
        return self.fmt != "npy" or Path(self.table[key]).is_file()

    def check_ndim(self, ndim: int, dim: Optional[int] = None) -> None:
        """Refuse to resume an scp whose entries have another number of dimensions (clip mean vs per frame) or,
        given ``dim``, another embedding size (e.g. CLIP's 512 where BERT's 768 goes)."""
        import kaldiio

        done = sorted(k for k in self.table if self.done(k))
        if not done:
            return
        key = done[0]
        stored = np.load(self.table[key], mmap_mode="r") if self.fmt == "npy" else kaldiio.load_mat(self.table[key])
        if stored.ndim != ndim:
            kinds = {1: "(D,) embeddings", 2: "(num_frames, D) per-frame embeddings"}
            raise ValueError(
                f"{self.scp} holds {kinds.get(stored.ndim, f'{stored.ndim}-D arrays')} (e.g. {key}) but this run "
                f"writes {kinds[ndim]}: use another --name"
            )
        if dim is not None and stored.shape[-1] != dim:
            raise ValueError(
                f"{self.scp} holds {stored.shape[-1]}-d embeddings (e.g. {key}) but this encoder gives {dim}-d "
                "ones: use another --output_dir or --name"
            )

    def write(self, batch: Dict[str, np.ndarray]) -> None:
        import kaldiio

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.fmt == "npy":
            for key, arr in batch.items():
                path = self.data_dir / f"{key}.npy"
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "wb") as f:
                    np.save(f, arr)
                os.replace(tmp, path)
                self.table[key] = str(path)
        else:
            part_scp = self.ark.with_suffix(".scp.tmp")
            kaldiio.save_ark(str(self.ark), batch, scp=str(part_scp), append=True)
            self.table.update(read_table(part_scp))
            part_scp.unlink()
        write_table_atomic(self.scp, self.table)


def collect_inputs(args) -> List[Tuple[str, object]]:
    """``(key, text)`` or ``(key, [frame paths])`` items, validated before anything is written."""
    from espnet2.enh.clipsep.clip.image_query import center_frames, check_image, list_frames

    if args.text is not None:
        return list(read_table(args.text).items())
    if args.frames_dir is not None:
        if not args.frames_dir.is_dir():
            raise FileNotFoundError(f"{args.frames_dir}: frames directory not found")
        dirs = [(d.name, d) for d in sorted(args.frames_dir.iterdir()) if d.is_dir()]
        if not dirs:
            raise ValueError(f"{args.frames_dir}: no clip sub-directories")
    else:
        dirs = [(k, Path(v)) for k, v in read_table(args.frames_scp).items()]
    items = []
    for key, d in dirs:
        frames = list_frames(d)
        if not frames:
            raise ValueError(f"{d}: no frames (expected .jpg/.png files)")
        if args.per_frame:
            chosen = center_frames(frames, args.max_frames) if args.max_frames else frames
        else:
            chosen = center_frames(frames, args.num_frames)
        for f in chosen:
            check_image(f)
        items.append((key, chosen))
    return items


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [embed] %(levelname)s: %(message)s")
    try:
        from tqdm import tqdm

        from espnet2.enh.clipsep.clip.encoder import CLIPSEP_TEMPLATES, CLIPQueryEncoder, as_numpy

        if args.num_frames < 1 or args.batch_size < 1:
            raise ValueError("--num_frames and --batch_size must be >= 1")
        if args.per_frame and args.text is not None:
            raise ValueError("--per_frame needs image queries (--frames_dir or --frames_scp)")
        if args.max_frames is not None and (not args.per_frame or args.max_frames < 1):
            raise ValueError("--max_frames must be >= 1 and goes with --per_frame")
        bert = args.text_encoder == "bert"
        if bert and (args.text is None or args.bert_dir is None):
            raise ValueError("--text_encoder bert embeds text queries: it needs --text and --bert_dir")
        if args.bert_dir is not None and not bert:
            raise ValueError("--bert_dir goes with --text_encoder bert")
        items = collect_inputs(args)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        writer = EmbeddingWriter(args.output_dir, args.name, args.format)
        writer.check_ndim(2 if args.per_frame else 1)
        todo = [(k, v) for k, v in items if not writer.done(k)]
        logging.info("%d items, %d already in %s, %d to compute", len(items), len(items) - len(todo),
                     writer.scp, len(todo))
        if todo:
            templates = args.templates or (("{}",) if bert else CLIPSEP_TEMPLATES)
            # One batch of queries or clips = one forward pass over all their prompts or frames.
            per_item = len(templates) if args.text is not None else args.num_frames
            if bert:
                from espnet2.enh.clipsep.bert.encoder import BERTQueryEncoder

                encoder = BERTQueryEncoder(
                    args.bert_dir,
                    pooling=args.bert_pooling,
                    device=args.device,
                    batch_size=args.batch_size * per_item,
                    templates=templates,
                )
            else:
                encoder = CLIPQueryEncoder(
                    args.clip_model,
                    None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
                    device=args.device,
                    batch_size=args.batch_size * per_item,
                    templates=templates,
                )
            writer.check_ndim(2 if args.per_frame else 1, encoder.embed_dim)
            encoder.model  # load the model now: missing weights fail before any progress output
            for i in tqdm(range(0, len(todo), args.batch_size), desc=f"embed {args.name}", unit="batch"):
                keys, values = zip(*todo[i : i + args.batch_size])
                if args.text is not None:
                    emb = encoder.encode_text(list(values))
                elif args.per_frame:  # every frame of the batch's clips, one flat batch, split back per clip
                    flat = encoder.encode_images([[frame] for frames in values for frame in frames])
                    emb = flat.split([len(frames) for frames in values])
                else:
                    emb = encoder.encode_images(list(values))
                writer.write({k: as_numpy(e) for k, e in zip(keys, emb)})
        logging.info("wrote %s (%d entries)", writer.scp, len(writer.table))
    except (ValueError, FileNotFoundError, RuntimeError, OSError, ImportError) as err:
        print(f"embed: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
