"""The published Space builds and runs as Hugging Face Spaces builds and runs it.

Takes the Space repo as the local Hub holds it after ``publish-space`` (conftest
``published_space``), makes a bare virtualenv of the card's ``python_version`` with its
requirements.txt and ``gradio==sdk_version`` and nothing of this project (``space_venv``), runs
``python app.py`` from the repo folder with only the Space's variables set, and queries it.
Also: the requirements of each hardware resolve on the card's Python (``pip install --dry-run``
against PyPI, metadata only), the ZeroGPU variant of the app answers on CPU, and
``publish-space`` follows the Space's runtime stage, requests hardware, and reports failures.
Slow (one virtualenv per session, about two minutes), and part of ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import card_python, run_cli, space_env, start_space_app, stop

from pipeline.space import PYTHON_VERSION, requirements_text

# The tests that need the Space's virtualenv share one worker with test_card_snippets.py, which
# builds it once; the others (the CLI and the hardware matrix) may run on any worker.
ON_THE_VENV_WORKER = pytest.mark.xdist_group("space-venv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

HARDWARE_MATRIX = ("cpu-basic", "t4-small", "zero-a10g")


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def test_card_states_what_the_builder_needs(published_space):
    meta = published_space.card_data
    assert str(meta["python_version"]) == PYTHON_VERSION == "3.11"
    assert meta["suggested_hardware"] == "cpu-basic"
    assert meta["app_file"] == "app.py" and meta["sdk"] == "gradio"
    # pyproject's requires-python says the same Python
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'requires-python = ">={PYTHON_VERSION}"' in pyproject


def test_space_repo_holds_the_app_files_in_one_commit(published_space):
    space_id = published_space.space_id
    commits = published_space.hub.requests_matching("POST", rf"^/api/spaces/{space_id}/commit/")
    assert len(commits) == 1  # on top of the Space's initial commit
    # The files as the Hub holds them (the local copy also gets __pycache__ and gradio's .pyi
    # stubs once another test has run app.py in it).
    from huggingface_hub import HfApi

    env = published_space.hub_env
    api = HfApi(endpoint=env["HF_ENDPOINT"], token=env.get("HF_TOKEN"))
    files = set(api.list_repo_files(space_id, repo_type="space"))
    source = Path(__file__).resolve().parent.parent / "space" / "imagesearchtr"
    library = {f"imagesearchtr/{p.name}" for p in source.glob("*.py")}
    assert files == {".gitattributes", "README.md", "app.py", "requirements.txt", *library}
    assert published_space.variables == {
        "DATASET_REPO": published_space.dataset_repo,
        "DATASET_REVISION": published_space.revision,
    }


@ON_THE_VENV_WORKER
def test_space_builds_in_a_bare_env_and_answers_search(published_space, space_venv, running_space):
    # nothing of this project in the Space's environment: its own imagesearchtr/ is used
    pip_list = subprocess.run(
        [str(space_venv), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "imagesearchtr" not in pip_list and "gradio==" in pip_list
    version = subprocess.run(
        [str(space_venv), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == PYTHON_VERSION

    gallery, results, status = client(running_space).predict(
        "karlı dağlar", 3, False, 0.6, api_name="/search"
    )
    assert len(results) == 3 and len(gallery) == 3, status
    page = urllib.request.urlopen(running_space, timeout=30).read().decode("utf-8")
    assert f"{published_space.dataset_repo}@{published_space.revision}" in page


@ON_THE_VENV_WORKER
def test_embed_api_returns_the_query_embedding(running_space, tiny_encoder):
    import numpy as np

    vector = client(running_space).predict("karlı dağlar", api_name="/embed")
    expected = tiny_encoder.encode_texts(["karlı dağlar"])[0]
    vector = np.array(vector, dtype=np.float32)
    assert vector.shape == (tiny_encoder.dim,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3  # L2-normalised, as the index
    # the same model (the Space may pick a faster dtype than this float32 encoder)
    assert float(vector @ expected) > 0.999
    with pytest.raises(Exception, match="metin"):
        client(running_space).predict("   ", api_name="/embed")


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15).close()
        return True
    except OSError:
        return False


def test_hardware_matrix_resolves_on_the_card_python(published_space, tmp_path):
    """Each hardware's requirements + gradio resolve for the card's Python, from PyPI.

    ``pip install --dry-run --report`` with ``--isolated`` (no local wheels or mirrors) against
    PyPI reads only the wheels' metadata (PEP 658), so the CUDA torch of t4-small and zero-a10g
    is resolved with all its nvidia-* dependencies without downloading gigabytes. Once the
    index lines are dropped, every hardware's requirements are a subset of zero-a10g's (which
    adds ``spaces``), and an install that meets a set of requirements meets each subset: one
    resolution of that set (about 30 s of pip's CPU) answers for all of them. What it does not
    prove: the CPU-only index line (download.pytorch.org, unreachable here) is dropped, so for
    cpu-basic torch==2.13.0 resolves from PyPI; that the CPU index serves 2.13.0+cpu is checked
    only on the real Hub.
    """
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here; the matrix needs its metadata")
    python = card_python(PYTHON_VERSION)
    gradio = f"gradio=={published_space.card_data['sdk_version']}"
    lines = {}
    for hardware in HARDWARE_MATRIX:
        text = requirements_text(hardware)
        assert ("download.pytorch.org/whl/cpu" in text) == (hardware == "cpu-basic")
        assert ("spaces==" in text) == (hardware == "zero-a10g")
        lines[hardware] = {x for x in text.splitlines() if x and not x.startswith(("--", "#"))}
    union = lines["zero-a10g"]
    assert all(wanted <= union for wanted in lines.values())
    req = tmp_path / "requirements.txt"
    req.write_text("".join(f"{x}\n" for x in sorted(union)))
    report_file = tmp_path / "report.json"
    proc = subprocess.run(
        [str(python), "-m", "pip", "--isolated", "install", "--dry-run", "--quiet",
         "--ignore-installed", "--index-url", "https://pypi.org/simple",
         "--report", str(report_file), "-r", str(req), gradio],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads(report_file.read_text())
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    assert names["torch"] == "2.13.0" and names["numpy"] == "2.4.6" and "spaces" in names
    assert any(n.startswith("nvidia-") for n in names), "GPU torch brings CUDA libraries"


@ON_THE_VENV_WORKER
def test_zero_gpu_app_answers_on_cpu(published_space, space_venv, tmp_path):
    """The ZeroGPU variant (spaces installed, @spaces.GPU around queries) runs on CPU too."""
    text = requirements_text("zero-a10g")
    spaces_pin = next(x for x in text.splitlines() if x.startswith("spaces=="))
    # A layer over the bare env: its site-packages plus `spaces`, as ZeroGPU's requirements add.
    venv = tmp_path / "zero-venv"
    subprocess.run([str(space_venv), "-m", "venv", str(venv)], check=True, timeout=300)
    base = subprocess.run(
        [str(space_venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "bare-space-env.pth").write_text(base + "\n")
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", spaces_pin],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    home = tmp_path / "home"
    home.mkdir()
    proc, url = start_space_app(
        python, published_space.folder, space_env(published_space, home), home / "app.log"
    )
    try:
        _, results, status = client(url).predict("karlı dağlar", 2, True, 0.5, api_name="/search")
        log = (home / "app.log").read_text()
        assert len(results) == 2, f"{status}\n{log[-3000:]}"
        assert len(client(url).predict("deniz", api_name="/embed")) > 0
        assert "queries run inside @spaces.GPU" in log  # the decorator is applied here
    finally:
        stop(proc)


# -- publish-space follows the runtime and requests hardware ------------------------------------


def _publish_space(published_space, space_id: str, *extra: str, check: bool = True):
    return run_cli(
        "publish-space", "--space", space_id, "--dataset-repo", published_space.dataset_repo,
        "--dataset-revision", published_space.revision, *extra,
        env=published_space.hub_env, check=check,
    )  # fmt: skip


def test_publish_space_waits_until_running_and_prints_the_url(published_space):
    out = published_space.publish_output
    assert f"url: {published_space.hub_env['HF_ENDPOINT']}/spaces/{published_space.space_id}" in out
    assert "stage: RUNNING" in out
    # A new Space has no hardware during its first build; cpu-basic is what it gets unasked.
    hub, space_id = published_space.hub, published_space.space_id
    assert hub.requests_matching("POST", rf"^/api/spaces/{space_id}/hardware$") == []
    # Its dataset was encoded with a local model folder, which only this machine can read.
    assert "note: " in out and "encoded with the local model folder" in out


def test_publish_space_to_a_folder_notes_a_local_model_too(
    published_space, tiny_model_dir, tmp_path
):
    # --to DIR with a Hub dataset writes a Space's files, card included, which a user may
    # upload as a Space: its dataset's model is a folder on this machine, which it cannot load.
    target = tmp_path / "space"
    out = run_cli(
        "publish-space", "--to", target, "--dataset-repo", published_space.dataset_repo,
        "--dataset-revision", published_space.revision, env=published_space.hub_env,
    ).stdout  # fmt: skip
    assert (target / "README.md").is_file() and "run it: DATASET_REPO=" in out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, out
    assert f"encoded with the local model folder {tiny_model_dir}," in notes[0]
    assert "a Space on the Hub cannot load" in notes[0] and "--model USER/NAME" in notes[0]


def test_publish_space_names_a_misspelled_dataset_or_revision(published_space):
    space_id = f"testuser/typo-{uuid.uuid4().hex[:8]}"
    for flags, said in (
        # (or a private one: the token to set, in a Space a secret of it)
        (["--dataset-repo", "testuser/no-such"], ("no dataset repo testuser/no-such on the Hub",
                                                  "set HF_TOKEN to a token that can read it")),
        (["--dataset-repo", published_space.dataset_repo, "--dataset-revision", "nope"],
         ("has no revision 'nope'",)),
    ):  # fmt: skip
        result = run_cli("publish-space", "--space", space_id, *flags, "--no-wait",
                         env=published_space.hub_env, check=False)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert all(words in result.stderr for words in said), result.stderr
        assert "Traceback" not in result.stderr
    import urllib.error
    import urllib.request

    env = published_space.hub_env
    asked = urllib.request.Request(
        f"{env['HF_ENDPOINT']}/api/spaces/{space_id}",
        headers={"Authorization": f"Bearer {env['HF_TOKEN']}"},
    )
    with pytest.raises(urllib.error.HTTPError, match="404"):  # nothing was created
        urllib.request.urlopen(asked)


def test_publish_space_refuses_a_space_that_holds_another_app(published_space):
    from huggingface_hub import CommitOperationAdd, HfApi

    env = published_space.hub_env
    api = HfApi(endpoint=env["HF_ENDPOINT"], token=env["HF_TOKEN"])
    space_id = f"testuser/someones-app-{uuid.uuid4().hex[:8]}"
    api.create_repo(space_id, repo_type="space", space_sdk="streamlit")
    files = {"app.py": b"import streamlit\n", "README.md": b"---\nsdk: streamlit\n---\nMine\n"}
    api.create_commit(
        space_id,
        [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v) for k, v in files.items()],
        commit_message="my app",
        repo_type="space",
    )
    before = api.space_info(space_id).sha
    result = _publish_space(published_space, space_id, "--no-wait", check=False)
    assert result.returncode == 2, result.stderr
    assert f"the Space {space_id} holds another app (app.py)" in result.stderr
    assert api.space_info(space_id).sha == before  # nothing committed...
    assert not api.get_space_variables(space_id)  # ...and no variable restarted it


def test_publish_space_build_error_prints_the_hub_message_and_exits_2(published_space):
    space_id = f"testuser/broken-{uuid.uuid4().hex[:8]}"
    published_space.hub.script_space(
        space_id, ["BUILDING", "BUILD_ERROR"], error_message="pip failed: no torch==9"
    )
    result = _publish_space(published_space, space_id, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "BUILD_ERROR" in last and "no torch==9" in last
    assert "Traceback" not in result.stderr


def test_publish_space_no_wait_skips_the_runtime(published_space):
    space_id = f"testuser/nowait-{uuid.uuid4().hex[:8]}"
    published_space.hub.script_space(space_id, ["BUILDING", "BUILD_ERROR"], error_message="x")
    result = _publish_space(published_space, space_id, "--no-wait")  # exit 0: no wait, no error
    assert "stage:" not in result.stdout and "BUILD_ERROR" not in result.stderr


def test_the_space_card_gives_the_address_the_hub_gives_the_space(published_space, tmp_path):
    # The Hub names most Spaces' hosts USER-NAME.hf.space, but not every one (a long id, say):
    # the card's links and MCP address are where gradio_client connects, SpaceInfo.host.
    from huggingface_hub import HfApi

    space_id = f"testuser/{'long-' * 10}{uuid.uuid4().hex[:8]}"
    host = "https://testuser-long-search-3f2a1b.hf.space"
    published_space.hub.set_space_host(space_id, host)
    _publish_space(published_space, space_id, "--no-wait")
    env = published_space.hub_env
    api = HfApi(endpoint=env["HF_ENDPOINT"], token=env["HF_TOKEN"])
    card = api.hf_hub_download(space_id, "README.md", repo_type="space", cache_dir=tmp_path)
    card = Path(card).read_text()
    assert f"{host}/gradio_api/mcp/" in card and f"{host}/?q=" in card
    assert ".hf.space" not in card.replace(host, "")  # no address made from the id


def test_hardware_refused_by_the_account_is_a_clear_error(published_space):
    space_id = f"testuser/gpu-{uuid.uuid4().hex[:8]}"
    result = _publish_space(published_space, space_id, "--hardware", "zero-a10g", check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "refused hardware zero-a10g" in last and "HTTP 403" in last and "PRO" in last
    assert "the files are published" in last


def test_hardware_granted_is_requested_and_fitted(published_space, tmp_path):
    space_id = f"testuser/t4-{uuid.uuid4().hex[:8]}"
    published_space.hub.allow_space_hardware("t4-small")
    _publish_space(published_space, space_id, "--hardware", "t4-small")
    posts = published_space.hub.requests_matching("POST", rf"^/api/spaces/{space_id}/hardware$")
    assert len(posts) == 1
    script = (
        "import sys\nfrom huggingface_hub import HfApi, hf_hub_download\n"
        "print(HfApi().get_space_runtime(sys.argv[1]).hardware)\n"
        "print(open(hf_hub_download(sys.argv[1], 'requirements.txt', repo_type='space')).read())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, space_id],
        env={**os.environ, **published_space.hub_env}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    hardware, requirements = done.stdout.split("\n", 1)
    assert hardware == "t4-small"
    assert "download.pytorch.org" not in requirements and "torch==2.13.0" in requirements
    # Publishing again with the same hardware asks for nothing (a request restarts the Space),
    # and a library module the new version no longer has goes from the Space.
    from huggingface_hub import CommitOperationAdd, HfApi

    env = published_space.hub_env
    api = HfApi(endpoint=env["HF_ENDPOINT"], token=env["HF_TOKEN"])
    old = CommitOperationAdd(path_in_repo="imagesearchtr/old.py", path_or_fileobj=b"x = 1\n")
    api.create_commit(space_id, [old], commit_message="an older version", repo_type="space")
    _publish_space(published_space, space_id, "--hardware", "t4-small", "--no-wait")
    posts = published_space.hub.requests_matching("POST", rf"^/api/spaces/{space_id}/hardware$")
    assert len(posts) == 1
    assert "imagesearchtr/old.py" not in api.list_repo_files(space_id, repo_type="space")


def test_waiting_for_a_space_skips_a_running_stage_of_the_commit_before(monkeypatch):
    from types import SimpleNamespace

    import pipeline.space
    from pipeline.space import wait_for_space

    stages = [("RUNNING", "old"), ("BUILDING", None), ("RUNNING", "new")]
    answers = iter(SimpleNamespace(stage=s, raw={"sha": sha}) for s, sha in stages)
    api = SimpleNamespace(endpoint="http://hub", get_space_runtime=lambda space_id: next(answers))
    monkeypatch.setattr(pipeline.space.time, "sleep", lambda s: None)
    # Right after the commit the Space still runs the old one: that is not this version running.
    assert wait_for_space(api, "u/app", "new", timeout=60) == "RUNNING"
    assert next(answers, None) is None  # it asked until the new commit ran


def test_unknown_hardware_is_refused_before_anything_is_sent(published_space):
    hub = published_space.hub
    before = hub.requests  # this worker's own Hub: nothing else talks to it meanwhile
    result = _publish_space(published_space, "testuser/x-hw", "--hardware", "tpu-v9", check=False)
    assert result.returncode == 2 and "cpu-basic" in result.stderr
    assert hub.requests == before, hub.requests[len(before) :]  # not one request
