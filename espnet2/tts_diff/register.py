"""The one place that adds our generation classes to ESPnet's TTS-task ``ClassChoices``.

Runs automatically right after ``espnet2.tasks.tts`` is imported (see ``espnet_clipsep_hook``).
The CLIPSonic generator is not implemented yet, so nothing is registered until it lands; the hook
and this module are in place so that it needs one line in ``CLASSES``.
"""

from typing import Dict, Tuple

from espnet2.enh.clipsep.register import add_to_choices, load_class

# choices attribute in espnet2.tasks.tts -> the base class its members must derive from
BASES: Dict[str, str] = {"tts_choices": "espnet2.tts.abs_tts:AbsTTS"}
# choices attribute in espnet2.tasks.tts -> {registered name: "module:Class"}
CLASSES: Dict[str, Dict[str, str]] = {"tts_choices": {}}

# Set by register(); lets tests see that the start-up hook reached this module.
REGISTER_CALLS = 0


def registered() -> Tuple[Tuple[str, str, str], ...]:
    """``(choices attribute, name, "module:Class")`` for everything :func:`register` adds."""
    return tuple((attr, name, path) for attr, table in CLASSES.items() for name, path in table.items())


def register() -> None:
    """Add our generators to ``espnet2.tasks.tts``."""
    global REGISTER_CALLS
    from espnet2.tasks import tts

    for attr, name, path in registered():
        add_to_choices(getattr(tts, attr), name, load_class(path), load_class(BASES[attr]))
    REGISTER_CALLS += 1
