"""Model packs: ``espnet2.bin.pack`` zips that ``espnet_model_zoo`` unpacks and our task rebuilds.

``pack_model`` writes the zip (to a temporary name, then renamed) and verifies it: the archive is checked for
members that would land outside the unpack directory, unpacked offline through ``ModelDownloader``, rebuilt
with ``CLIPSepTask.build_model_from_file`` and compared tensor by tensor with the packed weights.
"""

import os
import tempfile
import zipfile
import tarfile
from pathlib import Path, PurePosixPath
from typing import Dict, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]


def archive_members(path: PathLike) -> Tuple[Tuple[str, bool], ...]:
    """``(name, is_regular_file_or_dir)`` for every member of a zip or tar archive."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            # A zip member is a symlink when its Unix mode says so.
            return tuple((i.filename, (i.external_attr >> 16) & 0o170000 != 0o120000) for i in zf.infolist())
    try:
        with tarfile.open(path) as tf:
            return tuple((m.name, m.isfile() or m.isdir()) for m in tf.getmembers())
    except tarfile.TarError as err:
        raise ValueError(f"{path}: not a zip or tar model archive ({err})") from None


def check_archive(path: PathLike) -> None:
    """Refuse archives whose members are absolute, climb out with ``..``, or are links/devices.

    Raises:
        ValueError: naming the archive and the first offending member.
    """
    for name, regular in archive_members(path):
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")) or ".." in parts:
            raise ValueError(f"{path}: archive member {name!r} would be written outside the target directory")
        if not regular:
            raise ValueError(f"{path}: archive member {name!r} is a link or special file")


def unpack_model(path: PathLike, cachedir: Optional[PathLike] = None) -> Dict[str, str]:
    """Unpack a packed model offline with ``espnet_model_zoo`` (after :func:`check_archive`).

    Returns:
        ``{"train_config": ..., "model_file": ...}`` paths inside ``cachedir``.
    """
    from espnet_model_zoo.downloader import ModelDownloader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model archive not found")
    check_archive(path)
    return ModelDownloader(cachedir).unpack_local_file(str(path.resolve()))


def verify_pack(path: PathLike, model_file: PathLike) -> int:
    """Unpack ``path`` into a fresh cache, rebuild the model and compare it with ``model_file``.

    Returns:
        The number of tensors compared (all identical).

    Raises:
        ValueError: a tensor is missing, extra, or different.
    """
    import torch

    from espnet2.enh.clipsep.separate import build_model_weights_only
    from espnet2.enh.clipsep.task import CLIPSepTask

    reference = torch.load(model_file, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="clipsep-pack-") as cache:
        info = unpack_model(path, cache)
        model, _ = build_model_weights_only(CLIPSepTask, info["train_config"], info["model_file"], strict=False)
        state = model.state_dict()
    if set(state) != set(reference):
        diff = sorted(set(state) ^ set(reference))
        raise ValueError(f"{path}: the rebuilt model's tensors differ from {model_file}: e.g. {diff[0]}")
    for key, value in reference.items():
        if not torch.equal(state[key].cpu(), value):
            raise ValueError(f"{path}: tensor {key} differs from {model_file} after unpacking")
    return len(reference)


def pack_model(
    train_config: PathLike, model_file: PathLike, outpath: PathLike, options: Sequence[PathLike] = ()
) -> int:
    """Pack with ``espnet2.bin.pack enh`` and verify the result (see :func:`verify_pack`)."""
    from espnet2.main_funcs.pack_funcs import pack

    outpath = Path(outpath)
    for p in (train_config, model_file, *options):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: file not found")
    outpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = outpath.with_name(outpath.stem + ".tmp" + outpath.suffix)
    pack(
        files={"model_file": model_file},
        yaml_files={"train_config": train_config},
        outpath=str(tmp),
        option=list(options),
    )
    count = verify_pack(tmp, model_file)
    os.replace(tmp, outpath)
    return count
