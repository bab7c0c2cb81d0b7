"""Run in a subprocess that sees transformers. Writes a tiny random CLAP model into DIR the way a download of laion/clap-htsat-unfused looks (config.json + model.safetensors, the tokenizer's files, preprocessor_config.json; 48 kHz feature extractor, unfused HTSAT with rand_trunc), then the cosines of the clips of WAV_SCP with each text list, computed here directly with transformers (not with espnet2.tts_diff.clap), into OUT_JSON.

Usage: python tiny_clap.py DIR WAV_SCP TEXTS_JSON OUT_JSON
"""

import json, string, sys
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

torch.set_num_threads(1)
out, wav_scp, texts_json, result = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
for c in list(string.ascii_lowercase) + ["\u0120"]:  # byte-level BPE: "\u0120" is the space
    vocab[c] = len(vocab)
tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
torch.manual_seed(0)
config = ClapConfig(
    text_config=dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128, projection_dim=16),
    audio_config=dict(window_size=4, num_mel_bins=64, spec_size=64, patch_size=2, patch_stride=2, hidden_size=32,
                      patch_embeds_hidden_size=16, projection_dim=16, depths=[2, 2], num_attention_heads=[2, 2],
                      num_hidden_layers=2, enable_fusion=False),
    projection_dim=16,
)
ClapModel(config).save_pretrained(out)
extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=960, max_length_s=1,
                                 fft_window_size=1024, truncation="rand_trunc", padding="repeatpad")
extractor.save_pretrained(out)
tokenizer.save_pretrained(out)

model = ClapModel.from_pretrained(out, local_files_only=True, use_kernels=False).eval()
processor = ClapProcessor.from_pretrained(out, local_files_only=True)
clips = []
for line in wav_scp.read_text().splitlines():
    wav, fs = sf.read(line.split(maxsplit=1)[1], dtype="float32")
    clips.append(torchaudio.functional.resample(torch.from_numpy(wav), fs, 48000).numpy())
with torch.no_grad():
    feats = processor.feature_extractor(clips, sampling_rate=48000, return_tensors="pt")
    audio = model.get_audio_features(input_features=feats["input_features"]).pooler_output
    cosines = {}
    for name, texts in json.loads(texts_json.read_text()).items():
        tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
        cosines[name] = torch.nn.functional.cosine_similarity(audio.double(), text.double(), dim=1).tolist()
result.write_text(json.dumps(cosines))
