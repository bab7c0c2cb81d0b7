"""Fixed evaluation mixtures, paired exactly as CLIPSep's released code pairs them.

Two procedures, both from ``clipsep/dataset.py`` of github.com/sony/CLIPSep (read, not copied):

* **Interferers from the same list** (``MixDataset`` with ``split="valid"``; the clean sets: MUSIC-Clean, the
  plain VGGSound test set, every validation set): item ``i`` calls ``random.seed(i)`` and then
  ``random.sample(candidates, num_spk - 1)`` where ``candidates`` is every index of the list but ``i``, in list
  order. Each source is divided by ``num_spk``.
* **Interferers from a second list** (``MixDatasetV2``, used by ``evaluate.py -t TARGETS -t2 INTERFERERS``; the
  "+" sets: MUSIC+, VGGSound-Clean+): item ``i`` calls ``random.seed(i)`` and then, ``num_spk - 1`` times,
  ``random.randint(0, len(interferers) - 1)`` (with replacement). With more than one interferer the reference
  averages them into one interference source, so a "+" mixture always has two sources: ``target / 2`` and
  ``mean(interferers) / 2``.

The released code names no command for the clean sets: ``evaluate.py`` always takes two lists and its README
evaluates only the "+" sets, so the clean sets follow the released one-list procedure (``MixDataset``, which
``train.py`` validates with). Passing the targets' own dir as ``interferer_dir`` gives ``evaluate.py -t L -t2 L``
instead (``randint`` over the whole list: a clip can be drawn as its own interferer).

Neither procedure has a label rule: a pair may share a label (``distinct_labels`` adds our own rule, which draws
from the candidates of another label only). ``random.seed(i)`` and ``random.Random(i)`` give the same stream
(Mersenne Twister seeded by ``init_by_array([i])``; ``randint`` and ``sample`` draw the same values in the
reference's Python 3.9 and here).

The lists are in the reference's order: a clip dir made from CLIPSep's CSV files holds ``csv_order`` (one line
per CSV row, in order: the row's utterance id, or ``-`` where no local video matched); item ``i`` is row ``i``,
so every pair whose two clips exist locally is the reference's pair. A row without a usable local clip (missing
or skipped at extraction) yields no mixture, and a mixture whose drawn interferer is such a row is dropped (both
counted in the log). Without ``csv_order`` the list is the sorted ``wav.scp`` keys.

Every source is cropped to the common length (at most ``segment`` samples) around its own centre. Query scp
entries (one embedding file per clip, any ESPnet data type) are re-keyed per mixture and source.

Reference: Dong et al., "CLIPSep", ICLR 2023, Sec. 4.2 (MUSIC+, VGGSound-Clean+); sony/CLIPSep
clipsep/dataset.py (MixDataset, MixDatasetV2), clipsep/evaluate.py (-t, -t2) and clipsep/README.md.
"""

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from corpora import ORDER_FILE, ORDER_MISSING
from espnet2.enh.clipsep.clip_window import crop_around
from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic
from espnet2.enh.clipsep.files.writing import write_wav_atomic

logger = logging.getLogger(__name__)


@dataclass
class Mixture:
    """One mixture: its id and its source clip keys, target first."""

    key: str
    sources: Tuple[str, ...]


def read_order(clip_dir: Path, keys: Sequence[str]) -> List[Optional[str]]:
    """The clip list of ``clip_dir`` in the reference's order (``None``: a row without a usable clip).

    Args:
        clip_dir: Clip dir, with ``csv_order`` when it was made from CLIPSep's CSV files.
        keys: Its usable clips (the ``wav.scp`` keys).

    Returns:
        ``csv_order``'s entries, ``None`` for ``-`` and for ids not in ``keys``; else ``sorted(keys)``.
    """
    path = Path(clip_dir) / ORDER_FILE
    if not path.is_file():
        return sorted(keys)
    usable = set(keys)
    order: List[Optional[str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if len(fields) != 1:
            raise ValueError(f"{path}:{lineno}: expected one utterance id or '{ORDER_MISSING}' per line")
        order.append(fields[0] if fields[0] in usable else None)
    listed = set(order)
    unlisted = sum(k not in listed for k in keys)
    if unlisted:
        logger.warning("%s: %d clips of wav.scp are not in %s and are not used", clip_dir, unlisted, path.name)
    return order


def _candidates(
    entries: Sequence[Optional[str]], exclude: Optional[int], label: Optional[str], labels: Optional[Dict[str, str]]
) -> List[int]:
    """Indices an item may draw, in list order: all but ``exclude``; with ``labels``, only present clips of
    another label than ``label``."""
    if labels is None:
        return [j for j in range(len(entries)) if j != exclude]
    return [j for j, key in enumerate(entries) if j != exclude and key is not None and labels.get(key) != label]


def draw_mixtures(
    order: Sequence[Optional[str]],
    num_spk: int = 2,
    labels: Optional[Dict[str, str]] = None,
    pool: Optional[Sequence[Optional[str]]] = None,
) -> List[Mixture]:
    """Pair every present item of ``order`` with ``num_spk - 1`` interferers as the reference does.

    Reference: sony/CLIPSep clipsep/dataset.py, ``MixDataset.__getitem__`` (no ``pool``) and
    ``MixDatasetV2.__getitem__`` (``pool``), each with ``split != "train"``.

    Args:
        order: Target clip keys in list order (``None``: a row without a usable clip).
        num_spk: Sources per mixture, target included (the reference's ``n_mix`` / ``N_test_sources``).
        labels: ``{key: label}`` to exclude same-label interferers (our rule, not the reference's); ``None``
            follows the reference.
        pool: Interferer keys in list order; ``None`` draws them from ``order``.

    Returns:
        The mixtures in list order, each keyed ``<target>__<interferer>...``.
    """
    if num_spk < 2:
        raise ValueError(f"num_spk must be >= 2, got {num_spk}")
    mixtures, keys, dropped = [], set(), 0
    for i, target in enumerate(order):
        if target is None:
            continue
        label = labels.get(target) if labels is not None else None
        rng = random.Random(i)  # the reference: random.seed(i)
        if pool is None:
            candidates = _candidates(order, i, label, labels)
            if len(candidates) < num_spk - 1:
                raise ValueError(f"{target}: only {len(candidates)} possible interferers, need {num_spk - 1}")
            drawn = [order[j] for j in rng.sample(candidates, num_spk - 1)]
        else:
            candidates = _candidates(pool, None, label, labels)
            if not candidates:
                raise ValueError(f"{target}: no possible interferer in the interferer list")
            drawn = [pool[candidates[rng.randint(0, len(candidates) - 1)]] for _ in range(num_spk - 1)]
        if any(key is None for key in drawn):
            dropped += 1  # the reference's interferer has no local clip: keep every other pair exact
            continue
        key = "__".join([target, *drawn])
        if key in keys:  # a clip listed twice in the target list
            key = f"{key}-{i}"
        keys.add(key)
        mixtures.append(Mixture(key, (target, *drawn)))
    if dropped:
        logger.warning("%d mixtures dropped: their drawn interferer has no usable local clip", dropped)
    return mixtures


def _read_clip_dir(clip_dir: Path) -> Tuple[Dict[str, str], Optional[Dict[str, str]], List[Optional[str]]]:
    wavs = read_table(clip_dir / "wav.scp")
    label_path = clip_dir / "utt2label"
    labels = read_table(label_path) if label_path.is_file() else None
    order = read_order(clip_dir, list(wavs))
    missing = sum(key is None for key in order)
    if missing:
        logger.warning("%s: %d of the %d listed clips are not available locally", clip_dir, missing, len(order))
    return wavs, labels, order


def _load(path: str, fs: Optional[int]) -> Tuple[np.ndarray, int]:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if fs is not None and rate != fs:
        raise ValueError(f"{path}: sample rate {rate} differs from {fs} of the other source")
    return audio.mean(axis=1), rate


def make_mixtures(
    source_dir: Path,
    output_dir: Path,
    queries: Dict[str, Path],
    num_spk: int = 2,
    segment: int = 65535,
    distinct_labels: bool = False,
    interferer_dir: Optional[Path] = None,
) -> List[Mixture]:
    """Write a Kaldi-style mixture dir from a clip dir (``wav.scp`` [+ ``utt2label``, ``csv_order``]).

    Output: ``wav.scp`` (mixtures), ``spk{n}.scp`` (cropped sources, target first), ``<name>{n}.scp`` for each
    query scp given as ``name -> path`` (e.g. ``query`` -> image embeddings, ``text_query`` -> text
    embeddings), ``utt2spk``, ``utt2label`` (the target's label), ``utt2num_samples`` and ``mix2sources``
    (every source clip, target first). Audio is written as float WAV, so the mixture equals the sum of the
    written sources exactly.

    Args:
        source_dir: The targets' clip dir (and the interferers' without ``interferer_dir``).
        output_dir: The mixture dir to write.
        queries: Query scp tables by name; each must cover every target. With ``interferer_dir``,
            ``<name>2.scp`` is written only when the table also covers every drawn interferer (a pool's
            embeddings are often not computed); ``<name>1.scp`` always.
        num_spk: Sources drawn per mixture, target included. With ``interferer_dir`` the interferers are
            averaged into ``spk2`` as the reference does, so the mixture dir has two sources.
        segment: Longest mixture in samples (CLIPSep: 65535).
        distinct_labels: Never pair two clips of the same label (needs ``utt2label`` in the dirs involved);
            off = the reference.
        interferer_dir: A clip dir (``wav.scp`` [+ ``utt2label``, ``csv_order``]) to draw the interferers
            from, the reference's second list (``evaluate.py -t2``); ``None`` draws from ``source_dir``.

    Returns:
        The mixtures written.
    """
    wavs, labels, order = _read_clip_dir(Path(source_dir))
    pool = None
    if interferer_dir is not None:
        pool_wavs, pool_labels, pool = _read_clip_dir(Path(interferer_dir))
        overlap = {k for k in set(wavs) & set(pool_wavs) if wavs[k] != pool_wavs[k]}
        if overlap:
            raise ValueError(f"{interferer_dir}: {len(overlap)} ids name other files than in {source_dir}, "
                             f"e.g. {sorted(overlap)[0]}")
        wavs = {**pool_wavs, **wavs}
        if labels is not None and pool_labels is not None:
            labels = {**pool_labels, **labels}
    if distinct_labels and labels is None:
        raise ValueError(f"{source_dir}: --distinct_labels needs utt2label")
    targets = [key for key in order if key is not None]
    query_tables = {name: read_table(Path(p)) for name, p in queries.items()}
    for name, table in query_tables.items():
        missing = [key for key in targets if key not in table]
        if missing:
            raise ValueError(f"{queries[name]}: no entry for {len(missing)} clips of {source_dir}, e.g. {missing[0]}")
    mixtures = draw_mixtures(order, num_spk, labels if distinct_labels else None, pool)
    if not mixtures:
        raise ValueError(f"{source_dir}: no mixture could be made (no usable clip or interferer)")
    n_out = 2 if pool is not None else num_spk
    per_source = {}  # query tables written for sources 2..n_out
    for name, table in query_tables.items():
        covered = n_out == num_spk and all(k in table for m in mixtures for k in m.sources[1:])
        if not covered:
            logger.info("%s: not every interferer has an entry: no %s2.scp", queries[name], name)
        per_source[name] = covered

    out_wav = Path(output_dir) / "wav"
    for sub in ["mix"] + [f"spk{n}" for n in range(1, n_out + 1)]:
        (out_wav / sub).mkdir(parents=True, exist_ok=True)
    tables: Dict[str, Dict[str, str]] = {"wav.scp": {}, "utt2spk": {}, "utt2num_samples": {}, "mix2sources": {}}
    if labels is not None:
        tables["utt2label"] = {}
    for mix in tqdm(mixtures, desc=f"mixtures {Path(output_dir).name}", unit="mix"):
        audios, fs = [], None
        for key in mix.sources:
            audio, fs = _load(wavs[key], fs)
            audios.append(audio)
        length = min(min(len(a) for a in audios), segment)
        crops = [crop_around(a, len(a) // 2, length) for a in audios]
        if pool is not None:  # the reference (N > 2): audios[1] = mean(audios[1:]), then each / 2
            crops = [crops[0], np.mean(crops[1:], axis=0)]
        scaled = [(c / n_out).astype(np.float32) for c in crops]
        mixture = np.sum(scaled, axis=0).astype(np.float32)
        for n, source in enumerate(scaled, 1):
            path = out_wav / f"spk{n}" / f"{mix.key}.wav"
            write_wav_atomic(path, source, fs)
            tables.setdefault(f"spk{n}.scp", {})[mix.key] = str(path.resolve())
            for name, table in query_tables.items():
                if n == 1 or per_source[name]:
                    tables.setdefault(f"{name}{n}.scp", {})[mix.key] = table[mix.sources[n - 1]]
        path = out_wav / "mix" / f"{mix.key}.wav"
        write_wav_atomic(path, mixture, fs)
        tables["wav.scp"][mix.key] = str(path.resolve())
        tables["utt2spk"][mix.key] = mix.key
        tables["utt2num_samples"][mix.key] = str(length)
        tables["mix2sources"][mix.key] = " ".join(mix.sources)
        if labels is not None:
            tables["utt2label"][mix.key] = labels[mix.sources[0]]
    for name, table in tables.items():
        write_table_atomic(Path(output_dir) / name, table)
    return mixtures
