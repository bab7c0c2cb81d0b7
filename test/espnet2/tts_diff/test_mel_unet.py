import math

import pytest
import torch

from espnet2.tts_diff.unet import MelUNet, timestep_embedding

TINY = dict(cond_dim=8, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(2,), num_heads=2)


def _tiny(seed: int = 0, **kw) -> MelUNet:
    torch.manual_seed(seed)
    return MelUNet(**{**TINY, **kw})


@pytest.mark.parametrize("n_mels, frames", [(16, 1), (16, 37), (13, 20), (64, 141)])
def test_shapes_any_size(n_mels, frames):
    net = _tiny()
    assert net.pad_multiple == 4
    x = torch.randn(2, 1, n_mels, frames)
    y = net(x, torch.tensor([0, 3999]), torch.randn(2, 8))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_output_depends_on_timestep_and_condition():
    net = _tiny().eval()
    x = torch.randn(1, 1, 16, 12)
    c = torch.randn(1, 8)
    base = net(x, torch.tensor([10]), c)
    assert torch.equal(base, net(x, torch.tensor([10]), c.clone()))
    assert not torch.allclose(base, net(x, torch.tensor([900]), c), atol=1e-5)
    assert not torch.allclose(base, net(x, torch.tensor([10]), torch.randn(1, 8)), atol=1e-5)


def test_batch_items_are_independent():
    net = _tiny().eval()
    x, t, c = torch.randn(3, 1, 16, 10), torch.tensor([1, 50, 300]), torch.randn(3, 8)
    full = net(x, t, c)
    single = net(x[1:2], t[1:2], c[1:2])
    torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter():
    net = _tiny()
    x = torch.randn(2, 1, 16, 9)
    net(x, torch.tensor([5, 700]), torch.randn(2, 8)).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert missing == []
    assert float(net.cond_proj.weight.grad.abs().sum()) > 0


def test_paper_size_parameter_count():
    with torch.device("meta"):  # no memory is allocated
        net = MelUNet()
    count = sum(p.numel() for p in net.parameters())
    assert count == 30_430_785
    assert 25e6 <= count <= 35e6
    assert net.pad_multiple == 8 and net.cond_proj.in_features == 512


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 7]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    freqs = torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)])
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)]))
    assert math.isclose(float(emb[1, 3]), math.sin(7.0), rel_tol=1e-6)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(base_channels=7), "even"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(attention_levels=(5,)), "attention_levels"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_heads=3), "num_heads"),
    ],
)
def test_invalid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        MelUNet(**{**TINY, **kw})
