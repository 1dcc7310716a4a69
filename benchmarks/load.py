"""Load test of the Gradio Space: 1, 4 and 16 concurrent gradio_client clients on loopback.

Run: ``python benchmarks/load.py [--quick] [--sizes tiny,full] [--clients 1,4,16] [--no-overlap]``
(a full run takes about 5-8 minutes on 2 CPU cores; ``--quick`` is a ~1-minute smoke test
with the tiny model only).

Reads the shared TasvirEt photos and Turkish captions in place, from
``../shared/data/tasviret-flickr8k`` (override with ``IMAGESEARCHTR_TEST_DATA``); without them it
writes synthetic JPEGs and sentences into the temporary folder and says so.

Writes only into a temporary folder, deleted at the end: a random-weight MultiEmbedTR checkpoint
(tests/tiny_checkpoint.py; "tiny" is the test model, "full" the real architecture: ModernBERT-base
+ DINOv2-base, 226 M parameters), the build and the published dataset folder (encode -> index ->
publish --to, the same code as ``python -m pipeline``), the app's log and gradio's cache.

For each model size, ``space/app.py`` is started as a subprocess on a free 127.0.0.1 port, as a
Space runs it (DATASET_REPO = the published folder, default dtype, queue of the app). Then, for
each concurrency level, that many gradio_client clients (one thread each) each send the same fixed
number of queries, cycling text search, Deep Search (alpha 0.6) and image search (a photo
uploaded with handle_file), k=10. Latency is from submitting a request to its answer (for an
image query, the upload included). A request counts as an error if it raises, times out, or does
not answer "N sonuç" with k results. Meanwhile a probe fetches the page (GET /) every 0.5 s and
records how long each fetch takes: the "page stays responsive" figure.

A last phase (skipped with ``--no-overlap``) runs the highest concurrency level again with
overlapping results: every client draws from the same two texts and one photo, so concurrent
answers return the same images, and each client downloads every image it is given and checks that
it arrives whole (Content-Length) and decodes (the downloads are not in the latency figures).

Prints a table per model size: requests, errors, p50/p95 latency, throughput, and the page probe's
p50/p95/max; then the p50 per query kind. Everything stops by itself: each client sends a bounded
number of queries, each with a timeout, and the app is terminated at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from encode / datasets

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "space" / "app.py"
# The repository first: run as a script, this folder is sys.path[0], and benchmarks/pipeline.py
# would shadow the pipeline package.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import _common  # noqa: E402  (benchmarks/_common.py: shared sizes and helpers)
from hub_server import stop_process  # noqa: E402  (tests/hub_server.py)

DATA_DIR = _common.SHARED_DATA

FULL_SIZE = _common.FULL_SIZE  # MultiEmbedTR's real sizes (random weights)
SIZES = {
    # name: (checkpoint size keywords, images indexed, queries per client in a full run)
    "tiny": ({}, 413, 24),
    "full": (FULL_SIZE, 120, 10),
}
K = 10
REQUEST_TIMEOUT = 180.0  # seconds; a request slower than this counts as an error
PROBE_INTERVAL = 0.5
KINDS = ("text", "deep", "image")


# --- inputs -----------------------------------------------------------------------------------


@dataclass
class Inputs:
    records: list  # pipeline.inputs.ImageRecord
    texts: list[str]
    query_images: list[Path]
    note: str


def load_inputs(n: int, tmp: Path) -> Inputs:
    """The first n shared photos (read in place) with their captions, or synthetic ones."""
    from pipeline.inputs import FolderSource, ImageRecord

    if (DATA_DIR / "captions.jsonl").is_file():
        records, _ = FolderSource(DATA_DIR).read()
        records = [r for r in records if r.captions][:n]
        texts = [c for r in records for c in r.captions]
        photos = [DATA_DIR / r.path for r in records[:: max(1, len(records) // 12)]][:12]
        return Inputs(records, texts, photos, f"{len(records)} shared photos from {DATA_DIR}")
    import numpy as np
    from PIL import Image
    from tiny_checkpoint import TURKISH_SENTENCES

    folder = tmp / "synthetic"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        y, x = np.mgrid[0:375, 0:500] / 500.0
        phase = rng.uniform(0, 6.28, 3)
        rgb = np.stack([np.sin(7 * x + 3 * y + p) for p in phase], -1) * 100 + 128
        rgb += rng.normal(0, 12, rgb.shape)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype("uint8")).save(path, quality=90)
        caption = TURKISH_SENTENCES[i % len(TURKISH_SENTENCES)]
        records.append(
            ImageRecord(f"img{i:04d}", path.name, [caption], lambda p=path: p.read_bytes())
        )
    photos = [folder / r.path for r in records[:12]]
    return Inputs(
        records,
        list(TURKISH_SENTENCES),
        photos,
        f"{n} SYNTHETIC JPEGs (no shared photos at {DATA_DIR})",
    )


@dataclass(frozen=True)
class RecordsSource:
    """An input source over already-read ImageRecords (the files stay where they are)."""

    records: tuple
    name: str

    def describe(self) -> str:
        return self.name

    def label(self) -> str:
        return self.name

    def fingerprint(self) -> str:
        return self.name

    def read(self):
        from pipeline.inputs import ImageRecord

        # fresh records: plan() merges captions of duplicates into them
        return [
            ImageRecord(r.image_id, r.path, list(r.captions), r.read_bytes) for r in self.records
        ], []


def build_published(size: str, tmp: Path, inputs: Inputs) -> tuple[Path, float]:
    """Checkpoint -> encode -> index -> publish to a folder; return it and the seconds taken."""
    from tiny_checkpoint import write_tiny_checkpoint

    from imagesearchtr import Encoder
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.publish import PublishConfig, publish_to_folder

    started = time.perf_counter()
    sizes, _, _ = SIZES[size]
    model_dir = write_tiny_checkpoint(tmp / f"model-{size}", formats=("safetensors",), **sizes)
    encoder = Encoder.from_pretrained(model_dir, device="cpu")  # default dtype, as the app
    build = tmp / f"build-{size}"
    source = RecordsSource(tuple(inputs.records), f"{inputs.note} ({size})")
    run_encode(source, EncodeConfig(out=build, model=str(model_dir), device="cpu"), encoder)
    run_index(IndexConfig(build=build))
    published = tmp / f"published-{size}"
    publish_to_folder(PublishConfig(build=build, to=published))
    del encoder
    return published, time.perf_counter() - started


# --- the app ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(published: Path, tmp: Path):
    """space/app.py in a subprocess on 127.0.0.1; yields (url, log path, start seconds)."""
    port = free_port()
    log = tmp / f"app-{port}.log"
    workdir = tmp / f"app-{port}"
    workdir.mkdir()
    env = {
        **os.environ,
        "DATASET_REPO": str(published),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(workdir / "gradio-tmp"),
        "HF_HOME": str(workdir / "hf-home"),
    }
    started = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(APP)], cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not listen in 300 s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "config", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield url, log, time.perf_counter() - started
    finally:
        stop_process(proc, timeout=20)


def make_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def fetch_result_images(url: str, gallery) -> None:
    """Download every image of a gallery answer; raise unless each arrives whole and decodes."""
    from PIL import Image

    for item in gallery:
        image = item["image"]
        link = image["url"] if isinstance(image, dict) else image
        link = link if link.startswith("http") else url.rstrip("/") + "/" + link.lstrip("/")
        with urllib.request.urlopen(link, timeout=REQUEST_TIMEOUT) as answer:
            data = answer.read()
            declared = int(answer.headers["Content-Length"])
        if len(data) != declared:
            raise RuntimeError(f"image cut short: {len(data)} of {declared} bytes")
        Image.open(io.BytesIO(data)).load()


def one_query(client, kind: str, n: int, inputs: Inputs, overlap_url: str | None = None):
    """Send one query of ``kind``; return (seconds, error text or None).

    With ``overlap_url``, every client draws from the same two texts and one photo, so that
    concurrent answers return the same images, and each answer's images are downloaded from
    that server and checked (complete, decodable): the race that truncated a file one response
    was still streaming shows up as an error here.
    """
    from gradio_client import handle_file

    started = time.perf_counter()
    if kind == "image":
        pool = inputs.query_images[:1] if overlap_url else inputs.query_images
        photo = pool[n % len(pool)]
        job = client.submit(image=handle_file(str(photo)), k=K, api_name="/search_image")
    else:
        pool = inputs.texts[:2] if overlap_url else inputs.texts
        text = pool[(n * 7919) % len(pool)]
        deep = kind == "deep"
        job = client.submit(query=text, k=K, deep=deep, alpha=0.6, api_name="/search")
    try:
        gallery, results, status = job.result(timeout=REQUEST_TIMEOUT)
    except Exception as err:  # any failure of the request is an error in the table
        return time.perf_counter() - started, f"{type(err).__name__}: {str(err)[:120]}"
    seconds = time.perf_counter() - started
    if len(results) != K or len(gallery) != K or f"{K} sonuç" not in str(status):
        return seconds, f"unexpected answer: {str(status)[:120]}"
    if overlap_url:
        try:
            fetch_result_images(overlap_url, gallery)
        except Exception as err:  # a cut or undecodable image is an error of this request
            return seconds, f"image download: {type(err).__name__}: {str(err)[:120]}"
    return seconds, None


# --- one measured phase -------------------------------------------------------------------------


@dataclass
class Phase:
    size: str
    clients: int
    per_client: int
    overlap: bool = False
    latencies: dict = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list = field(default_factory=list)
    probe: list = field(default_factory=list)
    probe_errors: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return self.clients * self.per_client

    def all_latencies(self) -> list[float]:
        return [s for kind in KINDS for s in self.latencies[kind]]


def page_probe(url: str, stop: threading.Event, phase: Phase) -> None:
    """GET / every PROBE_INTERVAL seconds until stopped; record each fetch's seconds."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                answer.read()
                ok = answer.status == 200
        except OSError:
            ok = False
        elapsed = time.perf_counter() - started
        if ok:
            phase.probe.append(elapsed)
        else:
            phase.probe_errors += 1
        stop.wait(max(0.0, PROBE_INTERVAL - elapsed))


def run_phase(
    url: str, size: str, clients: int, per_client: int, inputs: Inputs, overlap: bool = False
) -> Phase:
    phase = Phase(size, clients, per_client, overlap)
    connected = [make_client(url) for _ in range(clients)]
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def work(index: int, client) -> None:
        start_gate.wait()
        for n in range(per_client):
            kind = KINDS[(index + n) % len(KINDS)]  # every client mixes all three kinds
            overlap_url = url if phase.overlap else None
            seconds, error = one_query(client, kind, index * per_client + n, inputs, overlap_url)
            with lock:
                if error is None:
                    phase.latencies[kind].append(seconds)
                else:
                    phase.errors.append(f"{kind}: {error}")

    threads = [
        threading.Thread(target=work, args=(i, c), daemon=True) for i, c in enumerate(connected)
    ]
    stop = threading.Event()
    probe = threading.Thread(target=page_probe, args=(url, stop, phase), daemon=True)
    for thread in threads:
        thread.start()
    probe.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    phase.seconds = time.perf_counter() - started
    stop.set()
    probe.join()
    for client in connected:
        with contextlib.suppress(Exception):
            client.close()
    return phase


# --- reporting ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"


def table(phases: list[Phase]) -> list[str]:
    head = (
        f"{'results':>8} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'req/s':>6} {'page p50':>8} {'page p95':>8} {'page max':>8} {'probes':>6}"
    )
    rows = [head, "-" * len(head)]
    for p in phases:
        lat = p.all_latencies()
        rows.append(
            f"{'overlap' if p.overlap else 'distinct':>8} "
            f"{p.clients:>7} {p.requests:>8} {len(p.errors):>6} {ms(pct(lat, 50)):>7} "
            f"{ms(pct(lat, 95)):>7} {len(lat) / p.seconds:>6.2f} {ms(pct(p.probe, 50)):>8} "
            f"{ms(pct(p.probe, 95)):>8} {ms(max(p.probe, default=float('nan'))):>8} "
            f"{len(p.probe) + p.probe_errors:>6}"
        )
    rows.append("")
    kinds = "  ".join(f"{k:>6}" for k in KINDS)
    rows.append(f"{'results':>8} {'clients':>7}   p50 ms by kind: {kinds}")
    for p in phases:
        rows.append(
            f"{'overlap' if p.overlap else 'distinct':>8} {p.clients:>7}   {'':16}"
            + "  ".join(f"{ms(pct(p.latencies[k], 50)):>6}" for k in KINDS)
        )
    return rows


def machine_lines() -> list[str]:
    import gradio
    import gradio_client
    import torch

    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"cpu           {cpu}, {os.cpu_count()} logical cores, {usable} usable",
        f"python        {platform.python_version()}; torch {torch.__version__}; "
        f"gradio {gradio.__version__}; gradio_client {gradio_client.__version__}",
        f"load average  {load} (1/5/15 min) at start; the clients run on the same cores",
    ]


def load_line(log: Path) -> str:
    """How long the app said loading the Searcher took."""
    for line in log.read_text(errors="replace").splitlines():
        if "loaded " in line and "images, model" in line:
            return "Searcher loaded in " + line.rsplit(" in ", 1)[-1].strip()
    return "no load line in the app log"


def default_dtype() -> str:
    """The dtype the app's Encoder picks by default on this machine (dtype=None)."""
    from imagesearchtr.encoder import pick_device, pick_dtype

    return str(pick_dtype(None, pick_device("auto"))).replace("torch.", "")


def section(title: str) -> None:
    print()
    print(title)
    print("=" * len(title), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1 and 4")
    parser.add_argument("--sizes", default=None, help="comma-separated: tiny,full")
    parser.add_argument("--clients", default=None, help="comma-separated concurrency levels")
    parser.add_argument("--queries", type=int, default=None, help="queries per client")
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="skip the last phase, where all clients get the same images and download them",
    )
    args = parser.parse_args(argv)
    sizes = (args.sizes or ("tiny" if args.quick else "tiny,full")).split(",")
    levels = [int(c) for c in (args.clients or ("1,4" if args.quick else "1,4,16")).split(",")]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")

    section("ImageSearchTR load test (space/app.py through gradio_client, 127.0.0.1)")
    print("\n".join(machine_lines()))
    print(f"command       python benchmarks/load.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(
        f"each request  k={K}; kinds cycle {' / '.join(KINDS)}; error = exception, timeout "
        f"({REQUEST_TIMEOUT:.0f} s) or not '{K} sonuç'; page probe GET / every {PROBE_INTERVAL} s"
    )
    total_started = time.perf_counter()
    failed = False
    tmp = Path(tempfile.mkdtemp(prefix="imagesearchtr-load-"))
    try:
        for size in sizes:
            _, n_images, per_client = SIZES[size]
            if args.quick:
                per_client = 3
            if args.queries:
                per_client = args.queries
            inputs = load_inputs(n_images, tmp)
            published, build_s = build_published(size, tmp, inputs)
            manifest = json.loads((published / "index" / "manifest.json").read_text())
            with running_app(published, tmp) as (url, log, start_s):
                section(f"model size: {size}")
                print(
                    f"data          {inputs.note}; {manifest['num_rows']} rows, "
                    f"dim {manifest['dim']}"
                )
                print(f"build         {build_s:.0f} s (checkpoint, encode, index, publish)")
                print(
                    f"app           listening after {start_s:.1f} s; {load_line(log)}; "
                    f"encoder dtype {default_dtype()} (the default)"
                )
                # Untimed warm-up: one query of each kind (first calls load kernels, caches).
                warm = make_client(url)
                for n, kind in enumerate(KINDS):
                    _, error = one_query(warm, kind, n, inputs)
                    if error:
                        raise RuntimeError(f"warm-up {kind} query failed: {error}")
                warm.close()
                phases = []
                overlap_levels = [] if args.no_overlap else [max(levels)]
                plan = [(c, False) for c in levels] + [(c, True) for c in overlap_levels]
                for clients, overlap in plan:
                    phase = run_phase(url, size, clients, per_client, inputs, overlap)
                    phases.append(phase)
                    print(
                        f"  {clients:>2} client(s) x {per_client} queries"
                        f"{', overlapping results' if overlap else ''}: "
                        f"{phase.seconds:.1f} s, {len(phase.errors)} errors",
                        flush=True,
                    )
                print()
                print("\n".join(table(phases)))
                errors = [e for p in phases for e in p.errors]
                if errors:
                    failed = True
                    print(f"\n{len(errors)} errors, first ones:")
                    for line in errors[:5]:
                        print(f"  {line}")
                tracebacks = log.read_text(errors="replace").count("Traceback")
                print(f"\napp log: {tracebacks} tracebacks")
                failed |= tracebacks > 0
            shutil.rmtree(published, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\ntotal {time.perf_counter() - total_started:.0f} s; "
        f"{'FAIL: errors above' if failed else 'PASS: 0 errors'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
