"""`make demo` from the README: build, publish to a local folder, serve, answer "köpek"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not os.path.exists("/usr/bin/make"), reason="make is not installed")
def test_make_demo_serves_a_page_that_finds_dogs(tmp_path, shared_data, tiny_model_dir):
    from gradio_client import Client

    port = free_port()
    cmd = ["make", "demo", f"PY={sys.executable}", f"DATA={shared_data}"]
    cmd += [f"MODEL={tiny_model_dir}", f"BUILD={tmp_path / 'build'}", f"PORT={port}"]
    cmd += [f"DEMO_DIR={tmp_path / 'repo'}", f"SPACE_DIR={tmp_path / 'space'}"]
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
        assert (tmp_path / "repo" / "index" / "manifest.json").is_file()
        assert (tmp_path / "space" / "app.py").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
