"""``Searcher``: load a published dataset with its FAISS indices and answer queries.

Reads a dataset repo (Hub id) or a local folder laid out like one: ``index/manifest.json`` and
``index/*.faiss`` through ``load_manifest`` and ``Dataset.load_faiss_index``, and from
``data/*.parquet`` only the ids, paths and captions at start and the images of the hits shown, on
demand (lazy_rows.py), all from the same revision; loads the Encoder the manifest names. Writes
nothing but caches (the Hub's, and lazy_rows' rows and images).

Loading checks that rows, indices, manifest and model belong together, and refuses a model whose
weight fingerprint differs from the one that built the index: mixing models is the bug that made
the original demo's results meaningless.

Every query takes the same road: the FAISS index of a column proposes candidate rows
(``Dataset.search``), each candidate is scored in both spaces (its cosine with the vectors the
two indices hold for it, so no embedding column is read at start), the best k are kept and only
their images are fetched. An exact inner-product (Flat) index proposes the k best itself; any
other proposes a larger pool: a graph (HNSW) index finds more of the true top k when asked for
more, an L2 index's order is redone as cosines, and Deep Search fuses the two pools. The scores
are exact cosines where the index holds whole vectors (Flat, HNSW, IVF-Flat) and the index's own
quantised ones otherwise, so its rank errors stay (fp16: about 1e-4 off; ivf-sq8: about 0.002,
recall@10 0.991 at a million rows: benchmarks/README.md).
An image that cannot be fetched or decoded is shown as a placeholder with ``Hit.image_error``
saying why; the search itself does not fail.
"""

from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .encoder import Encoder
from .images import ImageInput
from .lazy_rows import (
    DEFAULT_IMAGE_CACHE_BYTES,
    ROW_COLUMNS,
    ImageStore,
    RowsError,
    Source,
    data_files,
    default_cache_dir,
    load_columns,
)
from .manifest import (
    EMBEDDING_COLUMNS,
    INDEX_DIR,
    REINDEX,
    LoadedManifest,
    Manifest,
    ManifestError,
    describe_error,
    load_manifest,
    sha256_file,
)
from .vectors import as_query, compose_vectors

# An approximate index, and each index in Deep Search, proposes a pool larger than k, so that a
# row ranked just below the top k by one index can still win on its re-computed (or fused) score.
POOL_FACTOR = 4
MIN_POOL = 50
MAX_K = 100
# Loads of a local folder that a publish replaced meanwhile (each try sees it whole or not).
FOLDER_LOAD_ATTEMPTS = 3


class SearchSetupError(RuntimeError):
    """The dataset, its indices, the manifest and the model do not belong together."""


class ModelMismatchError(SearchSetupError):
    """The query encoder is not the model that built the index."""


class RowMovedError(ValueError):
    """A row number read before the dataset changed: the row now holds another image."""


@dataclass(frozen=True)
class Hit:
    """One search result. Scores are cosine similarities (``score`` is fused for Deep Search)."""

    row: int
    score: float
    image_score: float
    caption_score: float | None  # None: the row has no caption
    captions: list[str]
    image: Image.Image  # a grey placeholder when image_error is set
    image_error: str | None = None  # why the image could not be fetched or decoded
    image_id: str = ""  # the row's id, which stays the photo's across updates (its row may not)


class Searcher:
    """Text search, Deep Search (image + caption fusion), image, similar-row and composed queries.

    ``rows``: the dataset's image_id, path and captions columns (memory-mapped), with a FAISS index
    loaded on it for each embedding column, under that column's name; ``exact``: which of the
    two indices proposes the exact top k itself; ``images``: fetches the images of the hits
    shown (``lazy_rows.ImageStore``). Use ``from_repo``.
    """

    def __init__(
        self,
        rows,
        exact: dict,
        manifest: Manifest,
        encoder: Encoder,
        location: str,
        images,
        cache_dir: Path,
    ):
        self.rows, self.exact, self.images = rows, exact, images
        self.manifest, self.encoder, self.location = manifest, encoder, location
        self._cache_dir, self._embeddings = cache_dir, None

    def __len__(self) -> int:
        return self.manifest.num_rows

    def close(self) -> None:
        """Let go of what load holds (open data files, the image cache, the fetch threads); no
        search after this."""
        self.images.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- load and check ---------------------------------------------------------------------

    @classmethod
    def from_repo(
        cls,
        repo_id_or_dir: str | Path,
        revision: str | None = None,
        *,
        encoder: Encoder | None = None,
        device: str = "auto",
        dtype: str | None = None,
        cache_dir: str | Path | None = None,
        image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
        image_max_side: int | None = None,
    ) -> Searcher:
        """Load the indices, manifest, ids, paths and captions of one revision, and the model.

        No image or embedding is read here: ``cache_dir`` (default: under the datasets cache)
        keeps the ids, paths and captions of each data file and, for a Hub repo, up to
        ``image_cache_bytes`` of fetched images (0: none). ``image_max_side``: the hits'
        images are scaled down to fit that many pixels a side (None: as stored).
        """
        if image_max_side is not None and not _is_whole(image_max_side, minimum=1):
            raise ValueError(
                f"image_max_side must be a number of pixels (1 or more) or None, "
                f"not {image_max_side!r}"
            )
        if encoder is not None and (isinstance(encoder, type) or not hasattr(encoder, "dim")):
            raise TypeError(
                f"encoder must be a loaded Encoder (Encoder.from_pretrained(...)) or None, not "
                f"{type(encoder).__name__}; a model id goes to Encoder.from_pretrained"
            )
        if not _is_whole(image_cache_bytes, minimum=0):
            raise ValueError(
                f"image_cache_bytes must be a number of bytes (0: no cache), "
                f"not {image_cache_bytes!r}"
            )
        load = functools.partial(
            cls._load, repo_id_or_dir, revision, encoder, device, dtype, cache_dir,
            image_cache_bytes, image_max_side,
        )  # fmt: skip
        folder = _folder_version(repo_id_or_dir)  # None for a Hub id
        for _ in range(FOLDER_LOAD_ATTEMPTS - 1):
            try:
                return load()
            except SearchSetupError:
                # A folder that `publish --to` swapped for a new one while it was read gave
                # the manifest of one build and files of the other: read it again, as it is.
                now = _folder_version(repo_id_or_dir)
                if folder is None or now == folder:
                    raise
                folder = now or folder  # (None: caught between the swap's two renames)
                time.sleep(0.2)
        return load()

    @classmethod
    def _load(
        cls, repo_id_or_dir, revision, encoder, device, dtype, cache_dir, image_cache_bytes,
        image_max_side,
    ) -> Searcher:  # fmt: skip
        where = str(repo_id_or_dir)
        try:
            loaded = load_manifest(repo_id_or_dir, revision)
            ranges = loaded.image_ranges(where)  # before the rows: it is the cheap check
        except ManifestError as err:
            raise SearchSetupError(str(err)) from None
        manifest = loaded.manifest
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # (later, it would read as a missing data file)
            raise SearchSetupError(
                f"cannot use the cache folder {cache_dir} ({err.strerror}); give cache_dir= a "
                "folder this process can write"
            ) from None
        source = Source(where, loaded.root, loaded.revision)
        try:
            files = data_files(source, manifest)
            dataset, counts = load_columns(source, files, cache_dir, ROW_COLUMNS)
        except RowsError as err:
            raise SearchSetupError(str(err)) from None
        except FileNotFoundError as err:
            raise SearchSetupError(
                f"{where}: a data file is missing ({err}); publish the build again"
            ) from None
        if len(dataset) != manifest.num_rows:
            raise SearchSetupError(
                f"{where}: the dataset has {len(dataset)} rows but its index manifest says "
                f"{manifest.num_rows}; rows and indices come from different builds"
            )
        max_side = None if image_max_side is None else int(image_max_side)
        images = ImageStore(
            source, files, counts, ranges, cache_dir, int(image_cache_bytes), max_side
        )
        # The Hub records each LFS file's sha256: one listing checks the index files against the
        # manifest without reading them again (a folder's are hashed).
        recorded = source.hub_files(INDEX_DIR) if source.remote else {}
        exact = {
            column: _load_index(dataset, loaded, column, where, recorded)
            for column in EMBEDDING_COLUMNS
        }
        if encoder is None:
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

            try:
                encoder = Encoder.from_pretrained(
                    manifest.model_id,
                    revision=manifest.model_revision,
                    device=device,
                    dtype=dtype,
                    component_revisions=manifest.component_revisions or None,
                )
            except (LocalEntryNotFoundError, HfHubHTTPError) as err:  # (offline: the former)
                pinned = f"@{manifest.model_revision[:12]}" if manifest.model_revision else ""
                raise SearchSetupError(
                    f"{where}: its model {manifest.model_id}{pinned} could not be fetched "
                    f"({describe_error(err)}); check the connection (and HF_TOKEN for a "
                    "private model), or pass encoder="
                ) from None
        check_model(manifest, encoder)
        location = f"{where}@{loaded.revision}" if loaded.revision else where
        return cls(dataset, exact, manifest, encoder, location, images, cache_dir)

    def embeddings(self):
        """The exact float32 ``image_emb`` and ``caption_emb`` columns of every row, as an
        Arrow table: read from the data files on first use (evaluation needs them; search
        uses the indices' own vectors) and cached like the ids and captions."""
        if self._embeddings is None:
            files, source = self.images.files, self.images.source
            try:
                dataset, _ = load_columns(source, files, self._cache_dir, EMBEDDING_COLUMNS)
            except RowsError as err:
                raise SearchSetupError(str(err)) from None
            self._embeddings = dataset.data.table
        return self._embeddings

    # --- queries ----------------------------------------------------------------------------

    def search_text(self, query: str, k: int = 10, alpha: float | None = None) -> list[Hit]:
        """Find images for a Turkish text.

        ``alpha=None``: image-only search (the query against image embeddings).
        ``alpha`` in [0, 1]: Deep Search, ``alpha * image + (1 - alpha) * caption`` scores.
        ``k``: as many hits, capped at ``MAX_K`` and at the row count (every search alike).
        """
        if not isinstance(query, str):  # bytes would otherwise be taken for an image
            raise TypeError(
                f"search_text takes a str, not {type(query).__name__}; for an image use "
                "search_image"
            )
        return self.search_vector(self._encode_term(query), k, alpha)

    def search_image(self, image: ImageInput, k: int = 10) -> list[Hit]:
        """Find images that look like ``image`` (a path, bytes or PIL image)."""
        return self.search_vector(self.encoder.encode_images([image])[0], k)

    def search_similar(self, row: int, k: int = 10, image_id: str | None = None) -> list[Hit]:
        """More like this: the rows whose image embeddings are closest to ``row``'s, it left out.

        ``image_id``: the ``Hit.image_id`` the row number came with; a row that holds another
        image now (the dataset was updated since) raises RowMovedError instead of answering for
        that other photo, or one past the end now (the dataset shrank)."""
        if isinstance(row, bool) or not isinstance(row, int | np.integer):
            raise ValueError(f"row must be a row number, got {row!r}")
        if not 0 <= row < len(self):
            error = ValueError if image_id is None else RowMovedError
            raise error(f"row {row} is out of range: the dataset has rows 0 to {len(self) - 1}")
        if image_id is not None and (held := self.rows[int(row)]["image_id"]) != image_id:
            raise RowMovedError(
                f"row {row} holds image {held!r} now, not {image_id!r}: the dataset changed "
                "since that row number was read; search again"
            )
        k = _check_k(k, len(self) - 1)
        vector = self._stored("image_emb", np.array([row]))[0]
        vector /= max(float(np.linalg.norm(vector)), 1e-12)  # (a quantised copy is not unit)
        ids = self._candidates("image_emb", vector, self._pool("image_emb", k + 1))
        return self._best(vector, ids[ids != row], k, alpha=None)

    def search_combined(self, positive, negative=(), k: int = 10) -> list[Hit]:
        """Composed query: each term a text (a ``str``) or an image (``Path``, bytes or PIL).

        A ``str`` is always a text, never a file path (unlike ``search_image``'s): one that
        looks like an image file's name (``kedi.jpg``) is a ValueError that says to pass it as
        a ``Path``, rather than a search for its letters.

        The query is the sum of the positive terms' embeddings minus the negative ones', all
        weighted 1, normalised (rclip's ``"kedi" + "şapka" - "köpek"``); searched image-only.
        ``python -m pipeline evaluate --composed`` measures other weights on a published set.
        One positive term alone is its own (already normalised) embedding, so one text gives
        exactly ``search_text``'s result.
        """
        positive, negative = _terms("positive", positive), _terms("negative", negative)
        if not positive:
            raise ValueError("give at least one positive term (a text or an image)")
        for term in (*positive, *negative):
            if isinstance(term, str):
                _refuse_path_as_text(term)
        plus = [self._encode_term(term) for term in positive]
        minus = [self._encode_term(term) for term in negative]
        return self.search_vector(compose_vectors(plus, minus), k)

    def search_vector(self, vector, k: int = 10, alpha: float | None = None) -> list[Hit]:
        """Search with an embedding: image-only (``alpha=None``) or Deep Search at ``alpha``.

        The vector is scaled to unit length first, so that the scores are cosines whatever its
        length (the ranking does not depend on it); an all-zero vector is a ValueError.
        """
        k = _check_k(k, len(self))
        shape = np.shape(vector)
        if sum(side > 1 for side in shape) > 1 or np.iscomplexobj(vector):
            raise ValueError(  # a (2, 384) array must not search as one 768-d vector
                f"the query vector must be one vector of {self.manifest.dim} real numbers, of "
                f"shape ({self.manifest.dim},), (1, {self.manifest.dim}) or the like; got shape "
                f"{shape}" + (" of complex numbers" if np.iscomplexobj(vector) else "")
            )
        vector = as_query(vector)
        if vector.shape[0] != self.manifest.dim or not np.isfinite(vector).all():
            raise ValueError(
                f"the query vector must be {self.manifest.dim} finite numbers (the index's "
                f"dimension), got {vector.shape[0]}"
                + ("" if vector.shape[0] != self.manifest.dim else " with NaN or infinity")
            )
        wide = vector.astype(np.float64)  # (the norm of large or tiny float32 values fits)
        norm = float(np.linalg.norm(wide))
        if norm == 0.0:
            raise ValueError("the query vector is all zeros: it points nowhere")
        vector = as_query(wide / norm)
        if alpha is None:
            ids = self._candidates("image_emb", vector, self._pool("image_emb", k))
            return self._best(vector, ids, k, alpha)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.number):
            raise ValueError(f"alpha must be a number between 0 and 1 or None, got {alpha!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        # Deep Search: candidates from both indices, each scored in both spaces.
        pool = max(k * POOL_FACTOR, MIN_POOL)
        ids = [self._candidates(column, vector, pool) for column in EMBEDDING_COLUMNS]
        return self._best(vector, np.concatenate(ids), k, alpha)

    # --- candidates, scores, fusion ---------------------------------------------------------

    def _encode_term(self, term) -> np.ndarray:
        if not isinstance(term, str):
            return self.encoder.encode_images([term])[0]
        if not term.strip():
            raise ValueError("the query is empty; type a few words, e.g. 'karlı dağlar'")
        return self.encoder.encode_texts([term.strip()])[0]

    def _pool(self, column: str, k: int) -> int:
        """How many candidates to ask ``column``'s index for (a Flat one's top k is exact)."""
        return k if self.exact[column] else max(k * POOL_FACTOR, MIN_POOL)

    def _candidates(self, column: str, vector: np.ndarray, n: int) -> np.ndarray:
        """The row numbers of ``column``'s index's own top n (fewer if it finds fewer)."""
        _, ids = self.rows.search(column, vector, min(n, len(self)))
        return ids[ids >= 0].astype(np.int64)

    def _stored(self, column: str, ids: np.ndarray) -> np.ndarray:
        """The vectors ``column``'s index holds for rows ``ids``, float32 (len(ids), dim)."""
        return self.rows.get_index(column).faiss_index.reconstruct_batch(ids)

    def _best(self, vector: np.ndarray, ids: np.ndarray, k: int, alpha: float | None) -> list:
        """Score the candidate rows in both spaces, keep the best k and fetch only their rows.

        Both scores are cosines in one embedding space, fused as they are, and every candidate
        gets its real score from both sides (not min-max scaled per list, which made a score
        depend on whatever else was retrieved and scored a row one list missed as 0).
        """
        self.images.source.check_open()
        ids = np.unique(ids)  # sorted, so that equal scores keep row order below
        if len(ids) == 0:
            return []
        image = self._stored("image_emb", ids)
        caption = self._stored("caption_emb", ids)
        # A row without captions is a zero vector in the caption index (pipeline/index.py);
        # every other vector there has length 1, or nearly, when quantised.
        has_caption = np.linalg.norm(caption, axis=1) > 0.5
        image_scores = image @ vector
        caption_scores = [
            float(s) if ok else None for s, ok in zip(caption @ vector, has_caption, strict=True)
        ]
        scores = [
            float(img if cap is None or alpha is None else alpha * img + (1.0 - alpha) * cap)
            for img, cap in zip(image_scores, caption_scores, strict=True)
        ]
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        chosen = ids[order].tolist()
        rows = self.rows[chosen]
        images = self.images.fetch(chosen)
        return [
            Hit(
                row=row,
                score=scores[j],
                image_score=float(image_scores[j]),
                caption_score=caption_scores[j],
                captions=list(rows["captions"][n]),
                image=images[n].image,
                image_error=images[n].error,
                image_id=rows["image_id"][n],
            )
            for n, (row, j) in enumerate(zip(chosen, order, strict=True))
        ]


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
    for component, commit in manifest.component_revisions.items():
        loaded = encoder.component_revisions.get(component)
        if loaded is not None and loaded != commit:
            raise ModelMismatchError(
                f"this index was built with {component} at commit {commit[:12]}, but the "
                f"loaded encoder took it at {loaded[:12]}: its tokenizer or image processor may "
                "differ. Load the encoder with component_revisions=manifest.component_revisions"
            )


def _load_index(rows, loaded: LoadedManifest, column: str, where: str, recorded: dict) -> bool:
    """Attach ``column``'s FAISS file to ``rows``, check it is the one the manifest names (by
    sha256: ``recorded``'s, the Hub's, else the file's own), covers the rows and can give back
    each row's vector, and say whether it is exact (a Flat inner-product index, whose top k is
    the exact top k)."""
    import faiss

    manifest = loaded.manifest
    try:
        info = manifest.index(column)
    except KeyError:
        raise SearchSetupError(
            f"{where}: the manifest names no index for {column}; {REINDEX}"
        ) from None
    path = loaded.index_path(column)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is missing"
        raise SearchSetupError(f"{where}: index file {info.file} {what}; publish the build again")
    expected = manifest.index_sha256.get(info.file)
    if expected is not None and (recorded.get(info.file) or sha256_file(path)) != expected:
        raise SearchSetupError(
            f"{where}: {info.file} is not the index the manifest was written with (its sha256 "
            f"differs): it comes from another build, or it is damaged; {REINDEX}"
        )
    try:
        rows.load_faiss_index(column, str(path))
    except Exception:  # faiss raises RuntimeError; datasets asserts on ntotal
        # The library's text is not shown: FAISS quotes the file's first bytes in it.
        raise SearchSetupError(
            f"{where}: cannot load {info.file}: it is not a FAISS index over these rows, or it "
            f"is damaged; {REINDEX}"
        ) from None
    index = rows.get_index(column).faiss_index
    if index.d != manifest.dim or index.ntotal != manifest.num_rows:
        raise SearchSetupError(
            f"{where}: {info.file} holds {index.ntotal} vectors of dim "
            f"{index.d}, the manifest says {manifest.num_rows} of dim {manifest.dim}"
        )
    space = faiss.ParameterSpace()
    for name, value in info.params.items():
        try:
            space.set_index_parameter(index, name, value)
        except (RuntimeError, TypeError):  # FAISS's text is C++ internals: say what and where
            raise SearchSetupError(
                f"{where}: the manifest's search parameter {name}={value!r} for {info.file} does "
                f"not apply to that index; {REINDEX}"
            ) from None
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:  # an IVF index finds a row's vector through a row -> list map
        ivf.make_direct_map()
    try:
        if index.ntotal:
            index.reconstruct(0)
    except RuntimeError:  # an expert's factory string whose codes cannot be decoded
        raise SearchSetupError(
            f"{where}: {info.file} cannot give back the vectors it holds, which the search "
            "scores with; rebuild it with `python -m pipeline index --index-type auto`"
        ) from None
    index = faiss.downcast_index(index)
    return isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT


def _is_whole(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= minimum


def _terms(name: str, terms) -> list:
    """A composed query's terms as a list; a lone text or image is a TypeError, since a str
    would otherwise be read letter by letter."""
    if isinstance(terms, str | bytes | Path | Image.Image):
        raise TypeError(
            f"{name} must be a list of terms, e.g. [{terms!r}] rather than {terms!r}"
            if isinstance(terms, str)
            else f"{name} must be a list of terms, e.g. [image] rather than one image"
        )
    if not isinstance(terms, list | tuple):  # a dict's keys, say, are no list of terms
        raise TypeError(f"{name} must be a list of terms, not {type(terms).__name__}")
    return list(terms)


def _refuse_path_as_text(term: str) -> None:
    """A composed query's ``str`` is a text: refuse one that looks like an image file's name
    (one word with an image extension Pillow knows), instead of searching for its letters
    (``search_image`` reads a ``str`` as a path, so a caller may expect the same here)."""
    name = term.strip()
    if any(c.isspace() for c in name) or (
        os.path.splitext(name)[1].lower() not in Image.registered_extensions()
    ):
        return  # a text (a file of another kind named like a word, "notlar", is no image)
    if os.path.isfile(name):
        said = "names an image file"
    else:
        said = "looks like an image file's name (there is no such file)"
    raise ValueError(
        f"the text term {term!r} {said}; a str term is always searched as text: pass an image "
        f"as pathlib.Path({term.strip()!r}), bytes or a PIL image"
    )


def _check_k(k: int, n: int) -> int:
    if not _is_whole(k, minimum=1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(min(k, MAX_K, n))


def _folder_version(location) -> tuple[int, int] | None:
    """(device, inode) of a local folder, which ``publish --to`` replaces by a new one; None
    for anything else (a Hub id, a folder that is not there)."""
    try:
        st = os.stat(Path(location).expanduser())
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
