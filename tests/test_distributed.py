"""Multi-process coordination under two real gloo processes (as torchrun would start them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, scenario: str, world: int = 2) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            IMAGESEARCHTR_DIST_TIMEOUT_S="60",
        )
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
    assert timeout_from_env({}).total_seconds() == 24 * 3600
    with pytest.raises(DistributedError, match="seconds > 0"):
        timeout_from_env({"IMAGESEARCHTR_DIST_TIMEOUT_S": "0"})
