"""The bounded on-disk cache of the image bytes a Searcher fetched from the Hub.

Reads and writes one SQLite file, ``CACHE_DIR/images.sqlite`` (with SQLite's ``-wal`` and
``-shm`` files beside it): a row per image, named by the data file's cache key and the row's
place in it. When the image bytes pass the bound, the least recently used go, down to 80% of
it. Deletes a cache file SQLite reports as damaged; ``remove_old_files`` deletes the
``CACHE_DIR/images/*.bin`` files of versions that kept a file per image.

One file rather than one file per image: creating a small file, ten times a result page, cost
far more CPU than an insert on some disks (``benchmarks/lazy.py --compare`` measures a page
against the file-per-image version: benchmarks/README.md, "lazy"). The bound counts image bytes,
not the file's size (SQLite keeps freed pages for reuse). A cache error is a miss, never a
failed search: a damaged file is started afresh, and one that cannot be opened at all (say, on
a file system without the locks SQLite needs) leaves the Searcher without a cache, with a
warning. A bound of 0 is no cache at all.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "images.sqlite"
OLD_FOLDER = "images"  # versions before kept CACHE_DIR/images/<name>.bin
# What SQLite says of a file that is not a database it can read: only then is it deleted (a
# locked or unreadable file may be another process's live cache).
DAMAGED = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}


class ImageCache:
    """Image bytes by name, at most ``max_bytes`` of them; thread-safe (one connection, a lock).
    ``max_bytes`` 0: no cache (no file; every get a miss, every put dropped).

    Several processes may share the file (SQLite's WAL mode); each counts its own inserts
    against the bound and counts the file again when it evicts.
    """

    def __init__(self, cache_dir: Path, max_bytes: int):
        self.path, self.max_bytes = Path(cache_dir) / FILE_NAME, max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None  # None: no cache, every get a miss
        self.total = 0  # image bytes in the file, as this process last counted them
        if max_bytes <= 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as err:
                if err.sqlite_errorcode not in DAMAGED:
                    raise
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._db = self._open()
        except (OSError, sqlite3.Error) as err:
            log.warning("no image cache: %s cannot be used (%s)", self.path, err)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 5000")  # another process (a second app worker)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # a crash may lose the last images only
            db.execute(
                "CREATE TABLE IF NOT EXISTS images "
                "(name TEXT PRIMARY KEY, data BLOB NOT NULL, used INTEGER NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS images_by_use ON images (used)")
            self.total = self._count(db)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def get(self, name: str) -> bytes | None:
        """The bytes stored under ``name``, or None (also when the cache fails)."""
        if self._db is None:
            return None
        try:
            with self._lock:
                row = self._db.execute("SELECT data FROM images WHERE name = ?", (name,))
                row = row.fetchone()
                # Recently used: evicted last. A note that cannot be written (a full disk, a
                # file another worker keeps locked) must not turn the hit into a miss.
                if row is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute(
                            "UPDATE images SET used = ? WHERE name = ?", (time.time_ns(), name)
                        )
            return None if row is None else bytes(row[0])
        except Exception as err:  # noqa: BLE001 - a cache error must not fail the search
            log.debug("image cache: get %s failed: %s", name, err)
            return None

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``; evict the least recently used past the bound."""
        if self._db is None or len(data) > self.max_bytes:
            return
        try:
            with self._lock:
                # An image put again (two searches showing one row both fetch it) replaces its
                # bytes: counted twice, the bound was passed early and images evicted under it.
                held = self._db.execute("SELECT LENGTH(data) FROM images WHERE name = ?", (name,))
                held = held.fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?, ?, ?)", (name, data, time.time_ns())
                )
                self.total += len(data) - (held[0] if held else 0)
                if self.total > self.max_bytes:
                    self._evict()
        except Exception as err:  # noqa: BLE001 - a cache error must not fail the search
            log.debug("image cache: put %s failed: %s", name, err)

    def close(self) -> None:
        """Close the file; every get after this is a miss, every put dropped."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _evict(self) -> None:
        """Delete the least recently used images down to 80% of the bound, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            total = self._count(self._db)  # again: other processes may share the file
            oldest_first = self._db.execute("SELECT used, LENGTH(data) FROM images ORDER BY used")
            cutoff = None
            for used, size in oldest_first:
                if total <= self.max_bytes * 0.8:
                    break
                cutoff, total = used, total - size
            oldest_first.close()  # before the rows it was reading are deleted
            if cutoff is not None:
                self._db.execute("DELETE FROM images WHERE used <= ?", (cutoff,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.total = self._count(self._db)

    @staticmethod
    def _count(db: sqlite3.Connection) -> int:
        return db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM images").fetchone()[0]


def remove_old_files(cache_dir: Path) -> None:
    """Delete the files of the file-per-image cache of older versions, ``images/*.bin``, and the
    folder if that leaves it empty (a folder of that name holding anything else stays)."""
    folder = Path(cache_dir) / OLD_FOLDER
    for pattern in ("*.bin", "*.bin.*.tmp"):
        for old in folder.glob(pattern):
            old.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # absent, or not empty
        folder.rmdir()
