"""Small published-repo folders from hand-made vectors, for tests that search without a model.

``write_repo`` writes ``data/*.parquet``, ``index/*.faiss``, ``index/image_ranges.npy`` and
``index/manifest.json`` as ``pipeline publish`` lays them out; ``open_repo`` loads one through
``Searcher.from_repo`` with a ``FakeEncoder`` that maps known texts (and image bytes) to given
vectors.
"""

from __future__ import annotations

import io
from pathlib import Path

import faiss
import numpy as np
from datasets import Dataset
from PIL import Image as PILImage

from imagesearchtr import IndexInfo, Manifest, Searcher
from imagesearchtr.manifest import IMAGE_RANGES_FILE, sha256_file
from pipeline import datafiles
from pipeline.encode import features as encode_features

FINGERPRINT = "sha256:" + "a" * 64


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class FakeEncoder:
    """Maps known queries to hand-made vectors; carries a model identity like Encoder."""

    model_id = "fake/model"
    fingerprint = FINGERPRINT

    def __init__(self, dim: int, vectors: dict | None = None):
        self.dim, self.vectors = dim, dict(vectors or {})

    def encode_texts(self, texts, batch_size: int = 64):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def encode_images(self, images, batch_size: int = 8):
        return np.stack([self.vectors[bytes(i)] for i in images]).astype(np.float32)


def png(colour=(200, 0, 0)) -> bytes:
    """A 4x4 palette PNG: the Searcher must still hand out RGB images."""
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 4), colour).convert("P").save(buf, format="PNG")
    return buf.getvalue()


def write_repo(
    folder: Path,
    image_emb,
    caption_emb=None,
    *,
    factory: str = "Flat",
    metric: int = faiss.METRIC_INNER_PRODUCT,
    params: dict | None = None,
    captions: list[list[str]] | None = None,
    images: list[bytes] | None = None,
) -> Path:
    """A repo folder over these embeddings; ``caption_emb`` entries may be None (no caption);
    ``images``: each row's image bytes (default: the same small PNG)."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    n, dim = image_emb.shape
    caption_emb = list(image_emb) if caption_emb is None else list(caption_emb)
    if captions is None:
        captions = [[] if c is None else [f"caption {i}"] for i, c in enumerate(caption_emb)]
    features = encode_features(dim)  # the schema encode writes
    images = [png()] * n if images is None else images
    rows = Dataset.from_dict(
        {
            "image": [{"bytes": image, "path": f"{i}.png"} for i, image in enumerate(images)],
            "image_id": [str(i) for i in range(n)],
            "path": [f"{i}.png" for i in range(n)],
            "captions": captions,
            "image_emb": [list(v) for v in image_emb],
            "caption_emb": [None if c is None else list(c) for c in caption_emb],
            "sha256": ["0" * 64] * n,
        },
        features=features,
    )
    (folder / "data").mkdir(parents=True)
    # (A manifest without data_files, as older builds wrote it: the Searcher lists data/.)
    data_file = "data/train-00000-of-00001.parquet"
    datafiles.write_file(rows.data.table, folder / data_file)
    (folder / "index").mkdir()
    files = [(data_file, sha256_file(folder / data_file))]
    ranges_sha256 = datafiles.write_image_ranges(folder, files, folder / IMAGE_RANGES_FILE)
    zeros = np.zeros(dim, dtype=np.float32)
    matrices = {
        "image_emb": image_emb,
        "caption_emb": np.stack([zeros if c is None else c for c in caption_emb]),
    }
    infos = []
    for column, matrix in matrices.items():
        index = faiss.index_factory(dim, factory, metric)
        index.train(np.ascontiguousarray(matrix, dtype=np.float32))
        index.add(np.ascontiguousarray(matrix, dtype=np.float32))
        faiss.write_index(index, str(folder / "index" / f"{column}.faiss"))
        infos.append(
            IndexInfo(column, f"index/{column}.faiss", factory, factory, n, dict(params or {}))
        )
    Manifest(
        model_id="fake/model",
        model_revision=None,
        model_fingerprint=FINGERPRINT,
        dim=dim,
        num_rows=n,
        data_hash="sha256:x",
        indices=tuple(infos),
        image_ranges_sha256=ranges_sha256,
    ).save(folder / "index" / "manifest.json")
    return folder


def open_repo(folder: Path, vectors: dict | None = None) -> Searcher:
    dim = Manifest.load(folder / "index" / "manifest.json").dim
    return Searcher.from_repo(folder, encoder=FakeEncoder(dim, vectors))
