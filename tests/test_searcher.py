"""Searcher: exact fusion on hand-made vectors, brute-force agreement, model pinning."""

from __future__ import annotations

import io

import faiss
import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from imagesearchtr import IndexInfo, Manifest, ModelMismatchError, Searcher
from imagesearchtr.searcher import check_model

DIM = 8


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def png() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 4), (200, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


class FakeEncoder:
    """Maps known queries to hand-made vectors; carries a model identity like Encoder."""

    def __init__(self, vectors: dict, fingerprint="sha256:aaa", dim=DIM):
        self.vectors, self.fingerprint, self.dim = vectors, fingerprint, dim
        self.model_id = "fake/model"

    def encode_texts(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def make_searcher(image_emb, caption_emb, vectors=None) -> Searcher:
    n = len(image_emb)
    features = Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "captions": List(Value("string")),
            "image_emb": List(Value("float32"), length=DIM),
            "caption_emb": List(Value("float32"), length=DIM),
        }
    )
    image = png()
    ds = Dataset.from_dict(
        {
            "image": [{"bytes": image, "path": f"{i}.png"} for i in range(n)],
            "image_id": [str(i) for i in range(n)],
            "captions": [[] if c is None else [f"caption {i}"] for i, c in enumerate(caption_emb)],
            "image_emb": [list(v) for v in image_emb],
            "caption_emb": [None if c is None else list(c) for c in caption_emb],
        },
        features=features,
    )
    ds.add_faiss_index("image_emb", metric_type=faiss.METRIC_INNER_PRODUCT)
    zeros = np.stack([np.zeros(DIM, np.float32) if c is None else c for c in caption_emb])
    ds.add_faiss_index_from_external_arrays(
        zeros.astype(np.float32), "caption_emb", metric_type=faiss.METRIC_INNER_PRODUCT
    )
    manifest = Manifest(
        model_id="fake/model",
        model_revision=None,
        model_fingerprint="sha256:aaa",
        dim=DIM,
        num_rows=n,
        data_hash="sha256:x",
        indices=tuple(
            IndexInfo(c, f"index/{c}.faiss", "flat", "Flat", n)
            for c in ("image_emb", "caption_emb")
        ),
    )
    return Searcher(ds, manifest, FakeEncoder(vectors or {}), "memory")


def test_fusion_scores_every_candidate_exactly_in_both_spaces():
    rng = np.random.default_rng(0)
    n = 300
    query = unit(rng.normal(size=DIM))
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = list(unit(rng.normal(size=(n, DIM))))
    # Row 7: the best image, but a caption that ranks far below the caption pool (50).
    image_emb[7] = unit(query + 0.05 * rng.normal(size=DIM))
    caption_emb[7] = unit(-query + 0.9 * rng.normal(size=DIM))
    # Row 9: the best caption, a poor image.
    caption_emb[9] = unit(query + 0.05 * rng.normal(size=DIM))
    image_emb[9] = unit(-query + 0.9 * rng.normal(size=DIM))
    # Row 11: no caption at all, a good image.
    image_emb[11] = unit(query + 0.3 * rng.normal(size=DIM))
    caption_emb[11] = None
    searcher = make_searcher(image_emb, caption_emb)
    caption_matrix = np.stack([np.zeros(DIM) if c is None else c for c in caption_emb])
    caption_rank_of_7 = int((caption_matrix @ query > caption_matrix[7] @ query).sum())
    assert caption_rank_of_7 > 50  # found by the image index only

    alpha = 0.6
    hits = searcher.fuse(query, k=20, alpha=alpha)
    by_row = {h.row: h for h in hits}
    for hit in hits:
        expected_image = float(image_emb[hit.row] @ query)
        assert hit.image_score == pytest.approx(expected_image, abs=1e-5)
        if caption_emb[hit.row] is None:
            assert hit.caption_score is None and hit.score == pytest.approx(expected_image)
        else:
            expected_caption = float(caption_emb[hit.row] @ query)
            assert hit.caption_score == pytest.approx(expected_caption, abs=1e-5)
            assert hit.score == pytest.approx(
                alpha * expected_image + (1 - alpha) * expected_caption, abs=1e-5
            )
    assert 11 in by_row and by_row[11].score == pytest.approx(by_row[11].image_score)
    # Row 7 keeps its real (poor) caption score instead of 0 or a min-max artefact.
    if 7 in by_row:
        assert by_row[7].caption_score < 0
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_fusion_equals_brute_force_when_the_pools_cover_the_answer():
    rng = np.random.default_rng(1)
    n = 40  # smaller than the pool: every row is a candidate
    query = unit(rng.normal(size=DIM))
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = list(unit(rng.normal(size=(n, DIM))))
    searcher = make_searcher(image_emb, caption_emb)
    for alpha in (0.0, 0.3, 1.0):
        fused = alpha * image_emb @ query + (1 - alpha) * np.stack(caption_emb) @ query
        expected = list(np.argsort(-fused)[:10])
        assert [h.row for h in searcher.fuse(query, k=10, alpha=alpha)] == expected


def test_image_only_search_equals_numpy_top_k():
    rng = np.random.default_rng(2)
    n = 500
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = list(unit(rng.normal(size=(n, DIM))))
    query = unit(rng.normal(size=DIM))
    searcher = make_searcher(image_emb, caption_emb, {"sorgu": query})
    hits = searcher.search_text("sorgu", k=10)
    scores = image_emb @ query
    assert [h.row for h in hits] == list(np.argsort(-scores)[:10])
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-5)
    assert hits[0].captions == [f"caption {hits[0].row}"]
    assert hits[0].image.size == (4, 4)


def test_bad_queries_give_clear_errors():
    rng = np.random.default_rng(3)
    searcher = make_searcher(unit(rng.normal(size=(5, DIM))), list(unit(rng.normal(size=(5, DIM)))))
    with pytest.raises(ValueError, match="query is empty"):
        searcher.search_text("   \n")
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        searcher.fuse(unit(rng.normal(size=DIM)), k=3, alpha=1.5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        searcher.fuse(unit(rng.normal(size=DIM)), k=0, alpha=0.5)
    assert len(searcher.fuse(unit(rng.normal(size=DIM)), k=50, alpha=0.5)) == 5  # k > rows


def test_a_different_model_is_refused(tiny_encoder):
    manifest = Manifest(
        model_id="utkubascakir/MultiEmbedTR",
        model_revision="abc123",
        model_fingerprint="sha256:" + "0" * 64,
        dim=tiny_encoder.dim,
        num_rows=1,
        data_hash="sha256:x",
        indices=(),
    )
    with pytest.raises(ModelMismatchError, match=r"built by model utkubascakir/MultiEmbedTR"):
        check_model(manifest, tiny_encoder)


def test_real_model_queries_handle_any_unicode_and_long_text(tiny_encoder):
    texts = ["köpek 🐕", "שלום עולם", "ÇĞİÖŞÜ çğıöşü", "a\u0000b\u200fc", "kar " * 5000]
    emb = tiny_encoder.encode_texts(texts)
    assert emb.shape == (5, tiny_encoder.dim) and np.isfinite(emb).all()
