"""``encode --reuse REPO --reuse-revision SHA`` reuses that commit of the dataset, not its head.

Kills the pipeline/encode.py mutant that survived the rest of the suite by dropping
``config.reuse_revision`` (the head was used whatever revision was asked for), and checks that
under torchrun the branch is resolved once, by rank 0, for every rank.
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

    # Under torchrun, rank 0 alone resolves the branch and every rank reuses that commit: a
    # push between two ranks' reads cannot give them different rows.
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT, free_port

    head = api.dataset_info(repo).sha
    resolved = rf"^/api/datasets/{repo}/revision/main$"
    before = len(local_hub.requests_matching("GET", resolved))
    port, out = free_port(), tmp_path / "ranks"
    args = ["encode", "--data", photos, "--model", tiny_model_dir, "--dtype", "float32",
            "--out", out, "--reuse", repo, "--shard-size", "1"]  # fmt: skip
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", *map(str, args)],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                **hub_env,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
                "OMP_NUM_THREADS": "1",
            },  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = [(rank.communicate(timeout=300), rank.returncode) for rank in ranks]
    assert [code for _, code in results] == [0, 0], [err[-3000:] for (_, err), _ in results]
    assert "0 encoded, 3 reused" in results[0][0][0]
    assert len(local_hub.requests_matching("GET", resolved)) == before + 1
    reuse = json.loads((out / "build.json").read_text(encoding="utf-8"))["reuse"]
    assert reuse == {"location": repo, "revision": head}
