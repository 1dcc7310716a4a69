"""The dataset and Space cards: Hub YAML, merge with an existing card, the usage snippet.

Offline: cards are rendered and parsed locally (never ``validate()``-d, which needs a server).
One test builds a tiny dataset folder and runs the card's usage snippet verbatim against it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from datasets import Features, Image, List, Value
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, SpaceCard

from hub_card import (
    extract_usage_snippet,
    gradio_version,
    render_dataset_card,
    render_space_card,
    size_category,
)
from hub_card.dataset_card import USER_NOTES_END, USER_NOTES_START
from imagesearchtr.manifest import IndexInfo, Manifest

HUB_SOURCE = "ituperceptron/image-captioning-turkish"
REPO = "testuser/trsearch"
MODEL = "utkubascakir/MultiEmbedTR"
MODEL_REV = "0123456789abcdef0123456789abcdef01234567"


def make_features(dim: int = 768) -> Features:
    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "path": Value("string"),
            "captions": List(Value("string")),
            "image_emb": List(Value("float32"), length=dim),
            "caption_emb": List(Value("float32"), length=dim),
            "sha256": Value("string"),
        }
    )


def make_manifest(
    num_rows: int = 20_000,
    *,
    model_id: str = MODEL,
    model_revision: str | None = MODEL_REV,
    dim: int = 768,
    source: str = HUB_SOURCE,
    caption_params: dict | None = None,
) -> Manifest:
    return Manifest(
        model_id=model_id,
        model_revision=model_revision,
        model_fingerprint="sha256:" + "f" * 64,
        dim=dim,
        num_rows=num_rows,
        data_hash="d" * 64,
        indices=(
            IndexInfo("image_emb", "index/image_emb.faiss", "flat", "Flat", num_rows),
            IndexInfo(
                "caption_emb",
                "index/caption_emb.faiss",
                "ivf",
                "IVF64,Flat",
                num_rows,
                caption_params or {},
            ),
        ),
        num_captions=3 * num_rows,
        num_skipped=4,
        versions={"datasets": "5.2.0", "faiss": "1.15.1", "imagesearchtr": "0.1.0"},
        created_at="2025-06-01T12:00:00+00:00",
        source=source,
    )


def render(manifest: Manifest | None = None, **overrides) -> str:
    manifest = manifest or make_manifest()
    kwargs = {
        "repo_id": REPO,
        "source": manifest.source,
        "source_license": "cc-by-4.0",
        "features": make_features(manifest.dim).to_dict(),
        "num_captions": manifest.num_captions,
        "num_skipped": manifest.num_skipped,
        "skipped_reasons": {"unreadable image": 3, "empty captions": 1},
    }
    kwargs.update(overrides)
    return render_dataset_card(manifest, **kwargs)


def yaml_block(card_text: str) -> dict:
    assert card_text.startswith("---\n")
    end = card_text.index("\n---\n", 4)
    return yaml.safe_load(card_text[4:end])


# -- dataset card: YAML -----------------------------------------------------------------------


def test_dataset_card_yaml_fields():
    meta = yaml_block(render())
    assert meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["tr"]
    assert meta["task_categories"] == ["text-to-image", "image-to-text", "image-feature-extraction"]
    for tag in ("image-search", "faiss", "embeddings", "multiembedtr", "turkish", "imagesearchtr"):
        assert tag in meta["tags"]
    assert meta["size_categories"] == ["10K<n<100K"]
    assert meta["source_datasets"] == [HUB_SOURCE]
    assert meta["pretty_name"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    info = meta["dataset_info"]
    assert info["splits"] == [{"name": "train", "num_examples": 20_000}]
    assert {"name": "image", "dtype": "image"} in info["features"]
    assert {"name": "image_emb", "list": "float32", "length": 768} in info["features"]
    assert [f["name"] for f in info["features"]] == list(make_features())
    # No invented YAML key for the model: dataset cards have none (see dataset_card.py).
    assert "models" not in meta and "base_model" not in meta


def test_dataset_card_parses_as_datasets_reads_it():
    """load_dataset reads configs and dataset_info from the card: they must parse back."""
    data = DatasetCard(render()).data
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/*.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert infos["default"].features == make_features()
    assert infos["default"].splits["train"].num_examples == 20_000


def test_local_source_license_other_and_no_source_datasets(tmp_path):
    meta = yaml_block(
        render(
            make_manifest(413, source="local folder"),
            repo_id=None,
            local_dir=str(tmp_path),
            source=str(tmp_path / "photos"),
            source_license=None,
        )
    )
    assert meta["license"] == "other"
    assert "source_datasets" not in meta
    assert meta["size_categories"] == ["n<1K"]


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (9_999, "1K<n<10K"),
        (20_000, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (1_500_000, "1M<n<10M"),
        (50_000_000, "10M<n<100M"),
    ],
)
def test_size_categories(rows, bucket):
    assert size_category(rows) == bucket
    assert yaml_block(render(make_manifest(rows)))["size_categories"] == [bucket]


def test_features_in_any_of_the_three_forms():
    features = make_features()
    from_dict = yaml_block(render(features=features.to_dict()))["dataset_info"]
    from_obj = yaml_block(render(features=features))["dataset_info"]
    from_yaml = yaml_block(render(features=from_dict["features"]))["dataset_info"]
    assert from_dict == from_obj == from_yaml
    with pytest.raises(TypeError):
        render(features="image,captions")


def test_multiembedtr_tag_only_for_multiembedtr():
    meta = yaml_block(render(make_manifest(model_id="openai/clip-vit-base-patch32")))
    assert "multiembedtr" not in meta["tags"]
    assert "image-search" in meta["tags"]


# -- dataset card: merge with the card already in the repo -----------------------------------

PUSHED_BY_DATASETS = """---
license: mit
annotations_creators:
- found
tags:
- my-own-tag
- faiss
viewer: false
configs:
- config_name: captions_only
  data_files:
  - split: train
    path: captions/*.parquet
- config_name: default
  data_files:
  - split: train
    path: data/train-*
dataset_info:
  features:
  - name: image
    dtype: image
  splits:
  - name: train
    num_bytes: 123456
    num_examples: 7
  download_size: 100000
  dataset_size: 123456
---
"""


def test_merge_keeps_user_keys_extra_configs_and_our_keys_win():
    text = render(existing=PUSHED_BY_DATASETS)
    meta = yaml_block(text)
    # ours win
    assert meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["tr"]
    # user keys and values kept
    assert meta["annotations_creators"] == ["found"]
    assert meta["viewer"] is False
    assert "my-own-tag" in meta["tags"] and "imagesearchtr" in meta["tags"]
    assert meta["tags"].count("faiss") == 1
    # the default config is replaced, the user's extra config is kept as it was
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/*.parquet"}]
    assert configs["captions_only"]["data_files"] == [
        {"split": "train", "path": "captions/*.parquet"}
    ]
    # dataset_info is rewritten for the new rows; stale sizes of 7 rows are not carried over
    info = meta["dataset_info"]
    assert info["splits"] == [{"name": "train", "num_examples": 20_000}]
    assert "download_size" not in info


def test_merge_keeps_push_to_hub_sizes_when_rows_unchanged():
    first = yaml_block(render())
    info = dict(first["dataset_info"])
    info["splits"] = [{"name": "train", "num_bytes": 999, "num_examples": 20_000}]
    info["download_size"] = 555
    info["dataset_size"] = 999
    existing = "---\n" + yaml.safe_dump({**first, "dataset_info": info}) + "---\n"
    merged = yaml_block(render(existing=existing))["dataset_info"]
    assert merged["splits"] == [{"name": "train", "num_bytes": 999, "num_examples": 20_000}]
    assert merged["download_size"] == 555 and merged["dataset_size"] == 999


def test_merge_keeps_other_dataset_info_configs():
    existing = yaml.safe_dump(
        {
            "dataset_info": [
                {"config_name": "captions_only", "features": [{"name": "x", "dtype": "string"}]},
                {"config_name": "default", "features": [{"name": "image", "dtype": "image"}]},
            ]
        }
    )
    infos = yaml_block(render(existing=f"---\n{existing}---\n"))["dataset_info"]
    by_name = {i["config_name"]: i for i in infos}
    assert by_name["captions_only"]["features"] == [{"name": "x", "dtype": "string"}]
    assert by_name["default"]["splits"] == [{"name": "train", "num_examples": 20_000}]


def test_merge_removes_a_second_default_flag():
    existing = yaml.safe_dump(
        {"configs": [{"config_name": "mine", "default": True, "data_files": "mine/*.parquet"}]}
    )
    text = render(existing=f"---\n{existing}---\n")
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data)
    assert configs.get_default_config_name() == "default"
    assert configs["mine"]["data_files"] == "mine/*.parquet"


def test_merge_keeps_user_notes_block():
    first = render()
    notes = "## Ekip notları\n\nBu veri kümesi *deneme* amaçlıdır.\n\n```text\nnot a snippet\n```"
    default_block = first[first.index(USER_NOTES_START) : first.index(USER_NOTES_END)]
    edited = first.replace(default_block, f"{USER_NOTES_START}\n{notes}\n")
    again = render(existing=edited, num_captions=1)
    assert f"{USER_NOTES_START}\n{notes}\n{USER_NOTES_END}" in again
    assert "- **Rows:** 20000 images, 1 captions" in again  # the rest is regenerated


def test_hand_written_body_becomes_user_notes():
    existing = "---\nlicense: mit\n---\n\n# My dataset\n\nWritten by hand.\n"
    text = render(existing=existing)
    start = text.index(USER_NOTES_START)
    assert "# My dataset\n\nWritten by hand." in text[start:]


def test_unreadable_existing_yaml_is_refused():
    with pytest.raises(ValueError, match="YAML"):
        render(existing="---\nlicense: [mit\n---\nbody\n")


def test_render_is_idempotent_and_round_trips():
    first = render()
    assert render(existing=first) == first
    card = DatasetCard(first)
    assert card.data.to_dict() == yaml_block(first)
    assert str(card) == first


# -- dataset card: body and usage snippet -----------------------------------------------------


def test_body_reports_the_build():
    text = render()
    for expected in (
        MODEL,
        MODEL_REV,
        "sha256:" + "f" * 64,
        "| embedding dimension | 768 |",
        "| skipped rows | 4 |",
        "- unreadable image: 3",
        "- empty captions: 1",
        "index/image_emb.faiss",
        "index/caption_emb.faiss",
        "index/manifest.json",
        "inner-product",
        "L2-normalised float32",
        "datasets 5.2.0",
        "2025-06-01T12:00:00+00:00",
        "null when the image has no caption",
        "@misc{multiembedtr",
        "https://huggingface.co/datasets/" + HUB_SOURCE,
    ):
        assert expected in text, expected
    assert "None" not in text
    assert "TasvirEt" not in text and "Flickr8k" not in text


def test_tasviret_source_cites_tasviret_and_flickr8k(tmp_path):
    text = render(
        make_manifest(413, source="local folder"),
        repo_id=None,
        local_dir=str(tmp_path),
        source="/data/shared/tasviret-flickr8k",
        source_license=None,
    )
    assert "@inproceedings{unal2016tasviret" in text
    assert "Hodosh, Micah and Young, Peter and Hockenmaier, Julia" in text
    assert "Research use only" in text


def test_snippet_for_a_hub_repo():
    snippet = extract_usage_snippet(render())
    compile(snippet, "<usage>", "exec")
    assert f'load_dataset("{REPO}", split="train")' in snippet
    assert f'hf_hub_download("{REPO}", "index/image_emb.faiss", repo_type="dataset")' in snippet
    assert f'Encoder.from_pretrained("{MODEL}", revision="{MODEL_REV}")' in snippet
    assert "get_nearest_examples" in snippet


def test_snippet_without_revision_and_with_search_params():
    manifest = make_manifest(model_revision=None)
    manifest = Manifest(
        **{
            **manifest.__dict__,
            "indices": (
                IndexInfo(
                    "image_emb",
                    "index/image_emb.faiss",
                    "ivf",
                    "IVF64,Flat",
                    20_000,
                    {"nprobe": 16},
                ),
            ),
        }
    )
    snippet = extract_usage_snippet(render(manifest))
    compile(snippet, "<usage>", "exec")
    assert "revision=" not in snippet
    assert '"nprobe=16"' in snippet and "import faiss" in snippet


def test_needs_repo_or_local_dir():
    with pytest.raises(ValueError, match="local_dir"):
        render(repo_id=None)


def test_extract_usage_snippet_without_block():
    with pytest.raises(ValueError):
        extract_usage_snippet("# no code here\n")


def test_local_folder_snippet_runs_verbatim(tmp_path, tiny_encoder):
    """Build a tiny published folder, render its card, and run the card's snippet as is."""
    import faiss
    import PIL.Image
    from datasets import Dataset

    captions = [["karlı dağlar ve mavi gökyüzü"], ["deniz kenarında gün batımı", "sahil"], []]
    colors = [(250, 250, 250), (255, 120, 0), (0, 90, 0)]
    images = [PIL.Image.new("RGB", (40, 30), color) for color in colors]
    image_emb = tiny_encoder.encode_images(images)
    caption_emb = []
    for caps in captions:
        if not caps:
            caption_emb.append(None)
            continue
        mean = tiny_encoder.encode_texts(caps).mean(axis=0)
        caption_emb.append((mean / np.linalg.norm(mean)).tolist())
    features = make_features(tiny_encoder.dim)
    ds = Dataset.from_dict(
        {
            "image": images,
            "image_id": ["a", "b", "c"],
            "path": ["a.jpg", "b.jpg", "c.jpg"],
            "captions": captions,
            "image_emb": image_emb.tolist(),
            "caption_emb": caption_emb,
            "sha256": ["0" * 64] * 3,
        },
        features=features,
    )
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    (tmp_path / "index").mkdir()
    index = faiss.IndexFlatIP(tiny_encoder.dim)
    index.add(image_emb.astype(np.float32))
    faiss.write_index(index, str(tmp_path / "index" / "image_emb.faiss"))

    manifest = make_manifest(
        3,
        model_id=tiny_encoder.model_id,
        model_revision=None,
        dim=tiny_encoder.dim,
        source="local folder",
    )
    card = render(
        manifest,
        repo_id=None,
        local_dir=str(tmp_path),
        source=str(tmp_path),
        source_license=None,
        features=features.to_dict(),
        num_captions=3,
        num_skipped=0,
        skipped_reasons={},
    )
    (tmp_path / "README.md").write_text(card, encoding="utf-8")
    snippet = extract_usage_snippet(card)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3  # k=5 over 3 rows: every row once
    assert any("karlı dağlar" in line for line in lines)
    assert any("[]" in line for line in lines)  # the row without captions


# -- Space card ------------------------------------------------------------------------------


def render_space(**overrides) -> str:
    kwargs = {
        "title": "ImageSearchTR",
        "dataset_repo": REPO,
        "dataset_revision": "8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        "model_id": MODEL,
        "gradio_version": gradio_version(),
    }
    kwargs.update(overrides)
    return render_space_card(**kwargs)


def test_space_card_yaml():
    text = render_space()
    meta = yaml_block(text)
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    assert meta["app_file"] == "app.py"
    assert meta["datasets"] == [REPO]
    assert meta["models"] == [MODEL]
    assert meta["pinned"] is False
    assert meta["license"] == "apache-2.0"
    assert meta["colorFrom"] == "red" and meta["colorTo"] == "indigo"
    assert meta["emoji"] == "🔎"
    assert 0 < len(meta["short_description"]) <= 60
    assert SpaceCard(text).data.to_dict() == meta


def test_space_card_body():
    text = render_space()
    revision = "8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    assert revision in text
    assert "DATASET_REPO" in text and "DATASET_REVISION" in text
    assert "Deep Search" in text and "slider" in text
    snippet = extract_usage_snippet(text)
    compile(snippet, "<space usage>", "exec")
    assert f'load_dataset("{REPO}", split="train", revision="{revision}")' in snippet
    # not the model-card template that SpaceCard.from_template would render
    assert "Model Card" not in text and "[More Information Needed]" not in text


def test_space_card_without_revision():
    text = render_space(dataset_revision=None)
    assert "revision=" not in extract_usage_snippet(text)
    assert "main (latest)" in text


def test_space_card_limits():
    with pytest.raises(ValueError, match="60"):
        render_space(short_description="x" * 61)
    render_space(short_description="x" * 60)
    with pytest.raises(ValueError, match="color_from"):
        render_space(color_from="teal")


def test_gradio_version_is_installed_version():
    import gradio

    assert gradio_version() == gradio.__version__
    assert json.dumps(gradio_version())
