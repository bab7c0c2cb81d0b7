"""Convert the released CLIPSep(-NIT) checkpoint layout to our ``CLIPSepSeparator`` parameter names.

The reference model nests its U-Net recursively (``sound_net.unet_block.model.1.model.3.model...``)
and names the query projection ``frame_net``, the noise heads ``pit_nets`` and the mask scale/bias
``synth_net``; a DataParallel ``module.`` prefix may precede every name. Our names:

    sound_net.bn0.*           -> unet.input_norm.*
    sound_net.unet_block.*    -> unet.down.{i}.{conv,norm}.*, unet.up.{i}.{conv,norm}.*
    frame_net.{weight,bias}   -> query_proj.{weight,bias}
    pit_nets.{j}.*            -> noise_heads.{j}.*        (NIT checkpoints only)
    synth_net.scale, .bias    -> mask_scale, mask_bias

The U-Net part of the map is derived from :class:`~espnet2.enh.clipsep.separator.unet.UNet` itself: reference
level ``i`` is a ``Sequential`` of the non-identity layers of ``down[i]``, the level below (absent at the
innermost level) and the layers of ``up[i]``, in that order.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023.
"""

import argparse
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from espnet2.enh.clipsep.errors import first_line
from espnet2.enh.clipsep.separator.unet import UNet

__all__ = [
    "build_args",
    "convert_reference_state_dict",
    "load_reference_state_dict",
    "reference_key_map",
    "reference_key_shapes",
]

_DP_PREFIX = "module."
_NOISE_HEAD_KEY = re.compile(r"pit_nets\.(\d+)\.")


def _meta_unet(num_layers: int, ngf: int, channels: int) -> UNet:
    with torch.device("meta"):
        return UNet(in_channels=1, out_channels=channels, ngf=ngf, num_layers=num_layers)


def _reference_level_prefix(level: int) -> str:
    """Reference module path of U-Net level ``level`` (0 = outermost)."""
    return "sound_net.unet_block.model." + "1.model." * min(level, 1) + "3.model." * max(level - 1, 0)


def _unet_module_map(unet: UNet) -> Dict[str, str]:
    """Map our U-Net submodule names to the reference module names."""
    modules = {"input_norm": "sound_net.bn0"}
    for level in range(unet.num_layers):
        layers: List[Optional[str]] = []
        for side, block in (("down", unet.down[level]), ("up", unet.up[level])):
            layers += [
                f"{side}.{level}.{name}"
                for name, child in block.named_children()
                if not isinstance(child, nn.Identity)
            ]
            if side == "down" and level < unet.num_layers - 1:
                layers.append(None)  # the nested level below
        prefix = _reference_level_prefix(level)
        modules.update({name: f"{prefix}{i}" for i, name in enumerate(layers) if name is not None})
    return modules


def _unet_key_map(unet: UNet) -> Dict[str, str]:
    """Map reference ``sound_net.*`` state-dict keys to our ``unet.*`` keys."""
    modules = _unet_module_map(unet)
    key_map = {}
    for key in unet.state_dict():
        module, attr = key.rsplit(".", 1)
        key_map[f"{modules[module]}.{attr}"] = f"unet.{key}"
    return key_map


def reference_key_map(
    num_noise_heads: int = 2, *, num_layers: int = 7, ngf: int = 64, channels: int = 32
) -> Dict[str, str]:
    """Return the map from reference state-dict keys (no ``module.`` prefix) to our keys.

    Args:
        num_noise_heads: Number of NIT noise heads (``pit_nets``); 0 for a checkpoint without them.
        num_layers: U-Net levels.
        ngf: Width of the outermost U-Net level.
        channels: Number of U-Net output maps k (= query projection size).

    Returns:
        Ordered ``{reference_key: our_key}`` covering parameters and BatchNorm buffers.
    """
    key_map = _unet_key_map(_meta_unet(num_layers, ngf, channels))
    key_map["frame_net.weight"] = "query_proj.weight"
    key_map["frame_net.bias"] = "query_proj.bias"
    for j in range(num_noise_heads):
        key_map[f"pit_nets.{j}.weight"] = f"noise_heads.{j}.weight"
        key_map[f"pit_nets.{j}.bias"] = f"noise_heads.{j}.bias"
    key_map["synth_net.scale"] = "mask_scale"
    key_map["synth_net.bias"] = "mask_bias"
    return key_map


def reference_key_shapes(
    num_noise_heads: int = 2,
    *,
    num_layers: int = 7,
    ngf: int = 64,
    channels: int = 32,
    embed_dim: int = 512,
) -> Dict[str, Tuple[int, ...]]:
    """Return the expected shape of every reference state-dict key (no ``module.`` prefix).

    The U-Net shapes come from a freshly built :class:`UNet` (on the meta device, so nothing is
    allocated); the rest from ``channels`` and the CLIP embedding size ``embed_dim``.

    Args:
        num_noise_heads: Number of NIT noise heads; 0 for none.
        num_layers: U-Net levels.
        ngf: Width of the outermost U-Net level.
        channels: Number of U-Net output maps k.
        embed_dim: Query embedding size (512 for CLIP ViT-B/32).

    Returns:
        Ordered ``{reference_key: shape}``.
    """
    unet = _meta_unet(num_layers, ngf, channels)
    state = unet.state_dict()
    shapes = {ref: tuple(state[ours[len("unet.") :]].shape) for ref, ours in _unet_key_map(unet).items()}
    shapes["frame_net.weight"] = (channels, embed_dim)
    shapes["frame_net.bias"] = (channels,)
    for j in range(num_noise_heads):
        shapes[f"pit_nets.{j}.weight"] = (channels, channels)
        shapes[f"pit_nets.{j}.bias"] = (channels,)
    shapes["synth_net.scale"] = (channels,)
    shapes["synth_net.bias"] = (1,)
    return shapes


def _name_some(keys: List[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source: str = "<state dict>",
    *,
    num_noise_heads: Optional[int] = None,
    num_layers: int = 7,
    ngf: int = 64,
    channels: int = 32,
    embed_dim: int = 512,
) -> Dict[str, torch.Tensor]:
    """Rename a reference CLIPSep state dict to our ``CLIPSepSeparator`` keys.

    Args:
        state_dict: Reference state dict, with or without the DataParallel ``module.`` prefix.
        source: Where it came from (a path), used in error messages.
        num_noise_heads: Expected number of ``pit_nets``; None infers it from the keys (0 if absent).
        num_layers: U-Net levels.
        ngf: Width of the outermost U-Net level.
        channels: Number of U-Net output maps k.
        embed_dim: Query embedding size.

    Returns:
        ``{our_key: tensor}`` with the input tensors (not copies): ``unet.*`` (BatchNorm buffers
        included), ``query_proj.*``, ``noise_heads.{j}.*`` (if any), ``mask_scale``, ``mask_bias``.

    Raises:
        ValueError: One line naming ``source`` and the missing, unexpected or mis-shaped keys.
    """
    prefixed = sum(key.startswith(_DP_PREFIX) for key in state_dict)
    if 0 < prefixed < len(state_dict):
        raise ValueError(
            f"{source}: {prefixed} of {len(state_dict)} keys start with {_DP_PREFIX!r}; "
            "expected all or none of them to"
        )
    prefix = _DP_PREFIX if prefixed else ""
    tensors = {key[len(prefix) :]: value for key, value in state_dict.items()}

    if num_noise_heads is None:
        heads = {int(m.group(1)) for m in map(_NOISE_HEAD_KEY.match, tensors) if m is not None}
        num_noise_heads = max(heads) + 1 if heads else 0
    shapes = reference_key_shapes(
        num_noise_heads, num_layers=num_layers, ngf=ngf, channels=channels, embed_dim=embed_dim
    )

    missing = [prefix + key for key in shapes if key not in tensors]
    unexpected = [prefix + key for key in tensors if key not in shapes]
    bad = []
    for key, value in tensors.items():
        if key not in shapes:
            continue
        if not isinstance(value, torch.Tensor):
            bad.append(f"{prefix}{key} (expected a tensor, got {type(value).__name__})")
        elif tuple(value.shape) != shapes[key]:
            bad.append(f"{prefix}{key} (expected shape {shapes[key]}, got {tuple(value.shape)})")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_name_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_name_some(unexpected)}")
    if bad:
        problems.append(f"{len(bad)} mis-shaped key(s): {_name_some(bad)}")
    if problems:
        raise ValueError(
            f"{source}: not a CLIPSep checkpoint of the expected layout "
            f"(num_layers={num_layers}, ngf={ngf}, channels={channels}, noise heads={num_noise_heads}): "
            + "; ".join(problems)
        )

    key_map = reference_key_map(num_noise_heads, num_layers=num_layers, ngf=ngf, channels=channels)
    return {ours: tensors[ref] for ref, ours in key_map.items()}


def load_reference_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors, unwrapped from a ``{"state_dict": ...}``/``{"model": ...}`` container."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (not a zip / truncated), ...
        problem = f"cannot read as a weights-only checkpoint ({type(err).__name__}: {first_line(err, 200)})"
        raise ValueError(f"{path}: {problem}") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: no state dict found in the checkpoint")
    return obj


def build_args(num_noise_heads: int) -> argparse.Namespace:
    """Training config of the paper-size model, as ESPnet would write it to config.yaml."""
    from espnet2.enh.clipsep.task import CLIPSepTask

    args = CLIPSepTask.get_parser().parse_args(["--encoder", "stft", "--decoder", "stft", "--separator", "clipsep"])
    # Confs as a YAML config would give them (typed values; --criterions takes no list on the command line).
    stft = dict(n_fft=1024, win_length=1024, hop_length=256, window="hann", center=True)
    args.encoder_conf, args.decoder_conf = dict(stft), dict(stft)
    args.separator_conf = dict(num_spk=2, query_type="clip", query_dim=512, num_masks=32, num_noise_heads=num_noise_heads)
    wrapper = "noise_invariant" if num_noise_heads else "fixed_order"
    args.criterions = [{"name": "wbce", "conf": {}, "wrapper": wrapper, "wrapper_conf": {"weight": 1.0}}]
    return args
