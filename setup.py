"""ESPnet plugin: text-queried sound separation (CLIPSep, CLIPSep-NIT) and synthesis (CLIPSonic).

Our packages live inside ESPnet's ``espnet2`` namespace (``espnet2.enh.clipsep``, ``espnet2.tts_diff``) but we
ship no ``espnet2/__init__.py``: a regular install merges our files into ESPnet's installed ``espnet2/``, and an
editable install resolves our subpackages to this work tree through setuptools' editable finder.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK_PTH = "espnet_clipsep_autoregister.pth"
HOOK_LINE = "import espnet_clipsep_hook; espnet_clipsep_hook.install()\n"


class BuildPyWithHook(build_py):
    """Regular install: put the start-up hook's .pth at the root of the wheel (site-packages)."""

    def run(self):
        super().run()
        Path(self.build_lib, HOOK_PTH).write_text(HOOK_LINE)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib, HOOK_PTH))]


class EditableWheelWithHook(editable_wheel):
    """Editable install: setuptools writes only its own finder .pth; add ours beside it."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        Path(installation_dir, HOOK_PTH).write_text(HOOK_LINE)


setup(
    name="espnet-clipsep",
    version="0.1.0",
    description="Text-queried sound separation and synthesis learned from unlabeled video, for ESPnet",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # Lower bounds are the oldest versions this code has been run with (its whole test suite, CI), not guesses;
    # there are no upper bounds, so that `pip install .` into an existing ESPnet environment keeps that
    # environment's ESPnet and torch. The exact tested set is pinned in tools/requirements.txt.
    python_requires=">=3.11",
    packages=find_namespace_packages(include=["espnet2.enh.clipsep*", "espnet2.tts_diff*"]),
    py_modules=["espnet_clipsep_hook"],
    package_data={"espnet2.enh.clipsep.clip": ["configs/*.json"]},
    install_requires=[
        "espnet>=202511",  # registers into espnet2.tasks.enh / tts / gan_tts and uses the enh model as of 202511
        "torch>=2.9",  # 2.9.1 is the newest torch espnet 202511 accepts, and the one tested
        "torchaudio>=2.9",
        "torchvision>=0.24",
        "open_clip_torch>=3.0",  # model configs registered by name and loaded from local weights (3.x API)
        "espnet_model_zoo",
        "kaldiio",
        "numpy",
        "scipy",
        "pyyaml",
        "soundfile",
        "soxr",
        "pillow",
        "museval",
        "fast_bss_eval",
        "tqdm",
        "matplotlib>=3.5",  # Axes.set_xticks(ticks, labels)
    ],
    extras_require={"browser": ["playwright"]},  # check_page: report pages in the system's Chromium
    cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook},
)
