"""Attach FAISS indices to the encoded rows and save them with their manifest.

Reads BUILD/build.json and BUILD/shards/*.parquet (from the encode step); writes
BUILD/index/image_emb.faiss, BUILD/index/caption_emb.faiss and BUILD/index/manifest.json.

The indices are built with ``datasets.Dataset.add_faiss_index`` (image_emb) and
``add_faiss_index_from_external_arrays`` (caption_emb, whose null rows, images without captions,
become zero vectors: a zero vector scores 0 against every query, and the searcher masks them).
Always inner product over L2-normalised vectors, i.e. cosine similarity; the datasets default
would be L2.

``--index-type auto`` chooses by the number of rows N. The figures come from
``python benchmarks/search.py`` and ``python benchmarks/pipeline.py`` on 2 CPU cores (AMD EPYC,
768-d float32 embeddings; the README's "Performance" section has the figures). The budget is
set by the query encoder: a Turkish text query takes ~40 ms to encode (bf16), and search + row
fetch should stay under ~30% of that, i.e. ~12 ms.
- N <= 50,000: ``Flat`` (exact). The Searcher scans it with one numpy matrix-vector product over
  the index's own vectors at memory bandwidth, ~12-14 ms per 100k vectors, so <= ~7 ms here;
  exact results need no training and no tuning.
- 50,000 < N <= 150,000: ``SQfp16`` (``fp16``): the same scan over float16 codes, half the bytes
  (154 MB instead of 307 MB per 100k vectors) and half the time (~7 ms per 100k on one thread
  of FAISS); recall@10 1.000 on clustered and on Gaussian vectors alike, and the Searcher
  re-scores a pool of 50 candidates exactly, so results and scores are those of exact search.
  No training, nothing that depends on how the data is distributed. A float32 Flat index would
  take ~13 ms + fetch at 100k, over the budget.
- N > 150,000: ``IVF{nlist},SQ8`` (``ivf-sq8``), nlist = sqrt(N) rounded to a power of two,
  nprobe = nlist / 16, trained on 64 vectors a list: 8-bit codes (4x smaller than float32:
  0.8 GB instead of 3.1 GB per 1M vectors) of which a query scans 1/16, re-scored exactly from
  a pool of 50. At 1M on clustered embeddings: a few ms against ~125 ms for exact search, with
  recall@10 >= 0.99; building takes about a minute per index. Scanning all codes no longer fits
  the budget there (fp16: ~70 ms at 1M).
  An inverted file needs clusters in the data. On i.i.d. Gaussian vectors (no structure: the
  worst case, unlike real embeddings) its recall collapses (~0.2 at 100k); if an unusual
  dataset needs exact results at any cost, choose ``--index-type flat`` or ``fp16``.
- ``HNSW32,Flat`` (``hnsw``) answers as fast as IVF with recall@10 ~0.997 on clustered data,
  but is larger than Flat (+256 bytes a vector) and builds ~10x slower: 35-90 s per 100k-row
  index here, so ~10-20 min per 1M-row index, two indices per build.
"""

from __future__ import annotations

import datetime as dt
import json
import math
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

AUTO_FLAT_MAX_ROWS = 50_000
AUTO_FP16_MAX_ROWS = 150_000
IVF_VECTORS_PER_LIST = 64  # training vectors per list (faiss warns below 39)
IVF_PROBE_FRACTION = 16  # nprobe = nlist / 16
IVF_MIN_PROBE = 16
INDEX_TYPES = ("auto", "flat", "fp16", "hnsw", "ivf-sq8")


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
        if num_rows <= AUTO_FLAT_MAX_ROWS:
            index_type = "flat"
        elif num_rows <= AUTO_FP16_MAX_ROWS:
            index_type = "fp16"
        else:
            index_type = "ivf-sq8"
    if index_type == "flat":
        return IndexPlan("flat", "Flat", None, {})
    if index_type == "fp16":
        return IndexPlan("fp16", "SQfp16", None, {})
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32,Flat", None, {"efSearch": 128})
    if index_type == "ivf-sq8":
        nlist = ivf_lists(num_rows)
        nprobe = min(nlist, max(IVF_MIN_PROBE, nlist // IVF_PROBE_FRACTION))
        train_size = min(num_rows, IVF_VECTORS_PER_LIST * nlist)
        return IndexPlan("ivf-sq8", f"IVF{nlist},SQ8", train_size, {"nprobe": nprobe})
    # Any other string is taken as a FAISS factory string, for experts.
    return IndexPlan(index_type, index_type, num_rows, {})


def ivf_lists(num_rows: int) -> int:
    """sqrt(N) inverted lists, a power of two, with >= 39 training vectors a list."""
    nlist = 2 ** round(math.log2(max(num_rows, 1)) / 2)
    return int(max(1, min(nlist, 65536, num_rows // 39)))


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
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
