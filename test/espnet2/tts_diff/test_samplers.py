"""Schedules, samplers and guidance: one contract every sampler passes, plus exact analytic references.

The analytic models give the exact ``eps`` of a known data distribution: a point mass at ``x0*``
(``eps = (x - sqrt(abar) x0*) / sqrt(1 - abar)``) and per-element Gaussian data ``N(mu, s^2)``
(``eps = sqrt(1 - abar) (x - sqrt(abar) mu) / (abar s^2 + 1 - abar)``), whose probability-flow ODE maps
``x_T`` at ``t_start`` to ``mu + s z`` with ``z = (x_T - sqrt(a) mu) / sqrt(a s^2 + 1 - a)``, ``a = abar_{t_start}``.
"""

import math

import pytest
import torch

from espnet2.tts_diff.diffusion import cosine_alphas_cumprod, q_sample, sampling_timesteps, spaced_timesteps
from espnet2.tts_diff.samplers import ABAR_MIN, SAMPLERS, cfg_model_fn, sample_ddim, sample_ddpm, sample_dpmpp_2m

MU, S = 1.5, 0.5


class Analytic:
    """Exact eps of point-mass (``s = 0``) or Gaussian data; records what the samplers pass in."""

    def __init__(self, alphas_cumprod: torch.Tensor, mu, s: float = 0.0):
        self.abar, self.mu, self.s = alphas_cumprod, mu, s
        self.calls = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((t.dtype, tuple(t.shape), int(t[0]), bool((t == t[0]).all())))
        a = self.abar.to(x.dtype)[t].view(-1, *[1] * (x.dim() - 1))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)

    def flow_map(self, x_T: torch.Tensor, t_start: int) -> torch.Tensor:
        a = float(self.abar[t_start])
        return self.mu + self.s * (x_T - math.sqrt(a) * self.mu) / math.sqrt(a * self.s**2 + 1 - a)


def _noise(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------------- schedule
def test_cosine_schedule_values():
    T = 1000
    abar = cosine_alphas_cumprod(T)
    assert abar.shape == (T,) and abar.dtype == torch.float64
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(abar[0]) == pytest.approx(f(1 / T) / f(0), rel=1e-12)
    assert float(abar[0]) == pytest.approx(0.999958715775178, rel=1e-12)
    assert float(abar[T - 2]) == pytest.approx(f((T - 1) / T) / f(0), rel=1e-9)
    # f(1) = 0: the last beta is clipped at 0.999
    assert float(abar[T - 1]) == pytest.approx(0.001 * float(abar[T - 2]), rel=1e-9)
    assert float(abar[T - 1]) == pytest.approx(2.4287669070348567e-09, rel=1e-9)
    assert bool((abar[1:] < abar[:-1]).all()) and 0 < float(abar[-1]) and float(abar[0]) < 1
    betas = 1 - abar[1:] / abar[:-1]
    assert float(betas[-1]) == pytest.approx(0.999, rel=1e-9)
    assert float(betas[:-1].max()) < 0.9  # only the last beta is clipped
    assert bool((betas[1:] >= betas[:-1]).all())
    with pytest.raises(ValueError):
        cosine_alphas_cumprod(0)


def test_q_sample_moments_and_broadcasting():
    abar = cosine_alphas_cumprod(100)
    t = torch.tensor([0, 50, 99])
    x0 = torch.tensor([2.0, -1.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 4, 5)  # (B, 1, M, T)
    noise = _noise((3, 1, 4, 5))
    x_t = q_sample(x0, t, abar, noise)
    a = abar[t].float().view(3, 1, 1, 1)
    assert x_t.dtype == torch.float32 and x_t.shape == x0.shape
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    # moments over many draws, (B, D) inputs
    x0 = torch.full((3, 20000), 2.0)
    x_t = q_sample(x0, t, abar.float(), _noise((3, 20000), 1))
    a = abar[t].float()
    torch.testing.assert_close(x_t.mean(1), 2.0 * a.sqrt(), atol=0.02, rtol=0)
    torch.testing.assert_close(x_t.var(1), 1 - a, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="t must have shape"):
        q_sample(x0, t[:2], abar, x0)


def test_spaced_timesteps():
    assert spaced_timesteps(10, 4).tolist() == [9, 6, 3, 0]
    assert spaced_timesteps(10, 10).tolist() == list(range(9, -1, -1))
    assert spaced_timesteps(4000, 1).tolist() == [3999]
    for T, n in [(4000, 25), (1000, 999), (7, 3)]:
        ts = spaced_timesteps(T, n)
        assert ts.dtype == torch.long and len(ts) == n and ts[0] == T - 1 and ts[-1] == 0
        assert bool((ts[1:] < ts[:-1]).all())
    for bad in (0, 11):
        with pytest.raises(ValueError, match="steps"):
            spaced_timesteps(10, bad)


def test_sampling_timesteps_start_where_abar_reaches_the_floor():
    abar = cosine_alphas_cumprod(4000)
    assert sampling_timesteps(abar, 4000, 0.0).tolist() == list(range(3999, -1, -1))
    ts = sampling_timesteps(abar, 25, 1e-3)
    t_max = int(ts[0])
    assert float(abar[t_max]) >= 1e-3 > float(abar[t_max + 1]) and 3900 < t_max < 3950
    assert ts.tolist() == spaced_timesteps(t_max + 1, 25).tolist()
    assert sampling_timesteps(abar, 1, 2.0).tolist() == [0]  # a floor above abar_0 leaves t = 0
    with pytest.raises(ValueError, match="steps"):
        sampling_timesteps(abar, t_max + 2, 1e-3)


# ------------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name, dtype):
    """Every sampler: shape/dtype, determinism, callback, t passed as long (B,), exact analytic limits."""
    sample, T, steps = SAMPLERS[name], 200, 25
    abar = cosine_alphas_cumprod(T)
    x_T = _noise((3, 1, 4, 6), 0, dtype)

    # Point mass: every sampler returns x0* from exact eps.
    target = _noise((1, 1, 4, 6), 1, dtype)
    point = Analytic(abar, target)
    seen = []
    out = sample(point, x_T, abar, steps, generator=torch.Generator().manual_seed(0),
                 callback=lambda i, t, x, x0: seen.append((i, t, x.shape, x0.dtype)))  # fmt: skip
    assert out.shape == x_T.shape and out.dtype == dtype
    torch.testing.assert_close(out, target.expand_as(out), atol=2e-4, rtol=0)
    grid = sampling_timesteps(abar, steps, ABAR_MIN).tolist()
    assert [(i, t) for i, t, _, _ in seen] == list(enumerate(grid))
    assert all(s == x_T.shape and d == dtype for _, _, s, d in seen)
    assert point.calls == [(torch.long, (3,), t, True) for t in grid]  # one call per step

    # Gaussian data: determinism under a generator, and the sample moments at the full chain, from x_T drawn
    # from the exact marginal at the grid's start (N(0, I) there is a deliberate, documented approximation).
    gauss = Analytic(abar, MU, S)
    a_s = float(abar[grid[0]])
    x_T = (math.sqrt(a_s) * MU + math.sqrt(a_s * S**2 + 1 - a_s) * _noise((4, 5000), 2, torch.float64)).to(dtype)
    x_T_copy = x_T.clone()
    run = lambda seed, n=steps: sample(gauss, x_T, abar, n, generator=torch.Generator().manual_seed(seed))  # noqa
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert torch.equal(a, c) == (name != "ddpm")  # only DDPM draws noise
    assert torch.isfinite(a).all()
    full = run(0, grid[0] + 1)  # every timestep from the grid's start
    assert abs(float(full.mean()) - MU) < 0.015
    assert abs(float(full.std()) / S - 1) < 0.03
    assert torch.equal(x_T, x_T_copy)  # the input is not modified in place


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_per_row_generators_make_each_row_its_own_sample(name):
    """One generator per row: row i of a batch is exactly the sample of row i alone with generator i."""
    sample, T = SAMPLERS[name], 200
    abar = cosine_alphas_cumprod(T)
    gauss = Analytic(abar, MU, S)
    x_T = _noise((3, 1, 4, 6), 0)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = sample(gauss, x_T, abar, 10, generator=gens([4, 5, 6]))
    for i, seed in enumerate([4, 5, 6]):
        alone = sample(gauss, x_T[i : i + 1], abar, 10, generator=gens([seed]))
        assert torch.equal(batch[i : i + 1], alone)
        # a list of one generator draws what that generator alone would
        assert torch.equal(alone, sample(gauss, x_T[i : i + 1], abar, 10, generator=torch.Generator().manual_seed(seed)))
    reordered = sample(gauss, x_T[[2, 0, 1]], abar, 10, generator=gens([6, 4, 5]))
    assert torch.equal(reordered, batch[[2, 0, 1]])
    if name == "ddpm":
        assert not torch.equal(batch, sample(gauss, x_T, abar, 10, generator=gens([4, 5, 7])))
        with pytest.raises(ValueError, match="2 generators for 3 rows"):
            sample(gauss, x_T, abar, 10, generator=gens([4, 5]))


def test_randn_rows_matches_one_generator_per_row():
    from espnet2.tts_diff.samplers import randn_rows

    rows = randn_rows((2, 3, 5), [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert rows.shape == (2, 3, 5) and rows.dtype == torch.float32
    assert torch.equal(rows[1:], torch.randn((1, 3, 5), generator=torch.Generator().manual_seed(2)))
    assert torch.equal(randn_rows((2, 3), torch.Generator().manual_seed(1)), _noise((2, 3), 1))


# ------------------------------------------------------------------------------------------------- references
def test_ode_samplers_follow_the_exact_flow():
    """DDIM (first order) and DPM-Solver++(2M) (second order) against the exact probability-flow map."""
    abar = cosine_alphas_cumprod(1000)
    gauss = Analytic(abar, MU, S)
    x_T = _noise((4, 2000), 3, torch.float64)
    exact = gauss.flow_map(x_T, int(sampling_timesteps(abar, 1, ABAR_MIN)[0]))
    err = {
        (n, k): float((SAMPLERS[n](gauss, x_T, abar, k) - exact).abs().max()) for n in ("ddim", "dpmpp") for k in (25, 50)
    }
    assert 0.05 < err["ddim", 25] < 0.2
    assert 1.7 < err["ddim", 25] / err["ddim", 50] < 2.3  # first order: error halves with twice the steps
    assert err["dpmpp", 25] < 0.005 and err["dpmpp", 50] < 0.005
    assert err["dpmpp", 25] < 0.05 * err["ddim", 25]


def test_ddpm_full_chain_is_ho_algorithm_2():
    """steps == T: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sqrt(beta_tilde_t) z."""
    T = 50
    abar = cosine_alphas_cumprod(T)
    gauss = Analytic(abar, MU, S)
    x_T = _noise((2, 300), 4, torch.float64)
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    gen = torch.Generator().manual_seed(5)
    x = x_T
    for t in range(T - 1, -1, -1):
        eps = gauss(x, torch.full((2,), t))
        x = (x - betas[t] / (1 - abar[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
        if t > 0:
            var = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
            x = x + var.sqrt() * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    out = sample_ddpm(gauss, x_T, abar, T, generator=torch.Generator().manual_seed(5), abar_min=0.0)
    torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-9)


def test_ddpm_respacing_keeps_the_marginals():
    """With exact x0 (point mass) the respaced ancestral step is the exact reverse process: after every one of
    10 steps, x has the forward marginal N(sqrt(abar) x0*, 1 - abar) of the next grid timestep."""
    abar = cosine_alphas_cumprod(1000)
    point = Analytic(abar, MU)
    moments = []
    sample_ddpm(point, _noise((4, 20000), 6), abar, 10, generator=torch.Generator().manual_seed(7), abar_min=0.0,
                callback=lambda i, t, x, x0: moments.append((float(x.mean()), float(x.std()))))  # fmt: skip
    grid = spaced_timesteps(1000, 10).tolist()
    for (mean, std), t_next in zip(moments[:-1], grid[1:]):
        a = float(abar[t_next])
        assert mean == pytest.approx(math.sqrt(a) * MU, abs=0.01)
        assert std == pytest.approx(math.sqrt(1 - a), rel=0.01)
    assert moments[-1] == pytest.approx((MU, 0.0), abs=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_grid_floor_bounds_the_amplification_of_eps_errors(name):
    """eps off by 1e-2: from the floor abar >= 1e-3 the sample moves by ~1e-2; from T - 1 (abar ~ 2e-10) by > 0.5."""
    abar = cosine_alphas_cumprod(4000)
    gauss = Analytic(abar, MU, S)
    off = lambda x, t: gauss(x, t) + 1e-2 * torch.sign(x)  # noqa: E731
    x_T = _noise((2, 64), 0)

    def deviation(**kw):
        run = lambda fn: SAMPLERS[name](fn, x_T, abar, 25, generator=torch.Generator().manual_seed(0), **kw)  # noqa
        return float((run(off) - run(gauss)).abs().max())

    assert deviation() < 0.05
    assert deviation(abar_min=0.0) > 0.5


def test_clip_x0_option():
    abar = cosine_alphas_cumprod(100)
    point = Analytic(abar, torch.tensor(3.0))
    x_T = _noise((2, 8), 0)
    for sample in (sample_ddpm, sample_ddim, sample_dpmpp_2m):
        torch.testing.assert_close(sample(point, x_T, abar, 10), torch.full((2, 8), 3.0), atol=1e-4, rtol=0)
        clipped = sample(point, x_T, abar, 10, clip_x0=1.0, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(clipped, torch.full((2, 8), 1.0), atol=1e-4, rtol=0)


def test_bad_steps_raise():
    abar = cosine_alphas_cumprod(10)
    for sample in SAMPLERS.values():
        with pytest.raises(ValueError, match="steps"):
            sample(Analytic(abar, 0.0), torch.zeros(1, 2), abar, 11)


# ------------------------------------------------------------------------------------------------- guidance
class LinearModel:
    """``model(x, t, c) = 2 x + t / 10 + c @ W``: guidance is exactly linear in its outputs."""

    def __init__(self, dim: int):
        self.w = _noise((dim, 5), 9)
        self.batches = []

    def __call__(self, x, t, c):
        self.batches.append(len(x))
        return 2 * x + t[:, None].float() / 10 + c @ self.w


@pytest.mark.parametrize("w", [0.0, 1.0, 1.5, 3.0, 5.0])
def test_cfg_is_one_plus_w_cond_minus_w_null(w):
    model, dim = LinearModel(4), 4
    x, t = _noise((3, 5), 1), torch.tensor([0, 7, 30])
    cond, null = _noise((3, dim), 2), _noise((dim,), 3)
    eps_c, eps_u = model(x, t, cond), model(x, t, null.expand(3, dim))
    model.batches.clear()
    out = cfg_model_fn(model, cond, null, w)(x, t)
    if w == 0:
        assert torch.equal(out, eps_c) and model.batches == [3]  # no guidance: one plain call
    else:
        torch.testing.assert_close(out, (1 + w) * eps_c - w * eps_u, rtol=1e-6, atol=1e-5)
        assert model.batches == [6]  # cond and null in one batched call
    # a (B, D) null gives the same as the broadcast (D,) one
    torch.testing.assert_close(cfg_model_fn(model, cond, null.expand(3, dim).clone(), w)(x, t), out)


def test_cfg_changes_samples_and_checks_shapes():
    model = LinearModel(4)
    cond, null = _noise((3, 4), 2), _noise((4,), 3)
    abar = cosine_alphas_cumprod(50)
    x_T = _noise((3, 5), 4)
    plain = sample_ddim(cfg_model_fn(model, cond, null, 0.0), x_T, abar, 5)
    guided = sample_ddim(cfg_model_fn(model, cond, null, 1.5), x_T, abar, 5)
    assert not torch.allclose(plain, guided)
    with pytest.raises(ValueError, match="null_cond"):
        cfg_model_fn(model, cond, torch.zeros(5), 1.0)
    with pytest.raises(ValueError, match="cond"):
        cfg_model_fn(model, cond[0], null, 1.0)
