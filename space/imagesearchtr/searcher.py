"""``Searcher``: load a published dataset with its FAISS indices and answer queries.

Reads a dataset repo (Hub id) or a local folder laid out like one: ``data/*.parquet`` through
``load_dataset``, ``index/*.faiss`` through ``load_faiss_index`` and ``index/manifest.json``, all
from the same revision; loads the Encoder the manifest names. Writes nothing (the Hub cache aside).

Loading checks that rows, indices, manifest and model belong together, and refuses a model whose
weight fingerprint differs from the one that built the index: mixing models is the bug that made
the original demo's results meaningless.

Memory: the rows stay memory-mapped Arrow; embeddings live only in the FAISS indices plus the
few candidate rows read back for exact re-scoring.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .encoder import Encoder
from .images import ImageInput
from .manifest import INDEX_DIR, MANIFEST_FILE, Manifest
from .vectors import embedding_matrix

# Deep Search scores a candidate pool larger than k from each index, so that an image ranked
# just below the top k by one index can still win on the fused score.
POOL_FACTOR = 4
MIN_POOL = 50
MAX_K = 100


class SearchSetupError(RuntimeError):
    """The dataset, its indices, the manifest and the model do not belong together."""


class ModelMismatchError(SearchSetupError):
    """The query encoder is not the model that built the index."""


@dataclass(frozen=True)
class Hit:
    """One search result. Scores are cosine similarities (fused for Deep Search)."""

    row: int
    score: float
    image_score: float
    caption_score: float | None
    captions: list[str]
    image: Image.Image


class Searcher:
    """Text search, Deep Search (image + caption fusion) and image-as-query over one dataset."""

    def __init__(self, dataset, manifest: Manifest, encoder: Encoder, location: str):
        self.manifest = manifest
        self.encoder = encoder
        self.location = location
        self._full = dataset
        # The view answers get_nearest_examples with raw image bytes and no embedding columns:
        # only the k images shown get decoded (decoding all columns costs ~1.3 ms an image).
        from datasets import Image as ImageFeature

        self._rows = dataset.select_columns(["image", "image_id", "captions"]).cast_column(
            "image", ImageFeature(decode=False)
        )
        table = dataset.data.table
        self._caption_valid = ~table.column("caption_emb").is_null().to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return self.manifest.num_rows

    @classmethod
    def from_repo(
        cls,
        repo_id_or_dir: str | Path,
        revision: str | None = None,
        *,
        encoder: Encoder | None = None,
        device: str = "auto",
        dtype: str | None = None,
    ) -> Searcher:
        """Load rows, indices and manifest of one revision, and the model that built them."""
        root, dataset, resolved = _load(str(repo_id_or_dir), revision)
        manifest = Manifest.load(root / INDEX_DIR / MANIFEST_FILE)
        _check_rows(dataset, manifest, str(repo_id_or_dir))
        for info in manifest.indices:
            path = root / info.file
            if not path.is_file():
                raise SearchSetupError(f"{repo_id_or_dir}: index file {info.file} is missing")
            try:
                dataset.load_faiss_index(info.column, str(path))
            except Exception as err:  # faiss raises RuntimeError; datasets asserts on ntotal
                raise SearchSetupError(
                    f"{repo_id_or_dir}: cannot load {info.file} ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else 'size does not match the rows'})"
                ) from None
            index = dataset.get_index(info.column).faiss_index
            if index.d != manifest.dim or index.ntotal != manifest.num_rows:
                raise SearchSetupError(
                    f"{repo_id_or_dir}: {info.file} holds {index.ntotal} vectors of dim "
                    f"{index.d}, the manifest says {manifest.num_rows} of dim {manifest.dim}"
                )
            _apply_params(index, info.params)
        if encoder is None:
            encoder = Encoder.from_pretrained(
                manifest.model_id, revision=manifest.model_revision, device=device, dtype=dtype
            )
        check_model(manifest, encoder)
        location = f"{repo_id_or_dir}@{resolved}" if resolved else str(repo_id_or_dir)
        return cls(dataset, manifest, encoder, location)

    # --- queries ----------------------------------------------------------------------------

    def search_text(self, query: str, k: int = 10, alpha: float | None = None) -> list[Hit]:
        """Find images for a Turkish text.

        ``alpha=None``: image-only search (the query against image embeddings).
        ``alpha`` in [0, 1]: Deep Search, ``alpha * image + (1 - alpha) * caption`` scores.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query is empty; type a few words, e.g. 'karlı dağlar'")
        vector = self.encoder.encode_texts([query.strip()])[0]
        if alpha is None:
            return self._image_only(vector, k)
        return self.fuse(vector, k, alpha)

    def search_image(self, image: ImageInput, k: int = 10) -> list[Hit]:
        """Find images that look like ``image`` (a path, bytes or PIL image)."""
        vector = self.encoder.encode_images([image])[0]
        return self._image_only(vector, k)

    def _image_only(self, vector: np.ndarray, k: int) -> list[Hit]:
        k = _check_k(k, len(self))
        # search + row fetch is what get_nearest_examples does, keeping the row numbers.
        scores, ids = self._rows.search("image_emb", vector, k)
        keep = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
        ids = [i for i, _ in keep]
        rows = self._rows[ids]
        caption_scores = self._exact_scores(vector, ids, "caption_emb")
        return [
            self._hit(row, score, score, caption_scores[j], rows, j)
            for j, (row, score) in enumerate(keep)
        ]

    def fuse(self, vector: np.ndarray, k: int, alpha: float) -> list[Hit]:
        """Deep Search: candidates from both indices, each scored exactly in both spaces.

        The original ImageSearchTR min-max scaled each index's top-k list to [0, 1] on its own
        and gave 0 to an item missing from a list. That makes scores relative to whatever else
        was retrieved (each list's best is 1 and worst 0 even if all are poor matches), and
        punishes an item the other index ranked 11th as if it did not match at all. Here both
        scores are cosines in the same embedding space, so they are fused as they are, and
        every candidate gets its real score from both sides.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        k = _check_k(k, len(self))
        pool = min(len(self), max(k * POOL_FACTOR, MIN_POOL))
        candidates: list[int] = []
        for column in ("image_emb", "caption_emb"):
            _, ids = self._full.search(column, vector, pool)
            candidates.extend(int(i) for i in ids if i >= 0)
        ids = list(dict.fromkeys(candidates))  # union, first occurrence order
        image_scores = self._exact_scores(vector, ids, "image_emb")
        caption_scores = self._exact_scores(vector, ids, "caption_emb")
        fused = [
            img if cap is None else alpha * img + (1.0 - alpha) * cap
            for img, cap in zip(image_scores, caption_scores, strict=True)
        ]
        order = sorted(range(len(ids)), key=lambda j: -fused[j])[:k]
        chosen = [ids[j] for j in order]
        rows = self._rows[chosen]
        return [
            self._hit(chosen[n], fused[j], image_scores[j], caption_scores[j], rows, n)
            for n, j in enumerate(order)
        ]

    # --- helpers ----------------------------------------------------------------------------

    def _exact_scores(self, vector: np.ndarray, ids: list[int], column: str) -> list:
        """Cosine of the query with each row's stored embedding; None for a null caption."""
        if not ids:
            return []
        matrix, valid = embedding_matrix(
            self._full.data.table.column(column).take(ids), self.manifest.dim
        )
        scores = matrix @ vector
        return [float(s) if ok else None for s, ok in zip(scores, valid, strict=True)]

    def _hit(self, row, score, image_score, caption_score, rows: dict, j: int) -> Hit:
        image = rows["image"][j]
        return Hit(
            row=row,
            score=score,
            image_score=image_score,
            caption_score=caption_score,
            captions=list(rows["captions"][j]),
            image=_decode(image),
        )


def check_model(manifest: Manifest, encoder: Encoder) -> None:
    """Refuse to search with any model but the one that built the index."""
    if encoder.fingerprint != manifest.model_fingerprint or encoder.dim != manifest.dim:
        raise ModelMismatchError(
            "this index was built by model "
            f"{manifest.model_id} (revision {manifest.model_revision or 'local'}, weights "
            f"{manifest.model_fingerprint[:19]}..., dim {manifest.dim}), but the loaded "
            f"encoder is {encoder.model_id} (weights {encoder.fingerprint[:19]}..., dim "
            f"{encoder.dim}). Load that model, or rebuild the index with this one."
        )


def _load(location: str, revision: str | None):
    """Return (folder holding index/, the dataset, the resolved revision or None)."""
    from datasets import load_dataset

    local = Path(location).expanduser()
    if local.is_dir():
        if not (local / INDEX_DIR / MANIFEST_FILE).is_file():
            raise SearchSetupError(
                f"{local} has no {INDEX_DIR}/{MANIFEST_FILE}; publish a build there with "
                "`python -m pipeline publish --build BUILD --to FOLDER`"
            )
        # load_dataset(folder) caches the Arrow copy under the folder's *name* without
        # checking file times (datasets 5.2), so a re-published folder could load stale rows.
        # The packaged parquet loader keys its cache on each file's mtime instead.
        files = sorted(str(p) for p in (local / "data").glob("*.parquet"))
        if not files:
            raise SearchSetupError(f"{local} has no data/*.parquet files")
        return local, load_dataset("parquet", data_files={"train": files}, split="train"), None
    from huggingface_hub import snapshot_download

    # The index files first: their snapshot tells the exact commit, and the rows are then
    # loaded from that same commit, so rows and indices cannot come from different builds.
    snapshot = Path(
        snapshot_download(
            location, repo_type="dataset", revision=revision, allow_patterns=[f"{INDEX_DIR}/*"]
        )
    )
    commit = snapshot.name
    dataset = load_dataset(location, split="train", revision=commit)
    return snapshot, dataset, commit


def _check_rows(dataset, manifest: Manifest, where: str) -> None:
    if len(dataset) != manifest.num_rows:
        raise SearchSetupError(
            f"{where}: the dataset has {len(dataset)} rows but its index manifest says "
            f"{manifest.num_rows}; rows and indices come from different builds"
        )
    feature = dataset.features.get("image_emb")
    length = getattr(feature, "length", None)
    if length not in (None, -1, manifest.dim):
        raise SearchSetupError(
            f"{where}: image_emb has length {length}, the manifest says dim {manifest.dim}"
        )


def _apply_params(index, params: dict) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _check_k(k: int, n: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(k, MAX_K, n)


def _decode(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    data = image.get("bytes") if isinstance(image, dict) else None
    if data is None:
        return Image.open(image["path"]).convert("RGB")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")
