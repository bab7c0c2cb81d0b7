"""Models by name: the released checkpoint by its short name (never fetched), and Hugging Face repos offline.

A hub repo in ESPnet's layout is an unpacked pack (meta.yaml + the files it lists); here one is put into a hub
cache by hand, as a download would leave it, and loaded with HF_HUB_OFFLINE=1.
"""

import zipfile

import numpy as np
import pytest
import torch

from espnet2.enh.clipsep.errors import CLIPSepError
from espnet2.enh.clipsep.files.model_files import RELEASED, released_path, resolve_model
from espnet2.enh.clipsep.separate import Separator

FS = 16000


def test_released_short_name_says_where_to_get_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ESPNET_CLIPSEP_CACHE", str(tmp_path / "cache"))
    where = tmp_path / "cache" / "released" / "clipsep_nit_vggsound.pt"
    assert released_path("clipsep-nit-vggsound") == where
    with pytest.raises(CLIPSepError) as err:
        resolve_model("clipsep-nit-vggsound")
    message = str(err.value)
    assert "\n" not in message and RELEASED["clipsep-nit-vggsound"].page in message and str(where) in message
    assert not where.parent.exists()  # nothing was fetched or created


def test_released_short_name_loads_the_file_put_there(synthetic_checkpoint, tmp_path, monkeypatch, noise):
    monkeypatch.setenv("ESPNET_CLIPSEP_CACHE", str(tmp_path / "cache"))
    state = synthetic_checkpoint()
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1.0
    path = released_path("clipsep-nit-vggsound")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    by_name = Separator.from_pretrained("clipsep-nit-vggsound", device="cpu")
    by_path = Separator.from_pretrained(path, device="cpu")
    x, q = noise(0.4), torch.randn(512)
    np.testing.assert_array_equal(by_name(x, FS, embedding=q), by_path(x, FS, embedding=q))


def _hub_cache(cache, repo, pack):
    """What huggingface_hub's snapshot_download leaves in ``cache`` for ``repo`` (one snapshot, refs/main)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    with zipfile.ZipFile(pack) as zf:
        zf.extractall(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_repo_loads_offline_from_the_cache(recipe, pack_into, tmp_path, monkeypatch, noise):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The recipe's layout: the CLIP packed from exp/<dataset>/clip/. (espnet_model_zoo rewrites every config
    # value that equals a relative path in the snapshot into an absolute one: a top-level "clip/" folder
    # would turn `query_type: clip` into a path.)
    tree = tmp_path / "tree"
    shutil.copytree(recipe / "train_enh_clipsep_nit", tree / "train_enh_clipsep_nit")
    shutil.copytree(recipe / "clip", tree / "exp" / "mini" / "clip")
    pack_into(tree, tmp_path / "with_clip.zip", ["exp/mini/clip/clipsep-tiny.pt", "exp/mini/clip/clipsep-tiny.pt.json"])
    _hub_cache(tmp_path / "zoo", "someone/clipsep-mini", tmp_path / "with_clip.zip")
    hub = Separator.from_pretrained("someone/clipsep-mini", cache_dir=tmp_path / "zoo", device="cpu")
    local = Separator.from_pretrained(recipe / "train_enh_clipsep_nit", device="cpu")
    assert hub.query_encoder.model_name == "clipsep-tiny"  # the CLIP packed with it
    x = noise(0.5)
    np.testing.assert_allclose(hub(x, FS, query="violin"), local(x, FS, query="violin"), atol=1e-6)
    with pytest.raises(CLIPSepError, match="someone/not-cached: model not found"):
        Separator.from_pretrained("someone/not-cached", cache_dir=tmp_path / "zoo", device="cpu")
