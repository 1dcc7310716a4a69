"""The Searcher's search paths for each index type: cosines, best first, whatever the index.

Hand-made vectors in small published folders (tests/search_repo.py); no model. A Flat
inner-product index answers exactly; every other index's candidates are re-scored with the
vectors the index holds: exact cosines where it holds them whole (Flat, HNSW, IVF-Flat), within
the codes' precision where it quantises them (fp16, SQ8).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from search_repo import open_repo, unit, write_repo

from pipeline.index import choose_index

DIM = 16


def clustered(n, rng, clusters=20):
    centres = unit(rng.normal(size=(clusters, DIM)))
    return unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, DIM)))


def exact(x, query, k):
    scores = x @ query
    ids = np.argsort(-scores, kind="stable")[:k]
    return scores[ids], ids


def rows_and_scores(hits):
    return np.array([h.row for h in hits]), np.array([h.score for h in hits])


@pytest.mark.parametrize("k", [1, 10, 99, 100])
def test_a_flat_index_gives_numpy_top_k(tmp_path, k):
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(300, DIM)))
    captions = list(unit(rng.normal(size=(300, DIM))))  # unlike the images: a mix-up shows
    searcher = open_repo(write_repo(tmp_path / "repo", x, captions))
    assert searcher.exact == {"image_emb": True, "caption_emb": True}
    for query in unit(rng.normal(size=(5, DIM))):
        ids, scores = rows_and_scores(searcher.search_vector(query, k))
        want_scores, want_ids = exact(x, query, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def test_ties_come_in_row_order_and_float64_queries_work(tmp_path):
    x = unit(np.ones((120, DIM)))  # every row scores the same
    searcher = open_repo(write_repo(tmp_path / "repo", x))
    hits = searcher.search_vector(np.ones(DIM, dtype=np.float64), 60)
    assert [h.row for h in hits] == list(range(60))


def test_rows_an_index_does_not_find_are_not_made_up(tmp_path):
    # IVF probing one list of 8 finds fewer rows than the pool asks for: FAISS pads with -1.
    rng = np.random.default_rng(9)
    x = clustered(400, rng, clusters=8)
    searcher = open_repo(
        write_repo(tmp_path / "repo", x, factory="IVF8,Flat", params={"nprobe": 1})
    )
    for query in x[:5]:
        _, found = searcher.rows.search("image_emb", query, 100)
        assert (found == -1).any()
        hits = searcher.search_vector(query, 60)
        assert {h.row for h in hits} <= set(found[found >= 0].tolist())


def test_an_l2_flat_index_is_re_scored_as_cosines(tmp_path):
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(100, DIM)))
    searcher = open_repo(write_repo(tmp_path / "repo", x, metric=faiss.METRIC_L2))
    assert searcher.exact["image_emb"] is False
    query = unit(rng.normal(size=DIM))
    ids, scores = rows_and_scores(searcher.search_vector(query, 5))
    np.testing.assert_array_equal(ids, exact(x, query, 5)[1])
    np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)  # cosines, not distances


@pytest.mark.parametrize(
    "factory,params,precision",
    [
        ("HNSW16,Flat", {"efSearch": 64}, 1e-6),  # whole vectors: exact cosines
        ("IVF8,Flat", {"nprobe": 8}, 1e-6),
        ("SQfp16", {}, 1e-3),  # quantised codes: within their precision
        ("SQ8", {}, 2e-2),
        ("IVF8,SQ8", {"nprobe": 8}, 2e-2),
    ],
)
def test_approximate_indices_score_with_the_vectors_they_hold_best_first(
    tmp_path, factory, params, precision
):
    rng = np.random.default_rng(3)
    x = clustered(2000, rng)
    searcher = open_repo(write_repo(tmp_path / "repo", x, factory=factory, params=params))
    assert searcher.exact["image_emb"] is False
    held = searcher.rows.get_index("image_emb").faiss_index
    found = 0
    for query in clustered(10, rng):
        ids, scores = rows_and_scores(searcher.search_vector(query, 10))
        np.testing.assert_allclose(scores, held.reconstruct_batch(ids) @ query, atol=1e-6)
        np.testing.assert_allclose(scores, x[ids] @ query, atol=precision)
        assert list(scores) == sorted(scores, reverse=True) and len(set(ids.tolist())) == 10
        found += len(set(ids.tolist()) & set(exact(x, query, 10)[1].tolist()))
    assert found >= 95  # of the 100 true top-10 rows


def test_text_search_and_fusion_with_an_ivf_index(tmp_path):
    rng = np.random.default_rng(5)
    image_emb, caption_emb = clustered(1500, rng), clustered(1500, rng)
    folder = write_repo(
        tmp_path / "repo", image_emb, list(caption_emb), factory="IVF8,Flat", params={"nprobe": 8}
    )
    query = clustered(1, rng)[0]
    searcher = open_repo(folder, {"sorgu": query})
    hits = searcher.search_text("sorgu", k=5)
    assert [h.row for h in hits] == exact(image_emb, query, 5)[1].tolist()
    for hit in hits:
        assert hit.score == pytest.approx(float(image_emb[hit.row] @ query), abs=1e-5)
        assert hit.caption_score == pytest.approx(float(caption_emb[hit.row] @ query), abs=1e-5)
    fused = searcher.search_text("sorgu", k=5, alpha=0.5)
    want = 0.5 * image_emb @ query + 0.5 * caption_emb @ query
    assert [h.row for h in fused] == np.argsort(-want)[:5].tolist()


def test_rows_without_captions_keep_their_image_score_with_a_quantised_index(tmp_path):
    # A row without captions is a zero vector in the caption index; quantised, it must still
    # read as "no caption", not as a caption scoring near 0.
    rng = np.random.default_rng(10)
    image_emb = clustered(600, rng)
    caption_emb = [None if i % 3 == 0 else v for i, v in enumerate(clustered(600, rng))]
    folder = write_repo(
        tmp_path / "repo", image_emb, caption_emb, factory="IVF8,SQ8", params={"nprobe": 8}
    )
    searcher = open_repo(folder)
    kinds = set()
    for query in clustered(5, rng):
        for hit in searcher.search_vector(query, k=20, alpha=0.3):
            if caption_emb[hit.row] is None:
                assert hit.caption_score is None and hit.score == hit.image_score
            else:
                want = float(caption_emb[hit.row] @ query)
                assert hit.caption_score == pytest.approx(want, abs=2e-2)
                assert hit.score == pytest.approx(0.3 * hit.image_score + 0.7 * hit.caption_score)
            kinds.add(hit.caption_score is None)
    assert kinds == {True, False}


def test_the_ivf_sq8_plan_builds_and_searches(tmp_path):
    # A smoke test of the plan on toy 16-d data; benchmarks/search.py measures its recall on
    # 768-d embeddings.
    plan = choose_index(5000, "ivf-sq8")
    rng = np.random.default_rng(6)
    x = clustered(5000, rng)
    folder = write_repo(tmp_path / "repo", x, factory=plan.factory, params=plan.params)
    searcher = open_repo(folder)
    assert searcher.rows.get_index("image_emb").faiss_index.nprobe == plan.params["nprobe"]
    found = 0
    queries = clustered(20, rng)
    for query in queries:
        ids, scores = rows_and_scores(searcher.search_vector(query, 10))
        np.testing.assert_allclose(scores, x[ids] @ query, atol=2e-2)  # 8-bit codes
        found += len(set(ids.tolist()) & set(exact(x, query, 10)[1].tolist()))
    assert found / (10 * len(queries)) >= 0.9


def test_the_rows_hold_ids_paths_captions_and_the_two_indices_and_no_embedding(tmp_path):
    # The vectors come from the indices: no embedding column is read at start (lazy_rows).
    rng = np.random.default_rng(7)
    searcher = open_repo(write_repo(tmp_path / "repo", unit(rng.normal(size=(100, DIM)))))
    assert searcher.rows.column_names == ["image_id", "path", "captions"]
    assert sorted(searcher.rows.list_indexes()) == ["caption_emb", "image_emb"]
    assert searcher.rows[3]["image_id"] == "3"


def test_an_index_that_cannot_give_back_its_vectors_is_refused_at_start(tmp_path):
    from imagesearchtr import SearchSetupError

    rng = np.random.default_rng(8)
    folder = write_repo(
        tmp_path / "repo",
        unit(rng.normal(size=(100, DIM))),
        factory="ITQ,LSH",
        metric=faiss.METRIC_L2,
    )
    with pytest.raises(SearchSetupError, match="cannot give back the vectors"):
        open_repo(folder)
