"""`python -m pipeline evaluate`: the mechanics, checked where the answer is known."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from conftest import run_cli
from search_repo import open_repo, unit, write_repo

from pipeline.cli import main
from pipeline.encode import EncodeConfig, run_encode
from pipeline.evaluate import (
    caption_words,
    evaluate,
    evaluate_composed,
    leave_one_out,
    metrics,
    ranks_of_targets,
    word_pairs,
)
from pipeline.index import IndexConfig, run_index
from pipeline.inputs import FolderSource
from pipeline.publish import PublishConfig, publish_to_folder

DIM = 32


def test_ranks_count_better_rows_and_break_ties_in_row_order_as_the_searcher_does():
    scores = np.array([[0.9, 0.9, 0.1], [0.2, 0.5, 0.7], [0.9, 0.9, 0.1]])
    # row 0 ties with row 1 and comes first in the Searcher's list; row 1 does not push row 0
    assert ranks_of_targets(scores, np.array([1, 1, 0])).tolist() == [2, 2, 1]
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


def test_a_model_that_embeds_everything_alike_scores_what_the_search_shows(tmp_path):
    """Every image and caption the same vector: all scores tie. The Searcher then shows rows in
    row order, so only row 0's caption finds its row first (ties used to count for the target:
    Recall@1 = 1)."""
    n, v = 20, unit(np.ones(DIM))
    captions = [[f"c{i}"] for i in range(n)]
    folder = write_repo(tmp_path / "repo", np.tile(v, (n, 1)), [v] * n, captions=captions)
    searcher = open_repo(folder, {f"c{i}": v for i in range(n)})
    shown = [[h.row for h in searcher.search_text(f"c{i}", k=n)].index(i) + 1 for i in range(n)]
    for m in evaluate(searcher, alphas=(0.0, 0.5)):
        assert m.recall_at_1 == 1 / n and m.recall_at_10 == 10 / n
        assert (
            m.median_rank == np.median(shown) and abs(m.mrr - np.mean(1 / np.array(shown))) < 1e-9
        )


def test_leave_one_out_leaves_out_every_copy_of_the_query_caption(tmp_path):
    """Each row lists its (unrelated) caption twice: the other copy is the query itself."""
    rng = np.random.default_rng(6)
    n = 20
    texts, image_emb = unit(rng.normal(size=(n, DIM))), unit(rng.normal(size=(n, DIM)))
    captions = [[f"c{i}", f"c{i}"] for i in range(n)]
    folder = write_repo(tmp_path / "repo", image_emb, list(texts), captions=captions)
    searcher = open_repo(folder, {f"c{i}": texts[i] for i in range(n)})
    results = by_key(evaluate(searcher, alphas=(0.0,)))
    assert results["own-caption", "deep alpha=0.00"].recall_at_1 == 1.0
    # left with no other caption, each row is scored on its image alone, as image-only search
    honest = results["leave-one-out", "deep alpha=0.00"]
    fused = texts @ texts.T
    own = np.einsum("ij,ij->i", texts, image_emb)
    np.fill_diagonal(fused, own)
    ranks = 1 + (fused > own[:, None]).sum(axis=1)
    assert honest.recall_at_1 == (ranks == 1).mean() and abs(honest.mrr - (1 / ranks).mean()) < 1e-6
    assert honest.recall_at_1 <= 0.2
    matrix, valid = leave_one_out(texts[[0, 0, 1]], np.array([0, 0, 0]), ["a", "a", "b"])
    assert valid.all()
    np.testing.assert_allclose(matrix[:2], texts[[1, 1]], atol=1e-6)
    np.testing.assert_allclose(matrix[2], texts[0], atol=1e-6)


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
    image_emb[7] = queries[0]  # row 7 has no caption at all, and an image like query 0's
    captions = [[f"c{i}"] for i in range(n)]
    captions[7] = []
    stored = [None if i == 7 else q for i, q in enumerate(queries)]
    folder = write_repo(tmp_path / "repo", image_emb, stored, captions=captions)
    searcher = open_repo(folder, {f"c{i}": queries[i] for i in range(n)})
    results = by_key(evaluate(searcher, alphas=(0.0, 0.5)))
    for alpha in (0.0, 0.5):
        # brute force: other rows fuse image and caption; the target, captionless, its image,
        # and so does row 7, as in the Searcher
        fused = alpha * queries @ image_emb.T + (1 - alpha) * queries @ queries.T
        fused[:, 7] = queries @ image_emb[7]
        own = np.einsum("ij,ij->i", queries, image_emb)
        np.fill_diagonal(fused, own)
        ranks = (1 + (fused > own[:, None]).sum(axis=1))[np.arange(n) != 7]  # 7 asks nothing
        honest = results["leave-one-out", f"deep alpha={alpha:.2f}"]
        assert honest.recall_at_1 == (ranks == 1).mean() and honest.mrr == (1 / ranks).mean()
        assert ranks[3] == 1
    assert results["own-caption", "deep alpha=0.00"].recall_at_1 == 1.0


PHOTOS = 120  # enough real captions for the leak to show; all 413 only cost encode time


def test_one_caption_per_image_ranks_its_own_image_first(tmp_path, shared_data, tiny_model_dir):
    folder = tmp_path / "one-caption"
    folder.mkdir()
    first = {}  # the first caption of each of the first PHOTOS photos
    for line in (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["path"] in first or len(first) < PHOTOS:
            first.setdefault(entry["path"], entry)
    (folder / "images").mkdir()
    for path in first:  # read in place, never copied
        (folder / path).symlink_to(shared_data / path)
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in first.values()), "utf-8"
    )
    build, repo = tmp_path / "build", tmp_path / "repo"
    run_encode(FolderSource(folder), EncodeConfig(out=build, model=str(tiny_model_dir)))
    run_index(IndexConfig(build=build))
    publish_to_folder(PublishConfig(build=build, to=repo))
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
    assert own["queries"] == PHOTOS and own["recall_at_1"] >= unique_share
    # One caption per image: leave-one-out leaves each target caption-less, so the random
    # model's image side (at chance) has to find it, and the leak shows.
    assert by_mode["leave-one-out", "deep alpha=0.00"]["recall_at_1"] < own["recall_at_1"]
    for r in report["results"]:
        assert 0 <= r["recall_at_1"] <= r["recall_at_5"] <= r["recall_at_10"] <= 1


# --- composed queries (evaluate --composed) ---------------------------------------------------


def test_caption_words_lower_turkish_text_and_drop_function_words():
    words = caption_words("İki KÖPEK Işıkta, bir İnek 3 kere")
    assert words == {"köpek", "ışıkta", "inek", "kere"}
    rows = [{"köpek", "kar"}] * 6 + [{"köpek", "çimen"}] * 6
    rows += [{"çocuk", "çocuğu"}] * 6 + [{"çocuk"}] * 6  # çocuk and çocuğu are one word
    assert word_pairs(rows, min_rows=3) == [("köpek", "kar"), ("köpek", "çimen")]


def negation_repo(tmp_path, rng, same_snow=False):
    """15 rows "köpek kar" whose images lean to kar, 15 rows "köpek çimen" leaning less to çimen:
    "köpek" alone finds the kar rows first; only the negative term can push them out.
    ``same_snow``: the encoder gives "kar" the vector of "köpek"."""
    dog, snow, grass = np.eye(3, DIM)
    snow = dog if same_snow else snow
    noise = 0.01 * rng.normal(size=(30, DIM))
    image_emb = unit(
        np.vstack([np.tile(dog + 0.5 * snow, (15, 1)), np.tile(dog + 0.8 * grass, (15, 1))]) + noise
    )
    captions = [[f"Köpek kar {i}"] for i in range(15)] + [[f"köpek çimen {i}"] for i in range(15)]
    texts = {c[0]: unit(rng.normal(size=DIM)) for c in captions}
    vectors = texts | {"köpek": dog, "kar": snow, "çimen": grass}
    folder = write_repo(
        tmp_path / "repo", image_emb, [texts[c[0]] for c in captions], captions=captions
    )
    return open_repo(folder, vectors)


def test_a_negative_term_changes_which_rows_reach_the_top_ten(tmp_path):
    searcher = negation_repo(tmp_path, np.random.default_rng(2))
    results = evaluate_composed(searcher, negative_weights=(0.0, 1.0), text_weights=(1.0,))
    negation = {(m.mode, m.weights["negative"]): m for m in results if m.task == "negation"}
    alone, negated = negation["image-only", 0.0], negation["image-only", 1.0]
    assert alone.pairs == [["köpek", "kar"], ["köpek", "çimen"]] and alone.queries == 2
    # "köpek": the top 10 are the kar rows, for both pairs; each "köpek - B" drops every B row.
    assert (alone.values["share_b"], alone.values["share_a_not_b"]) == (0.5, 0.5)
    assert (negated.values["share_b"], negated.values["share_a_not_b"]) == (0.0, 1.0)
    assert alone.values["chance_b"] == 0.5
    for m in results:
        assert m.task in ("negation", "image+text") and set(m.weights) in (
            {"positive", "negative"},
            {"image", "text"},
        )
        # image-only scoring reads no caption embedding; the negation task's Deep Search
        # reads the stored ones, made from the captions that label the rows
        honest = m.alpha is None or m.task == "image+text"
        assert m.protocol == ("leave-one-out" if honest else "own-caption")
    assert {m.mode for m in results} == {"image-only", "deep alpha=0.00"}


def test_a_pair_of_words_the_encoder_cannot_tell_apart_is_left_out(tmp_path):
    # "köpek - kar" would be a zero query when both words encode alike: it measures nothing.
    searcher = negation_repo(tmp_path, np.random.default_rng(2), same_snow=True)
    results = evaluate_composed(searcher, negative_weights=(1.0,), text_weights=())
    assert {tuple(p) for m in results if m.task == "negation" for p in m.pairs} == {
        ("köpek", "çimen")
    }


def image_text_repo(tmp_path, siblings_agree: bool, n: int = 30):
    """Rows with two captions each; the images point at nothing. If ``siblings_agree``, a row's
    second caption is close to its first, so the other caption can find the row honestly."""
    rng = np.random.default_rng(3)
    first = unit(rng.normal(size=(n, DIM)))
    noise = unit(rng.normal(size=(n, DIM)))
    second = unit(first + 0.3 * noise) if siblings_agree else noise
    captions = [[f"a{i}", f"b{i}"] for i in range(n)]
    vectors = {f"a{i}": first[i] for i in range(n)} | {f"b{i}": second[i] for i in range(n)}
    image_emb = unit(rng.normal(size=(n, DIM)))
    folder = write_repo(tmp_path / "repo", image_emb, list(unit(first + second)), captions=captions)
    return open_repo(folder, vectors)


def test_the_composed_image_and_text_task_cannot_find_a_row_through_its_own_caption(tmp_path):
    def text_alone(siblings_agree, folder):
        results = evaluate_composed(
            image_text_repo(folder, siblings_agree), text_weights=(1.0,), alphas=(0.0,), pairs=[]
        )
        (m,) = [
            m for m in results
            if m.mode == "deep alpha=0.00" and m.weights == {"image": 0.0, "text": 1.0}
        ]  # fmt: skip
        assert m.protocol == "leave-one-out" and m.queries == 60
        return m.values["recall_at_1"]

    # The stored caption embedding (the mean of both captions) would rank every row first for
    # either caption; made without the query caption it is the other, unrelated caption.
    assert text_alone(False, tmp_path / "unrelated") <= 0.2
    assert text_alone(True, tmp_path / "agree") >= 0.9  # the sibling still finds the row


def test_evaluate_composed_writes_labelled_records(tmp_path, generated_build, capsys):
    """Through the command line (in process), on the six generated photos: too few to share
    words, so the negation task says so and the image+text task alone is measured."""
    repo, out = tmp_path / "repo", tmp_path / "eval.json"
    assert main(["publish", "--build", str(generated_build), "--to", str(repo)]) == 0
    flags = ["--alphas", "0.5", "--text-weights", "0,2", "--composed-alphas", "0,0.5"]
    assert main(["evaluate", "--repo", str(repo), "--composed", *flags, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "negation: no word pair" in printed and "image+text" in printed
    report = json.loads(out.read_text())
    assert {r["protocol"] for r in report["results"]} == {"leave-one-out", "own-caption"}
    composed = report["composed"]
    assert [(r["mode"], r["weights"]["image"], r["weights"]["text"]) for r in composed] == [
        (mode, image, text)
        for mode in ("image-only", "deep alpha=0.00", "deep alpha=0.50")
        for image, text in ((1.0, 0.0), (1.0, 2.0), (0.0, 1.0))
    ]
    for r in composed:
        assert r["task"] == "image+text" and r["protocol"] == "leave-one-out"
        assert r["queries"] == 7 and 0 <= r["values"]["recall_at_1"] <= r["values"]["recall_at_10"]
    bad = ["evaluate", "--repo", str(repo), "--composed", "--text-weights", "x"]
    assert main(bad) == 2 and "error: --text-weights 'x'" in capsys.readouterr().err


def test_evaluate_takes_the_query_encoder_from_model_when_given(
    tmp_path, generated_build, tiny_model_dir, capsys
):
    # The folder a dataset was encoded with may have moved: --model names it again, and a
    # model with other weights is refused as the Searcher refuses it.
    import shutil

    from tiny_checkpoint import write_tiny_checkpoint

    repo = tmp_path / "repo"
    assert main(["publish", "--build", str(generated_build), "--to", str(repo)]) == 0
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved-model")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--repo", str(repo), "--model", str(moved), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["results"]
    other = write_tiny_checkpoint(tmp_path / "other-model", seed=1)
    capsys.readouterr()
    assert main(["evaluate", "--repo", str(repo), "--model", str(other), "--output", str(out)]) == 2
    assert "error: this index was built by model" in capsys.readouterr().err


def test_the_text_weight_decides_between_rows_like_the_reference(tmp_path):
    """Photos in threes that look alike; each row's caption names the small detail that sets its
    image apart. The reference (the target's nearest other row) is left out of the ranking, so
    the image alone finds one of the two rows like it; the caption alone, a weak detail, is
    beaten by rows of other threes; the mix finds the target."""
    rng = np.random.default_rng(4)
    groups, dim = 10, 64
    base = np.repeat(rng.normal(size=(groups, dim)), 3, axis=0)
    detail = unit(rng.normal(size=(3 * groups, dim)))
    image_emb = unit(unit(base) + 0.1 * detail)
    captions = [[f"c{t}"] for t in range(3 * groups)]
    folder = write_repo(tmp_path / "repo", image_emb, list(detail), captions=captions)
    searcher = open_repo(folder, {f"c{t}": detail[t] for t in range(3 * groups)})
    results = evaluate_composed(searcher, text_weights=(0.0, 1.0, 4.0), alphas=(), pairs=[])
    recall = {(m.weights["image"], m.weights["text"]): m.values["recall_at_1"] for m in results}
    assert 0.5 <= recall[1.0, 0.0] <= 0.8  # one of two look-alikes: about half, never 0
    assert recall[1.0, 1.0] == 1.0
    assert recall[1.0, 4.0] < 0.9 and recall[0.0, 1.0] < 0.5  # too much text: other threes
    # Chance: one of the 29 rows that are not the reference.
    assert {m.values["chance_recall_at_1"] for m in results} == {1 / 29}
