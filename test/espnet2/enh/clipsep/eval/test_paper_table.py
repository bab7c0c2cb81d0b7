"""python -m espnet2.enh.clipsep.bin.results_table: the paper-shaped table, its claim row, not-run rows, errors."""


import numpy as np
import pytest

from espnet2.enh.clipsep.bin import results_table, score
from espnet2.enh.clipsep.eval.paper_table import detail_section
from espnet2.enh.clipsep.eval.scoring import read_score_dir

FS = 8000
KEYS = ("k1", "k2", "k3", "k4")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, write_set):
    """Two test sets (a quiet and a loud interferer), two systems each, scored with score.py."""
    root = tmp_path_factory.mktemp("paper_table")
    rng = np.random.default_rng(0)
    t = np.arange(FS) / FS
    s1 = {k: 0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i, k in enumerate(KEYS)}
    dirs = {}
    for dset, level in (("clean", 0.1), ("plus", 0.4)):
        s2 = {k: level * rng.standard_normal(FS) for k in KEYS}
        scps = {n: write_set(root / dset, n, d) for n, d in
                (("mix", {k: s1[k] + s2[k] for k in KEYS}), ("spk1", s1), ("spk2", s2))}  # fmt: skip
        for system, leak in (("NIT", 0.1), ("Plain", 0.3)):
            inf = write_set(root / dset, f"inf_{system}", {k: s1[k] + leak * s2[k] for k in KEYS})
            out = root / dset / f"score_{system}"
            assert score.main(["--mix_scp", str(scps["mix"]), "--ref_scp", str(scps["spk1"]), "--ref_scp",
                               str(scps["spk2"]), "--inf_scp", str(inf), "--output_dir", str(out)]) == 0  # fmt: skip
            dirs[dset, system] = out
    return root, dirs


def _run(root, dirs, *extra):
    rows = []
    for (dset, system), d in dirs.items():
        rows += ["--row", f"{dset}|{system}|image|text|{d}"]
    return results_table.main([
        "--set", "clean=Clean", "--set", "plus=+", *rows, "--not_run", "BERTSep|text (BERT)|text (BERT)|no BERT weights",
        "--claim", "NIT|text", "Plain|text", "--output", str(root / "RESULTS.md"), *extra,
    ])  # fmt: skip


def _cells(text: str, first: str):
    line = next(l for l in text.splitlines() if l.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_cells_are_the_scores(scored):
    root, dirs = scored
    assert _run(root, dirs) == 0
    text = (root / "RESULTS.md").read_text()
    header = _cells(text, "System")
    assert header == ["System", "Training query", "Test query", "Clean: SDR", "Clean: SDRi", "Clean: SDR median",
                      "+: SDR", "+: SDRi", "+: SDR median"]  # fmt: skip
    nit = _cells(text, "NIT")
    for offset, dset in ((3, "clean"), (6, "plus")):
        _, rows = read_score_dir(dirs[dset, "NIT"])
        sdr = np.array([r["sdr"] for r in rows.values()])
        sdri = np.array([r["sdri"] for r in rows.values()])
        sem = lambda x: np.std(x, ddof=1) / np.sqrt(len(x))  # noqa: E731
        assert nit[offset] == f"{sdr.mean():.2f} ± {sem(sdr):.2f}"
        assert nit[offset + 1] == f"{sdri.mean():.2f} ± {sem(sdri):.2f}"
        assert nit[offset + 2] == f"{np.median(sdr):.2f}"
    assert nit[1:3] == ["image", "text"]
    # the louder interferer lowers every SDR: the two sets' columns are not the same numbers
    assert float(nit[3].split()[0]) > float(nit[6].split()[0])
    assert _cells(text, "BERTSep")[3] == "not run (no BERT weights)"
    mixture = _cells(text, "Mixture")
    assert mixture[4] == "-" and mixture[3] != mixture[6]


def test_claim_row_is_the_paired_difference(scored):
    root, dirs = scored
    assert _run(root, dirs) == 0
    text = (root / "RESULTS.md").read_text()
    assert "## The paper's claim: NIT (text) - Plain (text)" in text
    claim = _cells(text, "+")
    _, a = read_score_dir(dirs["plus", "NIT"])
    _, b = read_score_dir(dirs["plus", "Plain"])
    diff = np.mean([a[k]["sdri"] - b[k]["sdri"] for k in KEYS])
    assert claim[1] == str(len(KEYS))
    assert claim[2].startswith(f"{diff:+.2f} [")
    lo = float(claim[2].split("[")[1].split(",")[0])
    assert diff > 0 and lo > 0  # less leak is better on every item


def test_details_rebased_and_history_kept(scored, tmp_path):
    root, dirs = scored
    (root / "sub").mkdir(exist_ok=True)
    detail = root / "sub" / "results.md"
    detail.write_text("# per set\n\nsome text\n\n## SDRi per class\n\n[page](html/index.html)\n"
                      "Environment: x\n\n## Run history\nold\n")  # fmt: skip
    section = detail_section(detail, "Clean test set", root)
    assert section.splitlines()[0] == "## Clean test set"
    assert "### SDRi per class" in section and "[page](sub/html/index.html)" in section
    assert "Environment" not in section and "old" not in section
    (root / "RESULTS.md").write_text("stale\n## Run history\n\n**2026-01-01** kept note\n")
    assert _run(root, dirs, "--detail", f"Clean test set={detail}") == 0
    text = (root / "RESULTS.md").read_text()
    assert text.endswith("## Run history\n\n**2026-01-01** kept note\n") and "stale" not in text
    assert "## Clean test set" in text


def test_errors_are_one_line(scored, capsys):
    root, dirs = scored
    assert results_table.main(["--set", "clean=Clean", "--row", f"other|NIT|image|text|{dirs['clean', 'NIT']}",
                               "--output", str(root / "x.md")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'other'" in err
    assert results_table.main(["--set", "clean", "--output", str(root / "x.md")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert results_table.main(["--set", "clean=Clean", "--row", f"clean|NIT|image|text|{root / 'missing'}",
                               "--output", str(root / "x.md")]) == 2  # fmt: skip
    assert "missing" in capsys.readouterr().err
    assert not (root / "x.md").exists()
