"""Download a shuffled sample of a Turkish image-caption dataset from the Hub into a folder.

Reads the Hub dataset (default ituperceptron/image-captioning-turkish, columns image, text,
image_id; splits long_captions and short_captions) in streaming mode, shuffled with a buffer and
a seed: no full download, but the buffer fills before the first row comes out, so about
buffer_size + num_samples rows are fetched. Writes:

    OUTPUT_DIR/images/<image_id>.<ext>   the image bytes exactly as published (another image
                                        under the same id: <image_id>-<sha256[:12]>.<ext>)
    OUTPUT_DIR/captions.jsonl            {"path": "images/<file>", "caption": "..."} per line

Re-running with the same arguments keeps what is there and completes what is missing: images are
written under a temporary name and renamed, and a caption line is appended only after its image
exists, so a killed run leaves no half-written image and no line without an image.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import _io
from .inputs import CAPTION_COLUMN, CAPTIONS_FILE, ID_COLUMN, IMAGE_COLUMN, load_split

DEFAULT_DATASET = "ituperceptron/image-captioning-turkish"


@dataclass(frozen=True)
class DownloadConfig:
    output_dir: Path
    num_samples: int = 1000
    seed: int = 14
    split: str = "long_captions"
    dataset: str = DEFAULT_DATASET
    buffer_size: int = 10_000
    image_column: str = IMAGE_COLUMN
    caption_column: str = CAPTION_COLUMN
    id_column: str = ID_COLUMN


@dataclass(frozen=True)
class DownloadSummary:
    written: int
    kept: int
    skipped: list[str]
    rows: int = 0  # rows read: fewer than --num-samples when the split has fewer


def run_download(config: DownloadConfig) -> DownloadSummary:
    from datasets import Image

    if config.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {config.num_samples}")
    if config.seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {config.seed}")
    out = Path(config.output_dir)
    there = next(p for p in (out, *out.parents) if p.exists())
    if not there.is_dir():  # said before the Hub is asked, as creating the folder would
        raise NotADirectoryError(f"--output-dir {out}: {there} is a file, not a folder")
    # The dataset and split next: a name the Hub does not know leaves no empty folder behind.
    stream = load_split(config.dataset, config.split, streaming=True)
    columns = stream.column_names  # from the data files' schema; None where it is not known
    for flag, name in (
        ("--image-column", config.image_column),
        ("--caption-column", config.caption_column),
    ):
        if columns is not None and name not in columns:
            raise ValueError(
                f"{config.dataset} ({config.split}) has no column {name!r}: it has "
                f"{', '.join(columns)}; name the right one with {flag}"
            )
    (out / "images").mkdir(parents=True, exist_ok=True)
    _io.remove_orphans(out / "images")  # temporary files of a run that was killed mid-write
    captions_path = out / CAPTIONS_FILE
    have = _existing_lines(captions_path)
    if captions_path.is_file() and captions_path.stat().st_size:
        with captions_path.open("rb+") as handle:  # (edited by hand, say, without a last
            handle.seek(-1, io.SEEK_END)  # newline): a line appended to it would spoil both
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    # Raw bytes: saving needs no decode, and the file stays byte-identical to the source.
    stream = stream.cast_column(config.image_column, Image(decode=False))
    stream = stream.shuffle(seed=config.seed, buffer_size=config.buffer_size)
    written = kept = rows = 0
    skipped: list[str] = []
    with (
        captions_path.open("a", encoding="utf-8") as captions,
        tqdm(total=config.num_samples, desc="downloading", unit="img") as bar,
    ):
        for row_no, row in enumerate(stream.take(config.num_samples)):
            rows = row_no + 1
            image = row.get(config.image_column) or {}
            data = image.get("bytes")
            caption = row.get(config.caption_column)
            raw_id = row.get(config.id_column, row_no)
            if not data:
                skipped.append(f"row {row_no} ({raw_id}): no image bytes")
                bar.update()
                continue
            stem, ext = _safe_id(raw_id, row_no), _extension(data, image.get("path"))
            target = out / "images" / f"{stem}.{ext}"
            there = target.read_bytes() if target.is_file() else None
            if there is not None and there != data:
                # Another image under the same name (a repeated or missing id, or ids that
                # differ only in characters a file name cannot hold): never overwrite it.
                digest = hashlib.sha256(data).hexdigest()[:12]
                target = target.with_name(f"{stem}-{digest}.{ext}")
                there = target.read_bytes() if target.is_file() else None
            if there == data:
                kept += 1
            else:
                _io.write_bytes(target, data)
                written += 1
            rel = f"images/{target.name}"
            # A caption cell may be a string or a list of them (several captions an image).
            texts = [caption] if isinstance(caption, str) else caption
            texts = texts if isinstance(texts, list) else []
            texts = [t for t in texts if isinstance(t, str) and t.strip()]
            for text in texts:
                line = json.dumps({"path": rel, "caption": text}, ensure_ascii=False)
                if line not in have:
                    captions.write(line + "\n")
                    captions.flush()
                    have.add(line)
            if not texts:
                skipped.append(f"row {row_no} ({raw_id}): empty caption, image kept")
            bar.update()
    return DownloadSummary(written=written, kept=kept, skipped=skipped, rows=rows)


def _existing_lines(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _safe_id(raw, row_no: int) -> str:
    text = "" if raw is None else re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw)).strip("._")
    return text[:100] or f"row{row_no}"


def _extension(data: bytes, path: str | None) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
    except (UnidentifiedImageError, OSError):
        fmt = ""
    if fmt:
        return {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    suffix = Path(path or "").suffix.lstrip(".").lower()
    return suffix or "bin"
