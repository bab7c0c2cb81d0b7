"""Separator API: model loading (exp dir, pack, released checkpoint), chunking, resampling, channels, queries.

A tiny CLIPSep-NIT model (``conf/tiny``, weights scaled up so that its masks vary) sits in a recipe-like tree
with the tiny open_clip model the recipe would have fitted (``clip/clipsep-tiny.pt`` + ``.json``, random
weights here). CPU, no network, seconds.
"""

import copy
import math
import shutil

import numpy as np
import pytest
import soundfile
import soxr
import torch

import espnet2.enh.clipsep.separate.audio_in as audio_in_module
from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
from espnet2.enh.clipsep.separate import OverlapAdd, SeparationError, SeparationWarning, Separator

FS = 16000


@pytest.fixture(scope="session")
def sep(recipe):
    return Separator.from_pretrained(recipe / "train_enh_clipsep_nit", device="cpu", chunk_seconds=1.0,
                                     overlap_seconds=0.25)


def _snr(ref, est):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


def test_from_pretrained_uses_the_clip_the_recipe_fitted(sep, recipe):
    enc = sep.query_encoder
    assert enc.model_name == "clipsep-tiny" and enc.pretrained == str(recipe / "clip" / "clipsep-tiny.pt")
    assert sep.fs == FS and sep.query_dim == 64
    # Same text embedding as the CLIP the recipe saved, loaded on its own.
    ref = CLIPQueryEncoder("clipsep-tiny", str(recipe / "clip" / "clipsep-tiny.pt"), device="cpu")
    torch.testing.assert_close(sep.encode_queries("violin")[0].embedding, ref.encode_text(["violin"])[0])


def test_pack_and_exp_dir_give_the_same_output(pack_into, noise, sep, recipe, tmp_path):
    kw = dict(cache_dir=tmp_path / "zoo", device="cpu", chunk_seconds=1.0, overlap_seconds=0.25)
    packed = Separator.from_pretrained(recipe / "packed.zip", **kw)
    assert packed.query_encoder.pretrained == sep.query_encoder.pretrained  # the recipe's clip/ beside the pack
    x = noise(0.7)
    assert np.array_equal(packed(x, FS, query="violin"), sep(x, FS, query="violin"))

    # Moved away from the recipe tree, a pack does not say which CLIP it needs ...
    (tmp_path / "alone").mkdir()
    shutil.copy(recipe / "packed.zip", tmp_path / "alone" / "packed.zip")
    with pytest.raises(SeparationError, match="pass --clip_model and --clip_pretrained"):
        Separator.from_pretrained(tmp_path / "alone" / "packed.zip", **kw)
    # ... unless told, or unless the CLIP was packed with it (--option).
    told = Separator.from_pretrained(tmp_path / "alone" / "packed.zip", clip_model="clipsep-tiny",
                                     clip_pretrained=str(recipe / "clip" / "clipsep-tiny.pt"), **kw)
    assert np.array_equal(told(x, FS, query="violin"), sep(x, FS, query="violin"))
    pack_into(recipe, tmp_path / "alone" / "with_clip.zip", ["clip/clipsep-tiny.pt", "clip/clipsep-tiny.pt.json"])
    with_clip = Separator.from_pretrained(tmp_path / "alone" / "with_clip.zip", **kw)
    assert with_clip.query_encoder.model_name == "clipsep-tiny"
    assert str(tmp_path / "zoo") in with_clip.query_encoder.pretrained  # the unpacked copy
    assert np.array_equal(with_clip(x, FS, query="violin"), sep(x, FS, query="violin"))


def test_pack_with_its_clip_inside_the_recipe_tree(pack_into, noise, sep, recipe, tmp_path):
    """The recipe's own layout (exp/<model>/packed.zip beside exp/clip/): the same CLIP is found twice, in the pack
    and beside it; the packed one is the model's, so there is no ambiguity (the README's quick start)."""
    import shutil

    tree = tmp_path / "exp"
    shutil.copytree(recipe, tree)
    pack_into(tree, tree / "train_enh_clipsep_nit" / "packed.zip", ["clip/clipsep-tiny.pt", "clip/clipsep-tiny.pt.json"])
    packed = Separator.from_pretrained(tree / "train_enh_clipsep_nit" / "packed.zip", cache_dir=tmp_path / "zoo",
                                       device="cpu", chunk_seconds=1.0, overlap_seconds=0.25)  # fmt: skip
    assert str(tmp_path / "zoo") in packed.query_encoder.pretrained  # the packed copy, not exp/clip/
    x = noise(0.7)
    assert np.array_equal(packed(x, FS, query="violin"), sep(x, FS, query="violin"))


def test_short_input_is_exactly_one_model_pass(noise, sep):
    x = torch.from_numpy(noise(0.9))  # < one chunk (1.0 s)
    assert x.shape[-1] < sep.chunk
    single = Separator(sep.model, fs=FS, query_encoder=sep.query_encoder, chunk_seconds=None)
    chunked = sep(x, FS, query="dog barking")
    assert isinstance(chunked, torch.Tensor) and torch.equal(chunked, single(x, FS, query="dog barking"))
    # ... which is the model itself: query embedding -> forward_enhance -> clip to [-1, 1].
    emb = sep.encode_queries("dog barking")[0].embedding
    with torch.no_grad():
        pre, *_ = sep.model.forward_enhance(x[None], torch.tensor([len(x)]), {"query1": emb[None]})
    assert torch.equal(chunked, pre[0][0].clamp(-1, 1))


def test_overlap_add_weights_sum_to_one_and_chunks_stay_bounded():
    seen = []

    def fn(x):
        seen.append(x.shape[-1])
        return torch.stack([2 * x, -x])

    rng = np.random.default_rng(1)
    for total in (999, 1000, 1001, 4321, 10000):
        seen.clear()
        engine = OverlapAdd(fn, chunk=1000, overlap=300)
        x = torch.from_numpy(rng.normal(size=(3, total)).astype(np.float32))
        outs, pos = [], 0
        while pos < total:  # blocks of random size, as a file is read
            step = int(rng.integers(1, 700))
            outs.append(engine.push(x[:, pos : pos + step]))
            pos += step
        outs.append(engine.flush())
        y = torch.cat([o for o in outs if o is not None], dim=-1)
        assert y.shape == (2, 3, total)
        torch.testing.assert_close(y[0], 2 * x, rtol=0, atol=1e-5)
        torch.testing.assert_close(y[1], -x, rtol=0, atol=1e-5)
        assert max(seen) <= 1000  # memory per call is one chunk, whatever the length
        assert min(seen) == min(total, 1000)  # the last chunk is extended back to a full one
        assert len(seen) == max(1, math.ceil((total - 300) / 700))


def test_constant_gain_model_reconstructs_across_chunk_boundaries(noise, sep):
    model = copy.deepcopy(sep.model)
    with torch.no_grad():
        model.separator.mask_scale.zero_()  # mask = sigmoid(bias) everywhere
        model.separator.mask_bias.fill_(0.4)
    gain = torch.sigmoid(torch.tensor(0.4)).item()
    flat = Separator(model, fs=FS, query_encoder=sep.query_encoder, chunk_seconds=1.0, overlap_seconds=0.25)
    x = noise(5.3)  # 5 chunk boundaries
    y = flat(x, FS, query="violin")
    np.testing.assert_allclose(y, gain * x, atol=2e-5)
    # The same through the streaming resampler: 44.1 kHz in, 16 kHz out = the resampled input times the gain.
    x44 = noise(3.1, fs=44100, seed=3)
    np.testing.assert_allclose(flat(x44, 44100, query="violin"), gain * soxr.resample(x44, 44100, FS), atol=2e-5)


def test_chunked_is_close_to_a_single_pass(noise, sep):
    x = noise(12.0, seed=2)
    single = Separator(sep.model, fs=FS, query_encoder=sep.query_encoder, chunk_seconds=None)
    one = single(x, FS, query="violin")
    assert np.abs(one - 0.5 * x).max() > 0.05  # the masks are far from a constant gain
    chunked = Separator(sep.model, fs=FS, query_encoder=sep.query_encoder, chunk_seconds=4.0, overlap_seconds=1.0)
    two = chunked(x, FS, query="violin")
    end = len(x) - FS // 4  # the single pass's own time padding (to 2^levels frames) changes its last frames
    assert _snr(one[:end], two[:end]) > 15


@pytest.mark.parametrize("mask_type", ["soft", "binary"])
def test_remove_plus_query_is_the_mixture(noise, sep, mask_type):
    s = Separator(sep.model, fs=FS, query_encoder=sep.query_encoder, chunk_seconds=1.0, overlap_seconds=0.25,
                  mask_type=mask_type)
    x = noise(3.2, seed=4)
    kept, removed = s(x, FS, query="violin"), s(x, FS, query="violin", remove=True)
    assert np.abs(kept).max() > 0.01 and np.abs(removed).max() > 0.01
    np.testing.assert_allclose(kept + removed, x, atol=2e-5)
    assert sep.model.separator.remove is False and sep.model.separator.mask_type == "soft"


def test_several_queries_give_one_output_each(noise, sep):
    x = noise(2.5, seed=5)
    both = sep(x, FS, query=["violin", "dog barking"])
    assert both.shape == (2, len(x))
    np.testing.assert_allclose(both[0], sep(x, FS, query="violin"), atol=1e-6)
    np.testing.assert_allclose(both[1], sep(x, FS, query="dog barking"), atol=1e-6)
    assert np.abs(both[0] - both[1]).max() > 1e-3
    emb = sep.encode_queries(["violin"])[0].embedding
    np.testing.assert_allclose(sep(x, FS, embedding=emb)[0], both[0], atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_any_rate_in_model_or_input_rate_out(noise, sep, rate):
    x = noise(1.7, fs=rate, seed=6)
    y = sep(x, rate, query="violin")
    assert y.shape == (int(round(len(x) * FS / rate)),)
    y_in = sep(x, rate, query="violin", keep_input_rate=True)
    assert y_in.shape == x.shape
    # Back at the input rate: the model-rate output resampled (away from the ends).
    ref = soxr.resample(y, FS, rate)[: len(x)]
    n = len(x)
    np.testing.assert_allclose(y_in[n // 10 : -n // 10], ref[n // 10 : -n // 10], atol=1e-4)


def test_downmix_or_per_channel(noise, sep):
    x = noise(1.5, channels=3, seed=7)
    mono = sep(x, FS, query="violin")
    np.testing.assert_allclose(mono, sep(x.mean(0), FS, query="violin"), atol=1e-6)
    per = sep(x, FS, query=["violin", "dog"], per_channel=True)
    assert per.shape == (2, 3, x.shape[1])
    for c in range(3):
        np.testing.assert_allclose(per[0, c], sep(x[c], FS, query="violin"), atol=1e-6)


def test_file_is_streamed_block_by_block_to_the_same_result(noise, sep, tmp_path, monkeypatch):
    x = noise(3.3, fs=22050, channels=2, seed=8)
    soundfile.write(tmp_path / "in.flac", x.T, 22050, subtype="PCM_24")
    read, _ = soundfile.read(tmp_path / "in.flac", dtype="float32", always_2d=True)
    monkeypatch.setattr(audio_in_module, "BLOCK_FRAMES", 5000)  # many blocks, several chunks
    outs = sep.separate_file(tmp_path / "in.flac", tmp_path / "out", query=["violin"], per_channel=True,
                             keep_input_rate=True)
    assert [p.name for p in outs] == ["in_violin.wav"]
    y, rate = soundfile.read(outs[0], dtype="float32", always_2d=True)
    assert rate == 22050 and y.shape == read.shape
    np.testing.assert_allclose(y.T, sep(read.T, 22050, query="violin", per_channel=True, keep_input_rate=True),
                               atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in_violin.wav"]  # no temporary left


def test_image_queries_picture_and_video(make_video, noise, sep, tmp_path):
    from PIL import Image

    from espnet2.enh.clipsep.video import extract_frames

    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "frame.png")
    video = make_video(tmp_path / "clip.mp4", seconds=5.0)
    enc = sep.query_encoder
    picture, movie = sep.encode_queries(image=[tmp_path / "frame.png", video])
    assert picture.name == "image-frame" and movie.name == "image-clip"
    torch.testing.assert_close(picture.embedding, enc.encode_images([[tmp_path / "frame.png"]])[0])
    extract_frames(video, tmp_path / "frames", fps=1, size=224)
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == 5
    torch.testing.assert_close(movie.embedding, enc.encode_images([frames[1:4]])[0], rtol=1e-4, atol=1e-5)
    x = noise(1.2, seed=10)
    out = sep(x, FS, image=tmp_path / "frame.png")
    assert out.shape == (1, len(x)) and np.abs(out[0] - sep(x, FS, query="violin")).max() > 1e-4


def test_query_longer_than_clip_context_is_truncated_with_a_warning(sep):
    long = " ".join(["barking"] * 90)
    with pytest.warns(SeparationWarning, match="truncated to 77"):
        (q,) = sep.encode_queries(long)
    torch.testing.assert_close(q.embedding, sep.query_encoder.encode_text([long])[0])


def test_silent_input_gives_silence_with_a_warning(sep):
    with pytest.warns(SeparationWarning, match="all samples are zero"):
        y = sep(np.zeros((2, 44100), np.float32), 44100, query=["violin", "dog"], keep_input_rate=True)
    assert y.shape == (2, 44100) and not y.any()


def test_released_checkpoint_converts_in_memory(synthetic_checkpoint, noise, tmp_path):
    state = synthetic_checkpoint()
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1.0
    torch.save(state, tmp_path / "clipsep_nit.pt")
    s = Separator.from_pretrained(tmp_path / "clipsep_nit.pt", device="cpu")
    assert len(s.model.separator.noise_heads) == 2 and s.query_dim == 512
    assert (s.query_encoder.model_name, s.query_encoder.pretrained) == ("ViT-B-32", "openai")  # lazy: not built
    key = next(k for k in state if k.endswith("synth_net.scale"))
    torch.testing.assert_close(s.model.separator.mask_scale.detach(), state[key].flatten())
    y = s(noise(0.4), FS, embedding=torch.randn(512))
    assert y.shape == (1, int(0.4 * FS)) and np.isfinite(y).all()
