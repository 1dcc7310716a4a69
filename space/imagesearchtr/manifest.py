"""The index manifest: which model built an index, over which rows, with what settings.

Read and written as ``index/manifest.json`` next to the FAISS files in a build folder and in a
published repo. The search side reads it to pick the right encoder and refuses to search when the
loaded model's weight fingerprint differs from the one recorded here.

``load_manifest`` reads a published manifest, from a folder or a Hub dataset repo: it
downloads ``index/*`` (Hub), parses the manifest, and refuses any index file it names outside
the repo's ``index/`` folder before anything opens it (a hostile manifest could otherwise point
the search at ``/proc/self/environ`` and have a library echo its bytes in an error message).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST_VERSION = 1
INDEX_DIR = "index"
DATA_DIR = "data"
MANIFEST_FILE = "manifest.json"
# One FAISS file per embedding column, named after it (index/image_emb.faiss, ...).
EMBEDDING_COLUMNS = ("image_emb", "caption_emb")
# Where each row's image bytes lie in its data file: an int64 (rows, 2) array of (offset,
# length), row order, so that the Space reads one image with one range read of its own bytes.
IMAGE_RANGES_FILE = f"{INDEX_DIR}/image_ranges.npy"
# What every "the index files do not fit" refusal tells the repo's owner to do.
REINDEX = "re-run `python -m pipeline index` and publish again"
# What `encode` writes into a build folder first (pipeline/encode.py); here, so that a build
# given where a published dataset belongs is told apart from photos.
BUILD_FILE = "build.json"


# What a model component repo (``component_revisions``) contributes: its config, tokenizer and
# image processor files. Its weights are not needed: the model's checkpoint holds every tensor.
COMPONENT_FILES = ("*.json", "*.txt", "*.model")
# What the encoder fetches of a CLIP or SigLIP model repo, in one snapshot (publish-space
# preloads the same files); a MultiEmbedTR repo (config.json's model_type is this one) gives
# its config, one checkpoint file and its component folders instead.
SNAPSHOT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
MULTIEMBEDTR_TYPE = "multimodal_embedder"


def component_folders(config: dict) -> list[str]:
    """The components a MultiEmbedTR config names as folders inside the model's own repo,
    rather than as Hub ids (``text_model_name: text_model``): fetched with the model, every file
    in them."""
    names = [config.get(key) for key in ("text_model_name", "vision_model_name")]
    return [
        n for n in names if isinstance(n, str) and n and not Path(n).is_absolute() and "/" not in n
    ]


_ID_CHARS = "A-Za-z0-9_.-"  # the characters of USER and NAME, inside a regex's [...] (- last)
_HUB_ID_RE = re.compile(rf"^[A-Za-z0-9][{_ID_CHARS}]{{0,95}}/[A-Za-z0-9][{_ID_CHARS}]{{0,95}}$")
# _HUB_ID_RE's USER and NAME (and is_repo_id's "no .."), in words.
_HUB_ID_WORDS = (
    "letters, digits, '-', '_' and '.', each starting with a letter or digit, at most 96 "
    "characters, without '..'"
)


# How a manifest's ``source`` names rows read from a folder: "local folder NAME".
LOCAL_SOURCE = "local folder "


def public_source(source: str) -> str:
    """A source as a published manifest may name it: a local folder by its name, not by its
    path on the machine that encoded it (builds encoded before this recorded the path)."""
    if source.startswith(LOCAL_SOURCE):
        return LOCAL_SOURCE + Path(source.removeprefix(LOCAL_SOURCE)).name
    return source


def snapshot_commit(folder: str | Path, asked: str | None) -> str | None:
    """The commit a Hub snapshot folder holds (huggingface_hub names it by the commit), else
    ``asked``, the revision that was asked for."""
    name = Path(folder).name
    return name if re.fullmatch(r"[0-9a-f]{40}", name) else asked


def describe_error(err: BaseException) -> str:
    """An error in one short line for a message: its type and its first line of text."""
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def refused_access(status: int, what: str, can: str = "read it") -> str:
    """The message for the Hub's 401 or 403 answer: what it refused and the fix. One wording
    for the Space, the CLI and publish (``can`` says what the token must be allowed to do)."""
    return (
        f"the Hub refused access (HTTP {status}) to {what}: set HF_TOKEN to a valid token that "
        f"can {can}, or run `hf auth login`"
    )


def is_transient_status(status: int) -> bool:
    """Whether an HTTP answer of the Hub may pass if asked again: a timeout (408), too many
    requests (429) or a server error (5xx). Read where an answer decides between trying again and
    a refusal: the index download, the Space's start-up and publish's commit."""
    return status in (408, 429) or status >= 500


def transport_errors() -> tuple[type[Exception], ...]:
    """The error types of a dropped, refused or timed-out connection to the Hub: httpx's
    (gradio's client) and httpx2's (huggingface_hub >= 2 makes its requests with httpx2, a
    package of its own whose errors are not httpx's). The Space's start-up retry reads it."""
    import httpx

    try:
        import httpx2
    except ImportError:  # huggingface_hub 1.x
        return (httpx.TransportError,)
    return (httpx.TransportError, httpx2.TransportError)


def is_repo_id(value: str) -> bool:
    """True for a repo id written ``namespace/name``, the form this project publishes to."""
    return bool(_HUB_ID_RE.match(value)) and ".." not in value


def repo_id_problem(value: str) -> str | None:
    """None for a repo id (``is_repo_id``), else what to do instead, for an error message: the
    id a Hub URL holds, or the first character a repo id cannot have."""
    if is_repo_id(value):
        return None
    if value.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        parts = urlsplit(value).path.strip("/").split("/")
        if parts[0] in ("datasets", "spaces"):
            parts = parts[1:]
        inside = "/".join(parts[:2])
        if is_repo_id(inside):
            return f"that is a URL; did you mean {inside}?"
    else:
        bad = re.search(rf"[^/{_ID_CHARS}]", value)
        if bad is not None:
            named = "a space" if bad.group() == " " else repr(bad.group())
            return f"{named} is not allowed; give USER/NAME ({_HUB_ID_WORDS})"
    if value.count("/") != 1:
        return "give USER/NAME"
    return f"give USER/NAME ({_HUB_ID_WORDS})"


def is_hub_id(value: str) -> bool:
    """True for ``namespace/name`` that is not an existing local path."""
    return is_repo_id(value) and not os.path.exists(value)


class ManifestError(ValueError):
    """A manifest that cannot be read, or that names files it must not; the message says why."""


def _known(cls, data) -> dict:
    """The entries of ``data`` that are fields of the dataclass ``cls``."""
    if not isinstance(data, dict):
        raise TypeError(f"{data!r} is not a JSON object")
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time (the manifest's hashes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_file(column: str) -> str:
    """Repo-relative path of the FAISS index for an embedding column."""
    return f"{INDEX_DIR}/{column}.faiss"


@dataclass(frozen=True)
class IndexInfo:
    """One FAISS index over one embedding column."""

    column: str
    file: str  # repo-relative, e.g. "index/image_emb.faiss"
    index_type: str  # a name of pipeline.index.INDEX_TYPES ("flat", "ivf-sq8"...) or a factory
    factory: str  # the exact FAISS factory string that was built
    ntotal: int  # vectors in the index (rows with a null embedding hold a zero vector)
    params: dict = field(default_factory=dict)  # e.g. {"nprobe": 64} or {"efSearch": 128}


@dataclass(frozen=True)
class Manifest:
    """Everything needed to check that an index, its rows and a query encoder belong together."""

    model_id: str
    model_revision: str | None
    model_fingerprint: str
    dim: int
    num_rows: int
    data_hash: str  # sha256 over the embedding columns and image ids, in row order
    indices: tuple[IndexInfo, ...]
    num_captions: int = 0
    num_skipped: int = 0
    metric: str = "inner_product"
    normalized: bool = True
    versions: dict = field(default_factory=dict)  # library versions used for the build
    created_at: str = ""
    source: str = ""  # where the rows came from: a Hub dataset id or "local folder NAME"
    data_files: list = field(default_factory=list)  # [{path, num_rows, sha256, size}], row order
    image_ranges_sha256: str = ""  # of IMAGE_RANGES_FILE; "" in manifests written before it
    # {repo path: sha256} of the FAISS files: an index swapped in from another build of the same
    # size and model would otherwise search silently wrong. {}: written before it.
    index_sha256: dict = field(default_factory=dict)
    # {Hub id: commit} of the model's components loaded from the Hub (MultiEmbedTR's tokenizer
    # and image processor repos); queries load them at these commits. {}: none, or older.
    component_revisions: dict = field(default_factory=dict)
    manifest_version: int = MANIFEST_VERSION

    def index(self, column: str) -> IndexInfo:
        for info in self.indices:
            if info.column == column:
                return info
        raise KeyError(f"the manifest has no index for column {column!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        version = data.get("manifest_version", MANIFEST_VERSION)
        if version > MANIFEST_VERSION:
            raise ValueError(
                f"manifest version {version} is newer than this imagesearchtr understands "
                f"({MANIFEST_VERSION}); upgrade imagesearchtr"
            )
        # Fields a newer writer adds are left out, so that older readers still read its
        # manifests.
        data["indices"] = tuple(IndexInfo(**_known(IndexInfo, i)) for i in data.get("indices", ()))
        manifest = cls(**_known(cls, data))
        # Checked here, once: a float or a string passes the comparisons made later on, and
        # their messages ("20 rows but the manifest says 20") would contradict themselves.
        counts = {"dim": manifest.dim, "num_rows": manifest.num_rows}
        for info in manifest.indices:
            counts[f"ntotal of {info.column}"] = info.ntotal
            if not isinstance(info.params, dict):
                raise ValueError(f"the params of {info.column} are not a name: value mapping")
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} is {value!r}, not a count (a whole number, 0 or more)")
        pins = manifest.component_revisions
        if not isinstance(pins, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in pins.items()
        ):
            raise ValueError(f"component_revisions is {pins!r}, not a Hub id: commit mapping")
        hashes = manifest.index_sha256
        if not isinstance(hashes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()
        ):
            raise ValueError(f"index_sha256 is {hashes!r}, not a path: sha256 mapping")
        return manifest

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no index manifest at {path}: run `python -m pipeline index` on the build first"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(f"the index manifest {path} is not valid JSON ({err})") from None
        except UnicodeDecodeError:
            raise ValueError(f"the index manifest {path} is not UTF-8 text") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest with where it came from: ``root`` holds ``index/``; ``revision`` is the commit."""

    manifest: Manifest
    root: Path  # the folder itself, or the Hub snapshot folder holding index/*
    revision: str | None  # the resolved Hub commit; None for a local folder

    def index_path(self, column: str) -> Path:
        """Local path of a column's FAISS file (checked to lie inside ``index/`` on load)."""
        return self.root / self.manifest.index(column).file

    def image_ranges(self, where: str):
        """The rows' image byte ranges (``IMAGE_RANGES_FILE``), checked against the manifest:
        its sha256, then its header (int64, shape (num_rows, 2)) before any array is made from
        it, then its values ((-1, 0) for a row without image bytes, else offset >= 0 and
        length > 0)."""
        import hashlib
        import io

        import numpy as np

        require_image_ranges(self.manifest, where)
        where = f"{where}: {IMAGE_RANGES_FILE}"
        path = self.root / IMAGE_RANGES_FILE
        inside = (self.root / INDEX_DIR).resolve()
        if not path.is_file() or (
            self.revision is None and not path.resolve().is_relative_to(inside)
        ):
            raise ManifestError(f"{where} is missing (or not a file inside index/); {REINDEX}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.manifest.image_ranges_sha256:
            raise ManifestError(f"{where} is not the file the manifest names (sha256); {REINDEX}")
        # The repo's author wrote the manifest too, so its sha256 proves nothing about the
        # content: the header is read first (np.load would allocate whatever shape it claims).
        wanted = (self.manifest.num_rows, 2)
        bad = ManifestError(f"{where} is not an int64 array of {wanted}; {REINDEX}")
        buf = io.BytesIO(data)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        try:
            shape, fortran, dtype = readers[np.lib.format.read_magic(buf)](buf)
        except (KeyError, ValueError, OSError, EOFError):
            raise bad from None
        if len(shape) != 2 or shape[1] != 2 or fortran or dtype != np.dtype("<i8"):
            raise bad
        if shape[0] != wanted[0]:
            raise ManifestError(
                f"{where} has {shape[0]} rows but the manifest says {wanted[0]}; rows and "
                f"indices come from different builds; {REINDEX}"
            )
        if len(data) - buf.tell() != 16 * wanted[0]:
            raise bad
        ranges = np.frombuffer(data, dtype="<i8", offset=buf.tell()).reshape(wanted)
        offsets, lengths = ranges[:, 0], ranges[:, 1]
        none = (offsets == -1) & (lengths == 0)
        if not (none | ((offsets >= 0) & (lengths > 0))).all():
            raise ManifestError(f"{where} holds a negative offset or length; {REINDEX}")
        return ranges


def require_image_ranges(manifest: Manifest, where: str) -> None:
    """Refuse a manifest that names no image ranges: the search cannot show its images."""
    if not manifest.image_ranges_sha256:
        raise ManifestError(
            f"{where}: this dataset was published before image byte ranges were recorded (its "
            f"manifest names no {IMAGE_RANGES_FILE}); re-run `python -m pipeline index` on its "
            "build and publish it again"
        )


def load_manifest(
    location: str | Path, revision: str | None = None, *, index_files: bool = True
) -> LoadedManifest:
    """Read ``index/manifest.json`` of a local folder or a Hub dataset repo (at ``revision``).

    A folder is read in place (it has no revisions: one given with it is refused); for a Hub
    id the ``index/`` files of one commit are downloaded into the Hub cache and that commit is
    returned, so the caller can load the rows from the same commit (``index_files=False``: the
    manifest alone, for callers that only read it). Raises ``ManifestError`` for a missing,
    unreadable or unsafe manifest, a repo or revision the Hub does not have, a refusal (HTTP
    401 or 403: it names HF_TOKEN), and a Hub that cannot be reached or fails (a 5xx, a 429),
    the last raised from the library's error so that callers find the transport error in its
    chain; another 4xx passes through as huggingface_hub raised it.
    """
    where = str(location)
    local = Path(location).expanduser()
    if local.is_dir():
        if revision is not None:  # refused: ignored, it would seem to pin a commit
            raise ManifestError(
                f"{where} is a local folder, which has no revisions; drop the revision "
                f"({revision}), or give the dataset's Hub id"
            )
        root, resolved = local, None
    else:
        aside = None if local.exists() else next(iter(moved_aside(local)), None)
        if aside is not None:  # not a Hub id: the folder of a publish killed mid-swap
            raise ManifestError(
                f"{where} is not there: a `publish --to` to it was interrupted and left its "
                f"previous tree at {aside}; run that publish again (it puts the tree back "
                f"first), or rename {aside.name} to {local.name}"
            )
        root, resolved = _download_index(where, revision, index_files)
    path = root / INDEX_DIR / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(_no_manifest(where, root, local=resolved is None))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("the top level is not a JSON object")
        manifest = Manifest.from_dict(data)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise ManifestError(
            f"{where}: {INDEX_DIR}/{MANIFEST_FILE} is not a valid index manifest ({err}); {REINDEX}"
        ) from None
    for info in manifest.indices:
        _check_index_file(where, root, info, follow_links=resolved is None)
    for entry in manifest.data_files:
        _check_data_file(where, entry)
    return LoadedManifest(manifest, root, resolved)


def _no_manifest(where: str, root: Path, local: bool) -> str:
    """What a location without a manifest is, and the commands (as README gives them) that
    make it one: photos (or a Hub dataset of them) are encoded first, a build is indexed."""
    head = f"{where} has no {INDEX_DIR}/{MANIFEST_FILE}"
    publish = "`python -m pipeline publish --build {} --to out/repo`, or --repo you/NAME"
    if local and (root / BUILD_FILE).is_file():
        return (
            f"{head}: it is a build that `index` has not finished; index it (`python -m "
            f"pipeline index --build {where}`) and publish it ({publish.format(where)}), then "
            "search that"
        )
    if (root / INDEX_DIR).is_dir():  # a published repo that lost its manifest
        return f"{head}; {REINDEX}"
    data = f"--data {where}" if local else f"--hf-dataset {where}"
    return (
        f"{head}: it is not a published dataset; encode it (`python -m pipeline encode {data} "
        "--out build/`), index it (`python -m pipeline index --build build/`) and publish it "
        f"({publish.format('build/')}), then search that"
    )


def moved_aside(folder: Path) -> list[Path]:
    """The whole trees a ``publish --to`` killed between its two renames moved aside from
    ``folder`` (``.NAME.old-PID-N`` beside it; older versions named it ``.NAME.old-PID``), in
    the order that publish puts one back when
    ``folder`` is missing (pipeline/_io.py's ``swap_leftovers``): one with its manifest before
    one without (older versions left half-deleted ones), then the one moved aside last (a
    rename sets a folder's ctime)."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.old-\d+(-\d+)?")
    try:
        trees = [p for p in folder.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()]
        key = {p: ((p / INDEX_DIR / MANIFEST_FILE).is_file(), p.lstat().st_ctime_ns) for p in trees}
    except OSError:  # no such parent folder (a Hub id), or one that cannot be read
        return []
    return sorted(trees, key=key.__getitem__, reverse=True)


def _download_index(repo_id: str, revision: str | None, index_files: bool) -> tuple[Path, str]:
    """Download ``index/*`` (or the manifest alone) of a Hub dataset repo; return (snapshot
    folder, commit)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snapshot = snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=[f"{INDEX_DIR}/{'*' if index_files else MANIFEST_FILE}"],
        )
    except HFValidationError:
        raise ManifestError(
            f"{repo_id} is neither a local folder nor a Hub dataset id (USER/NAME); check the "
            "spelling, or publish a build there first"
        ) from None
    except RevisionNotFoundError:
        raise ManifestError(
            f"{repo_id} has no revision {revision!r}; use a branch, tag or commit of that repo"
        ) from None
    except RepositoryNotFoundError:
        raise ManifestError(
            f"no dataset repo {repo_id} on the Hub (or it is private and no token was given); "
            "check the name, or set HF_TOKEN to a token that can read it (in a Space: a secret "
            "of the Space) or run `hf auth login`"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError) as err:  # offline, refused or failing
        failed = err
    else:
        snapshot = Path(snapshot)
        return snapshot, snapshot.name
    # Raised outside the except, with no chain: a caller that looks for a transport error in
    # it (the CLI's "cannot reach the Hub") must not find one for a refusal. huggingface_hub
    # wraps an answer it could not use in LocalEntryNotFoundError: the answer is its cause.
    answer = failed.__cause__ if isinstance(failed.__cause__, HfHubHTTPError) else failed
    status = getattr(getattr(answer, "response", None), "status_code", None)
    if status in (401, 403):
        raise ManifestError(refused_access(status, f"the dataset {repo_id}"))
    if isinstance(answer, HfHubHTTPError) and status and not is_transient_status(status):
        raise failed  # another refusal: the Hub's own words
    raise ManifestError(
        f"{repo_id} is not a local folder, and its index could not be fetched from the Hub "
        f"({describe_error(failed)}); check the path, or the connection"
    ) from failed


def _check_index_file(where: str, root: Path, info: IndexInfo, follow_links: bool) -> None:
    """Refuse an index file outside ``index/`` by name or through a symlink, before opening it."""
    file = info.file
    refused = ManifestError(
        f"{where}: the manifest names {file!r} as the {info.column} index, but index files must "
        f"be plain files inside the repo's {INDEX_DIR}/ folder; nothing was opened; {REINDEX}"
    )
    if info.column not in EMBEDDING_COLUMNS:
        raise ManifestError(
            f"{where}: the manifest indexes an unknown column {info.column!r} (expected one of "
            f"{', '.join(EMBEDDING_COLUMNS)}); re-run `python -m pipeline index`"
        )
    if not isinstance(file, str) or "\\" in file or "\0" in file:
        raise refused
    parts = PurePosixPath(file).parts
    if len(parts) != 2 or parts[0] != INDEX_DIR or parts[1] in (".", ".."):
        raise refused
    # A Hub snapshot's files are symlinks into the cache's blobs/, made by huggingface_hub;
    # a local folder's links are whatever its author made, so there they must stay in index/.
    target = root / file
    if follow_links and not target.resolve().is_relative_to((root / INDEX_DIR).resolve()):
        raise refused


def _check_data_file(where: str, entry) -> None:
    """A ``data_files`` entry names a parquet file directly inside ``data/``, nothing else: the
    lazy row reader opens these paths, so a hostile manifest must not point it anywhere else."""
    path = entry.get("path") if isinstance(entry, dict) else None
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    ok = (
        len(parts) == 2
        and parts[0] == DATA_DIR
        and parts[1].endswith(".parquet")
        and parts[1] not in (".", "..")
        and "\\" not in path
        and "\0" not in path
        and isinstance(entry.get("num_rows"), int)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size", 0), int)
    )
    if not ok:
        raise ManifestError(
            f"{where}: the manifest lists {path!r} as a data file, but data files must be "
            f"{DATA_DIR}/NAME.parquet entries with num_rows and sha256; nothing was opened; "
            f"{REINDEX}"
        )
