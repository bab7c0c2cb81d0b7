"""Separation scores as in DESIGN §6: BSS-Eval v4 (museval, ``window=inf``) on the target row, plus SI-SDR.

For one test item with target ``s1``, interferer ``s2``, mixture ``mix`` and estimate ``est`` (all ``(T,)``):

* ``sdr, sir, sar``: ``museval.metrics.bss_eval([s1, s2], [est, mix - est], window=inf)``, row 0 (the target);
* ``sdr_mix``: the same call on ``[mix, mix]``, row 0; ``sdri = sdr - sdr_mix``;
* ``si_sdr`` / ``si_sdr_mix``: scale-invariant SDR of ``est`` / ``mix`` against ``s1`` (zero-mean);
  ``si_sdri = si_sdr - si_sdr_mix``.

Every dB value is clipped to ±``DB_CAP`` = 10·log10(1/eps_float64) ≈ 156.5 dB: only numerically exact
estimates reach it (museval then returns inf or an arbitrary 200-600 dB), and finite values keep the means
meaningful and ``summary.json`` standard JSON.

Items whose target, interferer, mixture or estimate is near-silent (``sum|x| <= 1e-5``) are skipped and counted.
This module also owns the score directory format (``per_item.tsv``, ``skipped.txt``, ``summary.json``) and the
mixture-score cache (``sdr_mix`` / ``si_sdr_mix`` per item, keyed by a digest of the trimmed signals), which lets
every system scored on one test set reuse the mixture's BSS-Eval call instead of repeating it.
"""

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet2.enh.clipsep.files.writing import write_text_atomic

__all__ = [
    "DB_CAP",
    "MIX_CACHE_COLUMNS",
    "PER_ITEM_COLUMNS",
    "SILENCE",
    "SUMMARY_METRICS",
    "ItemJob",
    "ItemResult",
    "BSS_BACKENDS",
    "bss_target",
    "build_summary",
    "load_audio",
    "mixture_model",
    "read_mix_cache",
    "read_score_dir",
    "score_item",
    "sdr_target",
    "si_sdr",
    "signals_digest",
    "summarize",
    "write_mix_cache",
    "write_score_dir",
]

SILENCE = 1e-5  # sum|x| at or below this is "near-silent" (CLIPSep's evaluation threshold)
PER_ITEM_COLUMNS = (
    "key", "sdr", "sir", "sar", "sdr_mix", "sdri", "si_sdr", "si_sdr_mix", "si_sdri", "chosen"
)  # fmt: skip
SUMMARY_METRICS = ("sdr", "sdri", "si_sdr", "si_sdri", "sir", "sar", "sdr_mix")
DB_CAP = 10.0 * math.log10(1.0 / np.finfo(np.float64).eps)
_ARK_ENTRY = re.compile(r".+\.ark:\d+(\[.*\])?$")


def load_audio(value: str) -> Tuple[np.ndarray, int]:
    """Reads one scp value: a sound file path, or a kaldiio wav entry (``x.ark:offset`` or ``cmd |``).

    Returns:
        ``(wav (T,) float64 in [-1, 1] scale, sample rate)``; integer PCM is divided by its full scale.
    """
    if _ARK_ENTRY.match(value) or value.endswith("|"):
        import kaldiio

        loaded = kaldiio.load_mat(value)
        if not isinstance(loaded, tuple):
            raise ValueError(f"{value}: kaldiio entry is a matrix, not a wav (rate, samples) entry")
        rate, wav = loaded
        wav = np.asarray(wav)
        if np.issubdtype(wav.dtype, np.integer):
            wav = wav.astype(np.float64) / float(np.iinfo(wav.dtype).max + 1)
    else:
        import soundfile

        if not os.path.isfile(value):
            raise FileNotFoundError(f"{value}: audio file not found")
        wav, rate = soundfile.read(value, dtype="float64", always_2d=False)
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim == 2 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.ndim != 1:
        raise ValueError(f"{value}: expected mono audio, got shape {wav.shape}")
    return wav, int(rate)


def _db(num: float, den: float) -> float:
    """10·log10(num / den) clipped to ±``DB_CAP``."""
    if num <= 0.0:
        return -DB_CAP
    if den <= 0.0:
        return DB_CAP
    return float(np.clip(10.0 * math.log10(num / den), -DB_CAP, DB_CAP))


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB of ``est`` (T,) against ``ref`` (T,), both made zero-mean; ref must not be 0."""
    est = est - est.mean()
    ref = ref - ref.mean()
    target = (np.dot(est, ref) / np.dot(ref, ref)) * ref
    return _db(float(np.dot(target, target)), float(np.sum((est - target) ** 2)))


BSS_BACKENDS = ("fast", "museval")


def bss_target(
    s1: np.ndarray, s2: np.ndarray, est: np.ndarray, other: np.ndarray, backend: str = "fast"
) -> Tuple[float, float, float]:
    """``(sdr, sir, sar)`` in dB of the target row of museval's ``bss_eval([s1, s2], [est, other], window=inf)``.

    Inputs are (T,) each; results are clipped to ±``DB_CAP``. Two backends give the same values:

    * ``museval``: the call itself. museval refuses an all-zero estimate row; the target row does not depend on
      ``other`` (its distortion filters come from the references), so an all-zero ``other`` (``est == mix``)
      is replaced by ``est``.
    * ``fast`` (default): museval v4's image-mode decomposition of the target row is ``est = s1 + e_spat +
      e_interf + e_artif``, so its SDR is ``10 log10(|s1|^2 / |est - s1|^2)`` exactly, with no projection;
      SIR and SAR use the 512-tap projections of ``est`` onto ``s1`` and onto ``[s1, s2]``, which are BSS-Eval
      v3's, computed by ``fast_bss_eval.bss_eval_sources`` (torch float64, exact solve). Where the references'
      correlation matrix is singular (a pure tone), museval's least-squares call is used instead. Equal to
      museval to 1e-6 dB on the mini test set (``local/benchmark_scoring.py``), about 3x faster.

    Reference:
        F.-R. Stöter, A. Liutkus, N. Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018
        (BSS-Eval v4); R. Scheibler, "SDR — Medium Rare with Fast Computations", ICASSP 2022 (fast_bss_eval).
    """
    if backend not in BSS_BACKENDS:
        raise ValueError(f"unknown BSS-Eval backend {backend!r} (one of {', '.join(BSS_BACKENDS)})")
    if not np.any(other):
        other = est
    if backend == "fast":
        import fast_bss_eval
        import torch

        refs = torch.from_numpy(np.stack([s1, s2]).astype(np.float64))
        ests = torch.from_numpy(np.stack([est, other]).astype(np.float64))
        try:
            _, sir, sar = fast_bss_eval.bss_eval_sources(
                refs, ests, filter_length=512, use_cg_iter=None, zero_mean=False, clamp_db=None,
                compute_permutation=False,
            )  # fmt: skip
            sir, sar = float(sir[0]), float(sar[0])
        except (RuntimeError, np.linalg.LinAlgError):  # singular reference correlations (e.g. a pure tone)
            sir = sar = math.nan
        if math.isfinite(sir) and math.isfinite(sar):
            sir, sar = np.clip([sir, sar], -DB_CAP, DB_CAP)
            return sdr_target(s1, est), float(sir), float(sar)
        # museval solves a singular system by least squares; its call is the exact fallback.
    import museval

    sdr, _, sir, sar, _ = museval.metrics.bss_eval(np.stack([s1, s2]), np.stack([est, other]), window=np.inf)
    sdr, sir, sar = np.clip([sdr[0, 0], sir[0, 0], sar[0, 0]], -DB_CAP, DB_CAP)
    return float(sdr), float(sir), float(sar)


def sdr_target(s1: np.ndarray, est: np.ndarray) -> float:
    """The SDR of :func:`bss_target` alone (museval v4, target row; no projection needed), clipped."""
    return _db(float(np.dot(s1, s1)), float(np.sum((est - s1) ** 2)))


@dataclass
class ItemJob:
    """Paths (scp values) of one test item: mixture, ``[target, interferer]`` and the candidate estimates."""

    key: str
    mix: str
    refs: Tuple[str, str]
    infs: List[str]
    oracle_select: bool = False
    mix_cached: Optional[Tuple[str, float, float]] = None  # (digest, sdr_mix, si_sdr_mix) from a cache
    backend: str = "fast"  # BSS_BACKENDS: the same values either way
    complement: bool = False  # the candidates are infs[0] and mix - infs[0] (PIT as the reference scores it)


MixScores = Dict[str, Tuple[str, float, float]]  # key -> (digest, sdr_mix, si_sdr_mix)
MIX_CACHE_COLUMNS = ("key", "digest", "sdr_mix", "si_sdr_mix")


@dataclass
class ItemResult:
    """Scores of one item (``metrics`` keys = ``PER_ITEM_COLUMNS[1:-1]``), or why it was skipped."""

    key: str
    metrics: Dict[str, float] = field(default_factory=dict)
    chosen: int = 0
    skipped: Optional[str] = None
    mix_model: str = "other"  # "sum" (mix = s1 + s2), "half" (mix = (s1 + s2) / 2) or "other"
    mix_digest: Optional[str] = None  # digest of the trimmed (mix, s1, s2) the mixture scores belong to


def _silent(x: np.ndarray) -> bool:
    return float(np.sum(np.abs(x))) <= SILENCE


def signals_digest(*signals: np.ndarray) -> str:
    """SHA-1 over the dtype, shape and bytes of each signal: what a cached mixture score is valid for."""
    h = hashlib.sha1()
    for x in signals:
        x = np.ascontiguousarray(x)
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def mixture_model(mix: np.ndarray, s1: np.ndarray, s2: np.ndarray, tol: float = 1e-2) -> str:
    """How the references relate to the mixture (all (T,)): ``"sum"``, ``"half"`` or ``"other"``.

    museval's image-mode SDR is not gain-invariant: with ``mix = (s1 + s2) / 2`` and unscaled references, an
    estimate at the level the target has in the mixture (``s1 / 2``) scores at most 6.02 dB.
    """
    norm = float(np.linalg.norm(mix))
    for name, model in (("sum", s1 + s2), ("half", (s1 + s2) / 2)):
        if float(np.linalg.norm(mix - model)) <= tol * norm:
            return name
    return "other"


def score_item(job: ItemJob) -> ItemResult:
    """Loads one item, trims every signal to the shortest length and scores it (see module docstring).

    With ``oracle_select`` every non-silent candidate is scored and the one with the highest SDR against the
    target is kept (PIT's oracle post-selection); ``chosen`` is its index. With ``complement`` the candidates
    are ``infs[0]`` and ``mix - infs[0]`` (``chosen`` 0 or 1): the reference scores its PIT baseline on output 1
    and its complement mask (clipsep/evaluate.py, ``calc_metrics``: ``[m, 1 - m]`` against ``[1 - m, m]``), and
    with the mixture's phase ``(1 - m) X`` is ``X - m X``. Otherwise only ``infs[0]`` is scored.
    Raises ``ValueError`` naming the key on unreadable or inconsistent audio.
    """
    try:
        several = job.oracle_select and not job.complement
        loaded = [load_audio(v) for v in (job.mix, *job.refs, *(job.infs if several else job.infs[:1]))]
    except (OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"key {job.key}: {err}") from None
    rates = {r for _, r in loaded}
    if len(rates) > 1:
        raise ValueError(f"key {job.key}: sample rates differ between mixture, references and estimates: {rates}")
    length = min(len(w) for w, _ in loaded)
    if length == 0:
        raise ValueError(f"key {job.key}: empty audio")
    mix, s1, s2, *cands = (w[:length] for w, _ in loaded)
    if job.complement:
        cands = [cands[0], mix - cands[0]]
    for name, x in (("target", s1), ("interferer", s2), ("mixture", mix)):
        if _silent(x):
            return ItemResult(job.key, skipped=f"silent {name}")
    # The target-row SDR needs no projection (see bss_target), so candidates are ranked by it and only the
    # chosen one is projected for SIR / SAR (the museval backend computes all three in one call).
    scored = [(sdr_target(s1, est), idx, est) for idx, est in enumerate(cands) if not _silent(est)]
    if not scored:
        return ItemResult(job.key, skipped="silent estimate")
    _, chosen, est = max(scored, key=lambda t: (t[0], -t[1]))
    sdr, sir, sar = bss_target(s1, s2, est, mix - est, backend=job.backend)
    digest = signals_digest(mix, s1, s2)
    if job.mix_cached is not None and job.mix_cached[0] == digest:
        sdr_mix, si_mix = job.mix_cached[1], job.mix_cached[2]
    else:
        sdr_mix = sdr_target(s1, mix) if job.backend == "fast" else bss_target(s1, s2, mix, mix, "museval")[0]
        si_mix = si_sdr(mix, s1)
    si = si_sdr(est, s1)
    metrics = dict(
        sdr=sdr, sir=sir, sar=sar, sdr_mix=sdr_mix, sdri=sdr - sdr_mix, si_sdr=si, si_sdr_mix=si_mix,
        si_sdri=si - si_mix,
    )  # fmt: skip
    return ItemResult(
        job.key, metrics=metrics, chosen=chosen, mix_model=mixture_model(mix, s1, s2), mix_digest=digest
    )


def read_mix_cache(path: Path) -> MixScores:
    """The mixture scores of a cache file written by :func:`write_mix_cache` (empty if the file is absent).

    Raises ``ValueError`` naming the file and line when it is malformed.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != MIX_CACHE_COLUMNS:
        raise ValueError(f"{path}: header is not {' '.join(MIX_CACHE_COLUMNS)} (delete the file to rebuild it)")
    cache: MixScores = {}
    for lineno, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        try:
            if len(cells) != len(MIX_CACHE_COLUMNS) or len(cells[1]) != 40:
                raise ValueError
            cache[cells[0]] = (cells[1], float(cells[2]), float(cells[3]))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected key, 40-digit digest, sdr_mix, si_sdr_mix") from None
    return cache


def write_mix_cache(path: Path, cache: MixScores, results: Sequence[ItemResult]) -> MixScores:
    """Adds the mixture scores of the scored ``results`` to ``cache`` and writes it atomically to ``path``.

    Values are stored with ``repr`` precision, so a cached item scores exactly as a fresh one.
    """
    merged = dict(cache)
    for r in results:
        if r.skipped is None and r.mix_digest is not None:
            merged[r.key] = (r.mix_digest, r.metrics["sdr_mix"], r.metrics["si_sdr_mix"])
    rows = ["\t".join(MIX_CACHE_COLUMNS)]
    rows += [f"{k}\t{d}\t{a!r}\t{b!r}" for k, (d, a, b) in sorted(merged.items())]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), "\n".join(rows) + "\n")
    return merged


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """``{mean, sem, median}`` of ``values``; sem = std(ddof=1) / sqrt(n); None where undefined (n < 1 or 2)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "sem": None, "median": None}
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot summarize non-finite scores")
    sem = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else None
    return {"mean": float(x.mean()), "sem": sem, "median": float(np.median(x))}


def build_summary(results: Sequence[ItemResult], **extra) -> Dict[str, object]:
    """``summary.json`` content: ``n``, ``n_skipped``, one ``{mean, sem, median}`` per metric, the count of
    scored items per :func:`mixture_model`, then ``extra``."""
    scored = [r for r in results if r.skipped is None]
    summary: Dict[str, object] = {"n": len(scored), "n_skipped": len(results) - len(scored)}
    for name in SUMMARY_METRICS:
        summary[name] = summarize([r.metrics[name] for r in scored])
    summary["mixture_model"] = {m: sum(r.mix_model == m for r in scored) for m in ("sum", "half", "other")}
    summary.update(extra)
    return summary


def write_score_dir(out: Path, results: Sequence[ItemResult], summary: Dict[str, object]) -> None:
    """Writes ``per_item.tsv`` (scored items, key order), ``skipped.txt`` (``key<TAB>reason``), ``summary.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(PER_ITEM_COLUMNS)]
    for r in sorted(results, key=lambda r: r.key):
        if r.skipped is None:
            rows.append("\t".join([r.key, *(f"{r.metrics[c]:.6f}" for c in PER_ITEM_COLUMNS[1:-1]), str(r.chosen)]))
    write_text_atomic(out / "per_item.tsv", "\n".join(rows) + "\n")
    skipped = [f"{r.key}\t{r.skipped}\n" for r in sorted(results, key=lambda r: r.key) if r.skipped is not None]
    write_text_atomic(out / "skipped.txt", "".join(skipped))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")


def read_score_dir(score_dir: Path) -> Tuple[Dict[str, object], Dict[str, Dict[str, float]]]:
    """``(summary, {key: per-item row})`` of a directory written by :func:`write_score_dir`.

    Per-item rows hold the float metrics and ``chosen`` (int). Raises ``FileNotFoundError`` / ``ValueError``
    with one clear line when the directory or its files are missing or malformed.
    """
    score_dir = Path(score_dir)
    if not score_dir.is_dir():
        raise FileNotFoundError(f"{score_dir}: score directory not found")
    for name in ("summary.json", "per_item.tsv"):
        if not (score_dir / name).is_file():
            raise FileNotFoundError(f"{score_dir / name}: not found (run espnet2.enh.clipsep.bin.score first)")
    try:
        summary = json.loads((score_dir / "summary.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{score_dir / 'summary.json'}: invalid JSON ({err})") from None
    lines = (score_dir / "per_item.tsv").read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != PER_ITEM_COLUMNS:
        raise ValueError(f"{score_dir / 'per_item.tsv'}: header is not {' '.join(PER_ITEM_COLUMNS)}")
    rows = {}
    for lineno, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != len(PER_ITEM_COLUMNS):
            raise ValueError(f"{score_dir / 'per_item.tsv'}:{lineno}: expected {len(PER_ITEM_COLUMNS)} columns")
        row: Dict[str, float] = {c: float(v) for c, v in zip(PER_ITEM_COLUMNS[1:-1], cells[1:-1])}
        row["chosen"] = int(cells[-1])
        rows[cells[0]] = row
    return summary, rows
