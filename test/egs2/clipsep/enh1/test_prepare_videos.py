"""Corpus listers (folder, MUSIC, VGGSound) and python local/prepare_videos.py end to end."""

import logging
import re
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

import prepare_videos
from corpora import MUSIC_INSTRUMENTS, list_folder, list_music, list_vggsound
from espnet2.enh.clipsep.files.kaldi_table import read_table

DATA_FILES = ["frames.scp", "skipped.tsv", "spk2utt", "utt2label", "utt2num_frames", "utt2num_samples",
              "utt2spk", "wav.scp"]


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- corpus listers ---


def test_folder_corpus(tmp_path):
    for rel in ["train/acoustic_guitar/a.mp4", "train/cello/b c.mp4", "train/cello/notes.txt",
                "test/cello/b c.mp4", "extra/cello/x.mp4", "noisy/speech/noisy_000.mp4"]:
        touch(tmp_path / rel)
    splits = list_folder(tmp_path)
    assert sorted(splits) == ["noisy", "test", "train"]  # no valid/ dir; extra/ is not a split
    assert [(i.uid, i.label) for i in splits["noisy"]] == [("speech-noisy_000", "speech")]  # the mini's pool
    assert splits.orders == {}  # no CSV: the mixtures use the sorted ids
    assert [(i.uid, i.label) for i in splits["train"]] == [("acoustic_guitar-a", "acoustic_guitar"),
                                                          ("cello-b_c", "cello")]
    # Another file with the same class and stem in another split gets its own uid.
    assert [i.uid for i in splits["test"]] == ["cello-b_c-2"]
    with pytest.raises(ValueError, match="no videos"):
        list_folder(tmp_path / "extra")


def test_music_split_is_deterministic_80_20_with_valid_from_train(tmp_path, caplog):
    for k in range(10):
        touch(tmp_path / "violin" / f"v{k:02d}.mp4")
        touch(tmp_path / "solo" / "acoustic_guitar" / f"g{k:02d}.mp4")
    touch(tmp_path / "piano" / "p.mp4")
    with caplog.at_level(logging.WARNING):
        splits = list_music(tmp_path, seed=1234, test_ratio=0.2, valid_ratio=0.2)
    assert "piano" in caplog.text
    assert splits == list_music(tmp_path, seed=1234, test_ratio=0.2, valid_ratio=0.2)
    assert splits != list_music(tmp_path, seed=1, test_ratio=0.2, valid_ratio=0.2)
    for instrument in ("violin", "acoustic_guitar"):
        counts = {s: sum(i.label == instrument for i in items) for s, items in splits.items()}
        assert counts == {"train": 6, "valid": 2, "test": 2}  # 80/20, then 20 % of train -> valid
    assert {i.label for items in splits.values() for i in items} == {"violin", "acoustic_guitar"}
    uids = [i.uid for items in splits.values() for i in items]
    assert len(uids) == len(set(uids)) == 20 and "acoustic_guitar-g00" in uids
    # Valid is carved from train only: with valid_ratio 0 the test split is unchanged.
    no_valid = list_music(tmp_path, seed=1234, test_ratio=0.2, valid_ratio=0.0)
    assert no_valid["test"] == splits["test"] and "valid" not in no_valid
    assert sorted(no_valid["train"]) == sorted(splits["train"] + splits["valid"])
    assert set(MUSIC_INSTRUMENTS) >= {"violin", "acoustic_guitar"} and len(MUSIC_INSTRUMENTS) == 11


def test_music_split_from_clipsep_csvs(tmp_path, caplog):
    for stem in ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC", "DDDDDDDDDDD"]:
        touch(tmp_path / "root" / "tuba" / f"{stem}.mp4")
    csvs = tmp_path / "csv"
    csvs.mkdir()
    line = "data/MUSIC/solo/audio/tuba/{0}.wav,data/MUSIC/solo/preprocessed/tuba/{0},40,tuba\n"
    (csvs / "train.csv").write_text(line.format("AAAAAAAAAAA") + line.format("BBBBBBBBBBB"))
    (csvs / "val.csv").write_text(line.format("CCCCCCCCCCC"))
    (csvs / "test.csv").write_text(line.format("ZZZZZZZZZZZ"))
    with caplog.at_level(logging.WARNING):
        splits = list_music(tmp_path / "root", splits_dir=csvs)
    assert {s: [i.uid for i in v] for s, v in splits.items()} == {
        "train": ["tuba-AAAAAAAAAAA", "tuba-BBBBBBBBBBB"], "valid": ["tuba-CCCCCCCCCCC"]}
    # Each CSV's row order (no local video for test.csv's only row: no test split, no order).
    assert splits.orders == {"train": ["tuba-AAAAAAAAAAA", "tuba-BBBBBBBBBBB"], "valid": ["tuba-CCCCCCCCCCC"]}
    assert "1 videos listed in the split CSVs are missing locally (test 1)" in caplog.text
    assert "1 local videos are in none of the split CSVs" in caplog.text


def _vggsound_csv_line(ytid, label):
    return f"data/vggsound/audio/{ytid[0]}/{ytid[1]}/{ytid}.wav,data/vggsound/preprocessed/{ytid},12,{label}\n"


def test_vggsound_splits_labels_and_missing(tmp_path, caplog):
    root = tmp_path / "video"
    for ytid in ["e2rM750cFGc", "kLyY8uCoYUQ", "Vp-ord5b7xY", "a4_rDwpDTlM", "trainAAAAAA", "trainBBBBBB"]:
        touch(root / ytid[0] / f"{ytid}_000030.mp4")
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    (splits_dir / "val.csv").write_text(_vggsound_csv_line("Vp-ord5b7xY", "playing bongo")
                                        + _vggsound_csv_line("missingAAAA", "dog barking"))
    (splits_dir / "test.csv").write_text(
        "".join(_vggsound_csv_line(i, lab) for i, lab in [
            ("e2rM750cFGc", "playing didgeridoo"), ("kLyY8uCoYUQ", "vehicle horn car horn honking"),
            ("a4_rDwpDTlM", "underwater bubbling"), ("missingBBBB", "skiing"), ("missingCCCC", "skiing")]))
    (splits_dir / "test-good.csv").write_text(_vggsound_csv_line("e2rM750cFGc", "playing didgeridoo"))
    labels_csv = tmp_path / "vggsound.csv"
    labels_csv.write_text('trainAAAAAA,30,"engine accelerating, revving, vroom",train\n'
                          "trainAAAAAA,50,other,train\n")
    with caplog.at_level(logging.WARNING):
        splits = list_vggsound(root, splits_dir, labels_csv)
    table = {s: [(i.uid, i.label) for i in v] for s, v in splits.items()}
    assert table == {
        "train": [("trainAAAAAA_000030", "engine accelerating, revving, vroom"),
                  ("trainBBBBBB_000030", "unknown")],
        "valid": [("Vp-ord5b7xY_000030", "playing bongo")],
        "test": [("a4_rDwpDTlM_000030", "underwater bubbling"), ("e2rM750cFGc_000030", "playing didgeridoo"),
                 ("kLyY8uCoYUQ_000030", "vehicle horn car horn honking")],
        "test_good": [("e2rM750cFGc_000030", "playing didgeridoo")],
    }
    assert splits["test_good"][0].path == splits["test"][1].path
    assert "3 videos listed in the split CSVs are missing locally (test 2, valid 1)" in caplog.text
    assert list_vggsound(root, splits_dir)["train"][0].label == "unknown"
    # CLIPSep pairs evaluation item i by CSV row i: the orders keep the rows, missing ones as None.
    assert splits.orders == {
        "valid": ["Vp-ord5b7xY_000030", None],
        "test": ["e2rM750cFGc_000030", "kLyY8uCoYUQ_000030", "a4_rDwpDTlM_000030", None, None],
        "test_good": ["e2rM750cFGc_000030"],
    }


def test_vggsound_sets_only_and_csv_rows_as_clipsep_counts_them(tmp_path):
    root = tmp_path / "video"
    for name in ["kLyY8uCoYUQ_000030", "kLyY8uCoYUQ_000050", "RxIBKNy1nT0_000010", "trainAAAAAA_000030"]:
        touch(root / f"{name}.mp4")
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    # A header line and a row with an empty path are rows for CLIPSep (indices 0 and 2); a one-field line is not.
    (splits_dir / "test-good-no-music.csv").write_text(
        "audio_path,frames_dir,num_frames,label\n" + _vggsound_csv_line("RxIBKNy1nT0", "golf driving")
        + ",x,12,nothing\nstray\n" + _vggsound_csv_line("kLyY8uCoYUQ", "vehicle horn car horn honking"))
    (splits_dir / "val.csv").write_text(_vggsound_csv_line("trainAAAAAA", "other"))
    splits = list_vggsound(root, splits_dir, sets=["test_good_no_music"])
    assert list(splits) == ["test_good_no_music"]  # no train split, val.csv not read
    assert [i.uid for i in splits["test_good_no_music"]] == [
        "RxIBKNy1nT0_000010", "kLyY8uCoYUQ_000030", "kLyY8uCoYUQ_000050"]
    # Two local files of one YouTube id: the row's clip is the first.
    assert splits.orders == {"test_good_no_music": [None, "RxIBKNy1nT0_000010", None, "kLyY8uCoYUQ_000030"]}
    with pytest.raises(ValueError, match="unknown VGGSound set 'test_bad'"):
        list_vggsound(root, splits_dir, sets=["test_bad"])
    with pytest.raises(FileNotFoundError, match="test-good.csv: split CSV not found"):
        list_vggsound(root, splits_dir, sets=["test_good"])


def test_vggsound_needs_splits_dir(tmp_path):
    touch(tmp_path / "e2rM750cFGc_000030.mp4")
    with pytest.raises(ValueError, match="--splits_dir.*github.com/sony/CLIPSep"):
        list_vggsound(tmp_path, None)
    with pytest.raises(FileNotFoundError, match="val.csv.*github.com/sony/CLIPSep"):
        list_vggsound(tmp_path, tmp_path)  # a folder without the CSVs


# --- CLI ---


def test_help_lists_every_option_with_defaults():
    help_text = prepare_videos.get_parser().format_help()
    for option in ["--corpus", "--root", "--output_dir", "--media_dir", "--nj", "--fs", "--fps", "--size",
                   "--seed", "--test_ratio", "--valid_ratio", "--splits_dir", "--labels_csv", "--min_duration",
                   "--max_duration", "--log_level", "--vggsound_root", "--vggsound_splits_dir", "--vggsound_sets"]:
        assert option in help_text
    text = " ".join(help_text.split())
    assert "(default: 16000)" in text and "(default: 224)" in text and "(default: 1234)" in text


def test_missing_root_is_one_clear_line(tmp_path, capsys):
    assert prepare_videos.main(["--output_dir", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "prepare_videos: error: --root is required (the directory holding the corpus videos)"]
    assert prepare_videos.main(["--root", str(tmp_path / "nope")]) == 2


def test_end_to_end_skips_counts_and_reruns_as_no_op(make_video, tmp_path, caplog):
    root = tmp_path / "corpus"
    make_video(root / "train" / "acoustic_guitar" / "good one.mp4", 3)
    make_video(root / "train" / "cello" / "portrait.mp4", 2, size="240x320")
    make_video(root / "train" / "cello" / "silent.mp4", 2, audio="silence")
    make_video(root / "train" / "cello" / "mute.mp4", 2, audio=None)
    make_video(root / "train" / "cello" / "radio.mp4", 2, video=False)
    make_video(root / "train" / "cello" / "blip.mp4", 0.5)
    (root / "train" / "cello" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    shutil.copy(root / "train" / "cello" / "portrait.mp4", touch(root / "test" / "cello" / "p.mp4"))
    out = tmp_path / "data"
    cmd = ["--root", str(root), "--output_dir", str(out), "--nj", "2"]

    caplog.set_level(logging.INFO)
    assert prepare_videos.main(cmd) == 0
    assert "train: 2 ok, skipped 1 corrupt, 1 no-audio, 1 no-frames, 1 silent, 1 too-short" in caplog.text
    assert "test: 1 ok, skipped 0 corrupt, 0 no-audio, 0 no-frames, 0 silent, 0 too-short" in caplog.text

    train = out / "train"
    assert sorted(p.name for p in train.iterdir()) == DATA_FILES
    assert not list(out.rglob("utt2category"))
    wavs = read_table(train / "wav.scp")
    assert list(wavs) == ["acoustic_guitar-good_one", "cello-portrait"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", uid) for uid in wavs)
    assert read_table(train / "utt2label") == {"acoustic_guitar-good_one": "acoustic guitar",
                                               "cello-portrait": "cello"}
    assert read_table(train / "utt2num_frames") == {"acoustic_guitar-good_one": "3", "cello-portrait": "2"}
    assert read_table(train / "utt2spk") == read_table(train / "spk2utt") == {u: u for u in wavs}
    for uid, wav in wavs.items():
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert int(read_table(train / "utt2num_samples")[uid]) == info.frames
    frames = read_table(train / "frames.scp")["cello-portrait"]
    assert sorted(p.name for p in (out / "media" / "frames" / "cello-portrait").iterdir()) == [
        "000000.jpg", "000001.jpg"] and frames.startswith(str(out.resolve()))
    skipped = dict(line.split("\t") for line in (train / "skipped.tsv").read_text().splitlines())
    assert {p.rsplit("/", 1)[1]: r for p, r in skipped.items()} == {
        "broken.mp4": "corrupt", "mute.mp4": "no-audio", "radio.mp4": "no-frames", "silent.mp4": "silent",
        "blip.mp4": "too-short"}
    assert list(read_table(out / "test" / "wav.scp")) == ["cello-p"]
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".new"))]

    # Re-running reuses every item: media untouched, data files identical.
    media = sorted(p for p in (out / "media").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in media}
    contents = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "media" not in p.parts}
    start = time.monotonic()
    assert prepare_videos.main(cmd[:-1] + ["1"]) == 0
    assert time.monotonic() - start < 10
    assert {p: p.stat().st_mtime_ns for p in media} == before
    assert {p: p.read_bytes() for p in contents} == contents
    assert "too-short (2 reused;" in caplog.text  # the second run's train summary

    # Media made with other settings are not mixed in.
    assert prepare_videos.main(cmd + ["--fs", "8000"]) == 2


def test_music_with_the_music_plus_interferers(make_video, tmp_path, capsys):
    music, vggsound = tmp_path / "MUSIC", tmp_path / "vggsound"
    for stem in ["AAAAAAAAAAA", "BBBBBBBBBBB"]:
        make_video(music / "tuba" / f"{stem}.mp4", 1.5)
    for name in ["kLyY8uCoYUQ_000030", "RxIBKNy1nT0_000010"]:
        make_video(vggsound / name[0] / f"{name}.mp4", 1.5)
    music_csvs, vgg_csvs = tmp_path / "music_csv", tmp_path / "vgg_csv"
    music_csvs.mkdir()
    vgg_csvs.mkdir()
    line = "data/MUSIC/solo/audio/tuba/{0}.wav,data/MUSIC/solo/preprocessed/tuba/{0},40,tuba\n"
    (music_csvs / "train.csv").write_text(line.format("AAAAAAAAAAA"))
    (music_csvs / "test.csv").write_text(line.format("ZZZZZZZZZZZ") + line.format("BBBBBBBBBBB"))
    (vgg_csvs / "test-good-no-music.csv").write_text(
        _vggsound_csv_line("RxIBKNy1nT0", "golf driving") + _vggsound_csv_line("missingAAAA", "skiing")
        + _vggsound_csv_line("kLyY8uCoYUQ", "vehicle horn car horn honking"))
    out = tmp_path / "data"
    cmd = ["--corpus", "music", "--root", str(music), "--output_dir", str(out), "--nj", "1",
           "--vggsound_root", str(vggsound), "--vggsound_splits_dir", str(vgg_csvs)]
    assert prepare_videos.main(cmd + ["--splits_dir", str(music_csvs)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["media", "test", "train", "vggsound_test_good_no_music"]
    assert (out / "test" / "csv_order").read_text() == "-\ntuba-BBBBBBBBBBB\n"
    pool = out / "vggsound_test_good_no_music"
    assert list(read_table(pool / "wav.scp")) == ["RxIBKNy1nT0_000010", "kLyY8uCoYUQ_000030"]
    assert (pool / "csv_order").read_text() == "RxIBKNy1nT0_000010\n-\nkLyY8uCoYUQ_000030\n"
    assert read_table(pool / "utt2label")["RxIBKNy1nT0_000010"] == "golf driving"
    assert read_table(pool / "wav.scp")["kLyY8uCoYUQ_000030"] == str(out / "media" / "audio" / "kLyY8uCoYUQ_000030.wav")

    # The seeded split has no CSV: the test dir's csv_order of the earlier run goes.
    assert prepare_videos.main(cmd + ["--test_ratio", "0.5"]) == 0
    assert list(read_table(out / "test" / "wav.scp")) and not (out / "test" / "csv_order").exists()
    assert (pool / "csv_order").is_file()

    capsys.readouterr()
    assert prepare_videos.main(cmd[:-2]) == 2
    assert capsys.readouterr().err.strip() == (
        "prepare_videos: error: --vggsound_root needs --vggsound_splits_dir (CLIPSep's clipsep/data/vggsound folder)")
