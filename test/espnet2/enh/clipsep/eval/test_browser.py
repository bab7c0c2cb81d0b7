"""The browser check itself: Debian's Chromium through Playwright finds what a listener would find broken."""

import numpy as np
import pytest
import soundfile

from espnet2.enh.clipsep.bin import check_page as cli
from espnet2.enh.clipsep.eval.browser import check_page
from espnet2.enh.clipsep.eval.page import audio_tag, document, image_tag


@pytest.fixture
def site(tmp_path, require_tools):
    require_tools("chromium")
    (tmp_path / "audio").mkdir()
    soundfile.write(tmp_path / "audio" / "ok.wav", 0.1 * np.sin(np.arange(8000) / 5), 8000, subtype="PCM_16")
    (tmp_path / "audio" / "junk.wav").write_bytes(b"RIFF....not audio at all")
    from PIL import Image

    Image.new("RGB", (40, 30), (0, 120, 200)).save(tmp_path / "ok.png")
    return tmp_path


def test_a_clean_page_passes_and_is_screenshot(site, artifacts_dir):
    (site / "index.html").write_text(document("clean", audio_tag("audio/ok.wav") + image_tag("ok.png", "ok")))
    found = check_page(site / "index.html", screenshot=artifacts_dir / "browser_clean_page.png")
    assert found.ok, found.problems
    assert (found.images, found.audios) == (1, 1)
    from PIL import Image

    with Image.open(found.screenshot) as img:
        assert img.width == 1280 and img.height > 100


def test_broken_image_audio_and_console_error_are_each_reported(site, capsys):
    body = (audio_tag("audio/ok.wav") + audio_tag("audio/missing.wav") + audio_tag("audio/junk.wav")
            + image_tag("ok.png", "ok") + image_tag("nope.png", "gone") + "<script>console.error('boom')</script>")
    (site / "index.html").write_text(document("broken", body))
    found = check_page(site / "index.html")
    assert (found.images, found.audios) == (2, 3)
    problems = "\n".join(found.problems)
    assert "image did not load: nope.png" in problems
    assert "audio/missing.wav" in problems and "audio/junk.wav" in problems and "audio/ok.wav" not in problems
    assert "console error: boom" in problems
    assert cli.main([str(site / "index.html")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len([ln for ln in err if ln.startswith("error: ")]) == len(found.problems)


def test_missing_page_or_browser_is_one_line(tmp_path, capsys):
    assert cli.main([str(tmp_path / "none.html")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.html: page not found")
    (tmp_path / "p.html").write_text("<p>x</p>")
    assert cli.main([str(tmp_path / "p.html"), "--browser", str(tmp_path / "no-chromium")]) == 2
    assert capsys.readouterr().err.strip() == f"check_page: error: {tmp_path / 'no-chromium'}: browser executable not found"
