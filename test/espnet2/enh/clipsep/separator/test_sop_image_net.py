"""SOPImageNet: Sound of Pixels' dilated ResNet-18 query network on random weights and torchvision-layout files."""

import logging

import pytest
import torch
import torchvision

from espnet2.enh.clipsep.separator.sop_image_net import IMAGENET_MEAN, IMAGENET_STD, SOPImageNet

K = 8


def _net(seed: int = 0, **kwargs) -> SOPImageNet:
    torch.manual_seed(seed)
    return SOPImageNet(**{"num_channels": K, "width": 8, "image_size": 32, **kwargs})


def _frames(batch: int = 2, num: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, num, size, size, 3), generator=gen, dtype=torch.uint8)


def _normalised(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) pixels -> (N, 3, H, W) ImageNet-normalised, as torchvision's models expect."""
    x = frames.float().permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _sop_dilate_layer4(model: torchvision.models.ResNet) -> None:
    """SOP's dilate_scale 16 written out block by block for torchvision's resnet18 (an independent statement)."""
    first, second = model.layer4
    first.conv1.stride = (1, 1)  # the strided 3x3: stride 1, dilation 1
    first.downsample[0].stride = (1, 1)
    for conv in (first.conv2, second.conv1, second.conv2):
        conv.dilation, conv.padding = (2, 2), (2, 2)


# ---------------------------------------------------------------------------------------------------------
# Random weights
def test_query_is_sigmoid_of_max_over_frames_and_space():
    net = _net().eval()
    frames = _frames()
    with torch.no_grad():
        q = net(frames)
        maps = net.feature_maps(frames)
    assert q.shape == (2, K)
    assert float(q.min()) > 0.0 and float(q.max()) < 1.0
    torch.testing.assert_close(q, torch.sigmoid(maps.amax(dim=(1, 3, 4))))
    assert not torch.allclose(q[0], q[1])  # different frames, different queries


def test_time_max_pooling_ignores_frame_order_but_sees_every_frame():
    net = _net().eval()
    frames = _frames(num=3)
    with torch.no_grad():
        q = net(frames)
        torch.testing.assert_close(net(frames[:, [2, 0, 1]]), q, rtol=0, atol=0)
        torch.testing.assert_close(net(frames[:, [1, 2, 0]]), q, rtol=0, atol=0)
        # Each frame can raise a channel's max: dropping frames changes the query.
        assert not torch.allclose(net(frames[:, :1]), q)
        per_frame = torch.stack([net.pooled_logits(frames[:, i : i + 1]) for i in range(3)])
        torch.testing.assert_close(net.pooled_logits(frames), per_frame.amax(dim=0))


def test_avg_pool_is_the_mean_over_frames_and_space():
    net = _net(pool="avg").eval()
    frames = _frames()
    with torch.no_grad():
        torch.testing.assert_close(net.pooled_logits(frames), net.feature_maps(frames).mean(dim=(1, 3, 4)))
        torch.testing.assert_close(net(frames[:, [2, 1, 0]]), net(frames))


@pytest.mark.parametrize("dilate_scale, size, side", [(16, 64, 4), (32, 64, 2), (8, 64, 8), (16, 224, 14)])
def test_dilation_sets_the_output_stride(dilate_scale, size, side):
    net = _net(dilate_scale=dilate_scale, image_size=size).eval()
    with torch.no_grad():
        maps = net.feature_maps(_frames(batch=1, num=2, size=size))
    assert maps.shape == (1, 2, K, side, side)


def test_dilated_trunk_has_the_plain_trunks_parameters():
    plain, dilated = _net(dilate_scale=32), _net(dilate_scale=16)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [
        (k, v.shape) for k, v in dilated.state_dict().items()
    ]
    conv = dilated.trunk.layer4[1].conv1
    assert conv.dilation == (2, 2) and conv.padding == (2, 2) and conv.stride == (1, 1)
    assert dilated.trunk.layer4[0].conv1.stride == (1, 1) and dilated.trunk.layer3[0].conv1.stride == (2, 2)


def test_frames_of_another_size_are_resized():
    net = _net().eval()
    gen = torch.Generator().manual_seed(2)
    colours = torch.randint(0, 256, (2, 3, 1, 1, 3), generator=gen, dtype=torch.uint8)
    with torch.no_grad():  # a flat colour stays that colour at any size
        torch.testing.assert_close(net(colours.expand(2, 3, 64, 48, 3)), net(colours.expand(2, 3, 32, 32, 3)))


def test_uint8_and_float_pixels_agree_and_gradients_reach_every_layer():
    net = _net().train()
    frames = _frames()
    torch.testing.assert_close(net(frames), net(frames.float()))
    net(frames).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_random_init_is_torchvisions_and_is_logged(caplog):
    with caplog.at_level(logging.INFO):
        net = _net(width=16)
    assert "SOP image network: random init (no ImageNet weights)" in caplog.text
    assert torch.equal(net.trunk.bn1.weight, torch.ones(16)) and torch.equal(net.trunk.bn1.bias, torch.zeros(16))
    # kaiming_normal_(fan_out, relu): std sqrt(2 / (out_channels * 7 * 7)) for conv1
    std = float(net.trunk.conv1.weight.detach().std())
    assert abs(std - (2.0 / (16 * 49)) ** 0.5) < 0.15 * std
    assert not any(k in net.state_dict() for k in ("mean", "std"))  # constants stay out of checkpoints


# ---------------------------------------------------------------------------------------------------------
# torchvision-layout weights
@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision resnet18 (random weights, random BN statistics) and its state dict saved as a user's file."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
    path = tmp_path_factory.mktemp("imagenet") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_torchvision_file_reproduces_resnet18s_trunk_exactly(torchvision_file, caplog):
    model, path = torchvision_file
    with caplog.at_level(logging.INFO):
        net = SOPImageNet(num_channels=K, width=64, image_size=64, dilate_scale=32, pretrained=str(path)).eval()
    assert f"ImageNet weights from {path}" in caplog.text and "random init" not in caplog.text
    assert list(net.trunk.state_dict()) == [k for k in model.state_dict() if not k.startswith("fc.")]
    frames = _frames(batch=2, num=1, size=64)
    tv_trunk = torch.nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        expected = tv_trunk(_normalised(frames[:, 0]))
        assert torch.equal(net.trunk(_normalised(frames[:, 0])), expected)
        # ... and the whole path from pixels: normalisation, trunk, the k-channel convolution.
        torch.testing.assert_close(net.feature_maps(frames)[:, 0], net.fc(expected))


def test_torchvision_file_with_sop_dilation(torchvision_file):
    model, path = torchvision_file
    net = SOPImageNet(num_channels=K, width=64, image_size=64, dilate_scale=16, pretrained=str(path)).eval()
    dilated = torchvision.models.resnet18(weights=None).eval()
    dilated.load_state_dict(model.state_dict())
    _sop_dilate_layer4(dilated)
    frames = _frames(batch=2, num=1, size=64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(dilated.children())[:-2])(_normalised(frames[:, 0]))
        out = net.trunk(_normalised(frames[:, 0]))
    assert expected.shape[-2:] == (4, 4)
    assert torch.equal(out, expected)


def test_pretrained_errors(torchvision_file, tmp_path):
    _, path = torchvision_file
    with pytest.raises(FileNotFoundError, match="nowhere.pth: ImageNet weights file not found"):
        SOPImageNet(width=64, pretrained=str(tmp_path / "nowhere.pth"))
    with pytest.raises(ValueError, match="width 64 and cannot apply to width 8"):
        SOPImageNet(width=8, pretrained=str(path))
    state = torch.load(path, weights_only=True)
    cases = {
        "missing.pth": ({k: v for k, v in state.items() if not k.startswith("layer4.1.")}, "missing .e.g. layer4.1"),
        "extra.pth": ({**state, "layer5.weight": torch.zeros(1)}, "unexpected .e.g. layer5.weight"),
        "shape.pth": ({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, "conv1.weight has shape .64, 3, 3, 3."),
        "list.pth": ([torch.zeros(1)], "expected a torchvision resnet18 state dict"),
    }
    for name, (content, match) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match=f"{name}: .*{match}"):
            SOPImageNet(width=64, pretrained=str(tmp_path / name))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pth: not a readable torch state dict"):
        SOPImageNet(width=64, pretrained=str(tmp_path / "text.pth"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dilate_scale=4), "dilate_scale"),
        (dict(pool="median"), "pool"),
        (dict(fc_kernel=2), "fc_kernel"),
        (dict(width=0), "positive"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _net(**kwargs)


def test_wrong_frames_shape():
    with pytest.raises(ValueError, match=r"\(B, Q, H, W, 3\)"):
        _net()(torch.zeros(2, 3, 3, 32, 32))
