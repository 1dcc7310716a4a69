"""Shared fixtures: tiny checkpoints, the shared TasvirEt photos, a local Hub server.

Everything here runs offline. The shared photos are read in place from
../shared/data/tasviret-flickr8k (research-use licence: never copied into the repo).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DATA = Path(
    os.environ.get("IMAGESEARCHTR_TEST_DATA", REPO_ROOT.parent / "shared/data/tasviret-flickr8k")
)

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
