"""Every card's usage snippet runs for a Hub visitor, verbatim.

The snippet is extracted from the generated card as the Hub shows it (the Space's README.md and
the dataset's README.md, downloaded from the local Hub after ``publish`` / ``publish-space``),
and run with the card's Python in a fresh virtualenv holding exactly what the card's
``# pip install`` line names: no torch, no model, nothing of this project. The query embedding
comes from the running Space's ``/embed`` (conftest ``running_space``; the local Hub answers the
Space id with its address, as the Hub answers with ``*.hf.space``).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import card_python, make_venv

from hub_card import extract_usage_snippet
from pipeline.space import PYTHON_VERSION

# one worker builds the Space's virtualenv once for this file and test_spaces_build.py
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("space-venv")]


@pytest.fixture(scope="module")
def visitor_python(published_space, tmp_path_factory):
    """A fresh virtualenv with exactly the packages the Space card's snippet says to install."""
    first = extract_usage_snippet(published_space.card).splitlines()[0]
    assert first.startswith("# pip install "), first
    packages = first.removeprefix("# pip install ").split()
    return make_venv(
        card_python(PYTHON_VERSION), tmp_path_factory.mktemp("visitor") / "venv", *packages
    )


def dataset_card(published_space) -> str:
    script = (
        "import sys\nfrom huggingface_hub import hf_hub_download\n"
        "print(open(hf_hub_download(sys.argv[1], 'README.md', repo_type='dataset',"
        " revision=sys.argv[2]), encoding='utf-8').read())"
    )
    import os
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, published_space.dataset_repo, published_space.revision],
        env={**os.environ, **published_space.hub_env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def run_snippet(python, snippet: str, published_space, tmp_path) -> list[str]:
    env = {
        "HF_ENDPOINT": published_space.hub_env["HF_ENDPOINT"],
        "HF_HUB_DISABLE_XET": "1",  # the local Hub serves plain HTTP files
        "HF_HUB_DISABLE_TELEMETRY": "1",  # no telemetry requests to the local Hub
        "HF_HOME": str(tmp_path / "visitor-cache"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    unhandled = len(published_space.hub.unhandled)
    done = subprocess.run(
        [str(python), "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{snippet}\n---\n{done.stderr[-3000:]}"
    assert published_space.hub.unhandled[unhandled:] == []  # the local Hub knew every route
    # the snippet prints "score captions" per hit (gradio_client adds a "Loaded as API" line)
    hits = [line for line in done.stdout.splitlines() if re.match(r"^-?\d+\.\d{3} \[", line)]
    scores = [float(line.split()[0]) for line in hits]
    assert scores == sorted(scores, reverse=True), hits  # best first
    return hits


def test_visitor_env_has_no_torch(visitor_python):
    done = subprocess.run([str(visitor_python), "-c", "import torch"], capture_output=True)
    assert done.returncode != 0


def test_space_card_snippet_runs_verbatim(published_space, running_space, visitor_python, tmp_path):
    snippet = extract_usage_snippet(published_space.card)
    assert f'"{published_space.revision}"' in snippet  # the dataset revision is pinned
    assert f'Client("{published_space.space_id}")' in snippet
    hits = run_snippet(visitor_python, snippet, published_space, tmp_path)
    assert len(hits) == 5  # k=5 of the 6 rows


def test_dataset_card_snippet_runs_verbatim(
    published_space, running_space, visitor_python, tmp_path
):
    card = dataset_card(published_space)
    snippet = extract_usage_snippet(card)
    # the same install line as the Space card: one snippet template for both cards
    assert snippet.splitlines()[0] == extract_usage_snippet(published_space.card).splitlines()[0]
    hits = run_snippet(visitor_python, snippet, published_space, tmp_path)
    assert len(hits) == 5
