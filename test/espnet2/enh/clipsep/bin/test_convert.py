"""python -m espnet2.enh.clipsep.bin.convert: released checkpoint -> ESPnet config.yaml + model.pth."""

import pytest
import torch

from espnet2.enh.clipsep.bin import convert
from espnet2.enh.clipsep.checkpoint_converter import reference_key_shapes
from espnet2.enh.clipsep.task import CLIPSepTask


def _released_like(path, noise_heads=2, wrap=True):
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in reference_key_shapes(num_noise_heads=noise_heads).items():
        if key.endswith("num_batches_tracked"):
            state[f"module.{key}"] = torch.tensor(7)
        else:
            state[f"module.{key}"] = torch.randn(*shape, generator=g)
    torch.save({"state_dict": state} if wrap else state, path)
    return state


@pytest.mark.parametrize("noise_heads", [2, 0])
def test_convert_then_build_model_from_file(tmp_path, noise_heads):
    state = _released_like(tmp_path / "ckpt.pt", noise_heads)
    out = tmp_path / "exp"
    assert convert.main(["--checkpoint", str(tmp_path / "ckpt.pt"), "--output_dir", str(out)]) == 0
    model, args = CLIPSepTask.build_model_from_file(out / "config.yaml", out / "model.pth", "cpu")
    sep = model.separator
    assert len(sep.noise_heads) == noise_heads
    assert torch.equal(sep.query_proj.weight, state["module.frame_net.weight"])
    assert torch.equal(sep.mask_scale, state["module.synth_net.scale"])
    assert torch.equal(sep.unet.input_norm.running_var, state["module.sound_net.bn0.running_var"])
    if noise_heads:
        assert torch.equal(sep.noise_heads[1].bias, state["module.pit_nets.1.bias"])
        assert args.criterions[0]["wrapper"] == "noise_invariant"
    # Every tensor of the model came from the checkpoint (ESPnet's own loader would not tell).
    assert len(model.state_dict()) == len(state)


def test_convert_refuses_bad_input(tmp_path, capsys):
    state = _released_like(tmp_path / "ckpt.pt", wrap=False)
    del state["module.synth_net.bias"]
    torch.save(state, tmp_path / "missing.pt")
    out = tmp_path / "exp"
    assert convert.main(["--checkpoint", str(tmp_path / "missing.pt"), "--output_dir", str(out)]) == 2
    assert "synth_net.bias" in capsys.readouterr().err
    assert not out.exists()

    (tmp_path / "evil.pt").write_bytes(b"")
    torch.save({"state_dict": state, "hook": print}, tmp_path / "evil.pt")  # needs pickle execution
    assert convert.main(["--checkpoint", str(tmp_path / "evil.pt"), "--output_dir", str(out)]) == 2
    assert "cannot read as a weights-only checkpoint" in capsys.readouterr().err
    assert not out.exists()

    assert convert.main(["--checkpoint", str(tmp_path / "ckpt.pt"), "--output_dir", str(out)]) == 0
    assert convert.main(["--checkpoint", str(tmp_path / "ckpt.pt"), "--output_dir", str(out)]) == 2
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.pth"]
