"""Our packages live inside ESPnet's espnet2 namespace without shadowing it (DESIGN §2)."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import espnet2

REPO = Path(__file__).resolve().parents[4]
HOOK_PTH = "espnet_clipsep_autoregister.pth"


def test_no_espnet_package_inits_in_repo():
    assert not (REPO / "espnet2" / "__init__.py").exists()
    assert not (REPO / "espnet2" / "enh" / "__init__.py").exists()


def test_editable_install_origins():
    import espnet2.enh.clipsep
    import espnet2.tasks.enh
    import espnet2.tts_diff

    espnet_root = Path(espnet2.__file__).resolve().parent
    assert REPO not in Path(espnet2.tasks.enh.__file__).resolve().parents
    assert Path(espnet2.tasks.enh.__file__).resolve().parent.parent == espnet_root
    assert Path(espnet2.enh.clipsep.__file__).resolve() == REPO / "espnet2/enh/clipsep/__init__.py"
    assert Path(espnet2.tts_diff.__file__).resolve() == REPO / "espnet2/tts_diff/__init__.py"
    assert (Path(sysconfig.get_paths()["purelib"]) / HOOK_PTH).is_file()


def test_editable_install_sees_new_files(tmp_path):
    probe = REPO / "espnet2" / "enh" / "clipsep" / "_probe_editable.py"
    probe.write_text("VALUE = 42\n")
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import espnet2.enh.clipsep._probe_editable as p; print(p.VALUE, p.__file__)"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
    finally:
        probe.unlink()
    assert out[0] == "42" and Path(out[1]).resolve() == probe


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "espnet_clipsep_hook.py"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "espnet2", src / "espnet2", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("espnet_clipsep-*.whl")
    return wheel


def test_regular_install_merges_into_espnet_and_uninstall_leaves_it(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert HOOK_PTH in names and "espnet_clipsep_hook.py" in names
    assert "espnet2/enh/clipsep/separator/clipsep_separator.py" in names
    assert "espnet2/enh/clipsep/clip/configs/clipsep-tiny.json" in names
    assert not any(n in names for n in ("espnet2/__init__.py", "espnet2/enh/__init__.py"))
    assert not any(n.startswith(("test/", "egs2/")) for n in names)

    # A site-packages holding ESPnet's espnet2 (a copy), then a real pip install of the wheel into it.
    prefix = tmp_path / "prefix"
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    shutil.copytree(Path(espnet2.__file__).parent, site / "espnet2", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
        check=True, capture_output=True,
    )
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p) != site]
    code = f"""
import site, sys
sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + {deps!r}
site.addsitedir({str(site)!r})          # processes our .pth like an interpreter start would
sys.path.remove({str(site)!r}); sys.path.insert(0, {str(site)!r})
import espnet2.tasks.enh as t, espnet2.enh.clipsep as c
print(t.__file__); print(c.__file__)
print(sys.modules[t.separator_choices.get_class('clipsep').__module__].__file__)
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "ESPNET_CLIPSEP_AUTOREGISTER": "1"}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    task_file, ours, separator_file = out.stdout.split("\n")[-4:-1]
    assert Path(task_file) == site / "espnet2/tasks/enh.py"
    assert Path(ours) == site / "espnet2/enh/clipsep/__init__.py"
    assert Path(separator_file) == site / "espnet2/enh/clipsep/separator/clipsep_separator.py"

    # Uninstalling removes what RECORD lists: our files only, never ESPnet's.
    (record,) = site.glob("espnet_clipsep-*.dist-info/RECORD")
    listed = {line.split(",")[0] for line in record.read_text().splitlines()}
    assert HOOK_PTH in listed
    assert not any(
        p.startswith("espnet2/") and not p.startswith(("espnet2/enh/clipsep/", "espnet2/tts_diff/")) for p in listed
    )
