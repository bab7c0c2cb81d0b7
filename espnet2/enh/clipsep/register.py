"""The one place that adds our separation classes to ESPnet's enhancement-task ``ClassChoices``.

``register()`` runs automatically right after ``espnet2.tasks.enh`` is imported (see
``espnet_clipsep_hook``), and our own task module calls it at import time so that spawned
multi-GPU workers see it too. It is idempotent. ``ClassChoices`` checks ``type_check`` only in its
constructor, so each class is checked against its ``Abs*`` base here.
"""

import importlib
from typing import Dict, Tuple

__all__ = ["add_to_choices", "load_class", "register", "registered"]

# choices attribute in espnet2.tasks.enh -> the base class its members must derive from
BASES: Dict[str, str] = {
    "separator_choices": "espnet2.enh.separator.abs_separator:AbsSeparator",
    "criterion_choices": "espnet2.enh.loss.criterions.abs_loss:AbsEnhLoss",
    "loss_wrapper_choices": "espnet2.enh.loss.wrappers.abs_wrapper:AbsLossWrapper",
    "preprocessor_choices": "espnet2.train.preprocessor:AbsPreprocessor",
}
# choices attribute in espnet2.tasks.enh -> {registered name: "module:Class"}
CLASSES: Dict[str, Dict[str, str]] = {
    "separator_choices": {
        "clipsep": "espnet2.enh.clipsep.separator.clipsep_separator:CLIPSepSeparator",
    },
    "criterion_choices": {
        "wbce": "espnet2.enh.clipsep.loss.criterions.weighted_bce:WeightedBCEMaskLoss",
    },
    "loss_wrapper_choices": {
        "noise_invariant": "espnet2.enh.clipsep.loss.wrappers.noise_invariant:NoiseInvariantSolver",
    },
    # Only CLIPSepTask builds it (EnhancementTask.build_preprocess_fn knows two names by heart); registering
    # it lets --preprocessor clipsep_mix through the shared argument parser.
    "preprocessor_choices": {
        "clipsep_mix": "espnet2.enh.clipsep.preprocessor:CLIPSepMixPreprocessor",
    },
}


def load_class(path: str) -> type:
    """Import ``"package.module:Class"`` and return the class."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def add_to_choices(choices, name: str, cls: type, base: type) -> None:
    """Add ``cls`` under ``name`` to an ESPnet ``ClassChoices`` (idempotent, type-checked).

    Raises:
        TypeError: ``cls`` is not a subclass of ``base``.
        ValueError: ``name`` is not lower case, or is already taken by another class.
    """
    if name != name.lower():
        raise ValueError(f"ClassChoices names must be lower case (YAML values are not lowered): {name!r}")
    if not issubclass(cls, base):
        raise TypeError(f"{cls.__qualname__} is not a subclass of {base.__qualname__}")
    old = choices.classes.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"--{choices.name} {name!r} is already taken by {old.__module__}.{old.__qualname__}"
        )
    choices.classes[name] = cls


def registered() -> Tuple[Tuple[str, str, str], ...]:
    """``(choices attribute, name, "module:Class")`` for everything :func:`register` adds."""
    return tuple((attr, name, path) for attr, table in CLASSES.items() for name, path in table.items())


def register() -> None:
    """Add our separators, criteria, loss wrappers and preprocessor to ``espnet2.tasks.enh``."""
    from espnet2.tasks import enh

    for attr, name, path in registered():
        add_to_choices(getattr(enh, attr), name, load_class(path), load_class(BASES[attr]))
