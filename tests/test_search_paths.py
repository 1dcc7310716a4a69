"""The Searcher's search paths: the numpy scan of a flat index, and approximate indices re-scored.

Hand-made vectors and in-memory datasets; no model. The scores must be exact cosines whatever the
index type, and the flat scan must agree with FAISS and with numpy to the row.
"""

from __future__ import annotations

import io

import faiss
import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from imagesearchtr import IndexInfo, Manifest, Searcher
from imagesearchtr.searcher import _apply_params
from pipeline.index import choose_index

DIM = 16


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def clustered(n, rng, clusters=20):
    centres = unit(rng.normal(size=(clusters, DIM)))
    return unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, DIM)))


class FakeEncoder:
    model_id, fingerprint, dim = "fake/model", "sha256:aaa", DIM

    def __init__(self, vectors=None):
        self.vectors = vectors or {}

    def encode_texts(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def make_searcher(image_emb, caption_emb=None, factory=None, metric=None, params=None):
    n = len(image_emb)
    caption_emb = image_emb if caption_emb is None else caption_emb
    buf = io.BytesIO()
    PILImage.new("RGB", (2, 2), (0, 90, 0)).save(buf, format="PNG")
    features = Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "captions": List(Value("string")),
            "image_emb": List(Value("float32"), length=DIM),
            "caption_emb": List(Value("float32"), length=DIM),
        }
    )
    ds = Dataset.from_dict(
        {
            "image": [{"bytes": buf.getvalue(), "path": f"{i}.png"} for i in range(n)],
            "image_id": [str(i) for i in range(n)],
            "captions": [[f"caption {i}"] for i in range(n)],
            "image_emb": [list(v) for v in image_emb],
            "caption_emb": [list(v) for v in caption_emb],
        },
        features=features,
    )
    metric = faiss.METRIC_INNER_PRODUCT if metric is None else metric
    for column in ("image_emb", "caption_emb"):
        ds.add_faiss_index(
            column, string_factory=factory, metric_type=metric, train_size=n if factory else None
        )
        _apply_params(ds.get_index(column).faiss_index, params or {})
    manifest = Manifest(
        model_id="fake/model",
        model_revision=None,
        model_fingerprint="sha256:aaa",
        dim=DIM,
        num_rows=n,
        data_hash="sha256:x",
        indices=tuple(
            IndexInfo(c, f"index/{c}.faiss", "flat", factory or "Flat", n, params or {})
            for c in ("image_emb", "caption_emb")
        ),
    )
    return Searcher(ds, manifest, FakeEncoder(), "memory")


def exact(matrix, query, k):
    scores = matrix @ query
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return scores[order], order


def test_flat_scan_reads_the_index_memory_without_a_copy():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(300, DIM)))
    searcher = make_searcher(x)
    index, view = searcher._flat["image_emb"]
    assert view.shape == (300, DIM) and not view.flags.owndata
    np.testing.assert_array_equal(view, x)
    assert int(faiss.swig_ptr(view)) == int(index.get_xb())  # the same memory


@pytest.mark.parametrize("k", [1, 10, 299, 300])
def test_flat_scan_equals_numpy_and_faiss(k):
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(300, DIM)))
    searcher = make_searcher(x)
    for query in unit(rng.normal(size=(5, DIM))):
        scores, ids = searcher._nearest("image_emb", query, k)
        want_scores, want_ids = exact(x, query, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=1e-6)
        faiss_scores, faiss_ids = searcher._full.search("image_emb", query, k)
        np.testing.assert_array_equal(ids, faiss_ids)


def test_ties_come_in_row_order_and_float64_queries_work():
    x = unit(np.ones((50, DIM)))  # every row scores the same
    searcher = make_searcher(x)
    _, ids = searcher._nearest("image_emb", np.ones(DIM, dtype=np.float64), 10)
    assert ids.tolist() == list(range(10))


def test_an_l2_flat_index_is_left_to_faiss():
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(100, DIM)))
    searcher = make_searcher(x, metric=faiss.METRIC_L2)
    assert searcher._flat == {}
    query = unit(rng.normal(size=DIM))
    scores, ids = searcher._nearest("image_emb", query, 5)
    # re-scored as cosines; for unit vectors L2 order = cosine order
    np.testing.assert_array_equal(ids, exact(x, query, 5)[1])
    np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)


@pytest.mark.parametrize(
    "factory,params",
    [
        ("SQfp16", {}),
        ("SQ8", {}),
        ("SQ4", {}),
        ("IVF8,SQ8", {"nprobe": 8}),
        ("HNSW16,Flat", {"efSearch": 64}),
    ],
)
def test_approximate_indices_return_exact_cosines_best_first(factory, params):
    rng = np.random.default_rng(3)
    x = clustered(2000, rng)
    searcher = make_searcher(x, factory=factory, params=params)
    assert searcher._flat == {}
    for query in clustered(10, rng):
        scores, ids = searcher._nearest("image_emb", query, 10)
        np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)
        assert list(scores) == sorted(scores, reverse=True) and len(set(ids.tolist())) == 10
        # the pool of 50 covers the true top 10 here: re-scoring undoes the quantisation
        assert set(ids.tolist()) == set(exact(x, query, 10)[1].tolist())


def test_quantised_index_ranks_are_repaired_by_exact_rescoring():
    rng = np.random.default_rng(4)
    x = clustered(3000, rng, clusters=3)  # dense clusters: many near-ties
    searcher = make_searcher(x, factory="SQ4")
    raw_wrong = 0
    for query in clustered(20, rng, clusters=3):
        _, raw = searcher._full.search("image_emb", query, 10)
        _, ids = searcher._nearest("image_emb", query, 10)
        want = exact(x, query, 10)[1]
        raw_wrong += int(list(raw) != list(want))
        assert list(ids) == list(want)
    assert raw_wrong > 0  # the 4-bit index alone does get orders wrong


def test_text_search_and_fusion_with_an_ivf_index():
    rng = np.random.default_rng(5)
    image_emb, caption_emb = clustered(1500, rng), clustered(1500, rng)
    searcher = make_searcher(image_emb, caption_emb, factory="IVF8,SQ8", params={"nprobe": 8})
    query = clustered(1, rng)[0]
    searcher.encoder.vectors["sorgu"] = query
    hits = searcher.search_text("sorgu", k=5)
    assert [h.row for h in hits] == exact(image_emb, query, 5)[1].tolist()
    for hit in hits:
        assert hit.score == pytest.approx(float(image_emb[hit.row] @ query), abs=1e-5)
        assert hit.caption_score == pytest.approx(float(caption_emb[hit.row] @ query), abs=1e-5)
    fused = searcher.fuse(query, k=5, alpha=0.5)
    want = 0.5 * image_emb @ query + 0.5 * caption_emb @ query
    assert [h.row for h in fused] == np.argsort(-want)[:5].tolist()


def test_the_ivf_sq8_plan_builds_and_searches():
    # A smoke test of the plan on toy 16-d data; benchmarks/search.py measures its recall on
    # 768-d embeddings (>= 0.99 on clustered data).
    plan = choose_index(5000, "ivf-sq8")
    rng = np.random.default_rng(6)
    x = clustered(5000, rng)
    searcher = make_searcher(x, factory=plan.factory, params=plan.params)
    assert searcher._full.get_index("image_emb").faiss_index.nprobe == plan.params["nprobe"]
    found = 0
    queries = clustered(20, rng)
    for query in queries:
        scores, ids = searcher._nearest("image_emb", query, 10)
        np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)
        found += len(set(ids.tolist()) & set(exact(x, query, 10)[1].tolist()))
    assert found / (10 * len(queries)) >= 0.9


def test_the_rows_view_shares_the_arrow_table_and_copies_no_index():
    # select_columns/cast_column would deep-copy the dataset with its FAISS indices (a second
    # copy of every index in RAM); the view must reuse the table's buffers and hold no index.
    rng = np.random.default_rng(7)
    searcher = make_searcher(unit(rng.normal(size=(100, DIM))))
    assert searcher._rows.list_indexes() == []
    assert searcher._full.list_indexes() == ["image_emb", "caption_emb"]

    def address(ds):
        return ds.data.column("image_id").chunk(0).buffers()[2].address

    assert address(searcher._rows) == address(searcher._full)
    row = searcher._rows[[3]]
    assert row["image_id"] == ["3"] and isinstance(row["image"][0]["bytes"], bytes)


def test_column_vectors_take_rows_from_any_chunking():
    import pyarrow as pa

    from imagesearchtr.searcher import _ColumnVectors
    from imagesearchtr.vectors import embedding_matrix

    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, DIM)).astype(np.float32)
    nulls = np.zeros(40, dtype=bool)
    nulls[[3, 17, 18]] = True
    full = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM, mask=pa.array(nulls))
    # sliced chunks (offsets), an empty chunk, nulls inside chunks
    column = pa.chunked_array([full.slice(0, 5), full.slice(5, 0), full.slice(5, 20), full[25:]])
    vectors = _ColumnVectors(column, DIM)
    assert vectors.views is not None
    ids = [39, 0, 3, 17, 24, 25, 5, 5]
    matrix, valid = vectors.take(ids)
    want, want_valid = embedding_matrix(column.take(pa.array(ids)), DIM)
    np.testing.assert_array_equal(matrix, want)
    np.testing.assert_array_equal(valid, want_valid)
    assert not valid[2] and not matrix[2].any()
    # variable-length lists fall back to Arrow's take
    ragged = pa.chunked_array([pa.array([list(v) for v in x[:10]], pa.list_(pa.float32()))])
    fallback = _ColumnVectors(ragged, DIM)
    assert fallback.views is None
    np.testing.assert_array_equal(fallback.take([2, 9])[0], x[[2, 9]])


def _kernel_supports_collapse() -> bool:
    import platform
    from pathlib import Path

    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        major, minor = (int(p) for p in platform.release().split(".")[:2])
    except (OSError, ValueError):
        return False
    return "[never]" not in thp and (major, minor) >= (6, 1)


@pytest.mark.skipif(not _kernel_supports_collapse(), reason="needs Linux >= 6.1 with THP")
def test_a_large_flat_index_is_moved_to_huge_pages():
    from pathlib import Path

    rng = np.random.default_rng(9)
    n = 12_000  # 768-d rows: ~35 MB of codes, above the 32 MB threshold
    x = rng.normal(size=(n, 768)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(768)
    index.add(x)
    from imagesearchtr.searcher import _huge_pages

    thread = _huge_pages(index)
    assert thread is not None
    thread.join()
    # madvise splits the mapping: look at the 2 MB-aligned middle of the codes
    address = faiss.rev_swig_ptr(index.get_xb(), 1).ctypes.data + n * 768 * 4 // 2
    huge_kb, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            huge_kb = int(line.split()[1])
    assert huge_kb >= 16 * 2048
    query = x[5]
    np.testing.assert_array_equal(
        np.argsort(-(faiss.rev_swig_ptr(index.get_xb(), n * 768).reshape(n, 768) @ query))[:5],
        np.argsort(-(x @ query))[:5],
    )
