"""Convert the released CLIPSep(-NIT) checkpoint into an ESPnet experiment directory.

Writes ``<output_dir>/config.yaml`` and ``<output_dir>/model.pth`` that ``CLIPSepTask.build_model_from_file``
(and so our inference) loads: STFT n_fft 1024 / hop 256 at 16 kHz, the paper-size ``clipsep`` separator with
the checkpoint's noise heads, WBCE (+ noise invariant wrapper when there are noise heads). The checkpoint is
read with ``weights_only=True``; every tensor is checked by name and shape, and the result is verified by a
strict reload before the files appear (written under temporary names, then renamed).

Example:
    python -m espnet2.enh.clipsep.bin.convert --checkpoint clipsep_nit.pt --output_dir exp/clipsep_nit_vggsound
"""

import argparse
import os
import sys
from pathlib import Path

import torch

from espnet2.enh.clipsep.checkpoint_converter import build_args, load_reference_state_dict


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.convert",
        description="Convert a released CLIPSep/CLIPSep-NIT checkpoint to an ESPnet config.yaml + model.pth.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="the released checkpoint (.pt/.pth)")
    parser.add_argument("--output_dir", type=Path, required=True, help="experiment directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model.pth")
    return parser


def convert(checkpoint: Path, output_dir: Path, overwrite: bool = False) -> Path:
    """Write ``config.yaml`` and ``model.pth`` for ``checkpoint`` into ``output_dir``; returns model.pth."""
    import yaml
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet2.enh.clipsep.checkpoint_converter import convert_reference_state_dict
    from espnet2.enh.clipsep.task import CLIPSepTask

    model_file = output_dir / "model.pth"
    config_file = output_dir / "config.yaml"
    if model_file.exists() and not overwrite:
        raise FileExistsError(f"{model_file}: exists (pass --overwrite to replace it)")
    separator_state = convert_reference_state_dict(load_reference_state_dict(checkpoint), source=str(checkpoint))
    num_noise_heads = len({k.split(".")[1] for k in separator_state if k.startswith("noise_heads.")})
    args = build_args(num_noise_heads)
    model = CLIPSepTask.build_model(args)
    state = {f"separator.{k}": v for k, v in separator_state.items()}
    model.load_state_dict(state, strict=True)

    output_dir.mkdir(parents=True, exist_ok=True)
    tmp_config, tmp_model = config_file.with_name("config.yaml.tmp"), model_file.with_name("model.pth.tmp")
    with open(tmp_config, "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), tmp_model)
    # ESPnet's loader is lenient (strict=False): check the round trip ourselves before publishing.
    rebuilt = CLIPSepTask.build_model(argparse.Namespace(**yaml.safe_load(tmp_config.read_text())))
    rebuilt.load_state_dict(torch.load(tmp_model, map_location="cpu", weights_only=True), strict=True)
    os.replace(tmp_config, config_file)
    os.replace(tmp_model, model_file)
    return model_file


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        model_file = convert(args.checkpoint, args.output_dir, args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"convert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {model_file} and {model_file.with_name('config.yaml')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
