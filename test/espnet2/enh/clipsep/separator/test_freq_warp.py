import math

import pytest
import torch
import torch.nn.functional as F

from espnet2.enh.clipsep.separator.freq_warp import interp_matrix, log_freq_unwarp, log_freq_warp


def _reference_grid_sample(x: torch.Tensor, num_out: int, inverse: bool) -> torch.Tensor:
    """The reference formulation: bilinear grid_sample on a (B, 1, F, T) image.

    Args:
        x: (B, T, F_in) real tensor.
        num_out: Output frequency bins.
        inverse: False for the warp grid, True for the unwarp grid.

    Returns:
        (B, T, num_out).
    """
    batch, num_frames, _ = x.shape
    image = x.transpose(1, 2).unsqueeze(1).double()  # (B, 1, F_in, T)
    y = torch.linspace(-1.0, 1.0, num_out, dtype=torch.float64)
    if inverse:
        y_src = torch.log(10.0 * y + 11.0) / math.log(21.0) * 2.0 - 1.0
    else:
        y_src = (torch.pow(21.0, (y + 1.0) / 2.0) - 11.0) / 10.0
    x_src = torch.linspace(-1.0, 1.0, num_frames, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(y_src, x_src, indexing="ij")  # (F_out, T)
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0).expand(batch, -1, -1, -1)
    out = F.grid_sample(image, grid, mode="bilinear", align_corners=True)  # (B, 1, F_out, T)
    return out.squeeze(1).transpose(1, 2).float()


@pytest.mark.parametrize("num_frames", [1, 7, 20])
def test_warp_matches_grid_sample_513_to_256(num_frames):
    torch.manual_seed(0)
    x = torch.rand(3, num_frames, 513) * 4.0
    expected = _reference_grid_sample(x, 256, inverse=False)
    got = log_freq_warp(x, 256)
    assert got.shape == (3, num_frames, 256)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_frames", [1, 7, 20])
def test_unwarp_matches_grid_sample_256_to_513(num_frames):
    torch.manual_seed(1)
    x = torch.rand(2, num_frames, 256)
    expected = _reference_grid_sample(x, 513, inverse=True)
    got = log_freq_unwarp(x, 513)
    assert got.shape == (2, num_frames, 513)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_in, num_out", [(129, 32), (257, 64), (64, 129)])
def test_warp_and_unwarp_match_grid_sample_other_sizes(num_in, num_out):
    torch.manual_seed(2)
    x = torch.randn(2, 5, num_in)
    torch.testing.assert_close(
        log_freq_warp(x, num_out), _reference_grid_sample(x, num_out, inverse=False), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        log_freq_unwarp(x, num_out), _reference_grid_sample(x, num_out, inverse=True), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("lead", [(), (4,), (2, 3), (2, 3, 5)])
def test_arbitrary_leading_dims(lead):
    torch.manual_seed(3)
    x = torch.rand(*lead, 513)
    warped = log_freq_warp(x, 256)
    assert warped.shape == (*lead, 256)
    back = log_freq_unwarp(warped, 513)
    assert back.shape == (*lead, 513)
    # Same values as the flattened (B, T, F) computation.
    flat = x.reshape(1, -1, 513)
    torch.testing.assert_close(warped.reshape(1, -1, 256), log_freq_warp(flat, 256))
    torch.testing.assert_close(back.reshape(1, -1, 513), log_freq_unwarp(log_freq_warp(flat, 256), 513))


@pytest.mark.parametrize("num_in, num_out", [(513, 256), (256, 513), (129, 32)])
def test_end_points_map_exactly(num_in, num_out):
    torch.manual_seed(4)
    x = torch.rand(2, 3, num_in) + 0.5
    for out in (log_freq_warp(x, num_out), log_freq_unwarp(x, num_out)):
        # y = -1 -> y' = -1 (first bin), y = 1 -> y' = 1 (last bin), in both directions.
        assert torch.equal(out[..., 0], x[..., 0])
        assert torch.equal(out[..., -1], x[..., -1])


def test_interp_matrix_rows_are_convex_combinations():
    for inverse in (False, True):
        mat = interp_matrix(513, 256, inverse=inverse)
        assert mat.shape == (256, 513)
        assert (mat >= 0).all()
        torch.testing.assert_close(mat.sum(dim=1), torch.ones(256))
        # At most two neighbouring source bins per output bin.
        assert ((mat > 0).sum(dim=1) <= 2).all()


def test_warp_is_low_frequency_dense():
    # The log grid spends more output bins on low frequencies: the source position of the middle output
    # bin is (21 ** 0.5 - 11) / 10 = -0.642 -> bin ~ 91.6 of 513, far below the linear midpoint 256.
    ramp = torch.arange(513, dtype=torch.float32)
    warped = log_freq_warp(ramp, 256)
    y_mid = torch.linspace(-1, 1, 256, dtype=torch.float64)[128]
    src = (21.0 ** ((y_mid + 1) / 2) - 11) / 10
    expected = float((src + 1) / 2 * 512)
    assert abs(float(warped[128]) - expected) < 1e-3
    assert float(warped[128]) < 128
    # A ramp is reproduced exactly by linear interpolation, so warped values are the source positions
    # and strictly increasing.
    assert (warped[1:] > warped[:-1]).all()


def test_too_few_bins_raise():
    with pytest.raises(ValueError):
        log_freq_warp(torch.rand(2, 1), 256)
    with pytest.raises(ValueError):
        log_freq_unwarp(torch.rand(2, 256), 1)


def test_dtype_and_gradient_flow():
    x = torch.rand(2, 4, 129, dtype=torch.float64, requires_grad=True)
    y = log_freq_warp(x, 32)
    assert y.dtype == torch.float64
    y.sum().backward()
    # d(sum warp(x))/dx = column sums of the interpolation matrix.
    torch.testing.assert_close(x.grad[0, 0], interp_matrix(129, 32, dtype=torch.float64).sum(dim=0))
