from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import yaml
from espnet2.tasks.enh import EnhancementTask

from espnet2.enh.clipsep.separator.clipsep_separator import CLIPSepSeparator
from espnet2.enh.clipsep.model import CLIPSepEnhancementModel
from espnet2.enh.clipsep.task import CLIPSepTask

CONF_DIR = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "enh1" / "conf"
TINY_DIR = CONF_DIR / "tiny"
# Enhancement-task configs (a separator); the target-speaker-extraction ones (an extractor) dry-run below.
ALL_CONFIGS = sorted(p for p in CONF_DIR.rglob("*.yaml") if "separator" in yaml.safe_load(p.read_text()))
TSE_CONFIGS = sorted(p for p in CONF_DIR.rglob("*.yaml") if "extractor" in yaml.safe_load(p.read_text()))
# Configs of our CLIPSep separator (the rest run ESPnet's stock separators as baselines, e.g. TF-GridNet).
CLIPSEP_CONFIGS = [p for p in ALL_CONFIGS if yaml.safe_load(p.read_text())["separator"] == "clipsep"]
TINY_CONFIGS = [p for p in CLIPSEP_CONFIGS if p.parent == TINY_DIR]
# Enhancement-task configs with a stock ESPnet separator (not the TSE ones: they have an extractor)
STOCK_TINY_CONFIGS = sorted(set(TINY_DIR.glob("*.yaml")) & set(ALL_CONFIGS) - set(TINY_CONFIGS))

BATCH, LENGTH = 2, 4000  # 0.25 s at 16 kHz


def _args(config: Path, **separator_conf):
    args = CLIPSepTask.get_parser().parse_args(["--config", str(config)])
    if separator_conf:
        args.separator_conf = {**args.separator_conf, **separator_conf}
    return args


def _build(config: Path, seed: int = 0, **separator_conf) -> CLIPSepEnhancementModel:
    torch.manual_seed(seed)
    return CLIPSepTask.build_model(_args(config, **separator_conf))


def _query(separator: CLIPSepSeparator, gen: torch.Generator) -> torch.Tensor:
    if separator.query_type == "label":
        return torch.randint(0, separator.label_embedding.num_embeddings, (BATCH,), generator=gen)
    if separator.query_type == "frames":  # SOP: 3 frames per example, pixel values (what the preprocessor gives)
        size = separator.image_net.image_size
        return torch.randint(0, 256, (BATCH, 3, size, size, 3), generator=gen).float()
    return torch.randn(BATCH, separator.query_proj.in_features, generator=gen)


def _batch(model: CLIPSepEnhancementModel, seed: int = 0, text: bool = False) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "speech_mix": torch.randn(BATCH, LENGTH, generator=gen),
        "speech_mix_lengths": torch.tensor([LENGTH, LENGTH - 700]),
    }
    for n in (1, 2):
        batch[f"speech_ref{n}"] = torch.randn(BATCH, LENGTH, generator=gen) * 0.5
    if model.separator.query_type != "none":
        for n in (1, 2):
            batch[f"query{n}"] = _query(model.separator, gen)
            if text:
                batch[f"text_query{n}"] = _query(model.separator, gen)
    return batch


def _spy_on_separator(model, monkeypatch) -> List[Dict[str, torch.Tensor]]:
    """Record the ``additional`` dict of every separator call."""
    seen = []
    forward_masks = model.separator.forward_masks  # both the full and the masks-only path go through it

    def spy(input, additional=None):
        seen.append({k: v.detach().clone() for k, v in (additional or {}).items()})
        return forward_masks(input, additional)

    monkeypatch.setattr(model.separator, "forward_masks", spy)
    return seen


# ---------------------------------------------------------------------------------------------------------
# Task: data names and collation
def test_optional_data_names():
    for train, inference in ((True, False), (False, False), (False, True)):
        names = CLIPSepTask.optional_data_names(train=train, inference=inference)
        for n in range(1, 11):
            assert f"query{n}" in names and f"text_query{n}" in names
        assert "query11" not in names
        # ESPnet's own names are kept.
        assert "speech_ref2" in names and "noise_ref1" in names
    assert CLIPSepTask.required_data_names(train=True) == ("speech_ref1",)


def test_collate_treats_queries_as_vectors():
    collate = CLIPSepTask.build_collate_fn(_args(TINY_DIR / "train_enh_clipsep.yaml"), train=True)
    rng = np.random.default_rng(0)
    data = [
        (
            f"utt{i}",
            {
                "speech_mix": rng.standard_normal(length).astype(np.float32),
                "speech_ref1": rng.standard_normal(length).astype(np.float32),
                "query1": rng.standard_normal(64).astype(np.float32),
                "query2": rng.standard_normal((3, 64)).astype(np.float32),  # 3 frames
                "text_query1": rng.standard_normal(64).astype(np.float32),
            },
        )
        for i, length in enumerate((100, 80))
    ]
    uttids, batch = collate(data)
    assert uttids == ["utt0", "utt1"]
    assert batch["query1"].shape == (2, 64)
    assert batch["query2"].shape == (2, 3, 64)
    assert batch["text_query1"].shape == (2, 64)
    np.testing.assert_array_equal(batch["query1"][1].numpy(), data[1][1]["query1"])
    for key in ("query1", "query2", "text_query1"):
        assert f"{key}_lengths" not in batch
    # Audio stays a padded sequence with lengths.
    assert batch["speech_mix"].shape == (2, 100)
    assert batch["speech_mix_lengths"].tolist() == [100, 80]
    assert float(batch["speech_mix"][1, 80:].abs().sum()) == 0.0


def test_build_model_rejects_diffusion():
    args = _args(TINY_DIR / "train_enh_clipsep.yaml")
    args.diffusion_model = "sgmse"
    with pytest.raises(ValueError, match="diffusion"):
        CLIPSepTask.build_model(args)


# ---------------------------------------------------------------------------------------------------------
# Model: forward, loss, backward
@pytest.mark.parametrize(
    "name, stat_keys",
    [("train_enh_clipsep.yaml", {"wbce"}), ("train_enh_clipsep_nit.yaml", {"wbce", "nit_reg", "noise_act"})],
)
def test_forward_backward_from_tiny_config(name, stat_keys):
    model = _build(TINY_DIR / name)
    assert isinstance(model, CLIPSepEnhancementModel)
    assert isinstance(model.separator, CLIPSepSeparator)
    assert model.separator.warp_bins == 64 and model.num_spk == 2
    model.train()
    loss, stats, weight = model(**_batch(model))
    assert loss.numel() == 1 and torch.isfinite(loss).all()
    assert stat_keys <= set(stats)
    assert "si_snr_loss" not in stats  # only_for_test monitor is skipped in training
    assert int(weight) == BATCH
    for key in stat_keys:
        assert torch.isfinite(stats[key]).all()
    loss.sum().backward()
    sep = model.separator
    for param in (sep.unet.input_norm.weight, sep.unet.down[0].conv.weight, sep.query_proj.weight, sep.mask_scale):
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    if name.endswith("nit.yaml"):
        assert float(sep.noise_heads[0].weight.grad.abs().sum()) > 0

    model.eval()
    with torch.no_grad():
        loss, stats, _ = model(**_batch(model))
    assert torch.isfinite(loss).all() and "si_snr_loss" in stats


def test_nit_model_separates_a_single_query_at_inference():
    model = _build(TINY_DIR / "train_enh_clipsep_nit.yaml").eval()
    batch = _batch(model)
    with torch.no_grad():
        speech_pre = model.forward_enhance(
            batch["speech_mix"], batch["speech_mix_lengths"], {"query1": batch["query1"]}
        )[0]
    assert len(speech_pre) == 1 and speech_pre[0].shape == batch["speech_mix"].shape
    assert torch.isfinite(speech_pre[0]).all()


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda p: p.stem)
def test_every_tiny_config_trains_one_step(config):
    """Forward + backward for each tiny YAML: separator and criterion settings must agree (e.g. warp_bins)."""
    model = _build(config).train()
    loss, stats, _ = model(**_batch(model, text=True))
    assert torch.isfinite(loss).all() and "wbce" in stats
    loss.sum().backward()
    assert float(model.separator.unet.down[0].conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("config", STOCK_TINY_CONFIGS, ids=lambda p: p.stem)
def test_stock_separator_baseline_trains_one_step(config):
    """A stock ESPnet separator (second PIT baseline) runs in our task: queries are forwarded and ignored."""
    model = _build(config).train()
    batch = _batch_without_queries(model)
    batch["query1"] = torch.randn(BATCH, 64)
    batch["query2"] = torch.randn(BATCH, 64)
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss).all() and "si_snr_loss" in stats
    loss.sum().backward()
    grads = [p.grad for p in model.separator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def _batch_without_queries(model, seed: int = 0) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {"speech_mix": torch.randn(BATCH, LENGTH, generator=gen), "speech_mix_lengths": torch.tensor([LENGTH] * 2)}
    for n in (1, 2):
        batch[f"speech_ref{n}"] = torch.randn(BATCH, LENGTH, generator=gen) * 0.5
    return batch


def test_a_stock_baseline_is_shipped():
    assert any(yaml.safe_load(p.read_text())["separator"] == "tfgridnetv2" for p in STOCK_TINY_CONFIGS)


@pytest.mark.parametrize("config", CLIPSEP_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_criterion_warp_matches_separator(config):
    conf = yaml.safe_load(config.read_text())
    sep_bins = conf["separator_conf"].get("warp_bins", 256)
    wbce = [c for c in conf["criterions"] if c["name"] == "wbce"]
    assert wbce, "every CLIPSep config trains with the WBCE mask loss"
    for crit in wbce:
        assert (crit.get("conf") or {}).get("warp_bins", 256) == sep_bins


# ---------------------------------------------------------------------------------------------------------
# Model: queries reach the separator
def test_queries_reach_separator(monkeypatch):
    model = _build(TINY_DIR / "train_enh_clipsep.yaml").train()
    seen = _spy_on_separator(model, monkeypatch)
    batch = _batch(model)
    batch["text_query1"] = torch.zeros(BATCH, 64)  # forwarded, unused with text_query_prob 0
    batch["unrelated"] = torch.zeros(BATCH, 3)
    model(**batch)
    assert len(seen) == 1
    assert set(seen[0]) == {"query1", "query2", "text_query1"}
    for n in (1, 2):
        assert torch.equal(seen[0][f"query{n}"], batch[f"query{n}"])
    assert model._queries == {}  # per-call state is cleared


def test_text_query_prob_one_uses_text_in_training_only():
    model = _build(TINY_DIR / "train_enh_clipsep_hybrid.yaml", text_query_prob=1.0)
    sep = model.separator
    batch = _batch(model, text=True)
    sep.train()
    for n, q in enumerate(sep.select_queries(batch), 1):
        assert torch.equal(q, batch[f"text_query{n}"])
    sep.eval()
    for n, q in enumerate(sep.select_queries(batch), 1):
        assert torch.equal(q, batch[f"query{n}"])
    model.train()
    loss, _, _ = model(**batch)  # end to end through the model
    assert torch.isfinite(loss).all()


def test_text_query_prob_mixes_per_example():
    sep = _build(TINY_DIR / "train_enh_clipsep_hybrid.yaml", text_query_per="example").separator
    assert sep.text_query_prob == 0.5  # from the YAML's separator_conf
    sep.train()
    torch.manual_seed(0)
    image = torch.randn(2000, 4)
    text = torch.randn(2000, 4) + 10.0
    (picked,) = sep.select_queries({"query1": image, "text_query1": text})
    is_text = (picked == text).all(dim=1)
    is_image = (picked == image).all(dim=1)
    assert bool((is_text ^ is_image).all())  # whole rows, never mixed within an example
    assert 0.45 < float(is_text.float().mean()) < 0.55
    # (B, Q, D) stacks are swapped per example too.
    (stacked,) = sep.select_queries({"query1": image.view(2000, 2, 2), "text_query1": text.view(2000, 2, 2)})
    rows = stacked.view(2000, 4)
    assert bool(((rows == text).all(dim=1) ^ (rows == image).all(dim=1)).all())


def test_hybrid_config_draws_one_modality_per_batch():
    """CLIPSep-Hybrid as the paper trains it (Appendix C): each batch all image queries or all text queries."""
    sep = _build(TINY_DIR / "train_enh_clipsep_hybrid.yaml").separator
    assert sep.text_query_per == "batch"  # from the YAML
    sep.train()
    torch.manual_seed(0)
    image, text = torch.randn(2, 8, 4), torch.randn(2, 8, 4) + 10.0
    kinds = []
    for _ in range(1000):
        picked = sep.select_queries({"query1": image[0], "query2": image[1], "text_query1": text[0],
                                     "text_query2": text[1]})  # fmt: skip
        all_text = all(torch.equal(p, text[n]) for n, p in enumerate(picked))
        all_image = all(torch.equal(p, image[n]) for n, p in enumerate(picked))
        assert all_text != all_image  # never a mix within one batch
        kinds.append(all_text)
    assert 0.45 < sum(kinds) / len(kinds) < 0.55


def test_text_config_trains_on_text_only():
    sep = _build(TINY_DIR / "train_enh_clipsep_text.yaml").separator
    assert sep.text_query_prob == 1.0
    sep.train()
    image, text = torch.randn(8, 64), torch.randn(8, 64)
    for _ in range(20):
        assert torch.equal(sep.select_queries({"query1": image, "text_query1": text})[0], text)


def test_text_query_per_must_be_known():
    with pytest.raises(ValueError, match="text_query_per"):
        _build(TINY_DIR / "train_enh_clipsep_hybrid.yaml", text_query_per="epoch")


def test_text_query_prob_needs_text_data():
    model = _build(TINY_DIR / "train_enh_clipsep_hybrid.yaml").train()
    with pytest.raises(ValueError, match="text_query1"):
        model(**_batch(model, text=False))
    # Not needed at inference.
    model.eval()
    with torch.no_grad():
        loss, _, _ = model(**_batch(model, text=False))
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("prob", [-0.1, 1.5])
def test_text_query_prob_range(prob):
    with pytest.raises(ValueError, match="text_query_prob"):
        _build(TINY_DIR / "train_enh_clipsep.yaml", text_query_prob=prob)


# ---------------------------------------------------------------------------------------------------------
# Every shipped YAML dry-runs through the task's main
def test_configs_are_found():
    names = {f"{p.parent.name}/{p.name}" for p in ALL_CONFIGS}
    assert {"tuning/train_enh_clipsep.yaml", "tiny/train_enh_clipsep.yaml"} <= names


@pytest.mark.parametrize("task", [EnhancementTask, CLIPSepTask], ids=["stock_enh_train", "clipsep_train"])
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_dry_run(config, task, tmp_path):
    """What `python -m espnet2.bin.enh_train` (EnhancementTask.main) and our train entry do with --dry_run."""
    out = tmp_path / "exp"
    task.main(
        cmd=[
            "--config", str(config),
            "--iterator_type", "none",
            "--dry_run", "true",
            "--output_dir", str(out),
            "--use_tensorboard", "false",
            "--use_matplotlib", "false",
            "--ngpu", "0",
        ]
    )  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    source = yaml.safe_load(config.read_text())
    assert written["separator"] == source["separator"]
    assert written["preprocessor"] == source["preprocessor"] == "clipsep_mix"
    # Every *_conf section the YAML sets (separator, encoder, decoder, preprocessor, optim, scheduler, and
    # model_conf where a YAML has one; none does today) reaches config.yaml key by key with its value; ESPnet
    # may add defaults beside them.
    conf_sections = sorted(k for k in source if k.endswith("_conf"))
    assert source["separator_conf"] and source["preprocessor_conf"]  # never a vacuous comparison
    for section in conf_sections:
        for key, value in (source[section] or {}).items():
            assert written[section][key] == value, f"{section}.{key}"
    # Criterions: same order, and each one's name, wrapper, conf and wrapper_conf values.
    assert [c["name"] for c in written["criterions"]] == [c["name"] for c in source["criterions"]]
    for i, (src_crit, out_crit) in enumerate(zip(source["criterions"], written["criterions"])):
        assert out_crit["wrapper"] == src_crit["wrapper"], f"criterions[{i}].wrapper"
        for part in ("conf", "wrapper_conf"):
            for key, value in (src_crit.get(part) or {}).items():
                assert out_crit[part][key] == value, f"criterions[{i}].{part}.{key}"


@pytest.mark.parametrize("config", ["train_enh_clipsep_nit.yaml", "train_enh_clipsep.yaml", "train_enh_pit.yaml"])
def test_masks_only_training_gives_the_same_loss_and_gradients(config, monkeypatch):
    model = _build(TINY_DIR / config).train()
    assert model.masks_suffice()
    batch = _batch(model)

    def step():
        torch.manual_seed(0)
        model.zero_grad()
        loss, stats, _ = model(**batch)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    decoded = []
    decoder_forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda *a, **k: decoded.append(1) or decoder_forward(*a, **k))
    fast_loss, fast_grads = step()
    assert decoded == []  # the inverse STFT is skipped
    monkeypatch.setattr(type(model), "masks_suffice", lambda self: False)
    full_loss, full_grads = step()
    assert decoded  # the full path decodes
    assert torch.equal(fast_loss, full_loss)
    assert fast_grads.keys() == full_grads.keys() and len(fast_grads) > 0
    for name, g in fast_grads.items():
        assert torch.allclose(g, full_grads[name], rtol=0, atol=1e-7), name


def test_masks_only_path_needs_mask_losses_only():
    model = _build(TINY_DIR / "train_enh_clipsep_nit.yaml").train()
    assert model.masks_suffice()
    for wrapper in model.loss_wrappers:
        if wrapper.criterion.only_for_test:  # the SI-SNR monitor becomes a training loss: signals are needed
            wrapper.criterion._only_for_test = False
    assert not model.masks_suffice()
    batch = _batch(model)
    loss, stats, _ = model(**batch)  # the full path still trains
    assert torch.isfinite(loss).all() and "si_snr_loss" in stats


def test_tse_configs_are_found():
    assert {f"{p.parent.name}/{p.name}" for p in TSE_CONFIGS} == {"tiny/train_tse_clipsep.yaml",
                                                                  "tuning/train_tse_clipsep.yaml"}


@pytest.mark.parametrize("config", TSE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_tse_config_dry_run(config, tmp_path):
    """What `python -m espnet2.bin.enh_tse_train --dry_run true` builds: our extractor, its conf, the loss."""
    from espnet2.tasks.enh_tse import TargetSpeakerExtractionTask

    out = tmp_path / "exp"
    TargetSpeakerExtractionTask.main(cmd=[
        "--config", str(config), "--iterator_type", "none", "--dry_run", "true", "--output_dir", str(out),
        "--use_tensorboard", "false", "--use_matplotlib", "false", "--ngpu", "0",
    ])  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    source = yaml.safe_load(config.read_text())
    assert written["extractor"] == "clipsep" and written["load_spk_embedding"] and written["load_all_speakers"]
    for section in ("extractor_conf", "model_conf", "encoder_conf"):
        for key, value in source[section].items():
            assert written[section][key] == value, f"{section}.{key}"
    assert [c["name"] for c in written["criterions"]] == ["snr"]
