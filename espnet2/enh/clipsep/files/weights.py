"""Loading weights without unpickling code: ``torch.load(weights_only=True)`` and a model built from its config."""

import pickle
from pathlib import Path
from typing import Dict

import torch

from espnet2.enh.clipsep.errors import CLIPSepError, first_line

__all__ = ["build_model_weights_only", "load_weights"]


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict read with ``torch.load(weights_only=True)``: checkpoints that need pickle code are refused."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CLIPSepError(
            f"{path}: checkpoint needs pickle code execution to load; refused (only weights_only checkpoints "
            f"load: {first_line(err).split('.')[0]})"
        ) from None
    except Exception as err:  # RuntimeError (not a zip, truncated), EOFError, ...
        problem = f"not a readable PyTorch checkpoint ({type(err).__name__}: {first_line(err)})"
        raise CLIPSepError(f"{path}: {problem}") from None
    if isinstance(state, dict) and isinstance(state.get("module"), dict):  # DeepSpeed, as ESPnet's loader
        state = state["module"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CLIPSepError(f"{path}: not a state dict of tensors")
    return state


def build_model_weights_only(task, train_config, model_file, device: str = "cpu", strict: bool = True):
    """``task.build_model_from_file`` without its unpickling: the model is built from ``train_config`` alone and
    ``model_file`` is loaded with :func:`load_weights` (ESPnet's loader uses ``weights_only=False``).

    Returns:
        ``(model, train_args)`` as ``build_model_from_file`` gives them.
    """
    model, args = task.build_model_from_file(train_config, None, device)
    model.load_state_dict(load_weights(Path(model_file)), strict=strict)
    return model, args
