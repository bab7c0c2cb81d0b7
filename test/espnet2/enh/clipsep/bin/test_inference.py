"""Recipe inference (``bin/inference``) on small random models written like training writes them."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from espnet2.enh.clipsep.bin.inference import main as inference_main
from espnet2.enh.clipsep.files.kaldi_table import read_table
from espnet2.enh.clipsep.task import CLIPSepTask

FS = 16000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    wav, q, t = [], [], []
    for i in range(3):
        soundfile.write(d / f"m{i}.wav", rng.uniform(-0.3, 0.3, FS // 2 + 137 * i).astype(np.float32), FS)
        np.save(d / f"q{i}.npy", rng.normal(size=64).astype(np.float32))
        np.save(d / f"t{i}.npy", rng.normal(size=(5, 64)).astype(np.float32))  # per-frame: reduced to its centre
        wav.append(f"m{i} {d / f'm{i}.wav'}\n")
        q.append(f"m{i} {d / f'q{i}.npy'}\n")
        t.append(f"m{i} {d / f't{i}.npy'}\n")
    (d / "wav.scp").write_text("".join(wav))
    (d / "query1.scp").write_text("".join(q))
    (d / "frames1.scp").write_text("".join(t))
    return d


def _infer(exp, data, out, *extra):
    return inference_main(["--train_config", str(exp / "config.yaml"), "--model_file", str(exp / "model.pth"),
                           "--output_dir", str(out), "--num_workers", "0",
                           "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech_mix,sound", *extra])


def test_one_query_gives_one_output_of_the_input_length(make_experiment, tmp_path, data):
    exp = make_experiment(tmp_path, "train_enh_clipsep_nit.yaml")
    out = tmp_path / "infer"
    assert _infer(exp, data, out, "--data_path_and_name_and_type", f"{data / 'query1.scp'},query1,npy") == 0
    assert sorted(p.name for p in out.glob("*.scp")) == ["spk1.scp"]  # NIT noise heads are not outputs
    table = read_table(out / "spk1.scp")
    assert sorted(table) == ["m0", "m1", "m2"]
    for i in range(3):
        est, fs = soundfile.read(table[f"m{i}"], dtype="float32")
        assert fs == FS and len(est) == FS // 2 + 137 * i and np.abs(est).max() <= 1.0
        assert np.abs(est).sum() > 0

    # Same output as the model called directly (query -> separator -> decoder).
    model, _ = CLIPSepTask.build_model_from_file(exp / "config.yaml", exp / "model.pth", "cpu")
    mix, _ = soundfile.read(data / "m1.wav", dtype="float32")
    with torch.no_grad():
        pre, *_ = model.eval().forward_enhance(
            torch.from_numpy(mix)[None], torch.tensor([len(mix)]), {"query1": torch.from_numpy(np.load(data / "q1.npy"))[None]}
        )
    est, _ = soundfile.read(table["m1"], dtype="float32")
    np.testing.assert_allclose(est, pre[0][0].clamp(-1, 1).numpy(), atol=1e-5)

    # A per-frame query is reduced to its 3 centre frames by the (evaluation-mode) preprocessor.
    out2 = tmp_path / "infer_frames"
    assert _infer(exp, data, out2, "--data_path_and_name_and_type", f"{data / 'frames1.scp'},query1,npy") == 0
    np.save(data / "centre.npy", np.load(data / "t0.npy")[1:4].mean(0))
    (data / "centre1.scp").write_text(f"m0 {data / 'centre.npy'}\n")
    out3 = tmp_path / "infer_centre"
    (data / "key").write_text("m0 x\n")
    assert _infer(exp, data, out3, "--key_file", str(data / "key"),
                  "--data_path_and_name_and_type", f"{data / 'centre1.scp'},query1,npy") == 0
    a, _ = soundfile.read(read_table(out2 / "spk1.scp")["m0"])
    b, _ = soundfile.read(read_table(out3 / "spk1.scp")["m0"])
    np.testing.assert_allclose(a, b, atol=1e-6)

    # Binary masks and remove mode change the output; remove + soft gives the complement.
    out4 = tmp_path / "infer_remove"
    assert _infer(exp, data, out4, "--remove", "--data_path_and_name_and_type", f"{data / 'query1.scp'},query1,npy") == 0
    rem, _ = soundfile.read(read_table(out4 / "spk1.scp")["m1"], dtype="float32")
    assert np.abs(rem - est).max() > 1e-3


def test_pit_model_writes_all_outputs(make_experiment, tmp_path, data):
    exp = make_experiment(tmp_path, "train_enh_pit.yaml")
    out = tmp_path / "infer"
    assert _infer(exp, data, out) == 0
    assert sorted(p.name for p in out.glob("*.scp")) == ["spk1.scp", "spk2.scp"]


def test_add_noise_head_needs_a_nit_model(make_experiment, tmp_path, data, capsys):
    exp = make_experiment(tmp_path, "train_enh_clipsep.yaml")
    query = ("--data_path_and_name_and_type", f"{data / 'query1.scp'},query1,npy")
    assert _infer(exp, data, tmp_path / "o", *query, "--add_noise_head", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()  # (ESPnet's first import prints the command line)
    assert err[-1] == "inference: error: --add_noise_head 1: the model has 0 noise heads"
    nit = make_experiment(tmp_path, "train_enh_clipsep_nit.yaml")
    assert _infer(nit, data, tmp_path / "plain", *query) == 0
    assert _infer(nit, data, tmp_path / "added", *query, "--add_noise_head", "2") == 0
    plain = dict(line.split() for line in (tmp_path / "plain" / "spk1.scp").read_text().splitlines())
    added = dict(line.split() for line in (tmp_path / "added" / "spk1.scp").read_text().splitlines())
    assert sorted(plain) == sorted(added)


def test_inference_errors_are_one_line(make_experiment, tmp_path, data, capsys):
    exp = make_experiment(tmp_path, "train_enh_clipsep.yaml")
    capsys.readouterr()
    assert _infer(exp, data, tmp_path / "o", "--data_path_and_name_and_type", f"{tmp_path / 'nope.scp'},query1,npy") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.scp: file not found" in err[0]
    assert _infer(exp, data, tmp_path / "o") == 2  # a query model without queries
    assert "query embeddings" in capsys.readouterr().err
    assert not (tmp_path / "o" / "spk1.scp").exists()
    # Weights are loaded weights-only: a checkpoint that needs pickle code execution is refused.
    state = torch.load(exp / "model.pth", weights_only=True)
    torch.save({**state, "extra": CLIPSepTask}, exp / "model.pth")  # a class: needs arbitrary unpickling
    query = ("--data_path_and_name_and_type", f"{data / 'query1.scp'},query1,npy")
    assert _infer(exp, data, tmp_path / "o", *query) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pth: checkpoint needs pickle code execution to load; refused" in err[0]
    assert not (tmp_path / "o" / "spk1.scp").exists()


def test_spawned_workers_see_the_registration():
    """ESPnet's multi-GPU training spawns fresh interpreters whose target, CLIPSepTask.main_worker, arrives
    pickled: unpickling it imports our task module, which registers. Checked with the start-up hook off."""
    probe = (
        "import pickle, sys\n"
        "from espnet2.tasks.enh import separator_choices, preprocessor_choices\n"
        "before = 'clipsep' in separator_choices.classes\n"
        "target = pickle.loads(sys.stdin.buffer.read())\n"
        "print(before, target.__self__.__name__ + '.' + target.__name__, 'clipsep' in separator_choices.classes,"
        " 'clipsep_mix' in preprocessor_choices.classes)\n"
    )
    env = {**os.environ, "ESPNET_CLIPSEP_AUTOREGISTER": "0"}
    out = subprocess.run([sys.executable, "-c", probe], input=pickle.dumps(CLIPSepTask.main_worker),
                         capture_output=True, env=env, timeout=300, check=True)
    assert out.stdout.decode().splitlines()[-1].split() == ["False", "CLIPSepTask.main_worker", "True", "True"]
