import random
from pathlib import Path

import numpy as np
import pytest
import soundfile

from make_mixtures import main
from espnet2.enh.clipsep.files.kaldi_table import read_table
from mixtures import draw_mixtures

FS = 8000


def _clip_dir(tmp_path: Path, labels=("a", "a", "b", "b", "c"), seconds=(1.0, 1.5, 2.0, 1.0, 1.2)) -> Path:
    src = tmp_path / "clips"
    src.mkdir()
    rng = np.random.default_rng(0)
    wav, lab, q = [], [], []
    for i, (label, sec) in enumerate(zip(labels, seconds)):
        key = f"u{i}"
        soundfile.write(src / f"{key}.wav", rng.uniform(-0.5, 0.5, int(sec * FS)).astype(np.float32), FS, subtype="FLOAT")
        np.save(src / f"{key}.npy", np.full(3, i, dtype=np.float32))
        wav.append(f"{key} {src / f'{key}.wav'}\n")
        lab.append(f"{key} {label}\n")
        q.append(f"{key} {src / f'{key}.npy'}\n")
    (src / "wav.scp").write_text("".join(wav))
    (src / "utt2label").write_text("".join(lab))
    (src / "image.scp").write_text("".join(q))
    return src


def test_draw_uses_random_seed_of_the_item_and_distinct_labels():
    keys = [f"k{i}" for i in range(6)]
    labels = {k: "x" if i < 3 else "y" for i, k in enumerate(keys)}
    mixes = draw_mixtures(list(reversed(keys)), 2, labels)
    assert [m.sources[0] for m in mixes] == keys  # sorted targets
    for i, m in enumerate(mixes):
        pool = [k for k in keys if k != keys[i] and labels[k] != labels[keys[i]]]
        assert m.sources[1] == random.Random(i).sample(pool, 1)[0]
        assert labels[m.sources[1]] != labels[m.sources[0]]
    assert draw_mixtures(keys, 2, labels) == mixes  # deterministic
    with pytest.raises(ValueError, match="possible interferers"):
        draw_mixtures(["a", "b"], 2, {"a": "x", "b": "x"})


def test_cli_writes_consistent_mixture_dir(tmp_path):
    src = _clip_dir(tmp_path)
    out = tmp_path / "mix"
    assert main(["--source_dir", str(src), "--output_dir", str(out), "--segment", str(FS),
                 "--query", f"query={src / 'image.scp'}", "--query", f"text_query={src / 'image.scp'}"]) == 0
    wav = read_table(out / "wav.scp")
    assert len(wav) == 5
    sources = read_table(out / "mix2sources")
    labels = read_table(src / "utt2label")
    for key, path in wav.items():
        s1, s2 = sources[key].split()
        assert key == f"{s1}__{s2}" and labels[s1] != labels[s2]
        mix, fs = soundfile.read(path, dtype="float32")
        r1, _ = soundfile.read(read_table(out / "spk1.scp")[key], dtype="float32")
        r2, _ = soundfile.read(read_table(out / "spk2.scp")[key], dtype="float32")
        assert fs == FS and len(mix) == len(r1) == len(r2) == int(read_table(out / "utt2num_samples")[key])
        assert len(mix) <= FS
        np.testing.assert_allclose(mix, r1 + r2, atol=1e-7)
        # The sources are the clips' centre crops at half gain.
        full, _ = soundfile.read(src / f"{s1}.wav", dtype="float32")
        start = len(full) // 2 - len(mix) // 2
        start = min(max(start, 0), len(full) - len(mix))
        np.testing.assert_allclose(r1, full[start : start + len(mix)] / 2, atol=1e-7)
        assert read_table(out / "query1.scp")[key] == read_table(src / "image.scp")[s1]
        assert read_table(out / "text_query2.scp")[key] == read_table(src / "image.scp")[s2]
        assert read_table(out / "utt2label")[key] == labels[s1]
    assert not list(out.rglob("*.tmp*"))


def test_cli_errors_are_one_line(tmp_path, capsys):
    src = _clip_dir(tmp_path)
    (tmp_path / "short.scp").write_text(f"u0 {src / 'u0.npy'}\n")
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"), "--query", f"query={tmp_path / 'short.scp'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "short.scp: no entry for 4 clips" in err[0]
    assert not (tmp_path / "m" / "wav.scp").exists()
    assert main(["--source_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "m")]) == 2
    assert "wav.scp: file not found" in capsys.readouterr().err
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"), "--query", "bad"]) == 2
    assert "expected NAME=SCP" in capsys.readouterr().err
