import pytest
import torch
from typeguard import TypeCheckError

from espnet2.enh.clipsep.separator.unet import UNet


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_count():
    assert _num_params(UNet()) == 30_274_210


def test_default_layout():
    unet = UNet()
    assert [b.conv.out_channels for b in unet.down] == [64, 128, 256, 512, 512, 512, 512]
    assert [b.conv.out_channels for b in unet.up] == [32, 64, 128, 256, 512, 512, 512]
    assert [b.conv.in_channels for b in unet.up] == [128, 256, 512, 1024, 1024, 1024, 512]
    assert all(b.conv.bias is None for b in unet.down)
    assert [b.conv.bias is not None for b in unet.up] == [True] + [False] * 6
    has_norm = [not isinstance(b.norm, torch.nn.Identity) for b in unet.down]
    assert has_norm == [False] + [True] * 5 + [False]
    assert [not isinstance(b.norm, torch.nn.Identity) for b in unet.up] == [False] + [True] * 6


def test_default_forward_shape():
    unet = UNet().eval()
    with torch.no_grad():
        y = unet(torch.randn(1, 1, 256, 128))
    assert y.shape == (1, 32, 256, 128)


def test_tiny_forward_backward():
    torch.manual_seed(0)
    unet = UNet(out_channels=5, ngf=4, num_layers=3)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    y = unet(x)
    assert y.shape == (2, 5, 16, 16)
    assert torch.isfinite(y).all()
    y.pow(2).mean().backward()
    for param in (
        unet.input_norm.weight,
        unet.down[0].conv.weight,
        unet.up[0].conv.weight,
        unet.up[0].conv.bias,
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape", [(1, 1, 16, 12), (1, 1, 20, 16), (1, 1, 4, 4)])
def test_non_divisible_input(shape):
    unet = UNet(out_channels=2, ngf=2, num_layers=3)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_layers=8"):
        unet(torch.randn(*shape))


def test_wrong_input_channels():
    unet = UNet(out_channels=2, ngf=2, num_layers=3)
    with pytest.raises(ValueError, match="expected input"):
        unet(torch.randn(1, 2, 16, 16))


def test_bad_config():
    with pytest.raises(ValueError, match="num_layers"):
        UNet(num_layers=1)
    with pytest.raises(TypeCheckError):
        UNet(ngf=4.0)
