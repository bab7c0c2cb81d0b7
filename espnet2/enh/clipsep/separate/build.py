"""A CLIPSep model from its files: built by ``CLIPSepTask`` from a training config, or converted in memory from
the released CLIPSep(-NIT) checkpoint; weights are always loaded without unpickling code."""

import argparse
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from espnet2.enh.clipsep.checkpoint_converter import (
    build_args,
    convert_reference_state_dict,
    load_reference_state_dict,
)
from espnet2.enh.clipsep.errors import SeparationError, first_line
from espnet2.enh.clipsep.files.model_files import ModelFiles
from espnet2.enh.clipsep.files.weights import load_weights

__all__ = ["build_model"]


def build_model(files: ModelFiles) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build the model with ``CLIPSepTask`` and load its weights strictly (weights only), on CPU, eval mode."""
    from espnet2.enh.clipsep.task import CLIPSepTask

    if files.train_config is None:
        return _build_from_reference(files.model_file)
    try:
        model, args = CLIPSepTask.build_model_from_file(files.train_config, None, "cpu")
    except Exception as err:
        raise SeparationError(
            f"{files.train_config}: cannot build a model from this config ({type(err).__name__}: {first_line(err)})"
        ) from None
    state = load_weights(files.model_file)
    missing, unexpected = _compare_keys(model.state_dict(), state)
    if missing or unexpected:
        raise SeparationError(
            f"{files.model_file}: weights do not fit {files.train_config} "
            f"(missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        problem = f"weights do not fit {files.train_config} ({first_line(err)})"
        raise SeparationError(f"{files.model_file}: {problem}") from None
    return model.eval(), args


def _compare_keys(expected: Dict, state: Dict) -> Tuple[List[str], List[str]]:
    return sorted(set(expected) - set(state)), sorted(set(state) - set(expected))


def _build_from_reference(path: Path) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """The released CLIPSep(-NIT) checkpoint, converted in memory like ``bin/convert.py``."""
    from espnet2.enh.clipsep.task import CLIPSepTask

    load_weights(path)  # the same refusal of pickle code as for any checkpoint
    try:
        state = convert_reference_state_dict(load_reference_state_dict(path), source=str(path))
    except ValueError as err:
        raise SeparationError(
            f"{path}: no config.yaml beside it, and not the released CLIPSep checkpoint ({first_line(err)})"
        ) from None
    num_noise_heads = len({k.split(".")[1] for k in state if k.startswith("noise_heads.")})
    args = build_args(num_noise_heads)
    model = CLIPSepTask.build_model(args)
    model.load_state_dict({f"separator.{k}": v for k, v in state.items()}, strict=True)
    return model.eval(), args
