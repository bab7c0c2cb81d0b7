"""`extractor: clipsep` through ESPnet's stock TSE entry points: the commands of docs/library.md, run as written.

The section "Use CLIPSep in your own recipe" shows one bash block from query embeddings to extracted files
(`espnet2.bin.enh_tse_train`, `espnet2.bin.enh_tse_inference`). This test builds the data directory it
describes on a tiny corpus (two classes of sound, coloured frames), points CONF at the tiny config with a
few steps and CLIP at the tiny random CLIP, and runs that block verbatim.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[5]
FS = 16000


def _doc_block() -> str:
    text = (REPO / "docs" / "library.md").read_text(encoding="utf-8")
    section = text.split("## Use CLIPSep in your own recipe", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _clip(kind: str, i: int) -> np.ndarray:
    rng = np.random.default_rng(100 * (kind == "high") + i)
    t = np.arange(int(1.2 * FS)) / FS
    if kind == "low":  # harmonics of 200-300 Hz
        f0 = 200 + 20 * i
        return sum(0.2 / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6)) for h in (1, 2, 3)).astype(np.float32)
    spec = np.fft.rfft(rng.standard_normal(len(t)))
    freqs = np.fft.rfftfreq(len(t), 1 / FS)
    spec[(freqs < 3000) | (freqs > 6000)] = 0  # noise in 3-6 kHz
    return (0.2 * np.fft.irfft(spec, len(t)) / np.abs(np.fft.irfft(spec, len(t))).max()).astype(np.float32)


def _corpus(root: Path) -> None:
    data = root / "data"
    clips = {}
    for kind, colour in (("low", (220, 40, 40)), ("high", (40, 40, 220))):
        for i in range(6):
            key = f"{kind}{i}"
            (data / "clips").mkdir(parents=True, exist_ok=True)
            soundfile.write(data / "clips" / f"{key}.wav", _clip(kind, i), FS)
            clips[key] = _clip(kind, i)
            (data / "frames" / key).mkdir(parents=True)
            for f in range(3):
                Image.new("RGB", (48, 48), tuple(c + 5 * f for c in colour)).save(data / "frames" / key / f"{f:06d}.jpg")
    sets = {"train": range(0, 4), "valid": range(4, 5), "test": range(5, 6)}
    for dset, idx in sets.items():
        d = data / dset
        (d / "wav").mkdir(parents=True)
        tables = {n: [] for n in ("wav.scp", "spk1.scp", "spk2.scp", "mix2sources", "query1.txt", "query2.txt")}
        for i in idx:
            for first, second in (("low", "high"), ("high", "low")):  # each class as source 1 and as source 2
                a, b = f"{first}{i}", f"{second}{(i + 1) % 6 if dset == 'train' else i}"
                mix = f"{a}__{b}"
                soundfile.write(d / "wav" / f"{mix}.wav", clips[a] + clips[b], FS)
                soundfile.write(d / "wav" / f"{mix}_s1.wav", clips[a], FS)
                soundfile.write(d / "wav" / f"{mix}_s2.wav", clips[b], FS)
                tables["wav.scp"].append(f"{mix} {d / 'wav' / mix}.wav")
                tables["spk1.scp"].append(f"{mix} {d / 'wav' / mix}_s1.wav")
                tables["spk2.scp"].append(f"{mix} {d / 'wav' / mix}_s2.wav")
                tables["mix2sources"].append(f"{mix} {a} {b}")
                tables["query1.txt"].append(f"{mix} {first} sound")
                tables["query2.txt"].append(f"{mix} {second} sound")
        for name, lines in tables.items():  # Kaldi-style: sorted by key
            (d / name).write_text("\n".join(sorted(lines)) + "\n")


@pytest.fixture(scope="module")
def tse_run(recipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("tse")
    _corpus(root)
    conf = yaml.safe_load((REPO / "egs2/clipsep/enh1/conf/tiny/train_tse_clipsep.yaml").read_text())
    conf.update(max_epoch=2, batch_size=2, num_iters_per_epoch=3)  # a few steps: the commands run, not a quality test
    (root / "tse.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "CONF": str(root / "tse.yaml"),
           "CLIP": f"--clip_model clipsep-tiny --clip_pretrained {recipe / 'clip' / 'clipsep-tiny.pt'}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _doc_block()], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def test_stock_entry_points_train_and_extract_by_text(tse_run):
    root = tse_run
    config = yaml.safe_load((root / "exp" / "tse_clipsep" / "config.yaml").read_text())
    assert config["extractor"] == "clipsep" and config["model_conf"]["share_encoder"] is False
    out = root / "exp" / "tse_clipsep" / "test_text"
    mixes = (root / "data" / "test" / "wav.scp").read_text().split()[::2]
    outputs = {}
    for n in (1, 2):
        table = dict(line.split() for line in (out / f"spk{n}.scp").read_text().splitlines())
        assert sorted(table) == sorted(mixes)
        for key, path in table.items():
            outputs[key, n], rate = soundfile.read(path)
            assert rate == FS and len(outputs[key, n]) == int(1.2 * FS)
    for key in mixes:  # the two text queries of a mixture extract different signals
        assert not np.allclose(outputs[key, 1], outputs[key, 2], atol=1e-4)


def test_enrollments_are_the_query_embeddings(tse_run):
    root = tse_run
    enroll = dict(line.split() for line in (root / "data" / "train" / "enroll_spk2.scp").read_text().splitlines())
    image = dict(line.split() for line in (root / "dump" / "clip" / "image.scp").read_text().splitlines())
    for mix, path in enroll.items():
        assert path == image[mix.split("__")[1]]  # the second source's clip
        assert np.load(root / path).shape == (64,)  # (the scp paths are relative to the recipe directory)
