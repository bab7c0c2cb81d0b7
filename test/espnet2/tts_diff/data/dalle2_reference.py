"""Reference outputs of dalle2-pytorch 1.1.0's diffusion prior on tiny random weights (run by test_dalle2_prior.py).

Runs in a subprocess whose PYTHONPATH holds the dalle2-pytorch install of tools/install.sh
(.venv/dalle2-pythonpath). Only the module dalle2_pytorch.dalle2_pytorch is imported, without the package's
__init__ (which imports the trainer and needs accelerate). The text side is the reference's OpenAIClipAdapter
wrapped around a tiny random open_clip model (the same module names as OpenAI's CLIP: ln_final, encode_text),
since OpenAI's `clip` package and ViT-L/14 weights are not available here.

Writes into OUT_DIR: prior.pth (the DiffusionPrior's state dict, clip.* keys included, as LAION's release),
prior_config.json (a TrainDiffusionPriorConfig-style config), clip.pt (the tiny CLIP's weights) and
reference.pt (inputs and outputs: network forward, DDIM and DDPM sampling loops for seeded global noise, the
guidance-scale check, the text conditions and sample() of two texts).

Usage: python dalle2_reference.py DALLE2_DIR CLIP_CONFIG_JSON OUT_DIR
"""

import json
import sys
import types
from pathlib import Path

import torch

dalle2_dir, clip_config, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
package = types.ModuleType("dalle2_pytorch")
package.__path__ = [str(dalle2_dir / "dalle2_pytorch")]
sys.modules["dalle2_pytorch"] = package

import open_clip  # noqa: E402
from dalle2_pytorch import dalle2_pytorch as d2  # noqa: E402

from dalle2_pytorch.version import __version__  # noqa: E402

assert __version__ == "1.1.0", __version__
torch.set_num_threads(1)
T, STEPS, DIM = 100, 8, 64
NET = dict(dim=DIM, depth=2, num_timesteps=T, max_text_len=77, num_time_embeds=1, num_image_embeds=1,
           num_text_embeds=1, dim_head=48, heads=2, ff_mult=2, norm_in=True, norm_out=True, attn_dropout=0.05,
           ff_dropout=0.05, final_proj=True, normformer=True, rotary_emb=True)
PRIOR = dict(image_embed_dim=DIM, image_size=224, timesteps=T, sample_timesteps=STEPS, cond_drop_prob=0.1,
             loss_type="l2", predict_x_start=True, beta_schedule="cosine", condition_on_text_encodings=True)

# a tiny random CLIP in the reference's OpenAIClipAdapter (its __init__ would call clip.load)
open_clip.add_model_config(clip_config)
torch.manual_seed(0)
clip_model = open_clip.create_model(clip_config.stem, pretrained=None).eval()
torch.save(clip_model.state_dict(), out / "clip.pt")
adapter = d2.OpenAIClipAdapter.__new__(d2.OpenAIClipAdapter)
d2.BaseClipAdapter.__init__(adapter, clip_model)
adapter.eos_id, adapter.cleared = 49407, False
adapter.handle = adapter.find_layer("ln_final").register_forward_hook(adapter._hook)

torch.manual_seed(1)
prior = d2.DiffusionPrior(net=d2.DiffusionPriorNetwork(**NET), clip=adapter, **PRIOR)
with torch.no_grad():  # move every weight off its initial value (layer norm gains are ones, ...)
    for p in prior.net.parameters():
        p.add_(0.2 * torch.randn_like(p))
    # 1.1.0 adds the relative position bias to logits it then multiplies by 128 (its overflow trick): a bias of
    # N(0, 1) init would fix every attention on one key, and the outputs would not depend on the inputs.
    bias = prior.net.causal_transformer.rel_pos_bias.relative_attention_bias.weight
    bias.copy_(0.005 * torch.randn_like(bias))
prior.eval()
torch.save(prior.state_dict(), out / "prior.pth")
(out / "prior_config.json").write_text(json.dumps({"prior": {"clip": {"make": "openai", "model": "ViT-L/14"},
                                                             "net": NET, **PRIOR}}, indent=1))

ref = {}
g = torch.Generator().manual_seed(2)
x = torch.randn(3, DIM, generator=g) * DIM**0.5
t = torch.tensor([0, 37, T - 1])
text_embed = torch.nn.functional.normalize(torch.randn(3, DIM, generator=g), dim=-1)
enc = torch.randn(3, 77, DIM, generator=g)
for i, n in enumerate((5, 77, 0)):  # 5 tokens, all 77, none (all learned padding)
    enc[i, n:] = 0.0
ref.update(x=x, t=t, text_embed=text_embed, text_encodings=enc)
with torch.no_grad():
    ref["forward"] = prior.net(x, t, text_embed=text_embed, text_encodings=enc)
    ref["forward_no_encodings"] = prior.net(x, t, text_embed=text_embed)
    cond = dict(text_embed=text_embed, text_encodings=enc)
    torch.manual_seed(123)
    ref["ddim"] = prior.p_sample_loop((3, DIM), cond, timesteps=STEPS)
    torch.manual_seed(123)
    ref["ddim_cond_scale_3"] = prior.p_sample_loop((3, DIM), cond, timesteps=STEPS, cond_scale=3.0)
    torch.manual_seed(7)
    ref["ddpm"] = prior.p_sample_loop((3, DIM), cond, timesteps=T)

texts = ["a dog barking", "someone playing the violin on a stage"]
tokens = open_clip.get_tokenizer(clip_config.stem)(texts)
ref.update(texts=texts, tokens=tokens)
ref["text_embed_of_tokens"], ref["text_encodings_of_tokens"] = adapter.embed_text(tokens)
torch.manual_seed(11)
ref["sample"] = prior.sample(tokens, num_samples_per_batch=2, cond_scale=1.0)  # sample_timesteps: DDIM-8
torch.save(ref, out / "reference.pt")
print("ok", {k: tuple(v.shape) for k, v in ref.items() if isinstance(v, torch.Tensor)})
