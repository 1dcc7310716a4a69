"""What a result page of large photos costs the Space: the images as stored against the images
scaled to the app's ``GALLERY_MAX_SIDE``.

Run: ``python benchmarks/gallery.py [--rows 20] [--pages 10] [--work DIR]`` (about a minute on
2 cores; no model).

Reads nothing but the project. Writes into ``--work`` (a temporary folder, deleted, unless
given): ``repo/``, a published-repo folder (``tests/search_repo.write_repo``) of ``--rows``
synthetic 12-megapixel JPEGs (a smooth picture plus pixel noise, so that they compress like
photos, not like flat colour), and the gallery's result files under gradio's upload folder
(``GRADIO_TEMP_DIR`` is pointed into ``--work``); and the figures into benchmarks/README.md
(section ``gallery``).

Measures, alternating the two Searchers page by page on the same queries: the wall time of a
page of k=10 as the app makes it (``Searcher.search_vector``, which fetches and decodes the
hits' images, then ``app.hits_to_outputs``, which writes the gallery's JPEG files) and the bytes
of the files a visitor's browser then downloads. Then, with PIL alone (outside the Searcher),
the JPEG decode behind it: one photo decoded and fitted with ``draft`` (decoding at a reduced
scale) and without.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

K = 10
WIDTH, HEIGHT = 4000, 3000  # a 12-megapixel phone photo


def photo(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 6.3, 3)
    channels = [127 + 100 * np.sin(6 * x + 4 * y + p) for p in phase]
    rgb = np.stack(channels, axis=-1) + rng.integers(-12, 13, (HEIGHT, WIDTH, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def load_app():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("app", _common.REPO_ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20, help="synthetic photos (20)")
    parser.add_argument("--pages", type=int, default=10, help="timed pages per Searcher (10)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.rows < K:
        parser.error(f"--rows must be at least {K}, the page size")
    with tempfile.TemporaryDirectory() as tmp:
        run(args, args.work or Path(tmp))


def run(args, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
    from search_repo import FakeEncoder, write_repo

    from imagesearchtr import Searcher

    machine = _common.machine_line()
    app = load_app()
    images = [photo(seed) for seed in range(args.rows)]
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((args.rows, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    shutil.rmtree(work / "repo", ignore_errors=True)
    write_repo(work / "repo", emb, images=images)
    sides = {"as stored": None, f"GALLERY_MAX_SIDE ({app.GALLERY_MAX_SIDE})": app.GALLERY_MAX_SIDE}
    searchers = {
        name: Searcher.from_repo(
            work / "repo", encoder=FakeEncoder(16), cache_dir=work / "cache", image_max_side=side
        )
        for name, side in sides.items()
    }
    queries = emb[rng.integers(0, args.rows, args.pages + 1)]
    times = {name: [] for name in searchers}
    served = {name: [] for name in searchers}
    for number, query in enumerate(queries):
        for name, searcher in searchers.items() if number % 2 else reversed(searchers.items()):
            started = time.perf_counter()
            gallery, _ = app.hits_to_outputs(searcher.search_vector(query, k=K))
            elapsed = time.perf_counter() - started
            if number:  # the first page of each is a warm-up
                times[name].append(elapsed)
                served[name].append(sum(Path(path).stat().st_size for path, _ in gallery))

    draft = decode_alone(images[0], app.GALLERY_MAX_SIDE)
    lines = [
        "## Gallery images of large photos (`python benchmarks/gallery.py`)",
        "",
        f"Machine: {machine}. {args.rows} synthetic {WIDTH}x{HEIGHT} JPEGs (quality 90, "
        f"{statistics.mean(map(len, images)) / 1e6:.2f} MB each) in a local repo folder; "
        f"{args.pages} pages of k={K} per Searcher, alternating, after one untimed page each. "
        "A page: `search_vector` (fetch and decode the hits' images) and the app's "
        "`hits_to_outputs` (the gallery's JPEG files).",
        "",
        "| shown images | page p50 ms | page max ms | bytes a page sends to the browser |",
        "| --- | --- | --- | --- |",
    ]
    for name in searchers:
        lines.append(
            f"| {name} | {1e3 * statistics.median(times[name]):.0f} | "
            f"{1e3 * max(times[name]):.0f} | {statistics.median(served[name]):,.0f} |"
        )
    whole, fitted = (statistics.median(times[name]) for name in searchers)
    sent_whole, sent_fitted = (statistics.median(served[name]) for name in searchers)
    lines += [
        "",
        f"Fitted / as stored: page time {fitted / whole:.2f}x, bytes sent "
        f"{sent_fitted / sent_whole:.3f}x.",
        "",
        f"PIL alone, outside the Searcher (the technique `ImageStore` uses): one photo decoded "
        f"and fitted within {app.GALLERY_MAX_SIDE} px (median of 5): "
        f"{draft['draft']:.0f} ms with `draft` (decoded at 1/{draft['scale']:.0f} scale), "
        f"{draft['full']:.0f} ms "
        f"decoding it whole first: {draft['draft'] / draft['full']:.2f}x.",
    ]
    print("\n".join(lines))
    _common.write_readme_section("gallery", "\n".join(lines))


def decode_alone(data: bytes, side: int) -> dict[str, float]:
    """ms to decode one JPEG and fit it within ``side``: with ``draft`` and without."""
    from PIL import Image

    def fit(use_draft: bool) -> None:
        with Image.open(io.BytesIO(data)) as image:
            if use_draft:
                scale = side / max(image.size)
                image.draft("RGB", tuple(max(1, int(s * scale)) for s in image.size))
                out["scale"] = WIDTH / image.size[0]
            rgb = image.convert("RGB")
        rgb.thumbnail((side, side))

    out = {}
    for name, use_draft in (("full", False), ("draft", True)):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            fit(use_draft)
            runs.append(time.perf_counter() - started)
        out[name] = 1e3 * statistics.median(runs)
    return out


if __name__ == "__main__":
    main()
