"""python -m espnet2.enh.clipsep.bin.embed --text_encoder bert: the CLIP text scp layout with BERT's values,
resuming without loading BERT, and one-line errors (no BERT directory, no transformers, wrong options)."""

import sys

import numpy as np
import pytest

from espnet2.enh.clipsep.bin import embed


def _labels(path, texts):
    """A Kaldi-style utt2label: ``<key> <label text>`` (keys in another order than the texts)."""
    path.write_text("".join(f"utt{i:02d} {t}\n" for i, t in reversed(list(enumerate(texts)))))
    return path


def _read_scp(path):
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def _bert_args(text, out, bert_dir, *extra):
    return ["--text", str(text), "--output_dir", str(out), "--name", "text", "--text_encoder", "bert",
            "--bert_dir", str(bert_dir), "--device", "cpu", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def embedded(tiny_bert, clap_side, tmp_path_factory):
    """The command run once where transformers is importable, on the first texts, in batches of 2."""
    root = tmp_path_factory.mktemp("embed_bert")
    text = _labels(root / "utt2label", tiny_bert.texts[:5])
    cmd = [sys.executable, "-m", "espnet2.enh.clipsep.bin.embed", *_bert_args(text, root / "bert", tiny_bert.dir),
           "--batch_size", "2"]  # fmt: skip
    proc = clap_side.run(cmd, pythonpath=tiny_bert.pythonpath)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc.stderr


def test_scp_of_label_embeddings_equal_to_transformers(tiny_bert, embedded):
    root, log = embedded
    scp = _read_scp(root / "bert" / "text.scp")
    assert sorted(scp) == [f"utt{i:02d}" for i in range(5)]
    for i in range(5):
        path = scp[f"utt{i:02d}"]
        assert path == str(root / "bert" / "data" / "text" / f"utt{i:02d}.npy")  # embed's CLIP text layout
        emb = np.load(path)
        assert emb.dtype == np.float32 and emb.shape == (32,)
        np.testing.assert_allclose(emb, tiny_bert.ref[f"cls/{i}"], rtol=0, atol=2e-5)
    assert "5 items, 0 already" in log


def test_rerun_resumes_without_bert_and_more_keys_need_transformers(tiny_bert, embedded, monkeypatch, capsys):
    root, _ = embedded
    out = root / "bert"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "data" / "text").iterdir()}
    monkeypatch.setitem(sys.modules, "transformers", None)  # as in the main environment
    text = _labels(root / "again", tiny_bert.texts[:5])
    assert embed.main(_bert_args(text, out, tiny_bert.dir)) == 0  # all done: BERT is never loaded
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data" / "text").iterdir()} == stamps
    capsys.readouterr()
    more = _labels(root / "more", tiny_bert.texts[:6])
    assert embed.main(_bert_args(more, out, tiny_bert.dir)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("embed: error: BERT query embeddings need transformers")
    assert "clap-pythonpath" in err
    assert len(_read_scp(out / "text.scp")) == 5


def test_clip_embeddings_are_refused_in_a_bert_scp(tiny_bert, embedded, capsys):
    root, _ = embedded
    more = _labels(root / "more_clip", tiny_bert.texts[:6])
    args = ["--text", str(more), "--output_dir", str(root / "bert"), "--name", "text", "--clip_model", "clipsep-tiny",
            "--clip_pretrained", "none", "--device", "cpu"]  # fmt: skip
    assert embed.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "text.scp holds 32-d embeddings (e.g. utt00) but this encoder gives 64-d" in err


def test_no_bert_directory_is_one_line_naming_it_and_the_download(tmp_path, capsys):
    text = _labels(tmp_path / "utt2label", ["dog barking"])
    missing = tmp_path / "downloads" / "bert-base-uncased"
    assert embed.main(_bert_args(text, tmp_path / "out", missing)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"embed: error: {missing}: BERT model directory not found; download bert-base-uncased")
    assert not (tmp_path / "out" / "text.scp").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text_encoder", "bert"], "needs --text and --bert_dir"),
        (["--bert_dir", "x"], "--bert_dir goes with --text_encoder bert"),
    ],
)
def test_option_errors(tmp_path, capsys, extra, message):
    text = _labels(tmp_path / "utt2label", ["dog barking"])
    assert embed.main(["--text", str(text), "--output_dir", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bert_embeds_text_only(tmp_path, capsys):
    frames = tmp_path / "frames"
    (frames / "clip1").mkdir(parents=True)
    args = ["--frames_dir", str(frames), "--output_dir", str(tmp_path / "out"), "--text_encoder", "bert",
            "--bert_dir", str(tmp_path)]  # fmt: skip
    assert embed.main(args) == 2
    assert "needs --text and --bert_dir" in capsys.readouterr().err
