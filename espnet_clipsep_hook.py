"""Registers our classes into ESPnet's tasks right after ESPnet imports them.

A one-line ``.pth`` file, written into site-packages at install time, calls :func:`install` at interpreter
start-up. That only appends a finder to ``sys.meta_path``; nothing is imported (no torch, no ESPnet) until a
program imports one of the task modules below. Then the task module executes as usual and our
``register()`` runs right after it, so the stock entry points (``python -m espnet2.bin.enh_train ...``)
accept ``--separator clipsep`` and the like without any ESPnet file being patched.

Set ``ESPNET_CLIPSEP_AUTOREGISTER=0`` to switch the hook off.
"""

import importlib
import importlib.abc
import os
import sys

# ESPnet task module -> "our module[:function]" to run right after it (the function defaults to register).
TARGETS = {
    "espnet2.tasks.enh": "espnet2.enh.clipsep.register",
    "espnet2.tasks.enh_tse": "espnet2.enh.clipsep.register_tse",
    "espnet2.tasks.tts": "espnet2.tts_diff.register",
    "espnet2.tasks.gan_tts": "espnet2.tts_diff.register:register_gan_tts",
}


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the real loader of a task module and runs our registration after it."""

    def __init__(self, loader, register_module: str):
        self._loader = loader
        self._register_module = register_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_module, _, function = self._register_module.partition(":")
        getattr(importlib.import_module(register_module), function or "register")()

    def __getattr__(self, name):  # get_source, get_code, ... for tracebacks and inspect
        return getattr(self._loader, name)


class _RegisteringFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        register_module = TARGETS.get(fullname)
        if register_module is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader, register_module)
                return spec
        return None


def install() -> None:
    """Append the finder to ``sys.meta_path`` once (idempotent)."""
    if os.environ.get("ESPNET_CLIPSEP_AUTOREGISTER", "1") == "0":
        return
    if not any(isinstance(f, _RegisteringFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisteringFinder())
