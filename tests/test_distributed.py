"""Multi-process coordination under two real gloo processes (as torchrun would start them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.distributed import DistributedError, Ranks, ranks_from_env, timeout_from_env

# Each rank runs this; it prints one JSON line with what it saw.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from pipeline.distributed import (
        DistributedError, barrier, check_same, coordination, rank0_first, share_from_rank0,
    )

    scenario, out = sys.argv[1], Path(sys.argv[2])
    report = {}
    with coordination() as ranks:
        import torch.distributed as dist
        report["group"] = dist.is_initialized() and dist.get_backend()
        try:
            if scenario == "plan":
                def make_plan():
                    return {"chunks": [[0, "a"], [1, "b"], [2, "c"]], "by": ranks.rank}
                plan = share_from_rank0(ranks, make_plan)
                report["plan"] = plan
                check_same(ranks, "hash-" + str(len(plan["chunks"])), "plan hash")
                report["mine"] = ranks.my_chunks(len(plan["chunks"]))
            elif scenario == "mismatch":
                check_same(ranks, f"hash-{ranks.rank}", "plan hash")
            elif scenario == "rank0-fails":
                def fail():
                    raise FileNotFoundError("--data /nope: no such folder")
                share_from_rank0(ranks, fail)
            elif scenario == "overwrite":
                def clear():
                    time.sleep(1.0)  # a slow clear: rank 1 must not look before it is done
                    for f in (out / "shards").glob("*"):
                        f.unlink()
                    (out / "build.json").write_text('{"new": true}')
                rank0_first(ranks, clear)
                report["build"] = json.loads((out / "build.json").read_text())
                report["old_shard_left"] = (out / "shards" / "shard-00000.parquet").exists()
            barrier(ranks)
        except DistributedError as err:
            report["error"] = str(err)
        except FileNotFoundError as err:
            report["error"] = "own: " + str(err)
    report["destroyed"] = not dist.is_initialized()
    print(json.dumps(report), flush=True)
    """
)


from conftest import free_port  # noqa: E402


def rank_env(rank: int, world: int, port: int, timeout_s: int, **extra) -> dict:
    """torchrun's variables for one rank of a local gloo group, on top of this environment."""
    return dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        IMAGESEARCHTR_DIST_TIMEOUT_S=str(timeout_s),
        **extra,
    )


def launch(tmp_path: Path, scenario: str, world: int = 2) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(world):
        env = rank_env(rank, world, port, 60)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), scenario, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    for rank, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {rank} failed:\n{err[-2000:]}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_ranks_agree_on_rank0s_plan_and_split_the_chunks(tmp_path):
    reports = launch(tmp_path, "plan")
    assert all(r["group"] == "gloo" and r["destroyed"] for r in reports)
    assert reports[0]["plan"] == reports[1]["plan"] and reports[1]["plan"]["by"] == 0
    assert [r["mine"] for r in reports] == [[0, 2], [1]]
    assert not any("error" in r for r in reports)


def test_a_plan_mismatch_stops_every_rank_naming_them(tmp_path):
    reports = launch(tmp_path, "mismatch")
    for r in reports:
        assert "the ranks disagree on the plan hash: rank 0 has 'hash-0', rank(s) 1" in r["error"]
        assert r["destroyed"]


def test_rank0s_failure_reaches_every_rank(tmp_path):
    reports = launch(tmp_path, "rank0-fails")
    assert reports[0]["error"] == "own: --data /nope: no such folder"
    assert reports[1]["error"].startswith("rank 0 failed, so rank 1/2 stops too")
    assert "--data /nope" in reports[1]["error"]


def test_overwrite_is_finished_by_rank0_before_other_ranks_look(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shard-00000.parquet").write_bytes(b"old build")
    (tmp_path / "build.json").write_text('{"old": true}')
    reports = launch(tmp_path, "overwrite")
    for r in reports:
        assert r["build"] == {"new": True} and r["old_shard_left"] is False


def test_one_process_needs_no_group_and_env_errors_are_clear():
    assert ranks_from_env({}) == Ranks(0, 1, 0, 1)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).my_chunks(10) == [
        3,
        7,
    ]
    with pytest.raises(DistributedError, match="RANK=4 with WORLD_SIZE=4"):
        ranks_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(DistributedError, match="WORLD_SIZE='two' is not an integer"):
        ranks_from_env({"WORLD_SIZE": "two"})
    # A LOCAL_RANK past the node's processes would pick a GPU no rank should share.
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(DistributedError, match="LOCAL_RANK=2 with LOCAL_WORLD_SIZE=2"):
        ranks_from_env(env)
    assert timeout_from_env({}).total_seconds() == 24 * 3600
    with pytest.raises(DistributedError, match="seconds > 0"):
        timeout_from_env({"IMAGESEARCHTR_DIST_TIMEOUT_S": "0"})


def test_torchrun_variables_set_empty_read_as_unset(tmp_path, photos, tiny_model_dir):
    """A shell that exports ``LOCAL_WORLD_SIZE=`` (empty) runs one plain process, as the
    rank reader treats it: the decode-worker default read that variable on its own, with int()."""
    import cli_forks

    empty = dict.fromkeys(("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"), "")
    args = ["encode", "--data", photos, *encode_flags(tiny_model_dir, tmp_path / "build")]
    result = cli_forks.run(args, {**os.environ, **empty})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "build: 12 images" in result.stdout


# --- the real `python -m pipeline encode` under two gloo processes -------------------------------


def encode_ranks(tmp_path: Path, data_per_rank: list[Path], *args) -> list:
    """Start ``python -m pipeline encode`` once per rank with torchrun's variables set (rank r
    reads ``data_per_rank[r]``); return each rank's CompletedProcess. The ranks are forked
    from a process that has imported the pipeline (tests/cli_forks.py), as torchrun would start
    them but without each one's imports; the group forms when they run."""
    import cli_forks

    port = free_port()
    world = len(data_per_rank)
    runs = [
        cli_forks.start(
            ["encode", "--data", data, *args],
            rank_env(rank, world, port, 120, OMP_NUM_THREADS="1"),
        )
        for rank, data in enumerate(data_per_rank)
    ]
    return [cli_forks.wait(run, timeout=300) for run in runs]


def shard_rows(build: Path) -> dict:
    import pyarrow.parquet as pq

    shards = sorted((build / "shards").glob("shard-*.parquet"))
    table = pq.read_table(shards, columns=["image_id", "sha256", "image_emb", "caption_emb"])
    return {row["image_id"]: row for row in table.to_pylist()}


@pytest.fixture
def photos(tmp_path):
    """12 photos: with --shard-size 4, chunks 0 and 2 go to rank 0, chunk 1 to rank 1."""
    from conftest import write_photos

    return write_photos(tmp_path / "data", [f"p{i:02d}" for i in range(12)])


def encode_flags(model: Path, out: Path) -> list:
    return ["--model", model, "--out", out, "--dtype", "float32", "--shard-size", "4"]


def encode_here(photos: Path, out: Path, model: Path, encoder) -> None:
    """``encode_flags``' build, in this process (a set-up step, not what a test checks)."""
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.inputs import FolderSource

    config = EncodeConfig(out=out, model=str(model), dtype="float32", shard_size=4)
    run_encode(FolderSource(photos), config, encoder=encoder)


def test_encode_ranks_use_rank0s_plan_and_read_only_their_own_chunks(
    tmp_path, photos, tiny_model_dir, tiny_encoder
):
    reference = tmp_path / "reference"
    encode_here(photos, reference, tiny_model_dir, tiny_encoder)  # what one process writes
    # Rank 1's copy of the input: the same listing, but the images of rank 0's chunks are
    # garbage. Rank 1 neither plans (hashes) them nor reads them, so the build is unchanged.
    mirror = tmp_path / "mirror"
    shutil.copytree(photos, mirror)
    for i in (0, 1, 2, 3, 8, 9, 10, 11):
        (mirror / "images" / f"p{i:02d}.jpg").write_bytes(b"not the photo rank 0 has")
    build = tmp_path / "build"
    results = encode_ranks(tmp_path, [photos, mirror], *encode_flags(tiny_model_dir, build))
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stderr[-3000:]}"
    assert "rank 1/2" in results[1].stderr
    # Rank 0 alone reports what the run did; another rank's "0 images" would be false.
    assert "build: 12 images" in results[0].stdout and "build:" not in results[1].stdout
    summary = json.loads((build / "summary.json").read_text())
    assert (summary["images"], summary["encoded_images"], summary["skipped"]) == (12, 12, 0)
    got, want = shard_rows(build), shard_rows(reference)
    assert list(got) == list(want)
    for image_id, row in want.items():
        assert got[image_id]["sha256"] == row["sha256"]
        np.testing.assert_allclose(got[image_id]["image_emb"], row["image_emb"], atol=1e-5)
    names = json.loads((build / "build.json").read_text())["shards"]
    assert names == json.loads((reference / "build.json").read_text())["shards"]


@pytest.mark.parametrize("change", ["one more", "one less"])
def test_encode_ranks_that_see_different_inputs_stop_before_encoding(
    tmp_path, photos, tiny_model_dir, change
):
    from conftest import write_photos

    other = tmp_path / "other"
    shutil.copytree(photos, other)
    if change == "one more":
        write_photos(other, ["a00"])  # sorts first: every later row is another image on rank 1
    else:  # the last photo gone: rank 1 lists fewer inputs than rank 0 planned
        lines = (other / "captions.jsonl").read_text(encoding="utf-8").splitlines()
        (other / "captions.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
        (other / "images" / "p11.jpg").unlink()
    build = tmp_path / "build"
    results = encode_ranks(tmp_path, [photos, other], *encode_flags(tiny_model_dir, build))
    for result in results:
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the ranks disagree on the plan hash: rank 0 has")
        assert "same --data" in last
    assert not list(build.glob("shards/*.parquet"))


def test_a_build_in_use_stops_every_rank_with_the_reason(tmp_path, photos, tiny_model_dir):
    import fcntl

    build = tmp_path / "build"
    build.mkdir()
    with open(build / ".lock", "w") as other:  # as another `encode` on this build holds it
        fcntl.flock(other, fcntl.LOCK_EX)
        other.write("`encode` (pid 4242)")
        other.flush()
        results = encode_ranks(tmp_path, [photos, photos], *encode_flags(tiny_model_dir, build))
    for result in results:
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert "is in use by `encode` (pid 4242)" in last, last
    assert not list(build.glob("shards/*"))


def test_encode_overwrite_under_two_ranks_rewrites_every_shard(
    tmp_path, photos, tiny_model_dir, tiny_encoder
):
    from tiny_checkpoint import write_tiny_checkpoint

    build = tmp_path / "build"
    encode_here(photos, build, tiny_model_dir, tiny_encoder)
    before = {p.name: p.stat().st_ino for p in (build / "shards").glob("*.parquet")}
    assert len(before) == 3

    # Another model without --overwrite: rank 0 refuses, and rank 1 stops with its reason.
    other = write_tiny_checkpoint(tmp_path / "other-model", seed=1)
    results = encode_ranks(tmp_path, [photos, photos], *encode_flags(other, build))
    lines = [r.stderr.strip().splitlines()[-1] for r in results]
    assert [r.returncode for r in results] == [2, 2], lines
    assert lines[0].startswith("error:") and "made with the model" in lines[0]
    assert lines[1].startswith("error: rank 0 failed, so rank 1/2 stops too")
    assert "made with the model" in lines[1] and "--overwrite" in lines[1]

    # --overwrite with the same model and plan: rank 1 must not see the old shards as done
    # (rank 0 clears the folder first), so every shard is encoded and written again.
    # The old shards are dated 1 Jan 2001, so a shard written again is newer (inode numbers
    # are no proof: the filesystem may hand a deleted file's number to the new one).
    for shard in (build / "shards").glob("*.parquet"):
        os.utime(shard, (978307200, 978307200))
    flags = encode_flags(tiny_model_dir, build)
    results = encode_ranks(tmp_path, [photos, photos], *flags, "--overwrite")
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stderr[-3000:]}"
    after = {p.name: p.stat().st_mtime for p in (build / "shards").glob("*.parquet")}
    assert sorted(after) == sorted(before)
    assert min(after.values()) > 978307200  # every shard was written again
    summary = json.loads((build / "summary.json").read_text())
    assert (summary["images"], summary["encoded_images"], summary["reused_images"]) == (12, 12, 0)
