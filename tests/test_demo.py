"""`make demo` from the README: build, publish to a local folder, serve, answer "köpek"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO_ROOT, TESTS_DIR, free_port


@pytest.mark.skipif(not os.path.exists("/usr/bin/make"), reason="make is not installed")
def test_make_demo_serves_a_page_that_finds_dogs(tmp_path, shared_data, tiny_model_dir):
    from gradio_client import Client

    port = free_port()
    photos = tmp_path / "my photos"  # paths with spaces, as a user's often are
    photos.symlink_to(shared_data, target_is_directory=True)
    out = tmp_path / "demo out"
    cmd = ["make", "demo", f"PY={sys.executable}", f"DATA={photos}"]
    cmd += [f"MODEL={tiny_model_dir}", f"BUILD={out / 'build'}", f"PORT={port}"]
    cmd += [f"DEMO_DIR={out / 'repo'}", f"SPACE_DIR={out / 'space'}"]
    log = open(tmp_path / "demo.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make demo did not start serving in 240 s"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        gallery, results, status = Client(url, verbose=False).predict(
            query="köpek", k=5, deep=True, alpha=0.3, api_name="/search"
        )
        assert len(gallery) == 5 and all(os.path.isfile(item["image"]) for item in gallery)
        assert any("köpek" in " ".join(r["captions"]).lower() for r in results)
        assert (out / "repo" / "index" / "manifest.json").is_file()
        assert (out / "space" / "app.py").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.mark.skipif(not os.path.exists("/usr/bin/make"), reason="make is not installed")
def test_make_demo_refuses_a_port_in_use_before_building(tmp_path):
    import socket

    port = free_port()
    with socket.socket() as listener:  # a first `make demo` still serving there
        listener.bind(("127.0.0.1", port))
        listener.listen()
        result = subprocess.run(
            ["make", "demo", f"PY={sys.executable}", f"DATA={tmp_path / 'photos'}",
             f"BUILD={tmp_path / 'build'}", f"PORT={port}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"127.0.0.1:{port} is in use" in result.stdout and "PORT=" in result.stdout
    assert "--data" not in result.stdout + result.stderr  # refused before the build
    assert not (tmp_path / "build").exists()


@pytest.mark.skipif(not os.path.exists("/usr/bin/make"), reason="make is not installed")
@pytest.mark.parametrize("host", ["::", "::1"])
def test_make_demo_port_check_leaves_a_host_it_cannot_try_to_gradio(host):
    # (an IPv6 HOST: the check's traceback stopped make demo; a name that does not resolve
    # fails the same way, but would ask a DNS server, and tests stay off the network)
    result = subprocess.run(
        ["make", "-s", "demo-port", f"PY={sys.executable}", f"HOST={host}", f"PORT={free_port()}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/make"), reason="make is not installed")
def test_make_publish_without_hf_repo_says_so_before_building(tmp_path):
    result = subprocess.run(
        ["make", "publish", f"PY={sys.executable}", f"DATA={tmp_path / 'photos'}",
         f"BUILD={tmp_path / 'build'}", "HF_REPO="],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "usage: make publish HF_REPO=user/name" in result.stdout
    assert "--data" not in result.stdout + result.stderr  # before the encode
    assert not (tmp_path / "build").exists()


# ---------------------------------------------------------------------------------------------
# The Hub unreachable: one `error:` line naming the address, exit 2, no traceback
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: bound for the test and never listened on, so every
    connection is refused (a port closed again could be another xdist worker's server by the
    time the commands try it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_hub_unreachable_is_one_error_line_for_every_hub_command(
    tmp_path, tiny_model_dir, generated_build, closed_port
):
    import cli_forks

    endpoint = f"http://127.0.0.1:{closed_port}"
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
        "HF_HOME": str(tmp_path / "hf-home"),  # nothing cached: the Hub is really needed
        "HF_TOKEN": "hf_unused",
        "HF_HUB_DISABLE_XET": "1",
    }
    # Every command tries the closed port as often as it would (huggingface_hub retries each
    # request 5 times), but waits 0.05-0.1 s between tries, not 1, 2, 4, 8 and 8 s
    # (cli_forks.shorten_hub_retries): make's recipe runs `$(PY) -m pipeline ...` through
    # tests/cli_forks.py, and the CLI's runs are forked from one server for this environment.
    fast_python = f"{sys.executable} {TESTS_DIR / 'cli_forks.py'}"
    commands = {
        "download": ["download", "--num-samples", "3", "--output-dir", tmp_path / "dl"],
        "encode --hf-dataset": [
            "encode", "--hf-dataset", "someone/photos", "--model", tiny_model_dir,
            "--out", tmp_path / "enc",
        ],
        "publish": ["publish", "--build", generated_build, "--repo", "testuser/x"],
        "publish-space --space": [
            "publish-space", "--space", "testuser/x-search", "--dataset-repo", "testuser/x",
        ],
        "publish-space --to": [
            "publish-space", "--to", tmp_path / "space", "--dataset-repo", "testuser/x",
        ],
        "evaluate --repo": ["evaluate", "--repo", "testuser/x", "--output", tmp_path / "e.json"],
    }  # fmt: skip
    finished, make = {}, None
    if os.path.exists("/usr/bin/make"):
        make = subprocess.Popen(
            ["make", "data", f"PY={fast_python}", "NUM_SAMPLES=3"],
            cwd=REPO_ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    try:
        # All at once: each waits out the libraries' retries against the closed port.
        runs = {
            name: cli_forks.start(args, env, fast_hub_retries=True)
            for name, args in commands.items()
        }
        for name, run in runs.items():
            done = cli_forks.wait(run, timeout=300)
            finished[name] = (done.returncode, done.stderr)
        if make is not None:
            _, err = make.communicate(timeout=300)
            finished["make demo (download step)"] = (make.returncode, err)
    finally:
        cli_forks.stop_servers(env["HF_HOME"])
        if make is not None and make.poll() is None:
            make.kill()
            make.communicate()
    for name, (returncode, err) in finished.items():
        assert returncode == 2, f"{name}: exit {returncode}\n{err[-3000:]}"
        assert "Traceback" not in err, f"{name}:\n{err[-3000:]}"
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"{name}:\n{err[-3000:]}"
        assert f"cannot reach the Hugging Face Hub at {endpoint}" in errors[0], name
