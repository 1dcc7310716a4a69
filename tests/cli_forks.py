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

A server imports ``PRELOAD`` (what all the CLI's commands import, torch included) or a lighter
set a test names (``HUB_PRELOAD``: publish, publish-space and download, without torch); a run
imports whatever else it needs itself, as a fresh interpreter would. A server started for one
test's environment (its own HF_HOME) serves no other test: ``stop_servers`` ends it then.

``run_python`` forks ``python -c CODE ARGS`` the same way (tests/test_lazy.py's Hub clients),
from a server that serves every test's HF_HOME (through a symbolic link: see there);
``run_linked`` forks the CLI from such a server (tests/test_hub_e2e.py's Hub commands).

Run as a script, ``python tests/cli_forks.py -m MODULE ARGS`` is ``python -m MODULE ARGS`` with
``shorten_hub_retries`` (for a command a test cannot fork: make's recipes run ``$(PY) -m ...``).

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

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# What a server imports before it forks: everything the CLI's commands import...
PRELOAD = (
    "datasets", "huggingface_hub", "pyarrow.parquet", "torch", "transformers",
    "imagesearchtr", "imagesearchtr.encoder", "imagesearchtr.multiembedtr",
    "pipeline.distributed", "pipeline.encode", "pipeline.feed", "pipeline.index",
    "pipeline.inputs", "pipeline.publish",
)  # fmt: skip
# ...or what publish, publish-space and download import (no torch, transformers or model code):
# a server for a test that runs only those starts in a fraction of PRELOAD's time.
HUB_PRELOAD = (
    "datasets", "huggingface_hub", "huggingface_hub.hf_api", "pyarrow.parquet", "yaml",
    "hub_card", "pipeline.download", "pipeline.inputs", "pipeline.publish", "pipeline.space",
)  # fmt: skip


def shorten_hub_retries() -> None:
    """huggingface_hub's own HTTP retries (5 after the first try, waiting 1, 2, 4, 8 and 8 s)
    wait 0.05-0.1 s instead: as many tries, in a fraction of the time. The pipeline's own
    retries and backoff are unchanged."""
    import huggingface_hub.utils._http as hub_http

    for retrying in (hub_http.http_backoff, hub_http.http_stream_backoff):
        retrying = getattr(retrying, "__wrapped__", retrying)  # (the context manager's function)
        retrying.__kwdefaults__.update(base_wait_time=0.05, max_wait_time=0.1)


def skip_stream_exit_pause() -> None:
    """datasets pauses 5 s (config.SLEEP_TIME_ON_THREADS_SHUTDOWN) whenever a streamed read of
    Parquet files ends, to let pyarrow's threads finish before the interpreter is torn down
    (apache/arrow#45214). A forked run ends with os._exit, without that teardown: no pause."""
    import datasets.config

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0


# Read by the pipeline (and torch.distributed's env:// rendezvous) when a run starts, not at
# import: a run may set them differently from its server.
RUNTIME_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "IMAGESEARCHTR_DIST_TIMEOUT_S", "PYTEST_CURRENT_TEST",
)  # fmt: skip

SERVER = r"""
import atexit, importlib, json, os, signal, sys, threading, traceback
for name in json.loads(sys.argv[1]):  # PRELOAD or the set the test named
    importlib.import_module(name)
from pipeline.cli import main
sys.path.insert(0, sys.argv[2])  # tests/, for cli_forks's own functions only
from cli_forks import shorten_hub_retries, skip_stream_exit_pause
del sys.path[0]

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
            shorten_hub_retries()
        if job["no_stream_exit_pause"]:
            skip_stream_exit_pause()
        try:
            if job.get("code") is None:
                code = main(job["args"])
            else:  # python -c CODE ARGS (run_python)
                sys.argv = ["-c", *job["args"]]
                exec(compile(job["code"], "<string>", "exec"), {"__name__": "__main__"})
                code = 0
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

    def __init__(self, env: dict, preload=PRELOAD):
        self.work = Path(tempfile.mkdtemp(prefix="cli-forks-"))
        atexit.register(shutil.rmtree, self.work, ignore_errors=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(list(preload)), str(TESTS_DIR)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.work / "server.stderr").open("w"),
            text=True,
        )
        self.runs = 0

    def start(
        self,
        args,
        env: dict,
        log=None,
        fast_hub_retries=False,
        no_stream_exit_pause=False,
        code: str | None = None,
    ):
        """Fork a run; ``log``: one file for its stdout and stderr (default: one each here).
        ``fast_hub_retries``: ``shorten_hub_retries`` in the run (huggingface_hub's retries of
        uploads and downloads wait 0.05-0.1 s); ``no_stream_exit_pause``:
        ``skip_stream_exit_pause`` in the run (no 5 s pause after a streamed read); ``code``:
        run ``python -c CODE ARGS`` instead of the CLI (``run_python``)."""
        self.runs += 1
        base = self.work / str(self.runs)
        job = {"args": [str(a) for a in args], "env": env, "fast_hub_retries": fast_hub_retries}
        job["no_stream_exit_pause"] = no_stream_exit_pause
        job["code"] = code
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
        command = ["python", "-m", "pipeline", *args] if job["code"] is None else ["python", "-c"]
        return subprocess.CompletedProcess(command, code, out, err)

    def stop(self) -> None:
        """End the server (its runs have ended: ``wait`` was called for each). It holds nothing
        to save: killed, without the interpreter's teardown."""
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        shutil.rmtree(self.work, ignore_errors=True)


_servers: dict[tuple, ForkServer] = {}


def _env_key(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k not in RUNTIME_VARIABLES))


def server_for(env: dict, preload=PRELOAD) -> ForkServer:
    """The server of this pytest worker for ``env`` and ``preload`` (started on first use)."""
    key = (tuple(preload), _env_key(env))
    if key not in _servers:
        server_env = {k: v for k, v in env.items() if k not in RUNTIME_VARIABLES}
        _servers[key] = ForkServer(server_env, preload)
    return _servers[key]


def stop_servers(hf_home) -> None:
    """End the servers whose environment has this HF_HOME: a test's own (its cache), which no
    other test's runs share."""
    for key in [key for key in _servers if ("HF_HOME", str(hf_home)) in key[1]]:
        _servers.pop(key).stop()


def start(args, env: dict | None = None, preload=PRELOAD, **options):
    """Fork ``python -m pipeline ARGS`` with ``env`` (default: this process's) from a server
    that imported ``preload``; a handle. ``options``: ``ForkServer.start``'s."""
    env = dict(os.environ if env is None else env)
    server = server_for(env, preload)
    return server, server.start(args, env, **options)


def pid(handle) -> int:
    return handle[1][0]


def wait(handle, timeout: float = 300) -> subprocess.CompletedProcess:
    server, run = handle
    return server.wait(run, timeout)


def run(
    args, env: dict | None = None, timeout: float = 300, **options
) -> subprocess.CompletedProcess:
    """``start`` (``options``: its ``preload`` and ``ForkServer.start``'s), then ``wait``."""
    return wait(start(args, env, **options), timeout)


# What a Hub client imports (tests/test_lazy.py's, test_hub_e2e.py's, test_faults.py's): the
# Searcher with torch and transformers (imagesearchtr.searcher imports the Encoder), the Hub
# client, the test helpers', and what the CLI's commands import (PRELOAD): one server a pytest
# worker serves them all.
CLIENT_PRELOAD = PRELOAD + (
    "faiss", "httpx", "huggingface_hub.hf_api", "numpy", "imagesearchtr.searcher",
    "pipeline.datafiles",
)  # fmt: skip


def _linked(env: dict, preload) -> tuple[ForkServer, dict]:
    """The server for ``env`` apart from its HF_HOME, with its HF_HOME link pointed at
    ``env``'s; the run's environment (HF_HOME: the link). See ``run_python``."""
    env = dict(env)
    home = Path(env.pop("HF_HOME"))
    key = (tuple(preload), _env_key(env), "HF_HOME link")
    if key not in _servers:
        links = Path(tempfile.mkdtemp(prefix="hf-home-link-"))
        atexit.register(shutil.rmtree, links, ignore_errors=True)
        (links / "imports").mkdir()  # what the server's imports may write there: not a test's
        link = links / "hf-home"
        link.symlink_to(links / "imports")
        server_env = {k: v for k, v in env.items() if k not in RUNTIME_VARIABLES}
        _servers[key] = ForkServer({**server_env, "HF_HOME": str(link)}, preload)
        _servers[key].hf_home = link
    server = _servers[key]
    pointer = server.hf_home.with_name("hf-home.new")
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(home.resolve(), target_is_directory=True)
    os.replace(pointer, server.hf_home)
    return server, {**env, "HF_HOME": str(server.hf_home)}


def run_python(
    code: str, args, env: dict, preload=CLIENT_PRELOAD, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` with ``env``, forked from a server that imported ``preload``.

    ``env`` must name an ``HF_HOME`` (each test's own cache): unlike ``run``'s servers, one
    server (per pytest worker and environment apart from HF_HOME) serves every HF_HOME. It
    started with HF_HOME set to a symbolic link, which is pointed at the run's HF_HOME before
    the fork; the run's environment has that link as its HF_HOME too. So what huggingface_hub,
    datasets and transformers derived from HF_HOME at import (the hub cache, the token file,
    ...) is the link, and every read and write through it lands in the run's own folder, as in
    a fresh interpreter started with that HF_HOME. One run at a time: this waits for the run.
    """
    server, env = _linked(env, preload)
    return server.wait(server.start(args, env, code=code), timeout)


def run_linked(
    args, env: dict, preload=CLIENT_PRELOAD, timeout: float = 300, **options
) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` with ``env`` (which names an HF_HOME), forked from the server
    that serves every HF_HOME as ``run_python``'s does: a test's Hub commands share one server
    per pytest worker (``run``'s servers for a test's own HF_HOME start one per test). One run at
    a time: this waits for the run. ``options``: ``ForkServer.start``'s."""
    server, env = _linked(env, preload)
    return server.wait(server.start(args, env, **options), timeout)


if __name__ == "__main__":  # python tests/cli_forks.py -m MODULE ARGS (the module docstring)
    import runpy

    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        sys.exit("usage: python tests/cli_forks.py -m MODULE [ARGS...]")
    shorten_hub_retries()
    sys.path[0] = os.getcwd()  # as python -m has it: the working folder, not tests/
    module = sys.argv[2]
    del sys.argv[1:3]  # runpy sets sys.argv[0] to the module's file, as python -m does
    runpy.run_module(module, run_name="__main__", alter_sys=True)
