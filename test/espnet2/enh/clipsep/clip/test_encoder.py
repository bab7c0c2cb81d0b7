"""CLIPQueryEncoder on a tiny open_clip config with random (seeded) weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from espnet2.enh.clipsep.clip.encoder import CLIPSEP_TEMPLATES, CLIPQueryEncoder
from espnet2.enh.clipsep.clip.image_query import center_frames, list_frames


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = CLIPQueryEncoder("clipsep-tiny", pretrained=None, device="cpu", batch_size=3)
    enc.model  # build now, under the seed
    return enc


def _image(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def test_text_is_the_template_mean_of_raw_embeddings(encoder):
    emb = encoder.encode_text(["dog barking", "violin"])
    assert emb.shape == (2, 64) and emb.dtype == torch.float32
    model, tok = encoder.model, encoder._tokenizer
    for i, q in enumerate(["dog barking", "violin"]):
        prompts = [t.format(q) for t in CLIPSEP_TEMPLATES]
        assert prompts[0] == f"a photo of {q}" and len(prompts) == 4
        with torch.no_grad():
            per_template = model.encode_text(tok(prompts), normalize=False)
        torch.testing.assert_close(emb[i], per_template.mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(2))  # not L2-normalised
    assert not torch.allclose(emb[0], emb[1])


def test_text_templates_override(encoder):
    one = encoder.encode_text(["violin"], templates=["{}"])
    with torch.no_grad():
        ref = encoder.model.encode_text(encoder._tokenizer(["violin"]), normalize=False)
    torch.testing.assert_close(one, ref, rtol=1e-5, atol=1e-6)


def test_images_are_the_frame_mean(encoder, tmp_path):
    frames = [_image(tmp_path / f"{i}.png", i) for i in range(4)]
    emb = encoder.encode_images([frames[:3], frames[3:]])
    assert emb.shape == (2, 64)
    with torch.no_grad():
        single = torch.cat(
            [encoder.model.encode_image(encoder._preprocess(Image.open(f).convert("RGB"))[None]) for f in frames]
        )
    torch.testing.assert_close(emb[0], single[:3].mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb[1], single[3], rtol=1e-4, atol=1e-5)


def test_frozen_model_never_in_a_state_dict(encoder):
    holder = torch.nn.Module()
    holder.query_encoder = encoder
    holder.proj = torch.nn.Linear(64, 2)
    assert set(holder.state_dict()) == {"proj.weight", "proj.bias"}
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert not encoder.model.training


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_reproduces_embeddings(encoder, tmp_path, suffix):
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in encoder.model.state_dict().items()}
    if suffix == ".pt":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel-style prefix
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = CLIPQueryEncoder("clipsep-tiny", pretrained=str(path), device="cpu")
    torch.testing.assert_close(loaded.encode_text(["violin"]), encoder.encode_text(["violin"]))


def test_center_frames_and_listing(tmp_path):
    assert center_frames(list(range(10)), 3) == [3, 4, 5]
    assert center_frames([0, 1], 3) == [0, 1]
    for name in ("000002.jpg", "000001.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["000001.jpg", "000002.jpg"]


# ------------------------------------------------------------------------------------------------
# one clear error per bad input


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Z-99'"):
        CLIPQueryEncoder("ViT-Z-99", pretrained=None)


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt: CLIP checkpoint not found"):
        CLIPQueryEncoder("clipsep-tiny", pretrained=str(tmp_path / "nope.pt"))


def test_unknown_tag():
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        CLIPQueryEncoder("ViT-B-32", pretrained="laion9000")


def test_unreadable_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a checkpoint")
    enc = CLIPQueryEncoder("clipsep-tiny", pretrained=str(path), device="cpu")
    with pytest.raises(ValueError, match=r"broken.pt: cannot load as CLIP clipsep-tiny checkpoint"):
        enc.encode_text(["dog"])


def test_checkpoint_needing_pickle_execution_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "extra": CLIPQueryEncoder}, path)  # a class: needs arbitrary unpickling
    enc = CLIPQueryEncoder("clipsep-tiny", pretrained=str(path), device="cpu")
    with pytest.raises(ValueError, match="pickled.pt: cannot load"):
        enc.model


def test_offline_without_weights_says_what_to_download():
    enc = CLIPQueryEncoder("ViT-B-32", pretrained="openai", device="cpu")
    with pytest.raises(RuntimeError) as err:
        enc.model
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("ViT-B-32/openai", "timm/vit_base_patch32_clip_224.openai", "--clip_pretrained"):
        assert part in msg


def test_not_an_image(encoder, tmp_path):
    bad = tmp_path / "frame.jpg"
    bad.write_text("not really a jpeg")
    with pytest.raises(ValueError, match="frame.jpg: not a readable image"):
        encoder.encode_images([[bad]])


def test_empty_query(encoder):
    with pytest.raises(ValueError, match="empty text query at position 1"):
        encoder.encode_text(["dog", "  "])
    with pytest.raises(TypeError):
        encoder.encode_text("dog")
