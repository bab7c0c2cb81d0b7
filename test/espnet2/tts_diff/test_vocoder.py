"""MelHiFiGAN (GAN-TTS task vocoder), its registration and YAMLs, embedding into CLIPSonic, BigVGAN checks."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet2.tts_diff.vocoder import (
    BigVGANVocoder,
    MelHiFiGAN,
    bigvgan_mismatches,
    espnet_mel_to_bigvgan,
)

REPO = Path(__file__).resolve().parents[3]
CONF = REPO / "egs2/clipsep/tts1/conf"
TINY = CONF / "tiny/train_vocoder.yaml"
HOP = 512


def _conf(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write_stats(path: Path, mean: float, std: float, n_mels: int = 64) -> Path:
    count = 100.0
    np.savez(path, count=np.array(count), sum=np.full(n_mels, mean * count),
             sum_square=np.full(n_mels, (std**2 + mean**2) * count))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocoder_assets")
    (d / "tokens.txt").write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    return dict(dir=d, tokens=d / "tokens.txt", stats=_write_stats(d / "feats_stats.npz", -3.0, 1.5),
                other_stats=_write_stats(d / "other_stats.npz", -2.0, 1.0))


def _clip(num_samples: int = 4096) -> torch.Tensor:
    t = torch.arange(num_samples) / 16000
    return (0.3 * torch.sin(2 * math.pi * 440 * t) * torch.exp(-3 * t) + 0.1 * torch.sin(2 * math.pi * 1250 * t))[None]


def _tiny_model(**overrides) -> MelHiFiGAN:
    """The tiny YAML's vocoder; GAN turns from the first step unless a test asks for the mel-only warm-up."""
    overrides.setdefault("discriminator_start_steps", 0)
    return MelHiFiGAN(idim=4, odim=64, **{**_conf(TINY)["tts_conf"], **overrides})


def _batch(speech: torch.Tensor) -> dict:
    """The batch ESPnetGANTTSModel hands to the model: fbank feats of the tiny YAML, roughly normalised."""
    from espnet2.tts.feats_extract.log_mel_fbank import LogMelFbank

    lengths = torch.full((len(speech),), speech.shape[1])
    feats, feats_lengths = LogMelFbank(**_conf(TINY)["feats_extract_conf"])(speech, lengths)
    return dict(text=torch.ones(len(speech), 2, dtype=torch.long), text_lengths=torch.full((len(speech),), 2),
                feats=(feats + 3.0) / 1.5, feats_lengths=feats_lengths, speech=speech, speech_lengths=lengths)


def _grads(module: torch.nn.Module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("generator_turn", [True, False], ids=["generator", "discriminator"])
def test_each_turn_trains_only_its_network(generator_turn):
    torch.manual_seed(0)
    model = _tiny_model(cache_generator_outputs=False)
    out = model(**_batch(_clip(6000).repeat(2, 1)), forward_generator=generator_turn)
    assert out["optim_idx"] == (0 if generator_turn else 1)
    assert out["loss"].numel() == 1 and bool(torch.isfinite(out["loss"]).all())  # (1,) from force_gatherable
    assert float(out["weight"]) == 2
    out["loss"].backward()
    trained, frozen = (model.generator, model.discriminator) if generator_turn else (model.discriminator, model.generator)
    assert all(g is not None for g in _grads(trained))
    assert sum(float(g.abs().sum()) for g in _grads(trained)) > 0
    assert all(g is None for g in _grads(frozen))
    assert all(p.requires_grad for p in model.parameters())  # the generator turn restores the discriminator


def test_cached_generator_output_is_reused_once():
    torch.manual_seed(0)
    model = _tiny_model()  # cache_generator_outputs: true in the YAML
    batch = _batch(_clip(6000))
    model(**batch, forward_generator=False)["loss"].backward()
    cached = model._cache[0]
    assert all(g is None for g in _grads(model.generator))
    out = model(**batch, forward_generator=True)
    assert model._cache is None  # consumed
    out["loss"].backward()
    assert all(g is not None for g in _grads(model.generator))
    assert cached.grad_fn is not None


def test_gan_steps_reduce_the_mel_loss_on_a_fixed_clip():
    torch.manual_seed(0)
    model = _tiny_model()
    # 4,096 samples -> 9 frames, one window of 8: the start is always 0, so the loss is comparable across steps.
    batch = _batch(_clip(4096))
    opt_g = torch.optim.AdamW(model.generator.parameters(), lr=2e-3, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(model.discriminator.parameters(), lr=2e-4, betas=(0.8, 0.99))

    def mel_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model(**batch, forward_generator=True)["stats"]["generator_mel_loss"])
        model.train()
        return value

    before = mel_loss()
    for _ in range(10):
        for generator_turn, opt in ((False, opt_d), (True, opt_g)):
            out = model(**batch, forward_generator=generator_turn)
            out["loss"].backward()
            opt.step()
            opt_g.zero_grad()
            opt_d.zero_grad()
    after = mel_loss()
    assert after < 0.75 * before, (before, after)


def test_mel_only_warmup_then_gan_turns_and_the_count_resumes():
    torch.manual_seed(0)
    model = _tiny_model(discriminator_start_steps=2)
    batch = _batch(_clip(4096))
    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    opt_d = torch.optim.AdamW(model.discriminator.parameters(), lr=1e-2)
    for step in range(2):
        assert model.warming_up
        out = model(**batch, forward_generator=False)  # the discriminator turn does nothing
        assert out["optim_idx"] == 1 and float(out["loss"].detach()) == 0.0 and model._cache is None
        out["loss"].backward()
        assert all(g is None for g in _grads(model.discriminator))
        opt_d.step()
        out = model(**batch, forward_generator=True)  # the generator turn: mel loss only
        assert out["optim_idx"] == 0
        stats = out["stats"]
        assert "generator_adv_loss" not in stats
        assert float(stats["generator_loss"]) == float(stats["generator_mel_loss"]) == float(out["loss"].detach()) > 0
        out["loss"].backward()
        assert all(g is not None for g in _grads(model.generator))
        assert all(g is None for g in _grads(model.discriminator))
        model.generator.zero_grad()
        assert int(model.generator_steps) == step + 1
    assert all(torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters()))
    assert not model.warming_up
    out = model(**batch, forward_generator=False)  # now a real discriminator turn
    out["loss"].backward()
    assert float(out["loss"].detach()) > 0 and all(g is not None for g in _grads(model.discriminator))
    out = model(**batch, forward_generator=True)
    assert "generator_adv_loss" in out["stats"] and int(model.generator_steps) == 3
    # The count is part of the checkpoint: a resumed model is past the warm-up too.
    resumed = _tiny_model(discriminator_start_steps=2)
    assert resumed.warming_up
    resumed.load_state_dict(model.state_dict(), strict=True)
    assert not resumed.warming_up and int(resumed.generator_steps) == 3
    # Evaluation (the validation ESPnet reports) never counts as warm-up and never moves the count.
    fresh = _tiny_model(discriminator_start_steps=5).eval()
    with torch.no_grad():
        out = fresh(**batch, forward_generator=True)
    assert "generator_adv_loss" in out["stats"] and int(fresh.generator_steps) == 0
    with pytest.raises(ValueError, match="discriminator_start_steps"):
        _tiny_model(discriminator_start_steps=-1)


def test_inference_vocodes_frames_times_hop():
    torch.manual_seed(0)
    model = _tiny_model().eval()
    feats = torch.randn(11, 64)
    wav = model.inference(torch.ones(2, dtype=torch.long), feats=feats)["wav"]
    assert wav.shape == (11 * HOP,)
    torch.testing.assert_close(wav, model.generator(feats.T[None]).view(-1))
    with pytest.raises(ValueError, match="pass feats"):
        model.inference(torch.ones(2, dtype=torch.long))


def test_config_errors():
    with pytest.raises(ValueError, match="in_channels"):
        MelHiFiGAN(idim=4, odim=64, generator_params={"in_channels": 80})
    with pytest.raises(ValueError, match="mono"):
        MelHiFiGAN(idim=4, odim=64, generator_params={"out_channels": 4, "channels": 8})


def test_paper_size_generator():
    conf = dict(_conf(CONF / "tuning/train_vocoder.yaml")["tts_conf"])
    conf["discriminator_params"] = _conf(TINY)["tts_conf"]["discriminator_params"]  # 70.7 M parameters: skip
    model = MelHiFiGAN(idim=4, odim=64, **conf)
    assert model.hop == HOP
    assert sum(p.numel() for p in model.generator.parameters()) == 13_911_554


def test_vocoder_yamls_use_the_generators_features():
    for size in ("tiny", "tuning"):
        gen, voc = _conf(CONF / size / "train_clipsonic.yaml"), _conf(CONF / size / "train_vocoder.yaml")
        assert (voc["feats_extract"], voc["feats_extract_conf"]) == (gen["feats_extract"], gen["feats_extract_conf"])
        assert voc["normalize"] == gen["normalize"] == "global_mvn"
        assert voc["tts_conf"]["sampling_rate"] == gen["tts_conf"]["fs"]


def _build(task, config: Path, assets, stats=None):
    args = task.get_parser().parse_args([
        "--config", str(config), "--token_list", str(assets["tokens"]), "--token_type", "char",
        "--normalize_conf", f"stats_file={stats or assets['stats']}",
    ])
    return task.build_model(args), args


def test_gan_tts_task_feeds_the_vocoder_exactly_the_generators_features(assets):
    """ESPnetGANTTSModel (vocoder) and ESPnetTTSModel (CLIPSonic) hand their models identical feats."""
    from espnet2.tasks.gan_tts import GANTTSTask

    from espnet2.tts_diff.task import TTSDiffTask

    vocoder, _ = _build(GANTTSTask, TINY, assets)
    generator, _ = _build(TTSDiffTask, CONF / "tiny/train_clipsonic.yaml", assets)
    seen = {}

    class Seen(Exception):
        pass

    def grab(name):
        def hook(module, args, kwargs):
            seen[name] = kwargs["feats"].clone()
            raise Seen  # nothing after the features is needed

        return hook

    speech = torch.randn(2, 9000)
    batch = dict(text=torch.ones(2, 3, dtype=torch.long), text_lengths=torch.tensor([3, 3]), speech=speech,
                 speech_lengths=torch.tensor([9000, 7000]))
    for name, model in (("vocoder", vocoder), ("generator", generator)):
        model.tts.register_forward_pre_hook(grab(name), with_kwargs=True)
        with pytest.raises(Seen):
            model(**batch, spembs=torch.randn(2, 64))
    assert seen["vocoder"].shape == (2, 1 + 9000 // HOP, 64)
    assert torch.equal(seen["vocoder"], seen["generator"])
    # and they are normalised with the stats file: mean -3, std 1.5 undone gives back ESPnet's log10 mel
    log10_mel, _ = vocoder.feats_extract(speech, batch["speech_lengths"])
    torch.testing.assert_close(seen["vocoder"][0], (log10_mel[0] + 3.0) / 1.5)


def _save_trained(task, config, assets, out_dir: Path, stats=None):
    """What a training run leaves: config.yaml + a state dict."""
    model, args = _build(task, config, assets, stats)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), out_dir / "model.pth")
    return model, out_dir / "config.yaml", out_dir / "model.pth"


def test_embed_vocoder_reloads_strictly_and_clipsonic_uses_it(assets, tmp_path):
    from espnet2.tasks.gan_tts import GANTTSTask

    from espnet2.tts_diff.bin.embed_vocoder import embed_vocoder, main
    from espnet2.tts_diff.task import TTSDiffTask

    torch.manual_seed(0)
    vocoder, voc_config, voc_model = _save_trained(GANTTSTask, TINY, assets, tmp_path / "voc")
    _, gen_config, gen_model = _save_trained(TTSDiffTask, CONF / "tiny/train_clipsonic.yaml", assets, tmp_path / "gen")
    config_path, model_path = embed_vocoder(gen_config, gen_model, voc_config, voc_model, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml", "model.pth"]  # no temp left

    conf = yaml.safe_load(config_path.read_text())["tts_conf"]["vocoder_conf"]
    assert conf["in_channels"] == 64 and conf["upsample_scales"] == [8, 8, 4, 2] and conf["use_weight_norm"] is False
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    model, _ = TTSDiffTask.build_model_from_file(config_path, None)
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    assert any(k.startswith("tts.vocoder.") for k in state)
    assert not model.tts.require_vocoder and not any(p.requires_grad for p in model.tts.vocoder.parameters())

    out = model.tts.inference(torch.ones(3, dtype=torch.long), spembs=torch.randn(64), steps=2, seed=0, num_frames=8)
    direct = vocoder.tts.eval().inference(torch.ones(3, dtype=torch.long), feats=out["feat_gen"])["wav"]
    assert out["wav"].shape == (8 * HOP,)
    torch.testing.assert_close(out["wav"], direct, atol=1e-5, rtol=1e-4)

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_embed_vocoder_refuses_other_features(assets, tmp_path):
    from espnet2.tasks.gan_tts import GANTTSTask

    from espnet2.tts_diff.bin.embed_vocoder import embed_vocoder
    from espnet2.tts_diff.task import TTSDiffTask

    _, voc_config, voc_model = _save_trained(GANTTSTask, TINY, assets, tmp_path / "voc", stats=assets["other_stats"])
    _, gen_config, gen_model = _save_trained(TTSDiffTask, CONF / "tiny/train_clipsonic.yaml", assets, tmp_path / "gen")
    with pytest.raises(ValueError, match="normalize.mean differs"):
        embed_vocoder(gen_config, gen_model, voc_config, voc_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_registered_in_gan_tts_task():
    from espnet2.gan_tts.abs_gan_tts import AbsGANTTS
    from espnet2.tasks import gan_tts

    from espnet2.tts_diff import register

    before = dict(gan_tts.tts_choices.classes)
    register.register_gan_tts()  # idempotent
    assert gan_tts.tts_choices.classes == before
    assert gan_tts.tts_choices.get_class("mel_hifigan") is MelHiFiGAN and issubclass(MelHiFiGAN, AbsGANTTS)


STOCK_ENTRY = """
import runpy, sys
tokens, stats, out = sys.argv[1:4]
def run(*argv):
    sys.argv = ["gan_tts_train", *argv]
    try:
        runpy.run_module("espnet2.bin.gan_tts_train", run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
run("--tts", "mel_hifigan", "--print_config")
print("=== end of print_config", flush=True)
for size in ("tiny", "tuning"):
    run("--config", f"{CONF}/{size}/train_vocoder.yaml", "--token_list", tokens, "--token_type", "char",
        "--normalize_conf", f"stats_file={stats}", "--iterator_type", "none", "--dry_run", "true",
        "--output_dir", f"{out}/{size}", "--use_tensorboard", "false")
"""


def test_stock_gan_tts_train_lists_our_vocoder_and_dry_runs_both_yamls(assets, tmp_path):
    code = STOCK_ENTRY.replace("{CONF}", str(CONF))
    out = subprocess.run(
        [sys.executable, "-c", code, str(assets["tokens"]), str(assets["stats"]), str(tmp_path)],
        capture_output=True, text=True, timeout=400, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout[out.stdout.index("log_level:"):out.stdout.index("=== end of print_config")]
    conf = yaml.safe_load(printed)
    assert conf["tts"] == "mel_hifigan"
    assert conf["tts_conf"]["generator_params"]["upsample_scales"] == [8, 8, 4, 2]
    for size in ("tiny", "tuning"):
        written = yaml.safe_load((tmp_path / size / "config.yaml").read_text())
        assert written["tts"] == "mel_hifigan" and written["feats_extract_conf"]["hop_length"] == HOP
    assert out.stderr.count("MelHiFiGAN(") == 2  # the model summaries ESPnet logs


def test_bigvgan_mel_checks():
    ours = _conf(TINY)["feats_extract_conf"]
    same = dict(sampling_rate=16000, n_fft=2048, hop_size=512, win_size=2048, num_mels=64, fmin=0, fmax=8000)
    assert bigvgan_mismatches(same, ours) == {}
    assert bigvgan_mismatches({**same, "fmax": None}, ours) == {}  # None = Nyquist on both sides
    public = dict(sampling_rate=22050, n_fft=1024, hop_size=256, win_size=1024, num_mels=80, fmin=0, fmax=None)
    assert set(bigvgan_mismatches(public, ours)) == {"sampling_rate", "n_fft", "hop_size", "win_size", "num_mels", "fmax"}
    assert bigvgan_mismatches(same, {**ours, "window": "hamming"}) == {"window": ("hann", "hamming")}
    with pytest.raises(ValueError, match="log10"):
        bigvgan_mismatches(same, {**ours, "log_base": None})


def test_bigvgan_vocoder_error_paths(assets, tmp_path):
    ours = _conf(TINY)["feats_extract_conf"]
    with pytest.raises(FileNotFoundError, match="bigvgan_generator.pt"):
        BigVGANVocoder(tmp_path, ours, assets["stats"])
    (tmp_path / "bigvgan_generator.pt").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps(dict(sampling_rate=24000, n_fft=1024, hop_size=256,
                                                          win_size=1024, num_mels=100, fmin=0, fmax=None)))
    with pytest.raises(ValueError, match="different mel features.*num_mels: BigVGAN 100 vs ESPnet 64"):
        BigVGANVocoder(tmp_path, ours, assets["stats"])
    if importlib.util.find_spec("bigvgan") is None:
        (tmp_path / "config.json").write_text(json.dumps(dict(sampling_rate=16000, n_fft=2048, hop_size=512,
                                                              win_size=2048, num_mels=64, fmin=0, fmax=8000)))
        with pytest.raises(ImportError, match="pip install bigvgan"):
            BigVGANVocoder(tmp_path, ours, assets["stats"])


def test_espnet_mel_to_bigvgan_gives_natural_log_mel(assets):
    from espnet2.layers.global_mvn import GlobalMVN
    from espnet2.tts.feats_extract.log_mel_fbank import LogMelFbank

    fbank, mvn = LogMelFbank(**_conf(TINY)["feats_extract_conf"]), GlobalMVN(assets["stats"])
    speech = _clip(8000)
    feats, _ = mvn(*fbank(speech))
    # BigVGAN's value: ln(max(mel, 1e-5)) of the same magnitude STFT and Slaney mel basis
    spec, _ = fbank.stft(speech)
    magnitude = (spec[..., 0] ** 2 + spec[..., 1] ** 2).clamp(min=1e-10).sqrt()
    expected = torch.log((magnitude @ fbank.logmel.melmat).clamp(min=1e-5))[0].T
    got = espnet_mel_to_bigvgan(feats[0], mvn)
    assert got.shape == (1, 64, feats.shape[1])
    torch.testing.assert_close(got[0], expected, atol=1e-4, rtol=1e-4)
    assert float(got.min()) >= math.log(1e-5) - 1e-6
