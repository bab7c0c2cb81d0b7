"""A machine-speed gauge: a fixed CPU workload timed in each run, printed beside the run's wall times.

Wall times of the mini recipes only compare across machines together with how fast each machine is: shared
2-core machines differ by up to 2x from day to day. The gauge times one fixed workload that resembles the
recipes' training (forward + backward of a small CLIPSep U-Net on a fixed batch, one thread), so that a time
reads as "N minutes at a gauge of G ms"; a run's times scale roughly with G.
"""

import json
import statistics
import time
from pathlib import Path
from typing import Dict, Optional

from espnet2.enh.clipsep.files.writing import write_text_atomic

__all__ = ["GAUGE_WORKLOAD", "measure_gauge", "read_gauge", "write_gauge"]

# Fixed forever (a changed workload is a different gauge): 8 log-spectrograms of 64 x 128, a 4-level U-Net of
# width 8 with 16 output maps (the mini separator's network), forward + backward, one thread.
GAUGE_WORKLOAD = "U-Net(ngf 8, 4 levels, k 16) forward+backward on (8, 1, 64, 128), 1 thread"


def measure_gauge(repeats: int = 15, warmup: int = 3, seed: int = 0) -> Dict[str, object]:
    """Times :data:`GAUGE_WORKLOAD` ``repeats`` times after ``warmup`` runs.

    Returns:
        ``{"workload", "ms" (median), "ms_min", "ms_max", "repeats", "threads"}``. Restores torch's thread count.
    """
    import torch

    from espnet2.enh.clipsep.separator.unet import UNet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        net = UNet(in_channels=1, out_channels=16, ngf=8, num_layers=4)
        x = torch.randn(8, 1, 64, 128, generator=gen)
        times = []
        for i in range(warmup + repeats):
            start = time.perf_counter()
            net.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return dict(
        workload=GAUGE_WORKLOAD, ms=round(statistics.median(times), 2), ms_min=round(min(times), 2),
        ms_max=round(max(times), 2), repeats=repeats, threads=1,
    )  # fmt: skip


def write_gauge(path: Path, reading: Dict[str, object]) -> None:
    """Writes a reading as JSON (atomically)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), json.dumps(reading, indent=1) + "\n")


def read_gauge(path: Path) -> Optional[Dict[str, object]]:
    """A reading written by :func:`write_gauge`, or None if ``path`` does not exist.

    Raises ``ValueError`` naming the file when it is not a gauge reading.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        reading = json.loads(path.read_text(encoding="utf-8"))
        float(reading["ms"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not a speed-gauge reading (rerun python -m espnet2.enh.clipsep.bin.gauge)") from None
    return reading
