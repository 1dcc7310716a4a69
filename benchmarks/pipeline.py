"""One query end to end (encode + search + fetch) and the Searcher's load, at 50k and 100k rows.

Run: ``python benchmarks/pipeline.py [--sizes 50000,100000] [--queries 25] [--rounds 3]
[--work DIR] [--compare DIR [--compare-index TYPE]]``. ``--compare DIR`` measures another
version of ``space/`` side by side (DIR holds its ``space/`` folder, e.g. ``git archive 998fc04
space | tar -x -C DIR``), on a repo indexed with ``--compare-index`` (that version's own choice).

Reads nothing but the project. Writes the full-size random-weight model and the synthetic
published repos (benchmarks/_common.py) into ``--work`` (a temporary folder, deleted, unless
given), and the figures into benchmarks/README.md (section ``pipeline``).

Each version runs in its own fresh Python process, as a Space starts: the model, then
``Searcher.from_repo`` with it (the non-model load). A query's time end to end is its encode (the
median of one encode per query, the same code in every version: the best of all runs at that
size) plus the median of ``search_text(q, k=10)`` with the query vector already computed (search
and fetch of the 10 rows, images decoded; each query 3 times), image-only and as Deep Search
(alpha 0.5). Timing the encode apart keeps its large run-to-run noise on a shared machine out of
the comparison of the search paths.
The versions alternate over ``--rounds`` (order swapped each round) and each figure is a
version's best round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

K = 10
MAX_SLOWDOWN = 1.10  # the bar: end-to-end within 10% of the compared version
STEPS = ("load_s", "encode_ms", "text_ms", "deep_ms")


class CachedEncoder:
    """The model's identity and its query vectors, computed once: search_text then times the
    search and the fetch alone, in any version, through its public API."""

    def __init__(self, encoder, texts: list[str]):
        self.model_id, self.fingerprint, self.dim = (
            encoder.model_id,
            encoder.fingerprint,
            encoder.dim,
        )
        self.times, self.vectors = [], {}
        for text in texts[:3] + texts:  # 3 warm-up encodes
            t = time.perf_counter()
            self.vectors[text] = encoder.encode_texts([text])[0]
            self.times.append((time.perf_counter() - t) * 1000)
        self.times = self.times[3:]

    def encode_texts(self, texts, batch_size: int = 64):
        return np.stack([self.vectors[t] for t in texts])


def child(repo: Path, queries: int) -> dict:
    """Load one version's Searcher and time its queries (run in a fresh process)."""
    from tiny_checkpoint import TURKISH_SENTENCES

    import imagesearchtr
    from imagesearchtr import Encoder, Manifest, Searcher

    assert Path(imagesearchtr.__file__).is_relative_to(sys.path[0]), imagesearchtr.__file__
    manifest = Manifest.load(repo / "index" / "manifest.json")
    texts = [f"{TURKISH_SENTENCES[i % len(TURKISH_SENTENCES)]} {i}" for i in range(queries)]
    encoder = CachedEncoder(Encoder.from_pretrained(manifest.model_id), texts)
    t = time.perf_counter()
    searcher = Searcher.from_repo(repo, encoder=encoder)
    result = {"load_s": time.perf_counter() - t, "index": manifest.indices[0].factory}
    result["encode_ms"] = float(np.median(encoder.times))
    for step, alpha in (("text_ms", None), ("deep_ms", 0.5)):
        for text in texts[:3]:  # warm-up
            searcher.search_text(text, K, alpha=alpha)
        times = []
        for text in texts * 3:
            t = time.perf_counter()
            searcher.search_text(text, K, alpha=alpha)
            times.append((time.perf_counter() - t) * 1000)
        result[step] = float(np.median(times))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,100000", help="row counts (50000,100000)")
    parser.add_argument("--queries", type=int, default=25, help="timed queries (25)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--work", type=Path, help="keep model and repos here, reuse them")
    parser.add_argument("--compare", type=Path, help="folder holding another version's space/")
    parser.add_argument(
        "--compare-index",
        default="auto",
        help="index type the compared version searches, e.g. its own auto choice (auto)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--space", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.space))
        print(json.dumps(child(args.child, args.queries)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run(work, [int(s) for s in args.sizes.split(",")], args)


def run(work: Path, sizes: list[int], args) -> None:
    machine = _common.machine_line()
    print(machine, flush=True)
    fingerprint = _common.write_model(work / "model")
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "datasets-cache"), "HF_HUB_OFFLINE": "1"}
    versions = {"this": _common.REPO_ROOT / "space"}
    if args.compare:
        versions["compared"] = args.compare.resolve() / "space"
    results: dict = {}
    for n in sizes:
        repos = {
            label: _common.published_repo(
                work, n, "auto" if label == "this" else args.compare_index, work / "model",
                fingerprint,
            )
            for label in versions
        }  # fmt: skip
        for round_ in range(args.rounds):
            for label in list(versions)[:: 1 if round_ % 2 == 0 else -1]:
                command = [sys.executable, __file__, "--child", str(repos[label])]
                command += ["--queries", str(args.queries), "--space", str(versions[label])]
                answer = subprocess.run(command, env=env, capture_output=True, text=True)
                if answer.returncode != 0:
                    raise SystemExit(f"{label} at {n} rows failed:\n{answer.stderr[-3000:]}")
                r = json.loads(answer.stdout.strip().splitlines()[-1])
                print(n, label, json.dumps(r), flush=True)
                best = results.setdefault((n, label), r)
                for step in STEPS:
                    best[step] = min(best[step], r[step])
    encode = {n: min(r["encode_ms"] for (m, _), r in results.items() if m == n) for n in sizes}
    lines = [
        "## End-to-end query (`python benchmarks/pipeline.py"
        + (
            f" --compare {args.compare} --compare-index {args.compare_index}`)"
            if args.compare
            else "`)"
        ),
        "",
        f"Machine: {machine}. Full-size MultiEmbedTR with random weights, synthetic published "
        f"repos (`auto` index), k = {K}, {args.queries} queries, each version's best of "
        f"{args.rounds} alternating rounds, each in its own process. End to end = the query "
        "encode (same code in both) + search and fetch (10 rows, images decoded).",
        "",
        "| rows | index | version | load s (no model) | encode ms | search + fetch ms | "
        "end to end ms | Deep Search: search + fetch ms | Deep Search end to end ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (n, label), r in results.items():
        lines.append(
            f"| {n:,} | {r['index']} | {label} | {r['load_s']:.2f} | {encode[n]:.1f} | "
            f"{r['text_ms']:.2f} | {encode[n] + r['text_ms']:.1f} | {r['deep_ms']:.2f} | "
            f"{encode[n] + r['deep_ms']:.1f} |"
        )
    if args.compare:
        lines.append("")
        for n in sizes:
            for step in ("text", "deep"):
                this, other = results[n, "this"][f"{step}_ms"], results[n, "compared"][f"{step}_ms"]
                ratio = (encode[n] + this) / (encode[n] + other)
                verdict = "PASS" if ratio <= MAX_SLOWDOWN else "MISS"
                lines.append(
                    f"- {n:,} rows, {step} query end to end: {ratio:.3f}x the compared version "
                    f"(bar <= {MAX_SLOWDOWN:.2f}x: {verdict}); search + fetch alone "
                    f"{this / other:.2f}x"
                )
    text = "\n".join(lines)
    print(text)
    _common.write_readme_section("pipeline", text)


if __name__ == "__main__":
    main()
