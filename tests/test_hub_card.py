"""The dataset and Space cards: Hub YAML, merge with an existing card, the usage snippet.

Offline: cards are rendered and parsed locally (never ``validate()``-d, which needs a server).
One test builds a tiny dataset folder and runs the card's usage snippet verbatim against it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re

import pytest
import yaml
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
from pipeline.encode import features as row_features

HUB_SOURCE = "ituperceptron/image-captioning-turkish"
REPO = "testuser/trsearch"
MODEL = "utkubascakir/MultiEmbedTR"
MODEL_REV = "0123456789abcdef0123456789abcdef01234567"


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
        image_ranges_sha256="e" * 64,
    )


def render(manifest: Manifest | None = None, **overrides) -> str:
    manifest = manifest or make_manifest()
    kwargs = {
        "repo_id": REPO,
        "source": manifest.source,
        "source_license": "cc-by-4.0",
        "features": row_features(manifest.dim).to_dict(),
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
    # a retrieval dataset: embeddings searched by FAISS, not generation or captioning
    assert meta["task_categories"] == ["image-feature-extraction", "feature-extraction"]
    for tag in ("image-retrieval", "faiss", "embeddings", "multiembedtr", "turkish"):
        assert tag in meta["tags"]
    assert meta["size_categories"] == ["10K<n<100K"]
    assert meta["source_datasets"] == [HUB_SOURCE]
    assert meta["pretty_name"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    info = meta["dataset_info"]
    assert "splits" not in info  # no num_bytes given: no entry that datasets calls malformed
    assert {"name": "image", "dtype": "image"} in info["features"]
    assert {"name": "image_emb", "list": "float32", "length": 768} in info["features"]
    assert [f["name"] for f in info["features"]] == list(row_features(768))
    # No invented YAML key for the model: dataset cards have none (see dataset_card.py).
    assert "models" not in meta and "base_model" not in meta


def test_dataset_card_parses_as_datasets_reads_it():
    """load_dataset reads configs and dataset_info from the card: they must parse back."""
    data = DatasetCard(render()).data
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/*.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert infos["default"].features == row_features(768)


def test_splits_carry_num_bytes_so_datasets_accepts_them(tmp_path):
    """With the parquet sizes, dataset_info.splits is what load_dataset reads without warning."""
    from datasets import Dataset

    from hub_card import parquet_sizes

    path = tmp_path / "train-00000.parquet"
    Dataset.from_dict({"a": ["x" * 100] * 50}).to_parquet(str(path))
    num_bytes, download_size = parquet_sizes([path])
    assert num_bytes > 5000 and download_size == path.stat().st_size
    text = render(num_bytes=num_bytes, download_size=download_size)
    info = yaml_block(text)["dataset_info"]
    assert info["splits"] == [{"name": "train", "num_bytes": num_bytes, "num_examples": 20_000}]
    assert info["download_size"] == download_size and info["dataset_size"] == num_bytes
    infos = DatasetInfosDict.from_dataset_card_data(DatasetCard(text).data)
    assert infos["default"].splits["train"].num_bytes == num_bytes


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
    # A local model and local photos: nothing to cite, and no empty "Citation" heading.
    card = render(
        make_manifest(413, model_id=str(tmp_path / "model"), source="local folder"),
        repo_id=None, local_dir=str(tmp_path), source=str(tmp_path / "photos"),
        source_license=None,
    )  # fmt: skip
    assert "## Citation" not in card and "## Notes" in card


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


def test_features_are_one_shape():
    features = row_features(768)
    info = yaml_block(render(features=features.to_dict()))["dataset_info"]
    assert [f["name"] for f in info["features"]] == list(features)
    with pytest.raises(TypeError, match=r"features must be a dict, datasets.Features.to_dict"):
        render(features="image,captions")


def test_multiembedtr_tag_only_for_multiembedtr():
    meta = yaml_block(render(make_manifest(model_id="openai/clip-vit-base-patch32")))
    assert "multiembedtr" not in meta["tags"]
    assert "clip-vit-base-patch32" in meta["tags"] and "image-retrieval" in meta["tags"]
    # The Space card names the model the index was built with too.
    space = render_space(manifest=make_manifest(model_id="openai/clip-vit-base-patch32"))
    assert "multiembedtr" not in yaml_block(space)["tags"] and "MultiEmbedTR" not in space
    assert "clip-vit-base-patch32" in yaml_block(space)["tags"]
    assert "clip-vit-base-patch32 ile en yakın görselleri bulun" in space
    assert "multiembedtr" in yaml_block(render_space())["tags"]


def test_a_single_tag_written_as_a_string_stays_one_tag():
    meta = yaml_block(render(existing="---\ntags: fotoğraf\n---\n"))
    assert "fotoğraf" in meta["tags"] and "f" not in meta["tags"]


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


def test_merge_keeps_user_keys_and_extra_configs_and_replaces_only_owned_keys():
    existing = PUSHED_BY_DATASETS.replace("license: mit\n", "license: mit\nlanguage:\n- en\n- tr\n")
    meta = yaml_block(render(existing=existing, source_license=None))
    # the user's keys survive, the license included (a re-publish must not reset it)
    assert meta["license"] == "mit"
    assert meta["language"] == ["en", "tr"]
    assert meta["annotations_creators"] == ["found"]
    assert meta["viewer"] is False
    assert "my-own-tag" in meta["tags"] and "imagesearchtr" in meta["tags"]
    assert meta["tags"].count("faiss") == 1
    # the owned keys describe the files we publish: the default config is replaced, the
    # user's extra config is kept as it was
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/*.parquet"}]
    assert configs["captions_only"]["data_files"] == [
        {"split": "train", "path": "captions/*.parquet"}
    ]
    # dataset_info is rewritten for the new rows; stale sizes of 7 rows are not carried over
    info = meta["dataset_info"]
    assert "splits" not in info and "download_size" not in info
    assert meta["size_categories"] == ["10K<n<100K"]


def test_a_license_other_card_names_the_terms_it_is_given():
    # The Hub's card metadata names an `other` license's terms with license_name/license_link;
    # the default `other` card had no way to carry them but an edit on the Hub.
    text = render(source_license=None, license_name="ituperceptron-terms",
                  license_link="https://example.org/terms")  # fmt: skip
    meta = yaml_block(text)
    assert (meta["license"], meta["license_name"], meta["license_link"]) == (
        "other", "ituperceptron-terms", "https://example.org/terms")  # fmt: skip
    assert "[`ituperceptron-terms`](https://example.org/terms)" in text
    # given with a publish, they replace the card's; not given, the card's stay
    other = "---\nlicense: other\nlicense_name: ours\nlicense_link: LICENSE.md\n---\n"
    meta = yaml_block(render(existing=other, source_license=None, license_link="TERMS.md"))
    assert (meta["license_name"], meta["license_link"]) == ("ours", "TERMS.md")
    # refused, naming the input and the fix: with another license, or not an id / a link
    for kwargs, said in (
        ({"source_license": "mit", "license_name": "x"},
         "--license-name 'x' names the terms .* the card's license is mit: drop them, or pass "
         "--license other"),
        ({"source_license": None, "existing": "---\nlicense: mit\n---\n", "license_link": "L"},
         "the card's license is mit"),
        ({"source_license": None, "license_name": "my licence"}, "'my licence' is not an id"),
        ({"source_license": "other", "license_link": "../LICENSE"}, "'../LICENSE' is neither"),
        ({"source_license": "other", "license_link": "file:///etc/passwd"}, "neither an http"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            render(**kwargs)


def test_a_license_given_on_the_command_line_replaces_the_cards():
    meta = yaml_block(render(existing=PUSHED_BY_DATASETS, source_license="cc-by-4.0"))
    assert meta["license"] == "cc-by-4.0"
    # license_name and license_link describe `license: other`: gone with it.
    other = "---\nlicense: other\nlicense_name: ours\nlicense_link: LICENSE.md\n---\n"
    meta = yaml_block(render(existing=other, source_license="cc-by-4.0"))
    assert "license_name" not in meta and "license_link" not in meta
    kept = yaml_block(render(existing=other, source_license=None))
    assert (kept["license"], kept["license_name"]) == ("other", "ours")


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
    assert len(by_name["default"]["features"]) == len(row_features(768))


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


def test_user_notes_survive_a_deleted_end_marker():
    # Someone editing the card on the Hub deletes the end marker: their notes (the card's last
    # section) must survive the next publish, not be replaced by the default.
    first = render()
    notes = "## Ekip notları\n\nBu veri kümesi *deneme* amaçlıdır."
    edited = first[: first.index(USER_NOTES_START)] + f"{USER_NOTES_START}\n{notes}\n"
    assert USER_NOTES_END not in edited
    again = render(existing=edited)
    assert f"{USER_NOTES_START}\n{notes}\n{USER_NOTES_END}" in again


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
        "| `index/image_ranges.npy` | `image` |",
        "index/manifest.json",
        "inner-product",
        "inner-product** indices over **L2-normalised** vectors",
        "datasets 5.2.0",
        "2025-06-01T12:00:00+00:00",
        "null when the image has no caption",
        "@misc{multiembedtr",
        "https://huggingface.co/datasets/" + HUB_SOURCE,
    ):
        assert expected in text, expected
    assert "None" not in text
    assert "TasvirEt" not in text and "Flickr8k" not in text
    assert "quantised" not in text  # Flat and IVF64,Flat keep the float32 vectors


def test_quantised_indices_are_said_to_score_approximately():
    manifest = make_manifest()
    sq8 = dataclasses.replace(manifest.indices[1], index_type="ivf-sq8", factory="IVF64,SQ8")
    text = " ".join(
        render(dataclasses.replace(manifest, indices=(manifest.indices[0], sq8))).split()
    )
    assert "`index/caption_emb.faiss` stores the vectors quantised" in text
    assert "its scores are close to the cosines of the float32 embeddings" in text
    fp16 = dataclasses.replace(manifest.indices[0], index_type="fp16", factory="SQfp16")
    text = " ".join(render(dataclasses.replace(manifest, indices=(fp16, sq8))).split())
    assert "`index/image_emb.faiss` and `index/caption_emb.faiss` store the vectors" in text
    pca = dataclasses.replace(manifest.indices[0], index_type="PCA64,Flat", factory="PCA64,Flat")
    text = " ".join(render(dataclasses.replace(manifest, indices=(pca,))).split())
    assert "`index/image_emb.faiss` stores the vectors quantised" in text


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


@pytest.mark.parametrize(
    ("source", "restricted"),
    [
        ("local folder tasviret-flickr8k", True),
        ("local folder TasvirEt-Flickr8k", True),  # a copy under another name is the same data
        ("local folder tasviret-500", True),
        ("local folder flickr8k-tr", True),
        ("someone/TasvirEt", True),
        ("local folder flickr8k_tr", True),
        ("someone/TasvirEtFlickr8k", True),
        ("local folder tasviret500", True),
        ("local folder Flickr8kTR", True),
        ("local folder 500", False),
        ("local folder fotograflarim", False),
        ("local folder kedilerimi-tasviretme-denemesi", False),  # Turkish for "describing"
        ("ahmet/TasvirEtme-veriseti", False),
        ("local folder flickr8kb", False),
        ("ituperceptron/image-captioning-turkish", False),
    ],
)
def test_research_only_data_is_known_by_its_name_in_any_form(source, restricted):
    from hub_card.dataset_card import research_only

    assert research_only("utkubascakir/MultiEmbedTR", source) is restricted
    cited = render(make_manifest(3, source=source), repo_id="u/x", source=source)
    assert ("Research use only" in cited) is restricted
    assert ("@inproceedings{unal2016tasviret" in cited) is restricted


def test_snippet_for_a_hub_repo():
    snippet = extract_usage_snippet(render())
    compile(snippet, "<usage>", "exec")
    assert snippet.startswith("# pip install datasets==")
    assert f'repo, revision = "{REPO}", "main"' in snippet
    assert 'load_dataset(repo, split="train", revision=revision)' in snippet
    assert '"index/image_emb.faiss", repo_type="dataset", revision=revision' in snippet
    assert f'Client("{REPO}-search")' in snippet and 'api_name="/embed"' in snippet
    assert "import torch" not in snippet and "imagesearchtr" not in snippet.split("\n", 1)[1]
    assert "get_nearest_examples" in snippet


def test_snippet_names_the_space_given():
    snippet = extract_usage_snippet(render(space="someone/other-space"))
    assert 'Client("someone/other-space")' in snippet


def test_snippet_with_search_params():
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
    assert '"nprobe=16"' in snippet and "import faiss" in snippet


def test_one_snippet_template_for_both_cards():
    """The dataset card and the Space card render the same template (same lines but the
    revision they pin)."""

    def shared(snippet: str) -> list[str]:
        return [line for line in snippet.splitlines() if not line.startswith(("repo, ", "# Pin"))]

    dataset = extract_usage_snippet(render(space="user/space"))
    space = extract_usage_snippet(render_space(space_id="user/space"))
    assert shared(dataset) == shared(space)
    assert dataset != space  # the Space card pins the revision, the dataset card cannot


def test_needs_repo_or_local_dir():
    with pytest.raises(ValueError, match="local_dir"):
        render(repo_id=None)


def test_extract_usage_snippet_without_block():
    with pytest.raises(ValueError, match="the card has no ```python code block"):
        extract_usage_snippet("# no code here\n")


def test_local_folder_snippet_loads_the_folder(tmp_path):
    snippet = extract_usage_snippet(render(repo_id=None, local_dir=str(tmp_path)))
    compile(snippet, "<usage>", "exec")
    assert f'data_files="{tmp_path.as_posix()}/data/*.parquet"' in snippet
    assert f'index_file = "{tmp_path.as_posix()}/index/image_emb.faiss"' in snippet
    assert 'Client("http://127.0.0.1:7860/")' in snippet  # the local app of `make demo`


def test_local_folder_snippet_escapes_a_folder_name_that_reads_as_a_glob(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    folder = tmp_path / "photos [v2]"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"n": [1, 2]}), folder / "data" / "train-00000.parquet")
    snippet = extract_usage_snippet(render(repo_id=None, local_dir=str(folder)))
    data_files = re.search(r'data_files="([^"]+)"', snippet).group(1)
    assert "[[]v2]" in data_files  # "[v2]" unescaped matches a folder named "photos 2"
    rows = load_dataset("parquet", data_files=data_files, split="train", cache_dir=tmp_path / "c")
    assert rows["n"] == [1, 2]


# -- Space card ------------------------------------------------------------------------------


def render_space(**overrides) -> str:
    kwargs = {
        "title": "ImageSearchTR",
        "space_id": f"{REPO}-search",
        "dataset_repo": REPO,
        "dataset_revision": "8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        "manifest": make_manifest(),
        "gradio_version": gradio_version(),
        "python_version": "3.11",
        "hardware": "cpu-basic",
    }
    kwargs.update(overrides)
    return render_space_card(**kwargs)


def test_space_card_yaml():
    text = render_space(preload=(f"{MODEL} config.json,model.safetensors {MODEL_REV}",))
    meta = yaml_block(text)
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    assert meta["python_version"] == "3.11"  # Spaces would build with 3.10 without it
    assert meta["suggested_hardware"] == "cpu-basic"
    assert meta["preload_from_hub"] == [f"{MODEL} config.json,model.safetensors {MODEL_REV}"]
    assert meta["app_file"] == "app.py"
    assert meta["datasets"] == [REPO]
    assert meta["models"] == [MODEL]
    assert meta["pinned"] is False
    assert meta["license"] == "apache-2.0"
    assert meta["colorFrom"] == "red" and meta["colorTo"] == "indigo"
    assert meta["emoji"] == "🔎"
    assert 0 < len(meta["short_description"]) <= 60
    assert SpaceCard(text).data.to_dict() == meta
    assert "preload_from_hub" not in yaml_block(render_space())


def test_space_card_hardware():
    text = render_space(hardware="zero-a10g")
    assert yaml_block(text)["suggested_hardware"] == "zero-a10g"
    assert "@spaces.GPU" in text
    with pytest.raises(ValueError, match="hardware"):
        render_space(hardware="tpu-v9")


def test_space_card_body():
    text = render_space()
    revision = "8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    assert revision in text
    assert "DATASET_REPO" in text and "DATASET_REVISION" in text
    assert "Deep Search" in text and "slider" in text and "/embed" in text
    snippet = extract_usage_snippet(text)
    compile(snippet, "<space usage>", "exec")
    assert f'repo, revision = "{REPO}", "{revision}"' in snippet
    # not the model-card template that SpaceCard.from_template would render
    assert "Model Card" not in text and "[More Information Needed]" not in text


def test_space_card_of_a_local_model_links_no_model_page(tmp_path):
    text = render_space(manifest=make_manifest(model_id=str(tmp_path / "model")))
    assert "models" not in yaml_block(text)  # the Hub would link a page that does not exist
    assert f"`{tmp_path / 'model'}` (a local folder)" in text
    assert f"huggingface.co/{tmp_path}" not in text and "huggingface.co//" not in text


def test_space_card_without_revision():
    text = render_space(dataset_revision=None)
    assert f'repo, revision = "{REPO}", "main"' in extract_usage_snippet(text)
    assert "main (latest)" in text


def test_space_card_for_a_local_app_gives_its_address_not_a_hf_space_host():
    # publish-space --to DIR with a Hub dataset: the card's app is the one run locally.
    from hub_card.dataset_card import default_space

    text = render_space(space_id=default_space(None))
    assert "http://127.0.0.1:7860/?q=köpek&k=10" in text
    assert "http://127.0.0.1:7860/gradio_api/mcp/" in text
    assert ".hf.space" not in text
    assert "https://testuser-trsearch-search.hf.space/?q=köpek&k=10" in render_space()


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
