"""What an update costs: re-encoding a build after adding 1% new images, and re-publishing it.

Makes N random JPEG photos and a random-weight MultiEmbedTR checkpoint (full size by default,
``--tiny`` for the test model), then, through the pipeline's public API:
1. a full encode of the N photos (model load included, as a user runs it), index, and a publish
   to a local test Hub (tests/hub_server.py);
2. N/100 more photos, the same encode command on the same build folder (the update), index,
   and a re-publish.
It reports both encode times, their ratio, and the bytes each publish uploaded as counted by
the test Hub: the LFS uploads, i.e. every data file and index (the manifest and card, a few KB,
travel inline in the commit and are not counted). Writes its section of benchmarks/README.md
(``--readme``).

    python benchmarks/update.py                 # full-size architecture, 300 photos
    python benchmarks/update.py --tiny --images 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/pipeline.py would shadow the pipeline package: the repo root and tests/ go first.
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
README = Path(__file__).resolve().parent / "README.md"
SECTION = "## Updates (benchmarks/update.py)"

FULL_SIZE = _common.FULL_SIZE  # MultiEmbedTR's real sizes (random weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300, help="photos in the first build")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model, not full size")
    parser.add_argument("--readme", action="store_true", help="write benchmarks/README.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagesearchtr-update-bench-"))
    os.environ["HF_HOME"] = str(work / "hf-home")
    from hub_server import run_local_hub

    try:
        with run_local_hub(work / "hub", token="hf_bench_token") as hub:
            os.environ.update(hub.env())  # before huggingface_hub is imported
            report = run(args, work, hub)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report)
    if args.readme:
        write_section(report)
        print(f"wrote the section {SECTION!r} of {README}")


def run(args, work: Path, hub) -> str:
    from conftest import write_photos
    from tiny_checkpoint import write_tiny_checkpoint

    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource
    from pipeline.publish import PublishConfig, publish_to_hub

    sizes = {} if args.tiny else FULL_SIZE
    model = write_tiny_checkpoint(work / "model", formats=("safetensors",), seed=0, **sizes)
    data = write_photos(work / "data", [f"p{i:05d}" for i in range(args.images)], size=(320, 240))
    build = work / "build"
    config = EncodeConfig(out=build, model=str(model), device="cpu")
    repo = f"{hub.user}/update-bench"

    started = time.perf_counter()
    first = run_encode(FolderSource(data), config)
    full_s = time.perf_counter() - started
    run_index(IndexConfig(build=build))
    full_bytes = published_bytes(hub, lambda: publish_to_hub(PublishConfig(build, repo_id=repo)))

    added = max(1, args.images // 100)
    write_photos(data, [f"q{i:05d}" for i in range(added)], size=(320, 240))
    started = time.perf_counter()
    update = run_encode(FolderSource(data), config)
    update_s = time.perf_counter() - started
    run_index(IndexConfig(build=build))
    update_bytes = published_bytes(hub, lambda: publish_to_hub(PublishConfig(build, repo_id=repo)))

    assert (first.encoded_images, update.encoded_images) == (args.images, added)
    model_name = "tiny test model" if args.tiny else "full-size MultiEmbedTR architecture"
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            SECTION,
            "",
            f"`python benchmarks/update.py{' --tiny' if args.tiny else ''} --images "
            f"{args.images}` on {os.cpu_count()} CPU cores ({cpu}), {model_name} with random "
            "weights, 320x240 JPEGs, default encode settings (model load included):",
            "",
            "| step | images encoded | seconds | bytes uploaded by publish |",
            "|---|---:|---:|---:|",
            f"| full build of {args.images} photos | {first.encoded_images} | {full_s:.1f} | "
            f"{full_bytes:,} |",
            f"| update: +{added} photos (1%) | {update.encoded_images} | {update_s:.1f} | "
            f"{update_bytes:,} |",
            "",
            f"The update took {100 * update_s / full_s:.1f}% of the full encode's time and its "
            f"re-publish uploaded {100 * update_bytes / full_bytes:.1f}% of the full publish's "
            "LFS bytes (the new data file and both indices).",
            "",
        ]
    )


def published_bytes(hub, publish) -> int:
    """Bytes of the LFS uploads a publish sent to the test Hub."""
    since = len(hub.requests)
    publish()
    total = 0
    for request in hub.requests[since:]:
        if request["method"] == "PUT" and request["path"].startswith("/_lfs/upload/"):
            match = re.search(r"(?:^|&)size=(\d+)", request["query"] or "")
            total += int(match.group(1)) if match else 0
    return total


def write_section(report: str) -> None:
    _common.write_readme_section("update", report)


if __name__ == "__main__":
    main()
