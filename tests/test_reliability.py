"""Reliability: processes killed at random points, a Hub that resets and stalls, broken datasets.

- ``download`` and ``encode`` are killed with SIGKILL at seeded random points over several
  trials, then run again: nothing is lost, duplicated or left half-written.
- ``publish`` through connection resets in the middle of an LFS upload (a body larger than the
  loopback socket buffers, so the reset really cuts it), first transient (huggingface_hub's
  own retries absorb it), then persistent (the publish fails with one clear line and the remote
  repo is unchanged), then a re-run whose first request times out: it completes.
  Not tested, because the client has no such timeout: a Hub that accepts a commit or an upload
  and never answers. huggingface_hub 2.4 sends those with ``timeout=None`` (HF_HUB_ETAG_TIMEOUT
  and HF_HUB_DOWNLOAD_TIMEOUT cover only metadata HEADs and downloads), so such a publish waits
  forever. Commit 500s, dropped commits and lost commit responses are in tests/test_faults.py.
- The app with a dataset broken in ways tests/test_app.py does not cover starts, shows the
  reason on the page, logs it once, and (as a subprocess, the way a Space runs it) keeps running.

Reads nothing shared (synthetic photos). Writes temporary folders only; servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import cli_forks
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, free_port, load_app

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

SEED = 20240617  # the random kill points are the same on every run


def noise_jpeg(seed: int, size=(96, 72), quality=85) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def photo_folder(folder: Path, n: int, seed: int = 0, size=(96, 72), quality=85) -> Path:
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        (folder / "images" / f"p{i:03d}.jpg").write_bytes(
            noise_jpeg(seed * 1000 + i, size, quality)
        )
        caption = f"karda oynayan köpek {seed}-{i}"
        lines.append(json.dumps({"path": f"images/p{i:03d}.jpg", "caption": caption}) + "\n")
    (folder / "captions.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


# Each trial is a separate process killed with SIGKILL. Starting Python with torch and datasets
# takes 5-10 s on 2 busy cores, so the processes are forked from one that has imported them
# already (tests/cli_forks.py): each child then runs the CLI's main() from its first line, exactly
# as ``python -m pipeline ...`` does after its imports, and is killed at a random point of that.
class Zygote:
    """Forks one ``python -m pipeline ARGS`` run per ``run`` call, with ``env``."""

    def __init__(self, env: dict):
        self.env = env

    def run(
        self, args, log: Path, reached=None, jitter: float = 0.0, fast_hub_retries=False
    ) -> int | None:
        """Run the CLI with ``args``, its output into ``log``; with ``reached``, SIGKILL it
        ``jitter`` s after ``reached()`` turns true. The exit status; None if it was killed.
        ``fast_hub_retries``: as ``cli_forks.ForkServer.start``'s.
        """
        handle = cli_forks.start(args, self.env, log=log, fast_hub_retries=fast_hub_retries)
        pid = cli_forks.pid(handle)
        if reached is not None:
            limit = time.monotonic() + 180
            while not reached() and _alive(pid):
                assert time.monotonic() < limit, "the process made no progress"
                time.sleep(0.002)
            time.sleep(jitter)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # (already ended: nothing to kill)
        code = cli_forks.wait(handle, timeout=300).returncode
        if code < 0:
            assert code == -signal.SIGKILL, f"the run ended with signal {-code}"
            return None
        return code

    def close(self) -> None:
        pass  # the fork servers end with this test process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# download, killed at random points
# ---------------------------------------------------------------------------------------------

N_SOURCE = 48


@pytest.fixture(scope="module")
def source_rows() -> list[tuple[str, bytes, str]]:
    """(image_id, JPEG bytes, caption) of the fake source dataset."""
    return [
        (f"id{i:02d}", noise_jpeg(500 + i, size=(160, 120)), f"sahilde koşan çocuk {i}")
        for i in range(N_SOURCE)
    ]


@pytest.fixture(scope="module")
def fake_source(local_hub, tmp_path_factory, source_rows) -> str:
    """A dataset shaped like ituperceptron/image-captioning-turkish on the local Hub."""
    repo = f"{local_hub.user}/reliability-captions"
    folder = tmp_path_factory.mktemp("fake-source")
    for image_id, data, _ in source_rows:
        (folder / f"{image_id}.jpg").write_bytes(data)
    code = textwrap.dedent(
        f"""
        from datasets import Dataset, DatasetDict, Features, Image, Value
        rows = {[(i, str(folder / f"{i}.jpg"), c) for i, _, c in source_rows]!r}
        feats = Features({{"image": Image(), "text": Value("string"), "image_id": Value("string")}})
        split = Dataset.from_dict(
            {{"image": [r[1] for r in rows], "text": [r[2] for r in rows],
              "image_id": [r[0] for r in rows]}}, features=feats)
        DatasetDict({{"long_captions": split}}).push_to_hub({repo!r})
        """
    )
    env = {**os.environ, **local_hub.env(), "HF_HOME": str(folder / "home")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return repo


def test_download_killed_at_random_points_resumes_exactly(
    fake_source, source_rows, hub_env, tmp_path
):
    out = tmp_path / "data"
    images = out / "images"
    args = ["download", "--dataset", fake_source, "--num-samples", str(N_SOURCE)]
    args += ["--seed", "3", "--buffer-size", "8", "--output-dir", str(out)]
    expected_files = {f"{i}.jpg": data for i, data, _ in source_rows}
    expected_lines = sorted(
        json.dumps({"path": f"images/{i}.jpg", "caption": c}, ensure_ascii=False)
        for i, _, c in source_rows
    )

    def finished() -> list[Path]:
        return (
            [p for p in images.iterdir() if not p.name.startswith(".")] if images.is_dir() else []
        )

    def check_consistent() -> list[str]:
        """What a killed run may leave: only whole images, and a line only for an image."""
        for path in finished():
            assert path.read_bytes() == expected_files[path.name], f"{path.name} is half-written"
        text = (out / "captions.jsonl").read_text() if (out / "captions.jsonl").exists() else ""
        lines = [line for line in text.split("\n") if line]
        assert len(lines) == len(set(lines)), "a caption line was written twice"
        for line in lines:
            entry = json.loads(line)  # no torn line
            assert (out / entry["path"]).is_file(), f"a caption line without its image: {line}"
        return lines

    rng = random.Random(SEED)
    zygote = Zygote({**os.environ, **hub_env})
    log = tmp_path / "download.log"
    try:
        killed = []
        for _ in range(3):
            have = len(finished())
            if have == N_SOURCE:
                break
            target = rng.randint(have, N_SOURCE - 1)  # = have: killed before it writes
            jitter = rng.uniform(0, 0.5) if target == have else 0.0
            status = zygote.run(args, log, lambda t=target: len(finished()) >= t, jitter)
            if status is None:
                killed.append((target, len(finished())))
            else:
                assert status == 0, log.read_text()[-3000:]
            check_consistent()
        assert killed, "no trial was killed before it finished"
        print(f"download kills (target images, images when killed): {killed}")
        assert zygote.run(args, log) == 0, log.read_text()[-3000:]  # the final re-run
    finally:
        zygote.close()
    assert re.search(r"wrote \d+ images, kept \d+ already there", log.read_text())
    lines = check_consistent()
    assert sorted(lines) == expected_lines  # every caption once, none lost
    assert {p.name for p in images.iterdir()} == set(expected_files)  # no .tmp left
    assert sorted(p.name for p in out.iterdir()) == ["captions.jsonl", "images"]


# ---------------------------------------------------------------------------------------------
# encode, killed at random points
# ---------------------------------------------------------------------------------------------


def shard_rows(build: Path) -> list[dict]:
    shards = sorted((build / "shards").glob("shard-*.parquet"))
    columns = ["image_id", "sha256", "captions", "image_emb", "caption_emb"]
    return pq.read_table(shards, columns=columns).to_pylist() if shards else []


def test_encode_killed_at_random_points_resumes_with_every_row_once(tmp_path, tiny_model_dir):
    from imagesearchtr import Encoder
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.inputs import FolderSource

    n, shard_size = 64, 4
    data = photo_folder(tmp_path / "photos", n)
    # The reference: the same input encoded without interruption, with the CLI's default dtype.
    reference = tmp_path / "reference"
    encoder = Encoder.from_pretrained(tiny_model_dir)
    config = EncodeConfig(out=reference, model=str(tiny_model_dir), shard_size=shard_size)
    run_encode(FolderSource(data), config, encoder=encoder)
    expected = shard_rows(reference)
    assert len(expected) == n

    build = tmp_path / "build"
    args = ["encode", "--data", str(data), "--model", str(tiny_model_dir)]
    args += ["--out", str(build), "--shard-size", str(shard_size)]
    shards = n // shard_size

    def done() -> int:
        return len(list((build / "shards").glob("shard-*.parquet")))

    rng = random.Random(SEED + 1)
    zygote = Zygote(dict(os.environ))
    log = tmp_path / "encode.log"
    try:
        killed = []
        for _ in range(3):
            have = done()
            if have == shards:
                break
            target = rng.randint(have, shards - 1)  # = have: killed before its next shard
            jitter = rng.uniform(0, 1.5) if target == have else rng.uniform(0, 0.1)
            status = zygote.run(args, log, lambda t=target: done() >= t, jitter)
            if status is None:
                killed.append((target, done()))
            else:
                assert status == 0, log.read_text()[-3000:]
            # whatever is there is whole: every shard file reads, with exactly its chunk's rows
            for path in sorted((build / "shards").glob("shard-*.parquet")):
                index = int(path.stem.split("-")[1])
                rows = pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()
                chunk = expected[index * shard_size : (index + 1) * shard_size]
                assert rows == [r["image_id"] for r in chunk], path.name
        assert killed, "no trial was killed before it finished"
        print(f"encode kills (target shards, shards when killed): {killed}")
        assert zygote.run(args, log) == 0, log.read_text()[-3000:]  # the final re-run
    finally:
        zygote.close()
    assert f"build: {n} images with {n} captions" in log.read_text()
    rows = shard_rows(build)
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in expected]
    assert len({r["sha256"] for r in rows}) == n  # every row once
    assert [r["captions"] for r in rows] == [r["captions"] for r in expected]
    for column in ("image_emb", "caption_emb"):
        np.testing.assert_allclose(
            np.asarray([r[column] for r in rows]),
            np.asarray([r[column] for r in expected]),
            atol=1e-5,
        )
    assert (build / "skipped.jsonl").read_text() == ""
    # A kill in the middle of writing a shard leaves that run's temporary file; the resumed
    # run removes it. Nothing may be left over.
    assert not [p.name for p in build.rglob("*") if p.name.endswith(".tmp")]


def test_a_resumed_encode_removes_a_killed_runs_temporary_files(tmp_path, tiny_model_dir):
    from imagesearchtr import Encoder
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.inputs import FolderSource

    data = photo_folder(tmp_path / "photos", 8)
    build = tmp_path / "build"
    config = EncodeConfig(out=build, model=str(tiny_model_dir), shard_size=4)
    encoder = Encoder.from_pretrained(tiny_model_dir)
    run_encode(FolderSource(data), config, encoder=encoder)
    # What a run killed while writing shard 1 leaves: no shard-00001.parquet, its temporary.
    (shard1,) = (build / "shards").glob("shard-00001-*.parquet")
    shard1.rename(build / "shards" / f".{shard1.name}.999999.tmp")
    # ... and one killed while rewriting the build's skipped.jsonl at its end.
    (build / ".skipped.jsonl.999999.tmp").write_text("half")
    run_encode(FolderSource(data), config, encoder=encoder)
    assert shard1.is_file()
    assert not [p.name for p in build.rglob("*.tmp")]


# ---------------------------------------------------------------------------------------------
# publish: resets mid-upload, a timed-out request
# ---------------------------------------------------------------------------------------------


def big_build(root: Path, seed: int, tiny_encoder, tiny_model_dir) -> Path:
    """A build whose parquet shard is larger than the loopback socket buffers can hold."""
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    data = photo_folder(root / f"big-photos-{seed}", 16, seed=seed, size=(1024, 768), quality=95)
    build = root / f"big-build-{seed}"
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32")
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    return build


def unread_capacity() -> int:
    """About the most a loopback connection holds while the server reads nothing.

    The server's buffer (uvicorn stops reading at 64 KiB), the receive buffer at its initial size
    (it grows only as the application reads) and the send buffer at its largest.
    """
    try:
        receive = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[1])
        send = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        receive, send = 6 * 2**20, 4 * 2**20
    return 64 * 1024 + receive + send


def remote(hub, repo: str) -> tuple[str, dict]:
    """(head commit, {path: sha256}) of the repo's main branch, read from the Hub's storage."""
    doc = hub.state.storage.get_repo("dataset", repo)
    head = doc["branches"]["main"]
    files = doc["commits"][head]["files"]
    return head, {path: entry["sha256"] for path, entry in files.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_through_resets_mid_upload_and_a_timeout(
    local_hub, hub_env, tmp_path, tiny_encoder, tiny_model_dir
):
    repo = f"{local_hub.user}/reliability-publish"
    first = big_build(tmp_path, 1, tiny_encoder, tiny_model_dir)
    second = big_build(tmp_path, 2, tiny_encoder, tiny_model_dir)
    (shard,) = (first / "data").glob("*.parquet")  # the one data file each build publishes
    (shard2,) = (second / "data").glob("*.parquet")
    assert shard.stat().st_size > 2 * unread_capacity(), "too small to be cut mid-upload"

    # Every publish is its own process, forked from one that has imported everything (see
    # Zygote); HF_HUB_ETAG_TIMEOUT=1 s for all of them (metadata requests here take ms).
    zygote = Zygote({**os.environ, **hub_env, "HF_HUB_ETAG_TIMEOUT": "1"})
    logs = iter(tmp_path / f"publish-{i}.log" for i in range(10))

    def publish(build, fast_hub_retries=False) -> tuple[int, str]:
        log = next(logs)
        args = ["publish", "--build", build, "--repo", repo, "--retries", "1"]
        status = zygote.run(args, log, fast_hub_retries=fast_hub_retries)
        return status, log.read_text()

    def uploads(oid: str) -> list:
        """Each upload of ``oid``: "reset" (an injected drop) or its HTTP status."""
        return [
            "reset" if r["fault"] and r["fault"]["drop"] else r["status"]
            for r in local_hub.requests_matching("PUT", f"/_lfs/upload/{oid}")
        ]

    def commits() -> int:
        return len(local_hub.requests_matching("POST", f"^/api/datasets/{repo}/commit/"))

    try:
        # 1. Two resets in the middle of the big upload: huggingface_hub retries, it lands once.
        oid = sha256(shard)
        local_hub.inject_fault("PUT", f"/_lfs/upload/{oid}", drop=True, times=2)
        status, output = publish(first)
        assert status == 0, output[-3000:]
        assert uploads(oid) == ["reset", "reset", 200]
        assert commits() == 1
        head, files = remote(local_hub, repo)
        assert files["data/train-00000.parquet"] == oid  # the whole file, intact
        assert output.strip().endswith(head)

        # 2. Every upload of the next build is reset: a clear failure, the repo unchanged.
        oid2 = sha256(shard2)
        local_hub.inject_fault("PUT", f"/_lfs/upload/{oid2}", drop=True, times=1000)
        status, output = publish(second, fast_hub_retries=True)
        assert status == 2, output[-3000:]
        error = output.strip().splitlines()[-1]
        # huggingface_hub gives up on the upload after its 6 tries and raises RuntimeError
        # "Error while uploading ..." caused by the network error; publish retries the whole
        # commit once (--retries 1), then fails with its own line.
        assert re.fullmatch(
            rf"error: publishing to {repo} failed: .* after 2 attempts; the repo was left "
            "unchanged: run the same publish command again later",
            error,
        ), error
        assert "Traceback" not in output
        assert len(uploads(oid2)) == 12  # 6 tries by huggingface_hub, per commit attempt
        assert set(uploads(oid2)) == {"reset"}
        assert commits() == 1  # no commit was even attempted with a missing upload
        assert remote(local_hub, repo) == (head, files)
        local_hub.clear_faults()

        # 3. The re-run: its first request for the remote manifest answers after 4 s, past the
        # client's 1 s timeout; huggingface_hub asks again (60 s timeout) and the publish lands.
        shutil.rmtree(Path(hub_env["HF_HOME"]) / "hub", ignore_errors=True)  # ask the Hub
        manifest_head = rf"^/datasets/{repo}/resolve/[0-9a-f]{{40}}/index/manifest\.json$"
        local_hub.inject_fault("HEAD", manifest_head, status=None, delay=4, times=1)
        status, output = publish(second)
        assert status == 0, output[-3000:]
        assert len(local_hub.requests_matching("HEAD", manifest_head)) >= 2
        assert not local_hub.pending_faults()  # the slow answer really was served
        new_head, new_files = remote(local_hub, repo)
        assert new_head != head and commits() == 2
        assert new_files["data/train-00000.parquet"] == oid2
        assert output.strip().endswith(new_head)
    finally:
        local_hub.clear_faults()
        zygote.close()


# ---------------------------------------------------------------------------------------------
# the app with a broken dataset (cases tests/test_app.py does not cover)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_model_dir, tiny_encoder) -> Path:
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource
    from pipeline.publish import PublishConfig, publish_to_folder

    data = photo_folder(tmp_path_factory.mktemp("app-photos") / "photos", 12)
    build = tmp_path_factory.mktemp("app-build")
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32")
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    target = tmp_path_factory.mktemp("app-published") / "dataset"
    publish_to_folder(PublishConfig(build=build, to=target))
    return target


def break_dataset(kind: str, folder: Path) -> None:
    index, manifest = folder / "index", folder / "index" / "manifest.json"
    if kind == "manifest-missing":
        manifest.unlink()
    elif kind == "manifest-garbage":
        manifest.write_bytes(b"\x00\xff not json {")
    elif kind == "manifest-dim":
        entry = json.loads(manifest.read_text())
        entry["dim"] = 768
        manifest.write_text(json.dumps(entry))
    elif kind == "index-truncated":
        data = (index / "image_emb.faiss").read_bytes()
        (index / "image_emb.faiss").write_bytes(data[: len(data) // 2])
    elif kind == "index-empty":
        (index / "caption_emb.faiss").write_bytes(b"")
    elif kind == "data-missing":
        shutil.rmtree(folder / "data")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("manifest-missing", "has no index/manifest.json"),
        ("manifest-garbage", "is not a valid index manifest"),
        ("manifest-dim", "dim 768"),
        ("index-truncated", "index/image_emb.faiss is not the index the manifest"),
        ("index-empty", "index/caption_emb.faiss is not the index the manifest"),
        ("data-missing", "a data file is missing"),
    ],
)
def test_a_broken_dataset_is_shown_and_logged_once(published, tmp_path, caplog, kind, expected):
    from gradio_client import Client

    app = load_app("imagesearchtr_space_app_reliability")
    broken = tmp_path / "dataset"
    shutil.copytree(published, broken)
    break_dataset(kind, broken)
    with caplog.at_level(logging.ERROR, logger="imagesearchtr.space"):
        loaded = app.load_searcher({"DATASET_REPO": str(broken)})
    assert isinstance(loaded, app.LoadError), loaded
    assert expected in loaded.message and str(broken) in loaded.message
    errors = [r for r in caplog.records if r.name == "imagesearchtr.space"]
    assert len(errors) == 1 and expected in errors[0].getMessage()

    demo = app.build_app(loaded)
    port = free_port()
    app.launch(
        demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        page = urllib.request.urlopen(url, timeout=30).read().decode("utf-8")
        assert "Arama kullanılamıyor" in page and expected in page
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        gallery, results, status = client.predict(
            query="köpek", k=3, deep=False, alpha=0.6, api_name="/search"
        )
        assert gallery == [] and results == [] and expected in status
    finally:
        demo.close()


def test_a_broken_dataset_does_not_crash_loop_the_space(published, tmp_path):
    """Run as a Space runs it (python app.py): the process stays up and keeps answering."""
    broken = tmp_path / "dataset"
    shutil.copytree(published, broken)
    break_dataset("index-truncated", broken)
    port = free_port()
    log = tmp_path / "app.log"
    env = {
        **os.environ,
        "DATASET_REPO": str(broken),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
    }
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "space" / "app.py")],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        pages = []
        limit = time.monotonic() + 150
        while len(pages) < 3:
            assert proc.poll() is None, f"app.py exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < limit, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                pages.append(urllib.request.urlopen(url, timeout=10).read().decode("utf-8"))
            time.sleep(0.5)
        assert all("image_emb.faiss is not the index the manifest" in page for page in pages)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert text.count("search is unavailable") == 1, text[-3000:]
    assert "image_emb.faiss is not the index the manifest" in text
    assert "Traceback" not in text
