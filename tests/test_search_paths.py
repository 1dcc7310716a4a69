"""The Searcher's search paths for each index type: exact cosines, best first, whatever the index.

Hand-made vectors in small published folders (tests/search_repo.py); no model. A Flat
inner-product index answers exactly; every other index's candidates are re-scored from the
stored float32 embeddings, so the hits carry exact cosines and the brute-force top k.
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
    searcher = open_repo(write_repo(tmp_path / "repo", x))
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
        _, found = searcher.vectors.search("image_emb", query, 100)
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
    "factory,params",
    [
        ("SQfp16", {}),
        ("SQ8", {}),
        ("SQ4", {}),
        ("IVF8,SQ8", {"nprobe": 8}),
        ("HNSW16,Flat", {"efSearch": 64}),
    ],
)
def test_approximate_indices_return_exact_cosines_best_first(tmp_path, factory, params):
    rng = np.random.default_rng(3)
    x = clustered(2000, rng)
    searcher = open_repo(write_repo(tmp_path / "repo", x, factory=factory, params=params))
    assert searcher.exact["image_emb"] is False
    for query in clustered(10, rng):
        ids, scores = rows_and_scores(searcher.search_vector(query, 10))
        np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)
        assert list(scores) == sorted(scores, reverse=True) and len(set(ids.tolist())) == 10
        # the pool of 50 covers the true top 10 here: re-scoring undoes the quantisation
        assert set(ids.tolist()) == set(exact(x, query, 10)[1].tolist())


def test_quantised_index_ranks_are_repaired_by_exact_rescoring(tmp_path):
    rng = np.random.default_rng(4)
    x = clustered(3000, rng, clusters=3)  # dense clusters: many near-ties
    searcher = open_repo(write_repo(tmp_path / "repo", x, factory="SQ4"))
    raw_wrong = 0
    for query in clustered(20, rng, clusters=3):
        _, raw = searcher.vectors.search("image_emb", query, 10)  # the index alone
        ids, _ = rows_and_scores(searcher.search_vector(query, 10))
        want = exact(x, query, 10)[1]
        raw_wrong += int(list(raw) != list(want))
        assert list(ids) == list(want)
    assert raw_wrong > 0  # the 4-bit index alone does get orders wrong


def test_text_search_and_fusion_with_an_ivf_index(tmp_path):
    rng = np.random.default_rng(5)
    image_emb, caption_emb = clustered(1500, rng), clustered(1500, rng)
    folder = write_repo(
        tmp_path / "repo", image_emb, list(caption_emb), factory="IVF8,SQ8", params={"nprobe": 8}
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


def test_the_ivf_sq8_plan_builds_and_searches(tmp_path):
    # A smoke test of the plan on toy 16-d data; benchmarks/search.py measures its recall on
    # 768-d embeddings.
    plan = choose_index(5000, "ivf-sq8")
    rng = np.random.default_rng(6)
    x = clustered(5000, rng)
    folder = write_repo(tmp_path / "repo", x, factory=plan.factory, params=plan.params)
    searcher = open_repo(folder)
    assert searcher.vectors.get_index("image_emb").faiss_index.nprobe == plan.params["nprobe"]
    found = 0
    queries = clustered(20, rng)
    for query in queries:
        ids, scores = rows_and_scores(searcher.search_vector(query, 10))
        np.testing.assert_allclose(scores, x[ids] @ query, atol=1e-6)
        found += len(set(ids.tolist()) & set(exact(x, query, 10)[1].tolist()))
    assert found / (10 * len(queries)) >= 0.9


def test_the_row_view_holds_no_index_and_shares_the_table(tmp_path):
    # A view made of a dataset that holds FAISS indices deep-copies them (a second copy of
    # every index in RAM): the indices live on the embedding view only.
    rng = np.random.default_rng(7)
    searcher = open_repo(write_repo(tmp_path / "repo", unit(rng.normal(size=(100, DIM)))))
    assert searcher.rows.list_indexes() == []
    assert sorted(searcher.vectors.list_indexes()) == ["caption_emb", "image_emb"]
    assert searcher.rows.cache_files == searcher.vectors.cache_files  # one memory-mapped file
    assert searcher.rows[3]["image_id"] == "3"
