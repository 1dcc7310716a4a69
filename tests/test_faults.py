"""Publishing through a flaky Hub: server errors, dropped connections, lost responses.

The local Hub (tests/hub_server.py) injects the faults; each publish runs in a process of its
own, `python -m pipeline publish`'s main() as a user runs it (forked from a server that imported
the pipeline: conftest.hub_cli). The build is generated (16 random photos): the faults, not the
photos, are the point.
"""

from __future__ import annotations

import json
import os

import cli_forks
import pytest
from conftest import hub_cli, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir, tiny_encoder):
    from conftest import write_photos

    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    names = [f"p{i:02d}" for i in range(16)]
    data = write_photos(tmp_path_factory.mktemp("fault-photos"), names)
    build = tmp_path_factory.mktemp("fault-build")
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32")
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    return build


def remote_state(hub_env, repo):
    code = (
        "import json\nfrom huggingface_hub import HfApi\napi = HfApi()\n"
        f"info = api.dataset_info({repo!r})\n"
        "print(json.dumps({'sha': info.sha, "
        "'files': sorted(s.rfilename for s in info.siblings)}))"
    )
    # (forked from the server hub_cli's runs fork from: cli_forks.run_python)
    out = cli_forks.run_python(code, (), {**os.environ, **hub_env}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def commits_to(local_hub, repo):
    return [r for r in local_hub.requests_matching("POST", f"/api/datasets/{repo}/commit/")]


def test_commit_500_and_429_are_retried_and_it_lands_once(built, local_hub, hub_env):
    repo = f"{local_hub.user}/flaky-500"
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/", status=500, times=1)
    # The Hub's rate limit: wait and try again, as for a server error.
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/", status=429, times=1)
    result = hub_cli("publish", "--build", built, "--repo", repo, "--retries", "3", env=hub_env)
    assert result.stderr.count("retrying in") == 2
    state = remote_state(hub_env, repo)
    assert "index/manifest.json" in state["files"]
    assert result.stdout.strip().endswith(state["sha"])


def test_persistent_errors_fail_clearly_and_leave_the_repo_unchanged(
    built, local_hub, hub_env, tmp_path
):
    repo = f"{local_hub.user}/flaky-down"
    hub_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    before = remote_state(hub_env, repo)
    # A different build (another index type) that cannot be committed.
    other = tmp_path / "build-hnsw"
    import shutil

    shutil.copytree(built, other, ignore=shutil.ignore_patterns("index"))
    run_cli("index", "--build", other, "--index-type", "hnsw")
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/", status=503, times=10)
    try:
        result = hub_cli(
            "publish", "--build", other, "--repo", repo, "--retries", "2", env=hub_env, check=False
        )
    finally:
        local_hub.clear_faults()
    assert result.returncode == 2
    assert "after 3 attempts" in result.stderr and "left unchanged" in result.stderr
    assert result.stderr.rstrip().endswith("run the same publish command again later")
    assert "Traceback" not in result.stderr
    assert remote_state(hub_env, repo) == before
    # Once the Hub recovers, the same command completes.
    hub_cli("publish", "--build", other, "--repo", repo, env=hub_env)
    assert remote_state(hub_env, repo)["sha"] != before["sha"]


def test_dropped_connection_is_retried(built, local_hub, hub_env):
    repo = f"{local_hub.user}/flaky-drop"
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/", drop=True, times=1)
    hub_cli("publish", "--build", built, "--repo", repo, "--retries", "2", env=hub_env)
    assert "index/manifest.json" in remote_state(hub_env, repo)["files"]


def test_lost_response_after_the_commit_landed_is_not_committed_twice(built, local_hub, hub_env):
    repo = f"{local_hub.user}/flaky-lost"
    local_hub.inject_fault(
        "POST", f"/api/datasets/{repo}/commit/", status=None, truncate_after=0, times=1
    )
    result = hub_cli("publish", "--build", built, "--repo", repo, "--retries", "2", env=hub_env)
    assert "retrying in" in result.stderr
    assert len(commits_to(local_hub, repo)) == 1  # the retry found the commit already there
    assert "index/manifest.json" in remote_state(hub_env, repo)["files"]


def test_upload_errors_are_retried_by_huggingface_hub(built, local_hub, hub_env):
    repo = f"{local_hub.user}/flaky-upload"
    local_hub.inject_fault("PUT", "/_lfs/upload/", status=500, times=1)
    hub_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    assert "data/train-00000.parquet" in remote_state(hub_env, repo)["files"]


def test_a_refused_upload_fails_with_publishs_own_message(built, local_hub, hub_env, tmp_path):
    # huggingface_hub wraps a failed upload in RuntimeError("Error while uploading ..."); publish
    # looks at its cause: a 4xx is not worth a retry, and the user gets publish's own line.
    import shutil

    repo = f"{local_hub.user}/flaky-upload-400"
    other = tmp_path / "build-fp16"  # new index files: blobs the Hub does not hold yet
    shutil.copytree(built, other, ignore=shutil.ignore_patterns("index"))
    run_cli("index", "--build", other, "--index-type", "fp16")
    local_hub.inject_fault("PUT", "/_lfs/upload/", status=400, times=1)
    try:
        result = hub_cli("publish", "--build", other, "--repo", repo, env=hub_env, check=False)
    finally:
        local_hub.clear_faults()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: publishing to {repo} failed")
    assert line.endswith("the repo was left unchanged")
    assert "retrying" not in result.stderr
    assert "index/manifest.json" not in remote_state(hub_env, repo)["files"]
