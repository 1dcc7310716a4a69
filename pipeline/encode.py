"""Encode images and captions into parquet shards, resumably.

Reads an input source (pipeline/inputs.py) and a model; writes into the build folder:
- ``build.json``: the model (id, revision, fingerprint, dim), the input and the plan hash, so a
  resumed run refuses to mix models or inputs;
- ``shards/shard-NNNNN.parquet``: one row per image (image bytes, image_id, path, captions,
  image_emb, caption_emb, sha256), written atomically shard by shard;
- ``shards/shard-NNNNN.skipped.jsonl``: the rows that shard could not use, with reasons;
- ``skipped.jsonl``: every skipped input of the whole build, rewritten at the end.

Resumability: the input is planned first (a content-hash pass that also merges identical image
files), and the plan is cut into fixed chunks; chunk i becomes shard i. A shard file appears only
once complete (written to a temporary name, then renamed), so a run killed at any point resumes
by skipping the shards that exist: no row is lost or written twice.

Sharding across processes: with ``torchrun`` (``WORLD_SIZE``/``RANK`` set), rank r encodes the
chunks i with i % world_size == r; the chunks, and so the rows, are the same as in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from imagesearchtr.images import ImageLoadError, open_image

from .inputs import ImageRecord, Skip

BUILD_FILE = "build.json"
SHARDS_DIR = "shards"
SKIPPED_FILE = "skipped.jsonl"
INPUT_SKIPS_FILE = "skipped-inputs.jsonl"


@dataclass(frozen=True)
class EncodeConfig:
    """Settings of one encode run (the CLI's flags)."""

    out: Path
    model: str
    revision: str | None = None
    batch_size_img: int = 32
    batch_size_txt: int = 64
    device: str = "auto"
    dtype: str | None = None
    shard_size: int = 256
    overwrite: bool = False


@dataclass(frozen=True)
class EncodeSummary:
    num_images: int
    num_captions: int
    num_skipped: int
    skipped_reasons: dict
    seconds: float
    shards_written: int


def features(dim: int):
    """The row schema. Embeddings are fixed-size float32 lists: the fastest to load (TRAPS.md)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "path": Value("string"),
            "captions": List(Value("string")),
            "image_emb": List(Value("float32"), length=dim),
            "caption_emb": List(Value("float32"), length=dim),
            "sha256": Value("string"),
        }
    )


def plan(records: list[ImageRecord]) -> tuple[list[tuple[ImageRecord, str]], list[Skip]]:
    """Hash every image once; drop unreadable files; merge identical files into one row."""
    planned: list[tuple[ImageRecord, str]] = []
    skips: list[Skip] = []
    first_by_hash: dict[str, ImageRecord] = {}
    for record in tqdm(records, desc="hashing", unit="img", disable=len(records) < 1000):
        try:
            data = record.read_bytes()
        except FileNotFoundError:
            skips.append(Skip(record.path, "missing file"))
            continue
        except OSError as err:
            skips.append(Skip(record.path, f"unreadable file ({err.strerror or err})"))
            continue
        if not data:
            skips.append(Skip(record.path, "empty file (0 bytes)"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        first = first_by_hash.get(digest)
        if first is not None:
            # Same picture twice: encode it once and keep every caption on the one row.
            first.captions.extend(c for c in record.captions if c not in first.captions)
            skips.append(
                Skip(record.path, f"duplicate of {first.path} (same bytes); captions merged")
            )
            continue
        first_by_hash[digest] = record
        planned.append((record, digest))
    return planned, skips


def run_encode(source, config: EncodeConfig, encoder=None) -> EncodeSummary:
    """Encode ``source`` into ``config.out``; resumes an interrupted build of the same input."""
    from imagesearchtr import Encoder

    started = time.perf_counter()
    rank, world = _dist_rank_world()
    out = Path(config.out)
    shards_dir = out / SHARDS_DIR
    if encoder is None:
        encoder = Encoder.from_pretrained(
            config.model, revision=config.revision, device=config.device, dtype=config.dtype
        )
    records, input_skips = source.read()
    planned, plan_skips = plan(records)
    plan_hash = hashlib.sha256(
        "\n".join(f"{r.image_id}|{h}|{len(r.captions)}" for r, h in planned).encode()
    ).hexdigest()
    build = {
        "model_id": encoder.model_id,
        "model_revision": encoder.revision,
        "model_fingerprint": encoder.fingerprint,
        "dim": encoder.dim,
        "source": source.describe(),
        "plan_hash": plan_hash,
        "num_planned": len(planned),
        "shard_size": config.shard_size,
    }
    _prepare_build_dir(out, build, config.overwrite, rank)
    if rank == 0:
        _write_jsonl(out / INPUT_SKIPS_FILE, input_skips + plan_skips)

    chunks = [planned[i : i + config.shard_size] for i in range(0, len(planned), config.shard_size)]
    mine = [i for i in range(len(chunks)) if i % world == rank]
    for i in mine:  # a run killed mid-write leaves its temporary files: not data, remove them
        for orphan in shards_dir.glob(f".{_shard_path(shards_dir, i).stem}.*.tmp"):
            orphan.unlink(missing_ok=True)
    todo = [i for i in mine if not _shard_path(shards_dir, i).exists()]
    done_images = sum(len(chunks[i]) for i in mine if i not in todo)
    row_features = features(encoder.dim)
    written = 0
    with tqdm(
        total=sum(len(chunks[i]) for i in mine),
        initial=done_images,
        desc="encoding" if world == 1 else f"encoding (rank {rank}/{world})",
        unit="img",
        smoothing=0.1,
    ) as bar:
        for i in todo:
            rows, skips = _encode_chunk(chunks[i], encoder, config, bar)
            _write_shard(shards_dir, i, rows, skips, row_features)
            written += 1

    _barrier(world)
    summary_skips = _collect_skips(out, len(chunks)) if rank == 0 else []
    num_images, num_captions = _count_rows(shards_dir, len(chunks)) if rank == 0 else (0, 0)
    reasons = Counter(_reason_kind(s["reason"]) for s in summary_skips)
    return EncodeSummary(
        num_images=num_images,
        num_captions=num_captions,
        num_skipped=len(summary_skips),
        skipped_reasons=dict(reasons),
        seconds=time.perf_counter() - started,
        shards_written=written,
    )


def _encode_chunk(chunk, encoder, config: EncodeConfig, bar) -> tuple[dict, list[Skip]]:
    """Decode and embed one chunk's images (a batch at a time) and captions."""
    rows = {name: [] for name in features(encoder.dim)}
    skips: list[Skip] = []
    for start in range(0, len(chunk), config.batch_size_img):
        batch = chunk[start : start + config.batch_size_img]
        good, pil_images, raw = [], [], []
        for record, digest in batch:
            try:
                data = record.read_bytes()
                pil_images.append(open_image(data))
            except ImageLoadError as err:
                # open_image names bytes as "<N bytes>": report the file instead.
                skips.append(Skip(record.path, str(err).split(": ", 1)[-1]))
                continue
            except OSError as err:
                skips.append(Skip(record.path, f"unreadable file ({err})"))
                continue
            good.append((record, digest))
            raw.append(data)
        if good:
            image_emb = encoder.encode_images(
                pil_images, batch_size=config.batch_size_img, show_progress_bar=False
            )
            caption_emb = _caption_embeddings(
                [r.captions for r, _ in good], encoder, config.batch_size_txt
            )
            for (record, digest), data, img_vec, cap_vec in zip(
                good, raw, image_emb, caption_emb, strict=True
            ):
                rows["image"].append({"bytes": data, "path": Path(record.path).name})
                rows["image_id"].append(record.image_id)
                rows["path"].append(record.path)
                rows["captions"].append(list(record.captions))
                rows["image_emb"].append(img_vec)
                rows["caption_emb"].append(cap_vec)
                rows["sha256"].append(digest)
        bar.update(len(batch))
    return rows, skips


def _caption_embeddings(captions: list[list[str]], encoder, batch_size: int) -> list:
    """Per image: the normalised mean of its caption embeddings, or None without captions."""
    flat = [c for caps in captions for c in caps]
    vectors = encoder.encode_texts(flat, batch_size=batch_size, show_progress_bar=False)
    out, pos = [], 0
    for caps in captions:
        if not caps:
            out.append(None)
            continue
        mean = vectors[pos : pos + len(caps)].mean(axis=0)
        pos += len(caps)
        out.append((mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32))
    return out


def _shard_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"shard-{index:05d}.parquet"


def _write_shard(shards_dir: Path, index: int, rows: dict, skips: list[Skip], row_features):
    """Skips first, then the parquet via a temporary name: the parquet marks the shard done."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    final = _shard_path(shards_dir, index)
    _write_jsonl(final.with_suffix(".skipped.jsonl"), skips)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    # The Arrow table carries the datasets features in its schema metadata, so load_dataset
    # reads the columns back as Image / List(float32, length=dim).
    table = Dataset.from_dict(rows, features=row_features).data.table
    pq.write_table(table, str(tmp), row_group_size=100)
    os.replace(tmp, final)


def _write_jsonl(path: Path, skips: list[Skip]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(s.to_json() + "\n" for s in skips), encoding="utf-8")
    os.replace(tmp, path)


def _prepare_build_dir(out: Path, build: dict, overwrite: bool, rank: int) -> None:
    build_file = out / BUILD_FILE
    if build_file.is_file() and not overwrite:
        previous = json.loads(build_file.read_text(encoding="utf-8"))
        for key, label in (
            ("model_fingerprint", "model"),
            ("plan_hash", "input"),
            ("shard_size", "shard size"),
        ):
            if previous.get(key) != build[key]:
                raise ValueError(
                    f"{out} holds a build made with a different {label} "
                    f"({previous.get(key)} vs {build[key]}); pass --overwrite to start it "
                    "again, or choose another --out folder"
                )
        return
    if rank != 0:
        _wait_for(build_file)
        return
    if overwrite and out.exists():
        for path in (out / SHARDS_DIR).glob("*"):
            path.unlink()
        for name in (SKIPPED_FILE, INPUT_SKIPS_FILE, BUILD_FILE):
            (out / name).unlink(missing_ok=True)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    tmp = build_file.with_name(f".{BUILD_FILE}.tmp")
    tmp.write_text(json.dumps(build, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, build_file)


def _collect_skips(out: Path, num_chunks: int) -> list[dict]:
    """Concatenate input-level and per-shard skips into BUILD/skipped.jsonl."""
    entries = []
    files = [out / INPUT_SKIPS_FILE] + [
        _shard_path(out / SHARDS_DIR, i).with_suffix(".skipped.jsonl") for i in range(num_chunks)
    ]
    for path in files:
        if path.is_file():
            entries.extend(
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
            )
    tmp = out / f".{SKIPPED_FILE}.tmp"
    tmp.write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8"
    )
    os.replace(tmp, out / SKIPPED_FILE)
    return entries


def _count_rows(shards_dir: Path, num_chunks: int) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    images = captions = 0
    for i in range(num_chunks):
        path = _shard_path(shards_dir, i)
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["captions"])
        images += table.num_rows
        captions += int(pc.sum(pc.list_value_length(table["captions"])).as_py() or 0)
    return images, captions


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: "duplicate of a.jpg (...)" -> "duplicate"."""
    for kind in (
        "duplicate",
        "missing file",
        "empty file",
        "malformed JSON",
        "empty or missing caption",
        "not an image",
        "broken or truncated",
        "decompression bomb",
        "pixels is over",
        "outside the data folder",
    ):
        if kind in reason:
            return kind
    return reason.split(" (")[0]


def _dist_rank_world() -> tuple[int, int]:
    """Rank and world size under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if _cuda() else "gloo")
    return rank, world


def _barrier(world: int) -> None:
    """Wait until every rank has written its shards, then leave the process group."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not create {path} within {timeout:.0f} s")
        time.sleep(0.2)


def summary_text(summary: EncodeSummary) -> str:
    rate = summary.num_images / summary.seconds if summary.seconds else 0.0
    lines = [
        f"encoded {summary.num_images} images with {summary.num_captions} captions "
        f"in {summary.seconds:.1f} s ({rate:.1f} images/s overall)",
        f"skipped {summary.num_skipped} inputs (reasons in skipped.jsonl)",
    ]
    lines += [f"  {count:6d}  {kind}" for kind, count in sorted(summary.skipped_reasons.items())]
    return "\n".join(lines)
