"""Shared fixtures: tiny checkpoints, the shared TasvirEt photos, a local Hub server.

Everything here runs offline. The shared photos are read in place from
../shared/data/tasviret-flickr8k (research-use licence: never copied into the repo).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DATA = Path(
    os.environ.get("IMAGESEARCHTR_TEST_DATA", REPO_ROOT.parent / "shared/data/tasviret-flickr8k")
)

# A private Hugging Face cache per test session: results never depend on what an earlier run
# (or the developer's own work) left in ~/.cache/huggingface. Set before datasets is imported.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="imagesearchtr-hf-home-")
# Offline by construction: nothing in the tests may reach the real Hub.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(TESTS_DIR))

from tiny_checkpoint import write_tiny_checkpoint  # noqa: E402


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` once per test run, shared by the pytest-xdist workers: the first worker
    to get here makes it under a file lock, the others wait and reuse it. Never modify it."""
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' common base folder
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random MultiEmbedTR checkpoint with both weight files."""
    return made_once(
        tmp_path_factory,
        "tiny-multiembedtr",
        lambda folder: write_tiny_checkpoint(folder, formats=("bin", "safetensors")),
    )


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from imagesearchtr import Encoder

    return Encoder.from_pretrained(tiny_model_dir, dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The 413 TasvirEt photos with 826 Turkish captions, or a skip saying where they belong."""
    if not (SHARED_DATA / "captions.jsonl").is_file():
        pytest.skip(
            f"shared TasvirEt photos not found at {SHARED_DATA}; they are research-use data kept "
            "outside the repo (set IMAGESEARCHTR_TEST_DATA to their folder to run this test)"
        )
    return SHARED_DATA


from hub_server import local_hub, stop_process  # noqa: E402, F401  (local_hub: a fixture)


def run_cli(
    *args,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 300,
    forked: bool = False,
    **fork_options,
):
    """Run ``python -m pipeline ARGS`` the way a user does; return the CompletedProcess.

    Without ``env``, forked from a process that imported the pipeline already (tests/cli_forks.py:
    the same ``main()`` in a process of its own, without the imports); with ``env`` (a Hub's
    variables, read at import), a fresh interpreter, or with ``forked=True`` forked from a
    server started with that environment, for a test that runs several commands with it (the
    server costs about one fresh interpreter's start; ``hub_env`` ends it with the test).
    ``fork_options``: ``cli_forks.start``'s (``preload``, ``no_stream_exit_pause``, ...).
    """
    import subprocess

    if env is None or forked:
        import cli_forks

        env = None if env is None else {**os.environ, **env}
        result = cli_forks.run(args, env, timeout=timeout, **fork_options)
    else:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *map(str, args)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pipeline {' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def hub_cli(*args, env: dict, check: bool = True, timeout: float = 300, **fork_options):
    """``run_cli(*args, env=env)`` for a Hub command (``env`` names the test's HF_HOME), forked
    from one server per pytest worker whatever the test's HF_HOME (``cli_forks.run_linked``, the
    server ``cli_forks.run_python``'s clients fork from), not a fresh interpreter (seconds of
    imports a command). datasets' pause after a streamed read is skipped (a forked run has no
    interpreter teardown to wait for). ``fork_options``: ``cli_forks.ForkServer.start``'s."""
    import cli_forks

    fork_options.setdefault("no_stream_exit_pause", True)
    result = cli_forks.run_linked(args, {**os.environ, **env}, timeout=timeout, **fork_options)
    if check and result.returncode != 0:
        raise AssertionError(
            f"pipeline {' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def shared_build(tmp_path_factory, tiny_model_dir, shared_data) -> Path:
    """The 413 shared photos encoded and indexed once per run (tests copy, never modify)."""

    def make(build: Path) -> None:  # the CLI's defaults, in this process
        from pipeline.encode import EncodeConfig, run_encode
        from pipeline.index import IndexConfig, run_index
        from pipeline.inputs import FolderSource

        run_encode(FolderSource(shared_data), EncodeConfig(out=build, model=str(tiny_model_dir)))
        run_index(IndexConfig(build=build))

    return made_once(tmp_path_factory, "shared-build", make)


@pytest.fixture
def hub_env(local_hub, tmp_path) -> dict:  # noqa: F811
    """Environment for a subprocess talking to the local Hub with a fresh, empty cache."""
    home = tmp_path / "hf-home"
    home.mkdir()
    yield {**local_hub.env(), "HF_HOME": str(home)}
    if "cli_forks" in sys.modules:  # the servers of run_cli(..., forked=True) for this cache
        sys.modules["cli_forks"].stop_servers(home)


def write_photos(folder: Path, names, seed: int = 0, size=(48, 36), captions=None) -> Path:
    """Generated JPEGs (random pixels: every one distinct) plus captions.jsonl, for tests that
    need images but not the shared photos. ``names``: stems; ``captions``: stem -> caption(s),
    default one Turkish caption each. Appends to an existing captions.jsonl."""
    import io
    import json

    import numpy as np
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for name in names:
        digest = sum(ord(c) * 31**i for i, c in enumerate(name)) % 2**31
        rng = np.random.default_rng(seed * 7919 + digest)
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
        (folder / "images" / f"{name}.jpg").write_bytes(buf.getvalue())
        texts = (captions or {}).get(name, f"karda oynayan köpek {name}")
        for text in [texts] if isinstance(texts, str) else texts:
            lines.append(json.dumps({"path": f"images/{name}.jpg", "caption": text}) + "\n")
    with (folder / "captions.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(lines)
    return folder


# ---------------------------------------------------------------------------------------------
# A published Space as the Hub holds it, built and run the way Spaces does (hub stream).
# One per session: tests/test_spaces_build.py and tests/test_card_snippets.py share it.
# ---------------------------------------------------------------------------------------------


def card_python(version: str) -> Path:
    """An interpreter of the Space card's ``python_version`` (pyenv's, else python3.X on PATH)."""
    import glob
    import shutil
    import subprocess

    candidates = []
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
        candidates = sorted(glob.glob(f"{root.stdout.strip()}/versions/{version}.*/bin/python"))
    except (OSError, subprocess.SubprocessError):
        pass
    found = candidates[-1] if candidates else shutil.which(f"python{version}")
    if not found:
        pytest.skip(f"no Python {version} here (the Space card's python_version); install it")
    return Path(found)


def make_venv(python: Path, folder: Path, *requirements: str) -> Path:
    """A virtualenv of ``python`` with ``requirements`` (pip arguments) and nothing else; its
    python.

    Built once per content: the key is the interpreter, its version and the requirements (with
    the text of every ``-r`` file), and the venv is kept in IMAGESEARCHTR_TEST_VENV_CACHE
    (default ~/.cache/imagesearchtr/test-venvs), so a run whose requirements did not change
    reuses the env instead of spending minutes in pip. Any change to them builds a new one.
    IMAGESEARCHTR_TEST_FRESH_VENVS=1 builds every env afresh at ``folder`` instead.
    """
    import fcntl
    import hashlib
    import shutil
    import subprocess

    if os.environ.get("IMAGESEARCHTR_TEST_FRESH_VENVS") == "1":
        return _build_venv(python, folder, requirements)
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = hashlib.sha256(f"{Path(python).resolve()}\n{version}".encode())
    for i, arg in enumerate(requirements):
        is_file = i > 0 and requirements[i - 1] == "-r"  # its text counts, not its temp path
        key.update(b"\n" + (Path(arg).read_bytes() if is_file else arg.encode()))
    default = Path.home() / ".cache" / "imagesearchtr" / "test-venvs"
    cache = Path(os.environ.get("IMAGESEARCHTR_TEST_VENV_CACHE", default))
    final = cache / key.hexdigest()[:24]
    cache.mkdir(parents=True, exist_ok=True)
    # One builder at a time (pytest-xdist workers share the cache); the others wait and reuse.
    with open(cache / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "complete").is_file():
            building = cache / f"{final.name}.tmp-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)  # an unfinished one, never one in use
            _build_venv(python, building, requirements)
            (building / "complete").write_text("\n".join(requirements) + "\n")
            building.rename(final)  # a venv's bin/python finds its prefix relative to itself
    return final / "bin" / "python"


def _build_venv(python: Path, folder: Path, requirements) -> Path:
    import subprocess

    subprocess.run([str(python), "-m", "venv", str(folder)], check=True, timeout=300)
    venv_python = folder / "bin" / "python"
    if requirements:
        done = subprocess.run(
            [str(venv_python), "-m", "pip", "install", "--quiet", *requirements],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            raise AssertionError(f"pip install {' '.join(requirements)} failed:\n{done.stderr}")
    return venv_python


@pytest.fixture(scope="session")
def session_hub_env(local_hub, tmp_path_factory) -> dict:  # noqa: F811
    """hub_env for session fixtures: the local Hub and a cache of their own."""
    return {**local_hub.env(), "HF_HOME": str(tmp_path_factory.mktemp("session-hf-home"))}


@pytest.fixture(scope="session")
def generated_build(tmp_path_factory, tiny_model_dir, tiny_encoder) -> Path:
    """Six drawn photos with Turkish captions, encoded with the tiny model and indexed."""
    from PIL import Image

    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    data = tmp_path_factory.mktemp("space-photos")
    (data / "images").mkdir()
    captions = {
        "kar.jpg": ["karlı dağlar ve mavi gökyüzü"],
        "deniz.jpg": ["deniz kenarında gün batımı", "sahilde yürüyen insanlar"],
        "orman.jpg": ["yeşil orman"],
        "kopek.jpg": ["karda oynayan köpekler"],
        "sehir.jpg": ["gece şehir ışıkları"],
        "bisiklet.jpg": ["bisiklet süren bir adam"],
    }
    colors = [
        (250, 250, 250),
        (255, 120, 0),
        (0, 90, 0),
        (200, 200, 255),
        (20, 20, 60),
        (150, 0, 0),
    ]
    lines = []
    for (name, caps), color in zip(captions.items(), colors, strict=True):
        Image.new("RGB", (48, 36), color).save(data / "images" / name)
        lines += [
            json.dumps({"path": f"images/{name}", "caption": c}, ensure_ascii=False) for c in caps
        ]
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build = tmp_path_factory.mktemp("space-build")
    config = EncodeConfig(out=build, model=str(tiny_model_dir), device="cpu", dtype="float32")
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))

    return build


@pytest.fixture(scope="session")
def published_space(tmp_path_factory, generated_build, session_hub_env, local_hub):  # noqa: F811
    """A generated dataset published to the local Hub and its Space, downloaded as the Hub
    holds it. The Space is ``DATASET-search``, the name the dataset card's snippet calls."""
    from types import SimpleNamespace

    build = generated_build
    import uuid

    import cli_forks

    dataset_repo = f"testuser/spaces-{uuid.uuid4().hex[:8]}"
    space_id = f"{dataset_repo}-search"
    # Both runs fork from one server that imported what they import (not two interpreters).
    cli = {"env": session_hub_env, "forked": True, "preload": cli_forks.HUB_PRELOAD}
    try:
        out = run_cli("publish", "--build", build, "--repo", dataset_repo, **cli)
        revision = out.stdout.split("revision: ", 1)[1].split()[0]
        out = run_cli(
            "publish-space", "--space", space_id, "--dataset-repo", dataset_repo,
            "--dataset-revision", revision, **cli,
        )  # fmt: skip
    finally:
        cli_forks.stop_servers(session_hub_env["HF_HOME"])
    folder = tmp_path_factory.mktemp("space-repo") / "space"
    script = (
        "import json, sys\n"
        "from huggingface_hub import HfApi, snapshot_download\n"
        "snapshot_download(sys.argv[1], repo_type='space', local_dir=sys.argv[2])\n"
        "variables = HfApi().get_space_variables(sys.argv[1])\n"
        "print(json.dumps({k: v.value for k, v in variables.items()}))\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script, space_id, str(folder)],
        env={**os.environ, **session_hub_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import yaml

    card = (folder / "README.md").read_text(encoding="utf-8")
    return SimpleNamespace(
        dataset_repo=dataset_repo,
        revision=revision,
        space_id=space_id,
        folder=folder,
        variables=json.loads(done.stdout.strip().splitlines()[-1]),
        card=card,
        card_data=yaml.safe_load(card.split("---\n")[1]),
        publish_output=out.stdout,
        hub=local_hub,
        hub_env=session_hub_env,
    )


@pytest.fixture(scope="session")
def space_venv(published_space, tmp_path_factory) -> Path:
    """What the Spaces builder makes: a bare virtualenv of the card's python_version with the
    Space's requirements.txt and gradio==sdk_version, nothing of this project. Its python."""
    meta = published_space.card_data
    python = card_python(str(meta["python_version"]))
    # Index lines (the CPU-only torch index) are dropped here: that index is unreachable from
    # the test machines and pip retries it for minutes; the pins alone resolve from the
    # configured package index (torch==2.13.0 matches the CPU wheel there too).
    requirements = tmp_path_factory.mktemp("space-reqs") / "requirements.txt"
    lines = (published_space.folder / "requirements.txt").read_text().splitlines()
    requirements.write_text("".join(f"{x}\n" for x in lines if not x.startswith("--")))
    folder = tmp_path_factory.mktemp("space-venv") / "venv"
    return make_venv(python, folder, "-r", str(requirements), f"gradio=={meta['sdk_version']}")


def load_app(name: str = "imagesearchtr_space_app"):
    """Import space/app.py the way the Space runs it (a script beside its imagesearchtr/), as a
    module named ``name``: each name is a module of its own, whose constants and module state a
    test may change apart from the others'."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_space_app(python: Path, folder: Path, env: dict, log: Path):
    """``python app.py`` in ``folder`` with exactly ``env``; (process, url) once it listens."""
    import subprocess
    import time
    import urllib.request

    port = free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [str(python), "app.py"], cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"app.py did not listen within 240 s:\n{log.read_text()[-4000:]}")


def stop(proc) -> None:
    stop_process(proc, timeout=20)


def space_env(published_space, home: Path) -> dict:
    """Only what a Space has: its variables, the Hub address, HOME/PATH, a cache of its own.

    HF_HUB_DISABLE_XET: the local Hub serves plain HTTP files, not the Xet protocol.
    HF_HUB_DISABLE_TELEMETRY: no telemetry or agent-registry requests to the local Hub."""
    hub = published_space.hub_env
    return {
        **published_space.variables,
        "HF_ENDPOINT": hub["HF_ENDPOINT"],
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(home),
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


@pytest.fixture(scope="session")
def running_space(published_space, space_venv, tmp_path_factory):
    """The published Space's app.py running in the bare virtualenv; its URL. The local Hub
    answers the Space id with this URL, so ``gradio_client.Client(space_id)`` reaches it."""
    home = tmp_path_factory.mktemp("space-home")
    proc, url = start_space_app(
        space_venv, published_space.folder, space_env(published_space, home), home / "app.log"
    )
    published_space.hub.set_space_host(published_space.space_id, url)
    try:
        yield url
    finally:
        stop(proc)
