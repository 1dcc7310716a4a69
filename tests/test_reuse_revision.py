"""``encode --reuse REPO --reuse-revision SHA`` reuses that commit of the dataset, not its head.

Kills the pipeline/encode.py mutant that survived the rest of the suite by dropping
``config.reuse_revision`` (the head was used whatever revision was asked for).
"""

from __future__ import annotations

import json

from conftest import run_cli, write_photos

from pipeline.encode import EncodeConfig, run_encode
from pipeline.index import IndexConfig, run_index
from pipeline.inputs import FolderSource
from pipeline.publish import PublishConfig, publish_to_folder


def test_reuse_revision_pins_the_commit_the_rows_are_reused_from(
    local_hub, hub_env, tmp_path, tiny_model_dir, tiny_encoder, monkeypatch
):
    from huggingface_hub import HfApi, constants

    # This process imported huggingface_hub before hub_env existed: no Xet, as for the CLI.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)

    photos = write_photos(tmp_path / "photos", ["a", "b", "c"])
    build = tmp_path / "build"
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32")
    run_encode(FolderSource(photos), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    publish_to_folder(PublishConfig(build=build, to=tmp_path / "dataset"))

    # Two commits: the published dataset, then one more file; the head is the second.
    api = HfApi(endpoint=hub_env["HF_ENDPOINT"], token=hub_env["HF_TOKEN"])
    repo = f"{local_hub.user}/reuse-revision"
    api.create_repo(repo, repo_type="dataset")
    first = api.upload_folder(folder_path=tmp_path / "dataset", repo_id=repo, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, repo_type="dataset")
    assert api.dataset_info(repo).sha != first.oid

    out = tmp_path / "again"
    result = run_cli(
        "encode", "--data", photos, "--model", tiny_model_dir, "--dtype", "float32",
        "--out", out, "--reuse", repo, "--reuse-revision", first.oid, env=hub_env,
    )  # fmt: skip
    assert "0 encoded, 3 reused" in result.stdout
    # Nothing was encoded, and the first line of the summary does not say otherwise.
    assert result.stdout.count("encoded") == 2 and "images encoded/s" not in result.stdout
    reuse = json.loads((out / "build.json").read_text(encoding="utf-8"))["reuse"]
    assert reuse == {"location": repo, "revision": first.oid}
