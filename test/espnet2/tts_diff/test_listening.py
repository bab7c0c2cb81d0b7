"""The synthesis listening page: rows per query, a player per system, probe marks; through the report CLI."""

import json

import numpy as np
import soundfile
from PIL import Image

from espnet2.tts_diff.bin import report
from espnet2.tts_diff.listening import PageSystem, build_listening_page, pick_queries

KEYS = {"a1": "violin", "a2": "violin", "b1": "dog & cat", "c1": "piano"}


def _system(root, name, seed):
    (root / name / "wav").mkdir(parents=True)
    lines = []
    for i, key in enumerate(sorted(KEYS)):
        wav = 0.1 * np.random.default_rng(seed + i).standard_normal(1600).astype(np.float32)
        soundfile.write(root / name / "wav" / f"{key}.wav", wav, 16000, subtype="PCM_16")
        lines.append(f"{key} {root / name / 'wav' / key}.wav\n")
    (root / name / "wav.scp").write_text("".join(lines))
    return root / name / "wav.scp"


def test_pick_queries():
    assert pick_queries(sorted(KEYS), KEYS, 1) == ["b1", "c1", "a1"]  # classes sorted: "dog & cat", piano, violin
    assert pick_queries(sorted(KEYS), KEYS, 2) == ["b1", "c1", "a1", "a2"]
    assert pick_queries(["z", "y"], {}, 1) == ["y", "z"]


def test_page_rows_players_marks_and_images(tmp_path):
    frames = tmp_path / "frames" / "a1"
    frames.mkdir(parents=True)
    for f in range(3):
        Image.new("RGB", (32, 24), (100 * f, 0, 0)).save(frames / f"{f:06d}.jpg")
    systems = [PageSystem("ZS", "label text", _system(tmp_path, "zs", 0), {"a1": 1, "b1": 0}),
               PageSystem("GT resynthesis", "real clip", _system(tmp_path, "gt", 10))]
    page = build_listening_page(systems, tmp_path / "html", "T", KEYS, {"a1": str(frames)}, per_class=1)
    text = page.read_text()
    assert text.count("<tr>") == 1 + 3 and text.count("<audio") == 3 * 2
    assert "<q>dog &amp; cat</q>" in text and "<th>ZS: label text</th>" in text
    assert text.count("heard as the query class") == 1 and text.count("heard as another class") == 1
    assert text.count('alt="image query of a1"') == 1
    with Image.open(tmp_path / "html" / "img" / "q2.jpg") as img:  # row 2 = a1: the middle frame (red 100)
        assert img.width == 96 and abs(int(np.asarray(img)[5, 5, 0]) - 100) < 10
    copied, _ = soundfile.read(tmp_path / "html" / "audio" / "ZS_1.wav")  # row 1 = c1
    original, _ = soundfile.read(tmp_path / "zs" / "wav" / "c1.wav")
    np.testing.assert_array_equal(copied, original)


def test_report_cli_writes_the_page_and_links_it(tmp_path):
    scp = _system(tmp_path, "gen_iq", 0)
    ev = tmp_path / "gen_iq" / "probe_eval.json"
    ev.write_text(json.dumps(dict(relevance=0.5, relevance_chance=1 / 3, probe_fd=1.0, num_generated=4,
                                  correct={"a1": 1, "a2": 0, "b1": 1, "c1": 0})))
    gen = tmp_path / "gen_iq" / "generate.json"
    gen.write_text(json.dumps(dict(mode="embedding", rtf=0.1, sampler="dpmpp", steps=10, guidance=3.0)))
    (tmp_path / "utt2label").write_text("".join(f"{k} {v}\n" for k, v in KEYS.items()))
    out = tmp_path / "RESULTS.md"
    assert report.main(["--result", f"IQ|image|{ev}|{gen}", "--output", str(out), "--html_dir",
                        str(tmp_path / "listen"), "--utt2label", str(tmp_path / "utt2label"), "--per_class", "2"]) == 0
    assert "[listen/index.html](listen/index.html)" in out.read_text()
    page = (tmp_path / "listen" / "index.html").read_text()
    assert page.count("<audio") == 4 and page.count("&#10003;") == 2 and str(scp.parent) not in page
