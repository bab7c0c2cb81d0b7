"""Fixed evaluation mixtures: the reference's pairing (pinned by hand), missing rows, the pool option end to end."""

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile

from make_mixtures import main
from espnet2.enh.clipsep.files.kaldi_table import read_table
from mixtures import draw_mixtures, read_order

FS = 8000

# --- the reference's pairing, worked out by hand ---
#
# sony/CLIPSep clipsep/dataset.py, for an evaluation item i (split != "train"):
#   MixDataset (one list):   random.seed(i); candidates = [0 .. i-1, i+1 .. n-1]; random.sample(candidates, 1)
#   MixDatasetV2 (-t, -t2):  random.seed(i); samples2[random.randint(0, len(samples2) - 1)]
# Both lists are used in file order (never sorted) and neither has a label rule.
#
# random.seed(i) seeds the Mersenne Twister with init_by_array([i]); its first 32-bit words are (numpy's legacy
# RandomState([i]) gives the same words: test_mersenne_twister_words):
#   seed 0: 3626764237, 1654615998
#   seed 1: 577090037
#   seed 2: 4106135923, 3707026329, 4070888059, 3646664648, 242886303
#   seed 3: 1022050301
#   seed 4: 1013818839
# With 5 targets and 4 interferers both procedures draw an index below 4: random.sample(candidates, 1) of 4
# candidates is candidates[_randbelow(4)], random.randint(0, 3) is _randbelow(4), and _randbelow(4) takes the top
# 3 bits of the next word (word >> 29) until they are below 4:
#   seed 0: 3626764237 >> 29 = 6 (rejected), 1654615998 >> 29 = 3        -> j0 = 3
#   seed 1: 577090037 >> 29 = 1                                          -> j1 = 1
#   seed 2: 7, 6, 7, 6 (rejected), 242886303 >> 29 = 0                   -> j2 = 0
#   seed 3: 1022050301 >> 29 = 1                                         -> j3 = 1
#   seed 4: 1013818839 >> 29 = 1                                         -> j4 = 1
WORDS = {0: [3626764237, 1654615998], 1: [577090037], 2: [4106135923, 3707026329, 4070888059, 3646664648, 242886303],
         3: [1022050301], 4: [1013818839]}
TARGETS = ["m3", "m0", "m4", "m1", "m2"]  # a CSV's order
POOL = ["v2", "v0", "v3", "v1"]
# One list: item i picks candidates[j_i], candidates = TARGETS without item i.
#   i=0 m3: [m0, m4, m1, m2][3] = m2      i=1 m0: [m3, m4, m1, m2][1] = m4      i=2 m4: [m3, m0, m1, m2][0] = m3
#   i=3 m1: [m3, m0, m4, m2][1] = m0      i=4 m2: [m3, m0, m4, m1][1] = m0
SAME_LIST = [("m3", "m2"), ("m0", "m4"), ("m4", "m3"), ("m1", "m0"), ("m2", "m0")]
# Two lists: item i picks POOL[j_i] = POOL[3], POOL[1], POOL[0], POOL[1], POOL[1].
FROM_POOL = [("m3", "v1"), ("m0", "v0"), ("m4", "v2"), ("m1", "v0"), ("m2", "v0")]


def test_mersenne_twister_words():
    for seed, words in WORDS.items():
        rng = random.Random(seed)
        assert [rng.getrandbits(32) for _ in words] == words
        legacy = np.random.RandomState([seed])  # an independent implementation of init_by_array
        assert [int(w) for w in legacy.randint(0, 2**32, size=len(words), dtype=np.uint64)] == words


def test_pairing_is_the_references_by_hand():
    assert [m.sources for m in draw_mixtures(TARGETS)] == SAME_LIST
    assert [m.sources for m in draw_mixtures(TARGETS, pool=POOL)] == FROM_POOL
    assert [m.key for m in draw_mixtures(TARGETS, pool=POOL)][:2] == ["m3__v1", "m0__v0"]
    # No label rule: m0 and m4 share a label and are still paired (item 1).
    labels = {"m3": "tuba", "m0": "cello", "m4": "cello", "m1": "flute", "m2": "erhu"}
    assert draw_mixtures(TARGETS, labels=None) == draw_mixtures(TARGETS)
    # Our optional rule draws among the other labels only: item 1 (m0, cello) has candidates [m3, m1, m2], and
    # _randbelow(3) takes the top 2 bits: 577090037 >> 30 = 0 -> m3; item 2 (m4, cello) the same 3 candidates,
    # seed 2's words >> 30 = 3, 3, 3, 3 (rejected), 0 -> m3; the other items keep their pairs.
    assert [m.sources for m in draw_mixtures(TARGETS, labels=labels)] == [
        ("m3", "m2"), ("m0", "m3"), ("m4", "m3"), ("m1", "m0"), ("m2", "m0")]


def test_missing_rows_keep_every_other_pair():
    # Row 2 (m4) has no local clip: no item 2, and item 1, which drew it, is dropped; the rest as by hand.
    assert [m.sources for m in draw_mixtures(["m3", "m0", None, "m1", "m2"])] == [
        ("m3", "m2"), ("m1", "m0"), ("m2", "m0")]
    # Interferer row 1 (v0) is missing: items 1, 3 and 4 drew it.
    assert [m.sources for m in draw_mixtures(TARGETS, pool=["v2", None, "v3", "v1"])] == [
        ("m3", "v1"), ("m4", "v2")]
    with pytest.raises(ValueError, match="possible interferers"):
        draw_mixtures(["a", "b"], 2, {"a": "x", "b": "x"})
    with pytest.raises(ValueError, match="num_spk"):
        draw_mixtures(["a", "b"], 1)


def test_read_order(tmp_path):
    assert read_order(tmp_path, ["b", "a"]) == ["a", "b"]  # no csv_order: the sorted keys
    (tmp_path / "csv_order").write_text("b\n-\nz\na\n")
    assert read_order(tmp_path, ["a", "b", "c"]) == ["b", None, None, "a"]  # z: listed, not extracted
    (tmp_path / "csv_order").write_text("b c\n")
    with pytest.raises(ValueError, match="csv_order:1: expected one utterance id"):
        read_order(tmp_path, ["b"])


# --- python local/make_mixtures.py ---


def _clip_dir(tmp_path: Path, name="clips", keys=None, labels=("a", "a", "b", "b", "c"),
              seconds=(1.0, 1.5, 2.0, 1.0, 1.2), seed=0) -> Path:
    src = tmp_path / name
    src.mkdir()
    rng = np.random.default_rng(seed)
    keys = keys or [f"u{i}" for i in range(len(labels))]
    wav, lab, q = [], [], []
    for i, (key, label, sec) in enumerate(zip(keys, labels, seconds)):
        audio = rng.uniform(-0.5, 0.5, int(sec * FS)).astype(np.float32)
        soundfile.write(src / f"{key}.wav", audio, FS, subtype="FLOAT")
        np.save(src / f"{key}.npy", np.full(3, i, dtype=np.float32))
        wav.append(f"{key} {src / f'{key}.wav'}\n")
        lab.append(f"{key} {label}\n")
        q.append(f"{key} {src / f'{key}.npy'}\n")
    (src / "wav.scp").write_text("".join(wav))
    (src / "utt2label").write_text("".join(lab))
    (src / "image.scp").write_text("".join(q))
    return src


def _read(path):
    return soundfile.read(path, dtype="float32")[0]


def _centre(path, length):
    full = _read(path)
    start = min(max(len(full) // 2 - length // 2, 0), len(full) - length)
    return full[start : start + length]


def test_cli_writes_consistent_mixture_dir(tmp_path):
    src = _clip_dir(tmp_path)
    out = tmp_path / "mix"
    assert main(["--source_dir", str(src), "--output_dir", str(out), "--segment", str(FS),
                 "--query", f"query={src / 'image.scp'}", "--query", f"text_query={src / 'image.scp'}"]) == 0
    wav = read_table(out / "wav.scp")
    sources = read_table(out / "mix2sources")
    # No csv_order: the sorted keys u0..u4 are the list; pairs as by hand (j = 3, 1, 0, 1, 1).
    assert {tuple(v.split()) for v in sources.values()} == {
        ("u0", "u4"), ("u1", "u2"), ("u2", "u0"), ("u3", "u1"), ("u4", "u1")}
    labels = read_table(src / "utt2label")
    for key, path in wav.items():
        s1, s2 = sources[key].split()
        assert key == f"{s1}__{s2}"
        mix = _read(path)
        r1, r2 = _read(read_table(out / "spk1.scp")[key]), _read(read_table(out / "spk2.scp")[key])
        assert len(mix) == len(r1) == len(r2) == int(read_table(out / "utt2num_samples")[key]) <= FS
        np.testing.assert_allclose(mix, r1 + r2, atol=1e-7)
        # The sources are the clips' centre crops at half gain.
        np.testing.assert_allclose(r1, _centre(src / f"{s1}.wav", len(mix)) / 2, atol=1e-7)
        np.testing.assert_allclose(r2, _centre(src / f"{s2}.wav", len(mix)) / 2, atol=1e-7)
        assert read_table(out / "query1.scp")[key] == read_table(src / "image.scp")[s1]
        assert read_table(out / "text_query2.scp")[key] == read_table(src / "image.scp")[s2]
        assert read_table(out / "utt2label")[key] == labels[s1]
    assert not list(out.rglob("*.tmp*"))

    # Our label rule (today's mini sets): u1 (a) may not draw u0 (a).
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "mix2"), "--distinct_labels", "true"]) == 0
    pairs = [v.split() for v in read_table(tmp_path / "mix2" / "mix2sources").values()]
    assert all(labels[a] != labels[b] for a, b in pairs)


def test_cli_interferer_pool_follows_csv_orders(tmp_path):
    targets = _clip_dir(tmp_path, "targets", keys=["m0", "m1", "m2", "m3", "m4"])
    (targets / "csv_order").write_text("".join(f"{k}\n" for k in TARGETS))
    pool = _clip_dir(tmp_path, "pool", keys=["v0", "v1", "v2", "v3"], labels=("x",) * 4,
                     seconds=(2.0, 1.1, 0.9, 1.7), seed=1)
    (pool / "csv_order").write_text("".join(f"{k}\n" for k in POOL))
    both = tmp_path / "both.scp"  # a table covering the targets and the pool
    both.write_text((targets / "image.scp").read_text() + (pool / "image.scp").read_text())
    out = tmp_path / "plus_mix"
    assert main(["--source_dir", str(targets), "--interferer_dir", str(pool), "--output_dir", str(out),
                 "--query", f"query={targets / 'image.scp'}", "--query", f"text_query={both}"]) == 0
    sources = read_table(out / "mix2sources")
    assert sorted(tuple(v.split()) for v in sources.values()) == sorted(FROM_POOL)
    assert (out / "query1.scp").is_file() and not (out / "query2.scp").exists()  # the pool is not in image.scp
    assert read_table(out / "text_query2.scp")["m3__v1"] == str(pool / "v1.npy")
    assert read_table(out / "utt2label")["m3__v1"] == "b"  # the target's label
    for key, (s1, s2) in ((k, v.split()) for k, v in sources.items()):
        mix = _read(read_table(out / "wav.scp")[key])
        r1, r2 = _read(read_table(out / "spk1.scp")[key]), _read(read_table(out / "spk2.scp")[key])
        np.testing.assert_allclose(mix, r1 + r2, atol=1e-7)
        np.testing.assert_allclose(r2, _centre(pool / f"{s2}.wav", len(mix)) / 2, atol=1e-7)

    # Three sources: two interferers (two randint draws), averaged into spk2 as the reference does.
    out3 = tmp_path / "plus3_mix"
    assert main(["--source_dir", str(targets), "--interferer_dir", str(pool), "--output_dir", str(out3),
                 "--num_spk", "3", "--query", f"text_query={both}"]) == 0
    assert sorted(p.name for p in (out3 / "wav").iterdir()) == ["mix", "spk1", "spk2"]
    assert not (out3 / "text_query2.scp").exists()
    sources = read_table(out3 / "mix2sources")
    for i, target in enumerate(TARGETS):
        rng = random.Random(i)
        drawn = [POOL[rng.randint(0, 3)] for _ in range(2)]
        key = "__".join([target, *drawn])
        assert sources[key] == " ".join([target, *drawn])
        mix = _read(read_table(out3 / "wav.scp")[key])
        r2 = _read(read_table(out3 / "spk2.scp")[key])
        expected = (_centre(pool / f"{drawn[0]}.wav", len(mix)) + _centre(pool / f"{drawn[1]}.wav", len(mix))) / 4
        np.testing.assert_allclose(r2, expected, atol=1e-7)


def test_cli_errors_are_one_line(tmp_path, capsys):
    src = _clip_dir(tmp_path)
    (tmp_path / "short.scp").write_text(f"u0 {src / 'u0.npy'}\n")
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"),
                 "--query", f"query={tmp_path / 'short.scp'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "short.scp: no entry for 4 clips" in err[0]
    assert not (tmp_path / "m" / "wav.scp").exists()
    assert main(["--source_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "m")]) == 2
    assert "wav.scp: file not found" in capsys.readouterr().err
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"), "--query", "bad"]) == 2
    assert "expected NAME=SCP" in capsys.readouterr().err
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"),
                 "--interferer_dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mixtures: error: {tmp_path / 'nope' / 'wav.scp'}: file not found"]
    assert main(["--source_dir", str(src), "--output_dir", str(tmp_path / "m"), "--num_spk", "1"]) == 2
    assert "--num_spk must be >= 2" in capsys.readouterr().err
