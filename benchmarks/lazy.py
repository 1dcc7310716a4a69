"""Lazy rows through a Hub: what a Space reads at start, its memory, and query latency with the
images fetched on demand, against the same queries on a local folder.

Run: ``python benchmarks/lazy.py [--rows 20000] [--queries 40] [--rounds 1] [--work DIR]
[--compare DIR] [--latency-ms MS [--compare-workers 8]]``
(under a minute at 20,000 rows on 2 cores, about 5 minutes at 1M rows plus 30 s a round; no
model: the queries are vectors, and the Searcher gets a stand-in encoder with the manifest's
fingerprint). ``--recall N,M`` measures the recall of ``auto``'s IVF-SQ8 instead.

Writes, under ``--work`` (default: a temporary folder, deleted at the end): N synthetic rows
(benchmarks/_common.py: clustered 768-d embeddings, small JPEGs), indexed with ``--index-type
auto`` and published to a folder (the pipeline's own code), and the storage of a test Hub
(tests/hub_server.py on 127.0.0.1, in its own process) the folder is uploaded to. Each client
runs in a subprocess with a fresh cache: ``Searcher.from_repo`` on the Hub repo (pinned to the
uploaded commit) and on the local folder. The Hub's request log gives the bytes read at start
(a ranged GET that served bytes, of a resolve URL or of the storage URL the test Hub redirects
to, counts its range, a whole GET the file's size) and the redirects; ``/proc/PID/stat`` of the
test Hub's process gives its CPU time. Then the section "lazy" of
benchmarks/README.md: measured figures at N rows, and figures for 1M rows of photo-sized images
computed from the measured bytes per row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _common
import numpy as np

CLIENT = textwrap.dedent(
    """
    import json, os, sys, time, urllib.request
    t0 = time.perf_counter()
    def memory_mb(field):  # VmHWM (peak RSS), VmRSS, RssAnon or RssFile of this process
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    spec = json.loads(sys.argv[1])
    def hub_cpu_s():  # the test Hub process's CPU time so far (user + system)
        if not spec["hub_pid"]:
            return 0.0
        fields = open(f"/proc/{spec['hub_pid']}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark():  # how many requests the test Hub has served so far
        if not spec["hub"]:
            return 0
        with urllib.request.urlopen(spec["hub"] + "/_test/requests") as answer:
            return len(json.load(answer))
    marks = [mark()]
    sys.path[:0] = spec["path"]
    import numpy as np
    from search_repo import FakeEncoder
    from imagesearchtr import Searcher
    if spec["workers"]:  # read when the Searcher's pools are made
        import imagesearchtr.lazy_rows
        imagesearchtr.lazy_rows.FETCH_WORKERS = spec["workers"]
    searcher = Searcher.from_repo(spec["location"], revision=spec["revision"],
                                  encoder=FakeEncoder(spec["dim"]), cache_dir=spec["cache"])
    start_s = time.perf_counter() - t0
    marks.append(mark())
    start_rss_mb = memory_mb("VmRSS")
    queries = np.load(spec["queries"])
    for vector in queries[: spec["warmup"]]:  # not timed: see WARMUP
        searcher.search_vector(vector, k=10)
    marks.append(mark())
    latencies, errors = [], 0
    hub_cpu = -hub_cpu_s()
    for vector in queries[spec["warmup"] :]:
        t = time.perf_counter()
        hits = searcher.search_vector(vector, k=10)
        latencies.append(time.perf_counter() - t)
        errors += sum(h.image_error is not None for h in hits)
    hub_cpu += hub_cpu_s()
    rss_mb = memory_mb("VmHWM")
    anon_mb, file_mb = memory_mb("RssAnon"), memory_mb("RssFile")
    marks.append(mark())
    floor, page_floor = [], []  # bare 4 KiB range GETs, no Searcher involved
    if spec["hub"]:
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils import build_hf_headers
        first = searcher.manifest.data_files[0]["path"]
        url = hf_hub_url(spec["location"], first, repo_type="dataset", revision=spec["revision"])
        headers = {"Range": "bytes=0-4095"}
        # The storage URL the Hub redirects to: one round trip a read, as the Searcher's.
        url = str(get_session().get(url, headers={**build_hf_headers(), **headers},
                                    follow_redirects=True).url)
        for i in range(20):
            t = time.perf_counter()
            get_session().get(url, headers=headers)
            floor.append(time.perf_counter() - t)
        # A page's reads and nothing else: 10 such GETs on the Searcher's fetch threads.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(spec["page_workers"]) as pool:
            for i in range(20):
                t = time.perf_counter()
                list(pool.map(lambda _: get_session().get(url, headers=headers), range(10)))
                page_floor.append(time.perf_counter() - t)
    print(json.dumps({"start_s": start_s, "latencies": latencies, "errors": errors,
                      "rss_mb": rss_mb, "start_rss_mb": start_rss_mb, "marks": marks,
                      "anon_mb": anon_mb, "file_mb": file_mb,
                      "floor": floor, "page_floor": page_floor, "hub_cpu_s": hub_cpu}))
    """
)

# Queries each client runs after its start and before the timed ones, fetching their images
# too: a cold start has just written gigabytes of cache files, and the first queries fault
# pages of them and of the indices back in, which measures the disk, not the image fetches.
WARMUP = 20

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


def run(code: str, env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=_common.REPO_ROOT,
    )
    if result.returncode != 0:
        sys.exit(f"error: a benchmark client failed:\n{result.stderr[-3000:]}")
    return result.stdout


def client(
    env: dict,
    location: str,
    revision,
    cache: Path,
    queries: Path,
    hub=None,
    workers=None,
    version: Path = _common.REPO_ROOT,
) -> dict:
    """One client's figures; ``hub``: the test Hub's HubProcess (None: a local folder);
    ``workers``: run it with that many fetch threads; ``version``: the folder whose ``space/``
    it runs."""
    from imagesearchtr.lazy_rows import FETCH_WORKERS

    spec = {
        "workers": workers,
        "page_workers": FETCH_WORKERS,  # this version's, whichever space/ the client runs
        "hub": hub.endpoint if hub else None,
        "hub_pid": hub.pid if hub else None,
        "path": [str(_common.REPO_ROOT / "tests"), str(version / "space")],
        "location": location,
        "revision": revision,
        "dim": _common.DIM,
        "cache": str(cache),
        "queries": str(queries),
        "warmup": WARMUP,
    }
    return json.loads(run(CLIENT, env, json.dumps(spec)).splitlines()[-1])


def bytes_read(
    requests: list[dict], sizes: dict[str, int], by_sha: dict[str, str]
) -> tuple[int, int, int, int, int]:
    """(data bytes, data reads, other bytes, other reads, redirects) of the GETs of repo
    files. A read is a GET that served bytes: of a resolve URL, or of the storage URL the Hub
    redirects to (named by the file's sha256); a redirect is a resolve answered with one."""
    data = data_n = other = other_n = redirects = 0
    for r in requests:
        resolved = re.search(r"/resolve/[^/]+/(.+)$", r["path"])
        stored = re.match(r"/_storage/([0-9a-f]{64})", r["path"])
        path = resolved[1] if resolved else by_sha.get(stored[1]) if stored else None
        if r["method"] != "GET" or path not in sizes:
            continue
        if r["status"] in (301, 302, 307, 308):
            redirects += 1
            continue
        if r["status"] not in (200, 206):
            continue
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", r["range"] or "")
        size = sizes[path]
        n = (min(int(rng[2] or size - 1), size - 1) - int(rng[1]) + 1) if rng else size
        if path.startswith("data/"):
            data, data_n = data + n, data_n + 1
        else:
            other, other_n = other + n, other_n + 1
    return data, data_n, other, other_n, redirects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows (20,000)")
    parser.add_argument("--queries", type=int, default=40, help="timed queries (40)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times to run the pair of clients, alternating, each with fresh caches (1); the "
        "latency ratio reported is the median of the rounds'",
    )
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="then two more lazy clients (0, the default: none) with this many ms added to "
        "every read of a repo file (resolve and storage URLs), a model of the round trip to the "
        "Hub: one with the Searcher's fetch threads, one with --compare-workers",
    )
    parser.add_argument(
        "--compare-workers",
        type=int,
        default=8,
        help="fetch threads of the second client under --latency-ms (8: the value before 16)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also run the pair of clients with another version's space/ folder (DIR holds it, "
        "e.g. `git archive HEAD~1 space | tar -x -C DIR`), alternating with this one each round",
    )
    parser.add_argument(
        "--recall",
        help="instead: recall@10 of auto's ivf-sq8 at these row counts (e.g. 200000,1000000; "
        "about a minute at 1M rows, 6 GB of RAM)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.compare_workers < 1:
        parser.error("--compare-workers must be at least 1")
    if args.compare and not (args.compare / "space" / "imagesearchtr").is_dir():
        parser.error(f"--compare {args.compare}: no space/imagesearchtr/ folder there")
    if args.recall:
        return recall([int(n) for n in args.recall.split(",")])
    from hub_server import run_hub_process

    from imagesearchtr.lazy_rows import FETCH_WORKERS
    from imagesearchtr.manifest import sha256_file

    machine = _common.machine_line()
    work = args.work or Path(tempfile.mkdtemp(prefix="lazy-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        fingerprint = "sha256:" + "a" * 64  # the stand-in encoder's (tests/search_repo.py)
        t = time.perf_counter()
        repo = _common.published_repo(work, args.rows, "auto", work / "no-model", fingerprint)
        print(f"built and published {args.rows:,} rows in {time.perf_counter() - t:.0f} s")
        # The build's shards are not needed any more: at 1M rows they are 7 GB of disk.
        shutil.rmtree(work / f"build-{args.rows}", ignore_errors=True)
        sizes = {
            p.relative_to(repo).as_posix(): p.stat().st_size for p in repo.rglob("*") if p.is_file()
        }
        data_bytes = sum(s for p, s in sizes.items() if p.startswith("data/"))
        index_bytes = sum(s for p, s in sizes.items() if p.startswith("index/"))
        image_bytes = image_sizes(repo)
        groups = row_groups(repo)
        rng = np.random.default_rng(7)
        x = _common.clustered(args.rows)
        queries = x[rng.integers(0, args.rows, WARMUP + args.queries)]
        queries += 0.03 * rng.standard_normal(queries.shape, dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        np.save(work / "queries.npy", queries)

        shutil.rmtree(work / "hub", ignore_errors=True)  # a fresh Hub and fresh caches
        for old in ("home-upload", "home-lazy", "home-local", "cache-lazy", "cache-local"):
            shutil.rmtree(work / old, ignore_errors=True)
        by_sha = {sha256_file(repo / path): path for path in sizes}
        # With the Hub's LFS redirect to its storage host, which the test Hub models.
        with run_hub_process(work / "hub", request_log=None) as hub:
            env = {**hub.env(), "HF_HOME": str(work / "home-upload")}
            name = f"{hub.user}/lazy-bench"
            commit = run(UPLOAD, env, str(repo), name).strip()
            # {version: ([lazy clients' figures], [local clients']), one pair a round}
            versions = [_common.REPO_ROOT, *([args.compare] if args.compare else [])]
            figures = {v: ([], []) for v in versions}
            log = None
            for n in range(args.rounds):
                for version in versions if n % 2 == 0 else versions[::-1]:
                    for old in ("home-lazy", "home-local", "cache-lazy", "cache-local"):
                        shutil.rmtree(work / old, ignore_errors=True)
                    env = {**hub.env(), "HF_HOME": str(work / "home-lazy")}
                    cache, queries = work / "cache-lazy", work / "queries.npy"
                    one = client(env, name, commit, cache, queries, hub, None, version)
                    figures[version][0].append(one)
                    if log is None and version == _common.REPO_ROOT:
                        log = hub.requests
                    env = {"HF_HOME": str(work / "home-local"), "HF_HUB_OFFLINE": "1"}
                    cache = work / "cache-local"
                    one = client(env, str(repo), None, cache, queries, None, None, version)
                    figures[version][1].append(one)
            lazy, local = figures[_common.REPO_ROOT]
            slow = []  # (fetch threads, figures) under the modelled round trip
            if args.latency_ms > 0:  # the test Hub's fault rules can slow answers down
                slowed = r"^/(datasets/|_storage/)"
                hub.inject_fault(
                    "GET", slowed, status=None, delay=args.latency_ms / 1000, times=10**9
                )
                for workers in (FETCH_WORKERS, args.compare_workers):
                    for old in ("home-lazy", "cache-lazy"):
                        shutil.rmtree(work / old, ignore_errors=True)
                    env = {**hub.env(), "HF_HOME": str(work / "home-lazy")}
                    cache, queries = work / "cache-lazy", work / "queries.npy"
                    one = client(env, name, commit, cache, queries, hub, workers)
                    slow.append((workers, one))
                hub.clear_faults()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    m = lazy[0]["marks"]
    start = bytes_read(log[m[0] : m[1]], sizes, by_sha)
    queried = bytes_read(log[m[2] : m[3]], sizes, by_sha)  # timed queries (m[1]-m[2]: warm-up)
    report(args, machine, groups, data_bytes, index_bytes, image_bytes, start, queried)
    compared = figures[args.compare] if args.compare else None
    report_latency(args, lazy, local, data_bytes, index_bytes, start[0], queried, slow, compared)


# (stored cluster by cluster, trained on the first rows) of each measured index
RECALL_RUNS = ((False, False), (True, False), (True, True))


def recall(sizes: list[int]) -> None:
    """recall@10 of ``choose_index(N, "auto")`` (IVF-SQ8) against exact search on clustered
    vectors, stored in random order and cluster by cluster (as photos are, folder by folder),
    the index trained as the pipeline trains it (``faiss_index``: a sample of all rows) and,
    stored cluster by cluster, as it did before (the first rows, datasets' ``train_size``): its
    candidate pool re-scored as the Searcher does (with the index's own 8-bit codes), and, for
    comparison, with the float32 embeddings; nprobe = nlist / 16 (the old rule) and nlist / 8
    (the rule now)."""
    import faiss

    from imagesearchtr.searcher import MIN_POOL, POOL_FACTOR
    from pipeline.index import IVF_PROBE_FRACTION, choose_index, faiss_index

    k, pool = 10, max(10 * POOL_FACTOR, MIN_POOL)
    lines = [
        "## recall@10 of `auto` above 150,000 rows (`python benchmarks/lazy.py --recall ...`)",
        "",
        f"Machine: {_common.machine_line()}. Synthetic clustered 768-d embeddings "
        f"(benchmarks/_common.py), 100 queries (rows plus noise); candidates: the index's "
        f"top {pool}, re-scored with the vectors the index holds (its 8-bit codes), as the "
        "Searcher does, or with the float32 embeddings (which the Searcher no longer reads).",
        "",
        "| rows | stored | trained on | factory | nprobe | recall@10, the Searcher's scores | "
        "with float32 scores |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = [(n, by_cluster, first) for n in sizes for by_cluster, first in RECALL_RUNS]
    for n, by_cluster, first in runs:
        plan = choose_index(n, "auto")
        x = _common.clustered(n, by_cluster=by_cluster)
        rng = np.random.default_rng(5)
        q = x[rng.integers(0, n, 100)] + 0.03 * rng.standard_normal((100, _common.DIM), "f4")
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        truth = [set(np.argpartition(-(x @ v), k)[:k]) for v in q]
        if first:  # as datasets' train_size trains it
            index = faiss.index_factory(_common.DIM, plan.factory, faiss.METRIC_INNER_PRODUCT)
            index.train(x[: plan.train_size])
        else:
            index = faiss_index(plan, x)
        index.add(x)
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        for nprobe in sorted({ivf.nlist // 16, plan.params["nprobe"]}):
            ivf.nprobe = nprobe
            _, ids = index.search(q, pool)
            held = exact = 0
            for v, row_ids, want in zip(q, ids, truth, strict=True):
                c = row_ids[row_ids >= 0]
                held += len(set(c[np.argsort(-(index.reconstruct_batch(c) @ v))[:k]]) & want)
                exact += len(set(c[np.argsort(-(x[c] @ v))[:k]]) & want)
            rule = " (auto now)" if nprobe == ivf.nlist // IVF_PROBE_FRACTION else ""
            stored = "cluster by cluster" if by_cluster else "random order"
            trained = "the first rows (before)" if first else "a sample of all rows"
            lines.append(
                f"| {n:,} | {stored} | {trained} | {plan.factory} | {nprobe}{rule} | "
                f"{held / 1000:.3f} | {exact / 1000:.3f} |"
            )
            print(lines[-1], flush=True)
        del x, index
    _common.write_readme_section("ivf-recall", "\n".join(lines))


def real_row_bytes() -> float | None:
    """Parquet bytes a row of ``image_id``, ``path`` and ``captions`` takes with the shared
    Flickr8k rows (real file names, real Turkish text, two captions a photo); None without
    them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _common.SHARED_DATA / "captions.jsonl"
    if not path.is_file():
        return None
    rows: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        rows.setdefault(Path(record["path"]).stem, []).append(record["caption"])
    ids = list(rows)
    paths = [f"images/{stem}.jpg" for stem in ids]
    table = pa.table({"image_id": ids, "path": paths, "captions": list(rows.values())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    without = pa.BufferOutputStream()
    pq.write_table(table.slice(0, 0), without)  # the footer and headers alone
    return (sink.getvalue().size - without.getvalue().size) / len(rows)


def image_sizes(repo: Path) -> list[int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = []
    for path in sorted((repo / "data").glob("*.parquet")):
        images = pq.read_table(path, columns=["image"]).column("image").combine_chunks()
        out.extend(pc.binary_length(images.field("bytes")).to_pylist())
    return out


def row_groups(repo: Path) -> tuple[int, int]:
    """(row groups in all data files, rows in the largest)."""
    import pyarrow.parquet as pq

    sizes = []
    for path in sorted((repo / "data").glob("*.parquet")):
        meta = pq.read_metadata(path)
        sizes += [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    return len(sizes), max(sizes)


def ms(values, q) -> float:
    return 1000 * float(np.percentile(values, q))


def report(args, machine, groups, data_bytes, index_bytes, image_bytes, start, queried):
    """Print and keep the byte figures (measured at N, computed for 1M)."""
    n = args.rows
    start_data, start_data_n, start_index, start_index_n, start_redirects = start
    q_data, q_data_n, _, _, q_redirects = queried
    start_total = start_data + start_index
    start_per_row = start_data / n  # footers and id, path and caption chunks per row, measured
    mean_image = float(np.mean(image_bytes))
    rest_per_row = (data_bytes - sum(image_bytes)) / n  # a data row's bytes but its image
    lines = [
        f"`python benchmarks/lazy.py --rows {n} --queries {args.queries} --rounds "
        f"{args.rounds}"
        + (f" --latency-ms {args.latency_ms:g}" if args.latency_ms else "")
        + (" --compare DIR" if args.compare else "")
        + f"`. Machine: {machine}.",
        "",
        f"Measured at {n:,} rows (synthetic {mean_image / 1024:.1f} KiB JPEGs, 768-d "
        f"embeddings, `--index-type auto`, {groups[0]:,} row groups of at most {groups[1]:,} "
        "rows), against the test Hub on 127.0.0.1 (its own process):",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| repo data bytes (data/*.parquet) | {data_bytes:,} |",
        f"| index bytes (index/*, downloaded whole) | {index_bytes:,} in {start_index_n} GETs |",
        f"| data bytes read at start (footers + id, path and caption chunks) | {start_data:,} in "
        f"{start_data_n} range reads |",
        f"| start-up bytes / data bytes | {start_total / data_bytes:.1%} |",
        f"| image bytes read by {args.queries} queries of k=10 | {q_data:,} in {q_data_n} "
        "range reads |",
        f"| image bytes per range read | {q_data / max(q_data_n, 1):,.0f} |",
        f"| redirects to the storage URL: at start / in those queries | {start_redirects} / "
        f"{q_redirects} (one per file the first time the Searcher reads an image of it) |",
        "",
    ]
    million = 1_000_000
    # Computed, not measured: start-up = the indices at 1M (auto: IVF-SQ8, 768 B a vector plus
    # its 8-byte id, two indices) + the ids, paths and captions per row, taken from the shared
    # Flickr8k data when it is here (the synthetic captions repeat a few sentences and the
    # synthetic paths count up, so they compress better than real ones); data = the measured
    # bytes of a row but its image, plus an image. Photo sizes: the shared photos' mean
    # (measured, 26 KiB) and 150 KiB, the middle of the 100-300 kB.
    real = real_row_bytes()
    per_row = max(start_per_row, real or 0.0)
    index_1m = 2 * million * (_common.DIM + 8)
    start_1m = index_1m + per_row * million
    source = (
        f"{real:.0f} B a row of ids, paths and captions as the shared Flickr8k rows take in parquet"
        if real
        else f"{start_per_row:.0f} B a row of synthetic ids, paths and captions (no shared data)"
    )
    lines += [
        f"Computed for 1M rows of photo-sized images: start-up = two IVF-SQ8 indices plus "
        f"{source}; data = the measured {rest_per_row:,.0f} B of a row but its image, plus "
        "the image:",
        "",
        "| image size | data bytes | start-up bytes | start-up / data | a shown image costs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, image in (("26 KiB (Flickr8k mean)", 26 * 1024), ("150 KiB", 150 * 1024)):
        data_1m = million * (rest_per_row + image)
        lines.append(
            f"| {label} | {data_1m / 1e9:.0f} GB | {start_1m / 1e9:.2f} GB | "
            f"{start_1m / data_1m:.1%} | {image / 1024:.0f} KiB (one range read) |"
        )
    lines.append("")
    REPORT.extend(lines)


REPORT: list[str] = []


def report_latency(
    args, lazy, local, data_bytes, index_bytes, start_data_bytes, queried, slow, compared
):
    """``compared``: ([lazy], [local]) figures of the ``--compare`` version, or None."""
    from imagesearchtr.lazy_rows import FETCH_WORKERS

    read_bytes, reads = queried[0], queried[1]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    working_set = 2 * (data_bytes + index_bytes + start_data_bytes)
    rows = [
        "| round | client | cold start s | RSS after start MB | peak RSS MB (VmHWM) | "
        "at the end: anonymous / file-backed MB | p50 ms | p95 ms | placeholders |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ratios, compared_ratios = [], []  # lazy p50 / local p50 a round: this version, --compare
    pairs = [("", lazy, local, ratios)]
    if compared:
        pairs.append((f", {args.compare.name}", *compared, compared_ratios))
    for n in range(len(lazy)):
        for label, lazies, locals_, out in pairs:
            one_lazy, one_local = lazies[n], locals_[n]
            for name, r in (("Hub, lazy images", one_lazy), ("local folder", one_local)):
                rows.append(_client_row(str(n + 1), name + label, r))
            out.append(ms(one_lazy["latencies"], 50) / ms(one_local["latencies"], 50))
    for workers, r in slow:
        name = f"Hub, lazy images, +{args.latency_ms:g} ms a read, {workers} fetch threads"
        rows.append(_client_row("after", name, r))
    ratio = float(np.median(ratios))
    p50s = {
        name: float(np.median([ms(r["latencies"], 50) for r in group]))
        for name, group in (("lazy", lazy), ("local", local))
    }
    page_floor = float(np.median([ms(r["page_floor"], 50) for r in lazy]))
    hub_cpu_ms = float(np.median([1000 * r["hub_cpu_s"] / args.queries for r in lazy]))
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK") / args.queries  # /proc counts CPU time in ticks
    REPORT.extend(
        [
            f"Cold start (a fresh cache, imports included) and `search_vector(k=10)` latency "
            f"over {args.queries} queries after {WARMUP} untimed ones, each query fetching the "
            "images it shows that are not cached yet (measured):",
            "",
            *rows,
            "",
            "File-backed RSS is pages of memory-mapped files (the ids, paths and captions, and the "
            "libraries): page cache, which the kernel reclaims under memory pressure; anonymous "
            "memory (mostly the two indices) is what the process holds.",
            "",
            f"p50 lazy / p50 local: {ratio:.2f}x"
            + (
                f" (median of {len(ratios)} rounds: {', '.join(f'{r:.2f}x' for r in ratios)})"
                if len(ratios) > 1
                else ""
            )
            + f". The clients run one after the other; their row caches, the repo folder "
            f"and the Hub's storage come to about {working_set / 1e9:.0f} GB against "
            f"{ram / 1e9:.0f} GB of RAM here, so where that is more, the page cache decides "
            "much of a round's p50s. A lazy query makes "
            f"{reads / args.queries:.1f} range reads (one a shown image not yet cached, "
            f"{read_bytes / max(reads, 1) / 1024:.1f} KiB each), {FETCH_WORKERS} at a time; "
            f"one bare 4 KiB range GET of this test Hub takes {ms(lazy[0]['floor'], 50):.1f} ms "
            "(p50 of 20, sequential, no Searcher involved), and a page's worth, 10 such GETs on "
            f"{FETCH_WORKERS} threads, {page_floor:.1f} ms (p50 of 20, the median over the "
            f"rounds), against a lazy p50 {p50s['lazy'] - p50s['local']:+.1f} ms off the local "
            "one (medians over the rounds). The test Hub is a Python server in its own process "
            "on the same 2 cores as the client, so those reads include the server's CPU time: "
            f"{hub_cpu_ms:.1f} ms a timed query (its process's user + system time, counted in "
            f"steps of {tick_ms:.2f} ms a query; the median over the rounds), which the Hub's "
            "own servers would spend elsewhere. "
            "The test Hub redirects each read of an LFS file to a signed storage URL, as the "
            "Hub does; the Searcher keeps that URL per file, so a read is one round trip once "
            "its file has been read.",
        ]
    )
    if compared:
        mine = [ms(r["latencies"], 50) for r in lazy]
        other = [ms(r["latencies"], 50) for r in compared[0]]
        REPORT.extend(
            [
                "",
                f"`--compare DIR`, DIR holding the space/ folder of {args.compare.name} "
                "(alternating with this version, the same repo and queries): lazy/local p50 "
                f"median {float(np.median(compared_ratios)):.2f}x "
                f"({', '.join(f'{r:.2f}x' for r in compared_ratios)}); "
                f"lazy p50 this / that, a round: "
                + ", ".join(f"{a / b:.2f}x" for a, b in zip(mine, other, strict=True))
                + ".",
            ]
        )
    if slow:
        local_p50 = p50s["local"]
        (ours, now), (theirs, before) = slow
        REPORT.extend(
            [
                "",
                f"The last two rows: lazy clients with {args.latency_ms:g} ms added by the test "
                "Hub to every read of a repo file (`--latency-ms`; the index downloads, the "
                "start-up's range reads and the image reads alike), a model of the round trip "
                f"to the Hub from a Space, with the Searcher's {ours} fetch threads and with "
                f"{theirs} (`--compare-workers`). p50 over the rounds' median local p50: "
                f"+{ms(now['latencies'], 50) - local_p50:.1f} ms with {ours}, "
                f"+{ms(before['latencies'], 50) - local_p50:.1f} ms with {theirs}; p50 with "
                f"{ours} / p50 with {theirs}: "
                f"{ms(now['latencies'], 50) / ms(before['latencies'], 50):.2f}x.",
            ]
        )
    if args.rows < 1_000_000:
        REPORT.extend(_rss_at_a_million(lazy[0], index_bytes))
    text = "## Lazy rows (`python benchmarks/lazy.py`)\n\n" + "\n".join(REPORT)
    print(text)
    _common.write_readme_section("lazy", text)


def _client_row(round_: str, name: str, r: dict) -> str:
    """One client's line of the latency table."""
    return (
        f"| {round_} | {name} | {r['start_s']:.1f} | {r['start_rss_mb']:.0f} | "
        f"{r['rss_mb']:.0f} | {r['anon_mb']:.0f} / {r['file_mb']:.0f} | "
        f"{ms(r['latencies'], 50):.1f} | {ms(r['latencies'], 95):.1f} | {r['errors']} |"
    )


def _rss_at_a_million(lazy, index_bytes: int) -> list[str]:
    return [
        "",
        f"RSS at 1M rows, computed (not measured): the lazy client's RSS after start "
        f"({lazy['start_rss_mb']:.0f} MB) less its indices ({index_bytes / 2**20:.0f} MB) "
        f"plus two IVF-SQ8 indices of 1M rows ({2 * 776e6 / 2**20:.0f} MB): "
        f"{lazy['start_rss_mb'] - index_bytes / 2**20 + 2 * 776e6 / 2**20:,.0f} MB; the "
        "rows are memory-mapped, so the pages a query touches come and go with the page "
        "cache.",
    ]


if __name__ == "__main__":
    main()
