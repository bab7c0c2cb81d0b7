"""Sharing on the hub: the staged repo (unpacked pack + model card) loads by name; the upload's calls."""

import shutil

import numpy as np
import pytest

from espnet2.enh.clipsep.bin import upload as cli
from espnet2.enh.clipsep.files import hub
from espnet2.enh.clipsep.separate import Separator

FS = 16000
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def pack_with_clip(recipe, pack_into, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(recipe / "train_enh_clipsep_nit", tree / "train_enh_clipsep_nit")
    shutil.copytree(recipe / "clip", tree / "exp" / "mini" / "clip")
    pack_into(tree, tmp_path / "packed.zip", ["exp/mini/clip/clipsep-tiny.pt", "exp/mini/clip/clipsep-tiny.pt.json"])
    results = tmp_path / "RESULTS.md"
    results.write_text("# t\n\n| System | Query | SDRi |\n|---|---|---|\n| CLIPSep-NIT | text | 4.43 ± 0.72 |\n\nafter\n")
    return tmp_path / "packed.zip", results


def test_staged_repo_has_the_pack_and_a_card_and_loads_by_name(pack_with_clip, recipe, tmp_path, monkeypatch, noise):
    pack, results = pack_with_clip
    cache = tmp_path / "zoo"
    snapshot = cache / "models--you--clipsep-mini" / "snapshots" / COMMIT
    hub.stage_repo(pack, "you/clipsep-mini", snapshot, results)  # exactly what a download of the repo gives
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    card = (snapshot / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: espnet\n") and "--model you/clipsep-mini" in card
    assert 'Separator.from_pretrained("you/clipsep-mini")' in card and "Separator `clipsep`" in card
    assert "| CLIPSep-NIT | text | 4.43 ± 0.72 |" in card and "after" not in card
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_name = Separator.from_pretrained("you/clipsep-mini", cache_dir=cache, device="cpu")
    local = Separator.from_pretrained(recipe / "train_enh_clipsep_nit", device="cpu")
    x = noise(0.5)
    np.testing.assert_allclose(by_name(x, FS, query="violin"), local(x, FS, query="violin"), atol=1e-6)


def test_upload_creates_the_repo_and_sends_the_staged_folder(pack_with_clip, monkeypatch, capsys):
    import huggingface_hub

    pack, results = pack_with_clip
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, folder_path, repo_id, **kw):  # the call that would send: record what it would send
        from pathlib import Path

        sent = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls.append(("upload_folder", repo_id, sent))
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert cli.main(["--pack", str(pack), "--hf_repo", "you/clipsep-mini", "--results", str(results)]) == 0
    assert calls[0] == ("create_repo", "you/clipsep-mini", {"repo_type": "model", "private": False, "exist_ok": True})
    name, repo, sent = calls[1]
    assert (name, repo) == ("upload_folder", "you/clipsep-mini")
    assert {"README.md", "meta.yaml", "train_enh_clipsep_nit/config.yaml", "train_enh_clipsep_nit/model.pth",
            "exp/mini/clip/clipsep-tiny.pt"} <= set(sent)
    assert "https://huggingface.co/you/clipsep-mini/commit/1" in capsys.readouterr().out


def test_upload_errors_are_one_line(pack_with_clip, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    pack, _ = pack_with_clip
    assert cli.main(["--pack", str(pack), "--hf_repo", "no-user"]) == 2
    assert capsys.readouterr().err.strip() == "upload: error: --hf_repo 'no-user': expected USER/NAME"
    assert cli.main(["--pack", str(tmp_path / "none.zip"), "--hf_repo", "a/b"]) == 2
    assert capsys.readouterr().err.strip().endswith("none.zip: pack not found")

    def refuse(self, *a, **k):
        raise RuntimeError("Invalid user token.\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    assert cli.main(["--pack", str(pack), "--hf_repo", "a/b"]) == 1
    assert capsys.readouterr().err.strip() == "upload: error: a/b: RuntimeError: Invalid user token."
