"""Paired per-item differences with a bootstrap interval."""

import numpy as np
import pytest

from espnet2.enh.clipsep.eval.intervals import paired_difference


def _systems(n=60, shift=0.5, seed=0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 5.0, n)  # shared by both systems: the pairing removes it
    a = {f"k{i}": float(difficulty[i] + shift + rng.normal(0.0, 0.5)) for i in range(n)}
    b = {f"k{i}": float(difficulty[i]) for i in range(n)}
    return a, b


def test_mean_is_the_mean_paired_difference_over_common_keys():
    a, b = _systems()
    b["only_in_b"] = 100.0
    d = paired_difference(a, b)
    assert d.n == 60
    assert d.mean == pytest.approx(np.mean([a[k] - b[k] for k in a]), abs=1e-12)
    assert d.low < d.mean < d.high and d.confidence == 0.9


def test_pairing_resolves_what_separate_sems_cannot():
    a, b = _systems(shift=0.5)
    d = paired_difference(a, b)
    assert d.low > 0.2 and d.high < 0.8  # the true shift 0.5 is resolved ...
    sem = np.std(list(a.values()), ddof=1) / np.sqrt(len(a))
    assert sem > 0.5  # ... though each system's own SEM is larger than the shift
    none = paired_difference(*_systems(shift=0.0))
    assert none.low < 0 < none.high


def test_same_inputs_same_interval_and_seed_changes_only_the_interval():
    a, b = _systems()
    assert paired_difference(a, b) == paired_difference(a, b)
    other = paired_difference(a, b, seed=1)
    assert other.mean == paired_difference(a, b).mean and (other.low, other.high) != (
        paired_difference(a, b).low, paired_difference(a, b).high)


def test_constant_difference_and_errors():
    d = paired_difference({"x": 2.0, "y": 3.0}, {"x": 1.0, "y": 2.0})
    assert (d.mean, d.low, d.high) == (1.0, 1.0, 1.0)
    assert d.format() == "+1.00 [+1.00, +1.00]" and d.format(1, " pp") == "+1.0 pp [+1.0, +1.0]"
    with pytest.raises(ValueError, match="at least 2 items"):
        paired_difference({"x": 1.0}, {"x": 0.0, "y": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference({"x": 1.0, "y": float("nan")}, {"x": 0.0, "y": 1.0})
