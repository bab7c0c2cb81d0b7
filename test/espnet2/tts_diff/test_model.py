from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from espnet2.tts_diff.model import CLIPSonic
from espnet2.tts_diff.samplers import SAMPLERS

TINY_DIR = Path(__file__).resolve().parents[3] / "egs2" / "clipsep" / "tts1" / "conf" / "tiny"

N_MELS, DIM, SEG = 16, 8, 12
UNET = dict(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_levels=[1], num_heads=2)
VOCODER = dict(
    in_channels=N_MELS,
    channels=16,
    upsample_scales=[4, 2],
    upsample_kernel_sizes=[8, 4],
    resblock_kernel_sizes=[3],
    resblock_dilations=[[1, 3]],
)


def _model(seed: int = 0, **kw) -> CLIPSonic:
    torch.manual_seed(seed)
    conf = dict(spk_embed_dim=DIM, unet_conf=UNET, num_train_steps=1000, segment_frames=SEG, steps=4)
    return CLIPSonic(idim=5, odim=N_MELS, **{**conf, **kw})


def _batch(seed: int = 0, batch: int = 3, frames: int = 20):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        text=torch.randint(1, 5, (batch, 2), generator=gen),
        text_lengths=torch.full((batch,), 2),
        feats=torch.randn(batch, frames, N_MELS, generator=gen),
        feats_lengths=torch.tensor([frames, frames - 9, 5][:batch]),
        spembs=torch.randn(batch, DIM, generator=gen),
    )


def _loss(model, batch, seed: int = 123) -> torch.Tensor:
    torch.manual_seed(seed)
    return model(**batch)[0]


# ---------------------------------------------------------------------------------------------------------
# Training
def test_forward_backward():
    model = _model().train()
    loss, stats, weight = model(**_batch())
    assert loss.shape == (1,) and torch.isfinite(loss).all()  # ESPnet gatherable form
    assert set(stats) == {"loss", "cond_dropped"} and int(weight) == 3
    loss.backward()
    assert float(model.unet.conv_in.weight.grad.abs().sum()) > 0


def test_gradients_reach_every_parameter_including_null_embedding():
    model = _model().train()
    for p in (1.0, 0.0):  # dropped: the null embedding is used; kept: the CLIP vector is
        model.cond_drop_prob = p
        model(**_batch())[0].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert missing == []


def test_cond_dropout_one_ignores_spembs():
    model = _model(cond_drop_prob=1.0).train()
    a, b = _batch(), _batch()
    b["spembs"] = torch.randn_like(a["spembs"]) * 3
    assert torch.equal(_loss(model, a), _loss(model, b))
    assert float(model(**a)[1]["cond_dropped"]) == 1.0
    model.cond_drop_prob = 0.0
    assert not torch.equal(_loss(model, a), _loss(model, b))


def test_null_embedding_is_the_dropped_condition():
    model = _model(cond_drop_prob=1.0).train()
    with torch.no_grad():
        model.null_cond /= model.null_cond.norm()  # unit norm: unchanged by the L2 normalisation of spembs
    batch = _batch()
    dropped = _loss(model, batch)
    model.cond_drop_prob = 0.0
    batch["spembs"] = model.null_cond.detach().expand(3, DIM).clone()
    torch.testing.assert_close(_loss(model, batch), dropped)


def test_spembs_are_l2_normalised():
    model = _model(cond_drop_prob=0.0).train()
    a = _batch()
    b = dict(a, spembs=a["spembs"] * 7.5)
    torch.testing.assert_close(_loss(model, a), _loss(model, b))


def test_loss_ignores_frames_beyond_lengths():
    model = _model(cond_drop_prob=0.0).train()
    a = _batch()
    b = {k: v.clone() for k, v in a.items()}
    for i, n in enumerate(a["feats_lengths"].tolist()):
        b["feats"][i, n:] = 1e3
    assert torch.equal(_loss(model, a), _loss(model, b))


def test_crop_is_a_window_of_valid_frames():
    model = _model(segment_frames=6)
    feats = torch.arange(2 * 10, dtype=torch.float32).view(2, 10, 1).expand(2, 10, N_MELS).clone()
    lengths = torch.tensor([10, 4])
    torch.manual_seed(0)
    for _ in range(20):
        x0, mask, centres = model._crop(feats, lengths)
        assert x0.shape == (2, 1, N_MELS, 6) and mask.shape == (2, 1, 1, 6)
        row = x0[0, 0, 0]
        assert torch.equal(row, row[0] + torch.arange(6.0)) and 0 <= int(row[0]) <= 4  # contiguous, inside
        torch.testing.assert_close(x0[1, 0, 0], torch.tensor([10.0, 11, 12, 13, 0, 0]))  # short: padded
        assert mask[0].flatten().tolist() == [1.0] * 6 and mask[1].flatten().tolist() == [1, 1, 1, 1, 0, 0]
        # the centre of the valid frames in seconds: frame t sits at sample t * 512 of 16 kHz audio
        start = float(row[0])
        torch.testing.assert_close(centres, torch.tensor([(start + 2.5) * 0.032, 1.5 * 0.032]))


def test_per_frame_spembs_pick_a_random_nonzero_row():
    model = _model()
    stack = torch.zeros(2, 4, DIM)
    stack[0, 0], stack[0, 2] = torch.randn(DIM), torch.randn(DIM)
    stack[1, 1] = torch.randn(DIM) * 4
    rows0, rows1 = F.normalize(stack[0], dim=-1), F.normalize(stack[1], dim=-1)
    picked = set()
    torch.manual_seed(0)
    for _ in range(30):
        cond = model._condition(stack, training=True)
        torch.testing.assert_close(cond[1], rows1[1])
        match = [j for j in (0, 2) if torch.allclose(cond[0], rows0[j])]
        assert len(match) == 1
        picked.add(match[0])
    assert picked == {0, 2}
    mean = model._condition(stack, training=False)
    torch.testing.assert_close(mean[0], F.normalize(stack[0, 0] + stack[0, 2], dim=-1))
    model.train()
    loss = model(**dict(_batch(batch=2), spembs=stack))[0]
    assert torch.isfinite(loss)


def _stack(batch: int, frames: int, seed: int = 0, text: bool = False) -> torch.Tensor:
    """``(B, frames, D)`` random rows (``text``: one more row 0, the 'text embedding'), all distinct."""
    return torch.randn(batch, frames + int(text), DIM, generator=torch.Generator().manual_seed(seed))


def test_aligned_frame_is_the_one_at_the_crop_centre():
    """frame_rate 1: frame i is the picture at second i; each crop gets the frame nearest its centre."""
    # mel frames of 0.5 s (hop 8000 at 16 kHz): a 6-frame crop starting at frame s is centred on (2s + 5) / 4 s
    model = _model(segment_frames=6, frame_rate=1.0, hop_length=8000)
    feats = torch.arange(20, dtype=torch.float32).view(1, 20, 1).expand(3, 20, N_MELS).clone()
    lengths = torch.tensor([20, 20, 9])  # the last: 4.5 s, frames 0..4 of 7 stacked rows (2 rows padding)
    stack = _stack(3, 7)
    stack[2, 5:] = 0.0
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        x0, _, centres = model._crop(feats, lengths)
        cond = model._condition(stack, training=True, centres=centres)
        for b in range(3):
            start = int(x0[b, 0, 0, 0])
            last = min(start + 6, int(lengths[b])) - 1
            frame = min(round((start + last) / 2 * 0.5), 6 if b < 2 else 4)  # nearest picture, inside the clip
            torch.testing.assert_close(cond[b], F.normalize(stack[b, frame], dim=0))
            seen.add(frame)
    assert len(seen) >= 4  # the crops move, and the frame with them
    # The training step conditions on exactly that frame: the same loss as with those frames given as vectors.
    model.cond_drop_prob = 0.0
    batch = dict(_batch(batch=3, frames=20), feats=feats, feats_lengths=lengths, spembs=stack)
    torch.manual_seed(5)
    x0, _, centres = model._crop(feats, lengths)
    picked = model._condition(stack, training=True, centres=centres)
    model.train()
    torch.testing.assert_close(_loss(model, batch, seed=5), _loss(model, dict(batch, spembs=picked), seed=5))
    # without frame_rate: a random frame of the clip, wherever the crop is
    free = _model(segment_frames=6)
    torch.manual_seed(0)
    rows = {int(torch.nonzero((free._condition(stack[:1], True, torch.tensor([0.0])) -
                               F.normalize(stack[0], dim=-1)).abs().sum(-1) < 1e-6)) for _ in range(40)}  # fmt: skip
    assert len(rows) > 3


def test_text_system_uses_the_label_text_embedding():
    """CLIPSynth-Text (the tiny config's text_cond_prob): every example is conditioned on its row 0, the text."""
    p = yaml.safe_load((TINY_DIR / "train_clipsynth_text.yaml").read_text())["tts_conf"]["text_cond_prob"]
    assert p == 1.0
    model = _model(text_cond_prob=p, frame_rate=1.0)
    stack = _stack(4, 3, text=True)
    for training in (True, False):  # validation and sampling too: the text row
        cond = model._condition(stack, training=training, centres=torch.zeros(4))
        torch.testing.assert_close(cond, F.normalize(stack[:, 0], dim=-1))
    # the frames never matter: other frames, the same loss; the same as the text vectors alone
    model.cond_drop_prob = 0.0
    model.train()
    batch = dict(_batch(batch=4), feats_lengths=torch.tensor([20, 11, 5, 20]), spembs=stack)
    other = stack.clone()
    other[:, 1:] = torch.randn(4, 3, DIM)
    loss = _loss(model, batch)
    assert torch.equal(loss, _loss(model, dict(batch, spembs=other)))
    torch.testing.assert_close(loss, _loss(model, dict(batch, spembs=stack[:, 0])))
    image = _model(frame_rate=1.0).train()  # the image system on the same frames differs
    image.cond_drop_prob = 0.0
    assert not torch.allclose(loss, _loss(image, dict(batch, spembs=stack[:, 1:])))


def test_hybrid_mixes_text_and_image_at_the_configured_rate():
    """CLIPSynth-Hybrid (the tiny config's text_cond_prob, 0.5): per example, the text row with that
    probability, else the frame at the crop's centre; over 4,000 draws the rate is within 4 standard errors."""
    p = yaml.safe_load((TINY_DIR / "train_clipsynth_hybrid.yaml").read_text())["tts_conf"]["text_cond_prob"]
    assert p == 0.5
    for prob in (p, 0.2):
        model = _model(text_cond_prob=prob, frame_rate=1.0)
        stack = _stack(40, 5, seed=1, text=True)
        centres = torch.arange(40.0) % 5  # example b: the frame at second b mod 5 (row 1 + b mod 5)
        text, frame = F.normalize(stack[:, 0], dim=-1), F.normalize(stack[torch.arange(40), 1 + torch.arange(40) % 5], dim=-1)
        torch.manual_seed(0)
        hits, draws = 0, 100
        for _ in range(draws):
            cond = model._condition(stack, training=True, centres=centres)
            is_text = (cond - text).abs().sum(-1) < 1e-5
            is_frame = (cond - frame).abs().sum(-1) < 1e-5
            assert bool((is_text ^ is_frame).all())  # one or the other, never a blend
            hits += int(is_text.sum())
        n = draws * 40
        assert abs(hits / n - prob) < 4 * (prob * (1 - prob) / n) ** 0.5, (prob, hits / n)
    torch.testing.assert_close(model._condition(stack, training=False), text)  # queried with text
    with pytest.raises(ValueError, match="row 0"):  # vectors cannot be mixed
        model.train()(**dict(_batch(), spembs=torch.randn(3, DIM)))
    empty = _stack(3, 2, text=True)
    empty[1, 0] = 0.0
    with pytest.raises(ValueError, match="row 0"):
        model._condition(empty, training=True)
    for bad in (dict(text_cond_prob=1.5), dict(text_cond_prob=-0.1), dict(frame_rate=0.0), dict(hop_length=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _model(**bad)


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="spembs"):
        model(**dict(_batch(), spembs=None))
    with pytest.raises(ValueError, match="spembs"):
        model(**dict(_batch(), spembs=torch.randn(3, DIM + 1)))
    with pytest.raises(ValueError, match="all-zero"):
        model(**dict(_batch(), spembs=torch.zeros(3, 2, DIM)))
    with pytest.raises(ValueError, match="sampler"):
        _model(sampler="euler")
    with pytest.raises(ValueError, match="cond_drop_prob"):
        _model(cond_drop_prob=1.5)
    with pytest.raises(ValueError, match="cond_dim"):
        _model(unet_conf=dict(UNET, cond_dim=DIM + 1))


# ---------------------------------------------------------------------------------------------------------
# Inference
def test_inference_shapes_and_attributes():
    model = _model().eval()
    assert model.spks is None and model.langs is None and model.spk_embed_dim == DIM and model.fs == 16000
    assert model.require_vocoder
    out = model.inference(torch.tensor([1, 2]), spembs=torch.randn(DIM), seed=0)
    assert set(out) == {"feat_gen"} and out["feat_gen"].shape == (SEG, N_MELS)
    assert torch.isfinite(out["feat_gen"]).all()
    out = model.inference(torch.tensor([1]), spembs=torch.randn(DIM), num_frames=21, seed=0)
    assert out["feat_gen"].shape == (21, N_MELS)
    out = model.inference(torch.tensor([1]), feats=torch.zeros(17, N_MELS), spembs=torch.randn(3, DIM), seed=0)
    assert out["feat_gen"].shape == (17, N_MELS)
    longer = _model(inference_frames=2 * SEG).eval()  # trained on SEG-frame crops, generates 2 * SEG by default
    assert longer.inference(torch.tensor([1]), spembs=torch.randn(DIM), seed=0)["feat_gen"].shape == (2 * SEG, N_MELS)
    with pytest.raises(ValueError, match="inference_frames"):
        _model(inference_frames=0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_inference_is_deterministic_under_seed(sampler):
    model = _model().eval()
    emb = torch.randn(DIM)
    a = model.inference(torch.tensor([1]), spembs=emb, sampler=sampler, steps=3, seed=7)["feat_gen"]
    b = model.inference(torch.tensor([1]), spembs=emb, sampler=sampler, steps=3, seed=7)["feat_gen"]
    c = model.inference(torch.tensor([1]), spembs=emb, sampler=sampler, steps=3, seed=8)["feat_gen"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_batched_sample_rows_are_the_single_samples_of_their_seeds(sampler):
    model = _model().eval()
    embs = torch.randn(4, DIM, generator=torch.Generator().manual_seed(1))
    batch = model.sample(embs, seeds=[10, 11, 12, 13], sampler=sampler, steps=3, num_frames=9)
    assert batch.shape == (4, 9, N_MELS) and batch.dtype == torch.float32
    for i, emb in enumerate(embs):
        alone = model.inference(torch.tensor([1]), spembs=emb, sampler=sampler, steps=3, seed=10 + i, num_frames=9)
        torch.testing.assert_close(batch[i], alone["feat_gen"], atol=1e-4, rtol=0)  # batched convolutions round apart
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # the rows are not one sample repeated
    again = model.sample(embs[[2, 0]], seeds=[12, 10], sampler=sampler, steps=3, num_frames=9)
    torch.testing.assert_close(again, batch[[2, 0]], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="3 seeds for 4 embeddings"):
        model.sample(embs, seeds=[1, 2, 3], sampler=sampler)


def test_guidance_and_condition_change_the_output():
    model = _model().eval()
    emb = torch.randn(DIM)
    run = lambda **kw: model.inference(torch.tensor([1]), **{"spembs": emb, "seed": 3, **kw})["feat_gen"]  # noqa
    base = run(guidance=1.5)
    assert not torch.allclose(base, run(guidance=0.0), atol=1e-4)
    assert not torch.allclose(base, run(spembs=-emb), atol=1e-4)
    assert torch.equal(base, run())  # the config default is 1.5


def test_embedded_vocoder_is_frozen_and_saved():
    model = _model(vocoder_conf=VOCODER)
    assert not model.require_vocoder
    assert all(not p.requires_grad for p in model.vocoder.parameters())
    assert any(k.startswith("vocoder.") for k in model.state_dict())
    model.train()
    assert model.unet.training and not model.vocoder.training
    model(**_batch())[0].backward()
    assert all(p.grad is None for p in model.vocoder.parameters())
    out = model.eval().inference(torch.tensor([1]), spembs=torch.randn(DIM), seed=0, num_frames=9)
    assert out["feat_gen"].shape == (9, N_MELS) and out["wav"].shape == (9 * 8,)
    torch.testing.assert_close(out["wav"], model.vocoder.inference(out["feat_gen"]).view(-1))


def test_ema_trails_the_weights_and_serves_validation_and_sampling():
    model = _model(ema_decay=0.9)
    assert all(not p.requires_grad for p in model.ema_unet.parameters())
    assert {"ema_null_cond", "ema_updates"} <= set(model.state_dict())
    assert any(k.startswith("ema_unet.") for k in model.state_dict())
    # Before any training step the copies equal the weights, so eval output is unchanged by the EMA.
    ref = _model()
    emb = torch.randn(DIM)
    a = model.eval().inference(torch.tensor([1]), spembs=emb, seed=0)["feat_gen"]
    assert torch.equal(a, ref.eval().inference(torch.tensor([1]), spembs=emb, seed=0)["feat_gen"])
    # Training: each forward first folds the current weights into the average, d = min(0.9, (1+n)/(10+n)).
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = [p.detach().clone() for p in model.unet.parameters()]
    for n in range(3):
        current = [p.detach().clone() for p in model.unet.parameters()]
        d = min(0.9, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * c for e, c in zip(expected, current)]
        loss = model(**_batch(seed=n))[0]
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.ema_unet.parameters())  # the average gets no gradient
        opt.step()
    assert int(model.ema_updates) == 3
    for e, x in zip(model.ema_unet.parameters(), expected):
        torch.testing.assert_close(e, x)
    assert not torch.equal(model.ema_unet.conv_in.weight, model.unet.conv_in.weight)
    # Evaluation uses the average: the eval loss and samples follow ema_unet, not unet.
    model.eval()
    with torch.no_grad():
        b = model.inference(torch.tensor([1]), spembs=emb, seed=0)["feat_gen"]
        model.ema_unet.load_state_dict(model.unet.state_dict())
        model.ema_null_cond.copy_(model.null_cond)
        c = model.inference(torch.tensor([1]), spembs=emb, seed=0)["feat_gen"]
        model.ema_unet = None  # no EMA: the raw weights
        assert torch.equal(c, model.inference(torch.tensor([1]), spembs=emb, seed=0)["feat_gen"])
    assert not torch.allclose(b, c)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay"):
            _model(ema_decay=bad)


def test_clip_x0_default_from_the_config_and_overridable():
    emb = torch.randn(DIM, generator=torch.Generator().manual_seed(5))
    free = _model().eval().inference(torch.tensor([1]), spembs=emb, seed=0, guidance=8.0)["feat_gen"]
    clipped = _model(clip_x0=0.25).eval()
    out = clipped.inference(torch.tensor([1]), spembs=emb, seed=0, guidance=8.0)["feat_gen"]
    assert float(free.abs().max()) > 0.25 and float(out.abs().max()) <= 0.25 + 1e-6
    again = clipped.inference(torch.tensor([1]), spembs=emb, seed=0, guidance=8.0, clip_x0=1e9)["feat_gen"]
    torch.testing.assert_close(again, free)
    with pytest.raises(ValueError, match="clip_x0"):
        _model(clip_x0=0.0)


# ---------------------------------------------------------------------------------------------------------
# Learning: two classes, each a fixed mel pattern tied to its own embedding
def test_training_learns_two_classes():
    """150 Adam steps: the loss falls, the model uses the right embedding, and (with strong guidance) each
    class embedding generates its own pattern."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    patterns = torch.stack([torch.linspace(-1.5, 1.5, N_MELS), torch.linspace(1.5, -1.5, N_MELS)])  # (2, F)
    embs = torch.randn(2, DIM, generator=gen)
    model = _model(seed=1, cond_drop_prob=0.1, num_train_steps=100)

    def batch(labels):
        feats = patterns[labels][:, None, :].expand(-1, SEG, -1) + 0.05 * torch.randn(len(labels), SEG, N_MELS)
        return dict(
            text=torch.ones(len(labels), 1, dtype=torch.long),
            text_lengths=torch.ones(len(labels), dtype=torch.long),
            feats=feats,
            feats_lengths=torch.full((len(labels),), SEG),
            spembs=embs[labels],
        )

    fixed = batch(torch.arange(16) % 2)
    swapped = dict(fixed, spembs=embs[1 - torch.arange(16) % 2])

    def eval_loss(b):
        model.train()
        model.cond_drop_prob, p = 0.0, model.cond_drop_prob
        with torch.no_grad():
            loss = _loss(model, b, seed=99)
        model.cond_drop_prob = p
        return float(loss)

    before = eval_loss(fixed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**batch(torch.randint(0, 2, (16,), generator=gen)))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss(fixed)
    assert after < 0.1 * before, (before, after)
    assert after < 0.95 * eval_loss(swapped)  # the condition carries the class

    model.eval()
    for k in (0, 1):
        mel = model.inference(torch.tensor([1]), spembs=embs[k], sampler="ddpm", steps=10, guidance=5.0, seed=k)
        dist = [float((mel["feat_gen"].mean(0) - patterns[j]).pow(2).mean()) for j in (0, 1)]
        assert dist[k] < 0.5 * dist[1 - k], (k, dist)
