"""The one place that adds our generation classes to ESPnet's TTS- and GAN-TTS-task ``ClassChoices``.

Runs automatically right after ``espnet2.tasks.tts`` is imported (see ``espnet_clipsep_hook``), and
``espnet2.tts_diff.task`` calls it at import time so that spawned multi-GPU workers see it too. Idempotent.

:func:`register_gan_tts` does the same for ESPnet's GAN-TTS task (the vocoder trainer), right after
``espnet2.tasks.gan_tts`` is imported; spawned workers of ``espnet2.bin.gan_tts_train`` run the start-up
hook too, because it lives in a ``.pth`` file that every interpreter processes.
"""

from typing import Dict, Tuple

from espnet2.enh.clipsep.register import add_to_choices, load_class

# choices attribute in espnet2.tasks.tts -> the base class its members must derive from
BASES: Dict[str, str] = {"tts_choices": "espnet2.tts.abs_tts:AbsTTS"}
# choices attribute in espnet2.tasks.tts -> {registered name: "module:Class"}
CLASSES: Dict[str, Dict[str, str]] = {"tts_choices": {"clipsonic": "espnet2.tts_diff.model:CLIPSonic"}}

# The same two tables for espnet2.tasks.gan_tts (its ClassChoices is also called tts_choices).
GAN_TTS_BASES: Dict[str, str] = {"tts_choices": "espnet2.gan_tts.abs_gan_tts:AbsGANTTS"}
GAN_TTS_CLASSES: Dict[str, Dict[str, str]] = {"tts_choices": {"mel_hifigan": "espnet2.tts_diff.vocoder:MelHiFiGAN"}}

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


def registered_gan_tts() -> Tuple[Tuple[str, str, str], ...]:
    """``(choices attribute, name, "module:Class")`` for everything :func:`register_gan_tts` adds."""
    return tuple((attr, name, path) for attr, table in GAN_TTS_CLASSES.items() for name, path in table.items())


def register_gan_tts() -> None:
    """Add our vocoder to ``espnet2.tasks.gan_tts``."""
    from espnet2.tasks import gan_tts

    for attr, name, path in registered_gan_tts():
        add_to_choices(getattr(gan_tts, attr), name, load_class(path), load_class(GAN_TTS_BASES[attr]))
