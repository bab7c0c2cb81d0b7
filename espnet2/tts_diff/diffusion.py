"""Gaussian diffusion schedules as small pure functions (discrete time, ``t = 0 .. T - 1``).

Conventions shared with :mod:`espnet2.tts_diff.samplers`: ``alphas_cumprod[t]`` is
``abar_t = prod_{s <= t} (1 - beta_s)``; the forward process is
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``; a network sees the integer timestep ``t``.

Reference:
    A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021 (cosine
    schedule, Eq. 17, and respaced sampling, Sec. 4).
"""

import math

import torch


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The improved-DDPM cosine schedule.

    ``f(u) = cos^2((u + s) / (1 + s) * pi / 2)``, ``beta_t = min(1 - f((t + 1) / T) / f(t / T), max_beta)``,
    ``abar_t = prod_{s <= t} (1 - beta_s)``. Without the clipping ``abar_t = f((t + 1) / T) / f(0)``; the
    clipping only acts at the last steps, where ``f`` reaches 0.

    Args:
        num_steps: Number of diffusion steps T.
        s: Offset that keeps ``beta_0`` from being vanishingly small.
        max_beta: Upper bound of every ``beta_t`` (prevents ``abar_{T-1} = 0``).

    Returns:
        ``abar``: ``(T,)`` float64, strictly decreasing, in ``(0, 1)``.

    Reference:
        A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, Eq. 17.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def q_sample(x0: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw ``x_t ~ q(x_t | x0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

    Args:
        x0: Clean data ``(B, ...)``.
        t: Integer timesteps ``(B,)`` in ``[0, T)``.
        alphas_cumprod: ``abar`` ``(T,)`` (any float dtype and device).
        noise: Standard normal noise, the shape of ``x0``.

    Returns:
        ``x_t``, the shape and dtype of ``x0``.
    """
    if t.dim() != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    abar = alphas_cumprod.to(x0.device)[t.long()].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def spaced_timesteps(num_train_steps: int, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced training timesteps, from ``T - 1`` down to ``0``.

    ``steps == T`` gives every timestep (the full ancestral chain); ``steps == 1`` gives ``[T - 1]``.

    Args:
        num_train_steps: T.
        steps: Number of sampling steps, ``1 <= steps <= T``.

    Returns:
        Distinct timesteps ``(steps,)`` long, strictly decreasing.

    Reference:
        A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, Sec. 4.
    """
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must lie in [1, {num_train_steps}], got {steps}")
    if steps == 1:
        return torch.tensor([num_train_steps - 1])
    return torch.linspace(num_train_steps - 1, 0, steps, dtype=torch.float64).round().long()


def sampling_timesteps(alphas_cumprod: torch.Tensor, steps: int, abar_min: float = 0.0) -> torch.Tensor:
    """The samplers' grid: ``steps`` evenly spaced timesteps from ``t_max`` down to 0.

    ``t_max`` is the largest timestep with ``abar_t >= abar_min`` (``T - 1`` for ``abar_min = 0``). The clipped
    cosine schedule ends at ``abar_{T-1} ~ 1e-10``, where the data prediction
    ``x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)`` multiplies the network's ``eps`` error by ``~1e5``;
    starting where ``abar >= 1e-3`` bounds that factor by ``~32`` (the factor the full chain's last step,
    ``beta = 0.999``, has anyway), at the cost of treating ``x_T ~ N(0, I)`` as a sample of
    ``N(sqrt(abar) x0, 1 - abar)`` (a 3 % shift of the data mean). DPM-Solver likewise stops the cosine
    schedule short of its end (``t = 0.9946``).

    Args:
        alphas_cumprod: ``abar`` ``(T,)``, decreasing.
        steps: Number of sampling steps, ``1 <= steps <= t_max + 1``.
        abar_min: Smallest ``abar`` the grid starts at.

    Returns:
        Distinct timesteps ``(steps,)`` long, strictly decreasing, ending at 0.

    Reference:
        C. Lu et al., "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10
        Steps", NeurIPS 2022, Appendix D (the end time of the cosine schedule).
    """
    abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    if abar.dim() != 1 or len(abar) == 0:
        raise ValueError(f"alphas_cumprod must be a non-empty 1-D tensor, got shape {tuple(abar.shape)}")
    t_max = max(int((abar >= abar_min).sum()) - 1, 0)
    return spaced_timesteps(t_max + 1, steps)
