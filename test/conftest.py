"""Fixtures shared by the whole suite.

Policy for external tools: CI installs every tool the code uses (``tools/install.sh``), so a missing tool is a
broken install and fails the test that needs it (:func:`require_tools`), with the install hint; it is never
skipped.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Never wait on the Hugging Face hub in tests: an offline miss then fails in milliseconds.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]


def require_tools(*tools: str) -> None:
    """Fail (not skip) the calling test when a command-line tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run tools/install.sh (it installs them)")


@pytest.fixture(name="require_tools", scope="session")
def require_tools_fixture():
    """:func:`require_tools` for tests: ``require_tools("ffmpeg", ...)`` fails the test when one is missing."""
    return require_tools


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root directory (read only: tests never write into it)."""
    return REPO


def _make_video(path, seconds=3.0, size="320x240", audio="sine", video=True, channels=2):
    """Write an mp4 at ``path`` with ffmpeg's lavfi sources (``audio``: sine, silence or None; ``video=False``:
    audio only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=5:duration={seconds}"]
    if audio == "sine":
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    elif audio == "silence":
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r=44100:cl=stereo:d={seconds}"]
    if video:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-ac", str(channels)]
    subprocess.run(cmd + [str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def make_video():
    """``make_video(path, seconds=3.0, size="320x240", audio="sine", video=True, channels=2)`` writes a tiny mp4."""
    require_tools("ffmpeg")
    return _make_video


class ClapSide:
    """transformers for the CLAP tests lives beside the environment (tools/install.sh keeps it in a directory of its
    own, named in ``.venv/clap-pythonpath``; or ``ESPNET_CLIPSEP_CLAP_PYTHONPATH``): code that needs it runs in a
    subprocess with that directory on PYTHONPATH."""

    # Writes a tiny random CLAP model in the file layout of laion/clap-htsat-unfused and computes reference cosines.
    helper = Path(__file__).resolve().parent / "data" / "tiny_clap.py"

    def pythonpath(self) -> str:
        """The directory with transformers (fails with the install hint when missing)."""
        path = os.environ.get("ESPNET_CLIPSEP_CLAP_PYTHONPATH")
        marker = REPO / ".venv" / "clap-pythonpath"
        if not path and marker.is_file():
            path = marker.read_text().strip()
        if not path or not (Path(path) / "transformers").is_dir():
            pytest.fail("no transformers install for the CLAP tests: run tools/install.sh (writes .venv/clap-pythonpath)")
        return path

    @staticmethod
    def env(pythonpath=None) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    def run(self, cmd, pythonpath=None) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=REPO, env=self.env(pythonpath), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def clap_side() -> ClapSide:
    """See :class:`ClapSide`."""
    return ClapSide()


def _changed_paths() -> set:
    """Paths git sees as new or modified in the checkout (ignored ones too: a test must not write even there)."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    ours = (".venv/", "__pycache__/", ".egg-info/")
    return {line[3:] for line in out.stdout.splitlines() if not any(p in line for p in ours)}


@pytest.fixture(scope="session", autouse=True)
def source_tree_stays_clean():
    """Fail the session's last test when any test wrote into the checkout (tests write only under tmp_path)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        yield
        return
    before = _changed_paths()
    yield
    written = sorted(_changed_paths() - before)
    assert not written, f"tests wrote into the source tree: {written[:10]}"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Where tests keep what a person may want to look at afterwards (browser screenshots):
    ``$CLIPSEP_TEST_ARTIFACTS`` (tools/test.sh sets it outside the checkout), else a session temporary dir."""
    path = Path(os.environ.get("CLIPSEP_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    if path.resolve().is_relative_to(REPO.resolve()):
        pytest.fail(f"CLIPSEP_TEST_ARTIFACTS={path} is inside the checkout; tests never write there")
    path.mkdir(parents=True, exist_ok=True)
    return path
