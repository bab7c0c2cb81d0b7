"""Diffusion prior (CLIPSonic-PD): training signal, cluster mapping, samplers, determinism, CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from espnet2.tts_diff.bin import train_prior as cli
from espnet2.tts_diff.prior import DiffusionPrior, fit_prior, load_prior, save_prior
from espnet2.tts_diff.samplers import SAMPLERS

D, DT, K = 8, 6, 4
TINY = dict(embed_dim=D, text_dim=DT, d_model=32, num_layers=2, num_heads=2, num_steps=200)


def clusters(n_per, seed=0):
    """K image-cluster centres (unit, D-dim) paired with K unrelated text vectors (DT-dim), plus noisy pairs."""
    g = torch.Generator().manual_seed(seed)
    img_c = F.normalize(torch.randn(K, D, generator=g), dim=1)
    txt_c = 3.0 * F.normalize(torch.randn(K, DT, generator=g), dim=1)
    y = torch.arange(K).repeat_interleave(n_per)
    img = 2.0 * (img_c[y] + 0.15 * torch.randn(len(y), D, generator=g))  # raw scale != 1, like CLIP
    txt = txt_c[y] + 0.1 * torch.randn(len(y), DT, generator=g)
    return img_c, txt_c, img, txt


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    prior = DiffusionPrior(**TINY)
    img_c, txt_c, img, txt = clusters(64)
    report = fit_prior(prior, img, txt, steps=400, batch_size=64, lr=3e-3, warmup_steps=20, progress=False)
    return prior, report, img_c, txt_c, img


def test_forward_shapes_gradients_and_errors():
    torch.manual_seed(0)
    prior = DiffusionPrior(**TINY)
    x, t, c = torch.randn(3, D), torch.tensor([0, 50, 199]), torch.randn(3, DT)
    assert prior(x, t, c).shape == (3, D) and prior.eps_model(x, t, c).shape == (3, D)
    prior.cond_drop_prob = 0.9  # make sure the null embedding is drawn in this batch
    loss = prior.loss(torch.randn(16, D), torch.randn(16, DT))
    loss.backward()
    assert loss.dim() == 0 and loss.item() > 0
    grads = {n: p.grad for n, p in prior.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["null_text"].abs().sum() > 0  # condition dropout reaches the null embedding
    assert set(prior.state_dict()) >= {"image_norm", "null_text"} and "alphas_cumprod" not in prior.state_dict()
    for bad in (dict(predict="v"), dict(cond_drop_prob=1.0), dict(d_model=30, num_heads=4)):
        with pytest.raises(ValueError):
            DiffusionPrior(**{**TINY, **bad})
    with pytest.raises(ValueError, match="sampler"):
        prior.sample(c, steps=4, sampler="euler")
    with pytest.raises(ValueError, match="text_emb"):
        prior.sample(torch.randn(2, DT + 1), steps=4)


def test_x0_prediction_is_wrapped_as_eps():
    torch.manual_seed(0)
    prior = DiffusionPrior(**{**TINY, "renorm_x0": False}).eval()
    x, t, c = torch.randn(4, D), torch.tensor([1, 20, 100, 199]), torch.randn(4, DT)
    a = prior.alphas_cumprod[t][:, None]
    eps = prior.eps_model(x, t, c)
    torch.testing.assert_close(a.sqrt() * prior(x, t, c) + (1 - a).sqrt() * eps, x, rtol=1e-4, atol=1e-4)


def test_loss_decreases_and_sampled_embeddings_land_in_their_cluster(fitted):
    prior, report, img_c, txt_c, img = fitted
    assert report["final_loss"] < 0.5 * report["initial_loss"]
    assert prior.image_norm.item() == pytest.approx(img.norm(dim=1).mean().item(), rel=1e-5)
    n = 8
    out = prior.sample(txt_c.repeat_interleave(n, 0), steps=25, sampler="ddim", generator=torch.Generator().manual_seed(1))
    assert out.shape == (K * n, D)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(K * n))
    nearest = (out @ img_c.T).argmax(dim=1)
    accuracy = (nearest == torch.arange(K).repeat_interleave(n)).float().mean().item()
    assert accuracy >= 0.9  # chance 0.25
    # the text vectors themselves live in another space: the prior is what maps them
    assert (out * img_c.repeat_interleave(n, 0)).sum(1).mean() > 0.8


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_and_guidance(fitted, sampler):
    prior, _, img_c, txt_c, _ = fitted
    for guidance in (0.0, 1.5):
        out = prior.sample(txt_c, steps=10, sampler=sampler, guidance=guidance, generator=torch.Generator().manual_seed(0))
        assert out.shape == (K, D) and torch.isfinite(out).all()
        assert ((out @ img_c.T).argmax(1) == torch.arange(K)).float().mean() >= 0.75


def test_guidance_is_the_w_form(fitted):
    """w = 0 is the text-conditional eps; w > 0 is (1 + w) eps(text) - w eps(null)."""
    prior, _, _, txt_c, _ = fitted
    x, t = torch.randn(K, D), torch.tensor([10, 60, 120, 190])
    cond = prior.eps_model(x, t, txt_c)
    null = prior.eps_model(x, t, prior.null_cond(K))
    assert torch.equal(prior.model_fn(txt_c, 0.0)(x, t), cond)
    torch.testing.assert_close(prior.model_fn(txt_c, 1.5)(x, t), 2.5 * cond - 1.5 * null, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cond, null, atol=1e-3)  # so the check above is not vacuous


def test_sampling_is_deterministic_under_a_generator(fitted):
    prior, _, _, txt_c, _ = fitted
    a = prior.sample(txt_c, steps=10, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    b = prior.sample(txt_c, steps=10, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    c = prior.sample(txt_c, steps=10, sampler="ddpm", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not prior.training


def test_save_load_round_trip(fitted, tmp_path):
    prior = fitted[0]
    save_prior(prior, TINY, tmp_path / "prior.pt", extra={"note": "x"})
    loaded = load_prior(tmp_path / "prior.pt")
    for k, v in prior.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    meta = yaml.safe_load((tmp_path / "prior.yaml").read_text())
    assert meta["prior_conf"] == TINY and meta["note"] == "x"
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"prior_conf": TINY}))
    with pytest.raises(ValueError, match="bad.pt: not a prior state dict"):
        load_prior(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_prior(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------- CLI
CLI_TINY = ["--d_model", "16", "--num_layers", "1", "--num_heads", "2", "--num_steps", "50", "--steps", "30",
            "--batch_size", "8", "--log_level", "WARNING"]


def write_scps(root, per_frame_key=True):
    _, _, img, txt = clusters(3)
    (root / "emb").mkdir(parents=True, exist_ok=True)
    img_lines, txt_lines = [], []
    for i in range(len(img)):
        arr = img[i].numpy()
        if per_frame_key and i == 0:
            arr = np.stack([arr, arr, arr])  # (num_frames, D): 3 pairs
        np.save(root / "emb" / f"i{i}.npy", arr)
        np.save(root / "emb" / f"t{i}.npy", txt[i].numpy())
        img_lines.append(f"utt{i} {root / 'emb' / f'i{i}.npy'}\n")
        txt_lines.append(f"utt{i} {root / 'emb' / f't{i}.npy'}\n")
    (root / "image.scp").write_text("".join(img_lines))
    (root / "text.scp").write_text("".join(txt_lines))
    return len(img)


def test_cli_trains_from_embedding_scps(tmp_path):
    n = write_scps(tmp_path)
    out = tmp_path / "exp" / "prior.pt"
    args = ["--image_scp", str(tmp_path / "image.scp"), "--text_scp", str(tmp_path / "text.scp"), "--output", str(out)]
    assert cli.main(args + CLI_TINY) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["num_pairs"] == n + 2 and report["steps"] == 30
    prior = load_prior(out)
    assert (prior.embed_dim, prior.text_dim, prior.num_steps) == (D, DT, 50)
    assert prior.sample(torch.randn(2, DT), steps=5).shape == (2, D)
    assert cli.main(args + CLI_TINY) == 2  # exists, no --overwrite


def test_cli_trains_from_pairs_with_clip(tmp_path):
    from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(CLIPQueryEncoder("clipsep-tiny", pretrained=None, device="cpu").model.state_dict(), ckpt)
    lines = []
    for i, (label, color) in enumerate([("dog", "red"), ("dog", "orange"), ("violin", "blue"), ("violin", "navy")]):
        Image.new("RGB", (32, 32), color).save(tmp_path / f"im{i}.png")
        lines.append(f"{tmp_path / f'im{i}.png'}\t{label}\n")
    (tmp_path / "pairs.tsv").write_text("".join(lines))
    out = tmp_path / "prior.pt"
    rc = cli.main(["--pairs", str(tmp_path / "pairs.tsv"), "--clip_model", "clipsep-tiny", "--clip_pretrained",
                   str(ckpt), "--output", str(out)] + CLI_TINY)
    assert rc == 0
    meta = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert meta["prior_conf"]["embed_dim"] == 64 and meta["clip_model"] == "clipsep-tiny"
    assert json.loads(out.with_suffix(".json").read_text())["num_pairs"] == 4


def test_cli_bad_inputs(tmp_path, capsys):
    write_scps(tmp_path, per_frame_key=False)
    out = tmp_path / "prior.pt"
    (tmp_path / "text_short.scp").write_text((tmp_path / "text.scp").read_text().split("\n", 1)[1])
    args = ["--image_scp", str(tmp_path / "image.scp"), "--output", str(out)] + CLI_TINY
    assert cli.main(args + ["--text_scp", str(tmp_path / "text_short.scp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_prior: error: ") and "text_short.scp: no text embedding for key 'utt0'" in err
    (tmp_path / "emb" / "t1.npy").unlink()
    assert cli.main(args + ["--text_scp", str(tmp_path / "text.scp")]) == 2
    assert "text.scp: utt1: cannot read" in capsys.readouterr().err
    assert cli.main(args) == 2
    assert "--text_scp goes with --image_scp" in capsys.readouterr().err
    (tmp_path / "pairs.tsv").write_text(f"{tmp_path / 'nope.png'}\tdog\n")
    assert cli.main(["--pairs", str(tmp_path / "pairs.tsv"), "--output", str(out)] + CLI_TINY) == 2
    assert "nope.png: image not found" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".yaml").exists()
