"""The user's path through a (local) Hub: download, encode from a Hub dataset, publish, load.

Every client call runs in a subprocess with HF_ENDPOINT pointing at tests/hub_server.py and a
fresh HF_HOME, exactly as a user runs the commands; nothing reaches the real Hub.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, run_cli

from hub_card import extract_usage_snippet


def run_python(code: str, env: dict, timeout: float = 300) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture
def built(shared_build):
    return shared_build


def revision_of(stdout: str) -> str:
    return next(line.split()[-1] for line in stdout.splitlines() if line.startswith("revision:"))


def test_publish_then_load_and_search_from_a_fresh_cache(built, hub_env, local_hub, tmp_path):
    repo = f"{local_hub.user}/tasvir-e2e"
    first = run_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    revision = revision_of(first.stdout)
    assert local_hub.token not in first.stdout + first.stderr

    # Publishing the same build again changes nothing.
    again = run_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    assert "already up to date" in again.stdout and revision_of(again.stdout) == revision

    fresh = {**hub_env, "HF_HOME": str(tmp_path / "fresh-home")}
    out = run_python(
        textwrap.dedent(
            f"""
            import json
            from huggingface_hub import HfApi
            from imagesearchtr import Searcher
            files = sorted(HfApi().list_repo_files({repo!r}, repo_type="dataset"))
            searcher = Searcher.from_repo({repo!r})
            photo = searcher._rows[11]["image"]["bytes"]
            hits = searcher.search_image(photo, k=3)
            deep = searcher.search_text("köpek", k=5, alpha=0.5)
            print(json.dumps({{"files": files, "location": searcher.location,
                              "top": hits[0].row, "score": hits[0].score,
                              "deep": [h.score for h in deep]}}))
            """
        ),
        fresh,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert [f for f in result["files"] if f != ".gitattributes"] == [
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "index/caption_emb.faiss",
        "index/image_emb.faiss",
        "index/manifest.json",
    ]
    assert result["location"] == f"{repo}@{revision}"
    assert result["top"] == 11 and result["score"] > 0.99
    assert result["deep"] == sorted(result["deep"], reverse=True)


def test_card_snippet_runs_verbatim(built, hub_env, local_hub, tmp_path):
    repo = f"{local_hub.user}/tasvir-snippet"
    run_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    fresh = {**hub_env, "HF_HOME": str(tmp_path / "snippet-home")}
    card = run_python(
        "from huggingface_hub import hf_hub_download\n"
        f"print(open(hf_hub_download({repo!r}, 'README.md', repo_type='dataset')).read())",
        fresh,
    )
    snippet = extract_usage_snippet(card)
    assert repo in snippet
    out = run_python(snippet, fresh)
    assert out.strip()  # the snippet prints the captions of its hits


def test_a_new_build_replaces_the_old_one_in_one_commit(
    built, hub_env, local_hub, tmp_path, tiny_model_dir
):
    import shutil

    repo = f"{local_hub.user}/tasvir-replace"
    run_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    smaller = tmp_path / "smaller"
    shutil.copytree(built, smaller, ignore=shutil.ignore_patterns("index"))
    for shard in sorted((smaller / "shards").glob("shard-*.parquet"))[1:]:
        shard.unlink()
    build_info = json.loads((smaller / "build.json").read_text())
    build_info["num_planned"] = 256
    (smaller / "build.json").write_text(json.dumps(build_info))
    run_cli("index", "--build", smaller)
    second = run_cli("publish", "--build", smaller, "--repo", repo, env=hub_env)
    out = run_python(
        "from huggingface_hub import HfApi\n"
        f"print('\\n'.join(HfApi().list_repo_files({repo!r}, repo_type='dataset')))",
        hub_env,
    )
    files = out.split()
    assert "data/train-00000-of-00001.parquet" in files
    assert not [f for f in files if f.endswith("-of-00002.parquet")]  # old shards deleted
    assert revision_of(second.stdout)


def test_publish_without_a_valid_token_fails_clearly(built, hub_env, local_hub):
    env = {**hub_env, "HF_TOKEN": "hf_wrong_token_123456"}
    result = run_cli(
        "publish", "--build", built, "--repo", f"{local_hub.user}/nope", env=env, check=False
    )
    assert result.returncode == 2
    assert "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert "hf_wrong_token_123456" not in result.stderr + result.stdout


# --- download and --hf-dataset -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_source(local_hub, tmp_path_factory, shared_data):
    """A small dataset shaped like ituperceptron/image-captioning-turkish on the local Hub."""
    repo = f"{local_hub.user}/image-captioning-turkish"
    home = tmp_path_factory.mktemp("fake-home")
    images = sorted((shared_data / "images").glob("*.jpg"))[:12]
    captions = {}
    for line in (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        captions.setdefault(entry["path"].split("/")[-1], entry["caption"])
    code = textwrap.dedent(
        f"""
        from datasets import Dataset, DatasetDict, Features, Image, Value
        paths = {[str(p) for p in images]!r}
        texts = {[captions[p.name] for p in images]!r}
        feats = Features({{"image": Image(), "text": Value("string"), "image_id": Value("string")}})
        def split(short):
            return Dataset.from_dict(
                {{"image": paths, "text": [t[:20] if short else t for t in texts],
                  "image_id": [f"id{{i}}" for i in range(len(paths))]}}, features=feats)
        DatasetDict({{"long_captions": split(False), "short_captions": split(True)}}).push_to_hub(
            {repo!r})
        """
    )
    run_python(code, {**local_hub.env(), "HF_HOME": str(home)})
    return repo


def test_download_samples_and_completes_a_partial_run(fake_source, hub_env, tmp_path):
    out = tmp_path / "data"
    args = ["download", "--dataset", fake_source, "--num-samples", "5", "--seed", "3"]
    args += ["--buffer-size", "8", "--output-dir", out]
    run_cli(*args, env=hub_env)
    lines = (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(lines) == 5 and len(files) == 5
    assert {json.loads(line)["path"].split("/")[-1] for line in lines} == set(files)

    # Lose one image and one caption line, as a killed run might; the re-run completes both.
    (out / "images" / files[0]).unlink()
    (out / "captions.jsonl").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    again = run_cli(*args, env=hub_env)
    assert "wrote 1 images, kept 4" in again.stdout
    assert sorted((out / "captions.jsonl").read_text().splitlines()) == sorted(lines)
    assert sorted(p.name for p in (out / "images").iterdir()) == files


def test_encode_reads_a_hub_dataset_directly(fake_source, hub_env, tmp_path, tiny_model_dir):
    build = tmp_path / "build"
    run_cli(
        "encode", "--hf-dataset", fake_source, "--split", "short_captions",
        "--model", tiny_model_dir, "--out", build, env=hub_env,
    )  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((build / "shards").glob("*.parquet")))
    assert table.num_rows == 12
    assert table.column("image_id").to_pylist()[:2] == ["id0", "id1"]
    assert all(len(c) == 1 and len(c[0]) <= 20 for c in table.column("captions").to_pylist())
