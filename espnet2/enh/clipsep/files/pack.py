"""Model packs: ``espnet2.bin.pack`` zips that ``espnet_model_zoo`` unpacks and a task rebuilds.

:func:`pack_model` serves every task (separation and synthesis). It stages the files under their paths
relative to their common directory and rewrites every string of the config that names one of them (e.g.
``normalize_conf.stats_file``) to that relative name, so the zip is self-contained wherever the experiment
lives (``espnet_model_zoo`` rewrites the names to the unpack location). The zip is written under a temporary
name and verified before it is renamed: its members are checked for paths that would land outside the unpack
directory (:func:`check_archive`), it is unpacked offline through ``ModelDownloader``, no ``*_conf`` path of the
unpacked config may point outside it, and the model is rebuilt with the task and compared tensor by tensor
with the packed weights. A pack that fails verification leaves nothing behind.
"""

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import yaml

__all__ = ["archive_members", "check_archive", "pack_model", "unpack_model", "verify_pack"]

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
    except tarfile.TarError:  # its message lists every compression tried, one per line
        raise ValueError(f"{path}: not a zip or tar model archive") from None


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


def verify_pack(
    task, path: PathLike, model_file: PathLike, check: Optional[Callable[[Path], int]] = None
) -> Tuple[int, int]:
    """Unpack ``path`` into a fresh cache, rebuild the model with ``task`` and compare it with ``model_file``.

    Args:
        task: The ESPnet task class that builds the model (``CLIPSepTask``, ``TTSDiffTask``, ...).
        path: The pack.
        model_file: The weights that were packed.
        check: Called with the unpack directory for task-specific checks (e.g. that a packed prior loads);
            returns a count for the caller's log.

    Returns:
        ``(tensors compared, what check returned or 0)``.

    Raises:
        ValueError: a tensor is missing, extra, or different; the config names files outside the pack.
    """
    import torch

    from espnet2.enh.clipsep.files.weights import build_model_weights_only

    path = Path(path)
    reference = torch.load(model_file, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="clipsep-pack-") as cache:
        info = unpack_model(path, cache)
        outside = _outside_files(Path(info["train_config"]), Path(cache))
        if outside:
            raise ValueError(f"{path}: the packed config names files that are not in the pack: {outside}")
        model, _ = build_model_weights_only(task, info["train_config"], info["model_file"], strict=False)
        state = model.state_dict()
        checked = check(Path(cache)) if check is not None else 0
    if set(state) != set(reference):
        diff = sorted(set(state) ^ set(reference))
        raise ValueError(f"{path}: the rebuilt model's tensors differ from {model_file}: e.g. {diff[0]}")
    for key, value in reference.items():
        if not torch.equal(state[key].cpu(), value):
            raise ValueError(f"{path}: tensor {key} differs from {model_file} after unpacking")
    return len(reference), checked


def pack_model(
    task,
    train_config: PathLike,
    model_file: PathLike,
    outpath: PathLike,
    options: Sequence[PathLike] = (),
    check: Optional[Callable[[Path], int]] = None,
) -> Tuple[int, int]:
    """Pack with ``espnet2.bin.pack`` and verify the result (see the module docstring and :func:`verify_pack`).

    Returns:
        What :func:`verify_pack` returns.
    """
    from espnet2.main_funcs.pack_funcs import pack

    files = [Path(p) for p in (train_config, model_file, *options)]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: file not found")
    resolved = [p.resolve() for p in files]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    rel = {p: p.relative_to(root) for p in resolved}
    outpath = Path(outpath).resolve()
    outpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = outpath.with_name(outpath.stem + ".tmp" + outpath.suffix)
    try:
        with tempfile.TemporaryDirectory(prefix="clipsep-stage-") as stage:
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
        counts = verify_pack(task, tmp, model_file, check)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, outpath)
    return counts
