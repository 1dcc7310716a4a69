"""The index manifest: which model built an index, over which rows, with what settings.

Read and written as ``index/manifest.json`` next to the FAISS files in a build folder and in a
published repo. The search side reads it to pick the right encoder and refuses to search when the
loaded model's weight fingerprint differs from the one recorded here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_VERSION = 1
INDEX_DIR = "index"
MANIFEST_FILE = "manifest.json"
# One FAISS file per embedding column, named after it (index/image_emb.faiss, ...).
EMBEDDING_COLUMNS = ("image_emb", "caption_emb")


def index_file(column: str) -> str:
    """Repo-relative path of the FAISS index for an embedding column."""
    return f"{INDEX_DIR}/{column}.faiss"


@dataclass(frozen=True)
class IndexInfo:
    """One FAISS index over one embedding column."""

    column: str
    file: str  # repo-relative, e.g. "index/image_emb.faiss"
    index_type: str  # "flat" or a FAISS factory string
    factory: str  # the exact FAISS factory string that was built
    ntotal: int  # vectors in the index (rows with a null embedding hold a zero vector)
    params: dict = field(default_factory=dict)  # e.g. {"nprobe": 16} or {"efSearch": 64}


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
    source: str = ""  # where the rows came from: a Hub dataset id or "local folder"
    data_files: list = field(default_factory=list)  # [{path, num_rows, sha256}] in row order
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
        data["indices"] = tuple(IndexInfo(**info) for info in data.get("indices", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

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
