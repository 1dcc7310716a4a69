"""Peak memory of opening one large query image (``imagesearchtr.images.open_image``), this
version against another version's ``space/`` folder, side by side in one run.

    python benchmarks/image_memory.py --compare DIR [--readme]

DIR holds the ``space/`` folder of the version to compare with, e.g. ``git archive e39f66e space |
tar -x -C /tmp/before``. Writes four synthetic images of just under the 64-megapixel limit
(flat colour: small files, the worst case of decoded size per uploaded byte) into a temporary
folder, then opens each in a fresh process per version (peak RSS above the process's own
baseline, Linux's VmHWM) and prints the ratio this / that. ``--readme`` writes the table into
benchmarks/README.md (section ``image_memory``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, machine_line, write_readme_section
from PIL import Image

SIDE = (8000, 7999)  # 63,992,000 pixels: just under MAX_PIXELS
ROUNDS = 3  # processes per image and version; the lowest peak counts

# One process: the peak RSS (MB) that open_image adds, printed alone. VmHWM, not ru_maxrss: a
# process keeps the ru_maxrss of the one that forked it (this script, which made the images).
MEASURE = """
import sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
from imagesearchtr.images import open_image

def peak_kb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])

base = peak_kb()
open_image(sys.argv[2])
print((peak_kb() - base) / 1024)
"""


def images(folder: Path) -> dict[str, Path]:
    """The four kinds whose conversion to RGB costs most: 16-bit, float, RGBA and RGB."""
    width, height = SIDE
    made = {
        "16-bit PNG": (Image.fromarray(np.full((height, width), 40000, np.uint16)), "png"),
        "float TIFF": (Image.fromarray(np.full((height, width), 0.5, np.float32), "F"), "tiff"),
        "RGBA PNG": (Image.new("RGBA", SIDE, (200, 30, 30, 128)), "png"),
        "RGB PNG": (Image.new("RGB", SIDE, (200, 30, 30)), "png"),
    }
    paths = {}
    for name, (image, suffix) in made.items():
        paths[name] = folder / f"{name.split()[0]}-{suffix}.{suffix}"
        image.save(paths[name])
    return paths


def peak_mb(space: Path, image: Path) -> float:
    runs = [
        subprocess.run(
            [sys.executable, "-c", MEASURE, str(space), str(image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(ROUNDS)
    ]
    return min(float(out.strip().splitlines()[-1]) for out in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, required=True, help="folder holding space/")
    parser.add_argument("--readme", action="store_true", help="write benchmarks/README.md")
    args = parser.parse_args()
    that = args.compare / "space"
    if not (that / "imagesearchtr" / "images.py").is_file():
        parser.error(f"--compare {args.compare}: no space/imagesearchtr/images.py in it")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, path in images(Path(work)).items():
            this_mb, that_mb = peak_mb(REPO_ROOT / "space", path), peak_mb(that, path)
            size = path.stat().st_size
            rows.append(
                f"| {name} | {size / 1e3:,.0f} kB | {this_mb:,.0f} | {that_mb:,.0f} | "
                f"{this_mb / that_mb:.2f}x |"
            )
    text = "\n".join(
        [
            "## Peak memory of opening a large query image (`python benchmarks/image_memory.py`)",
            "",
            f"`--compare {args.compare}`. {machine_line()}. {SIDE[0]}x{SIDE[1]} synthetic "
            f"images (just under the 64-megapixel limit); peak RSS that `open_image` adds, the "
            f"lowest of {ROUNDS} fresh processes per image and version.",
            "",
            "| image | file | this version MB | compared MB | this / compared |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    print(text)
    if args.readme:
        write_readme_section("image_memory", text)


if __name__ == "__main__":
    main()
