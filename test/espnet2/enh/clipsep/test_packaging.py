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


def _copy_sources(dst: Path) -> Path:
    """What setup.py packages, copied out of the checkout: builds and installs never touch the work tree."""
    dst.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "espnet_clipsep_hook.py"):
        shutil.copy(REPO / name, dst / name)
    # The whole espnet2/ of the repo (only our subpackages live there): a stray espnet2/__init__.py would show.
    shutil.copytree(REPO / "espnet2", dst / "espnet2", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def _prefix_site(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


def _dep_paths(site: Path):
    """site-packages dirs of this interpreter (ESPnet, torch, ...) without processing their .pth files."""
    return [p for p in sys.path if p.endswith("site-packages") and Path(p) != site]


def test_editable_install_origins_and_new_files(tmp_path):
    """pip install -e of a copy of the work tree: our subpackages (and files added after the install) resolve to
    that tree, espnet2.tasks stays ESPnet's, and the start-up hook's .pth registers from the tree."""
    src = _copy_sources(tmp_path / "src")
    prefix = tmp_path / "prefix"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
         "--no-cache-dir", "--prefix", str(prefix), "-e", str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    site = _prefix_site(prefix)
    assert (site / HOOK_PTH).is_file()
    assert not (site / "espnet2").exists()  # nothing copied: the finder points at the tree
    # A module added to the tree after installing is importable without reinstalling.
    probe = src / "espnet2" / "enh" / "clipsep" / "_probe_editable.py"
    probe.write_text("VALUE = 42\n")
    code = f"""
import site, sys
sys.path[:] = [p for p in sys.path if 'site-packages' not in p] + {_dep_paths(site)!r}
sys.path.insert(0, {str(site)!r})
site.addsitedir({str(site)!r})          # processes the editable finder's and our hook's .pth files
import espnet2, espnet2.tasks.enh as t, espnet2.enh.clipsep as c, espnet2.tts_diff as d, espnet_clipsep_hook as h
import espnet2.enh.clipsep._probe_editable as p
print(espnet2.__file__); print(t.__file__); print(c.__file__); print(d.__file__); print(h.__file__)
print(sys.modules[t.separator_choices.get_class('clipsep').__module__].__file__)
print(p.VALUE); print(p.__file__)
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "ESPNET_CLIPSEP_AUTOREGISTER": "1"}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    espnet_init, task_file, ours, tts_diff, hook, separator_file, value, probe_file = out.stdout.split("\n")[-9:-1]
    espnet_root = Path(espnet2.__file__).resolve().parent
    assert Path(espnet_init).resolve() == espnet_root / "__init__.py"
    assert Path(task_file).resolve() == espnet_root / "tasks" / "enh.py"
    assert Path(ours).resolve() == src / "espnet2/enh/clipsep/__init__.py"
    assert Path(tts_diff).resolve() == src / "espnet2/tts_diff/__init__.py"
    assert Path(hook).resolve() == src / "espnet_clipsep_hook.py"
    assert Path(separator_file).resolve() == src / "espnet2/enh/clipsep/separator/clipsep_separator.py"
    assert value == "42" and Path(probe_file).resolve() == probe


def _build_wheel(tmp_path: Path) -> Path:
    src = _copy_sources(tmp_path / "src")
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
    site = _prefix_site(prefix)
    shutil.copytree(Path(espnet2.__file__).parent, site / "espnet2", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
        check=True, capture_output=True,
    )
    deps = _dep_paths(site)
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
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
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


def test_install_into_an_existing_espnet_environment_keeps_its_torch_and_espnet(tmp_path):
    """What `pip install .` would do in an environment that has ESPnet (this one): install us, nothing else.

    pip resolves the wheel's requirements against the installed distributions (offline: no index), and its
    dry-run report lists what it would install. The requirements are ranges, never exact pins.
    """
    import email
    import json

    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    requires = meta.get_all("Requires-Dist")
    assert not any("==" in r.split(";")[0] for r in requires), requires  # (extras carry a marker: extra == "browser")
    assert {"espnet>=202511", "torch>=2.9"} <= {r.replace(" ", "") for r in requires}
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(wheel.parent),
         "--report", str(report), "--quiet", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]  # every requirement is met by what is installed
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs == ["espnet-clipsep"]
