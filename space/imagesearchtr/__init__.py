"""ImageSearchTR: Turkish semantic image search over a Hugging Face dataset with FAISS indices.

The data path, one module a step: images.py (open any image safely) and texts.py (which texts
are valid Unicode) -> encoder.py (texts and images to normalised embeddings; multiembedtr.py
rebuilds the model) -> manifest.py (which model built an index) -> searcher.py (load a published
dataset and its indices, answer queries; lazy_rows.py and image_cache.py read its rows and the
shown images, vectors.py does the math).

The public names below are imported on first use, as huggingface_hub's are: a command that only
reads a manifest (``python -m pipeline publish``) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "multiembedtr",
    "Encoder": "encoder",
    "Hit": "searcher",
    "ImageLoadError": "images",
    "IndexInfo": "manifest",
    "LoadedManifest": "manifest",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "ModelMismatchError": "searcher",
    "RowMovedError": "searcher",
    "Searcher": "searcher",
    "SearchSetupError": "searcher",
    "load_manifest": "manifest",
    "open_image": "images",
}
__all__ = [
    "CheckpointError",
    "Encoder",
    "Hit",
    "ImageLoadError",
    "IndexInfo",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "ModelMismatchError",
    "RowMovedError",
    "Searcher",
    "SearchSetupError",
    "load_manifest",
    "open_image",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ does this
    from .encoder import Encoder
    from .images import ImageLoadError, open_image
    from .manifest import IndexInfo, LoadedManifest, Manifest, ManifestError, load_manifest
    from .multiembedtr import CheckpointError
    from .searcher import Hit, ModelMismatchError, RowMovedError, Searcher, SearchSetupError
