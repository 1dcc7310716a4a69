"""The published rows, read lazily: ids, paths, captions at start, each shown image on demand.

A published repo keeps every row in ``data/*.parquet`` (row order = the manifest's
``data_files`` order, else sorted file names), with the image bytes stored uncompressed, and
``index/image_ranges.npy``: where each row's image bytes lie in its file. This module never
downloads a data file whole:

- ``load_columns`` reads only the chunks of the given columns of every data file: for the
  search, ``ROW_COLUMNS`` (ids, paths and captions; the vectors come from the indices). pyarrow
  asks for one byte range per row group where those chunks lie next to each other, plus the
  footer. The result is written once per data file and column set as
  an Arrow file under ``CACHE_DIR/rows/`` (keyed by the file's sha256 from the manifest, or by
  its path, size and time for a local folder without one) and memory-mapped from there, so a
  restart reads nothing again and RSS stays small; the files no load used for ``ROWS_KEEP_S``
  are deleted.
- ``ImageStore.fetch`` reads each image of one result page with one range read of exactly its
  bytes (from the image ranges), concurrently, at the pinned commit, with retries and backoff
  (or the Hub's ``Retry-After``, when it ends within the page's time), waiting at most
  ``PAGE_FETCH_S`` for the page.
  Bytes read from the Hub are kept in a bounded on-disk cache (``image_cache.ImageCache``,
  ``CACHE_DIR/images.sqlite``); a local folder's are read in place each time. Each
  image is decoded upright and on white as the encoder saw it (``images.to_rgb``), within a
  size when one is asked for. An image that cannot be fetched or decoded becomes a grey
  placeholder with a message; it never fails the search.

Hub files are read at the manifest's commit by ranged GETs of its resolve URLs (``Source``), so
every read is of the same commit as the manifest and the indices; the Hub redirects each to a
signed storage URL, which is remembered per file, so later reads of that file are one round
trip. A local folder's data files are opened once, when they are checked at load, and read
through those handles, so a publish that replaces the folder meanwhile does not change what a
running search reads. Reads: the data files' footers, the chunks of
the columns asked for and the shown images, and one listing of ``data/``. Writes: the row cache
and, for a Hub repo, the image cache; deletes both caches' files of older versions.

Why not a separate file of ids, paths and captions next to the indices: it would need its own upload
and check; range reads of the published files cost one request per row group, and an update
that keeps a data file byte-identical keeps its cache entry too (benchmarks/README.md has
figures).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import hashlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from .image_cache import ImageCache, remove_old_files
from .images import MAX_PIXELS, to_rgb
from .manifest import REINDEX, describe_error

# What a result shows besides its image, and ``path``, whose chunk lies between theirs in the
# files: with it the three are one range read a row group; without it, pyarrow makes two
# wherever the paths' chunk is over its 8 KiB gap limit (as real, unique paths make it).
ROW_COLUMNS = ("image_id", "path", "captions")
IMAGE_COLUMN = "image"
DEFAULT_IMAGE_CACHE_BYTES = 1 << 30  # 1 GiB of image bytes on disk
# The largest image a result fetches (a 64-megapixel JPEG, the most pixels the pipeline
# accepts, is a few tens of MB): a hostile ranges file must not make one page read gigabytes.
MAX_IMAGE_BYTES = 100 << 20
# Concurrent range reads for one result page (and for the start-up reads): at least the app's
# default page of 10, so that on a real network a page costs one round trip, not two.
FETCH_WORKERS = 16
RETRIES = 3  # attempts per range read; waits BACKOFF_S, 2 * BACKOFF_S, ... between them
BACKOFF_S = 0.25
# The longest a result page waits for its images: a storage host that hangs instead of failing
# would otherwise hold every search for its reads' timeouts and retries (40 s and more). What
# is not there by then is a placeholder; a read that still succeeds later (a retry within
# HF_HUB_DOWNLOAD_TIMEOUT) is cached for the next page.
PAGE_FETCH_S = 10.0
# Cached rows of a data file no load used for this long go (remove_unused_rows): each update of
# a dataset adds the rows of its new data files, and a cache folder that persists (a storage
# volume, a local run) would otherwise keep every version's.
ROWS_KEEP_S = 14 * 24 * 3600
PLACEHOLDER_SIZE = (256, 256)
PLACEHOLDER_COLOUR = (200, 200, 200)


class RowsError(RuntimeError):
    """The published data files cannot be read; the message names the file and the fix."""


class ShortReadError(OSError):
    """Fewer bytes came than were asked for: a cut transfer, or a file cut short."""


def default_cache_dir() -> Path:
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "imagesearchtr"


@dataclass(frozen=True)
class DataFile:
    path: str  # repo-relative, data/train-NNNNN.parquet
    num_rows: int | None  # from the manifest; None: read from the footer
    key: str  # names this file's content in the caches


class Source:
    """Reads a published repo's files: a local folder, or one Hub commit by ranged GETs."""

    def __init__(self, location: str, root: Path | None, revision: str | None):
        self.location, self.root, self.revision = location, root, revision
        self._headers: dict[str, str] = {}
        self._sizes: dict[str, int] = {}  # repo path -> bytes, from the Hub's listing
        self._storage_urls: dict[str, str] = {}  # repo path -> its signed storage URL
        self._pinned: dict[str, io.FileIO] = {}  # repo path -> the local file opened at load
        # Local reads and close() take turns: close() cannot free a descriptor a read is using
        # (its number could be another file's by then), and no read follows it.
        self._lock = threading.Lock()
        self.closed = False
        if revision is not None:
            from huggingface_hub.utils import build_hf_headers

            # Built once: building them (token lookup, user agent) costs about as much as a
            # small range read on a fast link, and a result page makes one read per image.
            self._headers = build_hf_headers()

    @property
    def remote(self) -> bool:
        return self.revision is not None

    def pin(self, path: str) -> int:
        """Open a local data file now and read it through that handle from then on; its size.

        ``publish --to`` replaces a folder by swapping in a new tree: a Searcher that opened
        the files of the one it loaded keeps reading those, whose rows its indices and image
        ranges describe, not the new files under the same names (on Windows, where an open
        file cannot be renamed away, the swap fails instead). One handle a data file, held
        until ``close``.
        """
        try:
            handle = open(self.root / path, "rb", buffering=0)  # noqa: SIM115 - held for reads
        except OSError as err:
            if err.errno != errno.EMFILE:
                raise
            raise RowsError(
                f"{self.location}: cannot keep its {path} open: this process may open no more "
                "files; raise the limit (ulimit -n), or make fewer, larger data files (`python "
                "-m pipeline index --max-data-file-size SIZE`) and publish again"
            ) from None
        with self._lock:  # a close() that came first would never close this handle
            if self.closed:
                handle.close()
            self.check_open()
            self._pinned[path] = handle
            self._sizes[path] = os.fstat(handle.fileno()).st_size
            return self._sizes[path]

    def close(self) -> None:
        """Close the local data files held open since load (no reads after this)."""
        with self._lock:
            self.closed = True
            for handle in self._pinned.values():
                handle.close()
            self._pinned.clear()

    def check_open(self) -> None:
        """Raise ValueError after ``close``."""
        if self.closed:  # not the file now under that name: a publish may have replaced it
            raise ValueError(f"{self.location}: this Searcher was closed; load it again")

    def open(self, path: str):
        """A read-only file object: each read pyarrow asks for is one ranged GET on the Hub
        (or one read of the local file pinned at load)."""
        self.check_open()
        if self.remote:
            if path not in self._sizes:
                self.hub_files(str(PurePosixPath(path).parent))
            if path not in self._sizes:
                raise FileNotFoundError(f"{path} is not in {self.location}@{self.revision}")
            return _RangeFile(self, path, self._sizes[path])
        if path in self._pinned:
            return _RangeFile(self, path, self._sizes[path])
        return open(self.root / path, "rb")

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of a file: one ranged GET of the pinned commit on the Hub."""
        if stop <= start:
            return b""
        if not self.remote:
            with self._lock:
                self.check_open()
                pinned = self._pinned.get(path)
                with open(self.root / path, "rb") if pinned is None else nullcontext(pinned) as f:
                    f.seek(start)
                    data = f.read(stop - start)
        else:
            self.check_open()
            answer = self._get_range(path, f"bytes={start}-{stop - 1}")
            if answer.status_code == 404:
                raise FileNotFoundError(f"{path} is not in {self.location}@{self.revision}")
            answer.raise_for_status()
            data = answer.content
            if answer.status_code != 206:  # a server that ignored Range sent the whole file
                data = data[start:stop]
        if len(data) != stop - start:
            raise ShortReadError(
                f"{path}: asked for {stop - start} bytes at {start}, got {len(data)}"
            )
        return data

    def _get_range(self, path: str, byte_range: str):
        """One ranged GET of ``path`` at the pinned commit; the Hub's answer, redirects followed.

        The Hub answers a read of an LFS file with a redirect to a signed URL on its storage
        host. That URL names the file's content, so it is remembered per file and later reads
        go to it directly: one round trip per read instead of two. A signed URL expires; when
        the storage host refuses it, the Hub is asked again.
        """
        from huggingface_hub import constants, get_session, hf_hub_url

        session, headers = get_session(), {"Range": byte_range}
        timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT  # the session itself waits forever
        stored = self._storage_urls.get(path)
        if stored is not None:
            try:
                # No Authorization header: the signature is the credential, and a storage host
                # refuses a request that carries both.
                answer = session.get(stored, headers=headers, timeout=timeout)
                if answer.status_code in (200, 206):
                    return answer
            except Exception:  # noqa: BLE001 - a dead host or connection: ask the Hub below
                pass
            self._storage_urls.pop(path, None)  # expired, refused or unreachable: resolve again
        url = hf_hub_url(self.location, path, repo_type="dataset", revision=self.revision)
        # httpx drops the token on a redirect to another origin, as the Hub's own client relies on.
        answer = session.get(
            url, headers={**self._headers, **headers}, follow_redirects=True, timeout=timeout
        )
        final = str(answer.url)
        if answer.is_success and _origin(final) != _origin(url):
            self._storage_urls[path] = final
        return answer

    def hub_files(self, folder: str) -> dict[str, str | None]:
        """{repo path: the sha256 the Hub records for it} of the files in a folder of the commit
        (one listing; None for a file kept in git rather than LFS). Notes their sizes too."""
        from huggingface_hub import HfApi, RepoFile
        from huggingface_hub.errors import EntryNotFoundError

        out = {}
        try:
            entries = HfApi().list_repo_tree(
                self.location, folder, revision=self.revision, repo_type="dataset"
            )
            for entry in entries:
                if isinstance(entry, RepoFile):
                    self._sizes[entry.path] = entry.size
                    out[entry.path] = entry.lfs.sha256 if entry.lfs is not None else None
        except EntryNotFoundError:  # (RemoteEntryNotFoundError is one) no such folder
            pass
        return out

    def list_data_files(self) -> list[str]:
        """data/*.parquet in name order (for manifests written before ``data_files``)."""
        if self.remote:
            return sorted(p for p in self.hub_files("data") if p.endswith(".parquet"))
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob("data/*.parquet"))


class _RangeFile(io.RawIOBase):
    """A data file for pyarrow: seek anywhere, each read one ``Source.read_range`` (a ranged
    GET of the pinned commit, or a read of the local file pinned at load)."""

    def __init__(self, source: Source, path: str, size: int):
        super().__init__()
        self.source, self.path, self.size, self.position = source, path, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        bases = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}
        if whence not in bases or bases[whence] + offset < 0:
            raise ValueError(f"cannot seek to {offset} from {whence} in {self.path}")
        self.position = bases[whence] + offset
        return self.position

    def readinto(self, buffer) -> int:
        stop = min(self.position + len(buffer), self.size)
        data = self.source.read_range(self.path, self.position, stop)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def readall(self) -> bytes:  # read() and read(-1): the rest in one GET, not in chunks
        data = self.source.read_range(self.path, self.position, self.size)
        self.position += len(data)
        return data


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def data_files(source: Source, manifest) -> list[DataFile]:
    """The data files in row order, each with a cache key naming its content."""
    if manifest.data_files:
        files = [
            DataFile(entry["path"], int(entry["num_rows"]), f"sha256-{entry['sha256']}")
            for entry in manifest.data_files
        ]
        if source.remote:
            _check_hub_files(source, manifest.data_files)
        else:  # the rows may be cached by sha256: still refuse a folder that lost its files
            for entry in manifest.data_files:  # or holds other ones (by size: no file is read)
                path = source.root / entry["path"]
                if not path.is_file():
                    raise RowsError(
                        f"{source.location}: the manifest lists {entry['path']}, which the "
                        "folder does not have (a data file is missing); publish the build again"
                    )
                size = source.pin(entry["path"])  # the file checked is the file read
                if entry.get("size", size) != size:
                    raise RowsError(
                        f"{source.location}: {entry['path']} has {size} bytes, "
                        f"the manifest says {entry['size']}: it was cut short or replaced; "
                        "publish the build again"
                    )
        return files
    files = []
    for path in source.list_data_files():
        if source.remote:
            raw = f"{source.location}@{source.revision}/{path}"
        else:
            source.pin(path)
            stat = (source.root / path).stat()
            raw = f"{(source.root / path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        files.append(DataFile(path, None, "path-" + hashlib.sha256(raw.encode()).hexdigest()))
    if not files:
        raise RowsError(f"{source.location} has no data/*.parquet files")
    return files


def _check_hub_files(source: Source, entries: list[dict]) -> None:
    """The commit holds exactly the data files the manifest was built over (by sha256).

    The Hub records each LFS file's sha256, so this costs one listing per folder and no data
    bytes; it also makes the manifest's sha256 a safe key for the caches.
    """
    recorded: dict[str, str | None] = {}
    for folder in sorted({str(PurePosixPath(e["path"]).parent) for e in entries}):
        recorded.update(source.hub_files(folder))
    for entry in entries:
        if entry["path"] not in recorded:
            raise RowsError(
                f"{source.location}@{source.revision}: the manifest lists {entry['path']}, "
                "which this commit does not have; publish the build again"
            )
        sha = recorded[entry["path"]]
        if sha is not None and sha != entry["sha256"]:
            raise RowsError(
                f"{source.location}@{source.revision}: {entry['path']} is not the file the "
                f"index was built over (its sha256 differs from the manifest's); {REINDEX}"
            )


def load_columns(source: Source, files: list[DataFile], cache_dir: Path, columns):
    """One memory-mapped Dataset of ``columns`` over all files, in row order.

    Returns (dataset, per-file row counts). Files already in the cache are not read again.
    """
    import pyarrow as pa
    from datasets import Dataset, concatenate_datasets

    rows_dir = Path(cache_dir) / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    columns = list(columns)

    def one(f: DataFile) -> Path:
        # Versions before the column set was in the name kept the embeddings too, under the
        # bare key (6 GB at a million rows): nothing reads that file any more.
        (rows_dir / f"{f.key}.arrow").unlink(missing_ok=True)
        target = rows_dir / f"{f.key}.{'+'.join(columns)}.arrow"
        if target.is_file():
            with contextlib.suppress(OSError):  # used now: kept by remove_unused_rows
                os.utime(target)
            return target
        write = functools.partial(_write_columns, source, f, columns, target)
        try:  # a file on this disk reads the same each time: retries for the Hub's only
            _with_retries(write) if source.remote else write()
        except (OSError, pa.ArrowException) as err:
            # pyarrow's own for bytes it cannot decode: an ArrowException, or a bare OSError
            # without errno (not the system's, such as a full disk; not a transfer's, such as
            # the Hub's HTTP errors or a short read, which are subclasses).
            if isinstance(err, pa.ArrowException) or (type(err) is OSError and not err.errno):
                raise RowsError(
                    f"{source.location}: {f.path} cannot be read ({describe_error(err)}); it "
                    "is damaged: build and publish it again"
                ) from None
            raise
        return target

    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        paths = list(pool.map(one, files))
    remove_unused_rows(rows_dir)
    parts = [Dataset.from_file(str(p)) for p in paths]
    counts = [len(p) for p in parts]
    for f, n in zip(files, counts, strict=True):
        if f.num_rows is not None and f.num_rows != n:
            raise RowsError(
                f"{source.location}: {f.path} holds {n} rows but the manifest says "
                f"{f.num_rows}; rows and indices come from different builds"
            )
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return dataset, counts


def remove_unused_rows(rows_dir: Path) -> None:
    """Delete the cached rows no load has used for ROWS_KEEP_S: those of data files that
    updates replaced. By age, not by what this load uses: other repos, and other revisions of
    this one that another app may be loading, share the folder."""
    old = time.time() - ROWS_KEEP_S
    # (and the temporary files of writes killed that long ago)
    for path in [*rows_dir.glob("*.arrow"), *rows_dir.glob("*.arrow.*.tmp")]:
        with contextlib.suppress(OSError):  # gone already, or not ours to delete
            if path.stat().st_mtime < old:
                path.unlink()


def _write_columns(source: Source, f: DataFile, columns: list[str], target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with source.open(f.path) as handle:
        meta = read_footer(handle, f"{source.location}: {f.path}")
        parquet = pq.ParquetFile(handle, metadata=meta, pre_buffer=True)
        names = parquet.schema_arrow.names
        missing = [c for c in [*columns, IMAGE_COLUMN] if c not in names]
        if missing:
            raise RowsError(
                f"{source.location}: {f.path} has no {', '.join(missing)} column; publish a "
                "build made by `python -m pipeline encode` and `index`"
            )
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        schema = parquet.schema_arrow.remove_metadata()
        schema = pa.schema([schema.field(c) for c in columns])
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group, columns=columns)
                    writer.write_table(table.replace_schema_metadata(None).cast(schema))
            os.replace(tmp, target)  # atomic: a crash leaves no half file under the key
        finally:
            tmp.unlink(missing_ok=True)


def read_footer(handle, where: str):
    """A parquet file's metadata from exactly its footer: two small reads at the end.

    (pyarrow's own open reads the last 64 KiB, which in a small file holds image bytes.)
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    not_parquet = RowsError(f"{where} is not a parquet file; publish the build again")
    size = handle.seek(0, os.SEEK_END)
    if size < 12:
        raise not_parquet
    handle.seek(size - 8)
    tail = handle.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or not 0 < length <= size - 12:
        raise not_parquet
    handle.seek(size - 8 - length)
    footer = handle.read(length)
    try:
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
    except (pa.ArrowException, OSError):
        raise not_parquet from None


def _with_retries(action, deadline: float | None = None):
    """Run ``action``; retry transient failures with backoff. Missing files fail at once.

    Within a page (``deadline``, ``time.monotonic()``), a 429 or 503 answer's ``Retry-After``
    is waited instead of the backoff when longer (the reads are plain GETs of huggingface_hub's
    session, whose own retry helper, which reads it, is not on this path), unless that wait
    would end past ``deadline``: then the failure is raised at once, not retried sooner than
    the Hub asked. The reads at start (no deadline) keep the backoff: a load that fails is
    tried again by its caller (the Space's start-up tries).
    """
    for attempt in range(RETRIES - 1):
        try:
            return action()
        except (FileNotFoundError, RowsError):
            raise
        except Exception as err:
            wait = BACKOFF_S * 2**attempt
            asked = _retry_after(err) if deadline is not None else None
            if asked is not None and asked > wait:
                if time.monotonic() + asked > deadline:
                    raise
                wait = asked
            time.sleep(wait)
    return action()


def _retry_after(err: BaseException) -> int | None:
    """The seconds a 429 or 503 answer's ``Retry-After`` asks for (delay-seconds; an HTTP date
    is not read, as huggingface_hub does not read it), or None."""
    response = getattr(err, "response", None)
    if getattr(response, "status_code", None) not in (429, 503):
        return None
    value = (response.headers.get("Retry-After") or "").strip()
    return int(value) if value.isdecimal() else None


@dataclass
class Fetched:
    image: Image.Image
    error: str | None  # None: the real image; else why the placeholder stands in


def placeholder() -> Image.Image:
    return Image.new("RGB", PLACEHOLDER_SIZE, PLACEHOLDER_COLOUR)


class ImageStore:
    """Fetches the images of given rows: one range read of each image's own bytes."""

    def __init__(
        self,
        source: Source,
        files: list[DataFile],
        counts: list[int],
        ranges,
        cache_dir: Path,
        max_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
        max_side: int | None = None,
    ):
        """``ranges``: (offset, length) of each row's image in its data file (the published
        ``index/image_ranges.npy``); ``max_side``: scale each image down to fit that many
        pixels a side (None: as stored)."""
        self.source, self.files, self.ranges = source, files, ranges
        self.max_side = max_side
        self.starts = [0]
        for n in counts:
            self.starts.append(self.starts[-1] + n)
        # A local folder's image is one read of a file on this disk already: no cache.
        self.cache = ImageCache(cache_dir, max_cache_bytes if source.remote else 0)
        remove_old_files(cache_dir)
        # One pool for the store's life: starting threads anew for every page costs more than
        # a small range read.
        self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="image-fetch")

    def close(self) -> None:
        """Stop the fetch threads (reads not started are dropped; running ones end first),
        close the image cache and the source's open files."""
        self._pool.shutdown(cancel_futures=True)
        self.cache.close()
        self.source.close()

    def locate(self, row: int) -> tuple[int, int]:
        """(file number, row within that file)."""
        number = bisect.bisect_right(self.starts, row) - 1
        return number, row - self.starts[number]

    def fetch(self, rows: list[int]) -> list[Fetched]:
        """The images of ``rows`` (RGB), in that order; placeholders for failures."""
        self.source.check_open()
        found: dict[int, bytes | Exception | None] = {
            row: self.cache.get(self._cache_name(row)) for row in rows
        }
        deadline = time.monotonic() + PAGE_FETCH_S
        reads = {
            r: self._pool.submit(self._read, r, deadline)
            for r, data in found.items()
            if data is None
        }
        done, _ = wait(reads.values(), timeout=PAGE_FETCH_S)
        late = TimeoutError(f"not read within {PAGE_FETCH_S:g} s")
        found.update({row: read.result() if read in done else late for row, read in reads.items()})
        return [self._decode(row, found[row]) for row in rows]

    def _read(self, row: int, deadline: float | None = None) -> bytes | Exception:
        """One image's bytes (or the error): one range read, retried with backoff from the Hub
        (a local file reads the same each time: no retries), a Retry-After waited only up to
        ``deadline``, the page's (``_with_retries``)."""
        offset, length = (int(x) for x in self.ranges[row])
        if offset < 0 or length <= 0:
            return ValueError("the row holds no image bytes")
        if length > MAX_IMAGE_BYTES:
            return ValueError(f"the image is {length:,} bytes, over {MAX_IMAGE_BYTES:,}")
        path = self.files[self.locate(row)[0]].path

        def read() -> bytes:
            return self.source.read_range(path, offset, offset + length)

        try:
            data = _with_retries(read, deadline) if self.source.remote else read()
        except Exception as err:  # noqa: BLE001 - reported per hit, never fails the search
            return err
        self.cache.put(self._cache_name(row), data)
        return data

    def _cache_name(self, row: int) -> str:
        number, local = self.locate(row)
        return f"{self.files[number].key}-{local}"

    def _decode(self, row: int, data: bytes | Exception) -> Fetched:
        where = f"image of row {row}"
        if isinstance(data, Exception):
            return Fetched(placeholder(), f"{where} could not be fetched: {describe_error(data)}")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:  # as the encoder refuses it
                    return Fetched(
                        placeholder(),
                        f"{where} is {image.width}x{image.height} pixels, over the "
                        f"{MAX_PIXELS:,}-pixel limit",
                    )
                return Fetched(self._fit(image), None)
        except UnidentifiedImageError:  # (its message names a BytesIO object's address)
            return Fetched(placeholder(), f"{where} could not be decoded: not an image")
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad bytes
            return Fetched(placeholder(), f"{where} could not be decoded: {describe_error(err)}")

    def _fit(self, image: Image.Image) -> Image.Image:
        """The image as the encoder saw it (``to_rgb``: upright by its EXIF orientation,
        transparency on white), within ``max_side``. A JPEG at least twice that size is
        decoded at 1/2, 1/4 or 1/8 scale (``draft``: the largest reduction that keeps the fitted
        size), so a phone photo shown at the size of a page costs a fraction of its full
        decode."""
        if self.max_side is not None and max(image.size) > self.max_side:
            scale = self.max_side / max(image.size)
            image.draft("RGB", tuple(max(1, int(side * scale)) for side in image.size))
        rgb = to_rgb(image)
        if self.max_side is not None:
            rgb.thumbnail((self.max_side, self.max_side))
        return rgb
