"""Lazy rows through the (local) Hub: start-up reads no image bytes, a search reads only the
bytes of the images it shows, bad images become placeholders, a revision pin holds.

The repo is made here from hand-made vectors and noise images (each row's pixels are known),
laid out as ``pipeline index`` lays it out (its data files, ``index/image_ranges.npy``,
``data_files`` in the manifest), and uploaded with ``HfApi.upload_folder``. Every client runs in
a process of its own (forked from one that imported the Searcher: ``cli_forks.run_python``)
pointed at tests/hub_server.py, which records each request with its Range header: the test
compares the byte ranges read with where each image's bytes lie in the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import cli_forks
import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from PIL import Image as PILImage
from search_repo import FINGERPRINT, unit

from imagesearchtr import IndexInfo, Manifest
from imagesearchtr.manifest import IMAGE_RANGES_FILE, sha256_file
from pipeline import datafiles
from pipeline.encode import features as row_features

N_ROWS, DIM, SPLIT = 200, 8, 130  # rows 0-129 in train-00000, 130-199 in train-00001
CORRUPT_ROW = 150


def noise_png(seed: int, row: int) -> bytes:
    pixels = np.random.default_rng([seed, row]).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def pixels(seed: int, row: int) -> list:
    return np.asarray(PILImage.open(io.BytesIO(noise_png(seed, row))).convert("RGB")).tolist()


def vectors() -> np.ndarray:
    return unit(np.random.default_rng(0).normal(size=(N_ROWS, DIM)))


def write_lazy_repo(folder: Path, seed: int) -> Path:
    """A published-repo folder: two data files, image ranges, Flat indices, a manifest."""
    emb = vectors()
    images = [noise_png(seed, i) for i in range(N_ROWS)]
    images[CORRUPT_ROW] = b"this is not an image"
    table = Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
            "image_id": [str(i) for i in range(N_ROWS)],
            # Paths as long and unique as real ones: their chunk lies between the ids' and the
            # captions' and is larger than pyarrow's 8 KiB gap for joining two reads into one.
            "path": [f"images/{hashlib.sha256(b'%d' % i).hexdigest()}.png" for i in range(N_ROWS)],
            "captions": [[f"caption {i}"] for i in range(N_ROWS)],
            "image_emb": [list(v) for v in emb],
            "caption_emb": [list(v) for v in emb],
            "sha256": ["0" * 64] * N_ROWS,
        },
        features=row_features(DIM),
    ).data.table
    (folder / "data").mkdir(parents=True)
    (folder / "index").mkdir()
    entries = []
    for number, (start, stop) in enumerate(((0, SPLIT), (SPLIT, N_ROWS))):
        path = datafiles.file_name(number)
        datafiles.write_file(table.slice(start, stop - start), folder / path)
        sha = sha256_file(folder / path)
        entries.append({"path": path, "num_rows": stop - start, "sha256": sha})
    files = [(entry["path"], entry["sha256"]) for entry in entries]
    ranges_sha256 = datafiles.write_image_ranges(folder, files, folder / IMAGE_RANGES_FILE)
    infos = []
    for column in ("image_emb", "caption_emb"):
        index = faiss.index_factory(DIM, "Flat", faiss.METRIC_INNER_PRODUCT)
        index.add(emb)
        faiss.write_index(index, str(folder / "index" / f"{column}.faiss"))
        infos.append(IndexInfo(column, f"index/{column}.faiss", "flat", "Flat", N_ROWS, {}))
    Manifest(
        model_id="fake/model",
        model_revision=None,
        model_fingerprint=FINGERPRINT,
        dim=DIM,
        num_rows=N_ROWS,
        data_hash=f"sha256:seed{seed}",
        indices=tuple(infos),
        data_files=entries,
        image_ranges_sha256=ranges_sha256,
    ).save(folder / "index" / "manifest.json")
    return folder


def run_python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` with this process's environment and ``env`` (which names an
    HF_HOME), forked from a server that imported the clients' modules (``cli_forks.run_python``:
    a fresh interpreter spent seconds importing torch for each client)."""
    result = cli_forks.run_python(code, args, {**os.environ, **env})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


UPLOAD = textwrap.dedent(
    """
    import sys
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(sys.argv[2], repo_type="dataset", exist_ok=True)
    info = api.upload_folder(folder_path=sys.argv[1], repo_id=sys.argv[2], repo_type="dataset")
    print(info.oid)
    """
)

# Loads a Searcher, then runs queries; before each it may add faults to the test Hub. Prints
# the request-log length after start-up and after each query, so the test can split the log.
CLIENT = textwrap.dedent(
    """
    import contextlib, json, os, sqlite3, sys
    import httpx
    import numpy as np
    sys.path.insert(0, "tests")
    from search_repo import FakeEncoder
    from imagesearchtr import Searcher

    spec = json.loads(sys.argv[1])
    hub = os.environ["HF_ENDPOINT"]
    mark = lambda: len(httpx.get(hub + "/_test/requests").json())
    out = {"marks": [mark()], "searches": []}
    searcher = Searcher.from_repo(spec["repo"], revision=spec["revision"],
                                  encoder=FakeEncoder(spec["dim"]), cache_dir=spec["cache"],
                                  **spec.get("options", {}))
    out["marks"].append(mark())
    def cached():  # bytes of images in the image cache (None: no cache file)
        path = os.path.join(spec["cache"], "images.sqlite")
        if not os.path.isfile(path):
            return None
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM images").fetchone()[0]
    out["cached"] = []
    for query in spec["queries"]:
        if query.get("faults"):
            httpx.post(hub + "/_test/faults", json={"faults": query["faults"]})
        hits = searcher.search_vector(query["vector"], k=query["k"])
        httpx.delete(hub + "/_test/faults")
        out["searches"].append([
            {"row": h.row, "error": h.image_error, "pixels": np.asarray(h.image).tolist()}
            for h in hits
        ])
        out["marks"].append(mark())
        out["cached"].append(cached())  # bytes in the image cache
    print(json.dumps(out))
    """
)


def test_each_client_reads_and_writes_its_own_hf_home_and_a_failure_is_its_exit_status(
    local_hub, tmp_path
):
    # The clients fork from one server whose imports read HF_HOME once (run_python): each run
    # must still see only its own cache, as a fresh interpreter started with it would.
    code = textwrap.dedent(
        """
        import os, sys
        from huggingface_hub import constants
        print(os.path.realpath(constants.HF_HUB_CACHE), os.path.realpath(os.environ["HF_HOME"]))
        sys.exit(int(sys.argv[1]))
        """
    )
    for name in ("one", "two", "one"):
        home = tmp_path / name
        home.mkdir(exist_ok=True)
        done = run_python(code, {**local_hub.env(), "HF_HOME": str(home)}, "0")
        hub_cache, hf_home = done.stdout.split()
        assert (hub_cache, hf_home) == (str((home / "hub").resolve()), str(home.resolve()))
    with pytest.raises(AssertionError):
        run_python(code, {**local_hub.env(), "HF_HOME": str(home)}, "3")


def publish(folder: Path, repo: str, env: dict) -> str:
    return run_python(UPLOAD, env, str(folder), repo).stdout.strip()


def search(
    env: dict, repo: str, revision: str, cache: Path, queries: list[dict], **options
) -> dict:
    """Run ``queries`` in a fresh client; ``options``: more arguments for ``from_repo``. The
    client's report, plus its ``stderr``."""
    spec = {"repo": repo, "revision": revision, "dim": DIM, "cache": str(cache)}
    spec["queries"], spec["options"] = queries, options
    result = run_python(CLIENT, env, json.dumps(spec))
    return {**json.loads(result.stdout.splitlines()[-1]), "stderr": result.stderr}


def image_spans(folder: Path) -> dict[str, list[tuple[int, int]]]:
    """Per data file, the [start, end) byte range of each row's image bytes."""
    return {
        f"data/{path.name}": [(int(o), int(o + n)) for o, n in datafiles.image_ranges(path)]
        for path in sorted((folder / "data").glob("*.parquet"))
    }


def chunk_spans(folder: Path, column: str) -> dict[str, list[tuple[int, int]]]:
    """Per data file, the [start, end) byte range of ``column``'s chunk in each row group."""
    import pyarrow.parquet as pq

    out = {}
    for path in sorted((folder / "data").glob("*.parquet")):
        meta, spans = pq.read_metadata(path), []
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema.split(".")[0] == column:
                    first = min(chunk.data_page_offset, chunk.dictionary_page_offset or 1 << 62)
                    spans.append((first, first + chunk.total_compressed_size))
        out[f"data/{path.name}"] = spans
    return out


def data_reads(requests: list[dict], folder: Path) -> list[tuple[str, int | None, int | None]]:
    """(data file, first byte, last byte) of each GET that served bytes of a data file of
    ``folder``'s repo: from its resolve URL, or from the storage URL the Hub redirects to (named
    by the file's sha256). None: no Range."""
    by_sha = {
        hashlib.sha256(p.read_bytes()).hexdigest(): f"data/{p.name}"
        for p in (folder / "data").glob("*.parquet")
    }
    out = []
    for r in requests:
        if r["method"] != "GET" or r["status"] not in (200, 206):
            continue
        resolved = re.search(r"/resolve/[^/]+/(data/[^/]+\.parquet)$", r["path"])
        stored = re.match(r"/_storage/([0-9a-f]{64})", r["path"])
        path = resolved[1] if resolved else by_sha.get(stored[1]) if stored else None
        if path is None:
            continue
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", r["range"] or "")
        out.append((path, int(rng[1]), int(rng[2])) if rng else (path, None, None))
    return out


def images_read(reads, spans) -> set[tuple[str, int]]:
    """The (file, row in file) whose image bytes any read touched."""
    touched = set()
    for path, first, last in reads:
        for local, (start, end) in enumerate(spans[path]):
            if first is None or (first < end and last >= start):
                touched.add((path, local))
    return touched


def image_of(row: int) -> tuple[str, int]:
    number, local = (0, row) if row < SPLIT else (1, row - SPLIT)
    return datafiles.file_name(number), local


@pytest.fixture(scope="module")
def lazy_repo(tmp_path_factory, local_hub, session_hub_env):
    folder = write_lazy_repo(tmp_path_factory.mktemp("lazy-repo"), seed=1)
    repo = f"{local_hub.user}/lazy-rows"
    return folder, repo, publish(folder, repo, session_hub_env)


def test_start_reads_no_image_bytes_and_a_search_reads_only_the_shown_images(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    spans = image_spans(folder)
    emb = vectors()
    shown = [3, 70, 140]  # in two files
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in shown]
    queries.append({"vector": emb[70].tolist(), "k": 1})  # again: from the disk cache
    out = search(hub_env, repo, commit, tmp_path / "cache", queries)
    log = local_hub.requests
    marks = out["marks"]

    start = data_reads(log[marks[0] : marks[1]], folder)
    assert start, "start-up read no data file at all"
    # Per data file: its footer (two reads) and one range a row group for the row columns.
    groups = sum(pq.read_metadata(p).num_row_groups for p in (folder / "data").glob("*.parquet"))
    assert len(start) == 2 * 2 + groups, start
    assert all(first is not None for _, first, _ in start), "a data file was downloaded whole"
    assert images_read(start, spans) == set(), "start-up read image bytes"
    for column in ("image_emb", "caption_emb"):  # the indices hold the vectors
        assert images_read(start, chunk_spans(folder, column)) == set(), f"start-up read {column}"
    start_bytes = sum(last - first + 1 for _, first, last in start)
    data_bytes = sum(p.stat().st_size for p in (folder / "data").glob("*.parquet"))
    assert start_bytes < data_bytes / 4

    for n, row in enumerate(shown):
        path, local = image_of(row)
        first, end = spans[path][local]
        # One range read of exactly this image's bytes, nothing else.
        assert data_reads(log[marks[n + 1] : marks[n + 2]], folder) == [(path, first, end - 1)]
        (hit,) = out["searches"][n]
        assert hit["row"] == row and hit["error"] is None
        assert hit["pixels"] == pixels(1, row)
    assert data_reads(log[marks[4] : marks[5]], folder) == []  # cached on disk
    assert out["searches"][3][0]["pixels"] == pixels(1, 70)


def test_through_the_hubs_redirect_a_read_costs_one_round_trip_and_an_expired_url_is_renewed(
    lazy_repo, local_hub, hub_env, tmp_path
):
    # The Hub answers a read of an LFS file with a redirect to a signed URL on its storage host
    # (another origin): the range must survive the redirect, the token must not follow it, and
    # later reads of that file go to the storage URL directly, until it is refused.
    folder, repo, commit = lazy_repo
    spans = image_spans(folder)
    emb = vectors()
    assert local_hub.lfs_redirects  # the test Hub's default, as the Hub's
    refused = [{"path": r"^/_storage/", "status": 403, "times": 1}]  # as an expired signature
    dropped = [{"path": r"^/_storage/", "drop": True, "times": 1}]  # a dead storage connection
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in (140, 141)]
    queries.append({"vector": emb[142].tolist(), "k": 1, "faults": refused})
    queries.append({"vector": emb[143].tolist(), "k": 1, "faults": dropped})
    out = search(hub_env, repo, commit, tmp_path / "cache", queries)
    marks, log = out["marks"], local_hub.requests

    start = [r for r in log[marks[0] : marks[1]] if r["method"] == "GET"]
    assert all(r["status"] in (200, 206, 302) for r in start), [
        (r["path"], r["status"]) for r in start if r["status"] not in (200, 206, 302)
    ]
    data = [r for r in start if re.search(r"/data/[^/]+\.parquet$", r["path"])]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in data) == sorted(
        p.name for p in (folder / "data").glob("*.parquet")
    ), "start-up: one resolve (a redirect) per data file, not one per read"
    assert {r["status"] for r in data} == {302}
    stored = [r for r in start if r["path"].startswith("/_storage/")]
    assert len(stored) > len(data) and not any(r["auth"] for r in stored)

    trips = []
    for n, row in enumerate((140, 141, 142, 143)):
        (hit,) = out["searches"][n]
        assert hit["row"] == row and hit["error"] is None and hit["pixels"] == pixels(1, row)
        path, local = image_of(row)
        first, end = spans[path][local]
        query = [r for r in log[marks[n + 1] : marks[n + 2]] if r["method"] == "GET"]
        assert {r["range"] for r in query} == {f"bytes={first}-{end - 1}"}
        assert not any(r["auth"] for r in query if r["path"].startswith("/_storage/"))
        trips.append([(r["status"], r["path"].split("/")[1]) for r in query])
    assert trips == [
        [(206, "_storage")],  # the storage URL the start-up was redirected to
        [(206, "_storage")],
        [(403, "_storage"), (302, "datasets"), (206, "_storage")],  # refused: resolved again
        [("dropped", "_storage"), (302, "datasets"), (206, "_storage")],  # likewise
    ]
    renewed = log[marks[3] : marks[4]]
    assert f"/datasets/{repo}/resolve/{commit}/{image_of(142)[0]}" in [r["path"] for r in renewed]


def test_an_image_that_cannot_be_fetched_or_decoded_is_a_placeholder_with_a_message(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    emb = vectors()
    # The second file's reads, at its resolve URL or at the storage URL the Hub redirects to.
    sha1 = hashlib.sha256((folder / "data" / "train-00001.parquet").read_bytes()).hexdigest()
    data1 = rf"(/data/train-00001\.parquet|/_storage/{sha1})$"
    queries = [
        # The corrupt row and its neighbours: the search still answers, one placeholder.
        {"vector": emb[CORRUPT_ROW].tolist(), "k": 3},
        # The Hub fails every read of the second file: placeholders, no failed search.
        {"vector": emb[190].tolist(), "k": 2, "faults": [{"path": data1, "times": 50}]},
        # One dropped connection: retried, the image arrives.
        {"vector": emb[131].tolist(), "k": 1, "faults": [{"path": data1, "drop": True}]},
    ]
    out = search(hub_env, repo, commit, tmp_path / "cache", queries)
    corrupt, failed, retried = out["searches"]

    assert corrupt[0]["row"] == CORRUPT_ROW
    assert "could not be decoded: not an image" in corrupt[0]["error"]  # (no object address)
    assert "row 150" in corrupt[0]["error"]
    grey = np.asarray(corrupt[0]["pixels"])
    assert grey.ndim == 3 and (grey == grey[0, 0]).all()  # a plain placeholder
    for hit in corrupt[1:]:
        assert hit["error"] is None and hit["pixels"] == pixels(1, hit["row"])

    assert [h["row"] for h in failed][0] == 190 and len(failed) == 2
    for hit in failed:
        if hit["row"] >= SPLIT:
            assert "could not be fetched" in hit["error"]

    assert retried[0]["row"] == 131 and retried[0]["error"] is None
    assert retried[0]["pixels"] == pixels(1, 131)


def test_a_pinned_revision_shows_its_own_images_after_a_new_publish(local_hub, hub_env, tmp_path):
    repo = f"{local_hub.user}/lazy-pin"
    first = publish(write_lazy_repo(tmp_path / "a", seed=1), repo, hub_env)
    second = publish(write_lazy_repo(tmp_path / "b", seed=2), repo, hub_env)
    assert first != second
    emb = vectors()
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in (5, 160)]
    pinned = search(hub_env, repo, first, tmp_path / "cache", queries)
    assert [s[0]["pixels"] for s in pinned["searches"]] == [pixels(1, 5), pixels(1, 160)]
    latest = search(hub_env, repo, "main", tmp_path / "cache", queries)
    assert [s[0]["pixels"] for s in latest["searches"]] == [pixels(2, 5), pixels(2, 160)]


def test_image_ranges_point_at_each_image_and_a_row_without_one_is_a_placeholder(tmp_path):
    import pyarrow as pa

    from imagesearchtr.lazy_rows import DataFile, ImageStore, Source

    images = [noise_png(5, 0), None, b"", noise_png(5, 3)]
    table = pa.table({"image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]})
    path = tmp_path / datafiles.file_name(0)
    path.parent.mkdir(parents=True)
    datafiles.write_file(table, path)
    ranges = datafiles.image_ranges(path)
    data = path.read_bytes()
    for row in (0, 3):
        offset, length = ranges[row]
        assert data[offset : offset + length] == images[row]
    assert ranges[1].tolist() == ranges[2].tolist() == [-1, 0]

    source = Source(str(tmp_path), tmp_path, None)
    files = [DataFile(datafiles.file_name(0), 4, "test")]
    store = ImageStore(source, files, [4], ranges, tmp_path / "cache")
    fetched = store.fetch([3, 1, 2, 0])
    assert [f.error for f in (fetched[0], fetched[3])] == [None, None]
    assert np.asarray(fetched[0].image).tolist() == pixels(5, 3)
    for hit in fetched[1:3]:
        assert "holds no image bytes" in hit.error
    # A ranges file may claim any length: above MAX_IMAGE_BYTES nothing is read for it.
    import imagesearchtr.lazy_rows

    limit, imagesearchtr.lazy_rows.MAX_IMAGE_BYTES = imagesearchtr.lazy_rows.MAX_IMAGE_BYTES, 10
    try:
        (hit,) = store.fetch([0])
    finally:
        imagesearchtr.lazy_rows.MAX_IMAGE_BYTES = limit
    assert hit.error and "over 10" in hit.error
    # A server that ignores Range and sends the whole file: the bytes asked for are cut out.
    remote = Source("user/repo", None, "0" * 40)
    whole = bytes(range(100))
    remote._get_range = lambda path, byte_range: SimpleNamespace(
        status_code=200, content=whole, raise_for_status=lambda: None
    )
    assert remote.read_range("data/x.parquet", 3, 7) == whole[3:7]
    # A local file that reads short reads short again: one attempt, no backoff.
    calls = []

    def short(path, start, stop):
        calls.append(path)
        raise OSError(f"asked for {stop - start} bytes at {start}, got 0")

    source.read_range = short
    (hit,) = store.fetch([0])
    assert "got 0" in hit.error and len(calls) == 1


def test_a_page_waits_for_a_hanging_read_only_so_long_and_the_late_image_is_kept(
    tmp_path, monkeypatch
):
    """A storage host that hangs instead of failing: the page answers after PAGE_FETCH_S with a
    placeholder for the image still out, and the read that lands later serves the next page
    from the cache."""
    import threading

    import pyarrow as pa

    import imagesearchtr.lazy_rows
    from imagesearchtr.lazy_rows import DataFile, ImageStore, Source

    class HubLike(Source):  # a Hub repo's store: its reads are cached (and retried)
        remote = True

    images = [noise_png(6, 0), noise_png(6, 1)]
    table = pa.table({"image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]})
    path = tmp_path / datafiles.file_name(0)
    path.parent.mkdir(parents=True)
    datafiles.write_file(table, path)
    source = HubLike(str(tmp_path), tmp_path, None)
    files = [DataFile(datafiles.file_name(0), 2, "test")]
    ranges = datafiles.image_ranges(path)
    store = ImageStore(source, files, [2], ranges, tmp_path / "cache")
    hanging, landed, reads = threading.Event(), threading.Event(), []
    data = path.read_bytes()

    def read_range(name, start, stop):
        reads.append(start)
        if start == int(ranges[1][0]):  # row 1's image: its host hangs
            hanging.wait(timeout=60)
        return data[start:stop]

    put = store.cache.put

    def put_then_tell(name, image_bytes):  # the late read's cache insert, after it returns
        put(name, image_bytes)
        if hanging.is_set():
            landed.set()

    source.read_range = read_range
    store.cache.put = put_then_tell
    # Row 0's read (milliseconds) lands within the page's wait even when the process pauses
    # meanwhile (a full collection on a loaded machine may outlast 0.5 s).
    monkeypatch.setattr(imagesearchtr.lazy_rows, "PAGE_FETCH_S", 2.0)
    started = time.monotonic()
    first, second = store.fetch([0, 1])
    assert time.monotonic() - started < 10
    assert first.error is None and np.asarray(first.image).tolist() == pixels(6, 0)
    assert "not read within 2 s" in second.error
    hanging.set()
    assert landed.wait(timeout=10)
    (again,) = store.fetch([1])
    assert again.error is None and np.asarray(again.image).tolist() == pixels(6, 1)
    assert reads.count(int(ranges[1][0])) == 1  # from the cache: not read a second time
    store.close()


def test_a_local_folder_reads_its_images_in_place_without_a_cache_copy(tmp_path):
    from search_repo import FakeEncoder

    from imagesearchtr import Searcher

    folder = write_lazy_repo(tmp_path / "repo", seed=3)
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)  # the file-per-image cache of older versions...
    (cache / "images" / "sha256-0-1.bin").write_bytes(b"x" * 1000)
    (cache / "images" / "mine.jpg").write_bytes(b"...in a folder of the user's cache_dir")
    searcher = Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=cache)
    assert [p.name for p in (cache / "images").iterdir()] == ["mine.jpg"]
    emb = vectors()
    for row in (0, 64, 140, 199, 64):
        (hit,) = searcher.search_vector(emb[row], k=1)
        assert hit.row == row and hit.image_error is None
        assert np.asarray(hit.image).tolist() == pixels(3, row)
    (hit,) = searcher.search_vector(emb[CORRUPT_ROW], k=1)
    assert hit.row == CORRUPT_ROW and "could not be decoded" in hit.image_error
    assert not (cache / "images.sqlite").exists(), "a local folder's images were copied"


def gradient_jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    """A smooth JPEG whose pixels tell left from right and top from bottom."""
    red = np.broadcast_to(np.linspace(0, 255, width), (height, width))
    green = np.broadcast_to(np.linspace(0, 255, height)[:, None], (height, width))
    rgb = np.stack([red, green, np.full((height, width), 128.0)], axis=-1).astype(np.uint8)
    exif = PILImage.Exif()
    if orientation is not None:
        exif[0x0112] = orientation  # the EXIF Orientation tag
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_shown_images_are_upright_on_white_and_within_image_max_side(tmp_path):
    from search_repo import FakeEncoder, write_repo

    from imagesearchtr import Searcher
    from imagesearchtr.images import to_rgb

    half_clear = np.zeros((600, 900, 4), dtype=np.uint8)  # left half: black, transparent
    half_clear[:, 450:] = (255, 0, 0, 255)  # right half: opaque red
    buf = io.BytesIO()
    PILImage.fromarray(half_clear, mode="RGBA").save(buf, format="PNG")
    images = [
        gradient_jpeg(1600, 1200, orientation=6),  # a phone photo taken upright: 1200x1600
        buf.getvalue(),
        gradient_jpeg(64, 48),  # already within the bound: shown as decoded
    ]
    emb = np.eye(3, dtype=np.float32)
    folder = write_repo(tmp_path / "repo", emb, images=images)

    def shown(max_side):
        searcher = Searcher.from_repo(
            folder, encoder=FakeEncoder(3), cache_dir=tmp_path / "c", image_max_side=max_side
        )
        out = []
        for row in range(3):
            (hit,) = searcher.search_vector(emb[row], k=1)
            assert hit.row == row and hit.image_error is None
            out.append(hit.image)
        return out

    upright = to_rgb(PILImage.open(io.BytesIO(images[0])))
    assert upright.size == (1200, 1600)
    photo, logo, small = shown(400)
    assert [photo.size, logo.size, small.size] == [(300, 400), (400, 267), (64, 48)]
    assert all(image.mode == "RGB" for image in (photo, logo, small))
    error = np.abs(np.asarray(photo, dtype=float) - np.asarray(upright.resize((300, 400))))
    assert error.mean() < 4, error.mean()
    assert logo.getpixel((20, 130)) == (255, 255, 255)  # transparent: white, not black
    assert logo.getpixel((380, 130))[0] > 240 and logo.getpixel((380, 130))[1] < 15
    decoded = PILImage.open(io.BytesIO(images[2])).convert("RGB")
    assert np.array_equal(np.asarray(small), np.asarray(decoded))

    photo, logo, _ = shown(None)  # no bound: as stored, but still upright and on white
    assert photo.size == (1200, 1600) and logo.size == (900, 600)
    assert np.array_equal(np.asarray(photo), np.asarray(upright))
    assert logo.getpixel((20, 300)) == (255, 255, 255)
    for bad in (0, "1000", 2.5):
        with pytest.raises(ValueError, match="image_max_side"):
            shown(bad)


def test_the_image_cache_of_a_hub_repo_keeps_the_recently_used_images_within_its_bound(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    bound = int(4.5 * len(noise_png(1, 0)))  # room for 4 images (all of one size here)
    emb = vectors()
    # Four fill the cache; 0 is used again; 10 overflows it, which evicts down to 80% of the
    # bound the least recently used, 64 and 140; so 0 is still there and 64 is read again.
    # 100 overflows it again: down to 80% takes 199 and 10 (down to 100% would take 199
    # alone), so 10 is read again.
    rows = (0, 64, 140, 199, 0, 10, 0, 64, 100, 10)
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in rows]
    out = search(hub_env, repo, commit, tmp_path / "cache", queries, image_cache_bytes=bound)
    for row, (hit,) in zip(rows, out["searches"], strict=True):
        assert hit["row"] == row and hit["error"] is None and hit["pixels"] == pixels(1, row)
    marks, log = out["marks"], local_hub.requests
    reads = [len(data_reads(log[a:b], folder)) for a, b in zip(marks[1:-1], marks[2:], strict=True)]
    assert reads == [1, 1, 1, 1, 0, 1, 0, 1, 1, 1]
    assert 0 < max(out["cached"]) <= bound, out["cached"]


def test_a_damaged_image_cache_is_started_afresh_and_an_old_one_removed(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)  # the file-per-image cache of older versions
    (cache / "images" / "sha256-0-1.bin").write_bytes(b"x" * 1000)
    (cache / "images.sqlite").write_bytes(b"not a database, e.g. a file cut short" * 100)
    emb = vectors()
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in (5, 5)]
    out = search(hub_env, repo, commit, cache, queries)
    assert [hit["pixels"] for (hit,) in out["searches"]] == [pixels(1, 5)] * 2
    assert out["cached"][0] > 0 and not (cache / "images").exists()


def test_an_image_cache_that_cannot_be_opened_leaves_the_search_without_one(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    cache = tmp_path / "cache"
    (cache / "images.sqlite").mkdir(parents=True)  # where the file should be: a folder
    (cache / "images.sqlite" / "keep").write_text("not ours to delete")
    emb = vectors()
    queries = [{"vector": emb[row].tolist(), "k": 1} for row in (5, 5)]
    out = search(hub_env, repo, commit, cache, queries)
    assert "no image cache" in out["stderr"] and "images.sqlite" in out["stderr"]
    for (hit,) in out["searches"]:
        assert [hit["row"], hit["error"], hit["pixels"]] == [5, None, pixels(1, 5)]
    assert (cache / "images.sqlite" / "keep").is_file()


def test_an_image_bigger_than_the_whole_cache_is_not_kept_and_evicts_nothing(tmp_path):
    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 100)
    cache.put("small", b"s" * 50)
    cache.put("huge", b"h" * 200)  # over the bound by itself: dropped, not stored
    assert cache.get("small") == b"s" * 50
    assert cache.get("huge") is None


def test_an_image_cache_locked_by_another_process_is_left_alone(tmp_path, caplog):
    # Locked is not damaged: the file may be a second app worker's live cache. It stays as it
    # is, and this process goes without a cache (after SQLite's 5 s busy timeout).
    import contextlib
    import sqlite3

    from imagesearchtr.image_cache import FILE_NAME, ImageCache

    other = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
    other.execute("CREATE TABLE theirs (x)")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO theirs VALUES (1)")
    try:
        cache = ImageCache(tmp_path, 1000)
        other.execute("COMMIT")
    finally:
        other.close()
    assert "no image cache" in caplog.text and "database is locked" in caplog.text
    cache.put("a", b"bytes")
    assert cache.get("a") is None
    with contextlib.closing(sqlite3.connect(tmp_path / FILE_NAME)) as db:  # still theirs
        assert db.execute("SELECT x FROM theirs").fetchall() == [(1,)]


def test_concurrent_searches_share_the_image_cache_without_errors(
    lazy_repo, local_hub, hub_env, tmp_path
):
    folder, repo, commit = lazy_repo
    # Eight threads, each showing 20 overlapping rows a page, so that the same images are
    # fetched, cached and read from the cache at once.
    code = textwrap.dedent(
        """
        import json, sys
        from concurrent.futures import ThreadPoolExecutor
        import numpy as np
        sys.path.insert(0, "tests")
        from search_repo import FakeEncoder
        from imagesearchtr import Searcher

        repo, commit, cache, bound = sys.argv[1:5]
        searcher = Searcher.from_repo(repo, revision=commit, encoder=FakeEncoder(8),
                                      cache_dir=cache, image_cache_bytes=int(bound))
        vectors = np.load(sys.argv[5])
        def page(n):
            hits = searcher.search_vector(vectors[n % len(vectors)], k=20)
            return [(h.row, h.image_error, np.asarray(h.image).tolist()) for h in hits]
        with ThreadPoolExecutor(8) as pool:
            print(json.dumps(list(pool.map(page, range(48)))))
        """
    )
    emb = vectors()
    np.save(tmp_path / "queries.npy", emb[[3, 3, 70, 140, 141, 199]])
    bound = 60 * len(noise_png(1, 0))
    args = (repo, commit, str(tmp_path / "cache"), str(bound), str(tmp_path / "queries.npy"))
    before = len(local_hub.requests)
    pages = json.loads(run_python(code, hub_env, *args).stdout.splitlines()[-1])
    spans = {(p, first, end - 1) for p, ss in image_spans(folder).items() for first, end in ss}
    images_read = [r for r in data_reads(local_hub.requests[before:], folder) if r in spans]
    shown = [hit for page in pages for hit in page]
    assert len(shown) == 48 * 20
    for row, error, image in shown:
        if row == CORRUPT_ROW:
            assert "could not be decoded" in error
        else:
            assert error is None and image == pixels(1, row), f"row {row}: {error}"
    # 6 queries over 48 pages show 75 rows: with room for 60, the cache keeps evicting, and
    # still serves many of the 960 images shown (360-410 reads in three runs).
    assert len({row for row, _, _ in shown}) < len(images_read) < len(shown) * 3 / 4


REFUSAL = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests")
    from search_repo import FakeEncoder
    from imagesearchtr import Searcher, SearchSetupError
    try:
        Searcher.from_repo(sys.argv[1], revision=sys.argv[2], encoder=FakeEncoder(8))
    except SearchSetupError as err:
        print("refused:", err)
    """
)


def refusal(env: dict, repo: str, commit: str) -> str:
    """What a client that loads ``repo`` at ``commit`` prints: "refused: ..." if it is refused."""
    return run_python(REFUSAL, env, repo, commit).stdout


def test_a_data_file_that_is_not_the_one_the_manifest_names_is_refused_at_start(
    local_hub, hub_env, tmp_path
):
    folder = write_lazy_repo(tmp_path / "repo", seed=4)
    manifest = json.loads((folder / "index" / "manifest.json").read_text())
    manifest["data_files"][1]["sha256"] = "0" * 64  # as if data/ changed after indexing
    (folder / "index" / "manifest.json").write_text(json.dumps(manifest))
    repo = f"{local_hub.user}/lazy-mismatch"
    commit = publish(folder, repo, hub_env)
    out = refusal(hub_env, repo, commit)
    assert "refused:" in out and "data/train-00001.parquet is not the file" in out
    assert "publish again" in out


def test_a_damaged_data_file_on_the_hub_is_named_as_one_from_a_folder_is(
    local_hub, hub_env, tmp_path
):
    # A page of the captions that pyarrow cannot decode, in a file the manifest names (the
    # index ran over it): pyarrow's bare OSError, after the reads' retries, was all a Space
    # said, where a local folder's load names the file and the fix.
    folder = write_lazy_repo(tmp_path / "repo", seed=4)
    path = folder / "data" / "train-00000.parquet"
    group = pq.read_metadata(path).row_group(0)
    (chunk,) = [
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == "captions.list.element"
    ]
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    manifest = json.loads((folder / "index" / "manifest.json").read_text())
    manifest["data_files"][0]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (folder / "index" / "manifest.json").write_text(json.dumps(manifest))
    repo = f"{local_hub.user}/lazy-damaged"
    out = refusal(hub_env, repo, publish(folder, repo, hub_env))
    assert "refused:" in out, out
    assert "data/train-00000.parquet cannot be read" in out and "it is damaged" in out, out


def test_a_data_file_the_manifest_lists_but_the_commit_lacks_is_named_at_start(
    local_hub, hub_env, tmp_path
):
    # The Hub's listing is checked for every file the manifest lists: a missing one is named,
    # not a KeyError from the listing.
    folder = write_lazy_repo(tmp_path / "repo", seed=4)
    (folder / "data" / "train-00001.parquet").unlink()  # as if left out of the upload
    repo = f"{local_hub.user}/lazy-missing"
    commit = publish(folder, repo, hub_env)
    out = refusal(hub_env, repo, commit)
    assert "refused:" in out, out
    assert "lists data/train-00001.parquet, which this commit does not have" in out


def test_a_hub_that_fails_for_a_moment_while_the_space_starts_does_not_leave_it_unavailable(
    lazy_repo, local_hub, hub_env
):
    # The Space loads its Searcher once, at start: a dropped connection (the look-up of an
    # unpinned Space's revision, which huggingface_hub does not retry itself; its requests are
    # httpx2's, not httpx's), a 503 on the manifest's download, or more 503s on a data file than
    # the range reads' own retries must be tried again, not shown as "Arama kullanılamıyor"
    # until someone restarts the Space. One start meets all three, one after the other: each
    # fault is removed once it has fired, so none left means each failed a try.
    folder, repo, _ = lazy_repo
    sha1 = hashlib.sha256((folder / "data" / "train-00001.parquet").read_bytes()).hexdigest()
    code = textwrap.dedent(
        """
        import json, os, sys
        import httpx
        sys.path.insert(0, "tests")
        import imagesearchtr.lazy_rows
        from cli_forks import shorten_hub_retries
        from conftest import load_app
        from search_repo import FakeEncoder
        from imagesearchtr import Encoder

        Encoder.from_pretrained = lambda *args, **kwargs: FakeEncoder(8)  # "fake/model"
        app = load_app()
        # Every layer tries as often as it would, waiting at most a tenth of a second between
        # tries: the faults are counted, not timed.
        app.LOAD_BACKOFF_S, app.LOAD_ATTEMPTS = 0.01, 8
        imagesearchtr.lazy_rows.BACKOFF_S = 0.01
        shorten_hub_retries()
        faults = os.environ["HF_ENDPOINT"] + "/_test/faults"
        httpx.post(faults, json={"faults": json.loads(sys.argv[2])})
        loaded = app.load_searcher({"DATASET_REPO": sys.argv[1]})
        left = httpx.get(faults).json()
        httpx.delete(faults)
        print(json.dumps([getattr(loaded, "message", None) or len(loaded), left]))
        """
    )
    faults = [
        {"method": "GET", "path": r"/revision/main$", "drop": True},
        {"method": "GET", "path": r"/index/manifest\.json$", "status": 503},
        {"method": "GET", "path": rf"(/data/train-00001\.parquet|/_storage/{sha1})$",
         "status": 503, "times": 8},
    ]  # fmt: skip
    out = run_python(code, hub_env, repo, json.dumps(faults))
    assert json.loads(out.stdout.splitlines()[-1]) == [N_ROWS, []], out.stdout


def test_an_image_cache_that_cannot_note_a_use_still_serves_the_image(tmp_path):
    # A hit notes when the image was used; on a full disk ("database or disk is full") or a
    # file another worker keeps locked that write fails. The image read is still served, not
    # fetched from the Hub again: on a full disk every hit was a miss.
    import sqlite3

    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 1000)
    cache.put("a", b"bytes")
    db = cache._db

    class Full:  # the connection, on a disk with no room left for the note
        def execute(self, sql, *args):
            if sql.startswith("UPDATE"):
                raise sqlite3.OperationalError("database or disk is full")
            return db.execute(sql, *args)

    cache._db = Full()
    assert cache.get("a") == b"bytes"


def test_a_hub_that_refuses_the_repo_names_the_token(lazy_repo, local_hub, hub_env):
    # huggingface_hub wraps a 403 on the repo look-up in LocalEntryNotFoundError, whose words
    # ("check your internet connection") pointed away from the token. (401, other answers and
    # no network at all: test_searcher.py.)
    _, repo, commit = lazy_repo
    local_hub.inject_fault("GET", rf"/api/datasets/{repo}/", status=403, times=20)
    try:
        out = refusal(hub_env, repo, commit)
    finally:
        local_hub.clear_faults()
    said = f"refused: the Hub refused access (HTTP 403) to the dataset {repo}: set HF_TOKEN"
    assert said in out, out


def test_an_image_cache_holds_up_to_exactly_its_bound(tmp_path):
    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 100)
    cache.put("a", b"a" * 50)
    cache.put("b", b"b" * 50)  # at the bound, not past it: nothing goes
    assert (cache.get("a"), cache.get("b")) == (b"a" * 50, b"b" * 50)
    whole = ImageCache(tmp_path / "whole", 100)
    whole.put("whole", b"w" * 100)  # as big as the bound: kept
    assert whole.get("whole") == b"w" * 100


def test_a_reopened_image_cache_counts_what_it_holds_against_its_bound(tmp_path):
    # A Space that restarts finds its cache full: the next image evicts the oldest, rather
    # than the file growing past the bound until this process's own images fill it again.
    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 100)
    for name in "abc":
        cache.put(name, name.encode() * 30)
    del cache  # the Space restarts
    again = ImageCache(tmp_path, 100)
    again.put("d", b"d" * 30)
    assert again.get("a") is None
    assert [again.get(name) for name in "cd"] == [b"c" * 30, b"d" * 30]


def test_the_image_cache_evicts_by_the_bytes_it_holds(tmp_path):
    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 100)
    cache.put("a", b"a" * 50)
    cache.put("a", b"a" * 50)  # the same image again: replaced, held once
    cache.put("b", b"b" * 10)  # 60 bytes held: nothing goes
    assert (cache.get("a"), cache.get("b")) == (b"a" * 50, b"b" * 10)
    cache.put("c", b"c" * 20)
    cache.put("d", b"d" * 30)  # 110 bytes: down to 80 or less, "a" (the oldest) goes
    assert cache.get("a") is None
    cache.put("e", b"e" * 30)  # 90 bytes held: within the bound, nothing goes
    assert [cache.get(name) for name in "bcde"] == [b"b" * 10, b"c" * 20, b"d" * 30, b"e" * 30]


def test_an_image_put_again_is_counted_once_and_evicts_nothing_under_the_bound(tmp_path):
    # Two searches that show the same row both fetch and put it: the replaced image was counted
    # twice, so the cache evicted its oldest images while it held less than its bound.
    from imagesearchtr.image_cache import ImageCache

    cache = ImageCache(tmp_path, 100)
    cache.put("a", b"a" * 40)
    cache.put("b", b"b" * 45)
    cache.put("b", b"b" * 45)  # 85 bytes held, under the bound: nothing goes
    for _ in range(3):
        cache.put("c", b"c" * 5)  # (90 bytes, however often it is put)
    assert [cache.get(name) for name in "abc"] == [b"a" * 40, b"b" * 45, b"c" * 5]


def test_the_old_file_per_image_cache_goes_with_its_temporary_files(tmp_path):
    from imagesearchtr.image_cache import OLD_FOLDER, remove_old_files

    old = tmp_path / OLD_FOLDER
    old.mkdir()
    (old / "sha256-0-1.bin").write_bytes(b"x")
    (old / "sha256-0-2.bin.1234.tmp").write_bytes(b"half")  # a write cut short
    remove_old_files(tmp_path)
    assert not old.exists()
    old.mkdir()
    (old / "photo.jpg").write_bytes(b"not ours")
    remove_old_files(tmp_path)
    assert (old / "photo.jpg").is_file()


def one_file(folder: Path, number: int, images: list[bytes]):
    """A data file of these images (as ``pipeline index`` writes it); its path and ranges."""
    import pyarrow as pa

    table = pa.table({"image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]})
    path = folder / datafiles.file_name(number)
    path.parent.mkdir(parents=True, exist_ok=True)
    datafiles.write_file(table, path)
    return datafiles.file_name(number), datafiles.image_ranges(path)


def hub_store_of_one_image(folder: Path):
    """An ImageStore over one data file of one image (``noise_png(6, 0)``), read through a
    Hub ``Source`` whose reads a test replaces; the store, that source and the file's bytes."""
    from imagesearchtr.lazy_rows import DataFile, ImageStore, Source

    path, ranges = one_file(folder, 0, [noise_png(6, 0)])
    remote = Source("user/repo", None, "0" * 40)
    store = ImageStore(remote, [DataFile(path, 1, "k")], [1], ranges, folder / "c", 0)
    return store, remote, (folder / path).read_bytes()


def test_a_hub_image_read_is_retried_with_backoff_and_a_missing_file_is_not(tmp_path, monkeypatch):
    import time

    import imagesearchtr.lazy_rows
    from imagesearchtr.lazy_rows import BACKOFF_S, RETRIES

    store, remote, data = hub_store_of_one_image(tmp_path)
    waits, calls = [], []
    monkeypatch.setattr(time, "sleep", waits.append)

    def failing(error: Exception, times: int):
        def read_range(path, start, stop):
            calls.append(path)
            if len(calls) <= times:
                raise error
            return data[start:stop]

        return read_range

    # A connection that fails twice: the third attempt brings the image, after two waits.
    remote.read_range = failing(OSError("connection reset"), RETRIES - 1)
    (hit,) = store.fetch([0])
    assert hit.error is None and np.asarray(hit.image).tolist() == pixels(6, 0)
    assert len(calls) == RETRIES and waits == [BACKOFF_S * 2**n for n in range(RETRIES - 1)]
    # One that keeps failing: RETRIES attempts, then a placeholder that says why.
    calls.clear()
    remote.read_range = failing(OSError("connection reset"), 100)
    (hit,) = store.fetch([0])
    assert "could not be fetched" in hit.error and "connection reset" in hit.error
    assert len(calls) == RETRIES
    # A file the commit does not have is not there on the next try either: one attempt.
    calls.clear()
    waits.clear()
    remote.read_range = failing(FileNotFoundError("data/x is not in user/repo"), 100)
    (hit,) = store.fetch([0])
    assert "could not be fetched" in hit.error and len(calls) == 1 and waits == []
    # An image of exactly MAX_IMAGE_BYTES is read (only one over it is refused).
    monkeypatch.setattr(imagesearchtr.lazy_rows, "MAX_IMAGE_BYTES", int(store.ranges[0][1]))
    remote.read_range = lambda path, start, stop: data[start:stop]
    (hit,) = store.fetch([0])
    assert hit.error is None and np.asarray(hit.image).tolist() == pixels(6, 0)


def test_a_hub_image_read_waits_as_long_as_retry_after_asks_within_the_page(tmp_path, monkeypatch):
    # The range reads are plain GETs of huggingface_hub's session: its retry helper, which
    # reads Retry-After, is not on this path, and a 429 was retried after BACKOFF_S regardless.
    import time

    import httpx2

    from imagesearchtr.lazy_rows import PAGE_FETCH_S

    store, remote, data = hub_store_of_one_image(tmp_path)
    waits, calls = [], []
    monkeypatch.setattr(time, "sleep", waits.append)

    def hub(status: int, retry_after: str, times: int):
        def get_range(name, byte_range):  # the Hub's answers, as Source._get_range gets them
            calls.append(byte_range)
            request = httpx2.Request("GET", f"https://hub/{name}")
            if len(calls) <= times:
                return httpx2.Response(
                    status, headers={"Retry-After": retry_after}, request=request
                )
            start, stop = (int(x) for x in byte_range.removeprefix("bytes=").split("-"))
            return httpx2.Response(206, content=data[start : stop + 1], request=request)

        return get_range

    # Too many requests, come back in 3 s: one wait of 3 s, then the image.
    remote._get_range = hub(429, "3", times=1)
    (hit,) = store.fetch([0])
    assert hit.error is None and np.asarray(hit.image).tolist() == pixels(6, 0)
    assert len(calls) == 2 and waits == [3]
    # Past the page's time: not asked again sooner than the Hub said, nor waited for.
    calls.clear()
    waits.clear()
    remote._get_range = hub(503, str(int(PAGE_FETCH_S) + 50), times=100)
    (hit,) = store.fetch([0])
    assert "could not be fetched" in hit.error and "503" in hit.error
    assert len(calls) == 1 and waits == []
    store.close()


def test_the_image_cache_serves_a_data_files_images_wherever_its_rows_now_start(tmp_path):
    # An update that changes an earlier data file moves every later file's rows: a file whose
    # bytes did not change keeps its cached images, each under its row within that file.
    from imagesearchtr.lazy_rows import DataFile, ImageStore, Source

    a, ranges_a = one_file(tmp_path, 0, [noise_png(7, i) for i in range(2)])
    b, ranges_b = one_file(tmp_path, 1, [noise_png(8, i) for i in range(5)])
    reads = []

    def read_range(path, start, stop):
        reads.append(path)
        return (tmp_path / path).read_bytes()[start:stop]

    def store(order):  # the data files in this row order, over one image cache
        remote = Source("user/repo", None, "0" * 40)
        remote.read_range = read_range
        files = {a: (DataFile(a, 2, "key-a"), ranges_a), b: (DataFile(b, 5, "key-b"), ranges_b)}
        picked = [files[name] for name in order]
        counts = [f.num_rows for f, _ in picked]
        ranges = np.concatenate([r for _, r in picked])
        return ImageStore(remote, [f for f, _ in picked], counts, ranges, tmp_path / "cache")

    before = store([a, b]).fetch(list(range(7)))  # rows 0-1: a's images; 2-6: b's
    assert [np.asarray(f.image).tolist() for f in before] == [
        *(pixels(7, i) for i in range(2)),
        *(pixels(8, i) for i in range(5)),
    ]
    reads.clear()
    after = store([b, a]).fetch(list(range(7)))  # now rows 0-4: b's images; 5-6: a's
    assert [np.asarray(f.image).tolist() for f in after] == [
        *(pixels(8, i) for i in range(5)),
        *(pixels(7, i) for i in range(2)),
    ]
    assert reads == []  # every image from the cache


def test_a_folder_with_an_old_manifest_keeps_showing_its_own_images_after_a_republish(tmp_path):
    # A manifest without data_files (older builds): the Searcher lists data/ and must still read
    # the files it opened at load, not a new file swapped in under the same name.
    from search_repo import FakeEncoder, write_repo

    from imagesearchtr import Searcher

    emb = vectors()[:4]
    folder = write_repo(tmp_path / "repo", emb, images=[noise_png(9, i) for i in range(4)])
    other = write_repo(tmp_path / "other", emb, images=[noise_png(10, i) for i in range(4)])
    searcher = Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "c")
    (name,) = [p.name for p in (folder / "data").glob("*.parquet")]
    os.replace(other / "data" / name, folder / "data" / name)  # as a publish swaps files in
    for row in range(4):
        (hit,) = searcher.search_vector(emb[row], k=1)
        assert hit.row == row and hit.image_error is None
        assert np.asarray(hit.image).tolist() == pixels(9, row)
    searcher.close()


def test_a_folder_rewritten_in_place_is_not_read_from_the_old_row_cache(tmp_path):
    # A manifest without data_files keys a local file's cached rows by its path, size and time:
    # a folder written again under the same path shows its new captions, not the cached ones.
    import shutil

    from search_repo import FakeEncoder, write_repo

    from imagesearchtr import Searcher

    emb = vectors()[:3]

    def captions(word):
        folder = write_repo(tmp_path / "repo", emb, captions=[[f"{word} {i}"] for i in range(3)])
        searcher = Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "c")
        with searcher:
            return [searcher.search_vector(emb[row], k=1)[0].captions for row in range(3)]

    assert captions("eski") == [["eski 0"], ["eski 1"], ["eski 2"]]
    shutil.rmtree(tmp_path / "repo")
    assert captions("yeni") == [["yeni 0"], ["yeni 1"], ["yeni 2"]]  # same length, same size


def test_a_data_file_holding_other_rows_than_the_manifest_says_is_refused(tmp_path):
    # Rows moved between two data files keep the total: only each file's own count tells that
    # every image range after the first file would name another row's image.
    from search_repo import FakeEncoder

    from imagesearchtr import Searcher, SearchSetupError

    folder = write_lazy_repo(tmp_path / "repo", seed=3)
    path = folder / "index" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["data_files"][0]["num_rows"] += 1
    manifest["data_files"][1]["num_rows"] -= 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        SearchSetupError, match=f"train-00000.parquet holds {SPLIT} rows but the manifest says"
    ):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "c")


def test_rows_cached_by_an_older_version_with_the_embeddings_are_removed(tmp_path):
    from search_repo import FakeEncoder

    from imagesearchtr import Searcher

    folder = write_lazy_repo(tmp_path / "repo", seed=3)
    cache = tmp_path / "c"
    (cache / "rows").mkdir(parents=True)
    sha = sha256_file(folder / "data" / "train-00000.parquet")
    old = cache / "rows" / f"sha256-{sha}.arrow"  # the bare key: ids, captions and embeddings
    old.write_bytes(b"x" * 1000)
    with Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=cache) as searcher:
        (hit,) = searcher.search_vector(vectors()[3], k=1)
        assert hit.row == 3 and hit.captions == ["caption 3"]
    assert not old.exists()


def test_a_full_disk_while_caching_the_rows_is_not_called_a_damaged_data_file(
    tmp_path, monkeypatch
):
    # The system's own error (here: no space left for the row cache) says what to fix; it is
    # not reported as a damaged data file to publish again.
    import errno

    from search_repo import FakeEncoder, write_repo

    from imagesearchtr import Searcher

    folder = write_repo(tmp_path / "repo", vectors()[:3])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as raised:
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "c")
    assert raised.value.errno == errno.ENOSPC


def test_a_result_image_that_pillow_refuses_as_a_bomb_is_a_placeholder(tmp_path):
    # A PNG whose header claims 20000x20000 pixels: Pillow itself refuses it at open, with an
    # error that is no OSError. The search still answers, with a placeholder that says why.
    import struct
    import zlib

    from search_repo import FakeEncoder, png, write_repo

    from imagesearchtr import Searcher

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    )
    bomb += chunk(b"IEND", b"")
    emb = vectors()[:2]
    folder = write_repo(tmp_path / "repo", emb, images=[bomb, png()])
    with Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "c") as searcher:
        bombed, fine = (searcher.search_vector(emb[row], k=1)[0] for row in (0, 1))
    assert bombed.row == 0 and bombed.image.size == (256, 256)
    assert "image of row 0 could not be decoded" in bombed.image_error
    assert fine.row == 1 and fine.image_error is None


def test_a_private_repo_searched_by_branch_reads_its_commit_and_a_restart_reads_no_row_again(
    local_hub, hub_env, tmp_path
):
    # A private dataset (the Space's HF_TOKEN) loaded by branch name: every read is of the
    # commit the manifest came from (a publish to the branch meanwhile must not mix two builds),
    # with the token on the Hub's own URLs. A file the Hub answers 404 for is not there on a
    # second try: one request, a placeholder. A restart with the same cache reads no data file
    # at start: the rows were cached.
    folder = write_lazy_repo(tmp_path / "repo", seed=1)
    repo = f"{local_hub.user}/lazy-private"
    private = UPLOAD.replace("exist_ok=True)", "exist_ok=True, private=True)")
    commit = run_python(private, hub_env, str(folder), repo).stdout.strip()
    emb = vectors()
    sha1 = hashlib.sha256((folder / "data" / "train-00001.parquet").read_bytes()).hexdigest()
    gone = [
        {"path": rf"(/data/train-00001\.parquet|/_storage/{sha1})$", "status": 404, "times": 50}
    ]
    queries = [
        {"vector": emb[131].tolist(), "k": 1, "faults": gone},
        {"vector": emb[5].tolist(), "k": 1},
    ]
    cache = tmp_path / "cache"
    out = search(hub_env, repo, "main", cache, queries)
    marks, log = out["marks"], local_hub.requests
    (missing,), (found,) = out["searches"]
    assert missing["row"] == 131 and "could not be fetched" in missing["error"]
    asked = [r for r in log[marks[1] : marks[2]] if r["path"].endswith("/train-00001.parquet")]
    assert len(asked) == 1, [(r["path"], r["status"]) for r in asked]
    assert found["row"] == 5 and found["error"] is None and found["pixels"] == pixels(1, 5)
    resolved = [r["path"] for r in log[marks[0] : marks[-1]] if "/resolve/" in r["path"]]
    data = [p for p in resolved if "/data/" in p]
    assert data and all(f"/resolve/{commit}/" in p for p in data), data

    again = search(hub_env, repo, "main", cache, [{"vector": emb[5].tolist(), "k": 1}])
    marks = again["marks"]
    assert data_reads(local_hub.requests[marks[0] : marks[2]], folder) == []
    assert again["searches"][0][0]["pixels"] == pixels(1, 5)


def test_a_short_answer_from_the_hub_is_an_error_and_is_not_cached(tmp_path):
    # A storage host that sends fewer bytes than asked (a cut transfer) must not leave a cut
    # image in the cache: the read fails, the page shows a placeholder, the next page reads again.
    from imagesearchtr.lazy_rows import DataFile, ImageStore, Source

    path, ranges = one_file(tmp_path, 0, [noise_png(6, 0)])
    data = (tmp_path / path).read_bytes()
    remote = Source("user/repo", None, "0" * 40)
    cut = []

    def get_range(path, byte_range):
        first, last = (int(x) for x in byte_range.removeprefix("bytes=").split("-"))
        body = data[first : last + 1]
        return SimpleNamespace(
            status_code=206, content=body[: len(body) // 2] if cut else body,
            raise_for_status=lambda: None,
        )  # fmt: skip

    remote._get_range = get_range  # as the server-ignores-Range case above
    cut.append(True)
    with pytest.raises(OSError, match=r"asked for 4 bytes at 3, got 2"):
        remote.read_range(path, 3, 7)
    store = ImageStore(remote, [DataFile(path, 1, "k")], [1], ranges, tmp_path / "c")
    import imagesearchtr.lazy_rows

    backoff, imagesearchtr.lazy_rows.BACKOFF_S = imagesearchtr.lazy_rows.BACKOFF_S, 0
    try:
        (hit,) = store.fetch([0])
    finally:
        imagesearchtr.lazy_rows.BACKOFF_S = backoff
    assert "could not be fetched" in hit.error and "got" in hit.error
    cut.clear()
    (hit,) = store.fetch([0])
    assert hit.error is None and np.asarray(hit.image).tolist() == pixels(6, 0)
