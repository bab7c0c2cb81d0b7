from typing import Optional

import pytest
import torch
from torch import nn

from espnet2.enh.clipsep.checkpoint_converter import (
    convert_reference_state_dict,
    reference_key_map,
    reference_key_shapes,
)
from espnet2.enh.clipsep.separator.unet import UNet

@pytest.fixture(scope="module")
def checkpoint(synthetic_checkpoint):
    return synthetic_checkpoint()


class _Separator(nn.Module):
    """Parameter names of our CLIPSepSeparator, for strict loading."""

    def __init__(self, num_noise_heads: int, channels: int = 32, embed_dim: int = 512, **unet_conf):
        super().__init__()
        self.unet = UNet(out_channels=channels, **unet_conf)
        self.query_proj = nn.Linear(embed_dim, channels)
        self.noise_heads = nn.ModuleList(nn.Linear(channels, channels) for _ in range(num_noise_heads))
        self.mask_scale = nn.Parameter(torch.ones(channels))
        self.mask_bias = nn.Parameter(torch.zeros(1))


class _ReferenceLevel(nn.Module):
    """One level of the reference's recursive U-Net (names and layer order of the released layout)."""

    def __init__(self, in_ch: int, inner: int, outer: int, sub: Optional[nn.Module], outermost: bool):
        super().__init__()
        layers = [] if outermost else [nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(in_ch, inner, 4, 2, 1, bias=False))
        if sub is not None:
            layers += ([] if outermost else [nn.BatchNorm2d(inner)]) + [sub]
        layers += [
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(inner if sub is None else 2 * inner, outer, 3, padding=1, bias=outermost),
        ]
        if not outermost:
            layers.append(nn.BatchNorm2d(outer))
        self.model = nn.Sequential(*layers)
        self.outermost = outermost

    def forward(self, x):
        y = self.model(x)  # the in-place LeakyReLU also rewrites x, as in the reference
        return y if self.outermost else torch.cat([x, y], 1)


class _ReferenceSoundNet(nn.Module):
    def __init__(self, channels: int, ngf: int, num_layers: int):
        super().__init__()
        widths = [ngf * 2 ** min(i, 3) for i in range(num_layers)]
        block = None
        for level in reversed(range(num_layers)):
            in_ch = 1 if level == 0 else widths[level - 1]
            outer = channels if level == 0 else widths[level - 1]
            block = _ReferenceLevel(in_ch, widths[level], outer, block, outermost=level == 0)
        self.bn0 = nn.BatchNorm2d(1)
        self.unet_block = block

    def forward(self, x):
        return self.unet_block(self.bn0(x))


class _ReferenceModel(nn.Module):
    def __init__(self, channels: int = 32, ngf: int = 64, num_layers: int = 7, num_noise_heads: int = 2):
        super().__init__()
        self.sound_net = _ReferenceSoundNet(channels, ngf, num_layers)
        self.frame_net = nn.Linear(512, channels)
        self.synth_net = nn.Module()
        self.synth_net.scale = nn.Parameter(torch.ones(channels))
        self.synth_net.bias = nn.Parameter(torch.zeros(1))
        self.pit_nets = nn.ModuleList(nn.Linear(channels, channels) for _ in range(num_noise_heads))


def test_tsv_sanity(checkpoint_keys):
    table = checkpoint_keys()
    assert len(table) == 83
    buffers = ("running_", "num_batches")
    params = {k: s for k, (s, _) in table.items() if not any(b in k for b in buffers)}
    count = lambda keys: sum(torch.Size(params[k]).numel() for k in keys)  # noqa: E731
    assert count(params) == 30_292_771
    assert count(k for k in params if k.startswith("module.sound_net.")) == 30_274_210


def test_reference_shapes_match_tsv(checkpoint_keys):
    expected = {k[len("module.") :]: shape for k, (shape, _) in checkpoint_keys().items()}
    assert reference_key_shapes(2) == expected
    assert set(reference_key_map(2)) == set(expected)


def test_reference_model_matches_tsv(checkpoint_keys):
    with torch.device("meta"):
        ref = _ReferenceModel()
    expected = {k[len("module.") :]: shape for k, (shape, _) in checkpoint_keys().items()}
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == expected


def test_round_trip_values(checkpoint):
    converted = convert_reference_state_dict(checkpoint, "ckpt.pth")
    key_map = reference_key_map(2)
    assert len(converted) == len(checkpoint) == 83
    for ref, ours in key_map.items():
        assert converted[ours] is checkpoint["module." + ref]

    unet = UNet()
    unet_state = {k[len("unet.") :]: v for k, v in converted.items() if k.startswith("unet.")}
    unet.load_state_dict(unet_state, strict=True)
    state = unet.state_dict()
    for ref, ours in key_map.items():
        if ours.startswith("unet."):
            assert torch.equal(state[ours[len("unet.") :]], checkpoint["module." + ref]), ref

    # Hand-checked anchors, independent of the derived map.
    p = "module.sound_net.unet_block.model."
    anchors = {
        "module.sound_net.bn0.running_var": unet.input_norm.running_var,
        p + "0.weight": unet.down[0].conv.weight,
        p + "1.model.1.weight": unet.down[1].conv.weight,
        p + "1.model.2.running_mean": unet.down[1].norm.running_mean,
        p + "1.model.3.model.3.model.3.model.1.weight": unet.down[4].conv.weight,
        p + "1.model.3.model.3.model.3.model.3.model.1.weight": unet.down[5].conv.weight,
        p + "1.model.3.model.3.model.3.model.3.model.3.model.1.weight": unet.down[6].conv.weight,
        p + "1.model.3.model.3.model.3.model.3.model.3.model.4.weight": unet.up[6].conv.weight,
        p + "1.model.3.model.3.model.3.model.3.model.3.model.5.bias": unet.up[6].norm.bias,
        p + "1.model.3.model.3.model.3.model.3.model.6.weight": unet.up[5].conv.weight,
        p + "1.model.3.model.3.model.3.model.6.weight": unet.up[4].conv.weight,
        p + "1.model.6.weight": unet.up[1].conv.weight,
        p + "1.model.7.num_batches_tracked": unet.up[1].norm.num_batches_tracked,
        p + "4.weight": unet.up[0].conv.weight,
        p + "4.bias": unet.up[0].conv.bias,
    }
    for key, target in anchors.items():
        assert torch.equal(target, checkpoint[key]), key
    assert converted["query_proj.weight"] is checkpoint["module.frame_net.weight"]
    assert converted["noise_heads.1.bias"] is checkpoint["module.pit_nets.1.bias"]
    assert converted["mask_scale"] is checkpoint["module.synth_net.scale"]
    assert converted["mask_bias"] is checkpoint["module.synth_net.bias"]

    _Separator(num_noise_heads=2).load_state_dict(converted, strict=True)


def test_prefix_is_optional(checkpoint):
    bare = {k[len("module.") :]: v for k, v in checkpoint.items()}
    with_prefix = convert_reference_state_dict(checkpoint)
    without = convert_reference_state_dict(bare)
    assert list(with_prefix) == list(without)
    assert all(with_prefix[k] is without[k] for k in with_prefix)


def test_mixed_prefix(checkpoint):
    mixed = dict(checkpoint)
    mixed["frame_net.bias"] = mixed.pop("module.frame_net.bias")
    with pytest.raises(ValueError, match="mixed.pth: 82 of 83 keys start with"):
        convert_reference_state_dict(mixed, "mixed.pth")


def test_missing_key(checkpoint):
    key = "module.sound_net.unet_block.model.1.model.2.running_var"
    broken = {k: v for k, v in checkpoint.items() if k != key}
    with pytest.raises(ValueError, match="missing 1 key") as err:
        convert_reference_state_dict(broken, "ckpt.pth")
    message = str(err.value)
    assert message.startswith("ckpt.pth: ") and key in message and "\n" not in message


def test_wrong_shape(checkpoint):
    broken = dict(checkpoint, **{"module.frame_net.weight": torch.zeros(32, 256)})
    with pytest.raises(ValueError, match="mis-shaped") as err:
        convert_reference_state_dict(broken, "ckpt.pth")
    message = str(err.value)
    assert "module.frame_net.weight (expected shape (32, 512), got (32, 256))" in message
    assert message.startswith("ckpt.pth: ")


def test_unexpected_keys(checkpoint):
    extra = {f"module.extra.{i}.weight": torch.zeros(1) for i in range(7)}
    with pytest.raises(ValueError, match="unexpected 7 key") as err:
        convert_reference_state_dict({**checkpoint, **extra}, "ckpt.pth")
    message = str(err.value)
    assert "module.extra.0.weight" in message and "module.extra.4.weight" in message
    assert "module.extra.5.weight" not in message and "(+2 more)" in message


def test_without_noise_heads(checkpoint):
    plain = {k: v for k, v in checkpoint.items() if ".pit_nets." not in k}
    converted = convert_reference_state_dict(plain)
    assert not any(k.startswith("noise_heads.") for k in converted)
    assert len(converted) == 79
    _Separator(num_noise_heads=0).load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match="missing 4 key"):
        convert_reference_state_dict(plain, num_noise_heads=2)


@pytest.mark.parametrize("train", [False, True])
def test_converted_unet_matches_reference(train):
    torch.manual_seed(0)
    conf = dict(channels=5, ngf=4, num_layers=6)
    ref = _ReferenceModel(num_noise_heads=2, **conf)
    with torch.no_grad():
        for name, tensor in ref.state_dict().items():
            if "running_var" in name:
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    state = {"module." + k: v.clone() for k, v in ref.state_dict().items()}
    converted = convert_reference_state_dict(
        state, num_layers=conf["num_layers"], ngf=conf["ngf"], channels=conf["channels"]
    )
    ours = _Separator(num_noise_heads=2, channels=5, ngf=4, num_layers=6)
    ours.load_state_dict(converted, strict=True)
    ref.train(train)
    ours.train(train)
    x = torch.randn(2, 1, 64, 128)
    with torch.no_grad():
        expected = ref.sound_net(x.clone())
        got = ours.unet(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
