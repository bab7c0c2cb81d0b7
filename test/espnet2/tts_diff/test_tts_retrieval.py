"""The retrieval baseline: the nearest training clip by cosine, its clip embedding, the centre crop, the entry point."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet2.tts_diff.bin import retrieve
from espnet2.tts_diff.retrieval import centre_crop, clip_embedding, nearest


def test_nearest_is_the_highest_cosine_not_the_closest_point():
    queries = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # cosines with the query (1, 0): 10/sqrt(101) = 0.995, 0.6, -0.316; with (0, 1): 0.0995, 0.8, 0.949;
    # with (1, 1)/sqrt(2): 0.774, 0.990, 0.447. Bank row 0 is far from (1, 0) in distance, nearest in angle.
    bank = np.array([[10.0, 1.0], [0.3, 0.4], [-1.0, 3.0]])
    index, cos = nearest(queries, bank)
    assert index.tolist() == [0, 2, 1]
    np.testing.assert_allclose(cos, [10 / np.sqrt(101), 3 / np.sqrt(10), 0.7 / (0.5 * np.sqrt(2))], rtol=1e-12)
    index, _ = nearest(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0], [2.0, 2.0]]))  # a tie: the first
    assert index.tolist() == [0]
    with pytest.raises(ValueError, match="share D"):
        nearest(queries, np.ones((2, 3)))
    with pytest.raises(ValueError, match="all-zero"):
        nearest(queries, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="empty bank"):
        nearest(queries, np.zeros((0, 2)))


def test_clip_embedding_is_the_mean_of_the_middle_frames():
    stack = np.arange(10, dtype=np.float32).reshape(5, 2)  # rows (0,1) (2,3) (4,5) (6,7) (8,9)
    np.testing.assert_array_equal(clip_embedding(stack), [4.0, 5.0])  # rows 1-3
    np.testing.assert_array_equal(clip_embedding(stack[:4]), [2.0, 3.0])  # 4 frames: rows 0-2
    np.testing.assert_array_equal(clip_embedding(stack, num_frames=1), [4.0, 5.0])
    np.testing.assert_array_equal(clip_embedding(np.array([1.0, 2.0])), [1.0, 2.0])
    with pytest.raises(ValueError, match="per-frame stack"):
        clip_embedding(np.zeros((2, 2, 2)))


def test_centre_crop():
    np.testing.assert_array_equal(centre_crop(np.arange(10), 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(centre_crop(np.arange(11), 5), [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(centre_crop(np.arange(3), 5), [0, 1, 2, 0, 0])  # short: zero-padded
    with pytest.raises(ValueError, match="length"):
        centre_crop(np.arange(3), 0)


@pytest.fixture
def bank(tmp_path):
    """Three training clips (distinct ramps, 1 s), their per-frame image embeddings, and four text queries."""
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    frames = {  # (F, 2): the middle 3 frames point at 0, 90 and 45 degrees
        "tr_a": [[0, 1], [1, 0], [1, 0], [1, 0], [0, 1]],
        "tr_b": [[1, 0], [0, 1], [0, 1], [0, 1], [1, 0]],
        "tr_c": [[1, 1], [1, 1], [1, 1]],
    }
    audio = {k: (i + 1) * 0.1 * np.linspace(-1, 1, 16000, dtype=np.float32) for i, k in enumerate(frames)}
    wav, emb = [], []
    for k in frames:
        sf.write(root / "train" / f"{k}.wav", audio[k], 16000, subtype="FLOAT")
        np.save(root / "train" / f"{k}.npy", np.array(frames[k], dtype=np.float32))
        wav.append(f"{k} {root / 'train' / (k + '.wav')}\n")
        emb.append(f"{k} {root / 'train' / (k + '.npy')}\n")
    (root / "bank_wav.scp").write_text("".join(wav))
    (root / "bank.scp").write_text("".join(emb))
    queries = {"q0_violin": [2, 0.1], "q1_violin": [0.2, 3], "q2_piano": [1, 1.2], "q3_piano": [1, -0.1]}
    lines = []
    for k, v in queries.items():
        np.save(root / f"{k}.npy", np.array(v, dtype=np.float32))
        lines.append(f"{k} {root / (k + '.npy')}\n")
    (root / "text.scp").write_text("".join(lines))
    (root / "utt2label").write_text("".join(f"{k} {k.split('_')[1]}\n" for k in queries))
    return root, audio


def test_retrieve_writes_the_nearest_clips_cropped_like_generated_ones(bank, tmp_path):
    root, audio = bank
    config = tmp_path / "config.yaml"  # a generator's: 10 frames of 512 samples
    config.write_text(yaml.safe_dump(dict(feats_extract_conf=dict(hop_length=512, fs=16000),
                                          tts_conf=dict(inference_frames=10, fs=16000))))  # fmt: skip
    out = tmp_path / "out"
    args = ["--text_scp", str(root / "text.scp"), "--bank_scp", str(root / "bank.scp"), "--bank_wav_scp",
            str(root / "bank_wav.scp"), "--utt2label", str(root / "utt2label"), "--output_dir", str(out), "--quiet"]
    assert retrieve.main(args + ["--train_config", str(config)]) == 0
    # cosine to (1, 0), (0, 1), (1, 1): q0 -> a, q1 -> b, q2 (1, 1.2) -> c, q3 -> a
    rows = [line.split("\t") for line in (out / "retrieved.tsv").read_text().splitlines()]
    assert [(q, k) for q, k, _ in rows] == [("q0_violin", "tr_a"), ("q1_violin", "tr_b"), ("q2_piano", "tr_c"),
                                            ("q3_piano", "tr_a")]  # fmt: skip
    assert float(rows[2][2]) == pytest.approx(2.2 / (np.sqrt(2) * np.sqrt(1 + 1.44)), abs=1e-6)
    scp = dict(line.split() for line in (out / "wav.scp").read_text().splitlines())
    for query, match, _ in rows:
        wav, fs = sf.read(scp[query], dtype="float32")
        expected = audio[match][8000 - 2560 : 8000 + 2560]  # 5,120 samples around the clip centre
        assert fs == 16000 and wav.shape == (5120,)
        np.testing.assert_allclose(wav, expected, atol=1 / 32768 + 1e-7)  # 16-bit PCM
    assert (out / "utt2label").read_text() == (root / "utt2label").read_text()
    report = json.loads((out / "generate.json").read_text())
    assert report["mode"] == "retrieval" and report["num_clips"] == 4 and report["bank_size"] == 3
    assert report["num_samples"] == 5120 and report["rtf"] >= 0 and "sampler" not in report
    # --max_per_class 1 and an explicit length
    assert retrieve.main(args + ["--num_samples", "100", "--max_per_class", "1"]) == 0
    assert sorted(dict(line.split() for line in (out / "wav.scp").read_text().splitlines())) == ["q0_violin", "q2_piano"]
    assert sf.info(str(out / "wav" / "q0_violin.wav")).frames == 100
    # generate_set --num_frames 3 (the recipe's gen_args): 3 frames of the config's hop
    assert retrieve.main(args + ["--train_config", str(config), "--gen_frames", "3"]) == 0
    assert sf.info(str(out / "wav" / "q3_piano.wav")).frames == 3 * 512


def test_retrieve_errors_are_one_line(bank, tmp_path, capsys):
    root, _ = bank
    (root / "bank_wav.scp").write_text((root / "bank_wav.scp").read_text().splitlines()[0] + "\n")
    args = ["--text_scp", str(root / "text.scp"), "--bank_scp", str(root / "bank.scp"), "--bank_wav_scp",
            str(root / "bank_wav.scp"), "--output_dir", str(tmp_path / "out")]
    assert retrieve.main(args + ["--num_samples", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bank_wav.scp: no audio for 2 clip(s) of " in err and err.endswith("e.g. 'tr_b'")
    assert retrieve.main(args + ["--train_config", str(tmp_path / "no.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no.yaml: file not found" in err
    assert not (tmp_path / "out" / "wav.scp").exists()
