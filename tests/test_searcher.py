"""Searcher: exact fusion on hand-made vectors, brute-force agreement, more-like-this, composed
queries, model pinning. Each test loads a small published folder through ``Searcher.from_repo``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from search_repo import FakeEncoder, open_repo, png, unit, write_repo

from imagesearchtr import Manifest, ModelMismatchError, Searcher, SearchSetupError
from imagesearchtr.searcher import MIN_POOL, check_model

DIM = 8


def rank_of(row: int, scores: np.ndarray) -> int:
    """0-based rank of ``row`` among ``scores`` (rows with a strictly higher score)."""
    return int((scores > scores[row]).sum())


@pytest.fixture
def fusion_case(tmp_path):
    """300 rows; row 7: best image, poor caption; row 9: best caption, poor image; row 11: none."""
    rng = np.random.default_rng(0)
    n = 300
    query = unit(rng.normal(size=DIM))
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = list(unit(rng.normal(size=(n, DIM))))
    image_emb[7] = unit(query + 0.05 * rng.normal(size=DIM))
    caption_emb[7] = unit(-query + 0.9 * rng.normal(size=DIM))
    caption_emb[9] = unit(query + 0.05 * rng.normal(size=DIM))
    image_emb[9] = unit(-query + 0.9 * rng.normal(size=DIM))
    image_emb[11] = unit(query + 0.3 * rng.normal(size=DIM))
    caption_emb[11] = None
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, caption_emb))
    caption_matrix = np.stack([np.zeros(DIM) if c is None else c for c in caption_emb])
    return searcher, query, image_emb, caption_emb, caption_matrix


def test_fusion_scores_every_candidate_exactly_in_both_spaces(fusion_case):
    searcher, query, image_emb, caption_emb, _ = fusion_case
    alpha = 0.6
    hits = searcher.search_vector(query, k=20, alpha=alpha)
    assert len(hits) == 20
    for hit in hits:
        expected_image = float(image_emb[hit.row] @ query)
        assert hit.image_score == pytest.approx(expected_image, abs=1e-5)
        if caption_emb[hit.row] is None:
            assert hit.caption_score is None
            assert hit.score == pytest.approx(expected_image, abs=1e-5)
        else:
            expected_caption = float(caption_emb[hit.row] @ query)
            assert hit.caption_score == pytest.approx(expected_caption, abs=1e-5)
            assert hit.score == pytest.approx(
                alpha * expected_image + (1 - alpha) * expected_caption, abs=1e-5
            )
    assert 11 in {h.row for h in hits}  # no caption: ranked on its image alone
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_deep_search_finds_rows_through_either_index(fusion_case):
    """Row 7 is found only by the image index, row 9 only by the caption index."""
    searcher, query, image_emb, _, caption_matrix = fusion_case
    assert rank_of(7, caption_matrix @ query) > MIN_POOL  # beyond the caption index's pool
    assert rank_of(9, image_emb @ query) > MIN_POOL  # beyond the image index's pool

    by_row = {h.row: h for h in searcher.search_vector(query, k=10, alpha=0.9)}
    assert 7 in by_row and by_row[7].caption_score < 0  # its real (poor) caption score
    by_row = {h.row: h for h in searcher.search_vector(query, k=10, alpha=0.1)}
    assert 9 in by_row and by_row[9].image_score < 0


def test_a_row_without_a_caption_leaves_the_other_rows_caption_vectors_alone():
    # A null caption embedding is a zero row and a False in the mask, for that row only.
    import pyarrow as pa

    from imagesearchtr.vectors import embedding_matrix

    column = pa.array([[1.0, 0.0], None], type=pa.list_(pa.float32(), 2))
    matrix, valid = embedding_matrix(column, 2)
    assert matrix.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert valid.tolist() == [True, False]


def test_rows_without_a_caption_anywhere_among_the_candidates(tmp_path):
    rng = np.random.default_rng(5)
    image_emb = unit(rng.normal(size=(12, DIM)))
    caption_emb = [None if i in (0, 5, 11) else v for i, v in enumerate(image_emb)]
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, caption_emb))
    query = unit(rng.normal(size=DIM))
    for alpha in (None, 0.5):  # every row is a candidate, the first one has no caption
        hits = searcher.search_vector(query, k=12, alpha=alpha)
        assert sorted(h.row for h in hits) == list(range(12))
        assert {h.row for h in hits if h.caption_score is None} == {0, 5, 11}
    assert [h.row for h in searcher.search_similar(0, k=3)] == [
        int(i) for i in np.argsort(-(image_emb @ image_emb[0]))[1:4]
    ]


def test_fusion_equals_brute_force_when_the_pools_cover_the_answer(tmp_path):
    rng = np.random.default_rng(1)
    n = 40  # smaller than the pool: every row is a candidate
    query = unit(rng.normal(size=DIM))
    image_emb = unit(rng.normal(size=(n, DIM)))
    caption_emb = unit(rng.normal(size=(n, DIM)))
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, list(caption_emb)))
    for alpha in (0.0, 0.3, 1.0):
        fused = alpha * image_emb @ query + (1 - alpha) * caption_emb @ query
        expected = list(np.argsort(-fused)[:10])
        assert [h.row for h in searcher.search_vector(query, k=10, alpha=alpha)] == expected


def test_image_only_search_equals_numpy_top_k(tmp_path):
    rng = np.random.default_rng(2)
    n = 500
    image_emb = unit(rng.normal(size=(n, DIM)))
    query = unit(rng.normal(size=DIM))
    captions = list(unit(rng.normal(size=(n, DIM))))  # unlike the images: a mix-up shows
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, captions), {"sorgu": query})
    hits = searcher.search_text("sorgu", k=10)
    scores = image_emb @ query
    assert [h.row for h in hits] == list(np.argsort(-scores)[:10])
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-5)
    assert hits[0].captions == [f"caption {hits[0].row}"]
    assert hits[0].image.size == (4, 4) and hits[0].image.mode == "RGB"


def test_bad_queries_give_clear_errors(tmp_path):
    rng = np.random.default_rng(3)
    searcher = open_repo(write_repo(tmp_path / "repo", unit(rng.normal(size=(5, DIM)))))
    query = unit(rng.normal(size=DIM))
    with pytest.raises(ValueError, match="query is empty"):
        searcher.search_text("   \n")
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        searcher.search_vector(query, k=3, alpha=1.5)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            searcher.search_vector(query, k=k, alpha=0.5)
    assert len(searcher.search_vector(query, k=50, alpha=0.5)) == 5  # k > rows
    for alpha in ("0.5", True, [0.5]):
        with pytest.raises(ValueError, match="alpha must be a number between 0 and 1 or None"):
            searcher.search_vector(query, k=3, alpha=alpha)
    assert len(searcher.search_vector(query, k=3, alpha=np.float32(0.5))) == 3
    # A vector of the wrong length, or with NaN, is not a query FAISS can answer sensibly.
    for bad, said in (
        (query[:4], "got 4$"),
        (np.tile(query, 2), "got 16$"),
        (np.full(DIM, np.nan), "with NaN or infinity"),
    ):
        with pytest.raises(ValueError, match=f"must be {DIM} finite numbers.*{said}"):
            searcher.search_vector(bad, k=3)
    with pytest.raises(ValueError, match="all zeros"):
        searcher.search_vector(np.zeros(DIM), k=3)
    # Two half vectors do not search as one, nor a complex vector as its real part.
    for bad, said in ((query.reshape(2, -1), r"\(2, 4\)$"), (query + 1j, "of complex numbers")):
        with pytest.raises(ValueError, match=f"must be one vector of {DIM} real numbers.*{said}"):
            searcher.search_vector(bad, k=3)
    for one in (query[None, :], query[:, None], [query.tolist()]):  # (1, dim), (dim, 1): one
        assert len(searcher.search_vector(one, k=3)) == 3
    # Any length: the scores stay cosines, the ranking the unit vector's.
    plain = [(h.row, round(h.score, 5)) for h in searcher.search_vector(query, k=3)]
    for scale in (100, 1e20, 1e-30):  # (float32's norm of the last two is inf and 0)
        scaled = (query * scale).astype(np.float32)
        assert [(h.row, round(h.score, 5)) for h in searcher.search_vector(scaled, k=3)] == plain
    for not_text in (b"kopek", None):  # bytes were taken for an image
        with pytest.raises(TypeError, match="search_text takes a str"):
            searcher.search_text(not_text)


@pytest.mark.parametrize(
    "name,value",
    [
        ("image_max_side", 0),
        ("image_max_side", "1000"),
        ("image_max_side", 2.5),
        ("image_cache_bytes", -1),
        ("image_cache_bytes", "1GB"),
        ("image_cache_bytes", 1.5),
    ],
)
def test_from_repo_names_a_bad_image_setting(tmp_path, name, value):
    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    with pytest.raises(ValueError, match=f"^{name} must be a number of"):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), **{name: value})


def test_search_similar_is_the_nearest_images_without_the_row_itself(tmp_path):
    rng = np.random.default_rng(4)
    image_emb = unit(rng.normal(size=(200, DIM)))
    captions = list(unit(rng.normal(size=(200, DIM))))  # unlike the images: a mix-up shows
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, captions))
    row = 17
    scores = image_emb @ image_emb[row]
    expected = [int(i) for i in np.argsort(-scores) if i != row][:5]
    hits = searcher.search_similar(row, k=5)
    assert [h.row for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
    assert len(searcher.search_similar(0, k=500)) == 100  # k is capped like every search


def test_search_similar_on_a_quantised_index_scores_cosines_with_the_rows_unit_vector(tmp_path):
    # An SQ8 index gives back the row's vector only nearly unit: unnormalised, every score
    # would be off by its length, and Deep Search would weigh the image side by it.
    rng = np.random.default_rng(6)
    image_emb = unit(rng.normal(size=(200, DIM)))
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, factory="SQ8"))
    held = searcher.rows.get_index("image_emb").faiss_index
    row = 17
    rebuilt = held.reconstruct(row)
    assert abs(float(np.linalg.norm(rebuilt)) - 1.0) > 1e-5  # the case this test is about
    query = rebuilt / np.linalg.norm(rebuilt)
    hits = searcher.search_similar(row, k=10)
    ids = np.array([h.row for h in hits])
    expected = held.reconstruct_batch(ids) @ query
    np.testing.assert_allclose([h.image_score for h in hits], expected, atol=1e-6)


def test_search_similar_with_an_image_id_refuses_a_row_that_holds_another_image(tmp_path):
    from imagesearchtr import RowMovedError

    rng = np.random.default_rng(6)
    searcher = open_repo(write_repo(tmp_path / "repo", unit(rng.normal(size=(30, DIM)))))
    hits = searcher.search_similar(4, k=5)
    assert [h.image_id for h in hits] == [str(h.row) for h in hits]  # write_repo's ids
    assert searcher.search_similar(4, k=5, image_id="4") == hits
    with pytest.raises(RowMovedError, match="row 4 holds image '4' now, not '7'"):
        searcher.search_similar(4, k=5, image_id="7")


def test_search_similar_leaves_out_the_row_even_among_duplicates(tmp_path):
    image_emb = unit(np.ones((6, DIM)))  # every row has the same image embedding
    captions = list(unit(np.random.default_rng(5).normal(size=(6, DIM))))  # and unlike captions
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb, captions))
    assert [h.row for h in searcher.search_similar(2, k=10)] == [0, 1, 3, 4, 5]


@pytest.mark.parametrize("row", [-1, 6, 100, "3", 2.0, True, None])
def test_search_similar_refuses_rows_that_do_not_exist(tmp_path, row):
    searcher = open_repo(write_repo(tmp_path / "repo", unit(np.eye(6, DIM) + 0.1)))
    said = "is out of range: the dataset has rows 0 to 5" if type(row) is int else "a row number"
    with pytest.raises(ValueError, match=said):
        searcher.search_similar(row)


def test_one_positive_text_is_exactly_search_text(fusion_case):
    searcher, query, *_ = fusion_case
    searcher.encoder.vectors["köpek"] = query
    combined = searcher.search_combined(["köpek"], k=10)
    plain = searcher.search_text("köpek", k=10)
    assert [(h.row, h.score) for h in combined] == [(h.row, h.score) for h in plain]


def test_a_negative_term_pushes_a_hit_down(tmp_path):
    dog, snow, other = unit(np.eye(3, DIM))
    image_emb = unit(
        [dog + 0.3 * snow, dog + 0.1 * other, other, snow, -dog, dog + 0.5 * other, other - dog]
    )
    vectors = {"köpek": dog, "kar": snow, png((0, 0, 255)): unit(dog + 0.2 * other)}
    searcher = open_repo(write_repo(tmp_path / "repo", image_emb), vectors)
    before = [h.row for h in searcher.search_combined(["köpek"], k=7)]
    after = [h.row for h in searcher.search_combined(["köpek"], negative=["kar"], k=7)]
    assert before.index(0) < before.index(5) and after.index(0) > after.index(5)
    # an image term counts like a text term: the query is the normalised sum
    hits = searcher.search_combined(["köpek", png((0, 0, 255))], k=3)
    expected = unit(dog + unit(dog + 0.2 * other))
    np.testing.assert_allclose(
        [h.score for h in hits], np.sort(image_emb @ expected)[::-1][:3], atol=1e-5
    )


def test_composed_queries_refuse_what_cannot_be_searched(tmp_path):
    dog = unit(np.eye(1, DIM)[0])
    searcher = open_repo(write_repo(tmp_path / "repo", unit(np.eye(4, DIM) + 0.1)), {"köpek": dog})
    with pytest.raises(ValueError, match="at least one positive term"):
        searcher.search_combined([], negative=["köpek"])
    with pytest.raises(ValueError, match="cancel each other out"):
        searcher.search_combined(["köpek"], negative=["köpek"])
    with pytest.raises(ValueError, match="query is empty"):
        searcher.search_combined(["köpek", " "])
    # A bare str would be read letter by letter: four terms "k", "ö", ...
    with pytest.raises(TypeError, match=r"positive must be a list of terms, e.g. \['köpek'\]"):
        searcher.search_combined("köpek")
    with pytest.raises(TypeError, match=r"negative must be a list of terms"):
        searcher.search_combined(["köpek"], negative="kedi")
    with pytest.raises(TypeError, match=r"positive must be a list of terms, e.g. \[image\]"):
        searcher.search_combined(png((1, 2, 3)))
    with pytest.raises(TypeError, match=r"positive must be a list of terms, not dict"):
        searcher.search_combined({"köpek": 1})  # its keys were searched
    with pytest.raises(TypeError, match=r"negative must be a list of terms, not NoneType"):
        searcher.search_combined(["köpek"], negative=None)


def test_a_composed_query_refuses_an_image_path_given_as_text(tmp_path, monkeypatch):
    # search_image reads a str as a path; search_combined reads it as a text, so a path given
    # as a str used to be searched for its letters, as a caption.
    dog, blue = unit(np.eye(2, DIM))
    photo = tmp_path / "photo.png"
    photo.write_bytes(png((0, 0, 255)))
    searcher = open_repo(
        write_repo(tmp_path / "repo", unit(np.eye(4, DIM) + 0.1)),
        # (FakeEncoder keys an image by bytes(term): a Path's are its name's)
        {"köpek": dog, str(photo): dog, "kedi.jpg": dog, bytes(photo): blue},
    )
    said_of = {str(photo): "names an image file", "kedi.jpg": "looks like an image file"}
    for term, said in said_of.items():
        with pytest.raises(ValueError, match=rf"{re.escape(repr(term))} {said}.*pathlib\.Path"):
            searcher.search_combined(["köpek", term])
        with pytest.raises(ValueError, match=re.escape(repr(term))):
            searcher.search_combined(["köpek"], negative=[term])
    # the fix the message names works; texts with a dot or a slash stay texts
    hits = searcher.search_combined(["köpek", Path(photo)], k=2)
    assert hits[0].score == pytest.approx(float(unit(np.eye(4, DIM) + 0.1)[0] @ unit(dog + blue)))
    monkeypatch.chdir(tmp_path)  # a term is a file only where it names one from here
    (tmp_path / "notlar").write_text("a file named like a word: not an image")
    searcher.encoder.vectors.update({"repo": dog, "3.5 yaş": dog, "a/b": blue, "notlar": dog})
    for text in ("repo", "3.5 yaş", "a/b", "notlar"):
        searcher.search_combined([text], k=1)
    searcher.search_text("kedi.jpg", k=1)  # search_text takes only texts: nothing to confuse


def test_a_model_that_cannot_be_fetched_or_a_cache_that_cannot_be_made_is_named(
    tmp_path, monkeypatch
):
    from huggingface_hub import constants

    folder = write_repo(tmp_path / "repo", [unit([1, 0, 0, 0])])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as with no network
    with pytest.raises(SearchSetupError, match=r"its model fake/model could not be fetched .*"
                       r"LocalEntryNotFoundError.*check the connection"):  # fmt: skip
        Searcher.from_repo(folder, cache_dir=tmp_path / "cache")
    (tmp_path / "a-file").write_text("x")
    for cache in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        with pytest.raises(SearchSetupError, match=r"cannot use the cache folder .*a-file"):
            Searcher.from_repo(folder, encoder=FakeEncoder(4), cache_dir=cache)


def test_a_hub_repo_that_cannot_be_reached_is_named(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as with no network
    monkeypatch.chdir(tmp_path)
    for name in ("someone/photos", "photos"):  # "photos": a folder's name with a typo, say
        with pytest.raises(SearchSetupError, match=rf"^{name} is not a local folder, and its "
                           r"index could not be fetched .*LocalEntryNotFoundError.*check the "
                           r"path, or the connection"):  # fmt: skip
            Searcher.from_repo(name, encoder=FakeEncoder(4), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("status", [429, 500, 503, 401, 403, 400])
def test_a_failing_hub_is_named_and_a_refusal_says_so(tmp_path, monkeypatch, status):
    # A Hub that fails (5xx) or says "too many requests" (429) is this repo's "could not be
    # fetched" (which the Space tries again); a refusal (401, 403) names HF_TOKEN; any other
    # answer stays the Hub's own error.
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    def answer(*args, **kwargs):
        response = httpx.Response(status, request=httpx.Request("GET", "https://hub/x"))
        raise HfHubHTTPError(f"{status} from the Hub", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", answer)
    monkeypatch.chdir(tmp_path)
    expected = HfHubHTTPError if status == 400 else SearchSetupError
    with pytest.raises(expected) as raised:
        Searcher.from_repo("someone/photos", encoder=FakeEncoder(4), cache_dir=tmp_path / "c")
    said = str(raised.value)
    if status in (429, 500, 503):
        assert said.startswith("someone/photos is not a local folder, and its index could not")
        assert f"HfHubHTTPError: {status} from the Hub" in said
    elif status in (401, 403):
        assert f"refused access (HTTP {status})" in said and "HF_TOKEN" in said
    else:
        assert raised.value.response.status_code == status


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


def test_a_component_at_another_commit_is_refused():
    # Same weights, but the tokenizer/image processor came from another commit of a component
    # repo: queries would be tokenised unlike the index's rows.
    encoder = FakeEncoder(DIM)
    built = {"org/text-model": "1" * 40}
    manifest = Manifest(
        model_id=encoder.model_id,
        model_revision="abc123",
        model_fingerprint=encoder.fingerprint,
        dim=DIM,
        num_rows=1,
        data_hash="sha256:x",
        indices=(),
        component_revisions=built,
    )
    encoder.component_revisions = dict(built)
    check_model(manifest, encoder)  # the same commit: accepted
    encoder.component_revisions = {"org/text-model": "2" * 40}
    with pytest.raises(
        ModelMismatchError, match=r"org/text-model at commit 111111111111, .* at 222222222222"
    ):
        check_model(manifest, encoder)


def test_from_repo_refuses_another_model_and_rows_of_another_build(tmp_path):
    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    other = FakeEncoder(DIM)
    other.fingerprint = "sha256:" + "c" * 64
    with pytest.raises(ModelMismatchError, match="Load that model, or rebuild the index"):
        Searcher.from_repo(folder, encoder=other)
    manifest = Manifest.load(folder / "index" / "manifest.json")
    data = json.loads(manifest.to_json())
    data["num_rows"] = 4
    (folder / "index" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SearchSetupError, match="rows and indices come from different builds"):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM))


@pytest.mark.parametrize(
    "field,value,said",
    [
        ("num_rows", 3.0, "num_rows is 3.0, not a count"),
        ("num_rows", "3", "num_rows is '3', not a count"),
        ("num_rows", -1, "num_rows is -1, not a count (a whole number, 0 or more)"),
        ("dim", "8", "dim is '8', not a count"),
        ("ntotal", 3.5, "ntotal of image_emb is 3.5, not a count"),
        ("params", [["nprobe", 4]], "the params of image_emb are not a name: value mapping"),
        ("params", {"nprobe": 16}, "search parameter nprobe=16 for index/image_emb.faiss does not"),
        ("params", {"nprobe": "16"}, "search parameter nprobe='16' for index/image_emb.faiss"),
        ("index_sha256", [1], "index_sha256 is [1], not a path: sha256 mapping"),
        ("dim", True, "dim is True, not a count"),
        ("component_revisions", ["a/b"], "component_revisions is ['a/b'], not a Hub id: commit"),
    ],
)
def test_from_repo_names_a_manifest_field_of_the_wrong_type(tmp_path, field, value, said):
    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))  # Flat: no nprobe
    path = folder / "index" / "manifest.json"
    manifest = json.loads(path.read_text())
    if field in ("ntotal", "params"):
        manifest["indices"][0][field] = value
    else:
        manifest[field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(SearchSetupError, match=re.escape(said)):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM))


def test_a_damaged_local_data_file_is_named(tmp_path):
    import pyarrow.parquet as pq

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    (path,) = (folder / "data").glob("*.parquet")
    group = pq.read_metadata(path).row_group(0)
    (chunk,) = [
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == "captions.list.element"
    ]  # read at start
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(SearchSetupError, match=f"{path.name} cannot be read .*it is damaged"):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "cache")


def test_a_data_file_without_the_image_column_is_refused_at_load(tmp_path):
    """Rows whose images cannot be shown are refused with the fix, not loaded to show a grey
    placeholder for every hit (ids and captions alone would load)."""
    import pyarrow.parquet as pq

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    (path,) = (folder / "data").glob("*.parquet")
    pq.write_table(pq.read_table(path).drop_columns(["image"]), path)
    with pytest.raises(SearchSetupError, match=f"{path.name} has no image column"):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "cache")


def test_a_data_file_whose_footer_claims_more_bytes_than_it_has_is_named(tmp_path):
    # The footer length is the file's last word: one past the file's start must be named, not
    # a bare seek error (the file keeps its size, so the manifest's size check passes).
    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    (path,) = (folder / "data").glob("*.parquet")
    data = path.read_bytes()
    path.write_bytes(data[:-8] + (10**6).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(SearchSetupError, match=f"{path.name} is not a parquet file"):
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM), cache_dir=tmp_path / "cache")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, at open
def test_a_result_image_over_the_pixel_limit_is_a_placeholder(tmp_path):
    import io

    from PIL import Image

    from imagesearchtr.images import MAX_PIXELS

    bomb = io.BytesIO()  # 8100x8100 one-bit pixels: a few KB of PNG, 66 megapixels decoded
    Image.new("1", (8100, 8100)).save(bomb, format="PNG")
    assert MAX_PIXELS < 8100 * 8100 and len(bomb.getvalue()) < 100_000
    emb = unit(np.eye(2, DIM) + 0.1)
    searcher = open_repo(write_repo(tmp_path / "repo", emb, images=[bomb.getvalue(), png()]))
    bombed, fine = (searcher.search_vector(emb[row], k=1)[0] for row in (0, 1))
    assert bombed.row == 0 and bombed.image.size == (256, 256)
    assert "8100x8100 pixels, over the 64,000,000-pixel limit" in bombed.image_error
    assert fine.row == 1 and fine.image_error is None


def test_from_repo_refuses_missing_and_mismatched_index_files(tmp_path):
    import faiss

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    small = faiss.IndexFlatIP(4)
    small.add(unit(np.eye(3, 4) + 0.1))
    faiss.write_index(small, str(folder / "index" / "caption_emb.faiss"))
    with pytest.raises(SearchSetupError, match="holds 3 vectors of dim 4, the manifest says 3"):
        open_repo(folder)
    (folder / "index" / "caption_emb.faiss").unlink()
    with pytest.raises(SearchSetupError, match="index file index/caption_emb.faiss is missing"):
        open_repo(folder)
    (folder / "index" / "caption_emb.faiss").mkdir()
    with pytest.raises(SearchSetupError, match="caption_emb.faiss is a folder, not a file"):
        open_repo(folder)
    with pytest.raises(TypeError, match="encoder must be a loaded Encoder .* not str"):
        Searcher.from_repo(folder, encoder="utkubascakir/MultiEmbedTR")
    with pytest.raises(TypeError, match="encoder must be a loaded Encoder .* not type"):
        Searcher.from_repo(folder, encoder=FakeEncoder)  # the class, not one loaded


def test_an_index_or_data_file_from_another_build_is_refused(
    tmp_path, generated_build, tiny_encoder
):
    # The two indices hold as many vectors of one dim, so the ntotal and dim checks pass: only
    # the sha256 the index step records tells them apart. A data file of another size is
    # caught by its size, with the rows already cached (so no byte of it would be read).
    from pipeline.publish import PublishConfig, publish_to_folder

    folder, cache = tmp_path / "repo", tmp_path / "cache"
    publish_to_folder(PublishConfig(build=generated_build, to=folder))
    manifest = json.loads((folder / "index" / "manifest.json").read_text())
    assert set(manifest["index_sha256"]) == {"index/image_emb.faiss", "index/caption_emb.faiss"}
    Searcher.from_repo(folder, encoder=tiny_encoder, cache_dir=cache)  # caches the rows

    def replace(path: Path, content: bytes) -> None:  # a new file: the published ones are
        path.unlink()  # hard links to the build's, which other tests share
        path.write_bytes(content)

    image, caption = folder / "index" / "image_emb.faiss", folder / "index" / "caption_emb.faiss"
    kept = image.read_bytes()
    replace(image, caption.read_bytes())
    with pytest.raises(SearchSetupError, match="image_emb.faiss is not the index the manifest"):
        Searcher.from_repo(folder, encoder=tiny_encoder, cache_dir=cache)
    replace(image, kept)
    (data,) = (folder / "data").glob("*.parquet")
    replace(data, data.read_bytes()[:-100])
    with pytest.raises(SearchSetupError, match=f"{data.name} has .* bytes, the manifest says"):
        Searcher.from_repo(folder, encoder=tiny_encoder, cache_dir=cache)


def test_a_revision_is_refused_with_a_local_folder(tmp_path):
    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    with pytest.raises(SearchSetupError, match="is a local folder, which has no revisions"):
        Searcher.from_repo(folder, "v2", encoder=FakeEncoder(DIM))


def test_from_repo_refuses_missing_altered_or_misshapen_image_ranges(tmp_path):
    import hashlib
    import io

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    ranges, manifest_path = folder / "index" / "image_ranges.npy", folder / "index/manifest.json"
    manifest = json.loads(manifest_path.read_text())

    ranges.write_bytes(ranges.read_bytes()[:-8] + bytes(8))
    with pytest.raises(SearchSetupError, match="is not the file the manifest names"):
        open_repo(folder)

    # Consistent with its manifest (whose sha256 the repo's author writes too), but wrong.
    def put(array: np.ndarray, raw: bytes | None = None) -> None:
        buf = io.BytesIO()
        np.save(buf, array)
        data = raw if raw is not None else buf.getvalue()
        ranges.write_bytes(data)
        manifest["image_ranges_sha256"] = hashlib.sha256(data).hexdigest()
        manifest_path.write_text(json.dumps(manifest))

    put(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(SearchSetupError, match="has 2 rows but the manifest says 3"):
        open_repo(folder)
    put(np.zeros((3, 2), dtype=np.float64))
    with pytest.raises(SearchSetupError, match=r"not an int64 array of \(3, 2\)"):
        open_repo(folder)
    put(np.array([[0, 10], [-5, 10], [-1, 0]], dtype=np.int64))
    with pytest.raises(SearchSetupError, match="a negative offset or length"):
        open_repo(folder)
    # A length of 0 at a real offset is no image either: only (-1, 0) marks a row without one.
    put(np.array([[0, 10], [5, 0], [-1, 0]], dtype=np.int64))
    with pytest.raises(SearchSetupError, match="a negative offset or length"):
        open_repo(folder)
    # A header that claims a huge array, over a few bytes: refused before any allocation.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i8", "fortran_order": False, "shape": (3, 2**40)}
    )
    put(np.zeros(0), raw=header.getvalue() + bytes(48))
    with pytest.raises(SearchSetupError, match=r"not an int64 array of \(3, 2\)"):
        open_repo(folder)
    # The right header over too few bytes (40, not 48): named, not a numpy reshape error.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i8", "fortran_order": False, "shape": (3, 2)}
    )
    put(np.zeros(0), raw=header.getvalue() + bytes(40))
    with pytest.raises(SearchSetupError, match=r"not an int64 array of \(3, 2\)"):
        open_repo(folder)
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 2), dtype=np.int64))  # for the link below
    # A link out of index/ is not followed.
    ranges.unlink()
    ranges.symlink_to(tmp_path / "elsewhere.npy")
    (tmp_path / "elsewhere.npy").write_bytes(buf.getvalue())
    with pytest.raises(SearchSetupError, match="missing .or not a file inside index/."):
        open_repo(folder)
    ranges.unlink()
    with pytest.raises(SearchSetupError, match="image_ranges.npy is missing"):
        open_repo(folder)
    # A manifest from before image ranges were recorded.
    del manifest["image_ranges_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SearchSetupError, match="published before image byte ranges"):
        open_repo(folder)


def test_image_ranges_that_would_be_misread_are_refused(tmp_path):
    # (-1, 0) alone marks a row without image bytes: -1 with a length would read the file's
    # tail. A Fortran-ordered array holds the same numbers in another order: read as rows,
    # offsets would be taken for lengths.
    import hashlib
    import io

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    ranges, manifest_path = folder / "index" / "image_ranges.npy", folder / "index/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    good = np.load(ranges)
    for bad, said in (
        (np.array([[0, 10], [-1, 10], [-1, 0]], dtype=np.int64), "a negative offset or length"),
        (np.asfortranarray(good), r"not an int64 array of \(3, 2\)"),
    ):
        buf = io.BytesIO()
        np.save(buf, bad)
        ranges.write_bytes(buf.getvalue())
        manifest["image_ranges_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(SearchSetupError, match=said):
            open_repo(folder)


def test_real_model_queries_handle_any_unicode_and_long_text(tiny_encoder):
    texts = ["köpek 🐕", "שלום עולם", "ÇĞİÖŞÜ çğıöşü", "a\u0000b\u200fc", "kar " * 5000]
    emb = tiny_encoder.encode_texts(texts)
    assert emb.shape == (5, tiny_encoder.dim) and np.isfinite(emb).all()


def test_a_model_the_hub_refuses_is_named(tmp_path, monkeypatch):
    import httpx
    from huggingface_hub.errors import RepositoryNotFoundError
    from search_repo import unit, write_repo

    from imagesearchtr import Encoder, Searcher, SearchSetupError

    def refused(*args, **kwargs):  # as the Hub answers for a private model without a token
        url = "http://hub.invalid/api/models/fake/model"
        response = httpx.Response(401, request=httpx.Request("GET", url))
        raise RepositoryNotFoundError(f"401 Client Error. Repository Not Found for url: {url}",
                                      response=response)  # fmt: skip

    monkeypatch.setattr(Encoder, "from_pretrained", refused)
    folder = write_repo(tmp_path / "repo", [unit([1, 0, 0, 0])])
    with pytest.raises(SearchSetupError, match=r"its model fake/model could not be fetched "
                       r"\(RepositoryNotFoundError: 401 .*HF_TOKEN"):  # fmt: skip
        Searcher.from_repo(folder, cache_dir=tmp_path / "cache")


def test_close_lets_go_of_the_fetch_threads(tmp_path):
    """A process that loads Searchers in turn (a reload after a publish) keeps no threads of
    the ones it closed."""
    import threading

    def fetchers() -> set:
        return {t for t in threading.enumerate() if t.name.startswith("image-fetch")}

    rng = np.random.default_rng(5)
    before = fetchers()
    for n in range(3):
        repo = write_repo(tmp_path / f"repo{n}", unit(rng.normal(size=(20, DIM))), [None] * 20)
        with open_repo(repo) as searcher:
            assert searcher.search_similar(0, k=3)  # the pool's threads start with a fetch
    assert fetchers() == before
    with pytest.raises(ValueError, match="this Searcher was closed"):
        searcher.images.fetch([1])


def test_cached_rows_no_load_used_for_two_weeks_go_and_the_ones_in_use_stay(tmp_path):
    """A cache folder that persists across updates: the rows of replaced data files go once no
    load used them for ROWS_KEEP_S; rows a load uses are kept however old they are."""
    import os
    import time

    from imagesearchtr.lazy_rows import ROWS_KEEP_S

    rng = np.random.default_rng(7)
    repo = write_repo(tmp_path / "repo", unit(rng.normal(size=(10, DIM))))
    cache = tmp_path / "cache"
    Searcher.from_repo(repo, encoder=FakeEncoder(DIM), cache_dir=cache).close()
    rows = cache / "rows"
    used = sorted(rows.glob("*.arrow"))
    assert used
    long_ago = time.time() - ROWS_KEEP_S - 3600
    replaced, recent = rows / "0123.image_id+path+captions.arrow", rows / "4567.arrow.9.9.tmp"
    killed = rows / "89ab.image_id+path+captions.arrow.1.2.tmp"
    for path in (replaced, recent, killed):
        path.write_bytes(b"rows of a data file an update replaced")
    for path in (*used, replaced, killed):
        os.utime(path, (long_ago, long_ago))
    with Searcher.from_repo(repo, encoder=FakeEncoder(DIM), cache_dir=cache) as searcher:
        assert len(searcher) == 10
    assert sorted(rows.glob("*.arrow")) == used  # in use: kept, and marked used now
    assert all(p.stat().st_mtime > long_ago + 3600 for p in used)
    assert not replaced.exists() and not killed.exists() and recent.exists()
