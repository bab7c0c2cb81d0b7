import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from espnet2.bin.tts_inference import Text2Speech
from espnet2.gan_tts.hifigan import HiFiGANGenerator
from espnet2.tasks.tts import TTSTask

from espnet2.tts_diff.model import CLIPSonic
from espnet2.tts_diff.task import TTSDiffTask

CONF_DIR = Path(__file__).resolve().parents[3] / "egs2" / "clipsep" / "tts1" / "conf"
ALL_CONFIGS = sorted([*CONF_DIR.rglob("train_clipsonic*.yaml"), *CONF_DIR.rglob("train_clipsynth*.yaml")])
TINY = CONF_DIR / "tiny" / "train_clipsonic.yaml"
N_MELS, HOP = 64, 512
# A small HiFi-GAN with the generator's hop (8 * 8 * 4 * 2 = 512 samples per frame).
VOCODER = dict(
    in_channels=N_MELS,
    channels=16,
    upsample_scales=[8, 8, 4, 2],
    upsample_kernel_sizes=[16, 16, 8, 4],
    resblock_kernel_sizes=[3],
    resblock_dilations=[[1, 3]],
)


def _data(root: Path, dim: int) -> dict:
    """Kaldi-style files for two 1-s sine clips: text, wav.scp, spembs npy scp, shapes, token list, mel stats."""
    root.mkdir(parents=True, exist_ok=True)
    utts = {"utt1": 440.0, "utt2": 660.0}
    t = np.arange(16000) / 16000
    wav_lines, emb_lines = [], []
    for i, (utt, freq) in enumerate(utts.items()):
        sf.write(root / f"{utt}.wav", 0.3 * np.sin(2 * np.pi * freq * t), 16000, subtype="PCM_16")
        np.save(root / f"{utt}.npy", np.random.default_rng(i).standard_normal(dim).astype(np.float32))
        wav_lines.append(f"{utt} {root / (utt + '.wav')}")
        emb_lines.append(f"{utt} {root / (utt + '.npy')}")
    (root / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    (root / "spembs.scp").write_text("\n".join(emb_lines) + "\n")
    (root / "text").write_text("utt1 ab\nutt2 ba\n")  # a dummy caption; the model ignores it
    (root / "speech_shape").write_text("utt1 16000\nutt2 16000\n")
    (root / "text_shape").write_text("utt1 2\nutt2 2\n")
    (root / "tokens.txt").write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    np.savez(root / "feats_stats.npz", count=100.0, sum=np.full(N_MELS, -300.0), sum_square=np.full(N_MELS, 1000.0))
    return dict(
        train=[
            "--train_data_path_and_name_and_type", f"{root / 'text'},text,text",
            "--train_data_path_and_name_and_type", f"{root / 'wav.scp'},speech,sound",
            "--train_data_path_and_name_and_type", f"{root / 'spembs.scp'},spembs,npy",
            "--valid_data_path_and_name_and_type", f"{root / 'text'},text,text",
            "--valid_data_path_and_name_and_type", f"{root / 'wav.scp'},speech,sound",
            "--valid_data_path_and_name_and_type", f"{root / 'spembs.scp'},spembs,npy",
            "--train_shape_file", str(root / "speech_shape"),
            "--valid_shape_file", str(root / "speech_shape"),
        ],
        common=[
            "--token_list", str(root / "tokens.txt"),
            "--token_type", "char",
            "--cleaner", "none",
            "--g2p", "none",
            "--normalize_conf", f"stats_file={root / 'feats_stats.npz'}",
            "--use_tensorboard", "false",
            "--use_matplotlib", "false",
            "--ngpu", "0",
        ],
    )  # fmt: skip


def _dim(config: Path) -> int:
    return yaml.safe_load(config.read_text())["tts_conf"]["spk_embed_dim"]


def test_configs_are_found():
    assert {f"{p.parent.name}/{p.name}" for p in ALL_CONFIGS} == {
        f"{size}/train_{name}.yaml" for size in ("tuning", "tiny")
        for name in ("clipsonic", "clipsynth_text", "clipsynth_hybrid")
    }  # fmt: skip
    # Every other YAML of the recipe is a vocoder config, dry-run by test_vocoder.py through GANTTSTask.
    others = {str(p.relative_to(CONF_DIR)) for p in CONF_DIR.rglob("*.y*ml")} - {str(p.relative_to(CONF_DIR)) for p in ALL_CONFIGS}
    assert all(Path(p).name == "train_vocoder.yaml" for p in others), sorted(others)


def _id(config: Path) -> str:
    return f"{config.parent.name}/{config.stem}"


def test_paper_size_configs_follow_the_papers():
    """EMA, a constant rate, 200k steps (MUSIC; run.sh gives VGGSound 500k), the frame at the crop's centre; the
    CLIPSynth configs are the CLIPSonic one but for the text probability (1: Text, 0.5: Hybrid)."""
    base = yaml.safe_load((CONF_DIR / "tuning" / "train_clipsonic.yaml").read_text())
    assert base["tts_conf"]["ema_decay"] == 0.9999 and base["optim_conf"]["lr"] == 1.0e-4
    assert base["scheduler"] is None and "scheduler_conf" not in base
    assert base["num_iters_per_epoch"] * base["max_epoch"] == 200_000
    run = (CONF_DIR.parent / "run.sh").read_text()
    assert '[ "${dataset}" = vggsound ] && opts+=(--max_epoch 250)' in run  # 2,000 x 250 = 500k
    assert base["tts_conf"]["frame_rate"] == 1.0
    assert base["tts_conf"]["hop_length"] == base["feats_extract_conf"]["hop_length"]
    for size in ("tuning", "tiny"):
        ref = yaml.safe_load((CONF_DIR / size / "train_clipsonic.yaml").read_text())
        assert ref["tts_conf"]["frame_rate"] == 1.0 and "text_cond_prob" not in ref["tts_conf"]
        for name, p in (("text", 1.0), ("hybrid", 0.5)):
            conf = yaml.safe_load((CONF_DIR / size / f"train_clipsynth_{name}.yaml").read_text())
            assert conf["tts_conf"].pop("text_cond_prob") == p
            assert conf == ref


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_id)
def test_config_front_end_is_the_paper_mel(config):
    conf = yaml.safe_load(config.read_text())
    assert conf["feats_extract"] == "fbank" and conf["normalize"] == "global_mvn"
    fe = conf["feats_extract_conf"]
    assert (fe["fs"], fe["n_fft"], fe["hop_length"], fe["n_mels"], fe["fmin"], fe["fmax"]) == (
        16000, 2048, 512, 64, 0, 8000
    )  # fmt: skip
    assert conf["tts_conf"]["num_train_steps"] == 4000 and conf["tts_conf"]["guidance"] == 1.5


def test_stock_entry_point_lists_clipsonic():
    """`python -m espnet2.bin.tts_train --tts clipsonic` works after install (registration hook)."""
    env = dict(os.environ, ESPNET_CLIPSEP_AUTOREGISTER="1")
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.tts_train", "--tts", "clipsonic", "--print_config"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    conf = yaml.safe_load(proc.stdout)
    assert conf["tts"] == "clipsonic"
    assert conf["tts_conf"]["num_train_steps"] == 4000
    assert conf["tts_conf"]["spk_embed_dim"] == 512
    assert conf["tts_conf"]["cond_drop_prob"] == 0.1 and conf["tts_conf"]["sampler"] == "dpmpp"


@pytest.mark.parametrize("task", [TTSTask, TTSDiffTask], ids=["stock_tts_train", "tts_diff_train"])
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_id)
def test_config_dry_run(config, task, tmp_path):
    data = _data(tmp_path / "data", _dim(config))
    out = tmp_path / "exp"
    task.main(
        cmd=["--config", str(config), "--iterator_type", "none", "--dry_run", "true", "--output_dir", str(out)]
        + data["train"] + data["common"]
    )  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    source = yaml.safe_load(config.read_text())
    assert written["tts"] == "clipsonic" and written["odim"] is None
    for key, value in source["tts_conf"].items():
        assert written["tts_conf"][key] == value
    assert written["feats_extract_conf"] == source["feats_extract_conf"]
    model, _ = TTSDiffTask.build_model_from_file(out / "config.yaml", None)
    assert isinstance(model.tts, CLIPSonic) and model.tts.odim == N_MELS


def test_dry_run_exp_synthesises_with_griffin_lim(tmp_path):
    """Text2Speech (espnet2.bin.tts_inference) builds our model from config.yaml and falls back to Griffin-Lim."""
    data = _data(tmp_path / "data", _dim(TINY))
    out = tmp_path / "exp"
    TTSDiffTask.main(
        cmd=["--config", str(TINY), "--iterator_type", "none", "--dry_run", "true", "--output_dir", str(out)]
        + data["train"] + data["common"]
    )  # fmt: skip
    t2s = Text2Speech(train_config=out / "config.yaml")
    assert t2s.use_spembs and t2s.fs == 16000 and t2s.vocoder is not None
    emb = np.load(tmp_path / "data" / "utt1.npy")
    # An untrained network predicts arbitrary mels: clip them to a range Griffin-Lim can invert.
    conf = dict(steps=2, seed=0, num_frames=20, clip_x0=3.0)
    out1 = t2s("ab", spembs=emb, decode_conf=conf)
    out2 = t2s("ab", spembs=emb, decode_conf=conf)
    assert out1["feat_gen"].shape == (20, N_MELS) and out1["feat_gen_denorm"].shape == (20, N_MELS)
    assert torch.equal(out1["feat_gen"], out2["feat_gen"])
    assert float(out1["feat_gen"].abs().max()) <= 3.0 + 1e-5  # the decode option reached the sampler
    assert out1["wav"].dim() == 1 and abs(len(out1["wav"]) - 20 * HOP) <= HOP
    assert torch.isfinite(out1["wav"]).all() and float(out1["wav"].abs().max()) > 0
    with pytest.raises(RuntimeError, match="spembs"):
        t2s("ab")


def test_one_step_training_embeds_the_vocoder_and_round_trips(tmp_path):
    """A real 1-step run: data files -> fbank/global_mvn -> CLIPSonic, HiFi-GAN weights via --init_param."""
    torch.manual_seed(0)
    vocoder = HiFiGANGenerator(**VOCODER)
    voc_pth = tmp_path / "voc.pth"  # as saved by a GAN-TTS run: tts.generator.* (+ a discriminator)
    torch.save({**{f"tts.generator.{k}": v for k, v in vocoder.state_dict().items()}, "tts.discriminator.w": torch.zeros(1)}, voc_pth)

    data = _data(tmp_path / "data", _dim(TINY))
    out = tmp_path / "exp"
    TTSDiffTask.main(
        cmd=[
            "--config", str(TINY),
            "--output_dir", str(out),
            "--tts_conf", "vocoder_conf=" + yaml.safe_dump(VOCODER, default_flow_style=True).strip(),
            "--init_param", f"{voc_pth}:tts.generator:tts.vocoder",
            "--max_epoch", "1",
            "--num_iters_per_epoch", "1",
            "--batch_size", "2",
            "--num_workers", "0",
            "--seed", "0",
        ]
        + data["train"] + data["common"]
    )  # fmt: skip
    model_file = out / "1epoch.pth"
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    for k, v in vocoder.state_dict().items():
        assert torch.equal(state[f"tts.vocoder.{k}"], v), k
    assert any(k.startswith("tts.unet.") for k in state) and "tts.null_cond" in state
    assert not any(k.endswith("alphas_cumprod") for k in state)

    t2s = Text2Speech(train_config=out / "config.yaml", model_file=model_file)
    assert t2s.vocoder is None and t2s.fs == 16000  # the model makes the waveform itself
    model_keys = set(t2s.model.state_dict())
    assert model_keys == set(state) | {k for k in model_keys if k.startswith(("normalize.", "feats_extract."))}
    emb = np.load(tmp_path / "data" / "utt2.npy")
    result = t2s("ba", spembs=emb, decode_conf=dict(steps=2, seed=1, num_frames=12, sampler="ddim"))
    assert result["feat_gen"].shape == (12, N_MELS)
    assert result["wav"].shape == (12 * HOP,) and torch.isfinite(result["wav"]).all()


def test_spawned_workers_reimport_the_registering_module():
    """A spawned worker unpickles TTSDiffTask.main_worker, which imports espnet2.tts_diff.task: that registers.

    Checked in a fresh interpreter (as a spawned worker is) with the start-up hook off, so only the import of
    espnet2.tts_diff.task can register ``clipsonic``; this interpreter's modules are left alone.
    """
    import pickle

    payload = pickle.dumps(TTSDiffTask.main_worker)
    assert b"espnet2.tts_diff.task" in payload
    code = """
import pickle, sys
from espnet2.tasks import tts
assert "clipsonic" not in tts.tts_choices.classes, "the start-up hook should be off"
assert "espnet2.tts_diff.task" not in sys.modules
main_worker = pickle.loads(sys.stdin.buffer.read())
assert "clipsonic" in tts.tts_choices.classes  # registered by the unpickling alone
import espnet2.tts_diff.task as task_module
from espnet2.tts_diff.model import CLIPSonic
assert tts.tts_choices.classes["clipsonic"] is CLIPSonic
assert main_worker.__self__ is task_module.TTSDiffTask
print("ok")
"""
    env = dict(os.environ, ESPNET_CLIPSEP_AUTOREGISTER="0")
    proc = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split()[-1] == "ok"
