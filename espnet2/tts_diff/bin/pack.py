"""Pack a CLIPSonic generator as an ``espnet_model_zoo`` zip and verify that it reloads offline.

The zip is what ``espnet2.bin.pack tts`` writes (``meta.yaml``, ``config.yaml``, the weights, the files given
with ``--option``: the feature statistics the config names, the diffusion prior, the CLIP weights the recipe
fitted). The files are staged under their paths relative to their common directory and every string of the
config that names one of them (e.g. ``normalize_conf.stats_file``) is rewritten to that relative name, so the
zip is self-contained wherever the experiment lives (``espnet_model_zoo`` rewrites the names to the unpack
location). The zip is written under a temporary name, checked for members that would land outside the unpack
directory, unpacked offline through ``ModelDownloader``; no ``*_conf`` path of the unpacked config may point
outside it; it is rebuilt with ``TTSDiffTask.build_model_from_file`` and compared tensor by tensor with
``--model_file``; a packed prior (``prior/*.pt`` with its ``.yaml``) must load. Only then is it renamed to
``--outpath``.

Example:
    python -m espnet2.tts_diff.bin.pack --train_config exp/mini/tts_clipsonic_vocoder/config.yaml \\
        --model_file exp/mini/tts_clipsonic_vocoder/model.pth --option exp/mini/stats/train/feats_stats.npz \\
        --option exp/mini/prior/prior.pt --option exp/mini/prior/prior.yaml --outpath exp/mini/tts_clipsonic_vocoder/packed.zip
"""

import argparse
import logging
import sys
import warnings
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.pack",
        description="Pack a CLIPSonic model (espnet2.bin.pack tts) and verify its offline reload.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the generator")
    parser.add_argument("--model_file", type=Path, required=True, help="weights to pack (.pth)")
    parser.add_argument("--outpath", type=Path, required=True, help="zip to write")
    parser.add_argument("--option", type=Path, action="append", default=[], help="extra file to include")
    parser.add_argument("--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _load_priors(unpacked: Path) -> int:
    """Load every packed prior (``prior/*.pt`` with its ``.yaml``); returns how many loaded."""
    from espnet2.tts_diff.prior import load_prior

    priors = [p for p in unpacked.rglob("*.pt") if p.parent.name == "prior" and p.with_suffix(".yaml").is_file()]
    for p in priors:
        load_prior(p)
    return len(priors)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [pack] %(levelname)s: %(message)s")
    from espnet2.enh.clipsep.files.pack import pack_model
    from espnet2.tts_diff.task import TTSDiffTask

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            tensors, priors = pack_model(
                TTSDiffTask, args.train_config, args.model_file, args.outpath, args.option, check=_load_priors
            )
        logging.info(
            "wrote %s; unpacked with espnet_model_zoo and rebuilt: %d tensors identical, %d prior(s) loaded",
            args.outpath, tensors, priors,
        )
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"pack: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
