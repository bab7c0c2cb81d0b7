"""Separate the mixtures of a data dir with a trained CLIPSep model, one output per query.

Like ``espnet2.bin.enh_inference`` (same data options, same ``spk{n}.scp`` + ``wavs/{n}/`` layout, so ESPnet's
scoring tools read the results), but the model comes from ``CLIPSepTask`` and the ``query{n}`` /
``text_query{n}`` streams reach the separator. Pass a text-embedding scp as ``query1`` to query by text, an
image-embedding scp to query by image; a model without queries (PIT) writes its ``num_spk`` outputs.

Example:
    python -m espnet2.enh.clipsep.bin.inference --train_config exp/nit/config.yaml \\
        --model_file exp/nit/valid.loss.best.pth --output_dir exp/nit/infer_text \\
        --data_path_and_name_and_type data/test_mix/wav.scp,speech_mix,sound \\
        --data_path_and_name_and_type data/test_mix/text_query1.scp,query1,npy
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2triple_str, str_or_none

    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.inference",
        description="Query-conditioned separation of a data dir (CLIPSep, CLIPSep-NIT, LabelSep, PIT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml written by training")
    parser.add_argument("--model_file", type=Path, required=True, help="model weights (.pth)")
    parser.add_argument(
        "--data_path_and_name_and_type", type=str2triple_str, action="append", required=True,
        help="PATH,NAME,TYPE as in ESPnet (speech_mix, query1, ...); repeatable",
    )
    parser.add_argument("--key_file", type=str_or_none, default=None, help="only these keys")
    parser.add_argument("--output_dir", type=Path, required=True, help="where spk{n}.scp and wavs/ go")
    parser.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: one GPU")
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument("--num_workers", type=int, default=1, help="data loader workers")
    parser.add_argument("--mask_type", default=None, choices=("soft", "binary"), help="override the model's")
    parser.add_argument("--mask_threshold", type=float, default=None, help="override for binary masks")
    parser.add_argument("--remove", action="store_true", help="output everything but each query")
    parser.add_argument("--add_noise_head", type=int, default=0, metavar="J",
                        help="CLIPSep-NIT: add noise head J's mask to each query's (the paper's Figure 6; 0: off)")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def configure_separator(
    separator, mask_type: Optional[str], mask_threshold: Optional[float], remove: bool, add_noise_head: int = 0
):
    """Apply inference-only options that are separator attributes (no weights change)."""
    for name, value in (("mask_type", mask_type), ("mask_threshold", mask_threshold)):
        if value is not None:
            if not hasattr(separator, name):
                raise ValueError(f"--{name}: separator {type(separator).__name__} has no such option")
            setattr(separator, name, value)
    if remove:
        if not hasattr(separator, "remove"):
            raise ValueError(f"--remove: separator {type(separator).__name__} has no such option")
        separator.remove = True
    if add_noise_head:
        heads = len(getattr(separator, "noise_heads", ()))
        if not 1 <= add_noise_head <= heads:
            raise ValueError(f"--add_noise_head {add_noise_head}: the model has {heads} noise heads")
        separator.add_noise_head = add_noise_head


def inference(
    train_config: Path,
    model_file: Path,
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]],
    output_dir: Path,
    key_file: Optional[str] = None,
    ngpu: int = 0,
    dtype: str = "float32",
    num_workers: int = 1,
    mask_type: Optional[str] = None,
    mask_threshold: Optional[float] = None,
    remove: bool = False,
    add_noise_head: int = 0,
) -> int:
    """Run the model over every key and write ``spk{n}.scp``; returns the number of items separated."""
    import numpy as np
    import soundfile
    import torch
    from tqdm import tqdm

    from espnet2.enh.clipsep.model import QUERY_RE
    from espnet2.enh.clipsep.files.weights import build_model_weights_only
    from espnet2.enh.clipsep.task import CLIPSepTask

    for path in (train_config, model_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
    for path, _, _ in data_path_and_name_and_type:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
    device = "cuda" if ngpu > 0 else "cpu"
    model, train_args = build_model_weights_only(CLIPSepTask, train_config, model_file, device)
    model.to(dtype=getattr(torch, dtype)).eval()
    configure_separator(model.separator, mask_type, mask_threshold, remove, add_noise_head)
    fs = int((getattr(train_args, "preprocessor_conf", None) or {}).get("fs", 16000))

    loader = CLIPSepTask.build_streaming_iterator(
        data_path_and_name_and_type,
        dtype=dtype,
        batch_size=1,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=CLIPSepTask.build_preprocess_fn(train_args, False),
        collate_fn=CLIPSepTask.build_collate_fn(train_args, False),
        allow_variable_data_keys=False,
        inference=True,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    tables: List[Dict[str, str]] = []
    count = 0
    with torch.no_grad():
        for keys, batch in tqdm(loader, desc=f"separate -> {output_dir.name}", unit="mix"):
            mix = batch["speech_mix"].to(device)
            lengths = batch.get("speech_mix_lengths", torch.full((mix.shape[0],), mix.shape[1]))
            additional = {k: v.to(device) for k, v in batch.items() if QUERY_RE.match(k)}
            scale = None
            if getattr(model, "normalize_variance", False):
                scale = torch.std(mix, dim=1, keepdim=True)
                mix = mix / scale
            speech_pre, *_ = model.forward_enhance(mix, lengths.to(device), additional)
            for n, wave in enumerate(speech_pre, 1):
                if scale is not None:
                    wave = wave * scale
                if len(tables) < n:
                    tables.append({})
                    (output_dir / "wavs" / str(n)).mkdir(parents=True, exist_ok=True)
                for b, key in enumerate(keys):
                    audio = wave[b, : int(lengths[b])].float().cpu().numpy()
                    audio = np.clip(audio, -1.0, 1.0)  # CLIPSep clips separated waveforms to [-1, 1]
                    path = output_dir / "wavs" / str(n) / f"{key}.wav"
                    tmp = path.with_name(path.name + ".tmp.wav")
                    soundfile.write(tmp, audio, fs, subtype="FLOAT")
                    os.replace(tmp, path)
                    tables[n - 1][key] = str(path.resolve())
            count += len(keys)
    for n, table in enumerate(tables, 1):
        scp = output_dir / f"spk{n}.scp"
        tmp = scp.with_name(scp.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for key in sorted(table):
                f.write(f"{key} {table[key]}\n")
        os.replace(tmp, scp)
    return count


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [inference] %(levelname)s: %(message)s")
    if args.ngpu > 1:
        print("inference: error: --ngpu must be 0 or 1 (run several jobs for more GPUs)", file=sys.stderr)
        return 2
    try:
        n = inference(
            args.train_config, args.model_file, args.data_path_and_name_and_type, args.output_dir,
            args.key_file, args.ngpu, args.dtype, args.num_workers, args.mask_type, args.mask_threshold,
            args.remove, args.add_noise_head,
        )
        logging.info("separated %d mixtures into %s", n, args.output_dir)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"inference: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
