"""Attach FAISS indices to the encoded rows and save them with their manifest.

Reads BUILD/build.json and BUILD/shards/*.parquet (from the encode step); writes
BUILD/index/image_emb.faiss, BUILD/index/caption_emb.faiss and BUILD/index/manifest.json.

The indices are built with ``datasets.Dataset.add_faiss_index`` (image_emb) and
``add_faiss_index_from_external_arrays`` (caption_emb, whose null rows, images without captions,
become zero vectors: a zero vector scores 0 against every query, and the searcher masks them).
Always inner product over L2-normalised vectors, i.e. cosine similarity; the datasets default
would be L2.

``--index-type auto`` chooses by the number of rows:
- up to 200,000 rows: exact ``Flat`` search. One query scans n x 768 float32 values, about 16 ms
  per 100k vectors at memory bandwidth on 2 cores, fast enough next to the ~50 ms text encoder,
  and exact results need no tuning;
- above that: ``HNSW32,Flat`` with efSearch 128, a graph index that answers in well under a
  millisecond with recall@10 near 0.99 on clustered embeddings, at the cost of ~256 extra bytes
  per vector. (Issue "Scale and measure" benchmarks these choices; until then the threshold is
  set from the bandwidth estimate above.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from imagesearchtr.manifest import (
    EMBEDDING_COLUMNS,
    INDEX_DIR,
    MANIFEST_FILE,
    IndexInfo,
    Manifest,
    index_file,
)
from imagesearchtr.vectors import data_hash, embedding_matrix

from .encode import BUILD_FILE, SHARDS_DIR, SKIPPED_FILE

AUTO_FLAT_MAX_ROWS = 200_000
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf-sq8")


@dataclass(frozen=True)
class IndexConfig:
    build: Path
    index_type: str = "auto"


@dataclass(frozen=True)
class IndexPlan:
    index_type: str
    factory: str
    train_size: int | None
    params: dict


def choose_index(num_rows: int, index_type: str) -> IndexPlan:
    """Turn --index-type into a FAISS factory string (see the module docstring for auto)."""
    if index_type == "auto":
        index_type = "flat" if num_rows <= AUTO_FLAT_MAX_ROWS else "hnsw"
    if index_type == "flat":
        return IndexPlan("flat", "Flat", None, {})
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32,Flat", None, {"efSearch": 128})
    if index_type == "ivf-sq8":
        # ~4 sqrt(n) lists, trained on up to 64 vectors per list.
        nlist = max(1, min(65536, int(4 * num_rows**0.5)))
        return IndexPlan(
            "ivf-sq8", f"IVF{nlist},SQ8", min(num_rows, 64 * nlist), {"nprobe": min(nlist, 32)}
        )
    # Any other string is taken as a FAISS factory string, for experts.
    return IndexPlan(index_type, index_type, num_rows, {})


def load_build_dataset(build: Path):
    """The encoded rows as one Dataset, shards in name order (= the published row order)."""
    from datasets import Dataset

    shards = sorted((Path(build) / SHARDS_DIR).glob("shard-*.parquet"))
    if not shards:
        raise FileNotFoundError(
            f"{build}: no encoded shards; run `python -m pipeline encode --out {build}` first"
        )
    return Dataset.from_parquet([str(p) for p in shards], split="train"), shards


def run_index(config: IndexConfig) -> Manifest:
    import faiss

    build = Path(config.build)
    build_info = _read_build_info(build)
    ds, shards = load_build_dataset(build)
    _check_complete(build, build_info, shards)
    dim = int(build_info["dim"])
    table = ds.data.table
    image_emb, image_valid = embedding_matrix(table.column("image_emb"), dim)
    caption_emb, caption_valid = embedding_matrix(table.column("caption_emb"), dim)
    if not image_valid.all():
        raise ValueError(f"{build}: {int((~image_valid).sum())} rows lack an image embedding")
    plan = choose_index(len(ds), config.index_type)

    index_dir = build / INDEX_DIR
    index_dir.mkdir(exist_ok=True)
    metric = faiss.METRIC_INNER_PRODUCT
    factory = None if plan.factory == "Flat" else plan.factory
    ds.add_faiss_index(
        column="image_emb",
        index_name="image_emb",
        string_factory=factory,
        metric_type=metric,
        train_size=plan.train_size,
    )
    ds.add_faiss_index_from_external_arrays(
        external_arrays=caption_emb,
        index_name="caption_emb",
        string_factory=factory,
        metric_type=metric,
        train_size=plan.train_size,
    )
    infos = []
    for column in EMBEDDING_COLUMNS:
        target = build / index_file(column)
        tmp = target.with_name(f".{target.name}.tmp")
        ds.save_faiss_index(column, str(tmp))
        os.replace(tmp, target)
        infos.append(
            IndexInfo(
                column=column,
                file=index_file(column),
                index_type=plan.index_type,
                factory=plan.factory,
                ntotal=int(ds.get_index(column).faiss_index.ntotal),
                params=plan.params,
            )
        )
    manifest = Manifest(
        model_id=build_info["model_id"],
        model_revision=build_info.get("model_revision"),
        model_fingerprint=build_info["model_fingerprint"],
        dim=dim,
        num_rows=len(ds),
        data_hash=data_hash(
            table.column("image_id").to_pylist(), image_emb, caption_emb, caption_valid
        ),
        indices=tuple(infos),
        num_captions=sum(len(c) for c in table.column("captions").to_pylist()),
        num_skipped=_count_lines(build / SKIPPED_FILE),
        versions=_versions(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=build_info.get("source", ""),
    )
    manifest.save(index_dir / MANIFEST_FILE)
    return manifest


def _read_build_info(build: Path) -> dict:
    path = build / BUILD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{build}: not a build folder (no {BUILD_FILE}); run `python -m pipeline encode "
            f"--out {build}` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _check_complete(build: Path, info: dict, shards: list[Path]) -> None:
    expected = -(-int(info["num_planned"]) // int(info["shard_size"]))  # ceil
    if len(shards) != expected:
        raise ValueError(
            f"{build}: {len(shards)} of {expected} shards are encoded; re-run the same "
            "`python -m pipeline encode` command to finish them before indexing"
        )


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "imagesearchtr",
        "datasets",
        "faiss-cpu",
        "huggingface_hub",
        "torch",
        "transformers",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
