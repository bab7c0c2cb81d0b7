"""local/prepare_tts_data.py: the (text, frames) stacks of CLIPSynth-Text / -Hybrid and the valid text queries."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "tts1" / "local" / "prepare_tts_data.py"


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("_tts1_prepare_tts_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, sets, text_sets, dim=4):
    """Data dirs (wav.scp, utt2label) and relative-path embedding scps as the separation recipe writes them."""
    rng = np.random.default_rng(0)
    for name, keys in sets.items():
        d, c = root / "data" / name, root / "enh1" / "clip" / name
        d.mkdir(parents=True)
        (c / "data").mkdir(parents=True)
        (d / "wav.scp").write_text("".join(f"{k} /a/{k}.wav\n" for k in keys))
        (d / "utt2label").write_text("".join(f"{k} {k.split('_')[0]}\n" for k in keys))
        image = "image_frames" if name == "train" else "image"
        lines = []
        for i, k in enumerate(keys):
            np.save(c / "data" / f"{k}.{image}.npy", rng.standard_normal((3 + i, dim) if name == "train" else dim).astype(np.float32))
            lines.append(f"{k} clip/{name}/data/{k}.{image}.npy\n")
        (c / f"{image}.scp").write_text("".join(lines))
        if name in text_sets:
            for k in keys:
                np.save(c / "data" / f"{k}.text.npy", np.full(dim, float(len(k)), dtype=np.float32))
            (c / "text.scp").write_text("".join(f"{k} clip/{name}/data/{k}.text.npy\n" for k in keys))


def test_hybrid_stacks_hold_the_text_then_the_frames(prepare, tmp_path):
    sets = {"train": ["dog_1", "cat_22"], "valid": ["dog_3"], "test": ["cat_4"]}
    _write(tmp_path, sets, text_sets=("train", "valid", "test"))
    out = tmp_path / "raw"
    args = ["--data_dir", str(tmp_path / "data"), "--clip_dir", str(tmp_path / "enh1" / "clip"), "--base_dir",
            str(tmp_path / "enh1"), "--output_dir", str(out)]  # fmt: skip
    assert prepare.main(args) == 0
    assert not (out / "train" / "hybrid_spembs.scp").exists()  # only with --train_text_scp
    # the valid set's text queries (the text-trained systems validate on them), the test set's as before
    assert (out / "valid" / "text_spembs.scp").is_file() and (out / "test" / "text_spembs.scp").is_file()
    train_text = tmp_path / "enh1" / "clip" / "train" / "text.scp"  # its entries are relative to --base_dir
    assert prepare.main(args + ["--train_text_scp", str(train_text)]) == 0
    table = dict(line.split() for line in (out / "train" / "hybrid_spembs.scp").read_text().splitlines())
    frames = dict(line.split() for line in (out / "train" / "spembs.scp").read_text().splitlines())
    assert sorted(table) == ["cat_22", "dog_1"]
    for key, path in table.items():
        stack, image = np.load(path), np.load(frames[key])
        assert Path(path).is_absolute() and stack.dtype == np.float32 and stack.shape == (1 + len(image), 4)
        np.testing.assert_array_equal(stack[0], np.full(4, float(len(key))))  # row 0: the label text
        np.testing.assert_array_equal(stack[1:], image)  # then the frames in time order
    assert not list((out / "train" / "data" / "hybrid_spembs").glob("*.tmp*"))


def test_a_missing_text_embedding_is_one_error_line(prepare, tmp_path, capsys):
    _write(tmp_path, {"train": ["dog_1", "cat_22"], "valid": ["dog_3"], "test": ["cat_4"]}, text_sets=("test",))
    text = tmp_path / "train_text.scp"
    np.save(tmp_path / "t.npy", np.zeros(4, dtype=np.float32))
    text.write_text(f"dog_1 {tmp_path / 't.npy'}\n")
    args = ["--data_dir", str(tmp_path / "data"), "--clip_dir", str(tmp_path / "enh1" / "clip"), "--base_dir",
            str(tmp_path / "enh1"), "--output_dir", str(tmp_path / "raw"), "--train_text_scp", str(text)]  # fmt: skip
    assert prepare.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{text}: no entry for 1 clip(s), e.g. 'cat_22'" in err
    assert prepare.main(args[:-2]) == 0
    assert not (tmp_path / "raw" / "valid" / "text_spembs.scp").exists()  # valid has no text.scp: none
