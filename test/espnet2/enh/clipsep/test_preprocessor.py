import argparse
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from espnet2.enh.clipsep.clip_window import center_frame_mean, crop_around, middle_window
from espnet2.enh.clipsep.clip.image_query import center_frames
from espnet2.enh.clipsep.preprocessor import CLIPSepMixPreprocessor, center_frame_stack, is_frames
from espnet2.enh.clipsep.task import CLIPSepTask

FS = 16000


@pytest.fixture
def clips(tmp_path):
    """5 clips of 3 s: clip c is a constant c+1 (so every sample tells its source), 3 frame embeddings each."""
    wav, emb, text = [], [], []
    for c in range(5):
        audio = np.full(3 * FS, 0.1 * (c + 1), dtype=np.float32)
        soundfile.write(tmp_path / f"c{c}.wav", audio, FS, subtype="FLOAT")
        frames = np.stack([np.full(4, 10 * c + f, dtype=np.float32) for f in range(3)])
        np.save(tmp_path / f"c{c}.npy", frames)
        np.save(tmp_path / f"t{c}.npy", np.full(4, -c, dtype=np.float32))
        wav.append(f"c{c} {tmp_path / f'c{c}.wav'}\n")
        emb.append(f"c{c} {tmp_path / f'c{c}.npy'}\n")
        text.append(f"c{c} {tmp_path / f't{c}.npy'}\n")
    (tmp_path / "wav.scp").write_text("".join(wav))
    (tmp_path / "query.scp").write_text("".join(emb))
    (tmp_path / "text.scp").write_text("".join(text))
    return tmp_path


def _item(clips, c):
    audio, _ = soundfile.read(clips / f"c{c}.wav", dtype="float32")
    return {"speech_ref1": audio, "query1": np.load(clips / f"c{c}.npy"), "text_query1": np.load(clips / f"t{c}.npy")}


def test_center_frame_mean_and_crop():
    q = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_allclose(center_frame_mean(q, 2, 3), q[1:4].mean(0))
    np.testing.assert_allclose(center_frame_mean(q, 0, 3), q[0:3].mean(0))  # shifted inside
    np.testing.assert_allclose(center_frame_mean(q, 4, 3), q[2:5].mean(0))
    vec = np.ones(4, dtype=np.float32)
    assert center_frame_mean(vec, 7, 3) is vec
    label = np.array([[3]], dtype=np.int64)  # LabelSep ids pass through untouched
    assert center_frame_mean(label, 0, 3) is label
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_around(x, 5, 4), x[3:7])
    np.testing.assert_array_equal(crop_around(x, 0, 4), x[0:4])
    np.testing.assert_array_equal(crop_around(x, 9, 4), x[6:10])
    np.testing.assert_array_equal(crop_around(x, 5, 12), np.concatenate([x, [0, 0]]))


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 10])
def test_eval_reduction_uses_the_cached_centre_frames(length):
    """Per-frame queries reduced at evaluation == the frames `embed` averages for a clip (even counts too)."""
    q = np.arange(length * 2, dtype=np.float32).reshape(length, 2)
    out = CLIPSepMixPreprocessor(False)("x", {"query1": q})
    np.testing.assert_allclose(out["query1"], np.mean(center_frames(list(q), 3), axis=0))
    assert middle_window(10, 3) == slice(3, 6)


def test_training_mixture(clips):
    pre = CLIPSepMixPreprocessor(
        True, str(clips / "wav.scp"), str(clips / "query.scp"), text_query_scp=str(clips / "text.scp"),
        segment=FS, gain_range=[0.5, 1.5],
    )
    random.seed(0)
    for _ in range(20):
        out = pre("c0", _item(clips, 0))
        assert set(out) == {"speech_mix", "speech_ref1", "speech_ref2", "query1", "query2", "text_query1", "text_query2"}
        for key in ("speech_mix", "speech_ref1", "speech_ref2"):
            assert out[key].shape == (FS,) and out[key].dtype == np.float32
        np.testing.assert_allclose(out["speech_mix"], out["speech_ref1"] + out["speech_ref2"], atol=1e-6)
        # Source 1 is clip 0 (value 0.1) scaled by U(0.5, 1.5) / 2; source 2 another clip with its own query.
        g1 = out["speech_ref1"][0] / 0.1
        assert 0.25 - 1e-6 <= g1 <= 0.75 + 1e-6 and np.ptp(out["speech_ref1"]) < 1e-6
        partner = int(round(float(out["query2"][0]) / 10 - 0.4))  # query = mean of 3 frames of that clip
        assert partner != 0
        np.testing.assert_allclose(out["query2"], np.full(4, 10 * partner + 1.0))
        np.testing.assert_allclose(out["text_query2"], np.full(4, -partner))
        g2 = out["speech_ref2"][0] / (0.1 * (partner + 1))
        assert 0.25 - 1e-6 <= g2 <= 0.75 + 1e-6
        np.testing.assert_allclose(out["query1"], np.full(4, 1.0))
        np.testing.assert_allclose(out["text_query1"], np.zeros(4))


def test_training_mixture_is_reproducible_by_seed(clips):
    pre = CLIPSepMixPreprocessor(True, str(clips / "wav.scp"), str(clips / "query.scp"), segment=FS)
    random.seed(3)
    a = pre("c1", _item(clips, 1))
    random.seed(3)
    b = pre("c1", _item(clips, 1))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_short_clip_is_zero_padded_and_loud_mixture_rescaled(tmp_path):
    for c in range(2):
        soundfile.write(tmp_path / f"c{c}.wav", np.full(FS // 2, 0.99, dtype=np.float32), FS, subtype="FLOAT")
        np.save(tmp_path / f"c{c}.npy", np.ones(4, dtype=np.float32))
    (tmp_path / "wav.scp").write_text("".join(f"c{c} {tmp_path / f'c{c}.wav'}\n" for c in range(2)))
    (tmp_path / "q.scp").write_text("".join(f"c{c} {tmp_path / f'c{c}.npy'}\n" for c in range(2)))
    pre = CLIPSepMixPreprocessor(True, str(tmp_path / "wav.scp"), str(tmp_path / "q.scp"), segment=FS,
                                 gain_range=[1.5, 1.5], num_spk=2)
    out = pre("c0", {"speech_ref1": np.full(FS // 2, 0.99, dtype=np.float32), "query1": np.ones(4, np.float32)})
    assert out["speech_mix"].shape == (FS,)
    assert np.abs(out["speech_mix"]).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(out["speech_mix"], out["speech_ref1"] + out["speech_ref2"], atol=1e-6)
    assert np.count_nonzero(out["speech_ref1"]) == FS // 2


def test_eval_passes_through_and_reduces_per_frame_queries(clips):
    pre = CLIPSepMixPreprocessor(False)
    q = np.arange(15, dtype=np.float32).reshape(5, 3)
    data = {"speech_mix": np.zeros(10, np.float32), "query1": q, "query2": np.ones(3, np.float32)}
    out = pre("x", dict(data))
    np.testing.assert_allclose(out["query1"], q[1:4].mean(0))
    np.testing.assert_array_equal(out["query2"], data["query2"])
    assert out["speech_mix"] is data["speech_mix"]


def test_bad_configuration(clips, tmp_path):
    with pytest.raises(ValueError, match="source_scp and query_scp"):
        CLIPSepMixPreprocessor(True)
    with pytest.raises(ValueError, match="gain_range"):
        CLIPSepMixPreprocessor(False, gain_range=[1.5, 0.5])
    (tmp_path / "few.scp").write_text(f"c0 {clips / 'c0.npy'}\n")
    with pytest.raises(ValueError, match="no query for 4 clips"):
        CLIPSepMixPreprocessor(True, str(clips / "wav.scp"), str(tmp_path / "few.scp"))


def test_task_fills_in_the_training_lists(clips):
    args = argparse.Namespace(
        preprocessor="clipsep_mix",
        preprocessor_conf={"segment": 800},
        train_data_path_and_name_and_type=[
            (str(clips / "wav.scp"), "speech_ref1", "sound"),
            (str(clips / "query.scp"), "query1", "npy"),
        ],
    )
    pre = CLIPSepTask.build_preprocess_fn(args, True)
    assert isinstance(pre, CLIPSepMixPreprocessor) and pre.train and pre.segment == 800
    assert sorted(pre.sources) == [f"c{c}" for c in range(5)]
    assert not CLIPSepTask.build_preprocess_fn(args, False).train
    args.train_data_path_and_name_and_type = args.train_data_path_and_name_and_type[:1]
    with pytest.raises(ValueError, match="has no 'query1'"):
        CLIPSepTask.build_preprocess_fn(args, True)


# ---------------------------------------------------------------------------------------------------------
# SOP: frames queries (F, H, W, 3) uint8 are stacked around the centre frame, never averaged
SECONDS = 5


@pytest.fixture
def frame_clips(tmp_path):
    """5 clips of 5 s at 1 fps: clip c's second s sounds 0.001 * (10c + s + 1) and its frame s is filled with
    the pixel value 10c + s, so that every cropped sample tells its clip and second, every frame its clip and
    index."""
    wav, frames = [], []
    for c in range(5):
        audio = np.repeat(0.001 * (10 * c + np.arange(SECONDS) + 1), FS).astype(np.float32)
        soundfile.write(tmp_path / f"c{c}.wav", audio, FS, subtype="FLOAT")
        pictures = np.stack([np.full((2, 2, 3), 10 * c + s, dtype=np.uint8) for s in range(SECONDS)])
        np.save(tmp_path / f"f{c}.npy", pictures)
        wav.append(f"c{c} {tmp_path / f'c{c}.wav'}\n")
        frames.append(f"c{c} {tmp_path / f'f{c}.npy'}\n")
    (tmp_path / "wav.scp").write_text("".join(wav))
    (tmp_path / "frames.scp").write_text("".join(frames))
    return tmp_path


def test_center_frame_stack_clamps_at_the_edges():
    frames = np.stack([np.full((2, 2, 3), f, dtype=np.uint8) for f in range(5)])

    def picked(center, num=3, of=frames):
        out = center_frame_stack(of, center, num)
        assert out.dtype == np.float32 and out.shape == (num, 2, 2, 3)
        assert (out == out[:, :1, :1, :1]).all()  # whole frames, unchanged pixel values
        return out[:, 0, 0, 0].tolist()

    assert picked(2) == [1, 2, 3]
    assert picked(0) == [0, 0, 1]
    assert picked(4) == [3, 4, 4]
    assert picked(2, num=4) == [1, 2, 3, 4]  # even: one more frame forward, as center_frame_mean's window
    assert picked(0, of=frames[:1]) == [0, 0, 0]
    assert is_frames(frames) and not is_frames(frames.astype(np.float32)) and not is_frames(frames[0])
    with pytest.raises(ValueError, match=r"expected \(F, H, W, 3\)"):
        center_frame_stack(frames[..., :2], 0, 3)


def test_training_mixture_stacks_the_frames_around_each_sources_centre(frame_clips):
    pre = CLIPSepMixPreprocessor(True, str(frame_clips / "wav.scp"), str(frame_clips / "frames.scp"),
                                 segment=1, gain_range=[1.0, 1.0])
    item = {"speech_ref1": soundfile.read(frame_clips / "c2.wav", dtype="float32")[0],
            "query1": np.load(frame_clips / "f2.npy")}
    random.seed(0)
    centres = set()
    for _ in range(40):
        out = pre("c2", dict(item))
        for n in (1, 2):
            q = out[f"query{n}"]
            assert q.dtype == np.float32 and q.shape == (3, 2, 2, 3)
            # The one cropped sample (gain 1/2) names the source's clip and its random centre second.
            code = int(round(float(out[f"speech_ref{n}"][0]) / 0.5 / 0.001)) - 1
            clip, centre = divmod(code, 10)
            assert (clip == 2) == (n == 1)
            expected = [10 * clip + max(centre - 1, 0), 10 * clip + centre, 10 * clip + min(centre + 1, SECONDS - 1)]
            assert q[:, 0, 0, 0].tolist() == expected
            assert (q == q[:, :1, :1, :1]).all()
            centres.add(centre)
    assert centres == set(range(SECONDS))  # the edges (clamped windows) included


@pytest.mark.parametrize("length, expected", [(5, [1, 2, 3]), (3, [0, 1, 2]), (2, [0, 1, 1]), (1, [0, 0, 0])])
def test_eval_reduces_frames_to_the_middle_ones(length, expected):
    frames = np.stack([np.full((2, 2, 3), f, dtype=np.uint8) for f in range(length)])
    out = CLIPSepMixPreprocessor(False)("x", {"query1": frames, "query2": frames})
    for key in ("query1", "query2"):
        assert out[key].dtype == np.float32 and out[key].shape == (3, 2, 2, 3)
        assert out[key][:, 0, 0, 0].tolist() == expected
    # The same middle frames as the CLIP image queries (dump_frames --center_frames 3 stores just these).
    if length >= 3:
        assert expected == center_frames(list(range(length)), 3)


def test_frames_pass_espnets_dataset_and_train_the_tiny_sop_model(frame_clips):
    """ESPnet's dataset refuses uint8 after preprocessing: the stacked frames must leave as float32."""
    from espnet2.train.dataset import ESPnetDataset

    config = Path(__file__).resolve().parents[4] / "egs2/clipsep/enh1/conf/tiny/train_enh_sop.yaml"
    args = CLIPSepTask.get_parser().parse_args(["--config", str(config)])
    args.train_data_path_and_name_and_type = [
        (str(frame_clips / "wav.scp"), "speech_ref1", "sound"),
        (str(frame_clips / "frames.scp"), "query1", "npy"),
    ]
    dataset = ESPnetDataset(args.train_data_path_and_name_and_type,
                            preprocess=CLIPSepTask.build_preprocess_fn(args, True))
    random.seed(1)
    _, batch = CLIPSepTask.build_collate_fn(args, True)([("c0", dataset["c0"][1]), ("c3", dataset["c3"][1])])
    assert batch["query1"].shape == (2, 3, 2, 2, 3) and batch["query1"].dtype == torch.float32
    torch.manual_seed(0)
    model = CLIPSepTask.build_model(args).train()
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss) and "wbce" in stats
    loss.backward()
    assert float(model.separator.image_net.trunk.conv1.weight.grad.abs().sum()) > 0
