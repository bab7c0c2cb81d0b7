"""Run in a subprocess that sees transformers (not a test module: conftest.py starts it).

Writes a tiny random BERT into DIR the way a download of bert-base-uncased looks: a ``BertForPreTraining``
checkpoint (``bert.`` parameters and the pre-training heads) as config.json + model.safetensors, and the
uncased WordPiece tokenizer's vocab.txt, tokenizer.json, tokenizer_config.json. Then a copy of it that lacks one
encoder parameter into BROKEN_DIR, and into OUT_NPZ, for each text of TEXTS_JSON computed here directly with
transformers (one text per forward pass, so no padding; not with espnet2.enh.clipsep.bert): the final hidden
state of [CLS] (``cls/<i>``), the pooler output (``pooler/<i>``), the mean over tokens (``mean/<i>``), and the
token ids (``ids/<i>``).

Usage: python tiny_bert.py DIR BROKEN_DIR TEXTS_JSON OUT_NPZ
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForPreTraining, BertTokenizer

torch.set_num_threads(1)
out, broken, texts_json, result = (Path(a) for a in sys.argv[1:5])
out.mkdir(parents=True, exist_ok=True)
words = "a the of photo small many dog dogs barking cat violin playing sound people sobbing engine".split()
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ing", "##ed"]
(out / "vocab.txt").write_text("\n".join(vocab) + "\n")
tokenizer = BertTokenizer(str(out / "vocab.txt"), do_lower_case=True, model_max_length=40)
tokenizer.save_pretrained(out)
torch.manual_seed(0)
config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=37, max_position_embeddings=40,
                    initializer_range=0.3)  # fmt: skip  (BERT's 0.02 leaves [CLS] near its input: texts ~alike)
BertForPreTraining(config).save_pretrained(out)

shutil.copytree(out, broken)
weights = load_file(broken / "model.safetensors")
del weights["bert.encoder.layer.1.output.dense.weight"]
save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})

model = BertForPreTraining.from_pretrained(out, local_files_only=True, use_kernels=False).bert.eval()
tokenizer = BertTokenizer.from_pretrained(out, local_files_only=True)
arrays = {}
with torch.no_grad():
    for i, text in enumerate(json.loads(texts_json.read_text())):
        tokens = tokenizer([text], return_tensors="pt")
        output = model(**tokens)
        arrays[f"cls/{i}"] = output.last_hidden_state[0, 0].numpy()
        arrays[f"pooler/{i}"] = output.pooler_output[0].numpy()
        arrays[f"mean/{i}"] = output.last_hidden_state[0].mean(dim=0).numpy()
        arrays[f"ids/{i}"] = tokens["input_ids"][0].numpy()
np.savez(result, **arrays)
