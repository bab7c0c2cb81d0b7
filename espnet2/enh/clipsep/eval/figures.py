"""Report figures, drawn with matplotlib's Agg backend: spectrograms, score distributions and line plots.

Every figure is written to a temporary name and renamed, so a report never links a half-written PNG. The
spectrograms use a logarithmic frequency axis labelled in Hz, time in seconds and a colour bar per panel:
decibels for magnitudes (a fixed range, so that panels and examples compare) and [0, 1] for masks.
"""

import os
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = [
    "DB_RANGE",
    "distribution_figure",
    "example_figure",
    "image_thumbnail",
    "line_figure",
    "save_figure",
    "stft_magnitude",
]

DB_RANGE = (-80.0, 0.0)  # dB re. a full-scale sinusoid
LOWEST_HZ = 40.0  # bottom of the log-frequency axis (below it a 1024-point STFT has 2 or 3 bins)
DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Writes ``fig`` as PNG to ``path`` (temporary name, then rename) and closes it."""
    plt = _pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def stft_magnitude(wav: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Magnitude of the centred STFT with a periodic Hann window.

    Args:
        wav: (T,) signal.
    Returns:
        (n_fft // 2 + 1, 1 + T // hop) magnitudes scaled so that a full-scale sinusoid peaks at 1.
    """
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    pad = n_fft // 2
    x = np.pad(wav.astype(np.float64), pad, mode="reflect" if len(wav) > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T / (window.sum() / 2.0)


def _hz(value, _pos=None) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _spectrogram_panel(fig, ax, values: np.ndarray, rate: int, hop: int, title: str, mask: bool) -> None:
    """One (F, N) panel, row 0 = 0 Hz, on a log-frequency axis from :data:`LOWEST_HZ` to Nyquist."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    n_bins, n_frames = values.shape
    freqs = np.linspace(0.0, rate / 2.0, n_bins)
    times = np.arange(n_frames + 1) * hop / rate
    edges = np.concatenate([freqs[1:] - (freqs[1] - freqs[0]) / 2, [rate / 2.0]])  # bin 0 (DC) is left out
    if mask:
        image = ax.pcolormesh(times, edges, values[1:], cmap="magma", vmin=0.0, vmax=1.0, shading="flat")
        label = "mask"
    else:
        db = 20.0 * np.log10(np.maximum(values[1:], 1e-12))
        image = ax.pcolormesh(times, edges, db, cmap="viridis", vmin=DB_RANGE[0], vmax=DB_RANGE[1], shading="flat")
        label = "dB"
    ax.set_yscale("log")
    ax.set_ylim(max(edges[0], LOWEST_HZ), rate / 2.0)
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_hz))
    ax.yaxis.set_minor_locator(NullLocator())  # (hundreds of minor ticks per panel otherwise)
    ax.set_title(title, fontsize=9, loc="left")
    ax.tick_params(labelsize=8)
    bar = fig.colorbar(image, ax=ax, pad=0.01, fraction=0.05)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def example_figure(
    mix: np.ndarray,
    target: np.ndarray,
    estimates: Sequence[Tuple[str, np.ndarray]],
    rate: int,
    title: str,
    path: Path,
    n_fft: int = 1024,
    hop: int = 256,
) -> None:
    """Spectrograms of one example: mixture and target, then per system its estimate and effective mask.

    The effective mask is ``|STFT(est)| / |STFT(mix)|`` clipped to [0, 1]: what the output realises, not the
    model's internal mask.

    Args:
        mix, target: (T,) signals.
        estimates: ``(system name, (T,) estimate)`` pairs, all of the mixture's length.
        rate: Sample rate in Hz.
        title: Figure title.
        path: PNG to write.
    """
    plt = _pyplot()
    rows = 1 + len(estimates)
    fig, axes = plt.subplots(rows, 2, figsize=(11.0, 2.3 * rows), squeeze=False, sharex=True)
    mix_mag = stft_magnitude(mix, n_fft, hop)
    _spectrogram_panel(fig, axes[0, 0], mix_mag, rate, hop, "mixture", mask=False)
    _spectrogram_panel(fig, axes[0, 1], stft_magnitude(target, n_fft, hop), rate, hop, "target", mask=False)
    for i, (name, est) in enumerate(estimates, start=1):
        est_mag = stft_magnitude(est, n_fft, hop)
        _spectrogram_panel(fig, axes[i, 0], est_mag, rate, hop, f"{name}: estimate", mask=False)
        mask = np.clip(est_mag / np.maximum(mix_mag, 1e-10), 0.0, 1.0)
        _spectrogram_panel(fig, axes[i, 1], mask, rate, hop, f"{name}: effective mask |est| / |mix|", mask=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency (Hz)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    # fixed margins (tight_layout measures every tick label of the log axes: most of a figure's time)
    fig.subplots_adjust(left=0.07, right=0.95, top=1.0 - 0.6 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        hspace=0.4, wspace=0.28)  # fmt: skip
    save_figure(fig, path)


def distribution_figure(groups: Dict[str, Sequence[float]], path: Path, ylabel: str, title: str) -> None:
    """A box plot per group with every item drawn over it (horizontal jitter, seed 0) and a line at 0.

    Args:
        groups: ``name -> values`` (one box each, in the given order).
        path: PNG to write.
    """
    plt = _pyplot()
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 1.5), 4.0))
    data = [np.asarray(groups[n], dtype=np.float64) for n in names]
    ax.boxplot(data, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15 if len(names) > 3 else 0, fontsize=8)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=9, alpha=0.6, color=f"C{i - 1}", zorder=3)
    ax.axhline(0.0, color="gray", linewidth=0.8, linestyle="--")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def line_figure(panels: Sequence[Dict], path: Path) -> None:
    """Line plots side by side.

    Args:
        panels: Each ``{"title", "xlabel", "ylabel", "series": {name: [(x, y), ...]}, "logx", "logy"}``; points
            with ``y`` None (or not positive on a log axis) are left out; a panel without points says "n/a".
        path: PNG to write.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        logx, logy = panel.get("logx", False), panel.get("logy", False)
        drawn = 0
        for name, series in panel["series"].items():
            pts = sorted(
                (x, y) for x, y in series if y is not None and (not logx or x > 0) and (not logy or y > 0)
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=4, label=name)
                drawn += 1
        if drawn:
            ax.set_xscale("log" if logx else "linear")
            ax.set_yscale("log" if logy else "linear")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel(panel.get("xlabel", ""), fontsize=9)
        ax.set_ylabel(panel.get("ylabel", ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def image_thumbnail(source: Path, path: Path, width: int = 160) -> Tuple[int, int]:
    """Writes a JPEG thumbnail of a picture, ``width`` pixels wide, and returns its size.

    Raises:
        ValueError: ``source`` is missing or not a readable image (one line naming it).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with Image.open(source) as img:
            img = img.convert("RGB")
            height = max(1, round(img.height * width / img.width))
            img = img.resize((width, height), Image.Resampling.LANCZOS)
            img.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, path)
        return width, height
    except (OSError, UnidentifiedImageError) as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{source}: not a readable image ({type(err).__name__})") from None
