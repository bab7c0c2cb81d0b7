"""Where a trained model's files are: a pack, an experiment directory, a weights file, or a model-zoo tag.

Shared by the separation and synthesis APIs: :func:`resolve_model` turns what a user passes into a
:class:`ModelFiles` (config, weights, and where to look for the CLIP the recipe used), unpacking archives
offline through ``espnet_model_zoo`` after :func:`~espnet2.enh.clipsep.files.pack.check_archive`.
"""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from espnet2.enh.clipsep.errors import CLIPSepError, first_line
from espnet2.enh.clipsep.files.pack import check_archive

__all__ = [
    "ARCHIVE_SUFFIXES",
    "CHECKPOINT_NAMES",
    "CHECKPOINT_SUFFIXES",
    "RELEASED",
    "ModelFiles",
    "Released",
    "released_path",
    "resolve_model",
]

PathLike = Union[str, os.PathLike]

# Weights an experiment directory may hold, in order of preference (ESPnet's best model first).
CHECKPOINT_NAMES = ("valid.loss.best.pth", "model.pth", "valid.loss.ave.pth", "latest.pth")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


@dataclass(frozen=True)
class Released:
    """A checkpoint the authors released, by a short name: fetched by hand, never by this code.

    Attributes:
        what: One line on the model.
        page: Where to download it (the release links it).
        filename: The name it must have in :func:`released_path`'s folder.
    """

    what: str
    page: str
    filename: str


# Reference: the release's clipsep/README.md, "Pretrained model" (https://github.com/sony/CLIPSep/tree/main/clipsep)
RELEASED: Dict[str, Released] = {
    "clipsep-nit-vggsound": Released(
        "CLIPSep-NIT trained on VGGSound by the authors (linked from github.com/sony/CLIPSep, clipsep/README.md)",
        "https://drive.google.com/file/d/1fgwT_wFyNjXxmN45D7jU001Azub0PR54/view?usp=sharing",
        "clipsep_nit_vggsound.pt",
    ),
}


def released_path(name: str) -> Path:
    """Where the released checkpoint ``name`` is looked for: ``$ESPNET_CLIPSEP_CACHE`` (default
    ``~/.cache/espnet-clipsep``) ``/released/<filename>``."""
    root = os.environ.get("ESPNET_CLIPSEP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "espnet-clipsep"
    )
    return Path(root) / "released" / RELEASED[name].filename


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are.

    Attributes:
        train_config: ``config.yaml`` written by training (None for a released checkpoint).
        model_file: The weights.
        search_dirs: Directories to look in for the CLIP weights the recipe used (``*.pt``, ``clip/*.pt``).
        source: What the user passed.
        pack_root: Where a pack was unpacked (searched recursively: CLIP weights packed with ``--option``).
    """

    train_config: Optional[Path]
    model_file: Path
    search_dirs: Tuple[Path, ...]
    source: str
    pack_root: Optional[Path] = None


def _looks_like_path(name: str) -> bool:
    lower = name.lower()
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\"))
        or lower.endswith(ARCHIVE_SUFFIXES + CHECKPOINT_SUFFIXES + (".yaml",))
    )


def _experiment_weights(directory: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.glob("*.pth") if p.name != "checkpoint.pth")
    if len(found) == 1:
        return directory / found[0]
    raise CLIPSepError(
        f"{directory}: no model weights ({', '.join(CHECKPOINT_NAMES)})"
        + (f"; several candidates: {', '.join(found)}" if found else "")
    )


def _from_pack_info(info: Dict, source: str, near: Sequence[Path] = ()) -> ModelFiles:
    config, weights = info.get("train_config"), info.get("model_file")
    if not config or not weights:
        raise CLIPSepError(f"{source}: not a model pack (no train_config/model_file in meta.yaml)")
    root = next((d for d in Path(config).parents if (d / "meta.yaml").is_file()), None)
    dirs = tuple(dict.fromkeys([Path(config).parent, *near]))
    return ModelFiles(Path(config), Path(weights), dirs, source, root)


def resolve_model(model: PathLike, cache_dir: Optional[PathLike] = None) -> ModelFiles:
    """Find the config and weights of ``model``.

    Args:
        model: A packed zip/tar (checked with :func:`~espnet2.enh.clipsep.files.pack.check_archive`, unpacked
            offline by ``espnet_model_zoo``), an experiment directory (``config.yaml`` + ``valid.loss.best.pth``
            or ``model.pth``), a weights file with ``config.yaml`` beside it, the released CLIPSep checkpoint
            (no config: converted in memory), a short name of :data:`RELEASED` (the same, from
            :func:`released_path`; never downloaded), or an ``espnet_model_zoo`` tag or Hugging Face repo
            ``user/name`` (downloaded by its ``ModelDownloader``; offline, from its cache).
        cache_dir: Where ``espnet_model_zoo`` unpacks and downloads (its default when None).

    Returns:
        The :class:`ModelFiles`.

    Raises:
        CLIPSepError: Missing path, unusable archive, or a tag that cannot be fetched.
    """
    import zipfile


    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.yaml"
        if not config.is_file():
            raise CLIPSepError(f"{path}: model directory without config.yaml")
        weights = _experiment_weights(path)
        return ModelFiles(config, weights, (path, path.parent), name)
    if path.is_file():
        is_torch_zip = False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            is_torch_zip = not any(Path(n).name == "meta.yaml" for n in names) and any(
                n.endswith("data.pkl") for n in names
            )
        if path.name.lower().endswith(CHECKPOINT_SUFFIXES) or is_torch_zip:
            config = path.with_name("config.yaml")
            if config.is_file():
                return ModelFiles(config, path, (path.parent, path.parent.parent), name)
            return ModelFiles(None, path, (path.parent, path.parent.parent), name)  # released checkpoint
        try:
            check_archive(path)
        except ValueError as err:
            raise CLIPSepError(str(err)) from None
        info = _zoo_call(lambda zoo: zoo.unpack_local_file(str(path.resolve())), cache_dir, path)
        # The recipe's pack sits in its experiment dir: exp/<dataset>/<model>/packed.zip beside exp/<dataset>/clip/.
        return _from_pack_info(info, name, near=(path.parent, path.parent.parent))
    if path.exists():
        raise CLIPSepError(f"{path}: not a model file or directory")
    if name in RELEASED:  # a short name: the checkpoint the user downloaded by hand, converted in memory
        where = released_path(name)
        if not where.is_file():
            raise CLIPSepError(
                f"{name}: {RELEASED[name].what}, is not downloaded: get it from {RELEASED[name].page} (in a browser; "
                f"nothing here fetches it) and save the checkpoint file as {where}, or pass that file's path"
            )
        return ModelFiles(None, where, (where.parent,), name)
    if _looks_like_path(name):
        raise CLIPSepError(f"{path}: model not found")
    return _from_pack_info(_download_tag(name, cache_dir), name)


def _zoo_call(fn: Callable, cache_dir: Optional[PathLike], what: PathLike):
    from espnet_model_zoo.downloader import ModelDownloader

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expanding a local model")
            return fn(ModelDownloader(cache_dir))
    except CLIPSepError:
        raise
    except Exception as err:  # zipfile.BadZipFile, tarfile errors, "Format error: not found meta.yaml", ...
        problem = f"cannot unpack as a model pack ({type(err).__name__}: {first_line(err)})"
        raise CLIPSepError(f"{what}: {problem}") from None


def _download_tag(tag: str, cache_dir: Optional[PathLike]) -> Dict:
    """Fetch an ``espnet_model_zoo`` tag; a downloaded archive is checked before it is unpacked."""

    def fetch(zoo):
        try:
            where = Path(zoo.download(tag, quiet=True))
        except Exception as err:  # offline, unknown tag, HTTP errors
            raise CLIPSepError(
                f"{tag}: model not found (not a local path, and espnet_model_zoo cannot fetch it: "
                f"{type(err).__name__}: {first_line(err)})"
            ) from None
        if where.is_dir():  # a Hugging Face snapshot: files, not an archive
            return zoo._unpack_cache_dir_for_huggingfase(str(where))
        try:
            check_archive(where)
        except ValueError as err:
            raise CLIPSepError(str(err)) from None
        return zoo.unpack_local_file(str(where))

    return _zoo_call(fetch, cache_dir, tag)
