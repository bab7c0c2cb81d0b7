"""Fixed evaluation mixtures: each clip of a set mixed with interferers drawn reproducibly from the same set.

Item ``i`` of the sorted clip list draws its ``num_spk - 1`` interferers with ``random.Random(i)`` (CLIPSep's
evaluation protocol, DESIGN §6); with labels available, interferers of the target's own label are excluded,
because a text query could not tell the two apart. Every source is cropped to the common length (at most
``segment`` samples) around its own centre, and the mixture is ``sum_n s_n / num_spk``. Query scp entries
(one embedding file per clip, any ESPnet data type) are re-keyed per mixture and source.
"""

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from espnet2.enh.clipsep.clip_window import crop_around
from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic
from espnet2.enh.clipsep.files.writing import write_wav_atomic


@dataclass
class Mixture:
    """One mixture: its id and its source clip keys, target first."""

    key: str
    sources: Tuple[str, ...]


def draw_mixtures(
    keys: Sequence[str], num_spk: int = 2, labels: Optional[Dict[str, str]] = None
) -> List[Mixture]:
    """Pair each clip (target) with ``num_spk - 1`` interferers; item ``i`` uses ``random.Random(i)``."""
    keys = sorted(keys)
    mixtures = []
    for i, key in enumerate(keys):
        pool = [k for k in keys if k != key]
        if labels is not None:
            pool = [k for k in pool if labels.get(k) != labels.get(key)]
        if len(pool) < num_spk - 1:
            raise ValueError(f"{key}: only {len(pool)} possible interferers, need {num_spk - 1}")
        others = random.Random(i).sample(pool, num_spk - 1)
        mixtures.append(Mixture("__".join([key] + others), (key, *others)))
    return mixtures


def make_mixtures(
    source_dir: Path,
    output_dir: Path,
    queries: Dict[str, Path],
    num_spk: int = 2,
    segment: int = 65535,
    distinct_labels: bool = True,
) -> List[Mixture]:
    """Write a Kaldi-style mixture dir from a clip dir (``wav.scp`` [+ ``utt2label``]).

    Output: ``wav.scp`` (mixtures), ``spk{n}.scp`` (cropped sources, target first), ``<name>{n}.scp`` for each
    query scp given as ``name -> path`` (e.g. ``query`` -> image embeddings, ``text_query`` -> text
    embeddings), ``utt2spk``, ``utt2label`` (the target's label), ``utt2num_samples`` and ``mix2sources``.
    Audio is written as float WAV, so the mixture equals the sum of the written sources exactly.
    """
    wavs = read_table(source_dir / "wav.scp")
    label_path = source_dir / "utt2label"
    labels = read_table(label_path) if label_path.is_file() else None
    query_tables = {name: read_table(Path(p)) for name, p in queries.items()}
    for name, table in query_tables.items():
        missing = sorted(set(wavs) - set(table))
        if missing:
            raise ValueError(f"{queries[name]}: no entry for {len(missing)} clips of {source_dir}, e.g. {missing[0]}")
    mixtures = draw_mixtures(list(wavs), num_spk, labels if distinct_labels else None)

    out_wav = output_dir / "wav"
    for sub in ["mix"] + [f"spk{n}" for n in range(1, num_spk + 1)]:
        (out_wav / sub).mkdir(parents=True, exist_ok=True)
    tables: Dict[str, Dict[str, str]] = {"wav.scp": {}, "utt2spk": {}, "utt2num_samples": {}, "mix2sources": {}}
    if labels is not None:
        tables["utt2label"] = {}
    for mix in tqdm(mixtures, desc=f"mixtures {output_dir.name}", unit="mix"):
        audios, fs = [], None
        for key in mix.sources:
            audio, rate = soundfile.read(wavs[key], dtype="float32", always_2d=True)
            if fs is not None and rate != fs:
                raise ValueError(f"{wavs[key]}: sample rate {rate} differs from {fs} of the other source")
            fs = rate
            audios.append(audio.mean(axis=1))
        length = min(min(len(a) for a in audios), segment)
        crops = [crop_around(a, len(a) // 2, length) for a in audios]
        mixture = np.sum([c / num_spk for c in crops], axis=0).astype(np.float32)
        for n, (key, crop) in enumerate(zip(mix.sources, crops), 1):
            path = out_wav / f"spk{n}" / f"{mix.key}.wav"
            write_wav_atomic(path, (crop / num_spk).astype(np.float32), fs)
            tables.setdefault(f"spk{n}.scp", {})[mix.key] = str(path.resolve())
            for name, table in query_tables.items():
                tables.setdefault(f"{name}{n}.scp", {})[mix.key] = table[key]
        path = out_wav / "mix" / f"{mix.key}.wav"
        write_wav_atomic(path, mixture, fs)
        tables["wav.scp"][mix.key] = str(path.resolve())
        tables["utt2spk"][mix.key] = mix.key
        tables["utt2num_samples"][mix.key] = str(length)
        tables["mix2sources"][mix.key] = " ".join(mix.sources)
        if labels is not None:
            tables["utt2label"][mix.key] = labels[mix.sources[0]]
    for name, table in tables.items():
        write_table_atomic(output_dir / name, table)
    return mixtures
