"""What the search and pipeline benchmarks share: the machine line, the full-size model, synthetic
published repos, and the figures section each benchmark writes into benchmarks/README.md.

Reads nothing but the project. Writes, under a work folder the caller names: ``model/`` (a
full-size random-weight MultiEmbedTR), ``build-N/`` (N synthetic rows in the encode step's
layout) and ``repo-N-TYPE/`` (that build indexed and published to a folder); and the README
section between ``<!-- NAME -->`` and ``<!-- /NAME -->``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
README = BENCH_DIR / "README.md"
# benchmarks/pipeline.py shares its name with the project's package: drop this folder from the
# path so that ``import pipeline`` finds the package; the project, tests and space come first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "space")]

# The shared TasvirEt photos and captions (research-use licence: read in place, never copied).
SHARED_DATA = Path(
    os.environ.get("IMAGESEARCHTR_TEST_DATA", REPO_ROOT.parent / "shared/data/tasviret-flickr8k")
)
DIM = 768
SHARD_SIZE = 256  # the encode step's default --shard-size
# MultiEmbedTR at full size (ModernBERT-base text, DINOv2-base image, 768-d heads), as
# tests/tiny_checkpoint.py's size keywords.
FULL_SIZE = {
    "hidden": 768,
    "heads": 12,
    "text_layers": 22,
    "vision_layers": 12,
    "text_intermediate": 1152,
    "vocab_size": 32000,
    "text_max_positions": 8192,
}


def machine_line() -> str:
    import datasets
    import faiss

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy "
        f"{np.__version__}, faiss {faiss.__version__}, datasets {datasets.__version__}; "
        f"1-min load average at start {load:.2f}"
    )


def clustered(n: int, seed: int = 0, by_cluster: bool = False) -> np.ndarray:
    """n float32 unit vectors of 768-d with a low intrinsic dimension, like real embeddings;
    ``by_cluster``: stored cluster after cluster, as a build stores photos folder by folder."""
    rng = np.random.default_rng(seed)
    latent = 48
    basis = np.linalg.qr(rng.standard_normal((DIM, latent)))[0].T.astype(np.float32)
    centres = rng.standard_normal((1000, latent)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 50_000):
        block = out[start : start + 50_000]
        labels[start : start + len(block)] = rng.integers(0, len(centres), len(block))
        z = centres[labels[start : start + len(block)]]
        block[:] = (z + rng.standard_normal(z.shape, dtype=np.float32)) @ basis
        block += 0.02 * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out[np.argsort(labels, kind="stable")] if by_cluster else out


def write_model(folder: Path) -> str:
    """The full-size random checkpoint (written once); return its weight fingerprint."""
    from imagesearchtr.multiembedtr import fingerprint_state_dict, read_state_dict

    if not (folder / "config.json").is_file():
        from tiny_checkpoint import write_tiny_checkpoint

        write_tiny_checkpoint(folder, formats=("bin",), seed=0, **FULL_SIZE)
    return fingerprint_state_dict(read_state_dict(folder)[0])


def jpegs(count: int) -> list[bytes]:
    """Small distinct JPEGs (64x48)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64] / 64.0
    out = []
    for _ in range(count):
        rgb = np.stack([np.sin(5 * x + 3 * y + p) for p in rng.uniform(0, 6.28, 3)], -1)
        buf = io.BytesIO()
        Image.fromarray((rgb * 100 + 128).astype(np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def write_build(build: Path, n: int, model_dir: Path, fingerprint: str) -> None:
    """N synthetic rows as the encode step writes them: two captions a row, 1% without."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tiny_checkpoint import TURKISH_SENTENCES

    from pipeline.encode import BUILD_FILE, SHARDS_DIR, SUMMARY_FILE, features

    (build / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    image_emb = clustered(n)
    rng = np.random.default_rng(1)
    caption_emb = image_emb + 0.03 * rng.standard_normal(image_emb.shape, dtype=np.float32)
    caption_emb /= np.linalg.norm(caption_emb, axis=1, keepdims=True)
    has_caption = rng.random(n) >= 0.01
    photos, sentences = jpegs(997), TURKISH_SENTENCES
    for shard, start in enumerate(range(0, n, SHARD_SIZE)):
        rows = range(start, min(n, start + SHARD_SIZE))
        ids = [f"synthetic_{i:07d}" for i in rows]
        table = pa.table(
            {
                "image": [{"bytes": photos[i % len(photos)], "path": f"{i}.jpg"} for i in rows],
                "image_id": ids,
                "path": [f"/synthetic/{i}.jpg" for i in ids],
                "captions": [
                    [sentences[3 * i % len(sentences)], sentences[(7 * i + 1) % len(sentences)]]
                    if has_caption[i]
                    else []
                    for i in rows
                ],
                "image_emb": list(image_emb[rows.start : rows.stop]),
                "caption_emb": [caption_emb[i] if has_caption[i] else None for i in rows],
                "sha256": [f"{i:064x}" for i in rows],
            },
            schema=features(DIM).arrow_schema,
        )
        pq.write_table(table, build / SHARDS_DIR / f"shard-{shard:05d}.parquet")
    info = {
        "model_id": str(model_dir.resolve()),
        "model_revision": None,
        "model_fingerprint": fingerprint,
        "dim": DIM,
        "source": "synthetic rows (benchmarks/_common.py)",
        "plan_hash": "",
        "num_planned": n,
        "shard_size": SHARD_SIZE,
    }
    (build / BUILD_FILE).write_text(json.dumps(info, indent=2))
    # Last, as an encode's end: index refuses a build without it (an unfinished encode).
    (build / SUMMARY_FILE).write_text(json.dumps({"images": n}) + "\n")


def published_repo(work: Path, n: int, index_type: str, model_dir: Path, fingerprint: str) -> Path:
    """``repo-N-TYPE/``: N synthetic rows indexed with ``index_type`` and published (reused)."""
    import shutil

    from pipeline.index import SUMMARY_FILE, IndexConfig, run_index
    from pipeline.publish import PublishConfig, publish_to_folder

    repo = work / f"repo-{n}-{index_type}"
    manifest = repo / "index" / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.is_file() else {}
    # (a repo made before image ranges were recorded cannot be searched any more: made again)
    if old.get("model_fingerprint") == fingerprint and old.get("image_ranges_sha256"):
        return repo
    build = work / f"build-{n}"
    if not (build / SUMMARY_FILE).is_file():  # (written last: a build cut short is made again)
        write_build(build, n, model_dir, fingerprint)
    shutil.rmtree(build / "index", ignore_errors=True)
    run_index(IndexConfig(build=build, index_type=index_type))
    shutil.rmtree(repo, ignore_errors=True)
    publish_to_folder(PublishConfig(build=build, to=repo))
    return repo


def write_readme_section(name: str, text: str) -> None:
    """Replace (or add) the ``name`` section of benchmarks/README.md with ``text``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = README.read_text(encoding="utf-8") if README.is_file() else "# Benchmark figures\n"
    # The text outside the sections is kept as it is.
    block = f"{start}\n{text.strip()}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(new, encoding="utf-8")
