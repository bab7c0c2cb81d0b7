"""Which CLIP belongs to a model: the one the user names, the one the recipe fitted beside it, or CLIPSep's own.

A trained model only stores the size of its query embeddings. :func:`clip_for_model` finds the CLIP that made
them, shared by the separation and synthesis APIs.
"""

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder, register_configs
from espnet2.enh.clipsep.errors import CLIPSepError, first_line
from espnet2.enh.clipsep.files.model_files import ModelFiles

__all__ = ["PAPER_CLIP", "clip_for_model", "find_recipe_clip"]

PAPER_CLIP = ("ViT-B-32", "openai")  # CLIPSep's CLIP (512-d embeddings)


def find_recipe_clip(
    search_dirs: Sequence[Path], embed_dim: int, pack_root: Optional[Path] = None
) -> Optional[Tuple[str, str]]:
    """The CLIP weights the enh1 recipe fitted next to the experiments (``<expdir>/clip/<model>.pt`` + ``.json``).

    A pack's own CLIP (anywhere under ``pack_root``) comes first: it is the one packed with the model. Otherwise
    the CLIP is looked for in ``search_dirs`` and their ``clip/`` sub-directories (a pack or an experiment
    directory inside the recipe's tree).

    Returns:
        ``(clip_model, weights_file)`` of the one candidate whose embedding size is ``embed_dim``, or None.
    """
    if pack_root is not None:
        packed = _matching_clips(sorted(pack_root.rglob("*.pt.json")), embed_dim)
        if packed:
            return packed[0] if len(packed) == 1 else None
    sidecars = [s for d in search_dirs for s in sorted([*d.glob("*.pt.json"), *d.glob("clip/*.pt.json")])]
    found = _matching_clips(sidecars, embed_dim)
    return found[0] if len(found) == 1 else None


def _matching_clips(sidecars: Sequence[Path], embed_dim: int):
    """``(clip_model, weights_file)`` per distinct weights file whose sidecar names a model of ``embed_dim``."""
    import json

    import open_clip

    register_configs()
    found = {}
    for sidecar in sidecars:
        weights = sidecar.with_name(sidecar.name[: -len(".json")])
        try:
            name = json.loads(sidecar.read_text(encoding="utf-8")).get("clip_model")
        except (OSError, ValueError, AttributeError):
            continue
        cfg = open_clip.get_model_config(name) if isinstance(name, str) else None
        if weights.is_file() and cfg and int(cfg.get("embed_dim", -1)) == embed_dim:
            found[weights.resolve()] = (name, str(weights))
    return list(found.values())


def clip_for_model(
    files: ModelFiles,
    dim: Optional[int],
    clip_model: Optional[str],
    clip_pretrained: Optional[str],
    device: str = "cpu",
) -> CLIPQueryEncoder:
    """The CLIP encoder that made a model's query embeddings.

    Explicit ``clip_model``/``clip_pretrained`` win (``clip_pretrained="none"``: random weights, for tests);
    otherwise the weights the recipe fitted beside the model (:func:`find_recipe_clip`), else CLIPSep's
    ViT-B-32/openai for 512-d models. Anything else raises :class:`CLIPSepError` with one line saying what to pass.

    Args:
        files: Where the model's files are (:func:`resolve_model`).
        dim: The model's query embedding size (None: unknown).
        clip_model: open_clip model name, or None.
        clip_pretrained: open_clip tag or weights file, or None.
        device: Device of the encoder.

    Returns:
        A :class:`CLIPQueryEncoder` (its model is built lazily).
    """
    random = clip_pretrained is not None and clip_pretrained.lower() == "none"
    if random:
        clip_pretrained = None  # random weights: tests only
    if clip_model is None or (clip_pretrained is None and not random):
        found = find_recipe_clip(files.search_dirs, dim, files.pack_root)
        if found is not None and clip_model in (None, found[0]):
            clip_model, clip_pretrained = found[0], clip_pretrained or found[1]
            logging.info("CLIP of this model (from the recipe's files): %s %s", clip_model, clip_pretrained)
        elif clip_model is None and dim == 512:
            clip_model, clip_pretrained = PAPER_CLIP[0], clip_pretrained or PAPER_CLIP[1]
            logging.info("CLIP: %s/%s (the papers'; pass clip_model to change)", *PAPER_CLIP)
        elif clip_model is None:
            raise CLIPSepError(
                f"{files.source}: the model takes {dim}-d CLIP embeddings and its files do not say which CLIP "
                "made them: pass --clip_model and --clip_pretrained (clip_model=, clip_pretrained=)"
            )
        elif clip_pretrained is None and clip_model == PAPER_CLIP[0]:
            clip_pretrained = PAPER_CLIP[1]
        elif clip_pretrained is None:
            raise CLIPSepError(f"CLIP {clip_model}: pass --clip_pretrained (an open_clip tag or a weights file)")
    try:
        return CLIPQueryEncoder(clip_model, clip_pretrained, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise CLIPSepError(first_line(err)) from None
