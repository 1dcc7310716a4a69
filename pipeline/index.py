"""Lay out the published data files and attach FAISS indices over them, with their manifest.

Reads BUILD/build.json and BUILD/shards/*.parquet (from the encode step) and the previous
layout (the data files in BUILD/data from the last run, else BUILD/reuse-layout.json, the one
``encode --reuse`` recorded, so that no network is needed here); writes
BUILD/data/train-NNNNN.parquet (pipeline/datafiles.py decides which rows go where),
BUILD/index/image_emb.faiss, BUILD/index/caption_emb.faiss, BUILD/index/image_ranges.npy (where
each row's image bytes lie in its data file) and BUILD/index/manifest.json. The
indices are built over the rows in data-file order, so row i of the index is row i of the
published dataset.

The indices are built with ``datasets.Dataset.add_faiss_index_from_external_arrays`` (caption
rows that are null, images without captions, become zero vectors: a zero vector scores 0
against every query, and the searcher masks them). Always inner product over L2-normalised
vectors, i.e. cosine similarity; the datasets default would be L2.

``--index-type auto`` chooses by the number of rows N (AUTO_RULE; the measurements behind the
thresholds are in benchmarks/README.md, produced by ``benchmarks/search.py``):
- N <= AUTO_FLAT_MAX_ROWS: ``Flat`` (exact; no training, no tuning);
- N <= AUTO_FP16_MAX_ROWS: ``SQfp16`` (``fp16``): the same full scan over float16 codes, half
  the bytes and time, scores true to about 1e-4;
- above: ``IVF{nlist},SQ8`` (``ivf-sq8``), nlist = sqrt(N) rounded to a power of two,
  nprobe = nlist / IVF_PROBE_FRACTION, trained on IVF_VECTORS_PER_LIST vectors a list drawn
  from all rows (``faiss_index``; not the first rows, a few folders' photos): 8-bit
  codes (768 bytes a 768-d vector, a quarter of Flat: two indices of 1M rows take about 1.6 GB
  of RAM, well inside a free CPU Space's 16 GB) of which a query scans an eighth. The Searcher
  scores its candidates with the indices' own codes (within about 0.002 of the cosines), so it
  reads no embedding column. A sixteenth (the old setting) missed the 0.95 recall@10 target on
  clustered data; an eighth meets it (figures in benchmarks/README.md).
  An inverted file needs clusters in the data (real embeddings have them; i.i.d. random vectors
  do not): for exact results at any size choose ``--index-type flat`` (``fp16`` is off by
  about 1e-4).
- ``HNSW32,Flat`` (``hnsw``) is available on request: fast queries, but larger than Flat and
  much slower to build.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagesearchtr.manifest import BUILD_FILE

from . import _io
from .inputs import CAPTIONS_FILE, EmptyBuildError, first_photo

# Build-folder names (pipeline/encode.py writes them and imports them from here: encode imports
# this module at load, this one imports encode only inside write_data_files). BUILD_FILE's home
# is the manifest module, whose "no manifest" message tells a build from photos by it.
SHARDS_DIR = "shards"
SKIPPED_FILE = "skipped.jsonl"
# What an encode run did; removed as a run starts and written at its end, so a build without it
# is one whose last encode did not finish (its skipped.jsonl may be the run before's).
SUMMARY_FILE = "summary.json"
REUSE_LAYOUT_FILE = "reuse-layout.json"  # the data files of encode --reuse: path, row keys
REUSE_MANIFEST_FILE = "reuse-manifest.json"  # the manifest of the dataset encode --reuse read
# FAISS scans a Flat index on one thread for a single query, so past a few thousand rows the
# half-size fp16 codes answer sooner, with scores true to float16 precision.
AUTO_FLAT_MAX_ROWS = 10_000
AUTO_FP16_MAX_ROWS = 150_000
IVF_VECTORS_PER_LIST = 64  # training vectors per list (faiss warns below 39)
IVF_PROBE_FRACTION = 8  # nprobe = nlist / 8: recall@10 >= 0.95 on clustered data
IVF_MIN_PROBE = 16
INDEX_TYPES = ("auto", "flat", "fp16", "hnsw", "ivf-sq8")
# BUILD/indexed.json: the shards the index was built from (publish refuses a stale index).
INDEXED_FILE = "indexed.json"
ARROW_CACHE_DIR = ".index-arrow"  # datasets' Arrow copy of the shards, during `index` only
AUTO_RULE = (
    f"flat up to {AUTO_FLAT_MAX_ROWS:,} rows, fp16 up to {AUTO_FP16_MAX_ROWS:,}, ivf-sq8 above "
    f"(8-bit codes, 1/{IVF_PROBE_FRACTION} of the lists scanned)"
)


@dataclass(frozen=True)
class IndexConfig:
    build: Path
    index_type: str = "auto"
    target_bytes: int | None = None  # data file size; None: datasets' push_to_hub size

    def __post_init__(self):
        # Below 1 every row would get a data file of its own (0 used to mean the default).
        if self.target_bytes is not None and self.target_bytes < 1:
            raise ValueError(f"target_bytes={self.target_bytes}: give a size of at least 1 byte")


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


def _check_factory(index_type: str, dim: int) -> None:
    """A ValueError naming --index-type when it is neither a name above nor a factory string
    FAISS can parse for vectors of ``dim``."""
    import faiss

    if index_type in INDEX_TYPES:
        return
    try:
        faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:  # FAISS's text starts with its C++ function and source line
        said = re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", str(err).strip())
        raise ValueError(
            f"--index-type {index_type!r} is neither one of {', '.join(INDEX_TYPES)} nor a FAISS "
            f"factory string FAISS can build for {dim}-d vectors ({said})"
        ) from None


def faiss_index(plan: IndexPlan, vectors: np.ndarray):
    """The empty inner-product FAISS index of ``plan`` for ``vectors``, trained where its type
    needs it on at most ``plan.train_size`` of them, drawn at random from all rows.

    (datasets' own ``train_size`` takes the first rows: in a build's row order, sorted paths,
    those are the photos of the first folders, and IVF lists trained on a few trips fit the
    rest badly: benchmarks/README.md has recall@10 for rows stored cluster by cluster.)
    """
    import faiss

    index = faiss.index_factory(vectors.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        size = len(vectors) if plan.train_size is None else min(plan.train_size, len(vectors))
        # Seeded: the same rows give the same index bytes (an unchanged build publishes nothing).
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), size, replace=False))
        index.train(np.ascontiguousarray(vectors[rows]))
    return index


def ivf_lists(num_rows: int) -> int:
    """sqrt(N) inverted lists, a power of two, with >= 39 training vectors a list."""
    nlist = 2 ** round(math.log2(max(num_rows, 1)) / 2)
    return int(max(1, min(nlist, 65536, num_rows // 39)))


def build_shards(build: Path) -> list[Path]:
    """The shard files of a complete, non-empty build, in row order; else a clear error."""
    build = Path(build)
    info = read_build_info(build)
    shards_dir = build / SHARDS_DIR
    if "shards" in info:
        shards = [shards_dir / name for name in info["shards"]]
    else:  # builds made before build.json listed its shards
        shards = sorted(shards_dir.glob("shard-*.parquet"))
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise ValueError(
            f"{build}: {len(shards) - len(missing)} of {len(shards)} shards are encoded; re-run "
            "the same `python -m pipeline encode` command to finish them"
        )
    if not (build / SUMMARY_FILE).is_file():
        raise ValueError(
            f"{build}: its last encode did not finish (no {SUMMARY_FILE}); re-run the same "
            "`python -m pipeline encode` command to finish it"
        )
    import pyarrow.parquet as pq

    if sum(pq.ParquetFile(p).metadata.num_rows for p in shards) == 0:
        raise EmptyBuildError(
            f"{build}: the build holds no image (every input was skipped; reasons in "
            f"{build / SKIPPED_FILE}); fix the input and run encode again"
        )
    return shards


def load_build_dataset(build: Path, cache_dir: Path):
    """The encoded rows as one Dataset, shards in plan order, memory-mapped from the Arrow copy
    ``datasets`` writes of them under ``cache_dir``."""
    from datasets import Dataset

    shards = build_shards(build)
    files = [str(p) for p in shards]
    return Dataset.from_parquet(files, split="train", cache_dir=str(cache_dir)), shards


def run_index(config: IndexConfig):
    """Write the data files, both indices and the manifest; return the Manifest.

    ``datasets`` reads the shards through an Arrow copy of them (as big as the build: 7 GB at a
    million rows of small images); it is kept in BUILD/ARROW_CACHE_DIR for this run only, not
    in the user's datasets cache, where every new build would leave another.
    """
    cache = Path(config.build) / ARROW_CACHE_DIR
    with _io.build_lock(config.build, "index"):
        try:
            return _run_index(config, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)


def _run_index(config: IndexConfig, cache: Path):
    from imagesearchtr.manifest import (
        IMAGE_RANGES_FILE,
        INDEX_DIR,
        MANIFEST_FILE,
        IndexInfo,
        Manifest,
        index_file,
        public_source,
        sha256_file,
    )
    from imagesearchtr.vectors import data_hash, embedding_matrix

    from . import datafiles

    build = Path(config.build)
    build_info = read_build_info(build)
    dim = int(build_info["dim"])
    _check_factory(config.index_type, dim)  # before the data is read and written
    ds, shards = load_build_dataset(build, cache)
    table = ds.data.table
    image_emb, image_valid = embedding_matrix(table.column("image_emb"), dim)
    caption_emb, caption_valid = embedding_matrix(table.column("caption_emb"), dim)
    if not image_valid.all():
        raise ValueError(f"{build}: {int((~image_valid).sum())} rows lack an image embedding")
    known_ranges = datafiles.recorded_ranges(build)  # before this run replaces the manifest
    layout = write_data_files(
        build, table, build_info, config.target_bytes, (image_emb, caption_emb, caption_valid)
    )
    order = np.fromiter((i for f in layout for i in f.rows), dtype=np.int64, count=len(ds))
    # Published row order: the indices' row i is the data files' row i. One matrix at a time,
    # so that at most one extra copy is alive.
    image_emb = image_emb[order]
    caption_emb = caption_emb[order]
    caption_valid = caption_valid[order]
    image_ids = table.column("image_id").take(order).to_pylist()
    plan = choose_index(len(ds), config.index_type)

    index_dir = build / INDEX_DIR
    index_dir.mkdir(exist_ok=True)
    # Temporary files of a run killed mid-write (each as large as what it was writing).
    _io.remove_orphans(index_dir)
    _io.remove_orphans(build, INDEXED_FILE)
    files = [
        {
            "path": f.path,
            "num_rows": len(f.rows),
            "sha256": sha256_file(build / f.path),
            "size": (build / f.path).stat().st_size,  # a cheap check of a local folder's file
        }
        for f in layout
    ]
    ranges_sha256 = datafiles.write_image_ranges(
        build, [(f["path"], f["sha256"]) for f in files], build / IMAGE_RANGES_FILE, known_ranges
    )
    infos = []
    for column, vectors in (("image_emb", image_emb), ("caption_emb", caption_emb)):
        # Names the progress bar datasets shows next, which has no label of its own.
        print(f"{column}: {plan.factory} over {len(ds)} rows", file=sys.stderr, flush=True)
        try:
            ds.add_faiss_index_from_external_arrays(
                external_arrays=vectors, index_name=column, custom_index=faiss_index(plan, vectors)
            )
        except RuntimeError as err:  # FAISS's C++ errors: too few rows to train, and the like
            reason = " ".join(str(err).split())
            raise ValueError(
                f"--index-type {config.index_type}: FAISS cannot build {plan.factory} over "
                f"{len(ds)} rows ({reason}); choose another type (auto fits the row count)"
            ) from None
        with _io.atomic_path(build / index_file(column)) as tmp:
            ds.save_faiss_index(column, str(tmp))
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
        component_revisions=build_info.get("component_revisions") or {},
        dim=dim,
        num_rows=len(ds),
        data_hash=data_hash(image_ids, image_emb, caption_emb, caption_valid),
        indices=tuple(infos),
        num_captions=sum(len(c) for c in table.column("captions").to_pylist()),
        num_skipped=_count_lines(build / SKIPPED_FILE),
        versions=_versions(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source=public_source(build_info.get("source", "")),
        data_files=files,
        image_ranges_sha256=ranges_sha256,
        index_sha256={i.file: sha256_file(build / i.file) for i in infos},
    )
    manifest = _keep_creation_time(manifest, index_dir / MANIFEST_FILE, build / REUSE_MANIFEST_FILE)
    _io.write_text(index_dir / MANIFEST_FILE, manifest.to_json())
    _io.write_text(build / INDEXED_FILE, json.dumps(indexed_state(build, shards)) + "\n")
    return manifest


def indexed_state(build: Path, shards: list[Path]) -> dict:
    """What an index run was made from (``INDEXED_FILE``): the shards, and the skipped rows
    whose count the manifest records and whose reasons the card lists; publish refuses a build
    whose state differs, as the index would not describe it."""
    from imagesearchtr.manifest import sha256_file

    skipped = build / SKIPPED_FILE
    return {
        "shards": [p.name for p in shards],
        "skipped_sha256": sha256_file(skipped) if skipped.is_file() else None,
    }


def _keep_creation_time(manifest, *earlier: Path):
    """``manifest``, with the creation time of an ``earlier`` one (the build's own, then the
    published one ``encode --reuse`` seeded it from) when nothing else differs: an index run
    over an unchanged build, or over a build re-seeded from unchanged photos, then writes the
    manifest already published, byte for byte, so that the next publish (and `make publish`,
    which runs every step) has nothing to commit."""
    import dataclasses

    from imagesearchtr.manifest import Manifest

    for path in earlier:
        try:
            old = Manifest.load(path)
        except (OSError, ValueError, TypeError):  # none, or unreadable: not this one
            continue
        if dataclasses.replace(old, created_at=manifest.created_at) == manifest:
            return old
    return manifest


def write_data_files(
    build: Path, table, build_info: dict, target_bytes: int | None, embeddings: tuple | None = None
):
    """BUILD/data/*.parquet for this build, keeping files whose rows did not change
    (``embeddings``: as ``datafiles.row_keys`` takes them)."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    from . import datafiles
    from .encode import features

    data_dir = build / datafiles.DATA_DIR
    data_dir.mkdir(exist_ok=True)
    _io.remove_orphans(data_dir)
    local = sorted(data_dir.glob("*.parquet"))
    if local:
        previous = datafiles.read_previous(
            [(None, str(p), f"{datafiles.DATA_DIR}/{p.name}") for p in local]
        )
    elif (build / REUSE_LAYOUT_FILE).is_file():  # seeded by encode --reuse: its layout
        # Builds seeded before this recorded each file's size as a third, unused entry.
        layout = json.loads((build / REUSE_LAYOUT_FILE).read_text())
        previous = [(entry[0], entry[1]) for entry in layout]
    else:
        previous = []
    layout = datafiles.plan_layout(
        datafiles.row_keys(table, embeddings),
        datafiles.row_sizes(table),
        previous,
        target_bytes or datafiles.default_target_bytes(),
    )
    # Fixed schema metadata (the datasets features), so equal rows give equal bytes.
    meta = {
        "huggingface": json.dumps(
            {"info": {"features": features(int(build_info["dim"])).to_dict()}}
        )
    }
    for f in tqdm(layout, desc="data files", unit="file", disable=len(layout) < 20):
        target = build / f.path
        # (A file written before images were stored uncompressed is written again.)
        if f.keep and target.is_file() and datafiles.images_uncompressed(target):
            continue
        # Slices of consecutive rows, not table.take: take concatenates the whole image column
        # first, which overflows Arrow's 32-bit binary offsets past 2 GiB of images.
        rows = pa.concat_tables(_runs(table, f.rows)).combine_chunks()
        datafiles.write_file(rows.replace_schema_metadata(meta), target)
    wanted = {Path(f.path).name for f in layout}
    for path in data_dir.glob("*.parquet"):
        if path.name not in wanted:
            path.unlink()
    return layout


def _runs(table, rows: list[int]) -> list:
    """``table``'s rows in the given order, as slices of consecutive rows."""
    pieces, start, length = [], None, 0
    for row in rows:
        if start is not None and row == start + length:
            length += 1
            continue
        if start is not None:
            pieces.append(table.slice(start, length))
        start, length = row, 1
    if start is not None:
        pieces.append(table.slice(start, length))
    return pieces or [table.slice(0, 0)]


def read_build_info(build: Path) -> dict:
    """BUILD/build.json, the plan ``encode`` records; a missing or damaged one is named."""
    path = Path(build) / BUILD_FILE
    if not path.is_file():
        if (Path(build) / CAPTIONS_FILE).is_file() or first_photo(Path(build)) is not None:
            raise FileNotFoundError(
                f"{build}: a photos folder, not a build folder (no {BUILD_FILE}); encode it "
                f"into a folder of its own first: `python -m pipeline encode --data {build} "
                "--out BUILD`, then give BUILD"
            )
        raise FileNotFoundError(
            f"{build}: not a build folder (no {BUILD_FILE}); run `python -m pipeline encode "
            f"--out {build}` first"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"a JSON {type(info).__name__}, not an object")
    except (UnicodeDecodeError, ValueError) as err:  # (json.JSONDecodeError too)
        raise ValueError(
            f"{path} is damaged ({err}); pass --overwrite to `python -m pipeline encode "
            f"--out {build}` to start the build again"
        ) from None
    return info


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
