"""GPU check of the encode path: device and dtype choice, stage times, throughput, precision.

Run: ``python benchmarks/gpu_check.py [--images 2048] [--workers N]`` on any machine with a CUDA
GPU (it needs the project importable: ``pip install -e .``, or it puts ``space/`` and the repo
root on ``sys.path`` itself). On a machine without CUDA it says so and exits 0. It then starts
itself under ``torchrun --nproc_per_node 2`` for the multi-process part; started that way by
hand (``torchrun --nproc_per_node 2 benchmarks/gpu_check.py --ranks-check --work DIR``) it only
does that part. The report goes to stdout.

Reads nothing but its own synthetic data. Writes only into a temporary folder, deleted at the
end: a full-size MultiEmbedTR checkpoint with random weights (ModernBERT-base text encoder,
DINOv2-base image encoder, written by tests/tiny_checkpoint.py in the real on-disk format;
random weights cost the same time as trained ones), synthetic JPEGs (photo-sized, 500x375 and
similar, with structure and noise) with 5 Turkish captions each, and parquet shards.

Prints:
- the GPU's name and compute capability, the dtype ``Encoder`` picks for it;
- stage times: decode + preprocess per image (one CPU core), the host-to-GPU copy of a batch
  (pageable and pinned), the DINOv2 forward at batch 32/128/256 with its peak memory, the
  ModernBERT forward of captions, the parquet write of one shard;
- end to end (``pipeline.feed.encode_chunks``: decode workers, model, captions, writer thread):
  images/s and the mean GPU utilisation for ``--workers 0`` and ``--workers N``;
- precision: the minimum cosine to float32 and the count of NaN/Inf rows for bfloat16 and
  float16 (and bfloat16 with its rotary frequencies rounded, as before they were kept float32);
- under two processes: each rank's device and the largest difference from the one-process
  result. With one GPU visible, rank 1's ``device="auto"`` is refused (the message is shown) and
  both ranks then share cuda:0 explicitly, to check the coordination and the result.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for extra in (REPO_ROOT / "space", REPO_ROOT, REPO_ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _common  # noqa: E402  (benchmarks/_common.py: shared sizes and helpers)
import numpy as np  # noqa: E402
import torch  # noqa: E402

FULL_SIZE = _common.FULL_SIZE  # MultiEmbedTR's real sizes (random weights)
SHARD_SIZE = 256
CAPTIONS_PER_IMAGE = 5
RANK_CHECK_IMAGES = 512
RANK_CHECK_SHARD = 64


def say(line: str = "") -> None:
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3072, help="synthetic images end to end")
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: auto)")
    parser.add_argument("--model", choices=["full", "tiny"], default="full", help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ranks-check", action="store_true", help="only the multi-process part")
    parser.add_argument("--work", type=Path, help="folder of a --ranks-check run (set by the main)")
    args = parser.parse_args()

    if args.ranks_check or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        ranks_check(args)
        return
    if not torch.cuda.is_available() and not args.allow_cpu:
        say("gpu_check: no CUDA GPU is visible on this machine (torch.cuda.is_available() is")
        say("False); nothing to measure. Run it on a machine with an NVIDIA GPU.")
        return
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        run_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the single-process checks -----------------------------------------------------------------


def run_all(args, work: Path) -> None:
    from imagesearchtr import Encoder
    from imagesearchtr.encoder import pick_device, pick_dtype
    from pipeline.feed import default_workers

    started = time.perf_counter()
    device = pick_device("auto")
    dtype = pick_dtype(None, device)
    section("machine")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        cap = torch.cuda.get_device_capability(device)
        say(
            f"GPU: {props.name}, compute capability {cap[0]}.{cap[1]}, "
            f"{props.total_memory / 2**30:.0f} GiB,"
        )
        say(
            f"     {props.multi_processor_count} multiprocessors; "
            f"{torch.cuda.device_count()} GPU(s) visible"
        )
    else:
        say("GPU: none (--allow-cpu: the logic on CPU, figures meaningless)")
    say(f"dtype chosen by Encoder (dtype=None): {str(dtype).replace('torch.', '')}")
    import transformers

    say(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"CPU cores available: {len(os.sched_getaffinity(0))}"
    )

    ckpt = write_checkpoint(work / "ckpt", args.model)
    say(f"model: {args.model}-size MultiEmbedTR, random weights ({ckpt_params(ckpt):,} parameters)")
    t0 = time.perf_counter()
    encoder = Encoder.from_pretrained(ckpt, device="auto")
    say(f"Encoder.from_pretrained: {time.perf_counter() - t0:.1f} s -> {encoder!r}")

    t0 = time.perf_counter()
    jpegs = synthetic_jpegs(args.images)
    captions = synthetic_captions(len(jpegs))
    say(
        f"{len(jpegs)} synthetic JPEGs made in {time.perf_counter() - t0:.1f} s "
        f"(mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB)"
    )

    stage_times(encoder, jpegs, captions, work)
    workers = default_workers(device) if args.workers is None else args.workers
    reference = end_to_end(encoder, jpegs, captions, workers, work)
    precision(ckpt, jpegs, captions, device)
    ranks_part(ckpt, jpegs, captions, work, reference)
    section("done")
    say(f"gpu_check took {time.perf_counter() - started:.0f} s")


def section(title: str) -> None:
    say()
    say(f"== {title} " + "=" * max(0, 70 - len(title)))


def write_checkpoint(folder: Path, size: str) -> Path:
    from tiny_checkpoint import write_tiny_checkpoint

    sizes = FULL_SIZE if size == "full" else {}
    return write_tiny_checkpoint(folder, formats=("safetensors",), seed=0, **sizes)


def ckpt_params(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118


def _one_jpeg(i: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(i)
    w, h = [(500, 375), (375, 500), (500, 333), (640, 480), (500, 500)][i % 5]
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC
    )
    arr = np.asarray(coarse, dtype=np.int16) + rng.integers(-25, 26, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def synthetic_jpegs(n: int) -> list[bytes]:
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(min(8, os.cpu_count() or 1)) as pool:
        return pool.map(_one_jpeg, range(n), chunksize=32)


def synthetic_captions(n: int) -> list[list[str]]:
    from tiny_checkpoint import TURKISH_SENTENCES as S

    return [
        [f"{S[(i + k) % len(S)]} ve {S[(3 * i + 7 * k) % len(S)].lower()}" for k in range(5)]
        for i in range(n)
    ]


def records(jpegs: list[bytes], captions: list[list[str]]):
    from pipeline.inputs import ImageRecord

    return [
        (
            ImageRecord(f"syn{i:05d}", f"syn/{i:05d}.jpg", list(caps), lambda d=data: d),
            hashlib.sha256(data).hexdigest(),
        )
        for i, (data, caps) in enumerate(zip(jpegs, captions, strict=True))
    ]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps: int = 5, warm: int = 2) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after ``warm`` unmeasured ones."""
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shard_writer(folder: Path, dim: int, fast: bool = True):
    """The encode step's parquet shards (datasets features when datasets is installed), built by
    ``pipeline.feed.shard_table`` (``fast``) or by ``Dataset.from_dict`` (the same bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    try:
        from datasets import Dataset

        from pipeline.encode import features

        row_features = features(dim)

        from pipeline.feed import shard_table

        def to_table(rows):
            if fast:
                return shard_table(rows, row_features)
            return Dataset.from_dict(rows, features=row_features).data.table

        how = "encode's features, " + ("feed.shard_table" if fast else "Dataset.from_dict")
    except Exception as err:  # not installed, or a version that does not import
        reason = f"{type(err).__name__}: {err}"

        def to_table(rows):
            emb = pa.list_(pa.float32(), dim)
            return pa.table(
                {
                    "image": pa.array(rows["image"]),
                    "image_id": pa.array(rows["image_id"]),
                    "path": pa.array(rows["path"]),
                    "captions": pa.array(rows["captions"], pa.list_(pa.string())),
                    "image_emb": pa.array([v.tolist() for v in rows["image_emb"]], emb),
                    "caption_emb": pa.array(
                        [None if v is None else v.tolist() for v in rows["caption_emb"]], emb
                    ),
                    "sha256": pa.array(rows["sha256"]),
                }
            )

        how = f"plain pyarrow, the same columns; datasets unusable here ({reason})"

    def write(chunk) -> None:
        path = folder / f"shard-{chunk.index:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(to_table(chunk.rows), str(tmp), row_group_size=100)
        os.replace(tmp, path)

    return write, how


def stage_times(encoder, jpegs, captions, work: Path) -> None:
    from imagesearchtr.images import open_image
    from pipeline.feed import ChunkRows, encode_chunks

    section("stages (medians)")
    preprocess = encoder.image_preprocessor
    sample = jpegs[:200]
    t0 = time.perf_counter()
    images = [open_image(d) for d in sample]
    t_decode = (time.perf_counter() - t0) / len(sample)
    t0 = time.perf_counter()
    for img in images:
        preprocess([img])
    t_pre = (time.perf_counter() - t0) / len(sample)
    say(f"decode (open_image, one core):     {t_decode * 1e3:6.2f} ms/image")
    say(
        f"preprocess (resize/crop/normalise): {t_pre * 1e3:6.2f} ms/image "
        f"-> one core feeds {1 / (t_decode + t_pre):.0f} images/s"
    )

    batch = torch.cat([preprocess([img]) for img in (images * 2)[:256]])
    on_gpu = encoder.device.type == "cuda"
    if on_gpu:
        pinned = batch.pin_memory()
        mb = batch.numel() * 4 / 1e6
        t_page = timed(lambda: batch.to(encoder.device))
        t_pin = timed(lambda: pinned.to(encoder.device, non_blocking=True))
        say(
            f"copy of 256 images ({mb:.0f} MB float32) to the GPU: pageable {t_page * 1e3:.1f} ms "
            f"({mb / 1e3 / t_page:.1f} GB/s), pinned {t_pin * 1e3:.1f} ms "
            f"({mb / 1e3 / t_pin:.1f} GB/s)"
        )

    on_device = batch.to(encoder.device).to(encoder.dtype)
    model = encoder.model
    say(f"DINOv2-base forward + head, {str(encoder.dtype).replace('torch.', '')}:")
    base = torch.cuda.memory_allocated(encoder.device) if on_gpu else 0
    for bs in (32, 128, 256):
        px = on_device[:bs]
        with torch.inference_mode():
            t = timed(lambda px=px: model.encode_image(px))
            peak = ""
            if on_gpu:
                torch.cuda.reset_peak_memory_stats(encoder.device)
                model.encode_image(px)
                sync()
                used = torch.cuda.max_memory_allocated(encoder.device)
                peak = (
                    f", peak memory {used / 2**30:.2f} GiB "
                    f"({(used - base) / 2**30:.2f} GiB above the weights)"
                )
        say(f"  batch {bs:3d}: {t * 1e3:7.1f} ms = {bs / t:7.0f} images/s{peak}")

    flat = [c for caps in captions[:512] for c in caps][:2048]
    say(f"ModernBERT forward + pooling + head ({len(flat)} captions, tokenising included):")
    for bs in (64, 256):
        t = timed(
            lambda bs=bs: encoder.encode_texts(flat, batch_size=bs, show_progress_bar=False),
            reps=3,
            warm=1,
        )
        say(f"  batch {bs:3d}: {t:6.2f} s = {len(flat) / t:7.0f} captions/s")

    rows: list = []
    encode_chunks([(0, records(jpegs[:SHARD_SIZE], captions[:SHARD_SIZE]))], encoder, rows.append)
    chunk: ChunkRows = rows[0]
    for fast in (False, True):
        write, how = shard_writer(work / "stage-shard", encoder.dim, fast=fast)
        t = timed(lambda write=write: write(chunk), reps=3, warm=1)
        say(f"write one shard of {chunk.num_rows} rows: {t * 1e3:.0f} ms ({how})")


class GpuUtilisation:
    """Samples the GPU's utilisation every 50 ms in a thread (NVML, else nvidia-smi)."""

    def __init__(self, device):
        self.device, self.samples, self.how = device, [], "n/a"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> float | None:
        try:
            self.how = "torch.cuda.utilization (NVML)"
            return float(torch.cuda.utilization(self.device))
        except Exception:
            pass
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"--id={self.device.index or 0}",
                ],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            self.how = "nvidia-smi"
            return float(out.strip().splitlines()[0])
        except Exception:
            self.how = "n/a"
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is None:
                return
            self.samples.append(value)
            self._stop.wait(0.05)

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def text(self) -> str:
        if not self.samples:
            return "GPU utilisation n/a"
        mean = statistics.mean(self.samples)
        return f"GPU busy {mean:.0f}% on average ({len(self.samples)} samples, {self.how})"


def end_to_end(encoder, jpegs, captions, workers: int, work: Path) -> dict[str, np.ndarray]:
    from pipeline.feed import encode_chunks

    section(f"end to end: {len(jpegs)} images, {CAPTIONS_PER_IMAGE} captions each")
    planned = records(jpegs, captions)
    chunks = [
        (i // SHARD_SIZE, planned[i : i + SHARD_SIZE]) for i in range(0, len(planned), SHARD_SIZE)
    ]
    runs = [(0, 32), (workers, 32), (workers, 128)] if workers else [(0, 32), (0, 128)]
    if workers > 4:  # how the rate scales with the workers
        runs.insert(1, (workers // 2, 32))
    result: dict[str, np.ndarray] = {}
    for n_workers, batch in runs:
        folder = work / f"e2e-{n_workers}-{batch}"
        write, how = shard_writer(folder, encoder.dim)
        kept: dict[str, np.ndarray] = {}

        def write_and_keep(chunk, write=write, kept=kept):
            write(chunk)
            kept.update(zip(chunk.rows["image_id"], chunk.rows["image_emb"], strict=True))

        with GpuUtilisation(encoder.device) as util:
            sync()
            t0 = time.perf_counter()
            encode_chunks(
                chunks,
                encoder,
                write_and_keep,
                batch_size=batch,
                text_batch_size=256,
                workers=n_workers,
            )
            sync()
            seconds = time.perf_counter() - t0
        say(
            f"--workers {n_workers:2d}, batch {batch:3d}: {seconds:6.1f} s = "
            f"{len(jpegs) / seconds:6.0f} images/s "
            f"({len(jpegs) * CAPTIONS_PER_IMAGE / seconds:.0f} "
            f"captions/s); {util.text()}"
        )
        if (n_workers, batch) == runs[0]:
            result = kept
        else:
            ids = sorted(kept)
            diff = max(float(np.abs(kept[i] - result[i]).max()) for i in ids)
            say(
                f"    largest |difference| from --workers {runs[0][0]} batch {runs[0][1]}: "
                f"{diff:.2e}"
            )
    say(f"(shards written with {how})")
    return result


def precision(ckpt: Path, jpegs, captions, device) -> None:
    from imagesearchtr import Encoder
    from imagesearchtr.encoder import NonFiniteEmbeddingError

    section("precision against float32 (256 images, 1280 captions)")
    images_pp = None
    flat = [c for caps in captions[:256] for c in caps]
    outputs = {}
    for dtype in ("float32", "bfloat16", "float16", "bfloat16, rotary rounded"):
        name = dtype.split(",")[0]
        enc = Encoder.from_pretrained(ckpt, device=str(device), dtype=name)
        if "rounded" in dtype:  # what Module.to(bfloat16) did to the rotary frequencies
            for module in enc.model.text_encoder.modules():
                for buf_name, buf in list(module.named_buffers(recurse=False)):
                    if buf_name.endswith("inv_freq"):
                        setattr(module, buf_name, buf.to(torch.bfloat16))
        if images_pp is None:
            from imagesearchtr.images import open_image

            images_pp = enc.image_preprocessor([open_image(d) for d in jpegs[:256]])
        row = {}
        for kind, run in (
            ("image", lambda enc=enc, px=images_pp: enc.encode_pixels(px)),
            (
                "text",
                lambda enc=enc: enc.encode_texts(flat, batch_size=256, show_progress_bar=False),
            ),
        ):
            try:
                row[kind] = (run(), 0)
            except NonFiniteEmbeddingError as err:
                row[kind] = (None, len(err.rows))
        outputs[dtype] = row
        del enc
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    ref = outputs["float32"]
    for dtype, row in outputs.items():
        parts = []
        for kind in ("image", "text"):
            vectors, bad = row[kind]
            cos = (
                "n/a" if vectors is None else f"{float((vectors * ref[kind][0]).sum(1).min()):.6f}"
            )
            parts.append(f"{kind}s: min cosine {cos}, NaN/Inf rows {bad}")
        say(f"{dtype:26s} " + "; ".join(parts))


# --- the multi-process part --------------------------------------------------------------------


def ranks_part(ckpt: Path, jpegs, captions, work: Path, reference: dict) -> None:
    section("two processes (torchrun --nproc_per_node 2)")
    n = min(RANK_CHECK_IMAGES, len(jpegs))
    data = work / "rank-data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (data / "images" / f"{i:05d}.jpg").write_bytes(jpegs[i])
    (data / "captions.json").write_text(json.dumps(captions[:n], ensure_ascii=False))
    one = {k: v.tolist() for k, v in reference.items() if int(k[3:]) < n}
    (data / "one-process.json").write_text(json.dumps(one))
    (data / "ckpt").symlink_to(ckpt)
    say(
        f"GPUs visible: {torch.cuda.device_count()}"
        + (
            " -- only one: rank 1 cannot have a GPU of its own; shown below"
            if torch.cuda.device_count() == 1
            else ""
        )
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(Path(__file__).resolve()),
        "--ranks-check",
        "--work",
        str(data),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[rank")]
    for line in sorted(lines, key=lambda ln: ln[:7]):
        say(line)
    if proc.returncode != 0:
        say(f"torchrun exited {proc.returncode}; its stderr ends:")
        say(proc.stderr[-3000:])


def ranks_check(args) -> None:
    from imagesearchtr import Encoder
    from pipeline.distributed import check_same, coordination, share_from_rank0
    from pipeline.feed import encode_chunks
    from pipeline.inputs import ImageRecord

    work = args.work
    rank = int(os.environ.get("RANK", "0"))

    def out(line: str) -> None:
        print(f"[rank {rank}] {line}", flush=True)

    out(
        f"LOCAL_RANK={os.environ.get('LOCAL_RANK')} WORLD_SIZE={os.environ.get('WORLD_SIZE')}, "
        f"{torch.cuda.device_count()} GPU(s) visible"
    )
    try:
        encoder = Encoder.from_pretrained(work / "ckpt", device="auto")
        out(f"device='auto' -> {encoder.device}, {encoder.dtype}")
    except ValueError as err:
        out(f"device='auto' refused: {err}")
        encoder = Encoder.from_pretrained(work / "ckpt", device="cuda:0")
        out(
            f"going on with device='cuda:0' (shared with rank 0) -> {encoder.device}, "
            f"{encoder.dtype}"
        )
    captions = json.loads((work / "captions.json").read_text())
    paths = sorted((work / "images").glob("*.jpg"))

    with coordination() as ranks:

        def make_plan():  # rank 0 hashes every image; the others only read their own
            return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]

        digests = share_from_rank0(ranks, make_plan)
        plan_hash = hashlib.sha256("".join(digests).encode()).hexdigest()
        check_same(ranks, plan_hash, "plan hash")
        planned = [
            (ImageRecord(f"syn{i:05d}", p.name, captions[i], p.read_bytes), digests[i])
            for i, p in enumerate(paths)
        ]
        chunks = [
            planned[i : i + RANK_CHECK_SHARD] for i in range(0, len(planned), RANK_CHECK_SHARD)
        ]
        mine = ranks.my_chunks(len(chunks))
        kept: dict = {}
        t0 = time.perf_counter()
        encode_chunks(
            [(i, chunks[i]) for i in mine],
            encoder,
            lambda c: kept.update(zip(c.rows["image_id"], c.rows["image_emb"], strict=True)),
            workers=2,
        )
        out(
            f"encoded chunks {mine} ({len(kept)} images) on {encoder.device} in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        import torch.distributed as dist

        gathered = [None] * ranks.world_size
        dist.all_gather_object(gathered, {k: v.tolist() for k, v in kept.items()})
        if ranks.is_main:
            merged = {k: np.asarray(v, np.float32) for part in gathered for k, v in part.items()}
            one = json.loads((work / "one-process.json").read_text())
            diff = max(
                float(np.abs(merged[k] - np.asarray(v, np.float32)).max()) for k, v in one.items()
            )
            out(
                f"{len(merged)} images from {ranks.world_size} ranks vs the one-process build "
                f"({len(one)} images): same ids {sorted(merged) == sorted(one)}, largest "
                f"|difference| {diff:.2e}"
            )


if __name__ == "__main__":
    main()
