"""ImageSearchTR: Turkish semantic image search over a Hugging Face dataset with FAISS indices.

The data path, one module a step: images.py (open any image safely) -> encoder.py (texts and
images to normalised embeddings; multiembedtr.py rebuilds the model) -> manifest.py (which model
built an index) -> searcher.py (load a published dataset and its indices, answer queries).
"""

from .encoder import Encoder
from .images import ImageLoadError, open_image
from .manifest import IndexInfo, LoadedManifest, Manifest, ManifestError, load_manifest
from .multiembedtr import CheckpointError
from .searcher import Hit, ModelMismatchError, Searcher, SearchSetupError

__all__ = [
    "CheckpointError",
    "Encoder",
    "ImageLoadError",
    "IndexInfo",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "Hit",
    "ModelMismatchError",
    "Searcher",
    "SearchSetupError",
    "load_manifest",
    "open_image",
]
__version__ = "0.1.0"
