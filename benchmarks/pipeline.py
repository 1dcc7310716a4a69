"""One query end to end (encode + search + fetch) and the Searcher's load, at 50k and 100k rows.

Run: ``python benchmarks/pipeline.py [--sizes 50000,100000] [--queries 40] [--work DIR]
[--compare DIR]``. ``--compare DIR`` measures another version of ``space/`` side by side (DIR
holds its ``space/`` folder, e.g. ``git archive 998fc04 space | tar -x -C DIR``).

Reads nothing but the project. Writes the full-size random-weight model and the synthetic
published repos (benchmarks/_common.py) into ``--work`` (a temporary folder, deleted, unless
given), and the figures into benchmarks/README.md (section ``pipeline``).

One fresh Python process per size loads the model once, then each version's Searcher from the
same repo (``from_repo`` with that encoder: the non-model load), and times each query the
versions' ways in turn, so that a shared machine's noise falls on both alike: the query encode
alone, ``search_text(q, k=10)`` (encode + search + fetch of the 10 rows, images decoded) and the
same as Deep Search (alpha 0.5). Medians after 3 warm-up queries.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def load_package(space: Path, name: str):
    """Import ``space/imagesearchtr`` under another module name (two versions in one process)."""
    spec = importlib.util.spec_from_file_location(
        name, space / "imagesearchtr" / "__init__.py", submodule_search_locations=[]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def child(repo: Path, queries: int, compare: Path | None) -> dict:
    """Load each version's Searcher and time their queries in turn (run in a fresh process)."""
    from tiny_checkpoint import TURKISH_SENTENCES

    from imagesearchtr import Encoder, Manifest, Searcher

    manifest = Manifest.load(repo / "index" / "manifest.json")
    encoder = Encoder.from_pretrained(manifest.model_id)
    versions = {"this": Searcher}
    if compare:
        versions["compared"] = load_package(compare, "imagesearchtr_compared").Searcher
    result: dict = {"index": manifest.indices[0].factory, "dtype": str(encoder.dtype)}
    searchers = {}
    for label, cls in versions.items():
        t = time.perf_counter()
        searchers[label] = cls.from_repo(repo, encoder=encoder)
        result[f"{label} load_s"] = time.perf_counter() - t
    steps = {"encode": lambda s, q: s.encoder.encode_texts([q])}
    steps["text"] = lambda s, q: s.search_text(q, K)
    steps["deep"] = lambda s, q: s.search_text(q, K, alpha=0.5)
    times: dict = {}
    texts = [TURKISH_SENTENCES[i % len(TURKISH_SENTENCES)] for i in range(queries + 3)]
    for i, text in enumerate(texts):
        for step, run in steps.items():
            for label, searcher in searchers.items():
                t = time.perf_counter()
                run(searcher, text)
                if i >= 3:
                    times.setdefault(f"{label} {step}_ms", []).append(
                        (time.perf_counter() - t) * 1000
                    )
    result.update({key: float(np.median(values)) for key, values in times.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,100000", help="row counts (50000,100000)")
    parser.add_argument("--queries", type=int, default=40, help="timed queries (40)")
    parser.add_argument("--work", type=Path, help="keep model and repos here, reuse them")
    parser.add_argument("--compare", type=Path, help="folder holding another version's space/")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        compare = args.compare.resolve() / "space" if args.compare else None
        print(json.dumps(child(args.child, args.queries, compare)))
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
    results = {}
    for n in sizes:
        repo = _common.published_repo(work, n, "auto", work / "model", fingerprint)
        command = [sys.executable, __file__, "--child", str(repo), "--queries", str(args.queries)]
        if args.compare:
            command += ["--compare", str(args.compare)]
        answer = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if answer.returncode != 0:
            raise SystemExit(f"the {n}-row run failed:\n{answer.stderr[-3000:]}")
        results[n] = json.loads(answer.stdout.strip().splitlines()[-1])
        print(n, json.dumps(results[n]), flush=True)
    labels = ["this", "compared"] if args.compare else ["this"]
    lines = [
        "## End-to-end query (`python benchmarks/pipeline.py"
        + (f" --compare {args.compare}`)" if args.compare else "`)"),
        "",
        f"Machine: {machine}. Full-size MultiEmbedTR with random weights, synthetic published "
        f"repos (`auto` index), k = {K}, medians of {args.queries} queries, the versions timed "
        "in turn on each query in one process.",
        "",
        "| rows | index | version | load s (no model) | encode ms | text query ms | "
        "Deep Search ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in results.items():
        for label in labels:
            lines.append(
                f"| {n:,} | {r['index']} | {label} | {r[f'{label} load_s']:.2f} | "
                f"{r[f'{label} encode_ms']:.1f} | {r[f'{label} text_ms']:.1f} | "
                f"{r[f'{label} deep_ms']:.1f} |"
            )
    if args.compare:
        lines.append("")
        for n, r in results.items():
            for step in ("text", "deep"):
                ratio = r[f"this {step}_ms"] / r[f"compared {step}_ms"]
                verdict = "PASS" if ratio <= MAX_SLOWDOWN else "MISS"
                lines.append(
                    f"- {n:,} rows, {step} query end to end: {ratio:.3f}x the compared version "
                    f"(bar <= {MAX_SLOWDOWN:.2f}x: {verdict})"
                )
    text = "\n".join(lines)
    print(text)
    _common.write_readme_section("pipeline", text)


if __name__ == "__main__":
    main()
