"""The encode feed: workers give bit-identical shards, OOM halves a batch, writes run behind."""

from __future__ import annotations

import hashlib
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.encode import features
from pipeline.feed import ChunkRows, FeedError, ShardWriter, default_workers, encode_chunks
from pipeline.inputs import ImageRecord


def jpeg(color, size=(180, 120)) -> bytes:
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):
        img.paste((x % 255, 90, 255 - x % 255), (x, 0, x + 8, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def record(name: str, data: bytes | None, captions=("karlı dağlar",)) -> tuple[ImageRecord, str]:
    def read() -> bytes:
        if data is None:
            raise FileNotFoundError(2, "No such file or directory", name)
        return data

    digest = hashlib.sha256(data or b"").hexdigest()
    return ImageRecord(name, name, list(captions), read), digest


@pytest.fixture(scope="module")
def chunks():
    """Three chunks: photos, a file that is not an image, a missing file, an empty chunk."""
    colours = [(200, 40, 40), (10, 120, 200), (30, 30, 30), (250, 250, 0), (0, 200, 90)]
    photos = [record(f"p{i}.jpg", jpeg(c, (180 + 20 * i, 120))) for i, c in enumerate(colours)]
    photos[2] = record("p2.jpg", photos[2][0].read_bytes(), captions=())
    broken = record("broken.jpg", b"not an image at all")
    missing = record("gone.jpg", None)
    return [
        (0, photos[:3] + [broken]),
        (1, [missing] + photos[3:] + [record("p0-again.jpg", jpeg((1, 2, 3)), ("iki", "üç"))]),
        (2, []),
    ]


def run(chunks, encoder, workers, batch_size=2, **kwargs) -> list[ChunkRows]:
    written: list[ChunkRows] = []
    count = encode_chunks(
        chunks, encoder, written.append, batch_size=batch_size, workers=workers, **kwargs
    )
    assert count == len(written)
    return written


def parquet_bytes(chunk: ChunkRows, dim: int) -> bytes:
    import pyarrow.parquet as pq
    from datasets import Dataset

    table = Dataset.from_dict(chunk.rows, features=features(dim)).data.table
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=100)
    return buf.getvalue()


def test_workers_give_bit_identical_shards(chunks, tiny_encoder):
    serial = run(chunks, tiny_encoder, workers=0)
    parallel = run(chunks, tiny_encoder, workers=2)
    assert [c.index for c in serial] == [0, 1, 2]
    assert [c.num_rows for c in serial] == [3, 3, 0]
    assert [s.source for c in serial for s in c.skips] == ["broken.jpg", "gone.jpg"]
    for a, b in zip(serial, parallel, strict=True):
        assert a.index == b.index and a.skips == b.skips
        assert parquet_bytes(a, tiny_encoder.dim) == parquet_bytes(b, tiny_encoder.dim)
    # And the Encoder's own path from PIL images (other batches: equal up to float rounding).
    good = [r for _, planned in chunks for r in planned if r[0].path.startswith("p")]
    expected = tiny_encoder.encode_images([Image.open(io.BytesIO(r.read_bytes())) for r, _ in good])
    got = np.stack([v for c in serial for v in c.rows["image_emb"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    caps = serial[1].rows["caption_emb"][-1]
    mean = tiny_encoder.encode_texts(["iki", "üç"]).mean(axis=0)
    np.testing.assert_allclose(caps, mean / np.linalg.norm(mean), atol=1e-6)
    assert serial[0].rows["caption_emb"][2] is None  # p2 has no caption


class OomAbove:
    """Wraps an Encoder: out-of-memory for image batches above ``limit``, like a full GPU."""

    def __init__(self, encoder, limit: int):
        self.encoder, self.limit, self.sizes = encoder, limit, []
        self.device, self.image_preprocessor = encoder.device, encoder.image_preprocessor

    def encode_pixels(self, pixels, first_row=0):
        self.sizes.append(len(pixels))
        if len(pixels) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.encoder.encode_pixels(pixels, first_row)

    def encode_texts(self, texts, batch_size, show_progress_bar):
        return self.encoder.encode_texts(texts, batch_size, show_progress_bar)


def test_a_photo_edited_after_the_plan_is_stored_with_the_hash_of_the_bytes_stored(tiny_encoder):
    before, after = jpeg((200, 40, 40)), jpeg((10, 120, 200))
    edited, planned = record("p.jpg", after)  # the feed reads the edited bytes...
    planned = hashlib.sha256(before).hexdigest()  # ...the plan hashed the photo before
    (chunk,) = run([(0, [(edited, planned)])], tiny_encoder, workers=0)
    assert chunk.rows["image"][0]["bytes"] == after
    assert chunk.rows["sha256"] == [hashlib.sha256(after).hexdigest()]


def test_a_decode_worker_that_is_killed_says_how_to_resume(tiny_encoder):
    # torch's own words ("DataLoader worker (pid N) is killed by signal: Killed.") said
    # nothing of resuming, nor of --workers 0.
    import os
    import signal

    parent = os.getpid()

    def read() -> bytes:
        if os.getpid() != parent:  # in the worker: killed, as the out-of-memory killer does
            os.kill(os.getpid(), signal.SIGKILL)
        return jpeg((1, 2, 3))

    killed = (ImageRecord("k.jpg", "k.jpg", [], read), "0" * 64)
    with pytest.raises(FeedError, match=r"DataLoader worker .* run the same command again to "):
        run([(0, [killed])], tiny_encoder, workers=1)


def test_out_of_memory_halves_the_batch_and_goes_on(chunks, tiny_encoder):
    lines: list[str] = []
    flaky = OomAbove(tiny_encoder, limit=1)
    halved = run(chunks, flaky, workers=0, batch_size=4, log=lines.append)
    reference = run(chunks, tiny_encoder, workers=0, batch_size=4)
    for a, b in zip(halved, reference, strict=True):
        np.testing.assert_allclose(
            np.stack(a.rows["image_emb"] or [[0]]),
            np.stack(b.rows["image_emb"] or [[0]]),
            atol=1e-5,
        )
    assert lines == ["out of memory on a batch of 3 images: going on with batches of 1"]
    assert max(flaky.sizes[flaky.sizes.index(1) :]) == 1  # stays small once halved

    with pytest.raises(FeedError, match="out of GPU memory on a single image"):
        run(chunks, OomAbove(tiny_encoder, limit=0), workers=0, log=lines.append)


def test_writes_run_behind_the_encoding_and_their_errors_surface(chunks, tiny_encoder):
    started, encoded = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_write(chunk: ChunkRows) -> None:
        started.set()
        order.append(f"write {chunk.index} start")
        # The first write lasts until the encoder reports progress meanwhile (not a fixed
        # sleep, which a loaded machine outlasts): a writer that held up the encoding would
        # wait out the timeout, and the progress would come after "write 0 end".
        if chunk.index == 0:
            encoded.wait(timeout=60)
        order.append(f"write {chunk.index} end")

    encoding: list[int] = []  # each batch's images

    def progress(n: int) -> None:
        # Chunk 0's images encoded, the chunk goes to the writer: the batches after it wait for
        # the writer's thread to start it (late on a loaded machine), as the encoding goes on.
        if sum(encoding) >= len(chunks[0][1]):
            started.wait(timeout=60)
        encoding.append(n)
        if started.is_set() and not encoded.is_set():
            order.append("encoded while writing")
            encoded.set()

    written = encode_chunks(chunks, tiny_encoder, slow_write, batch_size=2, progress=progress)
    assert written == 3
    assert "encoded while writing" in order[: order.index("write 0 end")]

    def failing_write(chunk: ChunkRows) -> None:
        if chunk.index == 1:
            raise OSError(28, "No space left on device")

    with pytest.raises(FeedError, match="writing a shard failed.*No space left"):
        encode_chunks(chunks, tiny_encoder, failing_write, batch_size=2)


def test_shard_writer_writes_everything_submitted_before_a_failure():
    done = []
    with pytest.raises(RuntimeError, match="model broke"), ShardWriter(done.append) as writer:
        writer.submit(ChunkRows(0, {"image_id": []}, []))
        writer.submit(ChunkRows(1, {"image_id": []}, []))
        raise RuntimeError("model broke")
    assert [c.index for c in done] == [0, 1]


def test_default_workers_share_the_cores_between_local_ranks(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_workers("cuda") == 8
    assert default_workers("cpu") == 4
    assert default_workers("cuda", local_world_size=4) == 2
    assert default_workers("cpu", local_world_size=4) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert default_workers("cuda") == 16
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert default_workers("cpu") == 0


def test_bad_arguments(chunks, tiny_encoder):
    with pytest.raises(ValueError, match="workers must be >= 0"):
        encode_chunks(chunks, tiny_encoder, print, workers=-1)
    with pytest.raises(ValueError, match="batch sizes"):
        encode_chunks(chunks, tiny_encoder, print, batch_size=0)


def test_shard_table_gives_the_same_parquet_as_datasets(chunks, tiny_encoder):
    import pyarrow.parquet as pq

    from pipeline.feed import shard_table

    row_features = features(tiny_encoder.dim)
    for chunk in run(chunks, tiny_encoder, workers=0):
        assert any(v is None for v in chunk.rows["caption_emb"]) or chunk.index != 0  # p2: none
        fast = io.BytesIO()
        pq.write_table(shard_table(chunk.rows, row_features), fast, row_group_size=100)
        assert fast.getvalue() == parquet_bytes(chunk, tiny_encoder.dim)
