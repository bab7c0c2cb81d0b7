"""Samplers for discrete-time Gaussian diffusion, as small pure functions with one signature.

``sample_x(model_fn, x_T, alphas_cumprod, steps, *, generator=None, callback=None, clip_x0=None, abar_min=1e-3)``
``-> x0``

* ``model_fn(x, t) -> eps``: the noise prediction for ``x`` ``(B, ...)`` at integer training timesteps ``t``
  (long ``(B,)``, in ``[0, T)``); classifier-free guidance is a wrapper (:func:`cfg_model_fn`).
* ``alphas_cumprod``: ``abar`` ``(T,)`` of the training schedule (:mod:`espnet2.tts_diff.diffusion`).
* ``steps``: number of network evaluations, on the grid ``sampling_timesteps(alphas_cumprod, steps, abar_min)``:
  evenly spaced from the largest ``t`` with ``abar_t >= abar_min`` (default ``1e-3``; 0 gives ``T - 1``) down
  to 0; every sampler ends on the data prediction at ``t = 0``.
* ``generator``: source of DDPM's noise (DDIM and DPM-Solver++ are deterministic given ``x_T``): one
  ``torch.Generator`` for the batch, or one per row of ``x_T`` (:data:`Generators`), so that a row's sample depends
  on its own seed only, whatever else is in the batch.
* ``callback(i, t, x, x0)``: called once per step with the step index, its timestep, the new state and the
  current data prediction.
* ``clip_x0``: clamp each predicted ``x0`` to ``[-clip_x0, clip_x0]`` (default: no clipping, as a normalised
  mel is not bounded).
* ``abar_min``: where the grid starts; the near-zero ``abar`` of the cosine schedule's last steps would
  amplify the network's error in ``x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)`` by up to ``1e5``.

The per-step coefficients are computed in float64 on the CPU; the state keeps the dtype of ``x_T``.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from espnet2.tts_diff.diffusion import sampling_timesteps

# Where the sampling grid starts (see espnet2.tts_diff.diffusion.sampling_timesteps).
ABAR_MIN = 1e-3

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]]
Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def randn_rows(shape: Sequence[int], generator: Generators, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` ``(B, ...)``: from one generator (or the global RNG when None), or row
    ``i`` from ``generator[i]``, which draws exactly what ``torch.randn((1, ...), generator=generator[i])`` would."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    generator = list(generator)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])


def _grid(alphas_cumprod: torch.Tensor, steps: int, abar_min: float) -> List[Tuple[int, float, float]]:
    """``(t, abar_t, abar_next)`` per step; ``abar_next`` of the last step is 1 (the data)."""
    ts = sampling_timesteps(alphas_cumprod, steps, abar_min)
    a = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)[ts]
    return list(zip(ts.tolist(), a.tolist(), torch.cat([a[1:], a.new_ones(1)]).tolist()))


def _predict(
    model_fn: ModelFn, x: torch.Tensor, t: int, abar: float, clip_x0: Optional[float]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(eps, x0)`` predicted at timestep ``t``; ``eps`` is made consistent with a clipped ``x0``."""
    eps = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)).to(x.dtype)
    x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    return eps, x0


def sample_ddpm(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    steps: int,
    *,
    generator: Generators = None,
    callback: Callback = None,
    clip_x0: Optional[float] = None,
    abar_min: float = ABAR_MIN,
) -> torch.Tensor:
    """Ancestral sampling: ``x_next ~ q(x_next | x_t, x0 = x0_hat)`` (posterior variance ``beta_tilde``).

    On the grid ``t_1 > ... > t_S`` the betas are respaced, ``beta'_i = 1 - abar_{t_i} / abar_{t_{i+1}}``, so
    ``steps == T`` with ``abar_min = 0`` is the original chain of Ho et al. (Algorithm 2,
    ``sigma_t^2 = beta_tilde_t``).

    Args:
        model_fn: ``model_fn(x, t) -> eps``, ``t`` long ``(B,)``.
        x_T: Initial noise ``(B, ...)``.
        alphas_cumprod: ``abar`` ``(T,)``.
        steps: Network evaluations, ``1 <= steps <= t_max + 1``.
        generator: Source of the per-step noise: one generator, one per row of ``x_T``, or None (global RNG).
        callback: ``callback(i, t, x, x0)`` after each step.
        clip_x0: Clamp the predicted ``x0`` to ``[-clip_x0, clip_x0]`` (None: no clipping).
        abar_min: The grid starts at the largest ``t`` with ``abar_t >= abar_min`` (0: at ``T - 1``).

    Returns:
        ``x0`` ``(B, ...)``, the dtype of ``x_T``.

    Reference:
        J. Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, Eq. 6-7 and Algorithm 2;
        A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, Sec. 4.
    """
    grid = _grid(alphas_cumprod, steps, abar_min)
    x = x_T
    for i, (t, a, a_next) in enumerate(grid):
        _, x0 = _predict(model_fn, x, t, a, clip_x0)
        beta = 1 - a / a_next
        x = (math.sqrt(a_next) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - a_next) / (1 - a)) * x
        if i < len(grid) - 1:
            noise = randn_rows(x.shape, generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(beta * (1 - a_next) / (1 - a)) * noise
        if callback is not None:
            callback(i, t, x, x0)
    return x


def sample_ddim(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    steps: int,
    *,
    generator: Generators = None,
    callback: Callback = None,
    clip_x0: Optional[float] = None,
    abar_min: float = ABAR_MIN,
) -> torch.Tensor:
    """Deterministic DDIM (``eta = 0``): ``x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps_hat``.

    Args:
        model_fn: ``model_fn(x, t) -> eps``, ``t`` long ``(B,)``.
        x_T: Initial noise ``(B, ...)``.
        alphas_cumprod: ``abar`` ``(T,)``.
        steps: Network evaluations, ``1 <= steps <= t_max + 1``.
        generator: Unused (the sampler is deterministic); accepted for the common signature.
        callback: ``callback(i, t, x, x0)`` after each step.
        clip_x0: Clamp the predicted ``x0`` to ``[-clip_x0, clip_x0]`` (None: no clipping).
        abar_min: The grid starts at the largest ``t`` with ``abar_t >= abar_min`` (0: at ``T - 1``).

    Returns:
        ``x0`` ``(B, ...)``, the dtype of ``x_T``.

    Reference:
        J. Song, C. Meng and S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, Eq. 12 with sigma = 0.
    """
    x = x_T
    for i, (t, a, a_next) in enumerate(_grid(alphas_cumprod, steps, abar_min)):
        eps, x0 = _predict(model_fn, x, t, a, clip_x0)
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
        if callback is not None:
            callback(i, t, x, x0)
    return x


def sample_dpmpp_2m(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    steps: int,
    *,
    generator: Generators = None,
    callback: Callback = None,
    clip_x0: Optional[float] = None,
    abar_min: float = ABAR_MIN,
) -> torch.Tensor:
    """DPM-Solver++(2M): a second-order multistep solver of the probability-flow ODE in data-prediction form.

    With ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``, ``lambda = log(alpha / sigma)`` and
    ``h_i = lambda_{i+1} - lambda_i``: ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} expm1(-h_i) D_i``,
    where ``D_i = (1 + 1 / (2 r_i)) x0_i - x0_{i-1} / (2 r_i)``, ``r_i = h_{i-1} / h_i``, except at the first
    update and at the last one (into ``t = 0``), which are first order (``D_i = x0_i``): on the cosine
    schedule that last interval in ``lambda`` is long and the multistep extrapolation overshoots there (Lu et
    al. also drop to lower order at the final steps). The last step returns the data prediction at ``t = 0``.

    Args:
        model_fn: ``model_fn(x, t) -> eps``, ``t`` long ``(B,)``.
        x_T: Initial noise ``(B, ...)``.
        alphas_cumprod: ``abar`` ``(T,)``.
        steps: Network evaluations, ``1 <= steps <= t_max + 1``.
        generator: Unused (the sampler is deterministic); accepted for the common signature.
        callback: ``callback(i, t, x, x0)`` after each step.
        clip_x0: Clamp the predicted ``x0`` to ``[-clip_x0, clip_x0]`` (None: no clipping).
        abar_min: The grid starts at the largest ``t`` with ``abar_t >= abar_min`` (0: at ``T - 1``).

    Returns:
        ``x0`` ``(B, ...)``, the dtype of ``x_T``.

    Reference:
        C. Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
        arXiv:2211.01095, 2022, Algorithm 2.
    """
    grid = _grid(alphas_cumprod, steps, abar_min)
    x, x0_prev, h_prev = x_T, None, None
    for i, (t, a, a_next) in enumerate(grid):
        _, x0 = _predict(model_fn, x, t, a, clip_x0)
        if i == len(grid) - 1:
            x = x0
        else:
            h = 0.5 * (math.log(a_next / (1 - a_next)) - math.log(a / (1 - a)))
            first_order = x0_prev is None or i == len(grid) - 2
            d = x0 if first_order else (1 + h / (2 * h_prev)) * x0 - (h / (2 * h_prev)) * x0_prev
            x = math.sqrt((1 - a_next) / (1 - a)) * x - math.sqrt(a_next) * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, t, x, x0)
    return x


SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
}


def cfg_model_fn(
    model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    null_cond: torch.Tensor,
    w: float,
) -> ModelFn:
    """Classifier-free guidance as a wrapper: ``eps = (1 + w) eps(x, t, cond) - w eps(x, t, null)``.

    ``w = 0`` is plain conditional sampling (one network call); otherwise the conditional and unconditional
    predictions come from one batched call on ``2 B`` examples.

    Args:
        model: ``model(x, t, c) -> eps`` with ``x`` ``(B, ...)``, ``t`` ``(B,)``, ``c`` ``(B, D)``.
        cond: Conditioning vectors ``(B, D)``.
        null_cond: The learned null condition ``(D,)`` or ``(B, D)`` (broadcast to ``cond``'s shape).
        w: Guidance weight (Ho & Salimans' form; 0: no guidance).

    Returns:
        ``model_fn(x, t) -> eps`` for the samplers.

    Reference:
        J. Ho and T. Salimans, "Classifier-Free Diffusion Guidance", NeurIPS 2021 Workshop, Eq. 6.
    """
    if cond.dim() != 2 or null_cond.shape[-1] != cond.shape[-1] or null_cond.dim() not in (1, 2):
        raise ValueError(
            f"need cond (B, D) and null_cond (D,) or (B, D), got {tuple(cond.shape)}, {tuple(null_cond.shape)}"
        )
    if w == 0:
        return lambda x, t: model(x, t, cond)
    both = torch.cat([cond, null_cond.to(cond.dtype).expand_as(cond)])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_cond, eps_null = model(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        return (1 + w) * eps_cond - w * eps_null

    return guided
