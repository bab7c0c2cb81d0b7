"""Freeze a trained MelHiFiGAN inside a trained CLIPSonic generator, so that its packed zip is self-contained.

Writes ``<output_dir>/config.yaml`` (the generator's config with ``tts_conf.vocoder_conf`` = the vocoder's
complete ``HiFiGANGenerator`` kwargs, weight norm folded in) and ``<output_dir>/model.pth`` (the generator's
weights plus the vocoder generator's as ``tts.vocoder.*``). ``Text2Speech`` then returns the waveform
without an external vocoder, as for ESPnet's ``JointText2Wav``.

Before anything is written the two models must agree on their features: the same feature extractor (type,
STFT and mel settings, mel basis) and the same normalisation statistics in both checkpoints, i.e. the
vocoder was trained on exactly the mel the generator produces. The result is then rebuilt with
``TTSDiffTask.build_model_from_file`` and reloaded with ``strict=True``, and the embedded vocoder must
reproduce the trained one's waveform; only then are both files moved into place (temp name +
``os.replace``). Run it from the recipe directory (the configs' relative paths, e.g. the stats file,
resolve against it), like ESPnet's own tools.

Example:
    python -m espnet2.tts_diff.bin.embed_vocoder \\
        --generator_config exp/tts_clipsonic/config.yaml --generator_model exp/tts_clipsonic/valid.loss.ave.pth \\
        --vocoder_config exp/vocoder/config.yaml --vocoder_model exp/vocoder/valid.generator_mel_loss.best.pth \\
        --output_dir exp/tts_clipsonic_vocoder
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Dict, Tuple

import torch
import yaml

VOCODER_PREFIX = "tts.vocoder."  # ESPnetTTSModel holds CLIPSonic as .tts, CLIPSonic its vocoder as .vocoder
FEATURE_PREFIXES = ("feats_extract.", "normalize.")


def _load_state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _feature_differences(gen_model, gen_state, voc_model, voc_state) -> list:
    """What differs between the two models' feature pipelines (empty if they are identical)."""
    diffs = []
    g_fe, v_fe = gen_model.feats_extract, voc_model.feats_extract
    if str(g_fe) != str(v_fe):  # the module reprs spell out the STFT and mel settings
        diffs.append(f"feats_extract: generator {g_fe} vs vocoder {v_fe}")
    g_n, v_n = gen_model.normalize, voc_model.normalize
    g_desc, v_desc = (
        None if n is None else (type(n).__name__, getattr(n, "norm_means", None), getattr(n, "norm_vars", None))
        for n in (g_n, v_n)
    )
    if g_desc != v_desc:
        diffs.append(f"normalize: generator {g_desc} vs vocoder {v_desc}")
    if g_fe is not None and v_fe is not None:
        if g_fe.get_parameters() != v_fe.get_parameters():
            diffs.append(f"feats_extract parameters: {g_fe.get_parameters()} vs {v_fe.get_parameters()}")
        g_log, v_log = getattr(getattr(g_fe, "logmel", None), "log_base", None), getattr(
            getattr(v_fe, "logmel", None), "log_base", None
        )
        if g_log != v_log:
            diffs.append(f"log_base: {g_log} vs {v_log}")
    g_keys = {k for k in gen_state if k.startswith(FEATURE_PREFIXES)}
    v_keys = {k for k in voc_state if k.startswith(FEATURE_PREFIXES)}
    if g_keys != v_keys:
        diffs.append(f"feature buffers: {sorted(g_keys)} vs {sorted(v_keys)}")
    for k in sorted(g_keys & v_keys):
        if gen_state[k].shape != voc_state[k].shape or not torch.equal(gen_state[k], voc_state[k]):
            diffs.append(f"{k} differs (e.g. another global_mvn stats file)")
    return diffs


def _write_tmp(path: Path, write) -> Path:
    """Write through ``write(tmp)`` to a temporary name beside ``path`` (moved into place later)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    return tmp


def embed_vocoder(
    generator_config: Path,
    generator_model: Path,
    vocoder_config: Path,
    vocoder_model: Path,
    output_dir: Path,
) -> Tuple[Path, Path]:
    """Embed the vocoder; return the paths of the new ``config.yaml`` and ``model.pth``.

    Raises:
        ValueError: The two models' features differ, the vocoder is not a ``mel_hifigan``, or the
            sampling rates differ.
        RuntimeError: The written model does not reload strictly or does not reproduce the vocoder.
    """
    from espnet2.tasks.gan_tts import GANTTSTask

    from espnet2.tts_diff.task import TTSDiffTask
    from espnet2.tts_diff.vocoder import MelHiFiGAN

    gen_args = yaml.safe_load(Path(generator_config).read_text(encoding="utf-8"))
    voc_model, voc_args = GANTTSTask.build_model_from_file(vocoder_config, None, "cpu")
    if not isinstance(voc_model.tts, MelHiFiGAN):
        raise ValueError(f"{vocoder_config}: tts must be mel_hifigan, got {voc_args.tts}")
    voc_model.load_state_dict(_load_state(vocoder_model), strict=True)
    gen_model, _ = TTSDiffTask.build_model_from_file(generator_config, None, "cpu")
    gen_state = _load_state(generator_model)
    gen_model.load_state_dict(gen_state, strict=True)

    diffs = _feature_differences(gen_model, gen_state, voc_model, voc_model.state_dict())
    if diffs:
        raise ValueError(
            "the vocoder was not trained on the generator's features; it can only invert the mel it was "
            "trained on:\n  " + "\n  ".join(diffs)
        )
    if voc_model.tts.fs != gen_model.tts.fs:
        raise ValueError(f"sampling rates differ: generator {gen_model.tts.fs}, vocoder {voc_model.tts.fs}")

    vocoder = voc_model.tts.generator.eval()
    probe = torch.randn(8, vocoder.input_conv.in_channels, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = vocoder.inference(probe)
    vocoder.remove_weight_norm()  # fold weight norm into plain weights for inference
    vocoder_conf = dict(voc_model.tts.generator_conf, use_weight_norm=False)

    state = {k: v for k, v in gen_state.items() if not k.startswith(VOCODER_PREFIX)}
    state.update({VOCODER_PREFIX + k: v.detach().clone() for k, v in vocoder.state_dict().items()})
    gen_args.setdefault("tts_conf", {})["vocoder_conf"] = vocoder_conf

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path, model_path = output_dir / "config.yaml", output_dir / "model.pth"
    tmp_config = _write_tmp(
        config_path,
        lambda p: p.write_text(yaml.safe_dump(gen_args, sort_keys=False, allow_unicode=True), encoding="utf-8"),
    )
    tmp_model = _write_tmp(model_path, lambda p: torch.save(state, p))
    try:
        model, _ = TTSDiffTask.build_model_from_file(tmp_config, None, "cpu")
        model.load_state_dict(_load_state(tmp_model), strict=True)
        with torch.no_grad():
            embedded = model.tts.vocoder.inference(probe)
        if not torch.allclose(embedded, reference, atol=1e-5, rtol=1e-4):
            raise RuntimeError("the embedded vocoder does not reproduce the trained vocoder's output")
    except BaseException:
        tmp_config.unlink(missing_ok=True)
        tmp_model.unlink(missing_ok=True)
        raise
    os.replace(tmp_model, model_path)
    os.replace(tmp_config, config_path)
    return config_path, model_path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.tts_diff.bin.embed_vocoder",
        description="Embed a trained MelHiFiGAN (GAN-TTS task) frozen into a trained CLIPSonic generator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--generator_config", type=Path, required=True, help="CLIPSonic config.yaml")
    parser.add_argument("--generator_model", type=Path, required=True, help="CLIPSonic weights (.pth)")
    parser.add_argument("--vocoder_config", type=Path, required=True, help="MelHiFiGAN config.yaml (gan_tts_train)")
    parser.add_argument("--vocoder_model", type=Path, required=True, help="MelHiFiGAN weights (.pth)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where config.yaml and model.pth go")
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    config_path, model_path = embed_vocoder(
        args.generator_config, args.generator_model, args.vocoder_config, args.vocoder_model, args.output_dir
    )
    logging.info(f"wrote {config_path} and {model_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
