"""Packs: written, verified against the weights after an offline unpack, and refused when unsafe."""

import argparse
import zipfile

import pytest
import torch
import yaml

from espnet2.enh.clipsep.bin.pack import main as pack_main
from espnet2.enh.clipsep.files.pack import check_archive, pack_model, unpack_model, verify_pack
from espnet2.enh.clipsep.task import CLIPSepTask


def test_pack_reloads_identically_through_the_model_zoo(make_experiment, tmp_path):
    exp = make_experiment(tmp_path, "train_enh_clipsep_nit.yaml")
    (tmp_path / "RESULTS.md").write_text("# results\n")
    zip_path = tmp_path / "packed.zip"
    assert pack_main(["--train_config", str(exp / "config.yaml"), "--model_file", str(exp / "model.pth"),
                      "--outpath", str(zip_path), "--option", str(tmp_path / "RESULTS.md")]) == 0
    names = zipfile.ZipFile(zip_path).namelist()
    assert "meta.yaml" in names and any(n.endswith("RESULTS.md") for n in names)
    assert verify_pack(CLIPSepTask, zip_path, exp / "model.pth") == (len(torch.load(exp / "model.pth", weights_only=True)), 0)
    info = unpack_model(zip_path, tmp_path / "cache")
    model, _ = CLIPSepTask.build_model_from_file(info["train_config"], info["model_file"], "cpu")
    assert type(model).__name__ == "CLIPSepEnhancementModel" and len(model.separator.noise_heads) == 2

    # A different model file does not verify.
    other = CLIPSepTask.build_model(argparse.Namespace(**yaml.safe_load((exp / "config.yaml").read_text())))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="differs"):
        verify_pack(CLIPSepTask, zip_path, tmp_path / "other.pth")


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_archive_members_outside_the_target_are_refused(tmp_path, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("meta.yaml", "files: {}\nyaml_files: {}\n")
        zf.writestr(member, "x")
    with pytest.raises(ValueError, match="outside the target directory"):
        unpack_model(bad, tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache").exists()


def test_symlink_members_are_refused(tmp_path):
    bad = tmp_path / "link.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="link or special file"):
        check_archive(bad)


def test_a_pack_that_does_not_verify_leaves_nothing(make_experiment, tmp_path):
    exp = make_experiment(tmp_path, "train_enh_clipsep.yaml")
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["separator_conf"]["num_masks"] = config["separator_conf"].get("num_masks", 32) + 1  # weights no longer fit
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "packed.zip"
    with pytest.raises(RuntimeError):
        pack_model(CLIPSepTask, exp / "config.yaml", exp / "model.pth", out)
    assert list((tmp_path / "out").iterdir()) == []  # neither the zip nor its temporary name


def test_packed_config_names_packed_files_relatively(make_experiment, tmp_path):
    exp = make_experiment(tmp_path, "train_enh_clipsep.yaml")
    extra = tmp_path / "clip" / "clip.pt"
    extra.parent.mkdir()
    extra.write_bytes(b"weights")
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["init_param"] = [str(extra.resolve())]  # an absolute path to a file that travels with the pack
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "packed.zip"
    pack_model(CLIPSepTask, exp / "config.yaml", exp / "model.pth", out, [extra])
    with zipfile.ZipFile(out) as zf:
        packed = yaml.safe_load(zf.read(f"{exp.name}/config.yaml"))
        assert sorted(zf.namelist()) == sorted(["meta.yaml", f"{exp.name}/config.yaml", f"{exp.name}/model.pth", "clip/clip.pt"])
    assert packed["init_param"] == ["clip/clip.pt"]
