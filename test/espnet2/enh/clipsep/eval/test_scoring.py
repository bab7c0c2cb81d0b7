"""python -m espnet2.enh.clipsep.bin.score: DESIGN §6 metrics, oracle selection, skips, key checks, summary."""

import json
import subprocess
import sys

import kaldiio
import museval
import numpy as np
import pytest
import soundfile
from fast_bss_eval.numpy import si_sdr as fbe_si_sdr

from espnet2.enh.clipsep.bin import score
from espnet2.enh.clipsep.eval.scoring import (
    DB_CAP,
    MIX_CACHE_COLUMNS,
    bss_target,
    load_audio,
    read_mix_cache,
    read_score_dir,
    si_sdr,
    summarize,
    write_text_atomic,
)

FS = 8000
KEYS = ("utt_a", "utt_b", "utt_c")


def _sources(i: int):
    """Target: two sinusoids; interferer: white noise. Both (FS,) float64."""
    rng = np.random.default_rng(i)
    t = np.arange(FS) / FS
    s1 = 0.5 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.2 * np.sin(2 * np.pi * 1300 * t + i)
    s2 = 0.3 * rng.standard_normal(FS)
    return s1, s2


def _write_scp(path, table):
    path.write_text("".join(f"{k} {v}\n" for k, v in table.items()))
    return path


def _write_set(root, name, signals):
    """Writes ``{key: (T,)}`` as float64 wavs and returns the scp path."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    table = {}
    for key, x in signals.items():
        soundfile.write(d / f"{key}.wav", x, FS, subtype="DOUBLE")
        table[key] = str(d / f"{key}.wav")
    return _write_scp(root / f"{name}.scp", table)


@pytest.fixture
def data(tmp_path):
    """Mixture/reference scps plus the raw arrays, and an estimate maker."""
    s1, s2, mix = {}, {}, {}
    for i, key in enumerate(KEYS):
        s1[key], s2[key] = _sources(i)
        mix[key] = s1[key] / 2 + s2[key] / 2
    d = dict(s1=s1, s2=s2, mix=mix, root=tmp_path)
    d["args"] = ["--mix_scp", str(_write_set(tmp_path, "mix", mix)), "--ref_scp",
                 str(_write_set(tmp_path, "spk1", s1)), "--ref_scp", str(_write_set(tmp_path, "spk2", s2))]
    return d


def _run(data, name, *extra):
    out = data["root"] / name
    assert score.main([*data["args"], *extra, "--output_dir", str(out)]) == 0
    return read_score_dir(out)


def _partial(data, key, rng):
    return 0.7 * data["s1"][key] + 0.2 * data["s2"][key] + 0.01 * rng.standard_normal(FS)


def test_perfect_estimate_and_mixture_as_estimate(data):
    perfect = _write_set(data["root"], "perfect", data["s1"])
    as_mix = _write_set(data["root"], "as_mix", data["mix"])
    summary, rows = _run(data, "score_perfect", "--inf_scp", str(perfect))
    assert summary["n"] == len(KEYS) and summary["n_skipped"] == 0
    assert summary["mixture_model"] == {"sum": 0, "half": len(KEYS), "other": 0}
    assert all(r["sdri"] > 20 and r["si_sdri"] > 20 for r in rows.values())
    assert all(r["sdr"] <= DB_CAP + 1e-5 and r["si_sdr"] == pytest.approx(DB_CAP, abs=1e-5) for r in rows.values())
    summary, rows = _run(data, "score_mix", "--inf_scp", str(as_mix))
    assert all(abs(r["sdri"]) < 0.1 and abs(r["si_sdri"]) < 0.1 for r in rows.values())
    assert abs(summary["sdri"]["mean"]) < 0.1


@pytest.mark.parametrize("backend", ["fast", "museval"])
def test_values_match_direct_museval_and_si_sdr(data, backend):
    rng = np.random.default_rng(7)
    est = {k: _partial(data, k, rng) for k in KEYS}
    summary, rows = _run(data, "score", "--inf_scp", str(_write_set(data["root"], "est", est)), "--backend", backend)
    assert summary["settings"]["backend"] == backend
    for k in KEYS:
        s1, s2, mix = data["s1"][k], data["s2"][k], data["mix"][k]
        sdr, _, sir, sar, _ = museval.metrics.bss_eval(np.stack([s1, s2]), np.stack([est[k], mix - est[k]]),
                                                       window=np.inf)
        sdr_mix = museval.metrics.bss_eval(np.stack([s1, s2]), np.stack([mix, mix]), window=np.inf)[0][0, 0]
        si, si_mix = (float(fbe_si_sdr(s1[None], x[None], zero_mean=True)[0]) for x in (est[k], mix))
        expected = dict(sdr=sdr[0, 0], sir=sir[0, 0], sar=sar[0, 0], sdr_mix=sdr_mix, sdri=sdr[0, 0] - sdr_mix,
                        si_sdr=si, si_sdr_mix=si_mix, si_sdri=si - si_mix)
        for name, value in expected.items():
            assert rows[k][name] == pytest.approx(value, abs=1e-4), (k, name)
        assert rows[k]["chosen"] == 0


def test_fast_backend_equals_museval_on_filtered_estimates():
    # Estimates that leak the interferer through different filters, plus noise: SIR and SAR are finite
    # and far from trivial, and the two backends still agree to 1e-6 dB.
    rng = np.random.default_rng(11)
    for i in range(3):
        s1, s2 = _sources(i)
        est = np.convolve(0.8 * s1, rng.standard_normal(9) * 0.3, "same") + np.convolve(s2, [0.2, -0.1], "same")
        est += 0.02 * rng.standard_normal(FS)
        fast = bss_target(s1, s2, est, s1 + s2 - est, backend="fast")
        ref = bss_target(s1, s2, est, s1 + s2 - est, backend="museval")
        assert fast == pytest.approx(ref, abs=1e-6)
        assert all(abs(v) < 60 for v in ref)
    # A pure-tone target makes the references' correlation matrix (near-)singular: the fast solve, or museval's
    # least squares where it fails, still gives museval's values.
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(FS) / FS)
    est = 0.9 * tone + 0.1 * s2
    fast, ref = (bss_target(tone, s2, est, tone + s2 - est, b) for b in ("fast", "museval"))
    assert fast == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="unknown BSS-Eval backend 'bsseval3'"):
        bss_target(s1, s2, est, s1 + s2 - est, backend="bsseval3")


def test_oracle_select_picks_target_output(data):
    rng = np.random.default_rng(3)
    good = _write_set(data["root"], "good", {k: _partial(data, k, rng) for k in KEYS})
    bad = _write_set(data["root"], "bad", {k: data["s2"][k] + 0.1 * data["s1"][k] for k in KEYS})
    _, plain = _run(data, "score_plain", "--inf_scp", str(good))
    summary, swapped = _run(data, "score_oracle", "--inf_scp", str(bad), "--inf_scp", str(good),
                            "--oracle_select", "--nj", "2")
    assert summary["settings"]["oracle_select"] is True
    assert {k: r["chosen"] for k, r in swapped.items()} == {k: 1 for k in KEYS}
    assert swapped == {k: dict(r, chosen=1) for k, r in plain.items()}


def test_oracle_complement_scores_output_1_or_the_mixture_minus_it(data, capsys):
    """PIT as the reference scores it: output 1 (``m X``) or its complement (``X - m X``), the better one."""
    rng = np.random.default_rng(4)
    keys = sorted(KEYS)
    # output 1 is the interferer for the first key (so the complement, mix - output 1, is the target), else the target
    out1 = {k: (data["mix"][k] - _partial(data, k, rng) / 2) if k == keys[0] else _partial(data, k, rng) / 2
            for k in keys}
    est = _write_set(data["root"], "out1", out1)
    comp = _write_set(data["root"], "comp", {k: data["mix"][k] - out1[k] for k in keys})
    summary, rows = _run(data, "score_complement", "--inf_scp", str(est), "--oracle_complement")
    assert summary["settings"]["oracle_complement"] is True
    assert {k: r["chosen"] for k, r in rows.items()} == {k: int(k == keys[0]) for k in keys}
    # the same numbers as scoring each chosen signal on its own (float32 files: to within float rounding)
    _, alone = _run(data, "score_comp_alone", "--inf_scp", str(comp))
    _, plain = _run(data, "score_out1_alone", "--inf_scp", str(est))
    for k in keys:
        expected = alone[k] if k == keys[0] else plain[k]
        assert rows[k]["sdr"] == pytest.approx(expected["sdr"], abs=1e-4)
    assert score.main([*data["args"], "--inf_scp", str(est), "--inf_scp", str(comp), "--oracle_complement",
                       "--output_dir", str(data["root"] / "x")]) == 2
    assert "--oracle_complement takes one --inf_scp" in capsys.readouterr().err


def test_mix_cache_reuses_the_mixture_scores_exactly(data, capsys):
    rng = np.random.default_rng(5)
    est = _write_set(data["root"], "est", {k: _partial(data, k, rng) for k in KEYS})
    cache = data["root"] / "cache" / "score_mix.tsv"
    _, plain = _run(data, "plain", "--inf_scp", str(est))
    _, first = _run(data, "first", "--inf_scp", str(est), "--mix_cache", str(cache))
    assert first == plain and cache.is_file()
    lines = cache.read_text().splitlines()
    assert lines[0].split("\t") == list(MIX_CACHE_COLUMNS) and len(lines) == 1 + len(KEYS)
    # A second system reuses the cached values: the scores are identical to a fresh computation ...
    other = _write_set(data["root"], "other", {k: _partial(data, k, rng) for k in KEYS})
    _, fresh = _run(data, "fresh", "--inf_scp", str(other))
    _, cached = _run(data, "cached", "--inf_scp", str(other), "--mix_cache", str(cache))
    assert cached == fresh
    # ... and really come from the cache: a doctored value with the right digest is taken as is.
    table = read_mix_cache(cache)
    digest, sdr_mix, si_mix = table["utt_a"]
    write_text_atomic(cache, cache.read_text().replace(f"{digest}\t{sdr_mix!r}", f"{digest}\t-50.0"))
    _, doctored = _run(data, "doctored", "--inf_scp", str(other), "--mix_cache", str(cache))
    assert doctored["utt_a"]["sdr_mix"] == -50.0
    assert doctored["utt_a"]["sdri"] == pytest.approx(fresh["utt_a"]["sdr"] + 50.0, abs=1e-5)
    assert doctored["utt_b"] == fresh["utt_b"]
    # A changed mixture no longer matches its digest and is scored afresh.
    mix = dict(data["mix"], utt_a=data["mix"]["utt_a"] * 0.5)
    args = list(data["args"])
    args[1] = str(_write_set(data["root"], "mix_changed", mix))
    out = data["root"] / "changed"
    assert score.main([*args, "--inf_scp", str(other), "--mix_cache", str(cache), "--output_dir", str(out)]) == 0
    _, changed = read_score_dir(out)
    assert changed["utt_a"]["sdr_mix"] != -50.0 and read_mix_cache(cache)["utt_a"][0] != digest
    # A malformed cache is one clear error line naming the file, and nothing is written.
    cache.write_text("key\tdigest\tsdr_mix\tsi_sdr_mix\nutt_a\tnot-a-digest\t1.0\t2.0\n")
    capsys.readouterr()
    bad_out = data["root"] / "bad"
    assert score.main([*data["args"], "--inf_scp", str(est), "--mix_cache", str(cache),
                       "--output_dir", str(bad_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{cache}:2: expected key, 40-digit digest" in err[0]
    assert not bad_out.exists()


def test_silent_target_is_skipped_and_counted(data, tmp_path):
    s1 = dict(data["s1"], utt_b=np.zeros(FS))
    args = list(data["args"])
    args[3] = str(_write_set(tmp_path, "spk1_silent", s1))
    est = _write_set(tmp_path, "est", {k: data["mix"][k] + 0.01 for k in KEYS})
    assert score.main([*args, "--inf_scp", str(est), "--output_dir", str(tmp_path / "out")]) == 0
    summary, rows = read_score_dir(tmp_path / "out")
    assert (summary["n"], summary["n_skipped"]) == (2, 1) and sorted(rows) == ["utt_a", "utt_c"]
    assert (tmp_path / "out" / "skipped.txt").read_text() == "utt_b\tsilent target\n"


def test_missing_key_is_one_clear_error(data, capsys):
    est_table = {k: data["mix"][k] * 0.9 for k in KEYS[:2]}
    est = _write_set(data["root"], "subset", est_table)
    out = data["root"] / "out"
    assert score.main([*data["args"], "--inf_scp", str(est), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "utt_c" in err and str(est) in err
    assert not out.exists()
    summary, rows = _run(data, "out2", "--inf_scp", str(est), "--allow_missing")
    assert summary["n"] == 2 and sorted(rows) == ["utt_a", "utt_b"]


def test_several_estimates_need_oracle_select(data, capsys):
    est = _write_set(data["root"], "est", data["mix"])
    cmd = [*data["args"], "--inf_scp", str(est), "--inf_scp", str(est), "--output_dir", str(data["root"] / "o")]
    assert score.main(cmd) == 2
    assert "--oracle_select" in capsys.readouterr().err


def test_summary_statistics_on_known_numbers():
    stat = summarize([1.0, 2.0, 3.0, 10.0])
    assert stat["mean"] == pytest.approx(4.0)
    assert stat["sem"] == pytest.approx(np.sqrt(((9 + 4 + 1 + 36) / 3)) / 2)  # std(ddof=1) / sqrt(n)
    assert stat["median"] == pytest.approx(2.5)
    assert summarize([5.0]) == {"mean": 5.0, "sem": None, "median": 5.0}
    assert summarize([]) == {"mean": None, "sem": None, "median": None}


def test_summary_json_matches_per_item(data):
    rng = np.random.default_rng(11)
    est = _write_set(data["root"], "est", {k: _partial(data, k, rng) for k in KEYS})
    _run(data, "score", "--inf_scp", str(est))
    summary = json.loads((data["root"] / "score" / "summary.json").read_text())
    _, rows = read_score_dir(data["root"] / "score")
    sdri = [r["sdri"] for r in rows.values()]
    assert summary["sdri"]["mean"] == pytest.approx(np.mean(sdri), abs=1e-5)
    assert summary["sdri"]["sem"] == pytest.approx(np.std(sdri, ddof=1) / np.sqrt(3), abs=1e-5)
    assert summary["sdri"]["median"] == pytest.approx(np.median(sdri), abs=1e-5)


def test_kaldiio_wav_ark_entries_read_like_wav_files(tmp_path):
    pcm = (np.random.default_rng(0).standard_normal(800) * 3000).astype(np.int16)
    kaldiio.save_ark(str(tmp_path / "a.ark"), {"k": (FS, pcm)}, scp=str(tmp_path / "a.scp"))
    soundfile.write(tmp_path / "a.wav", pcm, FS, subtype="PCM_16")
    from_ark, rate = load_audio((tmp_path / "a.scp").read_text().split()[1])
    from_wav, _ = load_audio(str(tmp_path / "a.wav"))
    assert rate == FS and np.array_equal(from_ark, from_wav)


def test_si_sdr_perfect_is_capped():
    x = np.sin(np.arange(1000) * 0.1)
    assert si_sdr(x, x) == pytest.approx(DB_CAP) and si_sdr(3 * x, x) == pytest.approx(DB_CAP)
    assert 156 < DB_CAP < 157


def test_help_lists_options_with_defaults():
    out = subprocess.run([sys.executable, "-m", "espnet2.enh.clipsep.bin.score", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for opt in ("--mix_scp", "--ref_scp", "--inf_scp", "--oracle_select", "--output_dir", "--allow_missing", "--nj",
                "--mix_cache"):
        assert opt in out
    assert "(default: 1)" in out
