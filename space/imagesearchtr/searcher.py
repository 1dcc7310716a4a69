"""``Searcher``: load a published dataset with its FAISS indices and answer queries.

Reads a dataset repo (Hub id) or a local folder laid out like one: ``data/*.parquet`` through
``load_dataset``, ``index/*.faiss`` through ``load_faiss_index`` and ``index/manifest.json``, all
from the same revision; loads the Encoder the manifest names. Writes nothing (the Hub cache aside).

Loading checks that rows, indices, manifest and model belong together, and refuses a model whose
weight fingerprint differs from the one that built the index: mixing models is the bug that made
the original demo's results meaningless.

Memory: the rows stay memory-mapped Arrow; embeddings live only in the FAISS indices plus the
few candidate rows read back for exact re-scoring.

Speed (benchmarks/search.py, 2 cores, 768-d): a flat (exact) index is scanned with one numpy
matrix-vector product over the FAISS index's own vectors (a zero-copy view, no second copy):
OpenBLAS spreads it over the cores and runs at memory bandwidth, about 2x faster than a
single-query FAISS ``IndexFlatIP.search``, which scans on one thread. An approximate index
(IVF, HNSW, scalar-quantised) returns a candidate pool that is re-scored exactly from the stored
float32 embeddings, so the k shown carry exact cosines whatever the index type.
"""

from __future__ import annotations

import ctypes
import io
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from .encoder import Encoder
from .images import ImageInput
from .manifest import LoadedManifest, Manifest, ManifestError, load_manifest
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
        self._rows = _rows_view(dataset)
        table = dataset.data.table
        self._vectors = {
            column: _ColumnVectors(table.column(column), manifest.dim)
            for column in ("image_emb", "caption_emb")
        }
        # column -> (the faiss IndexFlat, a numpy view of its vectors) for exact inner-product
        # indices; the index is kept beside the view because the view borrows its memory.
        self._flat: dict[str, tuple] = {}
        self._huge_pages: list[threading.Thread] = []  # joined only by benchmarks and tests
        for name in dataset.list_indexes():
            index = dataset.get_index(name).faiss_index
            view = _flat_ip_view(index)
            if view is not None:
                self._flat[name] = view
            thread = _huge_pages(index)
            if thread is not None:
                self._huge_pages.append(thread)

    def __len__(self) -> int:
        return self.manifest.num_rows

    @property
    def _caption_valid(self) -> np.ndarray:
        """Rows that have a caption embedding (computed on demand: it reads every chunk)."""
        column = self._full.data.table.column("caption_emb")
        return ~column.is_null().to_numpy(zero_copy_only=False)

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
        try:
            loaded = load_manifest(repo_id_or_dir, revision)
        except ManifestError as err:
            raise SearchSetupError(str(err)) from None
        manifest, resolved = loaded.manifest, loaded.revision
        dataset = _load_rows(loaded, str(repo_id_or_dir))
        _check_rows(dataset, manifest, str(repo_id_or_dir))
        for info in manifest.indices:
            path = loaded.index_path(info.column)
            if not path.is_file():
                raise SearchSetupError(f"{repo_id_or_dir}: index file {info.file} is missing")
            try:
                dataset.load_faiss_index(info.column, str(path))
            except Exception:  # faiss raises RuntimeError; datasets asserts on ntotal
                # The library's text is not shown: FAISS quotes the file's first bytes.
                raise SearchSetupError(
                    f"{repo_id_or_dir}: cannot load {info.file}: it is not a FAISS index over "
                    "these rows, or it is damaged; re-run `python -m pipeline index` and "
                    "publish again"
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
        scores, ids = self._nearest("image_emb", vector, k)
        keep = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
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
            _, ids = self._candidates(column, vector, pool)
            candidates.extend(int(i) for i in ids)
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

    # --- search ---------------------------------------------------------------------------------

    def _nearest(self, column: str, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, row numbers) of the k rows closest to ``vector`` in ``column``, best first.

        The scores are exact whatever the index type: a flat index is scanned exactly, and an
        approximate index's candidates (a pool of max(4k, 50)) are re-scored from the stored
        float32 embeddings, which also undoes the rank errors of a quantised index.
        """
        vector = _as_query(vector)
        if column in self._flat:
            return self._candidates(column, vector, k)
        pool = min(len(self), max(k * POOL_FACTOR, MIN_POOL))
        _, ids = self._candidates(column, vector, pool)
        matrix, valid = self._vectors[column].take(ids)
        scores = np.where(valid, matrix @ vector, -np.inf).astype(np.float32)
        order = _top_k(scores, ids, k)
        order = order[np.isfinite(scores[order])]
        return scores[order], ids[order]

    def _candidates(self, column: str, vector: np.ndarray, n: int):
        """The index's own top n: (scores, row numbers), best first, no padding."""
        vector = _as_query(vector)
        flat = self._flat.get(column)
        if flat is not None:
            # One BLAS sgemv over the index's vectors: it uses every core and runs at memory
            # bandwidth (100k x 768 in ~16 ms here, 1M in ~150 ms), where a single-query
            # IndexFlatIP.search scans on one thread at about half that speed.
            scores = flat[1] @ vector
            order = _top_k(scores, None, n)
            return scores[order], order
        scores, ids = self._full.search(column, vector, n)
        keep = ids >= 0
        return scores[keep], ids[keep].astype(np.int64)

    # --- helpers ----------------------------------------------------------------------------

    def _exact_scores(self, vector: np.ndarray, ids: list[int], column: str) -> list:
        """Cosine of the query with each row's stored embedding; None for a null caption."""
        if not ids:
            return []
        matrix, valid = self._vectors[column].take(ids)
        scores = matrix @ _as_query(vector)
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


def _load_rows(loaded: LoadedManifest, location: str):
    """The rows of the same build as the manifest: a folder's parquet files or the Hub commit."""
    from datasets import load_dataset

    if loaded.revision is None:
        # load_dataset(folder) caches the Arrow copy under the folder's *name* without
        # checking file times (datasets 5.2), so a re-published folder could load stale rows.
        # The packaged parquet loader keys its cache on each file's mtime instead.
        files = sorted(str(p) for p in (loaded.root / "data").glob("*.parquet"))
        if not files:
            raise SearchSetupError(f"{location} has no data/*.parquet files")
        return load_dataset("parquet", data_files={"train": files}, split="train")
    return load_dataset(location, split="train", revision=loaded.revision)


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


class _ColumnVectors:
    """Rows of an embedding column gathered straight from its Arrow chunks.

    ``ChunkedArray.take`` concatenates the chunks first: at 100k rows every query copied the
    whole 307 MB column and paged all of the memory-mapped file in (benchmarks/pipeline.py:
    +860 MB RSS after 20 queries, 50-200 ms a take). Here each fixed-size-list chunk is a
    zero-copy (rows, dim) numpy view of the memory map, and a take reads only the rows asked
    for (~0.4 ms for 50 rows), validity included: reading every chunk's null bitmap up front
    paged in ~40 MB of the map at 100k rows.
    """

    def __init__(self, column: pa.ChunkedArray, dim: int):
        self.column, self.dim = column, dim
        self.views: list[np.ndarray] | None = []
        starts = [0]
        kind = column.type
        if (
            pa.types.is_fixed_size_list(kind)
            and kind.list_size == dim
            and kind.value_type == pa.float32()
        ):
            for chunk in column.chunks:
                # The values buffer itself: a null row still holds dim (meaningless) floats
                # there, masked by validity; to_numpy would refuse the nulls.
                values = chunk.values
                buffer = values.buffers()[1] if len(chunk) else None
                if buffer is None:
                    view = np.zeros((0, dim), dtype=np.float32)
                else:
                    start = (values.offset + chunk.offset * dim) * 4
                    view = np.frombuffer(
                        buffer, dtype=np.float32, count=len(chunk) * dim, offset=start
                    ).reshape(len(chunk), dim)
                self.views.append(view)
                starts.append(starts[-1] + len(chunk))
        else:  # variable-length lists or another float type: Arrow's take
            self.views = None
        self.starts = np.asarray(starts, dtype=np.int64)

    def take(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(float32 matrix (len(ids), dim) with zero rows for nulls, mask of non-null rows)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self.views is None:
            return embedding_matrix(self.column.take(pa.array(ids)), self.dim)
        matrix = np.empty((len(ids), self.dim), dtype=np.float32)
        valid = np.ones(len(ids), dtype=bool)
        chunks = np.searchsorted(self.starts, ids, side="right") - 1
        rows = ids - self.starts[chunks]
        for j, (chunk, row) in enumerate(zip(chunks, rows, strict=True)):
            matrix[j] = self.views[chunk][row]
            array = self.column.chunk(chunk)
            if array.null_count:
                # one bit of the chunk's validity bitmap (a zero-copy view of the map)
                bit = array.offset + row
                bitmap = np.frombuffer(array.buffers()[0], dtype=np.uint8)
                valid[j] = bool((bitmap[bit >> 3] >> (bit & 7)) & 1)
        matrix[~valid] = 0.0
        return matrix, valid


def _rows_view(dataset):
    """The rows as get_nearest_examples fetches them, with raw image bytes and no embeddings.

    Only the k images shown get decoded (decoding costs ~1.3 ms an image). The view shares the
    dataset's Arrow table and carries no index: ``select_columns`` and ``cast_column`` deep-copy
    the dataset with its FAISS indices (faiss pickles them), which cost a second copy of every
    index in RAM and seconds of cold start (benchmarks/pipeline.py: ~+1.4 GB and ~3 s at 100k).
    """
    from datasets import Dataset, DatasetInfo, Features
    from datasets import Image as ImageFeature
    from datasets.fingerprint import generate_random_fingerprint

    columns = ["image", "image_id", "captions"]
    if getattr(dataset, "_indices", None) is not None:  # a row mapping (select/shuffle) to keep
        view = dataset.select_columns(columns)
        return view.cast_column("image", ImageFeature(decode=False))
    features = Features({name: dataset.features[name] for name in columns})
    features["image"] = ImageFeature(decode=False)
    return Dataset(
        dataset.data.select(columns),
        info=DatasetInfo(features=features),
        fingerprint=generate_random_fingerprint(),
    )


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25  # linux/mman.h


def _huge_pages(index) -> threading.Thread | None:
    """Back the codes of a flat-scanned index (Flat, SQfp16, SQ8) with 2 MB pages, on Linux.

    A query streams through all the codes, and with 4 kB pages the TLB misses cost a single-
    threaded scan dearly: at 100k x 768 (benchmarks/search.py) an SQfp16 query took 8.2 ms on
    4 kB pages and 5.3 ms on 2 MB pages, a float32 Flat scan 11.5 ms and 10.1 ms (the speed of a
    numpy array, which numpy itself advises). Transparent huge pages are often "madvise"-only
    (as here) and FAISS does not advise its memory, so ask for them: MADV_HUGEPAGE, then
    MADV_COLLAPSE (Linux >= 6.1; ~0.35 s per 150 MB) in a background thread, so that loading
    does not wait. Anywhere else this does nothing.
    """
    import faiss

    index = faiss.downcast_index(index)
    if not sys.platform.startswith("linux") or not isinstance(index, faiss.IndexFlatCodes):
        return None
    size = int(index.codes.size())
    if size < 16 * _HUGE_PAGE:
        return None
    address = faiss.rev_swig_ptr(index.codes.data(), size).ctypes.data
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    length = (address + size) // _HUGE_PAGE * _HUGE_PAGE - start
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    if madvise(start, length, _MADV_HUGEPAGE) != 0:
        return None
    # ctypes releases the GIL during the call: the copy into huge pages runs beside the rest of
    # the start-up, and queries meanwhile read the same data through either page size.
    thread = threading.Thread(
        target=madvise, args=(start, length, _MADV_COLLAPSE), name="huge-pages", daemon=True
    )
    thread.start()
    return thread


def _flat_ip_view(index):
    """(index, numpy view of its vectors) for an exact inner-product IndexFlat; else None."""
    import faiss

    index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    n, d = index.ntotal, index.d
    if n == 0:
        return index, np.zeros((0, d), dtype=np.float32)
    return index, faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def _as_query(vector) -> np.ndarray:
    # float32 on purpose: a float64 query would make numpy upcast the whole matrix.
    return np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(-1))


def _top_k(scores: np.ndarray, ids: np.ndarray | None, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first; ties go to the lower row number.

    ``ids``: the row number at each position (None: the position is the row number).
    """
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)

    def rows(positions):
        return positions if ids is None else ids[positions]

    part = np.arange(n)
    if k < n:
        part = np.argpartition(scores, n - k)[n - k :]
        cut = scores[part].min()
        if np.count_nonzero(scores == cut) > np.count_nonzero(scores[part] == cut):
            # equal scores straddle the cut (duplicate vectors): keep the lowest rows of them
            above = np.flatnonzero(scores > cut)
            tied = np.flatnonzero(scores == cut)
            tied = tied[np.argsort(rows(tied), kind="stable")][: k - len(above)]
            part = np.concatenate([above, tied])
    return part[np.lexsort((rows(part), -scores[part]))]


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
