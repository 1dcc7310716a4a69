"""The Encoder reproduces MultiEmbedTR exactly, loads strictly and safely, and rejects bad input."""

from __future__ import annotations

import copy
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


def test_the_tiny_checkpoint_has_the_real_checkpoints_tensor_names(tiny_model_dir):
    # The tiny checkpoint takes its names from the installed transformers (with the DINOv2
    # attention renames undone). If an upgrade renamed another tensor, the tiny checkpoint would
    # follow and the tests stay green while the real checkpoint no longer loads.
    from conftest import REPO_ROOT

    tsv = REPO_ROOT.parent / "shared/reference/multiembedtr_state_dict.tsv"
    if not tsv.is_file():
        pytest.skip(f"{tsv} is absent: MultiEmbedTR's layout belongs in ../shared/reference")

    def pattern(key: str) -> str:  # layer numbers aside: the tiny model has fewer layers
        return re.sub(r"\.\d+\.", ".N.", key)

    lines = tsv.read_text(encoding="utf-8").splitlines()
    real = {pattern(line.split("\t")[0]) for line in lines if line and not line.startswith("#")}
    tiny = torch.load(tiny_model_dir / "pytorch_model.bin", weights_only=True)
    assert {pattern(key) for key in tiny} == real


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
        (  # the old and the new name of one tensor: one of them would be dropped silently
            lambda sd: sd.__setitem__(
                "vision_encoder.encoder.layer.0.attention.q_proj.weight",
                torch.zeros_like(
                    sd["vision_encoder.encoder.layer.0.attention.attention.query.weight"]
                ),
            ),
            r"holds vision_encoder\.encoder\.layer\.0\.attention\.q_proj\.weight twice",
        ),
    ],
    ids=["missing", "unexpected", "misshaped", "missing-renamed-dinov2-key", "renamed-twice"],
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
    # The real config.json carries auto_map (custom code); loading must not need or run it,
    # even with that code beside it, as a Hub repo would hold it.
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "with-code")
    marker = tmp_path / "ran"
    for reference in config["auto_map"].values():
        module = reference.split(".")[0]
        (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('{module}')\n")
    encoder = Encoder.from_pretrained(folder)
    assert encoder.encode_texts(["köpek"]).shape == (1, encoder.dim)
    assert not marker.exists(), marker.read_text()


def test_bad_inputs_give_clear_errors(tiny_encoder, tmp_path):
    assert tiny_encoder.encode_texts([]).shape == (0, tiny_encoder.dim)
    assert tiny_encoder.encode_images([]).shape == (0, tiny_encoder.dim)
    with pytest.raises(ValueError, match="text #1 is empty"):
        tiny_encoder.encode_texts(["köpek", "  \n\t"])
    with pytest.raises(TypeError, match="list of strings"):
        tiny_encoder.encode_texts("köpek")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    with pytest.raises(ImageLoadError, match=re.escape(str(not_image))) as err:
        tiny_encoder.encode_images([not_image])
    assert err.value.reason == "not an image file Pillow can read"
    assert err.value.kind == "not_an_image"  # what the app words in Turkish
    # An encode worker's error reaches the main process pickled, which rebuilds it from its
    # args as a copy does.
    assert str(copy.deepcopy(err.value)) == str(err.value)
    assert copy.deepcopy(err.value).kind == err.value.kind
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


def test_a_caption_is_cut_at_128_tokens_as_the_model_was_trained(tiny_encoder):
    # The model saw at most 128 tokens in training: what comes after them must not count.
    # "karlı dağlar " is 2 tokens in the tiny tokenizer, so 70 of them fill 140 (< 256).
    prefix = "karlı dağlar " * 70
    long = tiny_encoder.encode_texts([prefix + "köpek", prefix + "kedi"])
    np.testing.assert_allclose(long[0], long[1], atol=1e-6)
    # The same last word within the first 128 tokens does change the embedding.
    short = tiny_encoder.encode_texts(
        ["karlı dağlar " * 10 + "köpek", "karlı dağlar " * 10 + "kedi"]
    )
    assert not np.allclose(short[0], short[1], atol=1e-4)


def test_a_very_thin_image_is_not_scaled_up_whole(tiny_encoder):
    # The processor scales the short side to 256 px: a 400x1 strip scaled whole is 102,400 x
    # 256 pixels, 315 MB as float32 (a 20000x1 one, 13 GB). The centre it keeps is all that counts.
    import tracemalloc

    strips = [Image.new("RGB", (400, 1), (200, 30, 30)), Image.new("RGB", (1, 400), (30, 30, 200))]
    tracemalloc.start()
    try:
        vectors = tiny_encoder.encode_images(strips)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak >> 20} MB traced while encoding two 400-pixel strips"
    assert vectors.shape == (2, tiny_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # An ordinary photo's proportions reach the processor unchanged.
    photo = Image.new("RGB", (640, 427), (90, 140, 60))
    pixels = tiny_encoder.image_preprocessor([photo])
    direct = tiny_encoder.image_preprocessor.image_processor(images=[photo], return_tensors="pt")
    assert torch.equal(pixels, direct["pixel_values"].float())


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


# --- GPU choices with torch.cuda faked, precision, the NaN guard ------------------------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as a machine with 4 GPUs of a chosen compute capability would show it."""
    state = {"capability": (9, 0), "current": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device=None: state["capability"]
    )
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: state.update(current=device))
    # Emulated bf16 says yes on every GPU: the choice must not rest on it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return state


@pytest.mark.parametrize("asked", ["auto", "cuda"])
def test_each_rank_takes_the_gpu_of_its_local_rank(fake_cuda, monkeypatch, asked):
    from imagesearchtr.encoder import pick_device

    for local_rank in range(4):
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        device = pick_device(asked)
        assert device == torch.device("cuda", local_rank)
        assert fake_cuda["current"] == device  # made current for code that omits the device
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device(asked) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins
    assert pick_device("cpu") == torch.device("cpu")


def test_more_ranks_than_gpus_is_a_clear_error(fake_cuda, monkeypatch):
    from imagesearchtr.encoder import pick_device

    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(ValueError, match=r"LOCAL_RANK=4 but only 4 CUDA device.*nproc_per_node 4"):
        pick_device("auto")
    with pytest.raises(ValueError, match="only 4 CUDA"):
        pick_device("cuda:7")


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
     ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)],
)  # fmt: skip
def test_default_gpu_dtype_follows_compute_capability(fake_cuda, capability, expected):
    from imagesearchtr.encoder import pick_dtype

    fake_cuda["capability"] = capability
    assert pick_dtype(None, torch.device("cuda", 0)) == expected
    assert pick_dtype("float32", torch.device("cuda", 0)) == torch.float32


def test_dtype_names_are_case_insensitive():
    # `--dtype BF16` or `Float16` on a command line names the same dtype as its lower case.
    from imagesearchtr.encoder import pick_dtype

    cpu = torch.device("cpu")
    assert pick_dtype("BF16", cpu) == torch.bfloat16
    assert pick_dtype("Float16", cpu) == torch.float16
    assert pick_dtype("FP32", cpu) == torch.float32


def test_default_cpu_dtype_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch):
    # A CPU with AVX512-BF16/AMX runs bf16 faster; elsewhere bf16 is emulated: float32 then.
    from imagesearchtr import encoder as encoder_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(encoder_module, "_cpu_has_native_bf16", lambda: True)
    assert encoder_module.pick_dtype(None, cpu) == torch.bfloat16
    assert encoder_module.pick_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(encoder_module, "_cpu_has_native_bf16", lambda: False)
    assert encoder_module.pick_dtype(None, cpu) == torch.float32
    assert encoder_module.pick_dtype("auto", cpu) == torch.float32


def _rotary_buffers(encoder):
    model = encoder.model.text_encoder
    return {n: b for n, b in model.named_buffers() if n.endswith("inv_freq")}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_rotary_frequencies_stay_float32_after_a_reduced_precision_load(
    tiny_model_dir, tiny_encoder, dtype
):
    reduced = Encoder.from_pretrained(tiny_model_dir, dtype=dtype)
    exact = _rotary_buffers(tiny_encoder)
    loaded = _rotary_buffers(reduced)
    assert exact and loaded.keys() == exact.keys()
    for name, buffer in loaded.items():
        assert buffer.dtype == torch.float32, name
        torch.testing.assert_close(buffer, exact[name], rtol=0, atol=0)
    # The encoders themselves did change dtype.
    weight = next(reduced.model.text_encoder.parameters())
    assert weight.dtype == getattr(torch, dtype)


def test_non_finite_embeddings_are_an_error_naming_the_rows(tiny_model_dir):
    encoder = Encoder.from_pretrained(tiny_model_dir, dtype="float32")
    head = encoder.model.text_proj.ln
    texts = ["kısa", "orta uzunlukta bir metin", "bu çok daha uzun bir metin olarak duruyor"]
    # Poison only the longest text's output: a hook sets row values to NaN by input length.
    lengths = [len(t) for t in texts]

    def poison(module, args, output):
        out = output.clone()
        if out.shape[0] == len(texts):  # sorted longest first: the poisoned row is row 0
            out[0, 0] = float("nan")
        return out

    handle = head.register_forward_hook(poison)
    try:
        with pytest.raises(ValueError, match=r"text embedding\(s\) #2 .*NaN or infinite"):
            encoder.encode_texts(texts)
    finally:
        handle.remove()
    assert lengths.index(max(lengths)) == 2

    vision_head = encoder.model.image_proj.ln
    handle = vision_head.register_forward_hook(
        lambda module, args, output: output.index_fill(0, torch.tensor([1]), float("inf"))
    )
    try:
        with pytest.raises(ValueError, match=r"image embedding\(s\) #1 .*dtype='float32'"):
            encoder.encode_images([photo(), photo((0, 0, 255)), photo((0, 255, 0))])
        pixels = encoder.image_preprocessor([photo(), photo((0, 0, 255))])
        with pytest.raises(ValueError, match=r"image embedding\(s\) #11 "):
            encoder.encode_pixels(pixels, first_row=10)
    finally:
        handle.remove()


def test_encode_pixels_of_the_preprocessor_equals_encode_images(tiny_encoder):
    images = [photo(), photo((0, 120, 30), (256, 400)), photo((9, 9, 9), (500, 260))]
    pixels = tiny_encoder.image_preprocessor(images)
    assert pixels.dtype == torch.float32 and pixels.shape[0] == 3
    np.testing.assert_array_equal(
        tiny_encoder.encode_pixels(pixels), tiny_encoder.encode_images(images)
    )
