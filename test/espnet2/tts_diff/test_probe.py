"""Probe classifier, relevance, probe-FD (closed form), and the probe CLI end to end."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.linalg import sqrtm

from espnet2.tts_diff.bin import probe as probe_cli
from espnet2.tts_diff.probe import (
    ProbeClassifier,
    frechet_distance,
    frechet_distance_from_stats,
    frechet_distance_to_reference,
    gaussian_stats,
    load_probe,
    probe_outputs,
    psd_sqrt,
    relevance,
    save_probe,
    train_probe,
)

FS = 16000
TONES = {"low": 250.0, "mid": 1000.0, "high": 4000.0}
TINY = dict(embed_dim=16, channels=[8, 16])


def tone(freq, rng, seconds=0.5):
    t = np.arange(int(seconds * FS)) / FS
    f = freq * rng.uniform(0.9, 1.1)
    wav = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return (wav + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def tone_set(n_per_class, seed):
    rng = np.random.default_rng(seed)
    wavs, ids = [], []
    for c, freq in enumerate(TONES.values()):
        for _ in range(n_per_class):
            wavs.append(tone(freq, rng))
            ids.append(c)
    return wavs, ids


# ------------------------------------------------------------------------------------------------- probe-FD
def test_frechet_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 1.0, 0.5, 0.1])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    fd = frechet_distance_from_stats(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5 + 1.9202...
    assert fd == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(1)
    m1, m2 = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert frechet_distance_from_stats(mu1, c1, mu2, c2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance_from_stats(mu2, c2, mu1, c1) == pytest.approx(reference, rel=1e-8)


@pytest.mark.parametrize("n", [3, 12, 40])  # fewer and more samples than dimensions (rank-deficient or not)
def test_frechet_to_a_fixed_reference_from_samples(n):
    rng = np.random.default_rng(n)
    d = 16
    ref = rng.standard_normal((50, d)) @ rng.standard_normal((d, d))
    emb = rng.standard_normal((n, d)) * 2.0 + 0.5
    mu, cov = gaussian_stats(ref)
    s = psd_sqrt(cov)
    np.testing.assert_allclose(s @ s, cov, rtol=1e-9, atol=1e-9)
    expected = frechet_distance_from_stats(*gaussian_stats(emb), mu, cov)
    assert frechet_distance_to_reference(emb, mu, cov, s) == pytest.approx(expected, rel=1e-7)  # rounding only
    assert frechet_distance_to_reference(ref, mu, cov, s) == pytest.approx(0.0, abs=1e-6)  # the reference itself
    with pytest.raises(ValueError, match="shape"):
        frechet_distance_to_reference(emb[:1], mu, cov, s)


def test_frechet_distance_from_samples_and_identity():
    rng = np.random.default_rng(2)
    a = rng.multivariate_normal([0, 0, 0], np.diag([1.0, 4.0, 9.0]), size=40000)
    b = rng.multivariate_normal([1, 0, 0], np.diag([4.0, 4.0, 1.0]), size=40000)
    expected = 1.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # = 6
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # rank-deficient covariances (fewer samples than dimensions) stay finite and non-negative
    small = rng.standard_normal((5, 16))
    assert frechet_distance(small, small) == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(frechet_distance(small, small + 1.0))
    assert frechet_distance(small, small + 1.0) == pytest.approx(16.0, rel=1e-6)


def test_gaussian_stats_and_errors():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    mu, cov = gaussian_stats(x)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------------- probe
def test_probe_shapes_gradients_and_lengths():
    torch.manual_seed(0)
    probe = ProbeClassifier(num_classes=3, **TINY)
    x = torch.randn(2, 8000)
    logits, emb = probe(x, torch.tensor([8000, 5000]))
    assert logits.shape == (2, 3) and emb.shape == (2, 16)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in probe.parameters() if p.requires_grad)
    # eval mode: a zero-padded clip is pooled over its valid frames only (edge frames differ by padding context)
    probe.eval()
    _, alone = probe(x[1:, :5000])
    _, padded = probe(x[1:], torch.tensor([5000]))
    assert torch.allclose(alone, padded, atol=0.3 * alone.abs().mean().item())
    with pytest.raises(ValueError):
        ProbeClassifier(num_classes=1)


def test_forward_feats_is_forward_on_the_probes_own_mel():
    torch.manual_seed(0)
    probe = ProbeClassifier(num_classes=3, **TINY).eval()
    x = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    feats, feats_lens = probe.feats(x, lengths)
    with torch.no_grad():
        logits, emb = probe(x, lengths)
        logits_f, emb_f = probe.forward_feats(feats, feats_lens)
        _, emb_full = probe.forward_feats(feats)  # no lengths: every frame counts
    assert torch.equal(logits, logits_f) and torch.equal(emb, emb_f)
    assert torch.equal(emb_full[0], emb[0]) and not torch.allclose(emb_full[1], emb[1])
    # probe_outputs batches log-mels of different lengths the way it batches waveforms
    clips = [x[0], x[1, :5000]]
    mels = [probe.feats(c[None], torch.tensor([len(c)]))[0][0] for c in clips]
    lo_w, em_w = probe_outputs(probe, clips, batch_size=2)
    lo_m, em_m = probe_outputs(probe, mels, batch_size=2, mels=True)
    # (equal up to the STFT edge frames of the zero-padded shorter waveform)
    torch.testing.assert_close(lo_m, lo_w, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(em_m, em_w, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match=r"mel 0 must be a non-empty \(T, "):
        probe_outputs(probe, [torch.zeros(4, 7)], mels=True)


def test_probe_learns_three_tones_and_relevance():
    torch.manual_seed(0)
    wavs, ids = tone_set(8, seed=0)
    probe = ProbeClassifier(num_classes=3, **TINY)
    report = train_probe(probe, wavs, ids, epochs=12, batch_size=8, lr=1e-2, seed=0, progress=False)
    assert report["steps"] == 36 and report["final_loss"] < 0.5
    test_wavs, test_ids = tone_set(5, seed=1)
    assert relevance(probe, test_wavs, test_ids) >= 0.9
    assert relevance(probe, test_wavs, [(i + 1) % 3 for i in test_ids]) <= 0.1
    # probe-FD separates classes: same class (new draws) much closer than another class
    _, emb = probe_outputs(probe, test_wavs)
    _, emb_b = probe_outputs(probe, tone_set(5, seed=2)[0])
    same = frechet_distance(emb[:5], emb_b[:5])
    other = frechet_distance(emb[:5], emb_b[10:])
    assert other > 3 * same
    with pytest.raises(ValueError, match="as many class ids"):
        relevance(probe, test_wavs, test_ids[:-1])


def test_training_is_deterministic_and_save_load_round_trip(tmp_path):
    wavs, ids = tone_set(3, seed=0)
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        probe = ProbeClassifier(num_classes=3, **TINY)
        train_probe(probe, wavs, ids, epochs=2, batch_size=4, seed=5, progress=False)
        states.append(probe.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    save_probe(probe, TINY, list(TONES), tmp_path / "p.pt")
    loaded, classes = load_probe(tmp_path / "p.pt")
    assert classes == list(TONES)
    torch.testing.assert_close(probe_outputs(loaded, wavs[:2])[1], probe_outputs(probe, wavs[:2])[1])
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------------------------- CLI
def write_dir(root, wavs, ids, name):
    d = root / name
    (d / "wav").mkdir(parents=True)
    labels = list(TONES)
    scp, u2l = [], []
    for i, (w, c) in enumerate(zip(wavs, ids)):
        key = f"{labels[c]}_{i:03d}"
        sf.write(d / "wav" / f"{key}.wav", w, FS)
        scp.append(f"{key} {d / 'wav' / key}.wav\n")
        u2l.append(f"{key} {labels[c]}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "utt2label").write_text("".join(u2l))
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    train = write_dir(root, *tone_set(8, seed=0), "train")
    valid = write_dir(root, *tone_set(3, seed=1), "valid")
    out = root / "exp" / "probe.pt"
    rc = probe_cli.main(
        ["--log_level", "WARNING", "train", "--data_dir", str(train), "--valid_dir", str(valid), "--output", str(out),
         "--embed_dim", "16", "--channels", "8", "16", "--epochs", "12", "--batch_size", "8", "--lr", "1e-2"]
    )
    assert rc == 0
    return root, out


def test_cli_train_writes_model_conf_and_report(trained):
    root, out = trained
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["classes"] == sorted(TONES) and report["num_clips"] == 24
    assert report["valid_accuracy"] >= 0.85 and report["wall_seconds"] > 0
    probe, classes = load_probe(out)
    assert classes == sorted(TONES) and probe.embed.out_features == 16


def test_cli_evaluate(trained, tmp_path):
    root, out = trained
    wavs, ids = tone_set(3, seed=4)
    gen = tmp_path / "gen"
    gen.mkdir()
    labels = list(TONES)
    lines = []
    for i, (w, c) in enumerate(zip(wavs, ids)):
        sf.write(gen / f"utt{i}.wav", w, FS)
        lines.append(f"utt{i} {labels[c]}\n")
    (tmp_path / "gen_labels").write_text("".join(lines))
    result_path = tmp_path / "res" / "probe_eval.json"
    args = ["evaluate", "--probe", str(out), "--gen_dir", str(gen), "--gen_labels", str(tmp_path / "gen_labels"),
            "--ref_dir", str(root / "valid"), "--output", str(result_path)]
    assert probe_cli.main(args) == 0
    res = json.loads(result_path.read_text())
    assert res["relevance"] >= 0.85 and res["relevance_chance"] == pytest.approx(1 / 3)
    assert res["num_generated"] == 9 and res["num_reference"] == 9
    assert sorted(res["correct"]) == [f"utt{i}" for i in range(9)] and set(res["correct"].values()) <= {0, 1}
    assert sum(res["correct"].values()) / 9 == pytest.approx(res["relevance"])
    assert 0.0 <= res["probe_fd"] < 1e9 and "not FAD" in res["probe_fd_note"]
    # reference = the generated clips themselves: probe-FD ~ 0; noise instead: far larger
    scp = tmp_path / "self" / "wav.scp"
    scp.parent.mkdir()
    scp.write_text("".join(f"utt{i} {gen / f'utt{i}.wav'}\n" for i in range(9)))
    assert probe_cli.main(args[:-4] + ["--ref_dir", str(scp.parent), "--output", str(result_path)]) == 0
    self_fd = json.loads(result_path.read_text())["probe_fd"]
    assert self_fd == pytest.approx(0.0, abs=1e-6)
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        sf.write(noise / f"n{i}.wav", (0.3 * rng.standard_normal(FS // 2)).astype(np.float32), FS)
    (noise / "wav.scp").write_text("".join(f"n{i} {noise / f'n{i}.wav'}\n" for i in range(9)))
    assert probe_cli.main(args[:-4] + ["--ref_dir", str(noise), "--output", str(result_path)]) == 0
    assert json.loads(result_path.read_text())["probe_fd"] > res["probe_fd"]


def test_cli_evaluate_fad_with_vggish_weights(trained, tmp_path, capsys):
    from espnet2.tts_diff.fad import VGGish

    root, out = trained
    torch.manual_seed(0)
    weights = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), weights)
    result_path = tmp_path / "probe_eval.json"
    args = ["evaluate", "--probe", str(out), "--gen_scp", str(root / "valid" / "wav.scp"), "--gen_labels",
            str(root / "valid" / "utt2label"), "--output", str(result_path), "--vggish"]  # fmt: skip
    # reference = the generated clips: FAD 0; the training clips: positive
    assert probe_cli.main(args + [str(weights), "--ref_dir", str(root / "valid")]) == 0
    res = json.loads(result_path.read_text())
    assert res["fad_vggish"] == pytest.approx(0.0, abs=1e-6) and "VGGish" in res["fad_note"]
    assert probe_cli.main(args + [str(weights), "--ref_dir", str(root / "train")]) == 0
    fresh = json.loads(result_path.read_text())
    assert fresh["fad_vggish"] > 1e-6
    # --ref_cache: the second evaluation reads the references' embeddings, not their audio; same figures
    refs = tmp_path / "refs"
    shutil.copytree(root / "train", refs)
    (refs / "wav.scp").write_text((root / "train" / "wav.scp").read_text().replace(str(root / "train"), str(refs)))
    cached = args + [str(weights), "--ref_dir", str(refs), "--ref_cache", str(tmp_path / "cache")]
    assert probe_cli.main(cached) == 0
    assert len(list((tmp_path / "cache").glob("ref_*.npz"))) == 1 and not list((tmp_path / "cache").glob("*.tmp*"))
    shutil.rmtree(refs / "wav")
    assert probe_cli.main(cached) == 0
    again = json.loads(result_path.read_text())
    assert again["fad_vggish"] == fresh["fad_vggish"] and again["probe_fd"] == fresh["probe_fd"]
    # without VGGish the key differs: a new entry, computed from the audio (gone here: a clear error)
    assert probe_cli.main(cached[:-6] + ["--ref_dir", str(refs), "--ref_cache", str(tmp_path / "cache")]) == 2
    # missing weights: one line saying what to download, nothing written
    result_path.unlink()
    capsys.readouterr()
    assert probe_cli.main(args + [str(tmp_path / "missing.pth"), "--ref_dir", str(root / "valid")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.pth: VGGish weights not found; download https://" in err and "\n" not in err
    assert not result_path.exists()


def test_cli_evaluate_mel_before_the_vocoder(trained, tmp_path, capsys):
    """--gen_mel_scp scores the mel a clip was vocoded from: the probe's own mel of a clip gives its figures."""
    root, out = trained
    probe, classes = load_probe(out)
    wavs, ids = tone_set(3, seed=4)
    gen, mel = tmp_path / "gen", tmp_path / "mel"
    gen.mkdir()
    mel.mkdir()
    wav_lines, mel_lines, label_lines = [], [], []
    for i, (w, c) in enumerate(zip(wavs, ids)):
        sf.write(gen / f"utt{i}.wav", w, FS, subtype="FLOAT")
        feats, _ = probe.feats(torch.from_numpy(np.asarray(w, np.float32))[None], torch.tensor([len(w)]))
        m = feats[0].numpy() if i % 3 else -feats[0].numpy()  # one clip in three: a wrong spectrum
        np.save(mel / f"utt{i}.npy", m)
        wav_lines.append(f"utt{i} {gen / f'utt{i}.wav'}\n")
        mel_lines.append(f"utt{i} {mel / f'utt{i}.npy'}\n")
        label_lines.append(f"utt{i} {list(TONES)[c]}\n")
    for name, lines in (("wav.scp", wav_lines), ("mel.scp", mel_lines), ("labels", label_lines)):
        (tmp_path / name).write_text("".join(lines))
    res_path = tmp_path / "eval.json"
    args = ["evaluate", "--probe", str(out), "--gen_scp", str(tmp_path / "wav.scp"), "--gen_labels",
            str(tmp_path / "labels"), "--ref_dir", str(root / "valid"), "--output", str(res_path)]
    assert probe_cli.main(args + ["--gen_mel_scp", str(tmp_path / "mel.scp")]) == 0
    res = json.loads(res_path.read_text())
    with torch.no_grad():
        logits, _ = probe.forward_feats(torch.stack([torch.from_numpy(np.load(mel / f"utt{i}.npy")) for i in range(9)]))
    target = torch.tensor([classes.index(list(TONES)[c]) for c in ids])
    expected = float((logits.argmax(1) == target).float().mean())
    assert res["mel_relevance"] == pytest.approx(expected) and res["mel_relevance"] < res["relevance"]
    assert res["mel_probe_fd"] > res["probe_fd"] >= 0
    # Without the option the report has no mel figures; a wrong shape is one error line.
    assert probe_cli.main(args) == 0 and "mel_relevance" not in json.loads(res_path.read_text())
    np.save(mel / "utt0.npy", np.zeros((5, 7), np.float32))
    capsys.readouterr()
    assert probe_cli.main(args + ["--gen_mel_scp", str(tmp_path / "mel.scp")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "utt0.npy" in err[0] and "(T, " in err[0]


def test_cli_bad_inputs(trained, tmp_path, capsys):
    root, out = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    good = root / "train" / "wav"
    (bad / "wav.scp").write_text(f"a {good / 'low_000.wav'}\nb {tmp_path / 'missing.wav'}\n")
    (bad / "utt2label").write_text("a low\nb mid\n")
    assert probe_cli.main(["train", "--data_dir", str(bad), "--output", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("probe: error: ") and "missing.wav: audio file not found" in err
    (bad / "wav.scp").write_text(f"a {good / 'low_000.wav'}\nb {good / 'low_001.wav'}\n")
    (bad / "utt2label").write_text("a low\n")
    assert probe_cli.main(["train", "--data_dir", str(bad), "--output", str(tmp_path / "p.pt")]) == 2
    assert "utt2label: no label for utterance 'b'" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "p.yaml").exists()
    # evaluate: a generated clip without a query label, and a label the probe does not know
    (tmp_path / "gen_labels").write_text("a low\n")
    args = ["evaluate", "--probe", str(out), "--gen_scp", str(bad / "wav.scp"), "--gen_labels",
            str(tmp_path / "gen_labels"), "--ref_dir", str(root / "valid"), "--output", str(tmp_path / "r.json")]
    assert probe_cli.main(args) == 2
    assert "gen_labels: no label for generated clip 'b'" in capsys.readouterr().err
    (tmp_path / "gen_labels").write_text("a low\nb tuba\n")
    assert probe_cli.main(args) == 2
    assert "label 'tuba' of 'b' is not a probe class" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    assert probe_cli.main(["train", "--data_dir", str(root / "train"), "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_evaluate_shows_progress_bars_and_quiet_hides_them(trained, tmp_path, capsys):
    root, out = trained
    result_path = tmp_path / "probe_eval.json"
    args = ["evaluate", "--probe", str(out), "--gen_scp", str(root / "valid" / "wav.scp"), "--gen_labels",
            str(root / "valid" / "utt2label"), "--ref_dir", str(root / "valid"), "--output", str(result_path)]
    capsys.readouterr()
    assert probe_cli.main(args) == 0
    err = capsys.readouterr().err
    n = len((root / "valid" / "wav.scp").read_text().splitlines())
    assert f"probe: 100%" in err and f"{n}/{n}" in err and "probe reference: 100%" in err
    assert probe_cli.main(["--quiet"] + args) == 0
    assert "100%" not in capsys.readouterr().err
