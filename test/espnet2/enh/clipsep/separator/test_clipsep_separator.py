from typing import Dict

import pytest
import torch
import torchvision

from espnet2.enh.clipsep.checkpoint_converter import convert_reference_state_dict, reference_key_shapes
from espnet2.enh.clipsep.separator.clipsep_separator import CLIPSepSeparator
from espnet2.enh.clipsep.separator.freq_warp import log_freq_unwarp

INPUT_DIM = 129
TINY = dict(warp_bins=32, unet_layers=3, unet_channels=4, num_masks=8, query_dim=16)
NUM_LABELS = 5
# name -> constructor kwargs on top of TINY
VARIANTS = {
    "clip": dict(query_type="clip"),
    "label": dict(query_type="label", num_labels=NUM_LABELS),
    "none": dict(query_type="none"),
    "nit": dict(query_type="clip", num_noise_heads=2),
}


def _separator(variant: str = "clip", seed: int = 0, **kwargs) -> CLIPSepSeparator:
    torch.manual_seed(seed)
    return CLIPSepSeparator(INPUT_DIM, **{**TINY, **VARIANTS[variant], **kwargs})


def _mixture(batch: int = 2, frames: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, frames, INPUT_DIM)
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))


def _queries(variant: str, num: int, batch: int = 2, seed: int = 1) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if variant == "none":
        return {}
    if variant == "label":
        return {f"query{n}": torch.randint(0, NUM_LABELS, (batch,), generator=gen) for n in range(1, num + 1)}
    return {f"query{n}": torch.randn(batch, TINY["query_dim"], generator=gen) for n in range(1, num + 1)}


def _randomize(sep: CLIPSepSeparator, seed: int = 3) -> CLIPSepSeparator:
    """Replace the reference's tiny initial weights so that masks differ visibly across bins and queries."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sep.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p[0].numel()) ** 0.5)
    return sep


# ---------------------------------------------------------------------------------------------------------
# Output contract
@pytest.mark.parametrize(
    "variant, num_queries, num_outputs",
    [
        ("clip", 1, 1),
        ("clip", 2, 2),
        ("clip", 3, 3),
        ("label", 1, 1),
        ("label", 2, 2),
        ("none", 0, 2),
        ("nit", 2, 2),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_outputs_follow_queries(variant, num_queries, num_outputs, training):
    sep = _separator(variant)
    sep.train(training)
    x = _mixture(frames=16)
    ilens = torch.tensor([16, 12])
    masked, olens, others = sep(x, ilens, _queries(variant, num_queries))
    assert isinstance(masked, list) and len(masked) == num_outputs
    assert torch.equal(olens, ilens)
    for n, y in enumerate(masked, 1):
        assert torch.is_complex(y) and y.shape == x.shape
        mask = others[f"mask_spk{n}"]
        assert mask.shape == (2, 16, TINY["warp_bins"])
        assert mask.min() >= 0 and mask.max() <= 1
        # The output is the mixture times the un-warped soft mask.
        torch.testing.assert_close(y, x * log_freq_unwarp(mask, INPUT_DIM))
    assert f"mask_spk{num_outputs + 1}" not in others
    if variant == "nit":
        for j in (1, 2):
            assert others[f"mask_nit{j}"].shape == (2, 16, TINY["warp_bins"])
            assert 0 <= others[f"mask_nit{j}"].min() and others[f"mask_nit{j}"].max() <= 1
        assert "mask_nit3" not in others
        assert not any(k.startswith("nit") for k in others)
    else:
        assert not any("nit" in k for k in others)


def test_nit_return_noise_gives_signals():
    sep = _separator("nit", return_noise=True).eval()
    x = _mixture()
    _, _, others = sep(x, torch.tensor([16, 16]), _queries("nit", 2))
    for j in (1, 2):
        sig = others[f"nit{j}"]
        assert torch.is_complex(sig) and sig.shape == x.shape
        torch.testing.assert_close(sig, x * log_freq_unwarp(others[f"mask_nit{j}"], INPUT_DIM))


@pytest.mark.parametrize("head", [1, 2])
def test_nit_noise_head_added_back_at_inference(head):
    """Figure 6: each output's warped mask is min(1, query mask + noise head mask), then unwarped; training and
    the loss's masks are unchanged."""
    sep = _randomize(_separator("nit")).eval()
    x, q = _mixture(), _queries("nit", 2)
    plain, _, others = sep(x, torch.tensor([16, 16]), q)
    sep.add_noise_head = head
    added, _, others_added = sep(x, torch.tensor([16, 16]), q)
    for n in (1, 2):
        warped = torch.clamp(others[f"mask_spk{n}"] + others[f"mask_nit{head}"], max=1.0)
        torch.testing.assert_close(added[n - 1], x * log_freq_unwarp(warped, INPUT_DIM))
        torch.testing.assert_close(others_added[f"mask_spk{n}"], others[f"mask_spk{n}"])
    assert (log_freq_unwarp(warped, INPUT_DIM) >= log_freq_unwarp(others["mask_spk2"], INPUT_DIM) - 1e-6).all()
    assert not torch.allclose(added[0], plain[0])
    sep.train()
    trained, _, _ = sep(x, torch.tensor([16, 16]), q)
    sep.add_noise_head = 0
    torch.testing.assert_close(trained[0], sep(x, torch.tensor([16, 16]), q)[0][0])


@pytest.mark.parametrize("num_queries", [1, 3])
def test_nit_training_needs_one_query_per_noise_head(num_queries):
    sep = _separator("nit").train()
    with pytest.raises(ValueError, match="noise head"):
        sep(_mixture(), torch.tensor([16, 16]), _queries("nit", num_queries))


@pytest.mark.parametrize("num_queries", [1, 3])
def test_nit_inference_takes_any_number_of_queries(num_queries):
    # A CLIPSep-NIT model separates a single text query at inference: the noise heads never become outputs.
    sep = _randomize(_separator("nit", return_noise=True)).eval()
    x = _mixture()
    queries = _queries("nit", num_queries)
    masked, _, others = sep(x, torch.tensor([16, 16]), queries)
    assert len(masked) == num_queries
    # Query outputs do not depend on the noise heads: same as a plain CLIPSep with the same weights.
    plain = CLIPSepSeparator(INPUT_DIM, **{**TINY, **VARIANTS["clip"]}).eval()
    plain.load_state_dict({k: v for k, v in sep.state_dict().items() if not k.startswith("noise_heads.")})
    expected, _, _ = plain(x, torch.tensor([16, 16]), queries)
    for y, e in zip(masked, expected):
        torch.testing.assert_close(y, e)
    # The noise heads see the mean query logit.
    mean_logit = torch.stack(sep.query_logits(queries)).mean(dim=0)
    feats = sep.audio_features(x)
    for j, head in enumerate(sep.noise_heads, 1):
        torch.testing.assert_close(others[f"mask_nit{j}"], sep._synthesize(feats, torch.sigmoid(head(mean_logit))))
        assert others[f"nit{j}"].shape == x.shape


def test_num_spk_property():
    assert _separator("none", num_spk=3).num_spk == 3
    assert _separator("clip").num_spk == 2


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("frames", [1, 37])
def test_time_not_multiple_of_unet_stride(variant, frames):
    assert frames % 2 ** TINY["unet_layers"]
    sep = _separator(variant).eval()
    x = _mixture(frames=frames)
    masked, _, others = sep(x, torch.tensor([frames, frames]), _queries(variant, 2))
    for n, y in enumerate(masked, 1):
        assert y.shape == (2, frames, INPUT_DIM)
        assert others[f"mask_spk{n}"].shape == (2, frames, TINY["warp_bins"])
        assert torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------------------
# Gradients
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backward_reaches_all_parts(variant):
    sep = _separator(variant).train()
    x = _mixture()
    masked, _, _ = sep(x, torch.tensor([16, 14]), _queries(variant, 2))
    masked[0].abs().mean().backward()

    def grad_norm(p):
        assert p.grad is not None
        return float(p.grad.abs().sum())

    assert grad_norm(sep.unet.input_norm.weight) > 0
    assert grad_norm(sep.unet.down[0].conv.weight) > 0
    assert grad_norm(sep.unet.up[0].conv.weight) > 0
    if variant == "none":
        assert grad_norm(sep.pit_head.weight) > 0
        return
    assert grad_norm(sep.query_proj.weight) > 0
    assert grad_norm(sep.mask_scale) > 0
    assert grad_norm(sep.mask_bias) > 0
    if variant == "label":
        assert grad_norm(sep.label_embedding.weight) > 0
    if variant == "nit":
        # Output 1 does not depend on the noise heads.
        assert all(p.grad is None for p in sep.noise_heads.parameters())


# ---------------------------------------------------------------------------------------------------------
# Query semantics
def test_multi_query_is_mean_embedding():
    sep = _randomize(_separator("clip")).eval()
    x = _mixture()
    gen = torch.Generator().manual_seed(5)
    stack = torch.randn(2, 3, TINY["query_dim"], generator=gen)
    multi, _, others_multi = sep(x, torch.tensor([16, 16]), {"query1": stack})
    single, _, others_single = sep(x, torch.tensor([16, 16]), {"query1": stack.mean(dim=1)})
    torch.testing.assert_close(others_multi["mask_spk1"], others_single["mask_spk1"])
    torch.testing.assert_close(multi[0], single[0])
    # ... and differs from using only one of the stacked queries.
    first, _, _ = sep(x, torch.tensor([16, 16]), {"query1": stack[:, 0]})
    assert not torch.allclose(first[0], multi[0])


def test_different_queries_give_different_masks():
    sep = _randomize(_separator("clip")).eval()
    _, _, others = sep(_mixture(), torch.tensor([16, 16]), _queries("clip", 2))
    assert (others["mask_spk1"] - others["mask_spk2"]).abs().max() > 1e-3


def test_label_query_accepts_b_and_b1_ids_and_matches_embedding():
    sep = _randomize(_separator("label")).eval()
    x = _mixture()
    ids = torch.tensor([3, 0])
    a, _, _ = sep(x, torch.tensor([16, 16]), {"query1": ids})
    b, _, _ = sep(x, torch.tensor([16, 16]), {"query1": ids.view(2, 1).float()})
    torch.testing.assert_close(a[0], b[0])
    # A label query is the clip path with the learned embedding as the query vector.
    logits = sep.query_logits({"query1": ids})[0]
    torch.testing.assert_close(logits, sep.query_proj(sep.label_embedding.weight[ids]))


# ---------------------------------------------------------------------------------------------------------
# Inference options
def _soft_reference(sep, x, q):
    """Soft eval-mode output and linear masks with the separator's options temporarily reset."""
    mask_type, remove = sep.mask_type, sep.remove
    sep.mask_type, sep.remove = "soft", False
    try:
        with torch.no_grad():
            masked, _, others = sep(x, torch.tensor([x.shape[1]] * x.shape[0]), q)
    finally:
        sep.mask_type, sep.remove = mask_type, remove
    return masked, others


def test_binary_mask_at_eval():
    sep = _randomize(_separator("clip")).eval()
    x = _mixture()
    q = _queries("clip", 2)
    soft, others = _soft_reference(sep, x, q)
    linear = log_freq_unwarp(others["mask_spk1"], INPUT_DIM)
    # A threshold inside the range of the soft mask, so both 0 and 1 occur.
    sep.mask_type = "binary"
    sep.mask_threshold = float(linear.median())
    with torch.no_grad():
        out, _, others_bin = sep(x, torch.tensor([16, 16]), q)
    ratio = out[0].abs() / x.abs()
    values = set(torch.unique(ratio).tolist())
    assert values == {0.0, 1.0}
    torch.testing.assert_close(out[0], x * (linear > sep.mask_threshold).float())
    # The loss still sees the soft masks.
    torch.testing.assert_close(others_bin["mask_spk1"], others["mask_spk1"])


def test_remove_at_eval():
    sep = _randomize(_separator("clip", remove=True)).eval()
    x = _mixture()
    q = _queries("clip", 2)
    soft, _ = _soft_reference(sep, x, q)
    out, _, _ = sep(x, torch.tensor([16, 16]), q)
    for n in range(2):
        torch.testing.assert_close(out[n], x - soft[n])
        assert not torch.allclose(out[n], soft[n])


def test_binary_remove_at_eval_is_complement_of_binary():
    sep = _randomize(_separator("clip", mask_type="binary", remove=True)).eval()
    x = _mixture()
    q = _queries("clip", 1)
    _, others = _soft_reference(sep, x, q)
    out, _, _ = sep(x, torch.tensor([16, 16]), q)
    keep = (log_freq_unwarp(others["mask_spk1"], INPUT_DIM) > sep.mask_threshold).float()
    torch.testing.assert_close(out[0], x * (1.0 - keep))


def test_binary_and_remove_not_applied_in_training():
    x = _mixture()
    q = _queries("clip", 2)
    plain = _randomize(_separator("clip")).train()
    opts = _randomize(_separator("clip", mask_type="binary", remove=True)).train()
    ref, _, _ = plain(x, torch.tensor([16, 16]), q)
    out, _, others = opts(x, torch.tensor([16, 16]), q)
    for n in range(2):
        torch.testing.assert_close(out[n], ref[n])
        torch.testing.assert_close(out[n], x * log_freq_unwarp(others[f"mask_spk{n + 1}"], INPUT_DIM))
        ratio = (out[n].abs() / x.abs()).flatten()
        assert ((ratio > 1e-3) & (ratio < 1 - 1e-3)).any()  # soft values, not 0/1


# ---------------------------------------------------------------------------------------------------------
# Errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(query_type="text"), "query_type"),
        (dict(mask_type="ratio"), "mask_type"),
        (dict(query_type="label", num_labels=0), "num_labels"),
        (dict(query_type="none", num_noise_heads=2), "noise heads"),
        (dict(num_noise_heads=3), "num_noise_heads"),
        (dict(num_noise_heads=1), "num_noise_heads"),
        (dict(warp_bins=36), "divisible"),
        (dict(num_spk=0), "num_spk"),
        (dict(num_noise_heads=2, add_noise_head=3), "add_noise_head"),
        (dict(add_noise_head=1), "add_noise_head"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLIPSepSeparator(INPUT_DIM, **{**TINY, **kwargs})


@pytest.mark.parametrize("variant", ["clip", "label", "nit"])
def test_missing_queries(variant):
    sep = _separator(variant)
    for additional in (None, {}, {"query2": torch.zeros(2, TINY["query_dim"])}):
        with pytest.raises(ValueError, match="query1"):
            sep(_mixture(), torch.tensor([16, 16]), additional)


def test_pit_ignores_queries():
    sep = _separator("none").eval()
    x = _mixture()
    a, _, _ = sep(x, torch.tensor([16, 16]))
    b, _, _ = sep(x, torch.tensor([16, 16]), _queries("clip", 3))
    assert len(b) == 2
    torch.testing.assert_close(a[0], b[0])


@pytest.mark.parametrize("bad", [-1, NUM_LABELS])
def test_label_out_of_range(bad):
    sep = _separator("label")
    with pytest.raises(ValueError, match="out of range"):
        sep(_mixture(), torch.tensor([16, 16]), {"query1": torch.tensor([0, bad])})


@pytest.mark.parametrize(
    "shape", [(2, TINY["query_dim"] + 1), (2, 3, TINY["query_dim"] - 1), (2,), (2, 1, 1, TINY["query_dim"])]
)
def test_wrong_query_shape(shape):
    sep = _separator("clip")
    with pytest.raises(ValueError, match="query1"):
        sep(_mixture(), torch.tensor([16, 16]), {"query1": torch.randn(*shape)})


def test_multichannel_input_rejected():
    sep = _separator("clip")
    x = torch.complex(torch.randn(2, 16, 2, INPUT_DIM), torch.randn(2, 16, 2, INPUT_DIM))
    with pytest.raises(ValueError, match="single-channel"):
        sep(x, torch.tensor([16, 16]), _queries("clip", 1))


# ---------------------------------------------------------------------------------------------------------
# Paper size
def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_nit():
    torch.manual_seed(0)
    return CLIPSepSeparator(513, num_noise_heads=2)


def test_paper_size_parameter_counts(paper_nit):
    torch.manual_seed(0)
    assert _num_params(CLIPSepSeparator(513)) == 30_290_659
    assert _num_params(paper_nit) == 30_292_771
    assert _num_params(paper_nit.unet) == 30_274_210


def test_load_converted_reference_checkpoint(paper_nit):
    gen = torch.Generator().manual_seed(0)
    reference = {}
    for key, shape in reference_key_shapes(2).items():
        if key.endswith("num_batches_tracked"):
            reference["module." + key] = torch.tensor(7, dtype=torch.long)
        else:
            reference["module." + key] = torch.rand(shape, generator=gen) + 0.5  # positive: valid BN vars
    converted = convert_reference_state_dict(reference)
    result = paper_nit.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(paper_nit.mask_scale, reference["module.synth_net.scale"])
    assert torch.equal(paper_nit.query_proj.weight, reference["module.frame_net.weight"])
    assert torch.equal(paper_nit.noise_heads[1].bias, reference["module.pit_nets.1.bias"])
    assert torch.equal(paper_nit.unet.input_norm.running_var, reference["module.sound_net.bn0.running_var"])
    # Every parameter and buffer was overwritten by a reference tensor.
    assert len(converted) == len(paper_nit.state_dict())


def test_text_query_prob_needs_embedding_queries():
    with pytest.raises(ValueError, match="text_query_prob needs embedding queries"):
        CLIPSepSeparator(129, query_type="label", num_labels=3, text_query_prob=0.5, unet_layers=3, warp_bins=32)


# ---------------------------------------------------------------------------------------------------------
# SOP (query_type: frames): raw frames through the jointly trained image network
IMAGE_NET = dict(width=8, image_size=32)


def _sop(seed: int = 0, **kwargs) -> CLIPSepSeparator:
    torch.manual_seed(seed)
    conf = {**TINY, "query_type": "frames", "image_net_conf": dict(IMAGE_NET), **kwargs}
    conf.pop("query_dim")
    return CLIPSepSeparator(INPUT_DIM, **conf)


def _frame_queries(num: int = 2, batch: int = 2, frames: int = 3, size: int = 32, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return {
        f"query{n}": torch.randint(0, 256, (batch, frames, size, size, 3), generator=gen, dtype=torch.uint8)
        for n in range(1, num + 1)
    }


@pytest.mark.parametrize("num_queries", [1, 2, 3])
def test_sop_masks_use_the_clip_formula_with_the_image_query(num_queries):
    """q = sigmoid(max over frames and space of the image network's maps); mask = sigmoid(sum_k s_k q_k U_k + b)."""
    sep = _randomize(_sop()).eval()
    x, queries = _mixture(), _frame_queries(num_queries)
    masked, _, others = sep(x, torch.tensor([16, 16]), queries)
    assert len(masked) == num_queries
    feats = sep.audio_features(x)
    for n in range(1, num_queries + 1):
        q = sep.image_net(queries[f"query{n}"]).detach()
        assert float(q.min()) > 0 and float(q.max()) < 1
        expected = torch.sigmoid(torch.einsum("bk,bkft->btf", q * sep.mask_scale, feats) + sep.mask_bias)
        torch.testing.assert_close(others[f"mask_spk{n}"], expected)
        torch.testing.assert_close(masked[n - 1], x * log_freq_unwarp(expected, INPUT_DIM))
    if num_queries > 1:
        assert (others["mask_spk1"] - others["mask_spk2"]).abs().max() > 1e-3


def test_sop_trains_end_to_end():
    sep = _sop().train()
    x = _mixture()
    masked, _, others = sep(x, torch.tensor([16, 14]), _frame_queries())
    assert set(others) == {"mask_spk1", "mask_spk2"}
    (masked[0].abs().mean() + masked[1].abs().mean()).backward()
    image_params = dict(sep.image_net.named_parameters())
    assert image_params and all(p.requires_grad for p in image_params.values())
    assert set(image_params.values()) <= set(sep.parameters())  # trained jointly: the optimiser sees them
    for name in ("trunk.conv1.weight", "trunk.layer4.1.conv2.weight", "fc.weight", "fc.bias"):
        assert float(image_params[name].grad.abs().sum()) > 0, name
    for p in (sep.unet.down[0].conv.weight, sep.mask_scale, sep.mask_bias):
        assert float(p.grad.abs().sum()) > 0
    assert not hasattr(sep, "query_proj")


def test_sop_query_forms():
    sep = _randomize(_sop()).eval()
    x = _mixture()
    queries = _frame_queries(2, frames=1)
    ref, _, _ = sep(x, torch.tensor([16, 16]), queries)
    single, _, _ = sep(x, torch.tensor([16, 16]), {k: v[:, 0] for k, v in queries.items()})  # (B, H, W, 3)
    floats, _, _ = sep(x, torch.tensor([16, 16]), {k: v.float() for k, v in queries.items()})
    for a, b, c in zip(ref, single, floats):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    # Sources with different frame counts go through the network one by one, with the same result.
    mixed = {"query1": _frame_queries(1, frames=3)["query1"], "query2": queries["query2"]}
    out, _, others = sep(x, torch.tensor([16, 16]), mixed)
    torch.testing.assert_close(out[1], ref[1])
    alone, _, _ = sep(x, torch.tensor([16, 16]), {"query1": mixed["query1"]})
    torch.testing.assert_close(out[0], alone[0])


def test_sop_image_network_keeps_its_own_init_and_imagenet_weights(tmp_path):
    sep = _sop()
    # The reference's N(0, 0.001) init is for the audio side; the image network keeps torchvision's.
    assert float(sep.unet.down[0].conv.weight.detach().std()) < 0.002
    assert float(sep.image_net.trunk.conv1.weight.detach().std()) > 0.05
    assert torch.equal(sep.image_net.trunk.bn1.weight, torch.ones(8))
    torch.manual_seed(5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    loaded = _sop(image_net_conf=dict(width=64, image_size=32, pretrained=str(tmp_path / "resnet18.pth")))
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(loaded.image_net.trunk.state_dict()[key], state[key]), key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_noise_heads=2), "not part of SOP"),
        (dict(image_net_conf=dict(num_channels=4)), "num_channels is num_masks"),
        (dict(image_net_conf=dict(pool="median")), "pool"),
        (dict(text_query_prob=0.5), "text_query_prob"),
    ],
)
def test_sop_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sop(**kwargs)


def test_image_net_conf_needs_frames_queries():
    with pytest.raises(ValueError, match="image_net_conf .* needs query_type 'frames'"):
        CLIPSepSeparator(INPUT_DIM, **TINY, image_net_conf=dict(IMAGE_NET))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32, 4), (2, 32, 32), (2, 1, 3, 32, 32, 3)])
def test_sop_wrong_frames_shape(shape):
    with pytest.raises(ValueError, match="query1: expected frames"):
        _sop()(_mixture(), torch.tensor([16, 16]), {"query1": torch.zeros(shape, dtype=torch.uint8)})


def test_sop_paper_size_parameter_count():
    torch.manual_seed(0)
    sep = CLIPSepSeparator(513, query_type="frames")
    trunk = sum(p.numel() for n, p in torchvision.models.resnet18(weights=None).named_parameters() if "fc." not in n)
    assert _num_params(sep.image_net) == trunk + (512 * 32 * 9 + 32) == 11_324_000
    assert _num_params(sep) == 30_274_210 + 11_324_000 + 33  # U-Net + image network + mask scale and bias
