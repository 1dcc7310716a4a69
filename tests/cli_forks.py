"""``python -m pipeline ARGS`` runs forked from a process that has imported the pipeline already.

Starting Python with torch, transformers and datasets costs seconds of CPU, and the suite starts
the CLI dozens of times: on two cores those imports were a large part of `make test`. A fork
server imports them once (per pytest worker and environment) and forks one child per run. The
child sets the run's environment, points its stdout and stderr at files, and calls the CLI's
``main()`` from its first line, exactly as ``python -m pipeline`` does after its imports, then
exits with main's status. Several runs may go at once (the ranks of one distributed encode).

What differs from a fresh interpreter: import-time side effects happen once, in the server (a
warning printed while importing would not reach the run's stderr), and settings read at import
(``HF_*``, ``OMP_NUM_THREADS``, ...) are the server's. So a server serves only runs whose
environment equals the one it started with, apart from ``RUNTIME_VARIABLES``, which the code
reads when it runs; any other difference starts a server of its own.

Writes temporary files only (each run's stdout, stderr and exit status, the server's stderr),
removed when the pytest worker exits.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Read by the pipeline (and torch.distributed's env:// rendezvous) when a run starts, not at
# import: a run may set them differently from its server.
RUNTIME_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "IMAGESEARCHTR_DIST_TIMEOUT_S", "PYTEST_CURRENT_TEST",
)  # fmt: skip

SERVER = r"""
import atexit, json, os, signal, sys, threading, traceback
import datasets, huggingface_hub, pyarrow.parquet, torch, transformers  # noqa: F401
import imagesearchtr, imagesearchtr.encoder, imagesearchtr.multiembedtr  # noqa: F401
import pipeline.distributed, pipeline.encode, pipeline.feed, pipeline.index  # noqa: F401
import pipeline.inputs, pipeline.publish  # noqa: F401
from pipeline.cli import main

def write_status(path, text):
    with open(path + ".tmp", "w") as status:
        status.write(text)
    os.replace(path + ".tmp", path)

def reap(pid, path):  # the run's exit status once its process is gone (-N: signal N, as Popen's)
    _, status = os.waitpid(pid, 0)
    write_status(path, str(os.waitstatus_to_exitcode(status)))

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid:
        threading.Thread(target=reap, args=(pid, job["status"]), daemon=True).start()
        print(pid, flush=True)
        continue
    code = 1
    try:
        os.environ.clear()
        os.environ.update(job["env"])
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        if job["stderr"] == job["stdout"]:  # one log of both, in the order written
            os.dup2(out, 2)
        else:
            os.dup2(os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        if job["fast_hub_retries"]:
            import huggingface_hub.utils._http as hub_http

            hub_http.http_backoff.__kwdefaults__.update(base_wait_time=0.05, max_wait_time=0.1)
        try:
            code = main(job["args"])
        except SystemExit as stop:  # argparse's --help and usage errors
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
    finally:
        # Exit as `python -m pipeline` does, up to the interpreter's teardown: threads that are
        # not daemons are joined (after concurrent.futures' own exit hook) and atexit handlers
        # run, so a run that would hang at its exit hangs here too.
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


class ForkServer:
    """One server process; ``start`` forks a run, ``wait`` gives its CompletedProcess."""

    def __init__(self, env: dict):
        self.work = Path(tempfile.mkdtemp(prefix="cli-forks-"))
        atexit.register(shutil.rmtree, self.work, ignore_errors=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.work / "server.stderr").open("w"),
            text=True,
        )
        self.runs = 0

    def start(self, args, env: dict, log=None, fast_hub_retries=False):
        """Fork a run; ``log``: one file for its stdout and stderr (default: one each here).
        ``fast_hub_retries``: huggingface_hub's own upload retries (5, waiting 1, 2, 4, 8 and
        8 s) wait 0.05-0.1 s instead; the pipeline's own retries and backoff are unchanged."""
        self.runs += 1
        base = self.work / str(self.runs)
        job = {"args": [str(a) for a in args], "env": env, "fast_hub_retries": fast_hub_retries}
        job.update({name: f"{base}.{name}" for name in ("stdout", "stderr", "status")})
        if log is not None:
            job["stdout"] = job["stderr"] = str(log)
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():  # the server died (an import failed): say why
            stderr = (self.work / "server.stderr").read_text(errors="replace")
            raise RuntimeError(f"the CLI fork server is gone ({self.proc.poll()}):\n{stderr}")
        return int(line), base, job

    def wait(self, run, timeout: float) -> subprocess.CompletedProcess:
        """The run's CompletedProcess (returncode -N when signal N ended it, as Popen's)."""
        pid, base, job = run
        args, status = job["args"], Path(job["status"])
        deadline = time.monotonic() + timeout
        while not status.exists():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(["python", "-m", "pipeline", *args], timeout)
            time.sleep(0.02)
        code = int(status.read_text())
        out, err = (Path(job[n]).read_text(errors="replace") for n in ("stdout", "stderr"))
        return subprocess.CompletedProcess(["python", "-m", "pipeline", *args], code, out, err)


_servers: dict[tuple, ForkServer] = {}


def server_for(env: dict) -> ForkServer:
    """The server of this pytest worker for ``env`` (started on first use)."""
    key = tuple(sorted((k, v) for k, v in env.items() if k not in RUNTIME_VARIABLES))
    if key not in _servers:
        _servers[key] = ForkServer({k: v for k, v in env.items() if k not in RUNTIME_VARIABLES})
    return _servers[key]


def start(args, env: dict | None = None, **options):
    """Fork ``python -m pipeline ARGS`` with ``env`` (default: this process's); a handle.
    ``options``: ``ForkServer.start``'s."""
    env = dict(os.environ if env is None else env)
    server = server_for(env)
    return server, server.start(args, env, **options)


def pid(handle) -> int:
    return handle[1][0]


def wait(handle, timeout: float = 300) -> subprocess.CompletedProcess:
    server, run = handle
    return server.wait(run, timeout)


def run(args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return wait(start(args, env), timeout)
