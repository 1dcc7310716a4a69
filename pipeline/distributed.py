"""Coordination of a multi-process ``encode`` (``torchrun --nproc_per_node N``).

Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT);
writes nothing itself. What it gives ``encode``:

- ``coordination()``: a gloo process group for the run, destroyed at the end (also on error). The
  group only carries small Python objects and barriers, never tensors, so gloo is enough on GPU
  machines too and does not tie the run to NCCL's setup. Its timeout is for the longest wait of
  a run: the final barrier, where fast ranks wait for the slowest rank's last shards; set it
  with ``IMAGESEARCHTR_DIST_TIMEOUT_S`` (default 24 hours). A misconfigured cluster still shows
  at once: the plan is shared right after the group forms.
- ``share_from_rank0(fn)``: rank 0 computes (the plan: hashing every image), the others receive
  the result, or the same error; ``check_same(value)``: every rank must hold the same value (the
  plan hash), else every rank stops with an error naming the ranks that differ.
- ``rank0_first(fn)``: rank 0 runs ``fn`` (``--overwrite`` clearing the build folder, writing
  build.json) while the others wait, so no rank reads a folder that is being cleared.
- ``my_chunks(n)``: the chunk indices this rank encodes (i % world == rank), so each rank reads
  only its own images' bytes.

In one process (no torchrun) every helper runs its work directly and creates no group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT_ENV = "IMAGESEARCHTR_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT = timedelta(hours=24)


class DistributedError(RuntimeError):
    """The ranks of a run disagree, or one of them failed; the message says which and why."""


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_chunks(self, num_chunks: int) -> list[int]:
        """The chunks this rank encodes: every world_size-th, starting at its rank."""
        return list(range(self.rank, num_chunks, self.world_size))

    def label(self) -> str:
        return f"rank {self.rank}/{self.world_size}" if self.distributed else "single process"


def ranks_from_env(env: dict[str, str] | None = None) -> Ranks:
    """Read torchrun's variables; raise DistributedError when they do not make sense."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        value = env.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise DistributedError(
                f"{name}={value!r} is not an integer (set by torchrun)"
            ) from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local_rank = number("LOCAL_RANK", rank if world > 1 else 0)
    local_world = number("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(
            f"RANK={rank} with WORLD_SIZE={world}: rank must be in 0..{world - 1}; start the run "
            "with torchrun, which sets both"
        )
    if not 0 <= local_rank < max(local_world, 1):
        raise DistributedError(f"LOCAL_RANK={local_rank} with LOCAL_WORLD_SIZE={local_world}")
    return Ranks(rank, world, local_rank, local_world)


def timeout_from_env(env: dict[str, str] | None = None) -> timedelta:
    env = os.environ if env is None else env
    value = env.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise DistributedError(f"{TIMEOUT_ENV}={value!r}: give a number of seconds > 0")
    return timedelta(seconds=seconds)


@contextmanager
def coordination() -> Iterator[Ranks]:
    """The run's process group (gloo) for the duration of the ``with``; nothing in one process."""
    ranks = ranks_from_env()
    if not ranks.distributed:
        yield ranks
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout_from_env())
        created = True
    try:
        yield ranks
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (gloo: honours the group's timeout)."""
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def share_from_rank0(ranks: Ranks, compute: Callable[[], T]) -> T:
    """Rank 0 runs ``compute()`` and every rank returns its (pickled) result.

    When rank 0 fails, every rank raises a DistributedError with its message, so no rank waits
    forever or goes on alone. The other ranks compute nothing.
    """
    if not ranks.distributed:
        return compute()
    import torch.distributed as dist

    message: list[Any] = [None]
    if ranks.is_main:
        try:
            message[0] = ("ok", compute())
        except Exception as err:
            message[0] = ("error", f"{type(err).__name__}: {err}")
            dist.broadcast_object_list(message, src=0)
            raise
    dist.broadcast_object_list(message, src=0)
    status, payload = message[0]
    if status == "error":
        raise DistributedError(f"rank 0 failed, so {ranks.label()} stops too: {payload}")
    return payload


def rank0_first(ranks: Ranks, action: Callable[[], None]) -> None:
    """Rank 0 runs ``action()`` (e.g. ``--overwrite``'s clearing) while the others wait for it."""
    share_from_rank0(ranks, action)


def check_same(ranks: Ranks, value: str, what: str) -> None:
    """Every rank must hold the same ``value``; else all raise an error naming the ranks."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    values: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        differing = [r for r, v in enumerate(values) if v != values[0]]
        theirs = ", ".join(repr(values[r]) for r in differing)
        raise DistributedError(
            f"the ranks disagree on the {what}: rank 0 has {values[0]!r}, rank(s) "
            f"{', '.join(map(str, differing))} have {theirs}. Every rank must see the same "
            "input and settings (same --data, same files on every node)."
        )
