"""Shared fixtures: tiny checkpoints, the shared TasvirEt photos, a local Hub server.

Everything here runs offline. The shared photos are read in place from
../shared/data/tasviret-flickr8k (research-use licence: never copied into the repo).
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random MultiEmbedTR checkpoint with both weight files."""
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny-multiembedtr"), formats=("bin", "safetensors")
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


from hub_server import local_hub  # noqa: E402, F401  (pytest fixture: a local Hub server)


def run_cli(*args, env: dict | None = None, check: bool = True, timeout: float = 300):
    """Run ``python -m pipeline ARGS`` the way a user does; return the CompletedProcess."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
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


@pytest.fixture(scope="session")
def shared_build(tmp_path_factory, tiny_model_dir, shared_data) -> Path:
    """The 413 shared photos encoded and indexed once per session (tests copy, never modify)."""
    build = tmp_path_factory.mktemp("shared-build")
    run_cli("encode", "--data", shared_data, "--model", tiny_model_dir, "--out", build)
    run_cli("index", "--build", build)
    return build


@pytest.fixture
def hub_env(local_hub, tmp_path) -> dict:  # noqa: F811
    """Environment for a subprocess talking to the local Hub with a fresh, empty cache."""
    home = tmp_path / "hf-home"
    home.mkdir()
    return {**local_hub.env(), "HF_HOME": str(home)}


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
