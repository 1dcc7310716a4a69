"""The feed of ``encode``: decode and preprocess in worker processes, embed, write behind.

Reads each planned image's bytes once, through ``ImageRecord.read_bytes``, and only for the chunks
it is given (a rank's own chunks). Writes nothing itself: every finished chunk is handed, as a
``ChunkRows``, to the caller's ``write`` function, which runs on one background thread so the GPU
does not wait for parquet writes.

The stages, and why:
- a torch ``DataLoader`` over the chunks' records, ``workers`` processes: reading, decoding and
  PIL preprocessing of the next batches run while the current batch is on the model;
- pinned memory and non-blocking copies when the model is on a GPU;
- the image forward in the main process, batch by batch; the captions' text forward once a
  chunk is complete, all its captions together (fewer, fuller text batches);
- a writer thread with a short queue (``ShardWriter``): at most ``MAX_PENDING_WRITES`` finished
  chunks wait in memory; when the disk is slower than the model, the feed waits for it.

``workers=0`` decodes in the main process with the very same code (the DataLoader's own
single-process mode), so the rows are bit for bit the same for any number of workers on CPU.
Out of memory on a batch halves the batch (images and captions separately), says so once, and
goes on with the smaller size.

A shard row is built in one place, ``add_row``: encode's writer builds the rows it reuses with it
too.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imagesearchtr.encoder import NonFiniteEmbeddingError
from imagesearchtr.images import ImageLoadError, open_image

from .inputs import CONVERT_FIRST, NOT_AN_IMAGE, UNREADABLE_FILE, ImageRecord, Skip

# Finished chunks that wait for the writer thread, besides the one it is writing (the feed's
# next one waits in submit until there is room).
MAX_PENDING_WRITES = 2
# Batches each worker decodes ahead of the model.
PREFETCH_BATCHES = 2
# A cap on the default, so a many-core node does not start dozens of processes per GPU.
MAX_DEFAULT_WORKERS = 16

Planned = tuple[ImageRecord, str]  # a record and its content sha256, as encode's plan gives them


class FeedError(RuntimeError):
    """The feed cannot go on (a batch of one image does not fit, a write failed)."""


@dataclass
class ChunkRows:
    """One finished chunk: the rows of its shard (encode's columns) and what it skipped."""

    index: int
    rows: dict = field(repr=False)
    skips: list[Skip]

    @property
    def num_rows(self) -> int:
        return len(self.rows["image_id"])


def default_workers(device: torch.device | str = "cpu", local_world_size: int = 1) -> int:
    """A sensible share of this process's cores for decoding: half the node's cores split
    between the ``local_world_size`` ranks on this node (``Ranks.local_world_size``, from
    torchrun's LOCAL_WORLD_SIZE). The process itself needs cores too
    (its main thread runs the captions and receives the batches; the pinning and writer
    threads): on a 16-core H200 machine 7 workers fed the GPU faster than 14. On CPU the model
    needs the cores: half of that again."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    share = cores // max(1, local_world_size) // 2
    if torch.device(device).type == "cpu":
        share //= 2
    return max(0, min(MAX_DEFAULT_WORKERS, share))


def encode_chunks(
    chunks: Sequence[tuple[int, Sequence[Planned]]],
    encoder,
    write: Callable[[ChunkRows], None],
    *,
    batch_size: int = 32,
    text_batch_size: int = 64,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Encode every ``(chunk index, planned images)`` and hand each finished chunk to ``write``.

    Image batches never span two chunks, and a chunk's captions are embedded together once its
    images are done, so a chunk's rows do not depend on its neighbours. Returns
    the number of chunks written. ``progress(n)`` is called after each batch with its number of
    planned images; ``log`` gets one line per batch-size change (default: stderr).
    """
    if batch_size < 1 or text_batch_size < 1:
        raise ValueError("batch sizes must be >= 1")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    log = log or _stderr
    items: list[Planned] = []
    batches: list[tuple[int, list[int], bool]] = []  # (chunk index, item positions, last?)
    for chunk_index, planned in chunks:
        first = len(items)
        items.extend(planned)
        starts = range(first, len(items), batch_size)
        for k, start in enumerate(starts):
            stop = min(start + batch_size, len(items))
            batches.append((chunk_index, list(range(start, stop)), k == len(starts) - 1))
        if not planned:  # an empty chunk still gets its (empty) shard
            batches.append((chunk_index, [], True))
    if not batches:
        return 0

    on_gpu = encoder.device.type == "cuda"
    dataset = _DecodeDataset(items, encoder.image_preprocessor)
    loader = DataLoader(
        dataset,
        batch_sampler=[positions for _, positions, _ in batches if positions],
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=on_gpu,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        # fork: workers inherit the records (their read_bytes are closures, not picklable).
        # They never touch CUDA, so forking a process that uses it is safe.
        multiprocessing_context=_fork_context() if workers else None,
    )
    images = _Halving(encoder.encode_pixels, batch_size, "image", log)
    texts = _Halving(
        lambda texts, limit: encoder.encode_texts(texts, batch_size=limit, show_progress_bar=False),
        text_batch_size,
        "caption",
        log,
    )
    written = 0
    rows, skips = _empty_rows(), []
    batch_iter = iter(loader)  # starts the workers before the writer thread exists
    with ShardWriter(write) as writer:
        for chunk_index, positions, last in batches:
            batch = _next_batch(batch_iter) if positions else _Batch([], [], None, [])
            skips.extend(batch.skips)
            if batch.pixels is not None:
                try:
                    image_emb = images.run_pixels(batch.pixels)
                except NonFiniteEmbeddingError as err:
                    names = ", ".join(items[batch.positions[r]][0].path for r in err.rows)
                    raise FeedError(f"{names}: {err}") from None
                for p, data, img_vec in zip(batch.positions, batch.data, image_emb, strict=True):
                    record, _ = items[p]
                    # The sha256 of the bytes stored, not the plan's: a photo edited since the
                    # plan hashed it is stored as read now, and its next update sees it as it is.
                    add_row(rows, record, data, hashlib.sha256(data).hexdigest(), img_vec)
            if progress is not None:
                progress(len(positions))
            if last:
                # The captions of the whole chunk at once: large, length-sorted text batches
                # (per image batch, a GPU spends its time launching ModernBERT's small kernels);
                # they replace the None each add_row above left.
                rows["caption_emb"] = caption_embeddings(rows["captions"], texts.run_whole)
                writer.submit(ChunkRows(chunk_index, rows, skips))
                written += 1
                rows, skips = _empty_rows(), []
    return written


def add_row(
    rows: dict, record: ImageRecord, data: bytes, sha256: str, image_emb, caption_emb=None
) -> None:
    """Append one image's shard row to ``rows`` (a list a column, encode's columns): the image
    bytes as stored, where they came from, the captions, the embeddings and the bytes' sha256."""
    rows["image"].append({"bytes": data, "path": Path(record.path).name})
    rows["image_id"].append(record.image_id)
    rows["path"].append(record.path)
    rows["captions"].append(list(record.captions))
    rows["image_emb"].append(image_emb)
    rows["caption_emb"].append(caption_emb)
    rows["sha256"].append(sha256)


def caption_embeddings(
    captions: list[list[str]], embed: Callable[[list[str]], np.ndarray]
) -> list[np.ndarray | None]:
    """Per image: the normalised mean of its caption embeddings, or None without captions."""
    flat = [c for caps in captions for c in caps]
    vectors = embed(flat) if flat else np.empty((0, 0), np.float32)
    out, pos = [], 0
    for caps in captions:
        if not caps:
            out.append(None)
            continue
        mean = vectors[pos : pos + len(caps)].mean(axis=0)
        pos += len(caps)
        out.append((mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32))
    return out


def shard_table(rows: dict, row_features):
    """The Arrow table ``Dataset.from_dict(rows, features=row_features).data.table`` gives,
    schema metadata included (so the parquet bytes are the same), built column by column from
    numpy instead of row by row in Python: a writer thread holding the GIL for that long slows
    the feed's main thread."""
    import pyarrow as pa

    schema = row_features.arrow_schema
    n = len(rows["image_id"])
    columns = []
    for name in schema.names:
        kind = schema.field(name).type
        values = rows[name]
        if pa.types.is_fixed_size_list(kind):
            dim = kind.list_size
            flat = np.zeros((n, dim), np.float32)
            missing = np.zeros(n, bool)
            for i, vector in enumerate(values):
                if vector is None:
                    missing[i] = True
                else:
                    flat[i] = vector
            columns.append(
                pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.reshape(-1), type=kind.value_type),
                    dim,
                    mask=pa.array(missing) if missing.any() else None,
                )
            )
        else:
            columns.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(columns, schema=schema)


class ShardWriter:
    """Calls ``write(item)`` for each submitted item, in order, on one background thread.

    ``submit`` blocks while ``MAX_PENDING_WRITES`` items wait. Leaving the ``with`` block writes
    every item already submitted (they are complete, so none is lost when the feed fails later),
    then re-raises the first write error as a ``FeedError``.
    """

    _DONE = object()

    def __init__(self, write: Callable[[ChunkRows], None]):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING_WRITES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="shard-writer", daemon=True)

    def __enter__(self) -> ShardWriter:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(self._DONE)
        self._thread.join()
        if self._error is not None and exc is None:
            raise FeedError(f"writing a shard failed: {self._error}") from self._error

    def submit(self, item: ChunkRows) -> None:
        if self._error is not None:
            raise FeedError(f"writing a shard failed: {self._error}") from self._error
        self._queue.put(item)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is None:  # after a failure, drain without writing
                try:
                    self._write(item)
                except BaseException as err:  # re-raised in the main thread
                    self._error = err


# --- internals --------------------------------------------------------------------------------


class _Decoded(NamedTuple):
    position: int
    data: bytes | None
    pixels: torch.Tensor | None
    skip: Skip | None


class _Batch(NamedTuple):
    positions: list[int]  # of the images that decoded
    data: list[bytes]
    pixels: torch.Tensor | None  # (n, 3, H, W) float32, None when none decoded
    skips: list[Skip]


class _DecodeDataset(Dataset):
    """Item i: planned image i read, decoded and preprocessed, or the reason it cannot be."""

    def __init__(self, items: list[Planned], preprocess: Callable[[list], torch.Tensor]):
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> _Decoded:
        record, _ = self.items[position]
        try:
            data = record.read_bytes()
            image = open_image(data)
        except ImageLoadError as err:
            reason = err.reason  # not str(err), which names "<N bytes>": the Skip names the file
            if PurePosixPath(record.path).suffix.lower() in CONVERT_FIRST:
                reason += "; convert HEIC photos to JPEG first"
            return _Decoded(position, None, None, Skip(record.path, NOT_AN_IMAGE, reason))
        except OSError as err:
            skip = Skip(record.path, UNREADABLE_FILE, f"unreadable file ({err})")
            return _Decoded(position, None, None, skip)
        return _Decoded(position, data, self.preprocess([image]), None)


def _next_batch(batch_iter) -> _Batch:
    try:
        return next(batch_iter)
    except RuntimeError as err:  # torch's words for a worker that died: say what to do
        if "DataLoader worker" not in str(err):
            raise
        raise FeedError(
            f"{' '.join(str(err).split())} A process that decodes images ahead of the model was "
            "killed (by the system's out-of-memory killer, often): run the same command again "
            "to resume, with --workers 0 to decode in this process"
        ) from err


def _collate(decoded: list[_Decoded]) -> _Batch:
    good = [d for d in decoded if d.pixels is not None]
    return _Batch(
        positions=[d.position for d in good],
        data=[d.data for d in good],
        pixels=torch.cat([d.pixels for d in good]) if good else None,
        skips=[d.skip for d in decoded if d.skip is not None],
    )


class _Halving:
    """Runs ``embed`` on slices of at most ``limit`` items; halves the limit on out-of-memory."""

    def __init__(self, embed: Callable, limit: int, what: str, log: Callable[[str], None]):
        self.embed, self.limit, self.what, self.log = embed, limit, what, log

    def run_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return self._run(len(pixels), lambda a, b: self.embed(pixels[a:b], first_row=a))

    def run_whole(self, items: list) -> np.ndarray:
        """``embed(items, limit)`` batches by itself: on out-of-memory, all again, halved."""
        while True:
            try:
                return self.embed(items, self.limit)
            except torch.cuda.OutOfMemoryError:
                self._halve(self.limit)

    def _halve(self, size: int) -> None:
        if size == 1:
            raise FeedError(
                f"out of GPU memory on a single {self.what}: free the GPU (another process on "
                "it?) or use a smaller --dtype (float16/bfloat16)"
            ) from None
        self.limit = max(1, size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.log(
            f"out of memory on a batch of {size} {self.what}s: going on with batches of "
            f"{self.limit}"
        )

    def _run(self, n: int, embed_slice: Callable[[int, int], np.ndarray]) -> np.ndarray:
        parts, start = [], 0
        while start < n:
            stop = min(start + self.limit, n)
            try:
                parts.append(embed_slice(start, stop))
            except torch.cuda.OutOfMemoryError:
                self._halve(stop - start)
                continue
            start = stop
        return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def _empty_rows() -> dict:
    return {
        name: []
        for name in ("image", "image_id", "path", "captions", "image_emb", "caption_emb", "sha256")
    }


def _fork_context():
    if "fork" not in multiprocessing.get_all_start_methods():
        raise FeedError("--workers needs the 'fork' start method (Linux); use --workers 0 here")
    return multiprocessing.get_context("fork")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
