"""A checkpoint the loader refuses gets a message naming the file, the field or the tensors.

Each test here kills mutants of space/imagesearchtr/multiembedtr.py that survived the rest of
the suite (a message emptied to None, a wrong count, a lost file name).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import PurePosixPath

import pytest
import torch
from torch import nn

from imagesearchtr import CheckpointError, Encoder
from imagesearchtr.multiembedtr import MultiEmbedTRConfig, check_state_dict


def checkpoint_copy(src, dst, keep="pytorch_model.bin"):
    """A copy of the tiny checkpoint with only the weight file ``keep``."""
    shutil.copytree(src, dst)
    for name in ("pytorch_model.bin", "model.safetensors"):
        if name != keep:
            (dst / name).unlink(missing_ok=True)
    return dst


def write_config(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(fields), encoding="utf-8")
    return folder / "config.json"


def test_a_config_of_another_model_type_names_the_type_found(tmp_path):
    path = write_config(tmp_path, model_type="bert", text_model_name="t", vision_model_name="v")
    expected = f"{path}: model_type is 'bert', expected 'multimodal_embedder'"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        MultiEmbedTRConfig.from_file(path)


def test_a_config_without_its_component_models_names_every_missing_field(tmp_path):
    path = write_config(tmp_path, model_type="multimodal_embedder")
    expected = f"{path}: config.json lacks text_model_name, vision_model_name"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        MultiEmbedTRConfig.from_file(path)


def test_a_model_folder_missing_a_component_folder_names_it(tiny_model_dir, tmp_path):
    # Not a Hub id (those are namespace/name): a folder that did not come along, not a network
    # problem to retry for half a minute.
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model")
    shutil.rmtree(model / "text_model")
    expected = f"config.json names the component 'text_model', but there is no folder {model}"
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        Encoder.from_pretrained(model)


def test_a_config_asking_for_cls_pooling_is_refused(tmp_path):
    # MultiEmbedTR's own config says true; the author's code pools the CLS token when false.
    path = write_config(
        tmp_path, model_type="multimodal_embedder", text_model_name="t", vision_model_name="v",
        use_mean_pooling_for_text=False,
    )  # fmt: skip
    expected = f"{path}: use_mean_pooling_for_text is False; this loader implements mean pooling"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)} only$"):
        MultiEmbedTRConfig.from_file(path)
    path.write_text(path.read_text().replace("false", "true"), encoding="utf-8")
    assert MultiEmbedTRConfig.from_file(path).text_model_name == "t"


@pytest.mark.parametrize(
    ("folder", "found", "expected"),
    [("text_model", "bert", "modernbert"), ("vision_model", "vit", "dinov2")],
)
def test_a_component_model_of_the_wrong_kind_is_named(
    tiny_model_dir, tmp_path, folder, found, expected
):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model")
    config = json.loads((model / folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = found
    (model / folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    component = folder.split("_")[0]
    message = f"the {component} model is a {found!r}, expected {expected!r}"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Encoder.from_pretrained(model, dtype="float32")


def test_a_checkpoint_that_does_not_fit_names_its_weight_file(tiny_model_dir, tmp_path):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    state.pop("text_proj.ln.weight")
    torch.save(state, weights)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{weights} does not match")):
        Encoder.from_pretrained(model, dtype="float32")


def test_unreadable_safetensors_are_named(tiny_model_dir, tmp_path):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model", keep="model.safetensors")
    weights = model / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=re.escape(f"{weights}: unreadable safetensors (")):
        Encoder.from_pretrained(model, dtype="float32")


def test_a_refused_pickle_says_what_torch_refused(tiny_model_dir, tmp_path):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    # A plain object, harmless but not a tensor: weights_only refuses to unpickle it.
    state["text_proj.ln.weight"] = PurePosixPath("not-a-tensor")
    torch.save(state, weights)
    try:
        torch.load(weights, weights_only=True)
    except Exception as err:  # the refusal the loader must pass on, first line only
        cause = f"{type(err).__name__}: {str(err).splitlines()[0]})"
    else:
        raise AssertionError("torch.load(weights_only=True) accepted a module")
    with pytest.raises(CheckpointError) as caught:
        Encoder.from_pretrained(model, dtype="float32")
    assert str(caught.value).startswith(f"{weights}: refused or unreadable ({cause}")


def test_a_folder_without_weights_names_both_weight_files(tiny_model_dir, tmp_path):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model", keep=None)
    expected = f"{model} holds neither model.safetensors nor pytorch_model.bin"
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        Encoder.from_pretrained(model, dtype="float32")


@pytest.mark.parametrize("missing", [20, 21, 25])
def test_a_long_list_of_missing_tensors_shows_twenty_and_counts_the_rest(missing):
    model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(missing)])
    with pytest.raises(CheckpointError) as caught:
        check_state_dict({}, model, "ckpt")
    lines = str(caught.value).splitlines()
    assert lines[0] == "ckpt does not match the MultiEmbedTR architecture its config describes:"
    assert lines[1] == f"  {missing} missing tensor(s):"
    shown = sorted(f"{i}.weight" for i in range(missing))[:20]
    assert lines[2:22] == [f"    {name}" for name in shown]
    assert lines[22:] == ([f"    ... and {missing - 20} more"] if missing > 20 else [])


def test_missing_unexpected_and_mis_shaped_tensors_are_listed_under_their_own_headings():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1, bias=False))
    state = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(4), "2.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError) as caught:
        check_state_dict(state, model, "ckpt")
    assert str(caught.value).splitlines()[1:] == [
        "  1 missing tensor(s):",
        "    1.weight",
        "  1 unexpected tensor(s):",
        "    2.weight",
        "  1 mis-shaped tensor(s):",
        "    0.bias: checkpoint (4,) vs model (3,)",
    ]


@pytest.mark.parametrize("content", ["a list of tensors", "a number among the tensors"])
def test_a_pickle_that_is_not_a_state_dict_of_tensors_is_refused(tiny_model_dir, tmp_path, content):
    model = checkpoint_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    if content == "a list of tensors":
        state = list(state.values())
    else:
        state["text_proj.ln.weight"] = 3
    torch.save(state, weights)
    expected = f"{weights}: not a state dict of tensors"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        Encoder.from_pretrained(model, dtype="float32")
