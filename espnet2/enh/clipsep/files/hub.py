"""Share a packed model on the Hugging Face hub the way ESPnet recipes do: the unpacked pack plus a model card.

The repo then loads by name (``Separator.from_pretrained("user/name")``, ``separate --model user/name``)
through ``espnet_model_zoo``, which downloads a hub repo as a snapshot and reads its ``meta.yaml``.
"""

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

import yaml

from espnet2.enh.clipsep.files.pack import check_archive

__all__ = ["model_card", "stage_and_upload", "stage_repo", "upload_repo"]

PathLike = Union[str, os.PathLike]


def _results_table(results: Path) -> str:
    """The first Markdown table of a RESULTS.md (the recipe's results), or "" when there is none."""
    lines = Path(results).read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return ""
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def model_card(repo: str, config: dict, results: Optional[Path] = None, license: str = "apache-2.0") -> str:
    """The README.md of a hub repo: metadata, how to use it, the model's settings and the recipe's results.

    Args:
        repo: ``user/name`` on the hub.
        config: The training ``config.yaml`` of the packed model.
        results: The recipe's RESULTS.md (its first table is copied).
    """
    separator = config.get("separator", "?")
    conf = config.get("separator_conf", {})
    settings = ", ".join(f"{k} {v}" for k, v in conf.items())
    front = yaml.safe_dump(
        {"library_name": "espnet", "license": license,
         "tags": ["espnet", "audio", "audio-source-separation", "clipsep", "text-queried-separation"]},
        sort_keys=False,
    )  # fmt: skip
    table = _results_table(results) if results is not None and Path(results).is_file() else ""
    parts = [
        f"---\n{front}---\n",
        f"# {repo}: text-queried sound separation (CLIPSep, ESPnet)\n",
        "Separates the sound a text (or image) query describes from a recording. Trained on unlabeled video "
        "through a frozen CLIP model (Dong et al., *CLIPSep: Learning Text-queried Sound Separation with Noisy "
        "Unlabeled Videos*, ICLR 2023), with the espnet-clipsep plugin.\n",
        "## How to use\n",
        "```bash\npip install espnet-clipsep   # or: git clone ... && bash tools/install.sh\n"
        f"python -m espnet2.enh.clipsep.bin.separate --model {repo} --query \"dog barking\" in.wav -o out/\n```\n",
        "```python\nfrom espnet2.enh.clipsep.separate import Separator\n"
        f"sep = Separator.from_pretrained(\"{repo}\")\nout = sep(waveform, sample_rate, query=\"dog barking\")\n```\n",
        "## The model\n",
        f"Separator `{separator}` ({settings}); encoder `{config.get('encoder', '?')}` "
        f"{config.get('encoder_conf', {})}. The packed `config.yaml` has every setting.\n",
    ]
    if table:
        parts += ["## Results (the recipe's RESULTS.md)\n", table]
    return "\n".join(parts)


def stage_repo(pack: PathLike, repo: str, out_dir: PathLike, results: Optional[PathLike] = None) -> Path:
    """Unpack ``pack`` into ``out_dir`` (archive checked first) and write its model card as ``README.md``.

    Returns:
        ``out_dir``, ready for :func:`upload_repo`.

    Raises:
        ValueError / FileNotFoundError: an unsafe or missing pack, or one without ``meta.yaml`` (one line).
    """
    pack, out_dir = Path(pack), Path(out_dir)
    if not pack.is_file():
        raise FileNotFoundError(f"{pack}: pack not found")
    check_archive(pack)
    if not zipfile.is_zipfile(pack):
        raise ValueError(f"{pack}: not a zip pack (espnet2.enh.clipsep.bin.pack writes zips)")
    with zipfile.ZipFile(pack) as zf:
        zf.extractall(out_dir)
    meta = out_dir / "meta.yaml"
    if not meta.is_file():
        raise ValueError(f"{pack}: no meta.yaml (not a pack of espnet2.enh.clipsep.bin.pack)")
    config_rel = yaml.safe_load(meta.read_text(encoding="utf-8"))["yaml_files"]["train_config"]
    config = yaml.safe_load((out_dir / config_rel).read_text(encoding="utf-8"))
    (out_dir / "README.md").write_text(model_card(repo, config, Path(results) if results else None), encoding="utf-8")
    return out_dir


def upload_repo(folder: PathLike, repo: str, private: bool = False, token: Optional[str] = None) -> str:
    """Create ``repo`` on the hub if needed and upload ``folder`` as one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                             commit_message="espnet-clipsep: packed model and model card")  # fmt: skip
    return str(getattr(info, "commit_url", info))


def stage_and_upload(pack: PathLike, repo: str, results: Optional[PathLike] = None, private: bool = False) -> str:
    """:func:`stage_repo` into a temporary directory, then :func:`upload_repo`."""
    with tempfile.TemporaryDirectory(prefix="clipsep-hub-") as tmp:
        return upload_repo(stage_repo(pack, repo, tmp, results), repo, private)
