"""The Encoder reproduces MultiEmbedTR exactly, loads strictly and safely, and rejects bad input."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imagesearchtr import CheckpointError, Encoder, ImageLoadError

TEXTS = ["karlı dağlar", "Deniz kenarında gün batımı", "İki köpek karda oynuyor", "a"]


def photo(color=(200, 40, 40), size=(300, 200)) -> Image.Image:
    """A small synthetic photo with structure, so rotations and crops change the embedding."""
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 20):
        img.paste((x % 255, 255 - x % 255, 90), (x, 0, x + 10, size[1] // 2))
    return img


def copy_checkpoint(src, dst, keep=("bin",)):
    shutil.copytree(src, dst)
    for fmt, name in (("bin", "pytorch_model.bin"), ("safetensors", "model.safetensors")):
        if fmt not in keep:
            (dst / name).unlink()
    return dst


# --- golden numbers: a plain computation from ../shared/reference/MULTIEMBEDTR.md ------------


def reference_embeddings(model_dir, texts, images):
    """Recompute MultiEmbedTR from its published facts, sharing no code with the Encoder."""
    from transformers import AutoConfig, AutoTokenizer, Dinov2Model, ModernBertModel

    sd = torch.load(model_dir / "pytorch_model.bin", weights_only=True)
    text_model = ModernBertModel(AutoConfig.from_pretrained(model_dir / "text_model")).eval()
    text_model.load_state_dict(
        {k[len("text_encoder.") :]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    )
    renames = {
        "attention.attention.query": "attention.q_proj",
        "attention.attention.key": "attention.k_proj",
        "attention.attention.value": "attention.v_proj",
        "attention.output.dense": "attention.o_proj",
    }
    vision_sd = {}
    for key, value in sd.items():
        if key.startswith("vision_encoder."):
            key = key[len("vision_encoder.") :]
            for old, new in renames.items():
                key = key.replace(old, new)
            vision_sd[key] = value
    vision_model = Dinov2Model(AutoConfig.from_pretrained(model_dir / "vision_model")).eval()
    vision_model.load_state_dict(vision_sd)

    def head(prefix, x):
        y = F.linear(x, sd[f"{prefix}.net.0.weight"], sd[f"{prefix}.net.0.bias"])
        y = F.gelu(y)  # dropout is inactive at inference
        y = F.linear(y, sd[f"{prefix}.net.3.weight"], sd[f"{prefix}.net.3.bias"])
        y = y + x  # residual: in = out
        y = F.layer_norm(y, (y.shape[-1],), sd[f"{prefix}.ln.weight"], sd[f"{prefix}.ln.bias"])
        return F.normalize(y, dim=-1)

    tokenizer = AutoTokenizer.from_pretrained(model_dir / "text_model")
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = text_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        text_emb = head("text_proj", (hidden * mask).sum(1) / mask.sum(1))

        # DINOv2 processor: shortest edge 256 (bicubic), centre crop 224, ImageNet mean/std.
        pixels = []
        for img in images:
            img = img.convert("RGB")
            w, h = img.size
            scale = 256 / min(w, h)
            img = img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
            w, h = img.size
            left, top = (w - 224) // 2, (h - 224) // 2
            img = img.crop((left, top, left + 224, top + 224))
            arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = (arr - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
            pixels.append(torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32)))
        cls = vision_model(pixel_values=torch.stack(pixels)).last_hidden_state[:, 0]
        image_emb = head("image_proj", cls)
    return text_emb.numpy(), image_emb.numpy()


def test_embeddings_equal_the_reference_computation(tiny_model_dir, tiny_encoder, shared_data):
    images = [Image.open(p) for p in sorted((shared_data / "images").glob("*.jpg"))[:6]]
    images.append(photo(size=(320, 240)))  # not square: exercises the resize and crop maths
    ref_text, ref_image = reference_embeddings(tiny_model_dir, TEXTS, images)
    text = tiny_encoder.encode_texts(TEXTS)
    image = tiny_encoder.encode_images(images)
    np.testing.assert_allclose(text, ref_text, atol=1e-5)
    np.testing.assert_allclose(image, ref_image, atol=1e-4)


def test_output_contract(tiny_encoder):
    emb = tiny_encoder.encode_texts(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (len(TEXTS), tiny_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    img = tiny_encoder.encode_images([photo(), photo((10, 10, 200))])
    assert img.dtype == np.float32 and img.shape == (2, tiny_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)


def test_batching_and_length_sorting_do_not_change_results(tiny_encoder):
    texts = [f"{t} {i}" * (i % 5 + 1) for i, t in enumerate(TEXTS * 5)]
    one_batch = tiny_encoder.encode_texts(texts, batch_size=64)
    small_batches = tiny_encoder.encode_texts(texts, batch_size=3)
    singles = np.concatenate([tiny_encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(one_batch, small_batches, atol=1e-5)
    np.testing.assert_allclose(one_batch, singles, atol=1e-5)


def test_both_weight_formats_load_identically(tiny_model_dir, tmp_path):
    bin_dir = copy_checkpoint(tiny_model_dir, tmp_path / "bin", keep=("bin",))
    st_dir = copy_checkpoint(tiny_model_dir, tmp_path / "st", keep=("safetensors",))
    a = Encoder.from_pretrained(bin_dir, dtype="float32")
    b = Encoder.from_pretrained(st_dir, dtype="float32")
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    np.testing.assert_array_equal(a.encode_texts(TEXTS), b.encode_texts(TEXTS))
    assert a.model_id == str(bin_dir.resolve()) and a.revision is None


def test_fingerprint_changes_with_the_weights(tiny_model_dir, tmp_path):
    other = copy_checkpoint(tiny_model_dir, tmp_path / "other")
    sd = torch.load(other / "pytorch_model.bin", weights_only=True)
    sd["text_proj.ln.bias"] = sd["text_proj.ln.bias"] + 1e-3
    torch.save(sd, other / "pytorch_model.bin")
    base = Encoder.from_pretrained(copy_checkpoint(tiny_model_dir, tmp_path / "base"))
    assert Encoder.from_pretrained(other).fingerprint != base.fingerprint


def test_wrapped_state_dict_is_accepted(tiny_model_dir, tmp_path):
    wrapped = copy_checkpoint(tiny_model_dir, tmp_path / "wrapped")
    sd = torch.load(wrapped / "pytorch_model.bin", weights_only=True)
    torch.save({"state_dict": sd}, wrapped / "pytorch_model.bin")
    plain = Encoder.from_pretrained(copy_checkpoint(tiny_model_dir, tmp_path / "plain"))
    assert Encoder.from_pretrained(wrapped).fingerprint == plain.fingerprint


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda sd: sd.pop("text_proj.ln.weight"), r"missing.*\n.*text_proj\.ln\.weight"),
        (
            lambda sd: sd.__setitem__("extra.weight", torch.zeros(2)),
            r"unexpected.*\n.*extra\.weight",
        ),
        (
            lambda sd: sd.__setitem__("image_proj.ln.bias", torch.zeros(7)),
            r"mis-shaped.*\n.*image_proj\.ln\.bias: checkpoint \(7,\)",
        ),
        (
            lambda sd: sd.pop("vision_encoder.encoder.layer.0.attention.attention.query.weight"),
            r"missing.*\n.*vision_encoder\.encoder\.layer\.0\.attention\.q_proj\.weight",
        ),
    ],
    ids=["missing", "unexpected", "misshaped", "missing-renamed-dinov2-key"],
)
def test_strict_loading_names_the_bad_tensor(tiny_model_dir, tmp_path, edit, expected):
    broken = copy_checkpoint(tiny_model_dir, tmp_path / "broken")
    sd = torch.load(broken / "pytorch_model.bin", weights_only=True)
    edit(sd)
    torch.save(sd, broken / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=re.compile(expected)):
        Encoder.from_pretrained(broken)


class _Payload:
    """Unpickling this runs a shell command: the classic malicious-checkpoint trick."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tiny_model_dir, tmp_path):
    evil = copy_checkpoint(tiny_model_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"
    sd = torch.load(evil / "pytorch_model.bin", weights_only=True)
    sd["text_proj.ln.weight"] = _Payload(marker)
    torch.save(sd, evil / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        Encoder.from_pretrained(evil)
    assert not marker.exists()


def test_remote_code_config_is_never_executed(tiny_model_dir, tmp_path):
    # The real config.json carries auto_map (custom code); loading must not need or run it.
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert "auto_map" in config
    assert not list(tiny_model_dir.glob("*.py"))


def test_bad_inputs_give_clear_errors(tiny_encoder, tmp_path):
    assert tiny_encoder.encode_texts([]).shape == (0, tiny_encoder.dim)
    assert tiny_encoder.encode_images([]).shape == (0, tiny_encoder.dim)
    with pytest.raises(ValueError, match="text #1 is empty"):
        tiny_encoder.encode_texts(["köpek", "  \n\t"])
    with pytest.raises(TypeError, match="list of strings"):
        tiny_encoder.encode_texts("köpek")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    with pytest.raises(ImageLoadError, match=re.escape(str(not_image))):
        tiny_encoder.encode_images([not_image])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="0 bytes"):
        tiny_encoder.encode_images([empty])
    with pytest.raises(ImageLoadError, match="no such file"):
        tiny_encoder.encode_images([tmp_path / "missing.jpg"])


def test_very_long_text_is_truncated_not_an_error(tiny_encoder):
    long = "karlı dağlar " * 2000
    emb = tiny_encoder.encode_texts([long, "karlı dağlar " * 200])
    # Both are cut at 128 tokens, so they embed identically.
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)


def test_missing_model_folder_and_bad_dtype(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Encoder.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Encoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown dtype"):
        Encoder.from_pretrained(tmp_path, dtype="float8")


def test_reduced_precision_default_stays_within_cosine_0999(tiny_model_dir, tiny_encoder):
    fast = Encoder.from_pretrained(tiny_model_dir)  # dtype=None: the fastest safe choice
    images = [photo(), photo((0, 120, 30), (256, 400))]
    cos_img = (fast.encode_images(images) * tiny_encoder.encode_images(images)).sum(1)
    cos_txt = (fast.encode_texts(TEXTS) * tiny_encoder.encode_texts(TEXTS)).sum(1)
    assert cos_img.min() >= 0.999 and cos_txt.min() >= 0.999


# --- the CLIP family behind the same interface -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, tiny_model_dir):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_model_dir / "text_model")
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def test_clip_adapter_matches_get_features(tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    encoder = Encoder.from_pretrained(tiny_clip_dir, dtype="float32")
    assert encoder.dim == 24
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    images = [photo(), photo((10, 200, 10))]
    with torch.no_grad():
        text = model.get_text_features(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
        image = model.get_image_features(
            pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]
        )
    text = getattr(text, "pooler_output", text)
    image = getattr(image, "pooler_output", image)
    np.testing.assert_allclose(
        encoder.encode_texts(TEXTS), F.normalize(text, dim=-1).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        encoder.encode_images(images), F.normalize(image, dim=-1).numpy(), atol=1e-5
    )
