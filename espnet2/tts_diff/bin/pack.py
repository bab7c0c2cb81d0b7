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
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence, Tuple

import yaml


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


def _walk_strings(value, fn):
    """``value`` with every string ``s`` replaced by ``fn(s)`` (dicts and lists recursively)."""
    if isinstance(value, dict):
        return {k: _walk_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, str) else value


def _outside_files(config: Path, root: Path) -> list:
    """Files named in the ``*_conf`` sections of an unpacked config (what building the model reads, e.g.
    ``normalize_conf.stats_file``) that lie outside ``root``: the pack would not be self-contained."""
    found = []

    def check(s: str) -> str:
        if "/" in s and Path(s).is_file() and root.resolve() not in Path(s).resolve().parents:
            found.append(s)
        return s

    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    for key, value in conf.items():
        if key.endswith("_conf"):
            _walk_strings(value, check)
    return found


def verify_pack(path: Path, model_file: Path) -> Tuple[int, int]:
    """Unpack into a fresh cache, rebuild, compare with ``model_file``; returns (tensors, priors loaded)."""
    import torch

    from espnet2.enh.clipsep.packing import unpack_model
    from espnet2.enh.clipsep.separate import build_model_weights_only
    from espnet2.tts_diff.prior import load_prior
    from espnet2.tts_diff.task import TTSDiffTask

    reference = torch.load(model_file, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="clipsonic-pack-") as cache:
        info = unpack_model(path, cache)
        outside = _outside_files(Path(info["train_config"]), Path(cache))
        if outside:
            raise ValueError(f"{path}: the packed config names files that are not in the pack: {outside}")
        model, _ = build_model_weights_only(TTSDiffTask, info["train_config"], info["model_file"], strict=False)
        state = model.state_dict()
        priors = [p for p in Path(cache).rglob("*.pt") if p.parent.name == "prior" and p.with_suffix(".yaml").is_file()]
        for p in priors:
            load_prior(p)
    if set(state) != set(reference):
        diff = sorted(set(state) ^ set(reference))
        raise ValueError(f"{path}: the rebuilt model's tensors differ from {model_file}: e.g. {diff[0]}")
    for key, value in reference.items():
        if not torch.equal(state[key].cpu(), value):
            raise ValueError(f"{path}: tensor {key} differs from {model_file} after unpacking")
    return len(reference), len(priors)


def pack_model(train_config: Path, model_file: Path, outpath: Path, options: Sequence[Path] = ()) -> Tuple[int, int]:
    """Stage the files under their paths relative to their common directory, rewrite the config's paths to
    packed files to those relative names, pack from the staging directory and verify the result."""
    from espnet2.main_funcs.pack_funcs import pack

    files = [Path(p) for p in (train_config, model_file, *options)]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: file not found")
    resolved = [p.resolve() for p in files]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    rel = {p: p.relative_to(root) for p in resolved}
    outpath = outpath.resolve()
    outpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = outpath.with_name(outpath.stem + ".tmp" + outpath.suffix)
    with tempfile.TemporaryDirectory(prefix="clipsonic-stage-") as stage:
        stage = Path(stage)
        for src, name in rel.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, stage / name)

        def relocate(s: str) -> str:
            if "/" not in s and "." not in s:
                return s
            try:
                return str(rel.get(Path(s).resolve(), s))
            except (OSError, RuntimeError):
                return s

        config = yaml.safe_load(Path(train_config).read_text(encoding="utf-8"))
        cfg = stage / rel[resolved[0]]
        cfg.write_text(yaml.safe_dump(_walk_strings(config, relocate), sort_keys=False, allow_unicode=True),
                       encoding="utf-8")  # fmt: skip
        cwd = os.getcwd()
        os.chdir(stage)
        try:
            pack(files={"model_file": str(rel[resolved[1]])}, yaml_files={"train_config": str(rel[resolved[0]])},
                 outpath=str(tmp), option=[str(rel[p]) for p in resolved[2:]])  # fmt: skip
        finally:
            os.chdir(cwd)
    try:
        counts = verify_pack(tmp, model_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, outpath)
    return counts


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s [pack] %(levelname)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            tensors, priors = pack_model(args.train_config, args.model_file, args.outpath, args.option)
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
