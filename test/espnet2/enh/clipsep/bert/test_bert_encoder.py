"""BERTQueryEncoder: the values of a tiny random BERT (in a subprocess with transformers) against transformers
computed directly; pooling, the directory checks and the missing-transformers line without it."""

import json
import sys

import numpy as np
import pytest
import torch
from typeguard import TypeCheckError

from espnet2.enh.clipsep.bert.encoder import BERTQueryEncoder, check_bert_dir, pool_hidden
from espnet2.enh.clipsep.errors import CLIPSepError

HIDDEN = 32  # hidden_size of the tiny BERT (tiny_bert.py)

# Our encoder, run where transformers is importable: every pooling over all texts in padded batches, [CLS]
# one text per batch, a template mean, nothing; and the errors of directories whose weights lack a parameter or
# are no safetensors file.
RUN_ENCODER = r"""
import json, sys
import numpy as np, torch
from espnet2.enh.clipsep.bert.encoder import BERTQueryEncoder
from espnet2.enh.clipsep.errors import CLIPSepError
torch.set_num_threads(1)
model_dir, broken, texts, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
arrays = {}
for pooling in ("cls", "pooler", "mean"):
    encoder = BERTQueryEncoder(model_dir, pooling=pooling, device="cpu", batch_size=3)
    arrays[pooling] = encoder.encode_text(texts).numpy()
enc = BERTQueryEncoder(model_dir, device="cpu", batch_size=1)
arrays["cls_alone"] = enc.encode_text(texts).numpy()
arrays["templates"] = enc.encode_text(["dogs"], templates=["{}", "a photo of many {}"]).numpy()
arrays["empty"] = enc.encode_text([]).numpy()
frozen = not any(p.requires_grad for p in enc.model.parameters())
info = {"embed_dim": enc.embed_dim, "max_length": enc.max_length, "frozen": frozen}
try:
    BERTQueryEncoder(broken, device="cpu").model
except CLIPSepError as err:
    info["broken"] = str(err)
import shutil, pathlib
corrupt = pathlib.Path(out + "_corrupt")
shutil.copytree(model_dir, corrupt)
(corrupt / "model.safetensors").write_bytes(b"not safetensors")
try:
    BERTQueryEncoder(corrupt, device="cpu").model
except CLIPSepError as err:
    info["corrupt"] = str(err)
np.savez(out + ".npz", **arrays)
json.dump(info, open(out + ".json", "w"))
"""


@pytest.fixture(scope="module")
def ours(tiny_bert, clap_side, tmp_path_factory):
    out = tmp_path_factory.mktemp("bert_ours") / "ours"
    cmd = [sys.executable, "-c", RUN_ENCODER, str(tiny_bert.dir), str(tiny_bert.broken), json.dumps(tiny_bert.texts),
           str(out)]  # fmt: skip
    proc = clap_side.run(cmd, pythonpath=tiny_bert.pythonpath)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(f"{out}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(open(f"{out}.json").read())


def _ref(tiny_bert, pooling):
    return np.stack([tiny_bert.ref[f"{pooling}/{i}"] for i in range(len(tiny_bert.texts))])


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_embeddings_equal_transformers_computed_directly(tiny_bert, ours, pooling):
    arrays, _ = ours
    got = arrays[pooling]
    assert got.dtype == np.float32 and got.shape == (len(tiny_bert.texts), HIDDEN)
    # padded batches of 3 give what one text alone gives in transformers' own BertModel
    np.testing.assert_allclose(got, _ref(tiny_bert, pooling), rtol=0, atol=2e-5)


def test_default_is_the_cls_state_and_poolings_differ(tiny_bert, ours):
    arrays, info = ours
    np.testing.assert_allclose(arrays["cls_alone"], _ref(tiny_bert, "cls"), rtol=0, atol=2e-5)
    np.testing.assert_allclose(arrays["cls_alone"], arrays["cls"], rtol=0, atol=2e-5)  # batch-independent
    for a, b in (("cls", "pooler"), ("cls", "mean"), ("pooler", "mean")):
        assert np.abs(arrays[a] - arrays[b]).max() > 0.1  # the choice matters: the test above is not vacuous
    assert info == {**info, "embed_dim": HIDDEN, "max_length": 40, "frozen": True}


def test_different_texts_give_different_vectors(tiny_bert, ours):
    emb = ours[0]["cls"]
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    off_diagonal = dist[~np.eye(len(emb), dtype=bool)]
    assert off_diagonal.min() > 0.05 * np.linalg.norm(emb, axis=1).mean()


def test_capitals_are_lower_cased_as_the_uncased_model_was_trained(tiny_bert):
    ids = tiny_bert.ref["ids/3"]  # "Cat playing the violin"
    assert ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP]
    assert 1 not in ids  # no [UNK]: "Cat" -> "cat"
    assert 1 in tiny_bert.ref["ids/4"]  # "idling" is not in the tiny vocabulary


def test_templates_average_their_prompts(tiny_bert, ours):
    i, j = tiny_bert.texts.index("dogs"), tiny_bert.texts.index("a photo of many dogs")
    expected = (tiny_bert.ref[f"cls/{i}"] + tiny_bert.ref[f"cls/{j}"]) / 2
    np.testing.assert_allclose(ours[0]["templates"][0], expected, rtol=0, atol=2e-5)
    assert ours[0]["empty"].shape == (0, HIDDEN)


def test_weights_lacking_a_parameter_or_corrupt_are_refused(tiny_bert, ours):
    msg = ours[1]["broken"]
    assert "\n" not in msg and msg.startswith(str(tiny_bert.broken))
    assert "lack 1 BERT parameters (e.g. encoder.layer.1.output.dense.weight)" in msg and "bert-base-uncased" in msg
    msg = ours[1]["corrupt"]
    assert "\n" not in msg and msg.endswith("_corrupt: not a loadable BERT model directory (SafetensorError: Error "
                                             "while deserializing header: header too large)")  # fmt: skip


# ------------------------------------------------------------------------------------------- without transformers
def test_pool_hidden_values():
    hidden = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    pooler = torch.tensor([[0.5, -0.5], [0.25, 0.75]])
    assert torch.equal(pool_hidden(hidden, mask, pooler, "cls"), torch.tensor([[0.0, 1.0], [6.0, 7.0]]))
    assert torch.equal(pool_hidden(hidden, mask, pooler, "pooler"), pooler)
    # the padded third token of the second row does not count
    assert torch.equal(pool_hidden(hidden, mask, pooler, "mean"), torch.tensor([[2.0, 3.0], [7.0, 8.0]]))
    assert pool_hidden(hidden.double(), mask, None, "cls").dtype == torch.float32
    with pytest.raises(ValueError, match="pooler_output"):
        pool_hidden(hidden, mask, None, "pooler")
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool_hidden(hidden, mask, pooler, "max")


def _fake_dir(path, **config):
    """The files of a BERT directory, not loadable (for the checks that come before loading)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, **config}))
    (path / "model.safetensors").write_bytes(b"")
    (path / "vocab.txt").write_text("[PAD]\n")
    return path


def test_missing_or_incomplete_directory_says_what_to_download(tmp_path):
    missing = tmp_path / "bert-dir"
    with pytest.raises(FileNotFoundError) as err:
        BERTQueryEncoder(missing)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{missing}: BERT model directory not found; download bert-base-uncased from the Hugging "
                          "Face hub there: hf download google-bert/bert-base-uncased ")  # fmt: skip
    assert msg.endswith(f"--local-dir {missing} (about 440 MB)")
    missing.mkdir()
    (missing / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(FileNotFoundError) as err:
        check_bert_dir(missing)
    assert f"{missing}: no model.safetensors or pytorch_model.bin, no vocab.txt or tokenizer.json in the BERT model " \
           "directory; download bert-base-uncased" in str(err.value)  # fmt: skip
    (missing / "pytorch_model.bin").write_bytes(b"")
    (missing / "tokenizer.json").write_text("{}")
    assert check_bert_dir(missing)["hidden_size"] == 8  # either weight and tokenizer file will do


def test_not_a_bert_config_is_one_line(tmp_path):
    path = _fake_dir(tmp_path / "roberta", model_type="roberta")
    with pytest.raises(CLIPSepError, match=r"config.json: model_type 'roberta', not a BERT model \('bert'\)"):
        BERTQueryEncoder(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CLIPSepError, match="config.json: unreadable"):
        BERTQueryEncoder(path)


def test_no_transformers_is_one_line_that_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as in the main environment: not importable
    enc = BERTQueryEncoder(_fake_dir(tmp_path / "bert"), device="cpu")
    assert enc.embed_dim == 8  # from config.json, without transformers
    with pytest.raises(ImportError) as err:
        enc.encode_text(["dog barking"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("BERT query embeddings need transformers, which is not importable")
    assert "tools/install.sh" in msg and "PYTHONPATH=$(cat .venv/clap-pythonpath)" in msg


def test_bad_options(tmp_path):
    path = _fake_dir(tmp_path / "bert")
    with pytest.raises(CLIPSepError, match="pooling: unknown 'max'"):
        BERTQueryEncoder(path, pooling="max")
    with pytest.raises(CLIPSepError, match="exactly one"):
        BERTQueryEncoder(path, templates=["a photo of"])
    with pytest.raises(CLIPSepError, match="batch_size"):
        BERTQueryEncoder(path, batch_size=0)
    with pytest.raises(TypeCheckError):  # a config-facing argument of the wrong type
        BERTQueryEncoder(path, batch_size="8")
