"""Search speed and recall of each index type, through ``Searcher`` as the Space uses it.

Run: ``python benchmarks/search.py [--sizes 50000,100000] [--types flat,fp16,ivf-sq8]
[--queries 50] [--work DIR]`` (a few minutes at 100k rows on 2 cores; no model).

Reads nothing but the project. Writes into ``--work`` (a temporary folder, deleted, unless
given): ``build-N/`` (N synthetic rows, benchmarks/_common.py) and one repo folder per index type
(``pipeline index`` then ``publish --to``, as ``benchmarks/_common.py`` makes them); and the
figures into benchmarks/README.md (section ``search``).

Measures per index type: the index file size, ``Searcher.from_repo`` (no model: a stub encoder
with the manifest's fingerprint; a build left in ``--work`` by benchmarks/pipeline.py is
reused), the p50 of ``search_vector(q, k=10)`` (image-only: the index's candidates, re-scored
with the vectors it holds, the 10 rows fetched and decoded) and of Deep Search (alpha 0.5), and
recall@10 of the image-only hits against the exact numpy top 10. Queries are database vectors
plus noise, so that each has close neighbours as a text query for a photo would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

K = 10
WARMUP = 2  # the first queries of a fresh Searcher, left out of the p50s (not of the recall)
FINGERPRINT = "sha256:" + "b" * 64  # of the builds this benchmark writes (no model needed)


class StubEncoder:
    """Carries the model identity ``from_repo`` checks; the benchmark searches with vectors."""

    model_id, dim = "benchmark/stub", _common.DIM

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint


def repo_for(work: Path, n: int, index_type: str) -> Path:
    """N rows indexed with ``index_type`` and published to a folder (``_common``), over the
    build in ``work`` (one left by benchmarks/pipeline.py keeps its model fingerprint)."""
    build_file = work / f"build-{n}" / "build.json"
    fingerprint = FINGERPRINT
    if build_file.is_file():
        fingerprint = json.loads(build_file.read_text())["model_fingerprint"]
    return _common.published_repo(work, n, index_type, work, fingerprint)


def measure(repo: Path, x: np.ndarray, queries: np.ndarray, cache: Path) -> dict:
    """``cache``: a row cache of this measurement's own, emptied first: the index types'
    repos share byte-identical data files, whose cached columns would make every load after
    the first one warm."""
    from imagesearchtr import Manifest, Searcher

    shutil.rmtree(cache, ignore_errors=True)
    fingerprint = Manifest.load(repo / "index" / "manifest.json").model_fingerprint
    t = time.perf_counter()
    searcher = Searcher.from_repo(repo, encoder=StubEncoder(fingerprint), cache_dir=cache)
    result = {"load_s": time.perf_counter() - t, "index": searcher.manifest.indices[0].factory}
    result["index_mb"] = (repo / searcher.manifest.indices[0].file).stat().st_size / 1e6
    found, image_ms, deep_ms = 0, [], []
    for q in queries:
        t = time.perf_counter()
        hits = searcher.search_vector(q, K)
        image_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        searcher.search_vector(q, K, alpha=0.5)
        deep_ms.append((time.perf_counter() - t) * 1000)
        truth = np.argpartition(-(x @ q), K)[:K]
        found += len({h.row for h in hits} & set(truth.tolist()))
    result["image_ms"] = float(np.median(image_ms[WARMUP:]))
    result["deep_ms"] = float(np.median(deep_ms[WARMUP:]))
    result["recall"] = found / (K * len(queries))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,100000", help="row counts (50000,100000)")
    parser.add_argument("--types", default="flat,fp16,ivf-sq8", help="--index-type values")
    parser.add_argument("--queries", type=int, default=50, help="timed queries (50)")
    parser.add_argument("--work", type=Path, help="keep builds and repos here, reuse them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        machine = _common.machine_line()
        print(machine, flush=True)
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            x = _common.clustered(n)
            rng = np.random.default_rng(7)
            queries = x[rng.integers(0, n, args.queries)] + 0.03 * rng.standard_normal(
                (args.queries, _common.DIM), dtype=np.float32
            )
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            for index_type in args.types.split(","):
                cache = work / f"row-cache-{n}-{index_type}"
                r = measure(repo_for(work, n, index_type), x, queries, cache)
                print(n, index_type, r, flush=True)
                rows.append(
                    f"| {n:,} | {index_type} ({r['index']}) | {r['index_mb']:.0f} | "
                    f"{r['load_s']:.2f} | {r['image_ms']:.2f} | {r['deep_ms']:.2f} | "
                    f"{r['recall']:.3f} |"
                )
    text = "\n".join(
        [
            f"## Search by index type (`python benchmarks/search.py --sizes {args.sizes}`)",
            "",
            f"Machine: {machine}. Synthetic clustered 768-d embeddings; {args.queries} queries; "
            f"p50 of `Searcher.search_vector` over the last {args.queries - WARMUP} "
            f"(the first {WARMUP} are warm-up; candidates re-scored with the vectors the index "
            "holds, 10 rows fetched and decoded); recall@10 of the image-only hits over all of "
            "them against exact numpy search (`auto` picks ivf-sq8 only above 150,000 rows). "
            "Load: `Searcher.from_repo` with a fresh row cache of its own, no model.",
            "",
            "| rows | index | image index MB | load s | image-only ms | "
            "Deep Search ms | recall@10 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    print(text)
    _common.write_readme_section("search", text)


if __name__ == "__main__":
    main()
