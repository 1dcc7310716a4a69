"""`python -m pipeline evaluate`: the mechanics, checked where the answer is known."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from conftest import run_cli
from search_repo import open_repo, unit, write_repo

from pipeline.evaluate import evaluate, leave_one_out, metrics, ranks_of_targets

DIM = 32


def test_ranks_ignore_ties_and_count_strictly_better_rows():
    scores = np.array([[0.9, 0.9, 0.1], [0.2, 0.5, 0.7]])
    assert ranks_of_targets(scores, np.array([1, 1])).tolist() == [1, 2]
    m = metrics("own-caption", "x", None, np.array([1, 2, 10, 20]))
    assert (m.recall_at_1, m.recall_at_5, m.recall_at_10) == (0.25, 0.5, 0.75)
    assert m.median_rank == 6.0 and abs(m.mrr - (1 + 0.5 + 0.1 + 0.05) / 4) < 1e-9


def test_leave_one_out_is_the_mean_of_the_other_captions():
    v = unit(np.eye(4, DIM) + 0.01)
    matrix, valid = leave_one_out(v, np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(matrix[0], unit(v[1] + v[2]), atol=1e-6)
    assert valid.tolist() == [True, True, True, False]  # row 1 has no other caption


def by_key(results):
    return {(m.protocol, m.mode): m for m in results}


def test_leave_one_out_cannot_find_a_caption_through_itself(tmp_path):
    """Each row's two captions point in unrelated directions and the images at nothing: only
    the query caption itself, inside its row's caption embedding, can find the row."""
    rng = np.random.default_rng(0)
    n = 30
    first, second = unit(rng.normal(size=(n, DIM))), unit(rng.normal(size=(n, DIM)))
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = list(unit(first + second))  # the stored normalised mean of both captions
    captions = [[f"a{i}", f"b{i}"] for i in range(n)]
    vectors = {f"a{i}": first[i] for i in range(n)} | {f"b{i}": second[i] for i in range(n)}
    folder = write_repo(tmp_path / "repo", image_emb, caption_emb, captions=captions)
    results = by_key(evaluate(open_repo(folder, vectors), alphas=(0.0, 1.0)))

    assert results["own-caption", "deep alpha=0.00"].recall_at_1 == 1.0  # the leak
    honest = results["leave-one-out", "deep alpha=0.00"]
    assert honest.queries == 2 * n and honest.recall_at_1 <= 0.2
    for protocol in ("leave-one-out", "own-caption"):
        image_only = results[protocol, "image-only"]
        assert results[protocol, "deep alpha=1.00"].recall_at_1 == image_only.recall_at_1


def test_a_row_left_without_captions_counts_on_its_image_only(tmp_path):
    rng = np.random.default_rng(1)
    n = 20
    queries, image_emb = unit(rng.normal(size=(n, DIM))), unit(rng.normal(size=(n, DIM)))
    image_emb[3] = queries[3]  # row 3's image matches its only caption exactly
    captions = [[f"c{i}"] for i in range(n)]
    folder = write_repo(tmp_path / "repo", image_emb, list(queries), captions=captions)
    searcher = open_repo(folder, {f"c{i}": queries[i] for i in range(n)})
    results = by_key(evaluate(searcher, alphas=(0.0, 0.5)))
    for alpha in (0.0, 0.5):
        # brute force: other rows fuse image and caption; the target, captionless, its image
        fused = alpha * queries @ image_emb.T + (1 - alpha) * queries @ queries.T
        own = np.einsum("ij,ij->i", queries, image_emb)
        np.fill_diagonal(fused, own)
        ranks = 1 + (fused > own[:, None]).sum(axis=1)
        honest = results["leave-one-out", f"deep alpha={alpha:.2f}"]
        assert honest.recall_at_1 == (ranks == 1).mean() and honest.mrr == (1 / ranks).mean()
        assert ranks[3] == 1
    assert results["own-caption", "deep alpha=0.00"].recall_at_1 == 1.0


def test_one_caption_per_image_ranks_its_own_image_first(tmp_path, shared_data, tiny_model_dir):
    folder = tmp_path / "one-caption"
    folder.mkdir()
    (folder / "images").symlink_to(shared_data / "images")  # read in place, never copied
    first = {}
    for line in (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        first.setdefault(entry["path"], entry)
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in first.values()), "utf-8"
    )
    build, repo = tmp_path / "build", tmp_path / "repo"
    run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    run_cli("index", "--build", build)
    run_cli("publish", "--build", build, "--to", repo)
    out = tmp_path / "eval.json"
    result = run_cli("evaluate", "--repo", repo, "--alphas", "0,0.5,1", "--output", out)
    assert "R@1" in result.stdout and "leave-one-out" in result.stdout
    report = json.loads(out.read_text())
    by_mode = {(r["protocol"], r["mode"]): r for r in report["results"]}
    modes = {"image-only", "deep alpha=0.00", "deep alpha=0.50", "deep alpha=1.00"}
    assert set(by_mode) == {(p, m) for p in ("leave-one-out", "own-caption") for m in modes}
    counts = Counter(e["caption"] for e in first.values())
    unique_share = sum(1 for e in first.values() if counts[e["caption"]] == 1) / len(first)
    own = by_mode["own-caption", "deep alpha=0.00"]
    assert own["queries"] == 413 and own["recall_at_1"] >= unique_share
    # One caption per image: leave-one-out leaves each target caption-less, so the random
    # model's image side (at chance) has to find it, and the leak shows.
    assert by_mode["leave-one-out", "deep alpha=0.00"]["recall_at_1"] < own["recall_at_1"]
    for r in report["results"]:
        assert 0 <= r["recall_at_1"] <= r["recall_at_5"] <= r["recall_at_10"] <= 1
