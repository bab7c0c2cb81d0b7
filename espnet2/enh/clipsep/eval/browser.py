"""Open a report page in a real browser and say what a listener would find broken.

Drives the system's Chromium (Debian's ``chromium``, installed by ``tools/install.sh``) headless through
Playwright's ``executable_path``; no browser is downloaded. The page fails the check on a console error or an
uncaught exception, an image that did not load, or an ``<audio>`` whose source the browser cannot load or decode
(its ``error`` is set, or it never reaches ``HAVE_METADATA``). A full-page screenshot is kept either way.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

__all__ = ["PageCheck", "check_page", "find_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class PageCheck:
    """What the browser found on one page.

    Attributes:
        page: The page checked.
        images: ``<img>`` elements (all loaded unless listed in ``problems``).
        audios: ``<audio>`` elements (all with metadata unless listed in ``problems``).
        problems: One line per broken image, broken player, console error or page error.
        screenshot: The full-page PNG, when one was asked for.
    """

    page: Path
    images: int = 0
    audios: int = 0
    problems: List[str] = field(default_factory=list)
    screenshot: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium(path: Optional[Union[str, os.PathLike]] = None) -> str:
    """The Chromium executable: ``path``, else ``$CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on PATH.

    Raises:
        FileNotFoundError: none found (says how to install one).
    """
    for candidate in (path, os.environ.get("CHROMIUM")):
        if candidate:
            found = shutil.which(str(candidate))
            if found is None:
                raise FileNotFoundError(f"{candidate}: browser executable not found")
            return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no Chromium on PATH: run tools/install.sh (it installs Debian's chromium) or pass --browser")


# Runs in the page: wait for every image and player to settle, then report each one that failed.
_INSPECT = """async (timeoutMs) => {
  const deadline = Date.now() + timeoutMs;
  const settled = (a) => a.error !== null || a.readyState >= 1;
  const audios = Array.from(document.querySelectorAll('audio'));
  audios.forEach((a) => { if (a.readyState === 0 && a.error === null) a.load(); });
  while (Date.now() < deadline && !(audios.every(settled) &&
         Array.from(document.images).every((i) => i.complete))) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const problems = [];
  Array.from(document.images).forEach((i) => {
    if (!i.complete || i.naturalWidth === 0) problems.push('image did not load: ' + i.getAttribute('src'));
  });
  audios.forEach((a) => {
    const src = a.getAttribute('src') || (a.querySelector('source') || {}).src;
    if (a.error !== null) problems.push('audio error ' + a.error.code + ': ' + src);
    else if (a.readyState < 1) problems.push('audio never loaded its metadata: ' + src);
  });
  return {images: document.images.length, audios: audios.length, problems: problems};
}"""


def check_page(
    page: Union[str, os.PathLike],
    screenshot: Optional[Union[str, os.PathLike]] = None,
    browser: Optional[Union[str, os.PathLike]] = None,
    timeout: float = 30.0,
    width: int = 1280,
) -> PageCheck:
    """Loads ``page`` (an HTML file) headless and checks its images, players and console.

    Args:
        page: The ``index.html`` to open (as a ``file://`` URL, so its relative links resolve as on disk).
        screenshot: Where to save a full-page PNG (temporary name, then rename).
        browser: Chromium executable (default: :func:`find_chromium`).
        timeout: Seconds allowed for the page and its media to load.
        width: Viewport width in pixels.

    Raises:
        FileNotFoundError: the page or the browser is missing.
        RuntimeError: Playwright is not installed, or the browser cannot start (one line).
    """
    page = Path(page).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: page not found")
    executable = find_chromium(browser)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError("Playwright is not installed: pip install playwright (no browser download needed)") from None
    result = PageCheck(page)
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=executable, headless=True)
        except PlaywrightError as err:
            raise RuntimeError(f"{executable}: the browser did not start ({str(err).splitlines()[0]})") from None
        try:
            tab = chromium.new_page(viewport={"width": width, "height": 900})
            tab.on("console", lambda m: m.type == "error" and result.problems.append(f"console error: {m.text}"))
            tab.on("pageerror", lambda e: result.problems.append(f"page error: {e}"))
            tab.goto(page.as_uri(), wait_until="load", timeout=timeout * 1000)
            found = tab.evaluate(_INSPECT, timeout * 1000)
            result.images, result.audios = found["images"], found["audios"]
            result.problems += found["problems"]
            if screenshot is not None:
                screenshot = Path(screenshot)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                tmp = screenshot.with_name(f".{screenshot.name}.{os.getpid()}.tmp.png")
                tab.screenshot(path=str(tmp), full_page=True)
                os.replace(tmp, screenshot)
                result.screenshot = screenshot
        finally:
            chromium.close()
    return result
