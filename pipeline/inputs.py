"""Where the images and captions come from: a local folder or a Hub dataset.

Reads either
- a folder with ``captions.jsonl`` (one ``{"path": ..., "caption": ...}`` a line, paths relative
  to the folder; several lines may name one image) plus any other image files in it, which are
  indexed without captions; or
- a Hub dataset (``load_dataset(id, split=...)``) with an image column and a caption column
  (a string or a list of strings).

Writes nothing. Returns ``ImageRecord``s in a deterministic order plus ``Skip`` entries for every
input that cannot be used (malformed JSON line, empty caption, path outside the folder, ...), so
the encode step can report each one instead of dropping it silently.
"""

from __future__ import annotations

import json
import os
import posixpath
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, count
from pathlib import Path, PurePosixPath

from imagesearchtr.manifest import LOCAL_SOURCE, public_source
from imagesearchtr.texts import is_valid_unicode

CAPTIONS_FILE = "captions.jsonl"
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".avif", ".bmp", ".gif", ".tif", ".tiff",
}  # fmt: skip
# Phone photos Pillow cannot read without a plugin: listed all the same, so that each is
# reported as skipped (with how to convert it) rather than left out unsaid.
CONVERT_FIRST = {".heic", ".heif"}
LISTED_SUFFIXES = IMAGE_SUFFIXES | CONVERT_FIRST
# The columns a Hub dataset's images, captions and ids are read from unless told otherwise (those
# of download's default dataset): HubSource's and download's defaults, and so the CLI's.
IMAGE_COLUMN = "image"
CAPTION_COLUMN = "text"
ID_COLUMN = "image_id"
# Plain columns an image column may be: paths (or URLs) and image bytes.
TEXT_OR_BYTES = ("string", "large_string", "binary", "large_binary")


class EmptyBuildError(ValueError):
    """A build with no usable image: nothing to index or publish."""


@dataclass
class ImageRecord:
    """One image to index, with all its captions, and a way to read its bytes."""

    image_id: str
    path: str  # relative to the source folder, or "<dataset>:<row>" for Hub rows
    captions: list[str]
    read_bytes: Callable[[], bytes] = field(repr=False)
    # For a path a caption line names that is not there: the file it was probably meant to be
    # ("did you mean images/a.jpg?"), which its skip's reason says.
    hint: str = ""


@dataclass(frozen=True)
class Skip:
    """An input that was left out, and why. Written to BUILD/skipped.jsonl.

    ``kind`` is a short category the summaries count by (one of the constants below);
    ``detail`` is the sentence a user reads (stored as "reason" in skipped.jsonl).
    """

    source: str  # a file path, "captions.jsonl:LINE" or "<dataset>:<row>"
    kind: str
    detail: str

    def to_json(self) -> str:
        entry = {"source": self.source, "kind": self.kind, "reason": self.detail}
        return json.dumps(entry, ensure_ascii=False)


# Skip kinds.
BAD_LINE = "bad caption line"
BAD_PATH = "bad path"
EMPTY_CAPTION = "empty or missing caption"
MISSING_FILE = "missing file"
UNREADABLE_FILE = "unreadable file"
EMPTY_FILE = "empty file"
DUPLICATE = "duplicate"
NOT_AN_IMAGE = "unusable image"
NO_IMAGE = "no image"


@dataclass(frozen=True)
class FolderSource:
    """A local folder of images with captions.jsonl."""

    folder: Path

    def describe(self) -> str:
        return f"{LOCAL_SOURCE}{self.folder}"

    def label(self) -> str:
        """The input as the manifest records it (``public_source``)."""
        return public_source(f"{LOCAL_SOURCE}{self.folder.resolve()}")

    @property
    def captions_file(self) -> Path:
        """The folder's captions; without it, its images are read as having none."""
        return self.folder / CAPTIONS_FILE

    def check(self) -> None:
        """Refuse a folder that is not there (before a model is loaded for it)."""
        if self.folder.is_file():
            raise NotADirectoryError(
                f"--data {self.folder} is a file; give the folder that holds {CAPTIONS_FILE} "
                f"and the images (here: --data {self.folder.parent})"
            )
        if not self.folder.is_dir():
            raise FileNotFoundError(f"--data {self.folder}: no such folder")

    def read(self) -> tuple[list[ImageRecord], list[Skip]]:
        folder = self.folder
        self.check()
        captions_file = self.captions_file
        skips: list[Skip] = []
        captions: dict[str, list[str]] = {}
        # A name can be written in two Unicode forms (ş as one code point, or s + cedilla):
        # macOS and many zip tools store file names decomposed while editors write captions
        # composed. Both are matched by their composed form; the file keeps its own name.
        files = []
        paths, broken = _image_files(folder)
        if broken:
            # A linked folder (or photo) whose target is gone, a disk not mounted, say: read
            # as "photos deleted", an update would drop its rows. Refused, as a whole photos
            # folder that is gone is.
            shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if broken[3:] else "")
            raise FileNotFoundError(
                f"--data {folder}: {shown} {'is a link' if len(broken) == 1 else 'are links'} "
                "to something that is not there (a disk not mounted?); mount it and run encode "
                "again, or delete the link to leave its photos out"
            )
        for path in paths:
            rel = path.relative_to(folder).as_posix()
            if is_valid_unicode(rel):
                files.append(rel)
                continue
            # Bytes that are not UTF-8 (a zip made on Windows names "köpek" in cp1254): no
            # caption line can name it, and no data file can hold its path.
            shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
            detail = (
                f"file name {shown} is not valid UTF-8 (a zip made on Windows?); rename the file"
            )
            skips.append(Skip(shown, BAD_PATH, detail))
        forms = Counter(_nfc(rel) for rel in files)
        # Two files whose names differ only in their form (possible on Linux) stay two rows,
        # each matched by its own exact name.
        on_disk = {_nfc(rel): rel for rel in files if forms[_nfc(rel)] == 1}
        if captions_file.is_file():
            for line_no, entry, problem in _read_jsonl(captions_file):
                where = f"{CAPTIONS_FILE}:{line_no}"
                if problem:
                    skips.append(Skip(where, BAD_LINE, problem))
                    continue
                rel, problem = _safe_relative(entry.get("path"), folder)
                if problem:
                    skips.append(Skip(where, BAD_PATH, problem))
                    continue
                rel = on_disk.get(_nfc(rel), rel)
                caption = entry.get("caption")
                captions.setdefault(rel, [])
                if not isinstance(caption, str) or not caption.strip():
                    skips.append(Skip(where, EMPTY_CAPTION, f"empty or missing caption for {rel}"))
                    continue
                if not is_valid_unicode(caption):
                    skips.append(Skip(where, BAD_LINE, f"caption for {rel} is not valid Unicode"))
                    continue
                captions[rel].append(" ".join(caption.split()))
        elif not files:
            raise FileNotFoundError(
                f"--data {folder}: neither {CAPTIONS_FILE} nor image files found; see README "
                "'Your own photos' for the folder layout"
            )
        # Images on disk that no caption line names are indexed too, without captions.
        for rel in files:
            captions.setdefault(rel, [])
        keys = {rel: _nfc(rel) if forms[_nfc(rel)] == 1 else rel for rel in captions}
        # Ids are decided by the image files on disk, whatever the caption lines say. A file
        # of another extension that a line names (a .svg, or a .txt skipped later as no
        # image), a HEIC file (skipped later: its JPEG copy beside it is the photo) and then a
        # line naming no file (a typo, skipped later as missing) take ids left over: none
        # ever changes an image file's id.
        images = {rel for rel in files if PurePosixPath(rel).suffix.lower() not in CONVERT_FIRST}
        ids = _unique_ids(key for rel, key in keys.items() if rel in images)
        used = set(ids.values())
        named = {rel for rel in captions if rel not in images and (folder / rel).is_file()}
        missing = [rel for rel in captions if rel not in images and rel not in named]
        hints = _did_you_mean(missing, files)
        for rel, key in sorted(keys.items(), key=lambda item: item[0] not in named):
            if rel not in images:
                candidates = chain((_image_id(key), key), (f"{key}#{n}" for n in count(2)))
                ids[key] = next(i for i in candidates if i not in used)
                used.add(ids[key])
        records = [
            ImageRecord(
                image_id=ids[keys[rel]],
                path=rel,
                captions=caps,
                read_bytes=(lambda p=folder / rel: p.read_bytes()),
                hint=hints.get(rel, ""),
            )
            for rel, caps in sorted(captions.items())
        ]
        return records, skips


def load_split(dataset: str, split: str, **kwargs):
    """``load_dataset(dataset, split=split, ...)``, a split the dataset lacks refused naming
    ``--split`` (datasets says only "Unknown split" or "Bad split", and the splits it has)."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset, split=split, **kwargs)
    except ValueError as err:
        if not str(err).startswith(("Unknown split", "Bad split")):
            raise
        raise ValueError(f"{dataset} has no split {split!r} ({err}); pass --split") from None


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset (or any ``load_dataset`` path) with an image and a caption column."""

    dataset: str
    split: str = "train"
    image_column: str = IMAGE_COLUMN
    caption_column: str = CAPTION_COLUMN
    id_column: str | None = ID_COLUMN
    revision: str | None = None

    def describe(self) -> str:
        return self.dataset

    def label(self) -> str:
        """The input as the manifest and each row's ``path`` record it: a dataset folder on this
        machine by its name, not its path (as ``public_source``)."""
        if os.path.exists(self.dataset):
            return Path(self.dataset).resolve().name
        return self.dataset

    def read(self) -> tuple[list[ImageRecord], list[Skip]]:
        from datasets import Image

        ds = load_split(self.dataset, self.split, revision=self.revision)
        for column in (self.image_column, self.caption_column):
            if column not in ds.column_names:
                raise ValueError(
                    f"{self.dataset} has no column {column!r} (columns: "
                    f"{', '.join(ds.column_names)}); pass --image-column / --caption-column"
                )
        _check_columns(self.dataset, ds.features, self.image_column, self.caption_column)
        # Raw bytes, not decoded PIL images: decoding happens once, in the encode step.
        ds = ds.cast_column(self.image_column, Image(decode=False))
        id_column = self.id_column if self.id_column in ds.column_names else None
        used: set[str] = set()
        label = self.label()
        # The listing holds no image bytes: each record reads its row's bytes from the
        # dataset's memory-mapped Arrow files when asked, so a process keeps in memory only
        # the images it is encoding (under torchrun, a rank reads only its own chunks').
        images = ds.select_columns([self.image_column]).with_format("arrow")
        listing = ds.select_columns([c for c in (self.caption_column, id_column) if c])
        records, skips = [], []
        for row_no, row in enumerate(listing):
            where = f"{label}:{row_no}"
            # Validity only: as_py() here would copy every image's bytes into the listing.
            cell = images[row_no][self.image_column][0]
            if not cell.is_valid or (not cell["bytes"].is_valid and not cell["path"].as_py()):
                skips.append(Skip(where, NO_IMAGE, "no image in this row"))
                continue
            raw = row[self.caption_column]
            texts = [raw] if isinstance(raw, str) else list(raw or [])
            caps = [" ".join(t.split()) for t in texts if isinstance(t, str) and t.strip()]
            if len(caps) < len(texts) or not texts:
                skips.append(Skip(where, EMPTY_CAPTION, "empty or missing caption"))
            raw_id = row[id_column] if id_column else None
            image_id = str(row_no) if raw_id is None else str(raw_id)
            if image_id in used:  # a repeated id (or a missing one): ids name one row each
                image_id = next(i for n in count(2) if (i := f"{image_id}#{n}") not in used)
            used.add(image_id)
            reader = lambda n=row_no: _row_bytes(images, self.image_column, n)  # noqa: E731
            records.append(ImageRecord(image_id, where, caps, reader))
        return records, skips


def _check_columns(dataset: str, features, image_column: str, caption_column: str) -> None:
    """Refuse an image column of numbers and a caption column that is not text, naming the
    flag that picks another (the rows would otherwise fail deep inside datasets)."""
    from datasets import LargeList, List, Value

    image = features[image_column]
    if isinstance(image, Value) and image.dtype not in TEXT_OR_BYTES:
        raise ValueError(
            f"{dataset}: column {image_column!r} holds {image.dtype} values, not images; "
            "name the image column with --image-column"
        )
    caption = features[caption_column]
    inner = caption.feature if isinstance(caption, (List, LargeList)) else caption
    # ("null": a column whose every caption is missing; its rows are images without captions)
    if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string", "null")):
        raise ValueError(
            f"{dataset}: column {caption_column!r} holds {caption}, not text (a string or a "
            "list of strings a row); name the caption column with --caption-column"
        )


def _row_bytes(images, column: str, row_no: int) -> bytes:
    """The bytes of one row's image: stored in the dataset, or in the file it names."""
    image = images[row_no][column][0].as_py() or {}
    if image.get("bytes") is not None:
        return image["bytes"]
    return Path(image["path"]).read_bytes()


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict, str | None]]:
    """Yield (line number, object, problem) for each non-blank line; never raises on bad lines."""
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line: editors on Windows start files with a BOM.
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                yield line_no, {}, "not valid UTF-8"
                continue
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, {}, f"malformed JSON ({err.msg})"
                continue
            except RecursionError:
                yield line_no, {}, "malformed JSON (nested too deeply)"
                continue
            if not isinstance(entry, dict):
                yield line_no, {}, "not a JSON object"
                continue
            yield line_no, entry, None


def _safe_relative(value, folder: Path) -> tuple[str, str | None]:
    """A caption line's path, normalised and kept inside the folder (no ../ escapes).

    The check is lexical, so images that are symlinks into another folder still work.
    """
    if not isinstance(value, str) or not value.strip():
        return "", "missing 'path'"
    if "\x00" in value or not is_valid_unicode(value):
        return "", f"path {ascii(value)} is not a valid file name"
    if Path(value).is_absolute():
        return "", f"absolute path {value!r}: paths must be relative to the data folder"
    rel = posixpath.normpath(value.replace("\\", "/"))
    if rel == ".." or rel.startswith("../") or rel == ".":
        return "", f"path {value!r} points outside the data folder"
    return rel, None


def is_listed_photo(name: str) -> bool:
    """True for a file name an encode lists as a photo (hidden files are not)."""
    return Path(name).suffix.lower() in LISTED_SUFFIXES and not name.startswith(".")


def first_photo(folder: Path) -> str | None:
    """The first photo file under ``folder`` (a name an encode lists), relative; hidden
    folders are left out (a publish's own staging and trash trees). For the refusals of a
    photos folder given where a build or a published folder belongs."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_listed_photo(name):
                return (Path(root) / name).relative_to(folder).as_posix()
    return None


def _image_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The photo files under ``folder``, sorted, and the links that point nowhere (relative
    paths: a linked folder or photo whose target is gone)."""
    # Symlinked folders are followed (photos linked in from another disk are photos), except a
    # link back to a folder above it, which would loop.
    found, broken = [], []
    above = {str(folder): frozenset({os.path.realpath(folder)})}
    for root, dirs, names in os.walk(folder, followlinks=True):
        ancestors = above.pop(root)
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if not name.startswith(".") and real not in ancestors:  # .cache, .git: not photos
                above[os.path.join(root, name)] = ancestors | {real}
                kept.append(name)
        dirs[:] = kept
        for name in names:
            path = Path(root, name)
            wanted = is_listed_photo(name)
            if wanted and path.is_file():
                found.append(path)
            elif not name.startswith(".") and path.is_symlink() and not path.exists():
                broken.append(path.relative_to(folder).as_posix())
    return sorted(found), sorted(broken)


def _did_you_mean(missing: list[str], files: list[str]) -> dict[str, str]:
    """{path of ``missing``: "did you mean FILE?"} where one file of ``files`` alone has that
    path in another case (``images/b.JPG`` for ``images/b.jpg``), else that name in another
    folder (``images/a.jpg`` for ``a.jpg``). The lookup is built only when a path is missing."""
    if not missing:
        return {}
    by_path: dict[str, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for rel in files:
        key = _nfc(rel).casefold()
        by_path.setdefault(key, []).append(rel)
        by_name.setdefault(PurePosixPath(key).name, []).append(rel)
    hints = {}
    for rel in missing:
        key = _nfc(rel).casefold()
        found = by_path.get(key) or by_name.get(PurePosixPath(key).name, [])
        if len(found) == 1:
            hints[rel] = f"did you mean {found[0]}?"
    return hints


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _image_id(rel: str) -> str:
    """A stable id: the relative path without its extension."""
    return rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel


def _unique_ids(paths) -> dict[str, str]:
    """{path: id}: the path without its extension, or the whole path where that would not be
    unique (``foto.jpg`` beside ``foto.png``; ``a.jpg.png`` beside ``a.jpg``). Paths are
    unique, so the ids are."""
    paths = list(paths)
    stems = Counter(_image_id(rel) for rel in paths)
    taken = set(paths)
    return {
        rel: stem if stems[stem] == 1 and (stem == rel or stem not in taken) else rel
        for rel, stem in ((rel, _image_id(rel)) for rel in paths)
    }
