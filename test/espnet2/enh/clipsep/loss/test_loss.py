import math

import pytest
import torch
import torch.nn.functional as F
from typeguard import TypeCheckError

from espnet2.enh.clipsep.loss.criterions.weighted_bce import WeightedBCEMaskLoss
from espnet2.enh.clipsep.loss.wrappers.noise_invariant import NoiseInvariantSolver
from espnet2.enh.loss.wrappers.fixed_order import FixedOrderSolver
from espnet2.enh.loss.wrappers.pit_solver import PITSolver


def _complex(*shape, scale=1.0):
    return torch.complex(torch.randn(*shape), torch.randn(*shape)) * scale


def _stack(label, weight):
    return torch.stack([torch.as_tensor(label), torch.as_tensor(weight)], dim=-1).float()


def test_wbce_matches_hand_computation():
    p = torch.tensor([[[0.9, 0.2, 0.6], [0.5, 0.99, 0.1]]])
    y = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]])
    w = torch.tensor([[[1.0, 2.0, 0.5], [1.5, 0.001, 3.0]]])
    terms = [
        1.0 * -math.log(0.9),
        2.0 * -math.log(1.0 - 0.2),
        0.5 * -math.log(0.6),
        1.5 * -math.log(1.0 - 0.5),
        0.001 * -math.log(0.99),
        3.0 * -math.log(0.1),
    ]
    expected = sum(terms) / 6  # 1.459091088...
    loss = WeightedBCEMaskLoss()(_stack(y, w), p)
    assert loss.shape == (1,)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(1.459091088, rel=1e-6)


def test_wbce_logs_clamped_at_minus_100():
    # Confidently wrong predictions cost 100 * weight, as in F.binary_cross_entropy.
    p = torch.tensor([[[0.0, 1.0]]])
    y = torch.tensor([[[1.0, 0.0]]])
    w = torch.tensor([[[1.0, 2.0]]])
    loss = WeightedBCEMaskLoss()(_stack(y, w), p)
    assert loss.item() == pytest.approx((100.0 + 200.0) / 2)


def test_wbce_perfect_prediction_is_zero_with_finite_grad():
    y = (torch.rand(2, 4, 8) > 0.5).float()
    w = torch.rand(2, 4, 8) * 5
    p = y.clone().requires_grad_(True)
    loss = WeightedBCEMaskLoss()(_stack(y, w), p)
    assert torch.equal(loss, torch.zeros(2))
    loss.sum().backward()
    assert torch.isfinite(p.grad).all()
    assert torch.equal(p.grad, torch.zeros_like(p))


@pytest.mark.parametrize("saturate", [False, True])
def test_wbce_value_and_grad_match_torch(saturate):
    torch.manual_seed(0)
    p = torch.rand(3, 5, 7)
    if saturate:
        p[:, :, :2] = 0.0
        p[:, :, 2:4] = 1.0
    y = (torch.rand(3, 5, 7) > 0.5).float()
    w = torch.rand(3, 5, 7) * 10
    p1 = p.clone().requires_grad_(True)
    p2 = p.clone().requires_grad_(True)
    loss = WeightedBCEMaskLoss()(_stack(y, w), p1)
    ref = F.binary_cross_entropy(p2, y, w, reduction="none").mean(dim=(1, 2))
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    ref.sum().backward()
    assert torch.isfinite(p1.grad).all()
    torch.testing.assert_close(p1.grad, p2.grad)


def test_wbce_grad_matches_analytic():
    p = (torch.rand(2, 3, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    y = (torch.rand(2, 3, 4) > 0.5).double()
    w = torch.rand(2, 3, 4, dtype=torch.float64)
    ref = torch.stack([y, w], dim=-1)
    # forward casts to float32, so compare against a float64 re-implementation numerically.
    loss = WeightedBCEMaskLoss()(ref, p)
    expected = -(y * p.log() + (1 - y) * (1 - p).log()) * w
    grad = torch.autograd.grad(loss.sum(), p)[0]
    grad_ref = torch.autograd.grad(expected.mean(dim=(1, 2)).sum(), p)[0]
    torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-4, atol=1e-6)


def test_wbce_rejects_unwarped_prediction():
    crit = WeightedBCEMaskLoss()
    ref = crit.create_mask_label(_complex(1, 4, 513), [_complex(1, 4, 513)])
    with pytest.raises(ValueError, match="mask_spk"):
        crit(ref[0], torch.rand(1, 4, 513))


def test_create_mask_label_shapes_and_dtype():
    crit = WeightedBCEMaskLoss()
    mix = _complex(2, 6, 513)
    refs = crit.create_mask_label(mix, [_complex(2, 6, 513) for _ in range(3)])
    assert len(refs) == 3
    for r in refs:
        assert r.shape == (2, 6, 256, 2)
        assert r.dtype == torch.float32
        assert not r.requires_grad
        assert set(r[..., 0].unique().tolist()) <= {0.0, 1.0}
    # The weight depends on the mixture only.
    assert torch.equal(refs[0][..., 1], refs[2][..., 1])


def test_create_mask_label_source_equal_to_mixture():
    crit = WeightedBCEMaskLoss()
    mix = _complex(2, 5, 513)
    mix[:, 0] = 0.0  # a silent frame
    (ref,) = crit.create_mask_label(mix, [mix.clone()])
    assert torch.equal(ref[:, 1:, :, 0], torch.ones(2, 4, 256))
    assert torch.equal(ref[:, 0, :, 0], torch.zeros(2, 256))


def test_create_mask_label_threshold_on_flat_spectra():
    # On spectra that are flat in frequency, the warp (an interpolation) keeps the values, so the
    # label is just |S| > 0.5 |X| and the weight log1p(|X|).
    crit = WeightedBCEMaskLoss()
    mix = torch.full((1, 2, 513), 3.0, dtype=torch.complex64)
    above, below = crit.create_mask_label(mix, [0.6 * mix, 0.4 * mix])
    assert torch.equal(above[..., 0], torch.ones(1, 2, 256))
    assert torch.equal(below[..., 0], torch.zeros(1, 2, 256))
    torch.testing.assert_close(above[..., 1], torch.full((1, 2, 256), math.log1p(3.0)))


def test_create_mask_label_weight_clamped():
    crit = WeightedBCEMaskLoss()
    mix = _complex(2, 4, 513)
    mix[0] *= 1e6  # log1p(|X|) ~ 14 -> 10
    mix[1] *= 1e-8  # log1p(|X|) ~ 1e-8 -> 1e-3
    (ref,) = crit.create_mask_label(mix, [mix])
    weight = ref[..., 1]
    assert weight.min() >= 1e-3 and weight.max() <= 10.0
    assert torch.all(weight[0] == 10.0)
    assert torch.allclose(weight[1], torch.full_like(weight[1], 1e-3))


def test_create_mask_label_under_autocast_is_fp32_and_unchanged():
    crit = WeightedBCEMaskLoss()
    mix = _complex(2, 4, 513, scale=5.0)
    srcs = [_complex(2, 4, 513), _complex(2, 4, 513)]
    plain = crit.create_mask_label(mix, srcs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = crit.create_mask_label(mix, srcs)
    for a, b in zip(plain, auto):
        assert b.dtype == torch.float32
        assert torch.equal(a, b)


def test_wbce_under_autocast_returns_fp32():
    crit = WeightedBCEMaskLoss()
    mix = _complex(2, 4, 513)
    refs = crit.create_mask_label(mix, [_complex(2, 4, 513)])
    logits = torch.randn(2, 4, 256, requires_grad=True)
    layer = torch.nn.Linear(256, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = torch.sigmoid(layer(logits))
        assert pred.dtype == torch.bfloat16
        loss = crit(refs[0], pred)
    assert loss.dtype == torch.float32
    loss.mean().backward()
    assert torch.isfinite(logits.grad).all()


def test_wbce_typechecked_and_name():
    assert WeightedBCEMaskLoss().name == "wbce"
    assert WeightedBCEMaskLoss(name="wbce_query").name == "wbce_query"
    crit = WeightedBCEMaskLoss()
    assert crit.compute_on_mask is True
    with pytest.raises(TypeCheckError):
        WeightedBCEMaskLoss(warp_bins="256")


def test_espnet_fixed_order_and_pit_solvers():
    torch.manual_seed(0)
    crit = WeightedBCEMaskLoss()
    mix = _complex(3, 6, 513)
    refs = crit.create_mask_label(mix, [_complex(3, 6, 513), _complex(3, 6, 513)])
    inf = [torch.rand(3, 6, 256), torch.rand(3, 6, 256)]

    loss, stats, others = FixedOrderSolver(crit)(refs, inf, {})
    expected = (crit(refs[0], inf[0]).mean() + crit(refs[1], inf[1]).mean()) / 2
    torch.testing.assert_close(loss, expected)
    assert stats["wbce"] == loss.detach()

    pit = PITSolver(crit, independent_perm=True)
    loss_a, _, others_a = pit(refs, inf, {})
    loss_b, _, others_b = pit(refs, inf[::-1], {})
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(others_b["perm"], 1 - others_a["perm"])

    # independent_perm=False slices labels per sample (ref[s][b].unsqueeze(0)), which works only
    # because the weight travels with the label.
    pit_inherit = PITSolver(crit, independent_perm=False)
    loss_c, _, _ = pit_inherit(refs, inf, {"perm": others_a["perm"]})
    torch.testing.assert_close(loss_c, loss_a)


# ---------------------------------------------------------------------------------------------
# NoiseInvariantSolver


def _nit_inputs(batch=2, frames=4, bins=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    refs = [
        _stack(
            (torch.rand(batch, frames, bins, generator=g) > 0.5).float(),
            torch.rand(batch, frames, bins, generator=g) * 3,
        )
        for _ in range(2)
    ]
    inf = [torch.rand(batch, frames, bins, generator=g) * 0.6 for _ in range(2)]
    noise = [torch.rand(batch, frames, bins, generator=g) * 0.6 for _ in range(2)]
    return refs, inf, noise


def test_nit_swapping_noise_heads_is_exact():
    refs, inf, (z1, z2) = _nit_inputs(batch=4)
    solver = NoiseInvariantSolver(WeightedBCEMaskLoss())
    loss_a, stats_a, o_a = solver(refs, inf, {"mask_nit1": z1, "mask_nit2": z2})
    loss_b, stats_b, o_b = solver(refs, inf, {"mask_nit1": z2, "mask_nit2": z1})
    assert torch.equal(loss_a, loss_b)
    for k in ("wbce", "nit_reg", "noise_act"):
        assert torch.equal(stats_a[k], stats_b[k])
    assert torch.equal(o_b["nit_perm"], 1 - o_a["nit_perm"])
    assert torch.equal(o_a["perm"], o_b["perm"])  # outputs keep the query order


def test_nit_equals_hand_written_min():
    refs, inf, (z1, z2) = _nit_inputs(batch=3, seed=1)
    crit = WeightedBCEMaskLoss()
    solver = NoiseInvariantSolver(crit, reg_gamma=0.25, reg_lambda=0.1)
    loss, stats, others = solver(refs, inf, {"mask_nit1": z1, "mask_nit2": z2})

    def pred(q, z):
        return torch.minimum(q + z, torch.ones_like(q))

    loss_0 = (crit(refs[0], pred(inf[0], z1)) + crit(refs[1], pred(inf[1], z2))) / 2
    loss_1 = (crit(refs[0], pred(inf[0], z2)) + crit(refs[1], pred(inf[1], z1))) / 2
    crit_term = torch.minimum(loss_0, loss_1).mean()
    reg = 0.1 * max((z1 + z2).mean().item() - 0.25, 0.0)
    torch.testing.assert_close(stats["wbce"], crit_term)
    assert stats["nit_reg"].item() == pytest.approx(reg, rel=1e-5)
    torch.testing.assert_close(loss, crit_term + reg)
    assert others["nit_perm"].shape == (3, 2) and others["nit_perm"].dtype == torch.long
    assert others["perm"].tolist() == [[0, 1]] * 3
    assert all(s.requires_grad is False for s in stats.values())


def test_nit_per_sample_min_and_perm():
    # Source 1 lives in the low half of the bins and source 2 in the high half. In sample 0 the
    # first noise head covers source 1 (identity assignment wins); in sample 1 it covers source 2
    # (the swap wins).
    lo = torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(2, 3, 4)
    hi = 1.0 - lo
    refs = [_stack(lo, torch.ones_like(lo)), _stack(hi, torch.ones_like(hi))]
    inf = [torch.full((2, 3, 4), 0.05), torch.full((2, 3, 4), 0.05)]
    z1 = torch.stack([0.9 * lo[0], 0.9 * hi[0]])
    z2 = torch.stack([0.9 * hi[0], 0.9 * lo[0]])
    crit = WeightedBCEMaskLoss()
    solver = NoiseInvariantSolver(crit)
    loss, stats, others = solver(refs, inf, {"mask_nit1": z1, "mask_nit2": z2})
    assert others["nit_perm"].tolist() == [[0, 1], [1, 0]]

    # Both samples reach the same (best) per-sample loss, -(log 0.95) averaged over the bins.
    best = -math.log(0.95)
    assert stats["wbce"].item() == pytest.approx(best, rel=1e-5)
    # noise_act = mean(z1 + z2) = 0.9, reg = 0.1 * (0.9 - 0.25)
    assert stats["noise_act"].item() == pytest.approx(0.9, rel=1e-6)
    assert stats["nit_reg"].item() == pytest.approx(0.065, rel=1e-5)
    assert loss.item() == pytest.approx(best + 0.065, rel=1e-5)


def test_nit_regulariser_hinge():
    refs, inf, _ = _nit_inputs()
    solver = NoiseInvariantSolver(WeightedBCEMaskLoss(), reg_gamma=0.25, reg_lambda=0.1)

    def reg_for(level):
        z = torch.full_like(inf[0], level)
        _, stats, _ = solver(refs, inf, {"mask_nit1": z, "mask_nit2": z})
        return stats["noise_act"].item(), stats["nit_reg"]

    act, reg = reg_for(0.1)  # sum = 0.2 < 0.25
    assert act == pytest.approx(0.2)
    assert torch.equal(reg, torch.zeros(()))
    act1, reg1 = reg_for(0.2)  # 0.4 -> 0.1 * 0.15
    act2, reg2 = reg_for(0.35)  # 0.7 -> 0.1 * 0.45
    assert reg1.item() == pytest.approx(0.015, rel=1e-5)
    assert reg2.item() == pytest.approx(0.045, rel=1e-5)
    assert (reg2 - reg1).item() / (act2 - act1) == pytest.approx(0.1, rel=1e-5)


def test_nit_gradients_reach_queries_and_noise_heads():
    refs, inf, noise = _nit_inputs()
    inf = [x.clone().requires_grad_(True) for x in inf]
    noise = [z.clone().requires_grad_(True) for z in noise]
    # Saturate some bins (query + noise > 1): the clamp must give zero, not NaN, gradients.
    with torch.no_grad():
        inf[0][:, 0] = 0.8
        noise[0][:, 0] = 0.9
        noise[1][:, 0] = 0.9
    # reg_lambda = 0: the noise heads must get their gradient through the criterion term.
    solver = NoiseInvariantSolver(WeightedBCEMaskLoss(), reg_lambda=0.0)
    loss, _, _ = solver(refs, inf, {"mask_nit1": noise[0], "mask_nit2": noise[1]})
    loss.backward()
    for t in inf + noise:
        assert t.grad is not None
        assert torch.isfinite(t.grad).all()
        assert t.grad.abs().sum() > 0


def test_nit_under_autocast_returns_fp32():
    refs, inf, noise = _nit_inputs()
    params = [torch.randn(2, 4, 8, requires_grad=True) for _ in range(4)]
    solver = NoiseInvariantSolver(WeightedBCEMaskLoss())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        masks = [torch.sigmoid(p).to(torch.bfloat16) for p in params]
        loss, stats, _ = solver(
            refs, masks[:2], {"mask_nit1": masks[2], "mask_nit2": masks[3]}
        )
    assert loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in stats.values())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in params)


def test_nit_with_labels_from_create_mask_label():
    crit = WeightedBCEMaskLoss(name="wbce_nit")
    mix = _complex(2, 4, 513)
    refs = crit.create_mask_label(mix, [_complex(2, 4, 513), _complex(2, 4, 513)])
    inf = [torch.rand(2, 4, 256) * 0.5 for _ in range(2)]
    others = {"mask_spk1": inf[0], "mask_spk2": inf[1]}
    others.update({f"nit_head{j}": torch.rand(2, 4, 256) * 0.5 for j in (1, 2)})
    solver = NoiseInvariantSolver(crit, weight=1, noise_key_prefix="nit_head")
    loss, stats, o = solver(refs, inf, others)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"wbce_nit", "nit_reg", "noise_act"} <= set(stats)
    assert o["perm"].shape == (2, 2)


def test_nit_wrong_number_of_noise_masks():
    refs, inf, (z1, _) = _nit_inputs()
    solver = NoiseInvariantSolver(WeightedBCEMaskLoss())
    with pytest.raises(ValueError, match="one noise mask per query"):
        solver(refs, inf, {"mask_nit1": z1})
    with pytest.raises(ValueError, match="one noise mask per query"):
        solver(refs, inf, {})
    with pytest.raises(ValueError, match="one noise mask per query"):
        solver(refs, inf, {f"mask_nit{j}": z1 for j in (1, 2, 3)})
    with pytest.raises(ValueError, match="shape"):
        solver(refs, inf, {"mask_nit1": z1, "mask_nit2": z1[:, :2]})
