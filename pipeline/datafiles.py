"""The published data files: which rows go in which ``data/train-NNNNN.parquet``, written so
that an update leaves the files of unchanged rows byte-identical.

Reads the build's rows (the index step passes them) and the previous layout: the data files in
BUILD/data from the last index run, else the layout of the dataset ``encode --reuse`` read from
(BUILD/reuse-layout.json, which encode recorded).
Writes BUILD/data/*.parquet (the exact files publish uploads; row order = sorted file names,
which is also the row order of the FAISS indices built over them).

The rule, applied in order:
1. A previous file whose rows are all still in the build, unchanged (same id, path, image
   sha256, captions and embeddings), is kept as it is: same name, same bytes.
2. A previous file that lost rows is rewritten under its own name with the rows it keeps
   (dropped when it keeps none).
3. When more than MAX_SMALL_FILES files are smaller than a quarter of the target size, they are
   compacted: their rows move to new files, in the same order.
4. Rows not in any kept file (new or changed images) go to new files with higher numbers,
   filled up to ``target_bytes`` each (datasets' own ``push_to_hub`` size by default).
Files are written deterministically (fixed writer settings, no timestamps): the same rows give
the same bytes, so publish can compare files by sha256 and upload only what changed. Their image
bytes are stored uncompressed, and ``write_image_ranges`` writes where each image lies
(BUILD/index/image_ranges.npy), so that a reader fetches one image with one range request.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagesearchtr.manifest import DATA_DIR

from . import _io

# Row groups: as big as datasets' own push_to_hub writes them (``config.MAX_ROW_GROUP_SIZE``),
# but at most MAX_GROUP_ROWS rows. ``Searcher.embeddings`` reads one group at a time per
# thread, so the cap bounds that read (about 6 MB), and ``encode --reuse`` reads only the groups
# that hold the rows it wants; the Searcher's start-up reads one range a group of the ids,
# paths and captions, and never a group's images: each image is one range read of its own bytes.
MAX_GROUP_ROWS = 1024
# The image bytes are stored uncompressed (JPEG and PNG do not compress further), so each image
# lies in the file as one run of bytes: ``image_ranges`` finds it, and a reader needs only that.
IMAGE_BYTES_COLUMN = "image.bytes"
SMALL_FRACTION = 4  # a file under target / 4 counts as small
MAX_SMALL_FILES = 8
KEY_COLUMNS = ["image_id", "path", "sha256", "captions", "image_emb", "caption_emb"]
_NAME = re.compile(r"train-(\d+)")


def default_target_bytes() -> int:
    """datasets' push_to_hub shard size (``datasets.config.MAX_SHARD_SIZE``, "500MB")."""
    from datasets import config
    from datasets.utils.py_utils import convert_file_size_to_int

    return convert_file_size_to_int(config.MAX_SHARD_SIZE)


def file_name(number: int) -> str:
    return f"{DATA_DIR}/train-{number:05d}.parquet"


@dataclass(frozen=True)
class PlannedFile:
    path: str  # repo-relative, data/train-NNNNN.parquet
    rows: tuple[int, ...]  # indices into the build's rows, in order
    keep: bool  # an existing file with exactly these rows: leave it untouched


def row_keys(table, embeddings: tuple | None = None) -> list[str]:
    """A hash of everything a published row holds except the image bytes (sha256 stands in).

    ``embeddings``: the table's (image, caption, caption_valid) matrices, where the caller has
    them already (at a million rows each matrix is 3 GB: not worth building twice).
    """
    import pyarrow as pa

    from imagesearchtr.vectors import embedding_matrix

    if embeddings is None:
        dim = table.column("image_emb").type.list_size
        image, _ = embedding_matrix(table.column("image_emb"), dim)
        caption, valid = embedding_matrix(table.column("caption_emb"), dim)
    else:
        image, caption, valid = embeddings
    meta = pa.table({c: table.column(c) for c in ("image_id", "path", "sha256", "captions")})
    keys = []
    for i, row in enumerate(meta.to_pylist()):
        digest = hashlib.sha256(repr(sorted(row.items())).encode())
        digest.update(image[i].tobytes())
        digest.update(caption[i].tobytes() if valid[i] else b"null")
        keys.append(digest.hexdigest())
    return keys


def plan_layout(
    keys: list[str],
    row_bytes: list[int],
    previous: list[tuple[str, list[str]]],
    target_bytes: int,
) -> list[PlannedFile]:
    """Apply the module's rule. ``previous``: (path, row keys) of each file, any order."""
    position = {key: i for i, key in enumerate(keys)}
    placed: set[int] = set()
    files: list[PlannedFile] = []
    numbers = [int(m.group(1)) for path, _ in previous if (m := _NAME.search(path))]
    next_number = max(numbers, default=-1) + 1
    for path, old_keys in sorted(previous):
        rows = [position[k] for k in old_keys if k in position and position[k] not in placed]
        placed.update(rows)
        if rows:
            own = file_name(_number(path))  # older builds named files train-N-of-M
            keep = len(rows) == len(old_keys) and path == own
            files.append(PlannedFile(own, tuple(rows), keep))
    small = [f for f in files if _size(f, row_bytes) < target_bytes // SMALL_FRACTION]
    moved: list[int] = []
    if len(small) > MAX_SMALL_FILES:
        for f in small:
            files.remove(f)
            moved.extend(f.rows)
    new_rows = moved + [i for i in range(len(keys)) if i not in placed]
    chunk: list[int] = []
    chunk_bytes = 0
    for i in new_rows:
        if chunk and chunk_bytes + row_bytes[i] > target_bytes:
            files.append(PlannedFile(file_name(next_number), tuple(chunk), False))
            next_number += 1
            chunk, chunk_bytes = [], 0
        chunk.append(i)
        chunk_bytes += row_bytes[i]
    if chunk:
        files.append(PlannedFile(file_name(next_number), tuple(chunk), False))
    return sorted(files, key=lambda f: f.path)


def _number(path: str) -> int:
    m = _NAME.search(path)
    return int(m.group(1)) if m else 0


def _size(f: PlannedFile, row_bytes: list[int]) -> int:
    return sum(row_bytes[i] for i in f.rows)


def row_sizes(table) -> list[int]:
    """Bytes a row adds to a data file, roughly: its image plus its two embeddings."""
    import pyarrow.compute as pc

    # Per chunk: concatenating the image column would copy every image, and overflows
    # Arrow's 32-bit binary offsets once a build holds more than 2 GiB of images.
    images = pc.struct_field(table.column("image"), "bytes")
    lengths = pc.binary_length(images).fill_null(0).to_numpy(zero_copy_only=False)
    dim = table.column("image_emb").type.list_size
    return (lengths.astype(np.int64) + 8 * dim + 256).tolist()


def read_previous(files: list[tuple[object, str, str]]) -> list[tuple[str, list[str]]]:
    """(path in repo, row keys) of data files: (filesystem or None, file, repo path)."""
    import pyarrow.parquet as pq

    out = []
    for fs, path, repo_path in files:
        handle = fs.open(path, "rb") if fs is not None else path
        parquet = pq.ParquetFile(handle)
        table = parquet.read(columns=KEY_COLUMNS)
        out.append((repo_path, row_keys(table)))
    return out


def write_file(table, target: Path) -> None:
    """Write ``table`` as parquet deterministically (same rows -> same bytes), atomically."""
    import pyarrow.parquet as pq

    with _io.atomic_path(target) as tmp:
        pq.write_table(
            table,
            str(tmp),
            row_group_size=group_rows(table),
            # Snappy for every column but the image bytes (already compressed formats): those
            # stay contiguous in the file, so one image is one range read (image_ranges).
            compression={path: "snappy" for path in _leaf_paths(table.schema)}
            | {IMAGE_BYTES_COLUMN: "none"},
            # Every column is (nearly) unique per row: a dictionary page of random floats
            # or image bytes only adds a layer of indices (embeddings took 1.5x their size).
            use_dictionary=False,
            write_statistics=True,
            version="2.6",
        )


def group_rows(table) -> int:
    """Rows per row group for ``table``: the module's rule (deterministic: the same rows give
    the same number)."""
    from datasets import config
    from datasets.utils.py_utils import convert_file_size_to_int

    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    by_size = convert_file_size_to_int(config.MAX_ROW_GROUP_SIZE) // row_bytes
    return int(max(1, min(MAX_GROUP_ROWS, by_size)))


def _leaf_paths(schema) -> list[str]:
    """Parquet column paths of an Arrow schema's leaves (``image.bytes``,
    ``captions.list.element``, ...), as the writer's per-column options name them."""
    import pyarrow as pa

    def walk(name: str, kind) -> list[str]:
        if pa.types.is_struct(kind):
            return [p for f in kind for p in walk(f"{name}.{f.name}", f.type)]
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
            return walk(f"{name}.list.element", kind.value_type)
        return [name]

    return [p for f in schema for p in walk(f.name, f.type)]


def images_uncompressed(path: Path) -> bool:
    """Whether every row group of a data file stores its image bytes as written here: present,
    uncompressed, no dictionary page (footer only)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    for g in range(meta.num_row_groups):
        chunk = _image_chunk(meta.row_group(g))
        if chunk is None or chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
            return False
    return True


def _image_chunk(group):
    """The ``image.bytes`` column chunk of a row group's metadata, or None."""
    chunks = (group.column(c) for c in range(group.num_columns))
    return next((c for c in chunks if c.path_in_schema == IMAGE_BYTES_COLUMN), None)


def image_ranges(path: Path):
    """(offset, length) of each row's image bytes inside the parquet file ``path``, in row
    order, as an int64 array of shape (rows, 2); a row without image bytes (null or empty) gets
    (-1, 0).

    Returns None when some image is not stored as one run of bytes (a file written before
    images were stored uncompressed): such a file must be written again.
    """
    import mmap

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not images_uncompressed(path):
        return None
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    out = np.tile(np.array([-1, 0], dtype=np.int64), (meta.num_rows, 1))
    row = 0
    # The writer does not say where a value lands, so each image is looked up in the written
    # bytes of its column chunk, in order. What is found is exactly the image's bytes (a
    # duplicate found earlier holds the same bytes), so the ranges are right by construction.
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for g in range(meta.num_row_groups):
            chunk = _image_chunk(meta.row_group(g))  # (present: images_uncompressed checked)
            pos, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
            images = pc.struct_field(parquet.read_row_group(g, columns=["image"])["image"], "bytes")
            for value in images.to_pylist():
                if value:  # (None or b"": no image bytes, (-1, 0))
                    at = data.find(value, pos, end)
                    if at < 0:
                        return None
                    out[row] = (at, len(value))
                    pos = at + len(value)
                row += 1
    return out


def write_image_ranges(
    folder: Path, files: list[tuple[str, str]], target: Path, known: dict | None = None
) -> str:
    """Write the image ranges of the data files ``files`` ((repo-relative path, sha256), in
    row order) to ``target`` as one .npy array; return its sha256 (for the manifest).

    ``known``: {sha256: ranges} of files whose ranges are known already (``recorded_ranges``):
    those are not read again.
    """
    parts = []
    for path, sha256 in files:
        ranges = (known or {}).get(sha256)
        if ranges is None:
            ranges = image_ranges(folder / path)
        if ranges is None:
            raise ValueError(
                f"{folder / path}: its images are not stored uncompressed; re-run "
                "`python -m pipeline index`, which writes it again"
            )
        parts.append(ranges)
    matrix = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    buf = io.BytesIO()
    np.save(buf, matrix, allow_pickle=False)
    _io.write_bytes(target, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def recorded_ranges(build: Path) -> dict:
    """{data file sha256: its image ranges} from the build's last index run (none if it has no
    valid manifest and ranges): a file with the same bytes has the same ranges."""
    from imagesearchtr.manifest import ManifestError, load_manifest

    try:
        loaded = load_manifest(build)
        ranges = loaded.image_ranges(str(build))
    except (ManifestError, OSError):
        return {}
    out, start = {}, 0
    for entry in loaded.manifest.data_files:
        out[entry["sha256"]] = ranges[start : start + entry["num_rows"]]
        start += entry["num_rows"]
    return out
