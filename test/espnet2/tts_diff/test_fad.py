"""espnet2.tts_diff.fad: VGGish front end, weights loading, FAD."""

import numpy as np
import pytest
import torch

from espnet2.tts_diff.fad import (
    EXAMPLE_FRAMES,
    N_MELS,
    VGGish,
    frechet_audio_distance,
    load_vggish,
    vggish_embeddings,
    vggish_examples,
    vggish_mel_matrix,
)


def _sine(freq, seconds=2.0, fs=16000, amp=0.5):
    t = np.arange(int(seconds * fs)) / fs
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(VGGish().state_dict(), path)
    return path


def test_mel_matrix_is_vggish_s():
    w = vggish_mel_matrix().numpy()
    assert w.shape == (257, N_MELS)
    assert np.all(w[0] == 0) and np.all(w >= 0) and w.max() <= 1.0
    # bins at or above 7,500 Hz (bin 240 = 7,500 Hz exactly) get no weight; every band has some
    assert np.all(w[240:] == 0) and np.all(w.sum(0) > 0)
    # by hand: mel(125) = 185.17, mel(7500) = 2773.33, 66 edges 39.818 mel apart; band 19 peaks at mel
    # 981.53 = 972.4 Hz, between bins 31 (968.75 Hz, mel 979.08) and 32; bin 31's weight (979.08 - 941.71) / 39.818
    assert int(np.argmax(w[:, 19])) == 31
    assert w[31, 19] == pytest.approx(0.93857, abs=1e-4)
    assert w[32, 19] + w[32, 20] == pytest.approx(1.0, abs=1e-5)  # adjacent triangles share a bin


def test_examples_count_and_the_band_of_a_sine():
    x = vggish_examples(_sine(1000, seconds=4.5), 16000)
    assert x.shape == (4, 1, EXAMPLE_FRAMES, N_MELS)  # 448 frames -> 4 whole examples
    assert int(x.mean(dim=(0, 1, 2)).argmax()) == 19
    assert vggish_examples(_sine(1000, seconds=0.3), 16000).shape[0] == 1  # padded to one example
    # another rate is resampled: the same tone at 32 kHz peaks in the same band, same example count
    y = vggish_examples(np.repeat(_sine(1000, seconds=4.5, fs=32000)[:, None], 2, axis=1), 32000)
    assert y.shape == x.shape and int(y.mean(dim=(0, 1, 2)).argmax()) == 19


def test_state_dict_layout_is_the_released_files():
    # vggish-10086976.pth: convs at features.{0,3,6,8,11,13}, linears at embeddings.{0,2,4}
    shapes = {k: tuple(v.shape) for k, v in VGGish().state_dict().items()}
    convs = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256), 13: (512, 512)}
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in convs.items()}
    expected.update({f"features.{i}.bias": (o,) for i, (o, _) in convs.items()})
    for i, (o, c) in {0: (4096, 12288), 2: (4096, 4096), 4: (128, 4096)}.items():
        expected.update({f"embeddings.{i}.weight": (o, c), f"embeddings.{i}.bias": (o,)})
    assert shapes == expected


def test_vggish_shapes_and_loading(weights, tmp_path):
    model = load_vggish(weights)
    clips = [_sine(440), _sine(2000, seconds=3.0), _sine(700, seconds=1.0)]
    emb = vggish_embeddings(model, clips, 16000, batch_size=2)
    assert emb.shape == (2 + 3 + 1, 128) and np.all(emb >= 0)  # 2 s -> 2 examples, 3 s -> 3, 1 s -> 1; ReLU
    np.testing.assert_allclose(vggish_embeddings(model, clips, 16000, batch_size=64), emb, rtol=1e-5, atol=1e-6)
    one = model(vggish_examples(clips[1], 16000)).detach().double().numpy()
    np.testing.assert_allclose(emb[2:5], one, rtol=1e-5, atol=1e-6)  # clip order kept
    with pytest.raises(FileNotFoundError, match="download https://github.com/harritaylor"):
        load_vggish(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not VGGish weights"):
        load_vggish(bad)


def test_fad_zero_for_the_same_set_order_free_and_grows_with_a_shift(weights):
    model = load_vggish(weights)
    rng = np.random.default_rng(0)
    ref = [_sine(f) + 0.05 * rng.standard_normal(32000).astype(np.float32) for f in (300, 500, 800, 1300, 2100, 3400)]
    ref_emb = vggish_embeddings(model, ref, 16000)
    assert frechet_audio_distance(ref_emb, ref_emb) == pytest.approx(0.0, abs=1e-6)
    shuffled = vggish_embeddings(model, ref[::-1], 16000)
    assert frechet_audio_distance(shuffled, ref_emb) == pytest.approx(0.0, abs=1e-6)
    near = vggish_embeddings(model, [w * 0.9 for w in ref], 16000)
    far = vggish_embeddings(model, [0.3 * rng.standard_normal(32000).astype(np.float32) for _ in ref], 16000)
    assert 0 < frechet_audio_distance(near, ref_emb) < frechet_audio_distance(far, ref_emb)
