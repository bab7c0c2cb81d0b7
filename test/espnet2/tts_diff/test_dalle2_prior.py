"""LAION's DALL·E 2 prior (dalle2_prior.py) against its reference, dalle2-pytorch 1.1.0, on tiny random weights.

The reference is not in the main environment: tools/install.sh keeps it in a directory of its own
(``.venv/dalle2-pythonpath``; or ``ESPNET_CLIPSEP_DALLE2_PYTHONPATH``), and data/dalle2_reference.py runs it in a
subprocess with that directory on PYTHONPATH. It writes the reference prior's state dict (the released layout,
``clip.*`` keys included), a prior_config.json and the reference's outputs for seeded noise; here our loader reads
those files and must give the same outputs for the same noise.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
from espnet2.tts_diff.dalle2_prior import (
    Dalle2Prior,
    Dalle2TextEncoder,
    NoiseScheduler,
    infer_net_config,
    load_dalle2_prior,
    read_prior_config,
)

REPO = Path(__file__).resolve().parents[3]
HELPER = Path(__file__).resolve().parent / "data" / "dalle2_reference.py"
TINY_CLIP = REPO / "espnet2" / "enh" / "clipsep" / "clip" / "configs" / "clipsep-tiny.json"
ATOL = 1e-5


def dalle2_pythonpath() -> str:
    """The directory holding dalle2-pytorch 1.1.0 (fails with the install hint when missing)."""
    path = os.environ.get("ESPNET_CLIPSEP_DALLE2_PYTHONPATH")
    marker = REPO / ".venv" / "dalle2-pythonpath"
    if not path and marker.is_file():
        path = marker.read_text().strip()
    if not path or not (Path(path) / "dalle2_pytorch" / "dalle2_pytorch.py").is_file():
        pytest.fail("no dalle2-pytorch install for the prior's reference tests: run tools/install.sh "
                    "(writes .venv/dalle2-pythonpath)")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The reference's files (prior.pth, prior_config.json, clip.pt) and outputs (reference.pt)."""
    side = dalle2_pythonpath()
    out = tmp_path_factory.mktemp("dalle2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=side, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-W", "ignore", str(HELPER), side, str(TINY_CLIP), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(dir=out, **torch.load(out / "reference.pt", weights_only=True))


@pytest.fixture(scope="module")
def prior(ref):
    """Our prior from the reference's files, conditioned on the tiny CLIP the reference used."""
    p = load_dalle2_prior(ref["dir"] / "prior.pth")
    p.use_text_encoder(Dalle2TextEncoder(CLIPQueryEncoder(str(TINY_CLIP), str(ref["dir"] / "clip.pt"), device="cpu")))
    return p


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_loads_the_released_layout_and_infers_the_sizes(ref, prior):
    saved = torch.load(ref["dir"] / "prior.pth", weights_only=True)
    assert any(k.startswith("clip.") for k in saved)  # the reference embeds its CLIP; we ignore those keys
    assert set(prior.state_dict()) == {k for k in saved if not k.startswith("clip.")}
    for key, value in prior.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    net = infer_net_config(saved)
    assert net == dict(dim=64, depth=2, dim_head=48, heads=2, ff_mult=2.0, norm_in=True, norm_out=True,
                       final_proj=True, normformer=True, rotary_emb=True, num_timesteps=100, num_time_embeds=1,
                       num_image_embeds=1, num_text_embeds=1, max_text_len=77)  # fmt: skip
    assert (prior.timesteps, prior.sample_timesteps, prior.embed_dim, prior.image_embed_scale) == (100, 8, 64, 8.0)
    assert (prior.clip_model, prior.clip_pretrained) == ("ViT-L-14", "openai")  # config: openai ViT-L/14
    # our cosine schedule is the reference's, to float32 rounding
    ours = NoiseScheduler("cosine", 100)
    for name in ("alphas_cumprod", "alphas_cumprod_prev", "posterior_mean_coef1", "posterior_log_variance_clipped"):
        torch.testing.assert_close(getattr(ours, name), saved[f"noise_scheduler.{name}"], rtol=0, atol=0)


def test_network_forward_matches_the_reference(ref, prior):
    with torch.no_grad():
        out = prior(ref["x"], ref["t"], ref["text_embed"], ref["text_encodings"])
        bare = prior(ref["x"], ref["t"], ref["text_embed"])
    torch.testing.assert_close(out, ref["forward"], rtol=0, atol=ATOL)
    torch.testing.assert_close(bare, ref["forward_no_encodings"], rtol=0, atol=ATOL)
    assert (out[0] - out[1]).abs().max() > 0.1 and (out - bare).abs().max() > 0.1  # the inputs matter


def test_sampling_loops_match_the_reference_for_the_same_noise(ref, prior):
    args = (ref["text_embed"], ref["text_encodings"])
    ddim = prior.sample_loop(*args, steps=8, generator=seeded(123))  # reference: torch.manual_seed(123)
    ddpm = prior.sample_loop(*args, steps=100, generator=seeded(7))
    torch.testing.assert_close(ddim, ref["ddim"], rtol=0, atol=ATOL)
    torch.testing.assert_close(ddpm, ref["ddpm"], rtol=0, atol=ATOL)
    assert (ddim - ddpm).abs().max() > 0.1
    # the reference ignores the guidance scale (1.1.0 never applies its guidance mask): ours refuses one
    torch.testing.assert_close(ref["ddim_cond_scale_3"], ref["ddim"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="guidance 3.0: .*no unconditional branch"):
        prior.sample(*args, guidance=3.0)


def test_text_conditions_and_sample_match_the_reference(ref, prior):
    embed, encodings = prior.text_encoder.encode_tokens(ref["tokens"])
    torch.testing.assert_close(embed, ref["text_embed_of_tokens"], rtol=0, atol=ATOL)
    torch.testing.assert_close(encodings, ref["text_encodings_of_tokens"], rtol=0, atol=ATOL)
    kept = (encodings != 0).any(-1).sum(-1)
    assert kept.tolist() == [(t != 0).sum().item() for t in ref["tokens"]]  # start .. end token, zero after
    embed2, encodings2 = prior.text_encoder(ref["texts"])  # through the tokenizer
    torch.testing.assert_close(embed2, embed, rtol=0, atol=0)
    torch.testing.assert_close(encodings2, encodings, rtol=0, atol=0)
    sample = prior.sample_texts(ref["texts"], generator=seeded(11))  # 2 draws per text, DDIM-8 (sample_timesteps)
    torch.testing.assert_close(sample, ref["sample"], rtol=0, atol=ATOL)


def test_one_generator_per_text_makes_samples_independent_of_the_batch(prior):
    both = prior.sample_texts(["violin", "a barking dog"], steps=4, generator=[seeded(1), seeded(2)])
    alone = prior.sample_texts(["a barking dog"], steps=4, generator=[seeded(2)])
    torch.testing.assert_close(both[1], alone[0], rtol=0, atol=ATOL)
    again = prior.sample_texts(["violin"], steps=4, sampler="ddim", generator=[seeded(1)])
    torch.testing.assert_close(both[0], again[0], rtol=0, atol=ATOL)
    assert (both[0] - both[1]).abs().max() > 0.01


def test_trainer_checkpoints_half_precision_and_no_config(ref, tmp_path):
    saved = torch.load(ref["dir"] / "prior.pth", weights_only=True)
    noise = {k: v + 1.0 if v.is_floating_point() else v for k, v in saved.items()}
    torch.save({"model": noise, "ema_model": saved, "version": "1.1.0", "step": 3}, tmp_path / "trainer.pth")
    shutil.copy(ref["dir"] / "prior_config.json", tmp_path)
    p = load_dalle2_prior(tmp_path / "trainer.pth")  # the EMA weights, as dalle2-laion's notebook loads them
    with torch.no_grad():
        torch.testing.assert_close(p(ref["x"], ref["t"], ref["text_embed"], ref["text_encodings"]), ref["forward"],
                                   rtol=0, atol=ATOL)  # fmt: skip
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save({k: v.half() for k, v in saved.items() if not k.startswith("noise_scheduler.")}, bare / "latest.pth")
    p = load_dalle2_prior(bare / "latest.pth")  # no config: sizes from the weights, dalle2-pytorch's defaults
    assert p.net.learned_query.dtype == torch.float32 and p.timesteps == 100 and p.sample_timesteps is None
    torch.testing.assert_close(p.noise_scheduler.alphas_cumprod, saved["noise_scheduler.alphas_cumprod"], rtol=0, atol=0)


def test_config_reading():
    conf = read_prior_config({"prior": {"clip": {"make": "openai", "model": "ViT-B/32"}, "net": {"dim": 512, "depth": 6},
                                        "timesteps": 500, "beta_schedule": "linear", "loss_type": "l2"}})  # fmt: skip
    assert conf == dict(dim=512, depth=6, timesteps=500, beta_schedule="linear", clip_model="ViT-B-32",
                        clip_pretrained="openai")  # fmt: skip
    with pytest.raises(ValueError, match="CLIP make 'x-clip'"):
        read_prior_config({"prior": {"net": {}, "clip": {"make": "x-clip"}}})
    with pytest.raises(ValueError, match="predict_v is set"):
        read_prior_config({"prior": {"net": {}, "predict_v": True}})
    with pytest.raises(ValueError, match="beta_schedule: choose from"):
        Dalle2Prior(dim=8, depth=1, beta_schedule="nope")
    with pytest.raises(ValueError, match="exceed the rows of the timestep embedding"):
        Dalle2Prior(dim=8, depth=1, num_timesteps=10, timesteps=20)


def test_bad_files_and_options_give_one_line_errors(ref, prior, tmp_path):
    saved = torch.load(ref["dir"] / "prior.pth", weights_only=True)
    src = ref["dir"] / "prior.pth"

    def write(name, obj, config=None):
        d = tmp_path / name
        d.mkdir()
        torch.save(obj, d / "latest.pth")
        if config is not None:
            (d / "prior_config.json").write_text(json.dumps(config))
        return d / "latest.pth"

    conf = json.loads((ref["dir"] / "prior_config.json").read_text())
    deeper = json.loads(json.dumps(conf))
    deeper["prior"]["net"]["depth"] = 3
    newer = {("net.null_text_encodings" if k == "net.null_text_embed" else k): v for k, v in saved.items()}
    extra = dict(saved, **{"net.causal_transformer.layers.0.0.extra": torch.zeros(1)})
    cases = [
        (tmp_path / "none.pth", FileNotFoundError, "none.pth: prior file not found; download prior/latest.pth .*huggingface.co/laion/DALLE2-PyTorch"),
        (write("list", [1, 2]), ValueError, "latest.pth: expected a state dict, got list"),
        (write("ours", {"text_in.weight": torch.zeros(2, 2)}), ValueError, "not a DALL·E 2 prior of dalle2-pytorch 1.1.0 \\(no net.learned_query"),
        (write("newer", newer), ValueError, "dalle2-pytorch >= 1.9 prior"),
        (write("extra", extra), ValueError, "does not fit the dalle2-pytorch 1.1.0 prior layout .*layers.0.0.extra"),
        (write("deeper", saved, deeper), ValueError, "prior_config.json: depth = 3, but the weights in .* have 2"),
    ]  # fmt: skip
    (tmp_path / "text.pth").write_text("not a checkpoint")
    cases.append((tmp_path / "text.pth", ValueError, "text.pth: cannot read as a torch checkpoint"))
    for path, error, message in cases:
        with pytest.raises(error, match=message) as err:
            load_dalle2_prior(path)
        assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.json: prior config not found"):
        load_dalle2_prior(src, config=tmp_path / "missing.json")
    for kwargs, message in ((dict(sampler="ddpm", steps=8), "sampler ddpm with 8 steps"),
                            (dict(sampler="dpmpp"), "sampler dpmpp"), (dict(steps=101), "steps must lie in \\[1, 100\\]")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            prior.check_sampling(**kwargs)
    with pytest.raises(ValueError, match="text queries must be non-empty"):
        prior.text_encoder(["violin", " "])
