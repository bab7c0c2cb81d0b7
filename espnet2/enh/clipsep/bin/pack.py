"""Pack a trained model as an ``espnet_model_zoo`` zip and verify that it reloads with identical weights.

The zip is what ``espnet2.bin.pack enh`` writes (``meta.yaml``, the config, the weights, extra files); it is
then unpacked offline with ``espnet_model_zoo``'s ``ModelDownloader`` and rebuilt by ``CLIPSepTask``.

Example:
    python -m espnet2.enh.clipsep.bin.pack --train_config exp/nit/config.yaml \\
        --model_file exp/nit/valid.loss.best.pth --outpath exp/nit/packed.zip --option RESULTS.md
"""

import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.pack",
        description="Pack a CLIPSep model (espnet2.bin.pack enh) and verify its reload via espnet_model_zoo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the experiment")
    parser.add_argument("--model_file", type=Path, required=True, help="weights to pack (.pth)")
    parser.add_argument("--outpath", type=Path, required=True, help="zip to write")
    parser.add_argument("--option", type=Path, action="append", default=[], help="extra file to include")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [pack] %(levelname)s: %(message)s")
    try:
        import warnings

        from espnet2.enh.clipsep.files.pack import pack_model
        from espnet2.enh.clipsep.task import CLIPSepTask

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            count, _ = pack_model(CLIPSepTask, args.train_config, args.model_file, args.outpath, args.option)
        logging.info("wrote %s; unpacked with espnet_model_zoo and rebuilt: %d tensors identical", args.outpath, count)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"pack: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
