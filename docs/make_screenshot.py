"""Regenerate docs/screenshot.png: the Space's search page, made from synthetic pictures only.

Run from anywhere: ``python docs/make_screenshot.py [--out docs/screenshot.png]``. Needs the
project's test extra (selenium) and Debian's ``chromium`` and ``chromium-driver``; runs offline
in one to two minutes on a laptop CPU.

Reads only this repository (``tests/tiny_checkpoint.py``, the ``pipeline`` package, ``space/``);
writes ``--out`` and, until it ends, one temporary folder (removed at the end, as are the app
and the browser it starts). In that folder it

1. draws 48 simple pictures with Pillow (snowy mountains, sunsets over the sea, a red ball on
   grass, a yellow bicycle, a city at night, a dog in the snow, swans on a lake, a flower
   meadow; colours and positions vary with a seeded RNG) into ``pictures/`` and writes
   ``pictures/captions.jsonl`` with a Turkish caption per picture, written for this script;
2. writes a tiny random-weight MultiEmbedTR checkpoint (``write_tiny_checkpoint``);
3. runs ``python -m pipeline encode``, ``index``, ``publish --to synthetic-photos`` and
   ``publish-space --to space``, as a user does (README, "Commands");
4. starts the published ``space/app.py`` on a free loopback port and drives headless chromium
   with selenium: types "karlı dağlar", ticks Deep Search, sets the balance to 0.3 and the
   result count to 6, presses Enter, waits for the gallery, checks that it shows the expected
   results, and saves the page, cropped to its content and quantised to 256 colours.

The model is a tiny RANDOM one, not MultiEmbedTR: it understands neither the pictures nor the
Turkish. The snowy mountains come first only because Deep Search with a low balance (0.3:
captions count more than images) ranks mostly by how close each caption's embedding is to the
query's, and the random text encoder keeps captions that share the query's words ("karlı
dağlar") close to it. The image half of each score is noise. No photo from any dataset is used,
so the screenshot can be committed and published freely.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERY = "karlı dağlar"
ALPHA = "0.3"
RESULTS = "6"
WIDTH, HEIGHT = 320, 240
SCALE = 2  # draw at twice the size, then downsample: smooth edges
WINDOW = (1100, 1500)  # CSS pixels; the page is cropped to its content (about 1020 x 1110)
MARGIN = 32  # CSS pixels kept around the content
SEED = 7
# The tiny checkpoint's tokenizer is trained anew each time, and tokenizers' WordPiece trainer
# breaks ties at random: each checkpoint embeds the captions a little differently. If the
# mountains are not all in the top RESULTS with one (rare with the captions below), try another.
ATTEMPTS = 5

# ---------------------------------------------------------------------------------------------
# Synthetic pictures
# ---------------------------------------------------------------------------------------------


def jitter(rng: random.Random, colour: tuple[int, int, int], amount: int = 18):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def gradient(draw: ImageDraw.ImageDraw, box, top, bottom) -> None:
    """A vertical gradient from ``top`` to ``bottom`` filling ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(x0, y), (x1, y)], fill=colour)


def canvas():
    image = Image.new("RGB", (WIDTH * SCALE, HEIGHT * SCALE))
    return image, ImageDraw.Draw(image), WIDTH * SCALE, HEIGHT * SCALE


def finish(image: Image.Image) -> Image.Image:
    return image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)


def draw_mountains(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    gradient(draw, (0, 0, w, h), jitter(rng, (40, 110, 200)), jitter(rng, (170, 210, 245)))
    if rng.random() < 0.6:  # the sun
        x, y, r = rng.randint(40, w - 40), rng.randint(30, h // 4), rng.randint(16, 26)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 250, 225))
    for _ in range(rng.randint(1, 3)):  # clouds
        x, y = rng.randint(0, w), rng.randint(20, h // 3)
        for dx in (-30, 0, 30):
            r = rng.randint(16, 26)
            draw.ellipse((x + dx - r * 2, y - r, x + dx + r * 2, y + r), fill=(248, 250, 255))
    horizon = int(h * rng.uniform(0.7, 0.78))
    for layer in range(2):  # far range (blue-grey) then near range (darker grey)
        base = jitter(rng, (125, 140, 165) if layer == 0 else (95, 100, 115), 12)
        peaks = sorted(rng.uniform(-0.1, 1.1) * w for _ in range(rng.randint(2, 3)))
        for px in peaks:
            top = rng.uniform(0.08, 0.2) * h + layer * 55
            half = rng.uniform(0.3, 0.45) * w
            bottom = horizon + 10
            draw.polygon([(px - half, bottom), (px, top), (px + half, bottom)], fill=base)
            shade = tuple(max(0, c - 25) for c in base)
            draw.polygon([(px, top), (px + half, bottom), (px + half * 0.15, bottom)], fill=shade)
            cap = rng.uniform(0.3, 0.45)  # the snow-covered part of the slope
            cy = top + (bottom - top) * cap
            cx = half * cap
            notches = [
                (px + cx, cy),
                (px + cx * 0.5, cy - 10),
                (px + cx * 0.1, cy + 8),
                (px - cx * 0.4, cy - 12),
                (px - cx, cy),
            ]
            draw.polygon([(px, top), *notches], fill=(250, 252, 255))
            draw.polygon(
                [(px, top), (px + cx, cy), (px + cx * 0.5, cy - 10), (px + 2, top + 6)],
                fill=(215, 225, 240),
            )
    gradient(draw, (0, horizon, w, h), (245, 248, 252), (210, 222, 238))
    for _ in range(rng.randint(3, 9)):  # a few pines on the snowfield
        x, y, s = rng.randint(0, w), rng.randint(horizon + 10, h - 10), rng.randint(18, 34)
        draw.polygon([(x - s // 2, y), (x, y - s * 2), (x + s // 2, y)], fill=(30, 70, 50))
    return finish(image)


def draw_sunset(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    horizon = int(h * rng.uniform(0.55, 0.65))
    gradient(draw, (0, 0, w, horizon), jitter(rng, (90, 50, 130)), jitter(rng, (255, 170, 70)))
    x, r = rng.randint(w // 4, 3 * w // 4), rng.randint(36, 56)
    y = horizon - rng.randint(-r // 2, r)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=jitter(rng, (255, 120, 40), 12))
    gradient(draw, (0, horizon, w, h), jitter(rng, (40, 80, 140)), jitter(rng, (10, 30, 70)))
    for i in range(14):  # the sun's reflection on the water
        yy = horizon + 6 + i * (h - horizon) // 15
        half = r * (1.1 - i / 16) * rng.uniform(0.6, 1.0)
        draw.line([(x - half, yy), (x + half, yy)], fill=(255, 160, 80), width=3)
    if rng.random() < 0.5:  # a sailing boat
        bx = rng.randint(30, w - 60)
        draw.polygon(
            [
                (bx, horizon + 14),
                (bx + 50, horizon + 14),
                (bx + 40, horizon + 24),
                (bx + 8, horizon + 24),
            ],
            fill=(20, 20, 35),
        )
        draw.polygon(
            [(bx + 24, horizon + 12), (bx + 24, horizon - 40), (bx + 46, horizon + 10)],
            fill=(30, 25, 45),
        )
    return finish(image)


def draw_ball(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    horizon = int(h * rng.uniform(0.25, 0.4))
    gradient(draw, (0, 0, w, horizon), jitter(rng, (120, 180, 240)), (200, 230, 250))
    draw.rectangle((0, horizon - 30, w, horizon), fill=jitter(rng, (40, 110, 50)))  # hedge
    gradient(draw, (0, horizon, w, h), jitter(rng, (90, 170, 70)), jitter(rng, (50, 120, 40)))
    for _ in range(500):  # blades of grass
        x, y = rng.randint(0, w), rng.randint(horizon, h)
        draw.line(
            [(x, y), (x + rng.randint(-4, 4), y - rng.randint(6, 14))],
            fill=jitter(rng, (60, 140, 50), 25),
            width=2,
        )
    x, y, r = rng.randint(120, w - 120), rng.randint(horizon + 110, h - 70), rng.randint(45, 70)
    draw.ellipse((x - r, y + r - 12, x + r + 20, y + r + 14), fill=(40, 80, 30))  # shadow
    draw.ellipse((x - r, y - r, x + r, y + r), fill=jitter(rng, (210, 30, 35), 15))
    draw.ellipse((x - r // 2, y - r * 3 // 4, x - r // 8, y - r // 3), fill=(245, 120, 120))
    return finish(image)


def draw_bicycle(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    ground = int(h * rng.uniform(0.72, 0.8))
    gradient(draw, (0, 0, w, ground), jitter(rng, (200, 190, 175)), jitter(rng, (165, 155, 145)))
    for bx in range(0, w, 60):  # a brick wall
        for by in range(0, ground, 30):
            off = 30 if (by // 30) % 2 else 0
            draw.rectangle((bx + off, by, bx + off + 56, by + 26), outline=(150, 140, 130), width=2)
    draw.rectangle((0, ground, w, h), fill=jitter(rng, (110, 110, 115), 10))
    r = rng.randint(62, 72)
    x0 = rng.randint(r + 30, w - 3 * r - 70)
    back, front = (x0, ground - r - 4), (x0 + int(r * 2.7), ground - r - 4)
    for cx, cy in (back, front):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(25, 25, 25), width=9)
        for k in range(12):
            a = k * math.pi / 6
            draw.line(
                [(cx, cy), (cx + r * math.cos(a), cy + r * math.sin(a))],
                fill=(150, 150, 150),
                width=2,
            )
    yellow = jitter(rng, (245, 200, 20), 12)
    crank = (back[0] + int(r * 1.2), back[1])
    seat = (back[0] + int(r * 0.8), back[1] - int(r * 1.2))
    head = (front[0] - int(r * 0.35), front[1] - int(r * 1.1))
    for a, b in (
        (back, crank),
        (back, seat),
        (seat, crank),
        (crank, head),
        (seat, head),
        (head, front),
    ):
        draw.line([a, b], fill=yellow, width=11)
    draw.line(
        [(seat[0] - 22, seat[1] - 8), (seat[0] + 24, seat[1] - 8)], fill=(30, 30, 30), width=10
    )
    draw.line([(head[0], head[1]), (head[0] + 10, head[1] - 26)], fill=(30, 30, 30), width=8)
    draw.line(
        [(head[0] - 10, head[1] - 26), (head[0] + 30, head[1] - 30)], fill=(30, 30, 30), width=8
    )
    draw.ellipse((crank[0] - 14, crank[1] - 14, crank[0] + 14, crank[1] + 14), fill=(60, 60, 60))
    return finish(image)


def draw_city(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    gradient(draw, (0, 0, w, h), jitter(rng, (10, 12, 40), 8), jitter(rng, (45, 35, 80), 10))
    for _ in range(60):  # stars
        x, y = rng.randint(0, w), rng.randint(0, h // 2)
        draw.point((x, y), fill=(230, 230, 255))
    if rng.random() < 0.6:
        x, y = rng.randint(40, w - 40), rng.randint(30, 90)
        draw.ellipse((x - 20, y - 20, x + 20, y + 20), fill=(245, 240, 210))
    x = -10
    while x < w:
        bw, bh = rng.randint(50, 110), rng.randint(int(h * 0.3), int(h * 0.85))
        colour = jitter(rng, (30, 32, 48), 10)
        draw.rectangle((x, h - bh, x + bw, h), fill=colour)
        for wy in range(h - bh + 12, h - 10, 22):
            for wx in range(x + 8, x + bw - 12, 16):
                if rng.random() < 0.55:
                    lit = jitter(rng, (255, 215, 110), 25)
                    draw.rectangle((wx, wy, wx + 8, wy + 12), fill=lit)
        x += bw + rng.randint(2, 10)
    return finish(image)


def draw_dog_in_snow(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    horizon = int(h * rng.uniform(0.35, 0.45))
    gradient(draw, (0, 0, w, horizon), jitter(rng, (170, 185, 205)), (225, 232, 242))
    for _ in range(rng.randint(4, 9)):  # bare trees at the edge of the field
        x = rng.randint(0, w)
        draw.line([(x, horizon), (x, horizon - rng.randint(40, 90))], fill=(70, 60, 55), width=5)
    gradient(draw, (0, horizon, w, h), (250, 252, 255), (215, 225, 240))
    coat = rng.choice([(95, 60, 30), (30, 28, 28), (150, 105, 60), (120, 120, 125)])
    coat = jitter(rng, coat, 10)
    x, y = w // 2 + rng.randint(-50, 50), rng.randint(horizon + 150, h - 120)
    flip = rng.choice([1, -1])
    draw.ellipse((x - 85, y + 75, x + 95, y + 100), fill=(195, 205, 222))  # shadow
    draw.ellipse((x - 75, y - 32, x + 75, y + 32), fill=coat)  # body
    for lx, swing in ((-55, -18), (-35, 14), (40, -16), (60, 18)):  # running legs
        draw.line([(x + lx, y + 10), (x + lx + swing, y + 85)], fill=coat, width=16)
    hx = x + flip * 90
    draw.line([(x + flip * 55, y - 10), (hx, y - 45)], fill=coat, width=30)  # neck
    draw.ellipse((hx - 30, y - 75, hx + 30, y - 20), fill=coat)  # head
    draw.ellipse(
        (hx + flip * 18 - 20, y - 55, hx + flip * 18 + 20 + flip * 18, y - 30), fill=coat
    )  # muzzle
    draw.polygon(
        [(hx - flip * 12, y - 70), (hx - flip * 30, y - 40), (hx - flip * 2, y - 52)],
        fill=tuple(max(0, c - 30) for c in coat),
    )  # ear
    draw.ellipse((hx + flip * 8 - 4, y - 60, hx + flip * 8 + 4, y - 52), fill=(15, 15, 15))
    draw.line([(x - flip * 72, y - 12), (x - flip * 110, y - 50)], fill=coat, width=12)  # tail
    for _ in range(40):  # kicked-up snow
        sx, sy = x - flip * rng.randint(60, 160), y + rng.randint(40, 95)
        draw.ellipse((sx - 4, sy - 4, sx + 4, sy + 4), fill=(255, 255, 255))
    return finish(image)


def draw_swans(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    shore = int(h * rng.uniform(0.3, 0.4))
    gradient(draw, (0, 0, w, shore), jitter(rng, (130, 190, 235)), (210, 235, 250))
    for _ in range(14):  # trees on the far shore
        x, r = rng.randint(0, w), rng.randint(25, 45)
        draw.ellipse((x - r, shore - 2 * r, x + r, shore + 6), fill=jitter(rng, (45, 110, 55)))
    gradient(draw, (0, shore, w, h), jitter(rng, (70, 130, 170)), jitter(rng, (30, 80, 120)))
    for _ in range(rng.randint(1, 3)):
        x, y = rng.randint(80, w - 100), rng.randint(shore + 60, h - 60)
        draw.ellipse((x - 50, y - 20, x + 45, y + 22), fill=(250, 250, 250))  # body
        draw.line([(x + 32, y - 5), (x + 40, y - 70)], fill=(250, 250, 250), width=12)  # neck
        draw.ellipse((x + 30, y - 86, x + 56, y - 64), fill=(250, 250, 250))  # head
        draw.polygon([(x + 54, y - 78), (x + 72, y - 72), (x + 54, y - 68)], fill=(240, 120, 30))
        draw.line([(x - 60, y + 26), (x + 55, y + 26)], fill=(170, 200, 220), width=3)
    return finish(image)


def draw_flowers(rng: random.Random) -> Image.Image:
    image, draw, w, h = canvas()
    gradient(draw, (0, 0, w, h), jitter(rng, (120, 180, 90)), jitter(rng, (40, 100, 40)))
    palette = [(230, 60, 90), (250, 200, 40), (240, 240, 245), (170, 90, 210), (250, 130, 40)]
    for _ in range(rng.randint(28, 45)):
        x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(10, 22)
        draw.line([(x, y), (x + rng.randint(-6, 6), y + 60)], fill=(40, 110, 40), width=4)
        colour = jitter(rng, rng.choice(palette), 15)
        for k in range(6):
            a = k * math.pi / 3
            px, py = x + r * math.cos(a), y + r * math.sin(a)
            draw.ellipse((px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7), fill=colour)
        draw.ellipse((x - r * 0.5, y - r * 0.5, x + r * 0.5, y + r * 0.5), fill=(250, 210, 60))
    return finish(image.filter(ImageFilter.SMOOTH))


# (name, drawer, how many, captions): each picture gets one caption, in turn. With the tiny random
# model the caption ranking is noise around word overlap, so these were picked from candidates
# over a dozen tiny checkpoints: each mountain caption stays close to "karlı dağlar", each other
# caption far from it (see ``check_ranking`` for the rest).
SCENES = [
    (
        "mountains",
        draw_mountains,
        8,
        [
            "Mavi gökyüzü altında karlı dağlar.",
            "Uzakta karlı dağlar.",
            "Karlı dağlar ve güneş.",
            "Karlı dağlar ve ormanlar.",
            "Karlı dağlarda kış.",
            "Kışın karlı dağlar.",
            "Karlı dağlar ve gökyüzü.",
            "Karlı dağların zirvesi.",
        ],
    ),
    (
        "sunset",
        draw_sunset,
        6,
        [
            "Deniz kenarında gün batımı.",
            "Gün batımında denizde bir yelkenli.",
            "Denizin üzerinde turuncu bir gün batımı.",
        ],
    ),
    (
        "ball",
        draw_ball,
        6,
        ["Çimenlerin üzerinde kırmızı bir top.", "Yeşil çimenlerde duran kırmızı bir top."],
    ),
    (
        "bicycle",
        draw_bicycle,
        6,
        ["Duvara dayalı sarı bisiklet.", "Kaldırımda park edilmiş sarı bir bisiklet."],
    ),
    ("city", draw_city, 6, ["Gece ışıkları yanan yüksek binalar."]),
    ("dog", draw_dog_in_snow, 6, ["Kış günü dışarıda koşan bir köpek."]),
    ("swans", draw_swans, 5, ["Gölde yüzen beyaz kuğular.", "Gölde yüzen kuğular."]),
    ("flowers", draw_flowers, 5, ["Rengarenk çiçeklerle dolu bir çayır.", "Rengarenk çiçekler."]),
]


def write_pictures(folder: Path, seed: int = SEED) -> int:
    """Draw every scene into ``folder/images`` and write ``folder/captions.jsonl``."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    records = []
    for name, drawer, count, captions in SCENES:
        for i in range(count):
            path = f"images/{name}-{i + 1:02d}.jpg"
            drawer(rng).save(folder / path, quality=90)
            records.append({"path": path, "caption": captions[i % len(captions)]})
    rng.shuffle(records)  # the index order should not give the answer away
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return len(records)


# ---------------------------------------------------------------------------------------------
# Build, publish, serve
# ---------------------------------------------------------------------------------------------


def pipeline(cwd: Path, *args, env: dict) -> None:
    """``python -m pipeline ARGS`` run in ``cwd``; fail with its output."""
    cmd = [sys.executable, "-m", "pipeline", *map(str, args)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    print(f"ok: pipeline {args[0]}", flush=True)


def build(work: Path, env: dict) -> None:
    """Checkpoint, build, published dataset and Space under ``work``, from ``work/pictures``.

    The commands run in ``work`` with relative paths, so the page shows ``veri synthetic-photos``
    (the model, a local folder, is recorded with its full path).
    """
    for name in ("tiny-random-model", "build", "synthetic-photos", "space"):
        shutil.rmtree(work / name, ignore_errors=True)
    if str(REPO_ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_checkpoint import write_tiny_checkpoint

    write_tiny_checkpoint(work / "tiny-random-model")
    pipeline(
        work,
        "encode",
        "--data",
        "pictures",
        "--model",
        "tiny-random-model",
        "--out",
        "build",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        env=env,
    )
    pipeline(work, "index", "--build", "build", env=env)
    pipeline(work, "publish", "--build", "build", "--to", "synthetic-photos", env=env)
    pipeline(work, "publish-space", "--to", "space", "--dataset-repo", "synthetic-photos", env=env)


def check_ranking(work: Path, env: dict) -> list[str]:
    """The captions of the top results the page will show, asked of the published dataset."""
    script = (
        "import json, sys\n"
        "from imagesearchtr import Searcher\n"
        "hits = Searcher.from_repo('synthetic-photos').search_text(sys.argv[1], int(sys.argv[2]),"
        " alpha=float(sys.argv[3]))\n"
        "print(json.dumps([h.captions[0] for h in hits]))\n"
    )
    cmd = [sys.executable, "-c", script, QUERY, RESULTS, ALPHA]
    # The published copy of imagesearchtr, the code the app runs.
    done = subprocess.run(
        cmd, cwd=work, env={**env, "PYTHONPATH": "space"}, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"checking the ranking failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app.py exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"app.py did not listen within {timeout} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """End the app (its own process group) and wait for it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------


def browser(profile: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


def set_number(b, elem_id: str, value: str) -> None:
    """Type ``value`` into the number box of the slider ``#elem_id`` and commit it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = b.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    box.send_keys(Keys.TAB)


def take_screenshot(url: str, profile: Path) -> tuple[Image.Image, list[str], str]:
    """Search on the page; return its screenshot (cropped, quantised), the captions the gallery
    shows and the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    b = browser(profile)
    try:
        b.get(url)
        wait = WebDriverWait(b, 60)
        box = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#query textarea, #query input"))
        b.find_element(By.CSS_SELECTOR, "#deep input[type=checkbox]").click()
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#alpha input[type=number]"))
        set_number(b, "alpha", ALPHA)
        set_number(b, "k", RESULTS)
        box.click()
        box.send_keys(QUERY)
        box.send_keys(Keys.ENTER)

        def loaded(b):
            found = b.find_elements(By.CSS_SELECTOR, "#results img")
            ready = [
                i
                for i in found
                if i.get_attribute("src")
                and b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
            ]
            return len(ready) >= int(RESULTS) and "sonuç" in b.find_element(By.ID, "status").text

        wait.until(loaded)
        status = b.find_element(By.ID, "status").text
        labels = b.find_elements(By.CSS_SELECTOR, "#results .caption-label")
        shown = [label.get_attribute("textContent").split(" · ", 1)[-1] for label in labels]
        b.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        time.sleep(1.0)  # let the gallery's fade-in finish
        # The gallery spans the content's width: crop to it, with a margin, and below it.
        box = b.execute_script(
            "const r = document.getElementById('results').getBoundingClientRect();"
            "return [r.left, r.right, r.bottom]"
        )
        png = b.get_screenshot_as_png()
    finally:
        b.quit()
    shot = Image.open(io.BytesIO(png))
    ratio = shot.width / WINDOW[0]  # device pixels per CSS pixel
    left, right, bottom = (round(v * ratio) for v in box)
    margin = round(MARGIN * ratio)
    shot = shot.crop(
        (
            max(0, left - margin),
            0,
            min(shot.width, right + margin),
            min(shot.height, bottom + margin // 2),
        )
    )
    shot = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=0)
    return shot, shown, status


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "docs" / "screenshot.png", help="PNG to write"
    )
    args = parser.parse_args()
    out = args.out.resolve()

    work = Path(tempfile.mkdtemp(prefix="imagesearchtr-"))
    env = {
        **os.environ,
        "HF_HOME": str(work / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TOKENIZERS_PARALLELISM": "false",
    }
    app = None
    try:
        print(f"drew {write_pictures(work / 'pictures')} synthetic pictures", flush=True)
        for attempt in range(1, ATTEMPTS + 1):
            build(work, env)
            top = check_ranking(work, env)
            if all("karlı dağ" in caption.lower() for caption in top):
                break
            print(f"attempt {attempt}: not all top results are mountains: {top}", flush=True)
        else:
            sys.exit(f"no tiny checkpoint in {ATTEMPTS} put the mountains first")
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        log = work / "app.log"
        with log.open("w") as log_file:
            app = subprocess.Popen(
                [sys.executable, "space/app.py"],
                cwd=work,
                env={
                    **env,
                    "DATASET_REPO": "synthetic-photos",
                    "GRADIO_SERVER_NAME": "127.0.0.1",
                    "GRADIO_SERVER_PORT": str(port),
                },
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        wait_listening(url, app, log)
        shot, shown, status = take_screenshot(url, work / "chromium-profile")
        if shown != top:  # e.g. the balance or the result count did not reach the app
            sys.exit(f"the page shows {shown}, not the expected {top}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shot.save(out, optimize=True)
        size = out.stat().st_size // 1024
        print(f"wrote {out} ({shot.width}x{shot.height}, {size} KB): {status}")
    finally:
        if app is not None:
            stop(app)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
