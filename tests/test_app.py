"""The Gradio Space (space/app.py) and ``python -m pipeline publish-space``, end to end.

Reads the shared TasvirEt photos in place (a subset is copied to a temporary folder, never into
the repo) and builds ONE published dataset for the module with the tiny random checkpoint.
Writes only temporary folders, plus test-artifacts/app-search.png (git-ignored) from the
browser test. Servers (the app, its subprocess, the local Hub) listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, free_port, load_app

# gradio's queue calls pandas APIs that pandas 3 deprecates; nothing this project can change.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

SPACE_DIR = REPO_ROOT / "space"
ARTIFACTS = REPO_ROOT / "test-artifacts"
QUERY_PHOTO = "images/3385593926_d3e9c21170.jpg"  # two dogs in the snow
SUBSET_IMAGES = 40  # enough for k=30 searches; keeps the module's encode to a few seconds


def launch(app, demo):
    """Start ``demo`` like the Space does (theme, CSS, queue) on a free loopback port."""
    port = free_port()
    app.launch(
        demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True
    )
    return f"http://127.0.0.1:{port}/"


def client_for(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


# ---------------------------------------------------------------------------------------------
# One published dataset for the module
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subset(shared_data, tmp_path_factory) -> Path:
    """The first SUBSET_IMAGES shared photos (always with QUERY_PHOTO) and their captions."""
    folder = tmp_path_factory.mktemp("tasviret-subset")
    lines = (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    paths = list(dict.fromkeys(r["path"] for r in records))
    chosen = set(paths[: SUBSET_IMAGES - 1]) | {QUERY_PHOTO}
    assert QUERY_PHOTO in paths
    (folder / "images").mkdir()
    for path in chosen:
        shutil.copyfile(shared_data / path, folder / path)
    kept = [r for r in records if r["path"] in chosen]
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def build_dir(subset, tiny_model_dir, tiny_encoder, tmp_path_factory) -> Path:
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    build = tmp_path_factory.mktemp("app-build")
    config = EncodeConfig(out=build, model=str(tiny_model_dir), device="cpu", dtype="float32")
    run_encode(FolderSource(subset), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    return build


@pytest.fixture(scope="module")
def published(build_dir, tmp_path_factory) -> Path:
    from pipeline.publish import PublishConfig, publish_to_folder

    target = tmp_path_factory.mktemp("app-published") / "dataset"
    publish_to_folder(PublishConfig(build=build_dir, to=target))
    return target


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def searcher(app, published):
    loaded = app.load_searcher({"DATASET_REPO": str(published)})
    assert not isinstance(loaded, app.LoadError), loaded
    return loaded


@pytest.fixture(scope="module")
def served(app, searcher):
    """The app launched in this process: (url, gradio_client.Client)."""
    demo = app.build_app(searcher)
    url = launch(app, demo)
    try:
        yield url, client_for(url)
    finally:
        demo.close()


def search(client, query, k=10, deep=False, alpha=0.6):
    return client.predict(query=query, k=k, deep=deep, alpha=alpha, api_name="/search")


# ---------------------------------------------------------------------------------------------
# The launched app through gradio_client
# ---------------------------------------------------------------------------------------------


def test_search_returns_k_results_sorted_by_score(served):
    _, client = served
    gallery, results, status = search(client, "karda oynayan köpekler", k=7)
    assert len(gallery) == 7 and len(results) == 7, status
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["row"] for r in results}) == 7
    keys = {
        "caption",
        "captions",
        "score",
        "image_score",
        "caption_score",
        "row",
        "image_id",
        "image_error",
    }
    for item, result in zip(gallery, results, strict=True):
        assert set(result) == keys
        assert result["caption"] == result["captions"][0]
        assert result["score"] == pytest.approx(result["image_score"])  # not Deep Search
        # the gallery caption shows the score and the first caption
        assert item["caption"] == f"{result['score']:.3f} · {result['caption']}"
        assert item["image"]  # a file the client can download
    assert "7 sonuç" in status


def test_a_hit_without_its_image_is_shown_with_a_placeholder_and_a_warning(app):
    from PIL import Image

    from imagesearchtr import Hit

    grey = Image.new("RGB", (8, 8), (128, 128, 128))
    ok = Hit(1, 0.9, 0.9, None, ["köpek"], grey)
    broken = Hit(2, 0.8, 0.8, None, ["kedi"], grey, image_error="row 2: could not be decoded")
    gallery, results = app.hits_to_outputs([ok, broken])
    assert [label for _, label in gallery] == [
        "0.900 · köpek",
        "0.800 · kedi · ⚠️ görsel yüklenemedi",
    ]
    assert [r["image_error"] for r in results] == [None, "row 2: could not be decoded"]
    assert all(Path(path).is_file() for path, _ in gallery)


def test_the_gallery_gets_a_large_photo_scaled_to_the_page(app, tmp_path, monkeypatch):
    import io

    from PIL import Image
    from search_repo import FakeEncoder, write_repo

    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (30, 120, 200)).save(buf, format="JPEG")
    emb = np.eye(2, dtype=np.float32)
    folder = write_repo(tmp_path / "repo", emb, images=[buf.getvalue()] * 2)
    from_repo = app.Searcher.from_repo  # the real one, with the test's stand-in for the model
    monkeypatch.setattr(
        app.Searcher, "from_repo", lambda *a, **kw: from_repo(*a, encoder=FakeEncoder(2), **kw)
    )
    searcher = app.load_searcher({"DATASET_REPO": str(folder)})
    gallery, _ = app.hits_to_outputs(searcher.search_vector(emb[0], k=1))
    with Image.open(gallery[0][0]) as shown:
        assert shown.size == (app.GALLERY_MAX_SIDE, round(app.GALLERY_MAX_SIDE * 2 / 3))


def test_deep_search_alpha_zero_ranks_by_caption_score(served, searcher):
    _, client = served
    query = "sahilde koşan çocuklar"
    _, results, status = search(client, query, k=5, deep=True, alpha=0.0)
    assert len(results) == 5, status
    caption_scores = [r["caption_score"] for r in results]
    assert [r["score"] for r in results] == pytest.approx(caption_scores, abs=1e-5)
    # the exact top 5 by caption similarity over every row
    vector = searcher.encoder.encode_texts([query])[0]
    table = searcher.embeddings()  # the exact embedding columns, an Arrow table
    matrix = np.stack(table.column("caption_emb").to_numpy(zero_copy_only=False))
    expected = np.argsort(-(matrix @ vector), kind="stable")[:5]
    assert [r["row"] for r in results] == [int(i) for i in expected]
    # and alpha=1 is a different ranking: by the images
    _, by_image, _ = search(client, query, k=5, deep=True, alpha=1.0)
    assert [r["score"] for r in by_image] == pytest.approx([r["image_score"] for r in by_image])


def test_search_image_finds_the_photo_itself(served, shared_data):
    from gradio_client import handle_file

    _, client = served
    gallery, results, status = client.predict(
        image=handle_file(str(shared_data / QUERY_PHOTO)), k=3, api_name="/search_image"
    )
    assert len(gallery) == 3, status
    assert results[0]["caption"] == "İki kahverengi köpek kar üstünde kavga ediyor."
    assert results[0]["score"] == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"query": "   "}, "arama metni yazın"),
        ({"query": ""}, "arama metni yazın"),
        ({"query": None}, "arama metni yazın"),
    ],
)
def test_an_empty_query_returns_a_turkish_message(served, kwargs, expected):
    _, client = served
    gallery, results, status = search(client, **kwargs)
    assert gallery == [] and results == []
    assert expected in status


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"k": 0}, "less than minimum value 1"),
        ({"k": 31}, "greater than maximum value 30"),
        ({"deep": True, "alpha": 1.5}, "greater than maximum value 1"),
    ],
)
def test_out_of_range_settings_are_refused_by_the_sliders(served, kwargs, expected):
    # gradio 6 validates a Slider's value against its bounds before the function runs and
    # answers with a plain error message (no traceback); the app's own checks back that up.
    from gradio_client.exceptions import AppError

    _, client = served
    with pytest.raises(AppError, match=expected):
        search(client, "köpek", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"k": "5"}, "“Sonuç sayısı” bir sayı olmalı"),
        ({"k": None}, "“Sonuç sayısı” bir sayı olmalı"),
        ({"k": [5]}, "“Sonuç sayısı” bir sayı olmalı"),
        ({"deep": True, "alpha": "0.5"}, "“Denge” bir sayı olmalı"),
        ({"k": 10**400}, "“Sonuç sayısı” çok büyük ya da sonsuz .*401 basamak"),  # no float
    ],
)
def test_settings_that_are_not_numbers_are_refused_in_turkish(served, kwargs, expected):
    # gradio's own Slider preprocess failed on them with a TypeError: an error without a
    # message for the caller, a traceback in the log.
    from gradio_client.exceptions import AppError

    _, client = served
    with pytest.raises(AppError, match=expected):
        search(client, "köpek", **kwargs)
    for row in ("3", "nan", [1]):
        with pytest.raises(AppError, match="“row” bir sayı olmalı"):
            client.predict(row=row, k=5, api_name="/search_similar")
    with pytest.raises(AppError, match="“row” çok büyük"):
        client.predict(row=-(10**400), k=5, api_name="/search_similar")


def test_deep_must_be_true_or_false_and_a_query_not_too_long(served):
    _, client = served
    for deep in ("false", "0", 1):  # the string "false" would have run Deep Search
        gallery, results, status = search(client, "köpek", k=3, deep=deep)
        assert gallery == [] and results == [] and "deep true ya da false" in status, status
    gallery, results, status = search(client, "köpek " * 400, k=3)  # 2400 characters
    assert gallery == [] and results == [] and "en çok 2000 karakter" in status, status
    assert len(search(client, "köpek", k=3, deep=None)[1]) == 3  # not given: image-only


def test_handlers_check_their_settings_too(app, searcher):
    search_fn, _, _, _ = app.make_handlers(searcher)
    assert "Sonuç sayısı 1 ile 30" in search_fn("köpek", 0, False, 0.6)[2]
    assert "Sonuç sayısı 1 ile 30" in search_fn("köpek", 31, False, 0.6)[2]  # (gradio's too)
    assert "Denge (alpha) 0 ile 1" in search_fn("köpek", 5, True, 1.5)[2]
    assert len(search_fn("köpek", 3.0, True, 0.5)[1]) == 3  # a float k from a slider is fine


def test_image_search_without_an_image_returns_a_message(served):
    _, client = served
    gallery, results, status = client.predict(image=None, k=3, api_name="/search_image")
    assert gallery == [] and results == [] and "görsel yükleyin" in status


def test_only_the_four_endpoints_are_public(served):
    _, client = served
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/search", "/search_image", "/search_similar", "/embed"}
    assert not api["unnamed_endpoints"]
    names = {
        endpoint: [p["parameter_name"] for p in info["parameters"]]
        for endpoint, info in api["named_endpoints"].items()
    }
    assert names == {
        "/search": ["query", "k", "deep", "alpha", "image"],
        "/search_image": ["image", "k"],
        "/search_similar": ["row", "k", "image_id"],
        "/embed": ["text"],
    }


def test_embed_refuses_bad_text_with_a_turkish_message(served):
    from gradio_client.exceptions import AppError

    _, client = served
    for text, words in (("   ", "metin"), ("x" * 2001, "2000")):
        with pytest.raises(AppError, match=words):
            client.predict(text, api_name="/embed")


# ---------------------------------------------------------------------------------------------
# More like this, composed queries, share links (issue 13)
# ---------------------------------------------------------------------------------------------


def rows_and_scores(results):
    return [r["row"] for r in results], [r["score"] for r in results]


def hit_rows_and_scores(hits):
    return [h.row for h in hits], [h.score for h in hits]


def test_a_query_without_operators_searches_as_before(served, searcher):
    _, client = served
    for deep, alpha in ((False, 0.6), (True, 0.3)):
        _, results, status = search(
            client, "  karda oynayan köpekler ", k=8, deep=deep, alpha=alpha
        )
        rows, scores = rows_and_scores(results)
        expected = searcher.search_text("karda oynayan köpekler", 8, alpha=alpha if deep else None)
        want_rows, want_scores = hit_rows_and_scores(expected)
        assert rows == want_rows, status
        assert scores == pytest.approx(want_scores, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "positive", "negative"),
    [
        ("köpek + kar - şehir", ["köpek", "kar"], ["şehir"]),
        ("köpek+kar", ["köpek+kar"], []),  # no spaces: text
        ("Kuzey-Batı rüzgarı", ["Kuzey-Batı rüzgarı"], []),
        ("15-20 yaş arası çocuklar", ["15-20 yaş arası çocuklar"], []),
        ("15 -20 yaş", ["15 -20 yaş"], []),  # a space on one side only: text
        ("-5 derece", ["-5 derece"], []),
        ("sahil  -  kum", ["sahil"], ["kum"]),
        ("- kar", [], ["kar"]),  # with an image beside it as the positive term
        ("", [], []),
    ],
)
def test_only_spaced_plus_and_minus_are_operators(app, text, positive, negative):
    assert app.parse_query(text) == (positive, negative)


@pytest.mark.parametrize("text", ["köpek -", "köpek + ", "köpek + - kar"])
def test_an_operator_without_a_term_is_refused(app, text):
    with pytest.raises(ValueError, match="işaretinden sonra bir terim"):
        app.parse_query(text)


def test_composed_query_matches_the_library(served, searcher):
    _, client = served
    _, results, status = search(client, "köpek + kar - şehir", k=6)
    rows, scores = rows_and_scores(results)
    want_rows, want_scores = hit_rows_and_scores(
        searcher.search_combined(["köpek", "kar"], ["şehir"], k=6)
    )
    assert rows == want_rows, status
    assert scores == pytest.approx(want_scores, abs=1e-5)
    # a negative term changes the ranking: it is applied, not dropped
    _, plain, _ = search(client, "köpek + kar", k=6)
    assert [r["row"] for r in plain] != rows or [r["score"] for r in plain] != pytest.approx(
        scores, abs=1e-6
    )


def test_a_hyphenated_word_is_searched_as_one_text(served, searcher):
    _, client = served
    for text in ("Kuzey-Batı", "15-20 yaş"):
        _, results, status = search(client, text, k=5)
        rows, scores = rows_and_scores(results)
        want_rows, want_scores = hit_rows_and_scores(searcher.search_text(text, 5))
        assert rows == want_rows, status
        assert scores == pytest.approx(want_scores, abs=1e-6)


def test_text_and_image_together(served, searcher, shared_data):
    from gradio_client import handle_file

    _, client = served
    photo = str(shared_data / QUERY_PHOTO)
    _, results, status = client.predict(
        query="kar - şehir",
        k=5,
        deep=False,
        alpha=0.6,
        image=handle_file(photo),
        api_name="/search",
    )
    rows, scores = rows_and_scores(results)
    want_rows, want_scores = hit_rows_and_scores(
        searcher.search_combined(["kar", Path(photo)], ["şehir"], k=5)  # a str is a text
    )
    assert rows == want_rows, status
    assert scores == pytest.approx(want_scores, abs=1e-5)
    # an image alone in the text tab is an image search
    _, alone, _ = client.predict(query="", k=3, image=handle_file(photo), api_name="/search")
    assert alone[0]["score"] == pytest.approx(1.0, abs=2e-3)
    # only negative terms: a message
    _, nothing, status = search(client, "- kar", k=3)
    assert nothing == [] and "artı terim" in status


def test_search_similar_through_the_api(served, searcher):
    _, client = served
    _, results, _ = search(client, "köpek", k=3)
    row = results[1]["row"]
    gallery, similar, status = client.predict(row=row, k=5, api_name="/search_similar")
    assert len(gallery) == 5 and "5 sonuç" in status
    assert row not in [r["row"] for r in similar]
    want_rows, want_scores = hit_rows_and_scores(searcher.search_similar(row, 5))
    assert [r["row"] for r in similar] == want_rows
    assert [r["score"] for r in similar] == pytest.approx(want_scores, abs=1e-6)
    # bad rows come back as a Turkish status, not an error
    last = f"0 ile {len(searcher) - 1} arasında"
    for bad, words in ((len(searcher), last), (-1, "(verilen: -1)"), (1e308, "(verilen: 1e+308)"),
                       (None, "görsel seçin")):  # fmt: skip
        gallery, answer, status = client.predict(row=bad, k=5, api_name="/search_similar")
        assert gallery == [] and answer == [] and words in status, (bad, status)
    # With the result's image id: the same answer while the row holds that photo; after an
    # update that put another photo in the row, a Turkish refusal instead of its neighbours.
    image_id = results[1]["image_id"]
    assert image_id and image_id == searcher.search_text("köpek", k=3)[1].image_id
    _, same, _ = client.predict(row=row, k=5, image_id=image_id, api_name="/search_similar")
    assert same == similar
    moved = results[0]["image_id"]  # another photo's id: as if that photo were in the row now
    gallery, answer, status = client.predict(
        row=row, k=5, image_id=moved, api_name="/search_similar"
    )
    assert gallery == [] and answer == [] and "görsel değişti" in status, status
    # A row past the end with an image id: the dataset shrank since, the same answer.
    gone = len(searcher) + 5
    *_, status = client.predict(row=gone, k=5, image_id=image_id, api_name="/search_similar")
    assert "görsel değişti" in status, status


def test_search_similar_says_which_photo_it_started_from(app, searcher):
    # The page shows only the new results: the status line names the photo they are like, by
    # the row its button showed ("Benzerlerini bul (#row)") and its caption, on one line.
    _, _, search_similar, _ = app.make_handlers(searcher)
    row = next(r for r in range(len(searcher)) if 0 < len(searcher.rows[r]["captions"][0]) < 60)
    caption = searcher.rows[row]["captions"][0]
    image_id = searcher.rows[row]["image_id"]
    for args in ((row, 5), (row, 5, image_id)):
        _, results, status = search_similar(*args)
        assert len(results) == 5
        assert status.startswith(f"#{row} “{caption}” görselinin benzerleri · 5 sonuç · "), status
    # the text search's line is as it was
    search, *_ = app.make_handlers(searcher)
    assert re.fullmatch(r"5 sonuç · \d+ ms", search("köpek", 5)[2])
    # A caption too long for one line is cut at a word, and a line break is a space.
    long = "Kırmızı montlu bir kadın\nkarlı bir meydanda " + "çok " * 30 + "yürüyor."
    named = app.photo_name(7, [long, "ikinci açıklama"])
    assert named.startswith("#7 “Kırmızı montlu bir kadın karlı bir meydanda çok ")
    assert named.endswith(" çok…”") and len(named) <= len("#7 “”") + app.STATUS_CAPTION_CHARS
    assert app.photo_name(7, []) == "#7"  # a row without captions
    whole = "x" * 74 + " abcd"  # its last word ends where the cut falls: it is kept
    assert app.photo_name(7, [whole + " sonra gelen"]) == f"#7 “{whole}…”"
    # The status is Markdown: a caption's marks are escaped, so they show as written.
    assert app.photo_name(7, ["*iki* [kedi](http://x) <b>"]) == (
        r"#7 “\*iki\* \[kedi\](http://x) \<b\>”"
    )


def test_search_similar_handler_refuses_a_fraction(app, searcher):
    # through the API the Number input rounds (precision 0); the handler checks on its own too
    _, _, search_similar, _ = app.make_handlers(searcher)
    gallery, answer, status = search_similar(1.5, 5)
    assert gallery == [] and answer == [] and "tam sayı" in status


def test_an_unexpected_error_is_logged_not_shown(app, caplog):
    # The exception's text may name server paths: the visitor gets a Turkish sentence, the
    # server log the traceback.
    class Broken:  # a Searcher of 10 rows whose search fails
        def __len__(self):
            return 10

        def search_similar(self, row, k, image_id=None):
            raise RuntimeError("/srv/x")

    _, _, search_similar, _ = app.make_handlers(Broken())
    with caplog.at_level(logging.ERROR, logger="imagesearchtr.space"):
        gallery, answer, status = search_similar(1, 5)
    assert gallery == [] and answer == []
    assert "Beklenmeyen" in status and "/srv/x" not in status
    logged = [r for r in caplog.records if r.name == "imagesearchtr.space"]
    assert any(
        "search failed for row 1" in r.getMessage()
        and r.exc_info
        and "/srv/x" in str(r.exc_info[1])
        for r in logged
    )


def test_every_event_that_runs_a_query_shares_one_concurrency_limit(app):
    # The example buttons' search too: the model and the image fetches are shared by all.
    demo = app.build_app(app.LoadError("none"))
    names = ("search", "search_image", "search_similar", "embed", "from_link")
    queries = [fn for fn in demo.fns.values() if fn.name in names]
    assert len([fn for fn in queries if fn.name == "search"]) == 2  # the API's and the examples'
    assert {fn.concurrency_id for fn in queries} == {"queries"}


def test_a_query_image_that_is_only_a_url_is_refused_not_dropped(app):
    # gradio fetches a URL sent with handle_file; one it did not fetch reaches the component
    # without a file, which a search would have taken for "no image".
    box = app.QueryImage(type="filepath")
    payload = box.data_model(url="http://127.0.0.1:9/photo.jpg", path=None)
    with pytest.raises(app.gr.Error, match="yalnız bir adres geldi"):
        box.preprocess(payload)
    assert box.preprocess(None) is None


def test_a_query_image_in_base64_that_is_invalid_or_empty_says_so(app, tmp_path):
    # gradio's decoder drops what is not base64: "@@@@" or "====" was an empty file, and the
    # answer "dosya boş" hid the sender's mistake.
    import base64

    from PIL import Image

    box = app.QueryImage(type="filepath")
    box.GRADIO_CACHE = str(tmp_path)
    for url in (
        "data:",
        "data:image/png;base64,",
        "data:,",
        "data:image/png;base64,====",
        "data:image/png;base64,@@@@",
        "data:image/png;base64,abc",
        "data:image/png;base64,bir metin, base64 değil",
    ):
        with pytest.raises(app.gr.Error, match="base64 verisi geçersiz ya da boş; görseli ") as err:
            box.preprocess(box.data_model(url=url, path=None))
        assert "data:image/jpeg;base64," in str(err.value)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format="PNG")
    text = base64.encodebytes(buffer.getvalue()).decode()  # in lines of 76, as MIME writes it
    for url in (f"data:image/png;base64,{text}", f"data:;base64,{text}"):
        path = box.preprocess(box.data_model(url=url, path=None))
        assert Path(path).read_bytes() == buffer.getvalue() and path in box.temp_files


def in_mcp_session(url: str, work):
    """``work(session)``'s answer, a coroutine run in an MCP client session with the app at
    ``url`` (gradio's MCP endpoint), as an MCP client calls the Space's tools."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def call():
        async with (
            streamable_http_client(url + "gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await work(session)

    return asyncio.run(asyncio.wait_for(call(), timeout=120))


def test_an_mcp_query_image_in_base64_of_no_bytes_names_the_fix(served):
    # Through MCP, gradio decodes the base64 before the app sees it: no bytes reach the app
    # as an empty file, whose answer says what to send.
    url, _ = served
    answer = in_mcp_session(
        url,
        lambda session: session.call_tool(
            "search_image", {"image": "data:image/png;base64,", "k": 3}
        ),
    )
    text = "\n".join(c.text for c in answer.content if c.type == "text")
    assert "dosya boş (0 bayt; base64 ile gönderildiyse veri boş ya da geçersiz: görseli" in text


def test_a_query_image_url_on_a_local_or_private_address_is_refused_in_turkish(served):
    # gradio refuses to fetch such a URL (SSRF protection) before the app's preprocess runs,
    # with a ValueError that callers got as a bare error; an MCP client, as "The upstream
    # Gradio app has raised an exception".
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    url, client = served
    said = "yerel ya da özel ağ adresleri (localhost, 127.0.0.1"
    for address in ("http://127.0.0.1:9/photo.jpg", "http://localhost:9/photo.jpg", url):
        with pytest.raises(AppError, match=re.escape(said)):
            client.predict(image=handle_file(address), k=3, api_name="/search_image")

    image = "http://169.254.169.254/latest/meta-data/"  # a cloud's metadata service
    answer = in_mcp_session(
        url, lambda session: session.call_tool("search_image", {"image": image, "k": 3})
    )
    assert answer.isError and said in "\n".join(c.text for c in answer.content if c.type == "text")


def test_share_links_round_trip(app):
    url = app.share_url("http://127.0.0.1:7860/", "köpek + kar", 7, True, 0.25)
    query = url.split("?", 1)[1]
    params = dict(urllib.parse.parse_qsl(query))
    assert url.startswith("http://127.0.0.1:7860/?")
    assert app.settings_from_link(params) == {
        "query": "köpek + kar",
        "k": 7,
        "deep": True,
        "alpha": 0.25,
    }
    plain_url = app.share_url("http://x/", "köpek", 3, False, 0.6)
    assert plain_url == "http://x/?q=k%C3%B6pek&k=3"
    plain = dict(urllib.parse.parse_qsl(plain_url.split("?", 1)[1]))
    assert app.settings_from_link(plain) == {"query": "köpek", "k": 3, "deep": False, "alpha": 0.6}
    assert app.settings_from_link({}) is None and app.settings_from_link({"q": "  "}) is None
    # unparsable values go to the search as given, which names them in its status
    assert app.settings_from_link({"q": "a", "k": "çok"})["k"] == "çok"
    assert app.public_base_url(None, {"SPACE_HOST": "user-space.hf.space"}) == (
        "https://user-space.hf.space/"
    )
    assert app.public_base_url(None, {}) == ""


def test_a_link_runs_its_search_on_load(app, searcher):
    """The page's load event with ?q=...&k=...&deep=...&alpha=... (the browser test opens one)."""
    import gradio as gr
    from starlette.requests import Request

    def request(query: str):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": query.encode(),
            "headers": [(b"host", b"127.0.0.1:7860")],
            "scheme": "http",
            "server": ("127.0.0.1", 7860),
        }
        return gr.Request(request=Request(scope))

    demo = app.build_app(searcher)
    load = next(fn for fn in demo.fns.values() if fn.name == "from_link")
    params = urllib.parse.urlencode({"q": "köpek + kar", "k": 4, "deep": 1, "alpha": 0.3})
    query, k, deep, alpha, gallery, results, status, share = load.fn(request(params))
    assert (query, k, deep) == ("köpek + kar", 4, True)
    assert alpha["value"] == 0.3 and alpha["visible"] is True
    assert len(gallery) == 4 and "4 sonuç" in status
    assert share["value"] == f"http://127.0.0.1:7860/?{params}"
    # a bad k is not set on the slider; the status says what is wrong
    _, k, _, _, gallery, _, status, _ = load.fn(request("q=k%C3%B6pek&k=99"))
    assert k == {"__type__": "update"} and gallery == [] and "1 ile 30" in status
    # no q: the page stays as it is
    assert all(out == {"__type__": "update"} for out in load.fn(request("")))
    # The Deep Search box shows the balance slider, and only while it is ticked.
    (toggle,) = [
        fn for fn in demo.fns.values()
        if [type(b).__name__ for b in fn.inputs] == ["Checkbox"]
        and [type(b).__name__ for b in fn.outputs] == ["NumberSlider"]
    ]  # fmt: skip
    assert toggle.fn(True)["visible"] is True and toggle.fn(False)["visible"] is False


# ---------------------------------------------------------------------------------------------
# Result images: written once, never rewritten while served (issue 12 item 0)
# ---------------------------------------------------------------------------------------------


def _result_file(url: str, item: dict) -> bytes:
    image = item["image"]
    link = image["url"] if isinstance(image, dict) else image
    with urllib.request.urlopen(link if link.startswith("http") else url + link, timeout=60) as r:
        data = r.read()
        assert len(data) == int(r.headers["Content-Length"])
    return data


def test_result_images_are_written_once_in_the_apps_folder(served, app):
    from gradio.utils import get_upload_folder

    url, client = served
    folder = Path(get_upload_folder()) / app.RESULTS_FOLDER
    gallery, _, _ = search(client, "köpek", k=4)
    paths = [Path(item["image"]["path"]) for item in gallery]
    assert all(p.parent == folder and p.suffix == ".jpg" for p in paths), paths
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths}
    again, _, _ = search(client, "köpek", k=4)
    assert [Path(item["image"]["path"]) for item in again] == paths
    # the same images again: not rewritten (gradio's own PIL path rewrote them every time)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths} == stamps
    assert not list(folder.glob(".partial-*"))
    PIL = pytest.importorskip("PIL.Image")
    import io

    for item in again:
        PIL.open(io.BytesIO(_result_file(url, item))).load()


def test_the_result_folder_keeps_the_most_recently_shown_within_its_bound(app, tmp_path):
    from PIL import Image

    def shown_hours_ago(path: str, hours: float) -> None:
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns - int(hours * 3600e9), stat.st_mtime_ns))

    images = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(6)]
    probe = app.ResultFolder(tmp_path / "probe", max_bytes=10**9, keep_s=3600)
    size = max(os.path.getsize(probe.path_for(image)) for image in images)
    folder = app.ResultFolder(tmp_path / "results", max_bytes=int(5.5 * size), keep_s=3600)
    paths = [folder.path_for(image) for image in images[:4]]
    for path in paths:
        shown_hours_ago(path, 2)
    inode = os.stat(paths[1]).st_ino
    assert folder.path_for(images[1]) == paths[1]  # shown again: kept, not rewritten
    assert os.stat(paths[1]).st_ino == inode
    paths += [folder.path_for(images[4]), folder.path_for(images[5])]  # 6 files: over 5.5
    kept = {p for p in paths if os.path.exists(p)}
    assert {paths[1], paths[4], paths[5]} <= kept and len(kept) == 4  # down to 80%: 4.4 files
    # Files shown within keep_s stay, over the bound: a page may still fetch them. (The window
    # outlasts the three writes when the process pauses meanwhile: 0.5 s may not, loaded.)
    recent = app.ResultFolder(tmp_path / "recent", max_bytes=1, keep_s=2)
    first = [recent.path_for(image) for image in images[:3]]
    assert all(os.path.exists(p) for p in first)
    time.sleep(2.1)  # out of the window now: the next write prunes them
    last = recent.path_for(images[3])
    assert os.path.exists(last) and not any(os.path.exists(p) for p in first)


def test_overlapping_results_under_concurrency_have_no_errors(served):
    """8 clients x 4 requests whose results are the same images; every file arrives whole."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    url, _ = served
    clients = [client_for(url) for _ in range(8)]

    def work(client):
        errors, checked = [], 0
        for n in range(4):
            try:
                gallery, results, status = search(client, ("köpek", "kar")[n % 2], k=10)
                assert len(gallery) == 10, status
                for item in gallery:
                    Image.open(io.BytesIO(_result_file(url, item))).load()
                    checked += 1
            except Exception as err:  # each failure is counted, not raised in a thread
                errors.append(f"{type(err).__name__}: {err}")
        return errors, checked

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(work, clients))
    errors = [e for found, _ in outcomes for e in found]
    assert errors == []
    assert sum(checked for _, checked in outcomes) == 8 * 4 * 10


# ---------------------------------------------------------------------------------------------
# MCP: the search as tools an assistant can call
# ---------------------------------------------------------------------------------------------


def test_mcp_schema_lists_the_search_tools(served):
    url, _ = served
    with urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=60) as answer:
        tools = {tool["name"]: tool for tool in json.loads(answer.read())}
    assert {"search", "search_image", "search_similar", "embed"} <= set(tools)
    search_tool = tools["search"]
    assert "Turkish" in search_tool["description"]
    assert "köpek + kar - şehir" in search_tool["description"]
    assert {"query", "k"} <= set(search_tool["inputSchema"]["properties"])
    assert "row" in tools["search_similar"]["inputSchema"]["properties"]
    # gradio joins the lines under "Returns:" with ", ": one line an output reads whole.
    for name in ("search", "search_image", "search_similar"):
        description = tools[name]["description"]
        assert 'labelled "score · caption", JSON results, best first' in description, name


def test_mcp_tool_call_answers(served):
    url, _ = served

    async def work(session):
        listed = await session.list_tools()
        answer = await session.call_tool("search", {"query": "karda köpekler", "k": 3})
        return [t.name for t in listed.tools], answer

    names, answer = in_mcp_session(url, work)
    assert "search" in names and "search_similar" in names
    assert not answer.isError
    text = "\n".join(c.text for c in answer.content if c.type == "text")
    assert text.count("/gradio_api/file=") >= 3  # the images' URLs
    assert "3 sonuç" in text and '"score"' in text.replace("'", '"')


# ---------------------------------------------------------------------------------------------
# Broken datasets: the app starts, says why, logs it once
# ---------------------------------------------------------------------------------------------


def _break(kind: str, folder: Path) -> None:
    manifest = folder / "index" / "manifest.json"
    if kind == "missing-index":
        (folder / "index" / "image_emb.faiss").unlink()
    elif kind == "corrupt-index":
        (folder / "index" / "caption_emb.faiss").write_bytes(b"not a faiss index" * 10)
    elif kind == "manifest-rows":
        data = json.loads(manifest.read_text())
        data["num_rows"] += 1
        manifest.write_text(json.dumps(data))
    elif kind == "manifest-model":
        data = json.loads(manifest.read_text())
        data["model_fingerprint"] = "sha256:" + "0" * 64
        manifest.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("unset", "DATASET_REPO ayarlanmamış"),
        ("missing-index", "index/image_emb.faiss is missing"),
        ("corrupt-index", "index/caption_emb.faiss is not the index the manifest"),
        ("manifest-rows", "rows and indices come from different builds"),
        ("manifest-model", "Model ile arama dizini uyuşmuyor"),
    ],
)
def test_a_broken_dataset_shows_its_message(app, published, tmp_path, caplog, kind, expected):
    env = {}
    if kind != "unset":
        broken = tmp_path / "dataset"
        shutil.copytree(published, broken)  # real copies: the shared folder stays intact
        _break(kind, broken)
        env = {"DATASET_REPO": str(broken)}
    with caplog.at_level(logging.ERROR, logger="imagesearchtr.space"):
        loaded = app.load_searcher(env)
    assert isinstance(loaded, app.LoadError)
    assert expected in loaded.message
    errors = [r for r in caplog.records if r.name == "imagesearchtr.space"]
    assert len(errors) == 1 and expected in errors[0].getMessage()

    demo = app.build_app(loaded)
    url = launch(app, demo)
    try:
        page = urllib.request.urlopen(url, timeout=30).read().decode("utf-8")
        assert "Arama kullanılamıyor" in page and expected in page  # the page's config
        gallery, results, status = search(client_for(url), "köpek")
        assert gallery == [] and results == [] and expected in status
    finally:
        demo.close()


def _failure(kind: str) -> BaseException:
    """An error as the Searcher's load meets it: the Hub's, the network's, or its own."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from imagesearchtr import SearchSetupError

    if kind.isdigit():
        response = httpx.Response(int(kind), request=httpx.Request("GET", "https://hub/x"))
        return HfHubHTTPError(f"{kind} from the Hub", response=response)
    if kind == "dropped":
        return httpx.ConnectError("connection reset by peer")
    if kind == "503-from-none":  # as manifest.py words a failing Hub (raise ... from None)
        try:
            try:
                raise _failure("503")
            except HfHubHTTPError:
                raise SearchSetupError("its index could not be fetched from the Hub") from None
        except SearchSetupError as err:
            return err
    if kind == "loop":  # a chain that comes back to itself: the walk ends
        first, second = ValueError("a"), ValueError("b")
        first.__context__, second.__context__ = second, first
        return first
    return SearchSetupError("index/image_emb.faiss is missing")


@pytest.mark.parametrize(
    ("kind", "transient"),
    [
        ("dropped", True),
        ("500", True),
        ("503", True),
        ("429", True),
        ("408", True),  # the Hub timed the request out
        ("503-from-none", True),
        ("404", False),
        ("401", False),
        ("loop", False),
        ("setup", False),
    ],
)
def test_a_failure_of_the_hub_for_a_moment_is_told_from_one_that_stays(app, kind, transient):
    told = []  # (in a thread: a walk of the chain that never ends fails the test, not hangs it)
    walk = threading.Thread(target=lambda: told.append(app.is_transient(_failure(kind))))
    walk.daemon = True
    walk.start()
    walk.join(timeout=10)
    assert told == [transient]


@pytest.mark.parametrize(
    ("failures", "calls", "waits", "said"),
    [
        (["dropped", "503", "429"], 4, [5.0, 10.0, 20.0], None),  # loaded at the 4th try
        (["dropped"] * 9, 4, [5.0, 10.0, 20.0], "Hub'a şu an ulaşılamıyor"),  # never: said
        (["setup", "dropped"], 1, [], "Veri kümesi ya da arama dizini kullanılamıyor"),
        ([], 1, [], None),  # a Hub that answers: loaded once
    ],
)
def test_the_space_tries_a_failing_hub_again_at_start_then_says_why(
    failures, calls, waits, said, monkeypatch
):
    import types

    app = load_app("imagesearchtr_space_app_retries")  # its clock is this test's
    tried, slept = [], []

    class Loaded:
        location, manifest = "someone/photos", types.SimpleNamespace(model_id="fake/model")

        def __len__(self):
            return 10

    class Hub:  # Searcher.from_repo, with the Hub failing as `failures` say, one per try
        @staticmethod
        def from_repo(repo, revision, **kwargs):
            tried.append(repo)
            if len(tried) <= len(failures):
                raise _failure(failures[len(tried) - 1])
            return Loaded()

    monkeypatch.setattr(app, "Searcher", Hub)
    monkeypatch.setattr(app, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                           sleep=slept.append))  # fmt: skip
    loaded = app.load_searcher({"DATASET_REPO": "someone/photos"})
    assert len(tried) == calls and slept == waits
    if said is None:
        assert isinstance(loaded, Loaded)
    else:
        assert isinstance(loaded, app.LoadError) and said in loaded.message


@pytest.mark.parametrize(("failure", "detail"), [("503", "HTTP 503"), ("refused", "ConnectError")])
def test_a_hub_outage_is_told_in_turkish_first_with_a_one_line_detail(
    failure, detail, monkeypatch, caplog
):
    # huggingface_hub's error for a failing Hub is English and hundreds of characters long (a
    # URL, a request id): a visitor reads the Turkish note first and a short detail; the log
    # keeps the whole error.
    import types

    import httpx
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    app = load_app("imagesearchtr_space_app_outage")
    url = "https://huggingface.co/api/datasets/someone/photos/revision/main"
    said = f"Server error '503 Service Unavailable' for url '{url}' (Request ID: Root=1-{'7' * 24})"

    def snapshot_download(*args, **kwargs):  # the start-up's first request to the Hub
        if failure == "refused":
            raise httpx.ConnectError(f"[Errno 111] Connection refused: {url}")
        raise HfHubHTTPError(said, response=httpx.Response(503, request=httpx.Request("GET", url)))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(app, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                           sleep=lambda s: None))  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="imagesearchtr.space"):
        loaded = app.load_searcher({"DATASET_REPO": "someone/photos"})
    assert isinstance(loaded, app.LoadError) and loaded.transient
    assert loaded.message == (
        "Hub'a şu an ulaşılamıyor; uygulama 60 saniyede bir yeniden deniyor "
        f"(someone/photos: {detail})."
    )
    banner = app._banner(loaded)["value"]
    assert banner.startswith("⚠️ **Arama kullanılamıyor.** Hub'a şu an ulaşılamıyor")
    assert url not in banner
    assert url in caplog.text and ("Service Unavailable" in caplog.text or failure == "refused")


def test_a_hub_that_fails_past_the_start_up_tries_is_tried_again_until_it_answers(
    app, searcher, monkeypatch
):
    """An outage longer than load_searcher's tries: the app keeps loading in the background,
    and the handlers it serves answer once the dataset loads, without a restart."""
    import types

    failing = iter([_failure("503"), _failure("dropped")] * 3)

    class Hub:  # three rounds of load_searcher fail at every try, the fourth loads
        @staticmethod
        def from_repo(repo, revision, **kwargs):
            failure = next(failing, None)
            if failure is not None:
                raise failure
            return searcher

    monkeypatch.setattr(app, "Searcher", Hub)
    monkeypatch.setattr(app, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                           sleep=lambda s: None))  # fmt: skip
    load = functools.partial(app.load_searcher, {"DATASET_REPO": "someone/photos"})
    monkeypatch.setattr(app, "LOAD_ATTEMPTS", 2)  # a round: 2 tries
    slot = app.SearcherSlot(load())
    assert isinstance(slot.value, app.LoadError) and slot.value.transient
    assert "yeniden deniyor" in slot.value.message  # the page says it is tried again
    search, _, search_similar, _ = app.make_handlers(slot)
    *_, status = search_similar(0, 3)
    assert status.startswith("⚠️ Arama kullanılamıyor")
    slot.keep_loading(load).join(timeout=60)
    assert slot.value is searcher
    monkeypatch.setattr(app, "time", time)  # the handlers time their answers
    gallery, results, status = search_similar(0, 3)
    assert len(results) == 3 and "sonuç" in status, status
    # A failure that stays (a missing index, another model) is not tried again.
    stays = app.SearcherSlot(app.LoadError("index/image_emb.faiss is missing"))
    assert stays.keep_loading(load) is None


# ---------------------------------------------------------------------------------------------
# The user's path: publish, publish-space, download the Space, run it
# ---------------------------------------------------------------------------------------------


# The Space as the Hub holds it, built and run in a bare environment: tests/test_spaces_build.py.


def test_local_hub_space_variables_follow_the_hub_api(local_hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    space_id = f"testuser/vars-{uuid.uuid4().hex[:8]}"
    api.create_repo(space_id, repo_type="space", space_sdk="gradio")
    assert api.get_space_variables(space_id) == {}
    answer = api.add_space_variable(space_id, "DATASET_REPO", "a/b", description="the data")
    assert answer["DATASET_REPO"].value == "a/b"
    assert answer["DATASET_REPO"].description == "the data"
    assert answer["DATASET_REPO"].updated_at is not None
    api.add_space_variable(space_id, "DATASET_REPO", "c/d")  # an update, not a second entry
    api.add_space_variable(space_id, "DATASET_REVISION", "0" * 40)
    assert {k: v.value for k, v in api.get_space_variables(space_id).items()} == {
        "DATASET_REPO": "c/d",
        "DATASET_REVISION": "0" * 40,
    }
    assert set(api.delete_space_variable(space_id, "DATASET_REVISION")) == {"DATASET_REPO"}
    with pytest.raises(HfHubHTTPError) as bad_key:
        api.add_space_variable(space_id, "NOT A NAME", "x")
    assert bad_key.value.response.status_code == 400
    anonymous = HfApi(endpoint=local_hub.endpoint, token=False)
    with pytest.raises(HfHubHTTPError) as refused:
        anonymous.get_space_variables(space_id)
    assert refused.value.response.status_code in (401, 403)


def test_publish_space_to_a_folder_prints_the_command(published, tmp_path, capsys):
    from pipeline.cli import main

    target = tmp_path / "space"  # as an older run left it, cut short before its app.py
    (target / "imagesearchtr").mkdir(parents=True)
    (target / "imagesearchtr" / "stale.py").write_text("raise ImportError\n")
    # in-process (the Hub test above runs the CLI as a subprocess): no second torch import
    assert main(["publish-space", "--to", str(target), "--dataset-repo", str(published)]) == 0
    out = capsys.readouterr().out
    assert f"wrote the Space files to {target}" in out
    assert f"run it: DATASET_REPO={published} python {target / 'app.py'}" in out
    assert (target / "app.py").read_bytes() == (SPACE_DIR / "app.py").read_bytes()
    assert not list(target.rglob("__pycache__"))
    assert (target / "imagesearchtr" / "searcher.py").is_file()
    assert not (target / "imagesearchtr" / "stale.py").exists()
    # Folders it did not write are refused untouched: the source it copies from (or a folder
    # holding it: it deleted space/imagesearchtr/ there), and someone else's files.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    before = sorted(p.name for p in SPACE_DIR.rglob("*.py"))
    for folder, said in ((SPACE_DIR, "the Space's source folder"), (REPO_ROOT, "holds, or lies"),
                         (mine, "not a Space this command wrote")):  # fmt: skip
        assert main(["publish-space", "--to", str(folder), "--dataset-repo", str(published)]) == 2
        assert said in capsys.readouterr().err
    assert sorted(p.name for p in SPACE_DIR.rglob("*.py")) == before
    assert [p.name for p in mine.iterdir()] == ["README.md"]

    # A dataset published before image ranges were recorded gets no Space that cannot start.
    old = tmp_path / "old-dataset"
    shutil.copytree(published, old)
    manifest = json.loads((old / "index/manifest.json").read_text())
    del manifest["image_ranges_sha256"]
    (old / "index/manifest.json").write_text(json.dumps(manifest))
    assert main(["publish-space", "--to", str(tmp_path / "old"), "--dataset-repo", str(old)]) == 2
    assert "published before image byte ranges" in capsys.readouterr().err
    assert not (tmp_path / "old").exists()


# ---------------------------------------------------------------------------------------------
# requirements.txt stays true
# ---------------------------------------------------------------------------------------------


def test_requirements_pin_the_installed_versions():
    from packaging.requirements import Requirement
    from packaging.version import Version

    lines = (SPACE_DIR / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line.strip() and not line.startswith(("#", "-"))]
    names = set()
    for line in pins:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        installed = Version(importlib.metadata.version(requirement.name))
        # torch: the CPU wheel is 2.13.0+cpu; the pin leaves the local label out (see the file)
        assert Version(specifier.version) == Version(installed.public), (line, str(installed))
        names.add(requirement.name.lower().replace("_", "-"))
    wanted = "torch transformers tokenizers safetensors datasets huggingface-hub faiss-cpu numpy"
    assert names == {*wanted.split(), "pillow", "tqdm", "gradio", "mcp"}
    # the MCP server's extra, at the gradio version the card's sdk_version names
    assert f"gradio[mcp]=={importlib.metadata.version('gradio')}" in pins
    assert not any(line.startswith("-") for line in lines)  # index lines depend on the hardware


def test_published_requirements_fit_the_hardware():
    from pipeline.space import requirements_text

    base = (SPACE_DIR / "requirements.txt").read_text()
    pins = [x for x in base.splitlines() if x and not x.startswith("#")]
    for hardware in ("cpu-basic", "cpu-upgrade", "t4-small", "l4x1", "zero-a10g"):
        lines = requirements_text(hardware).splitlines()
        assert all(pin in lines for pin in pins), hardware
        cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
        assert cpu_index == hardware.startswith("cpu-"), hardware
        assert any(x.startswith("spaces==") for x in lines) == (hardware == "zero-a10g")
    with pytest.raises(ValueError, match="cpu-basic"):
        requirements_text("tpu-v9")


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless browser test needs Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver)"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1100",
    ):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(browser, seconds: float, **kwargs):
    """A WebDriverWait that tries again when gradio re-renders an element between the
    moment a check finds it and the moment it reads it (StaleElementReferenceException)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        browser, seconds, ignored_exceptions=(StaleElementReferenceException,), **kwargs
    )


def _search_for(browser, url: str, query: str) -> None:
    """Open the page and submit ``query`` from the text box, as a visitor does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    box = _wait(browser, 60).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "#query textarea, #query input")
    )
    box.send_keys(query)
    box.send_keys(Keys.ENTER)


def test_browser_search_shows_images(served):
    from selenium.webdriver.common.by import By

    url, _ = served
    with _browser() as browser:
        _search_for(browser, url, "köpek")

        def images(b):
            found = b.find_elements(By.CSS_SELECTOR, "#results img")
            return [i for i in found if i.get_attribute("src")] or False

        shown = _wait(browser, 60).until(images)
        assert len(shown) >= 1
        assert "sonuç" in browser.find_element(By.ID, "status").text
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "app-search.png"))


def test_browser_on_a_phone_the_box_and_the_captions_are_readable_and_focus_is_seen(served):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = served
    with _browser() as browser:
        # A phone's screen exactly (a window's size would include the browser's own bars)
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
        )
        _search_for(browser, url, "köpek")
        _wait(browser, 60).until(lambda b: len(_shown_files(b)) >= 10)
        box, button = _wait(browser, 30).until(
            lambda b: [b.find_element(By.ID, name).rect for name in ("query", "search-button")]
        )
        assert box["width"] >= 280, box  # not squeezed by "Ara": the button goes under it
        assert button["y"] >= box["y"] + box["height"], (box, button)
        # Each result's label: a long caption on three lines, not one cut after the score;
        # still most of the photo in view.
        labels = browser.execute_script(
            "return Array.from(document.querySelectorAll('#results .caption-label'), e => {"
            " const r = document.createRange(); r.selectNodeContents(e);"
            " const tile = e.closest('.thumbnail-item').getBoundingClientRect().height;"
            " const lines = new Set(Array.from(r.getClientRects(), q => Math.round(q.top))).size;"
            " return [lines, e.getBoundingClientRect().height / tile]; })"
        )
        assert len(labels) >= 10 and max(lines for lines, _ in labels) >= 3, labels
        assert all(share < 0.5 for _, share in labels), labels
        # A keyboard user tabbing from the tab "Metinle ara" into the search box sees it.
        _wait(browser, 30).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "[role=tab]").click() or 1
        )
        for _ in range(5):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            if browser.execute_script("return !!document.activeElement.closest('#query')"):
                break
        outline = browser.execute_script(
            "const s = getComputedStyle(document.activeElement);"
            "return [document.activeElement.closest('#query') !== null, s.outlineStyle,"
            " parseFloat(s.outlineWidth)]"
        )
        assert outline[0] and outline[1] != "none" and outline[2] >= 2, outline


# The focused control, as a keyboard user sees it: its outline (transitions finished first, so
# a button's ring is read at its end, not half-way) and the boxes around it that clip the ring
# (overflow other than visible: one side of four showed). One script, no element kept: gradio
# re-renders elements between reads.
_FOCUSED = """
const e = document.activeElement;
for (const a of e.getAnimations()) a.finish();
const s = getComputedStyle(e), r = e.getBoundingClientRect();
let where = '';
for (let n = e; n && !where; n = n.parentElement) where = n.id;
const name = (e.getAttribute('aria-label') || e.textContent || e.type || '').trim().slice(0, 40);
const ring = s.outlineStyle === 'none' ? 0
    : Math.max(0, parseFloat(s.outlineWidth) + parseFloat(s.outlineOffset));
const clippedBy = [];
for (let n = e.parentElement; n; n = n.parentElement) {
  const c = getComputedStyle(n), q = n.getBoundingClientRect();
  if (c.overflowX === 'visible' && c.overflowY === 'visible') continue;
  if (r.left - ring < q.left - 0.5 || r.right + ring > q.right + 0.5
      || r.top - ring < q.top - 0.5 || r.bottom + ring > q.bottom + 0.5)
    clippedBy.push(n.tagName.toLowerCase() + '.' + n.className.toString().split(' ')[0]);
}
return {key: `${where} ${e.tagName.toLowerCase()} ${name}`, body: e === document.body,
        style: s.outlineStyle, width: parseFloat(s.outlineWidth), color: s.outlineColor,
        clippedBy: clippedBy};
"""


def _tab_through(browser, start: str) -> dict[str, dict]:
    """Click the tab named ``start``, then press Tab until focus comes round again: each control
    reached, by its key (nearest id, tag, label), with how its focus shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    # One script, tried until it holds: select the tab, wait for its panel (gradio draws a tab's
    # panel on its first click; a Tab pressed before skips it), then start from the tab.
    _wait(browser, 30).until(
        lambda b: b.execute_script(
            "const tab = Array.from(document.querySelectorAll('[role=tab]'))"
            "  .find(t => t.textContent.trim() === arguments[0]);"
            "if (tab.getAttribute('aria-selected') !== 'true') { tab.click(); return false; }"
            "const shown = Array.from(document.querySelectorAll('[role=tabpanel]'))"
            "  .filter(p => getComputedStyle(p).display !== 'none');"
            "if (shown.length !== 1 || !shown[0].querySelector('button')) return false;"
            "tab.focus(); return document.activeElement === tab;",
            start,
        )
    )
    reached: dict[str, dict] = {}
    for _ in range(80):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.execute_script(_FOCUSED)
        if focused["key"] in reached:
            return reached
        if not focused["body"]:  # between the page's last control and its first
            reached[focused["key"]] = focused
    raise AssertionError(f"focus did not come round in 80 presses: {list(reached)}")


def test_browser_every_control_reached_by_tab_shows_the_search_box_focus_ring(served):
    """Tabbing through the page (desktop, then a phone): each control reached shows the search
    box's ring, an outline of 2 px or more in its colour, not cut off by a box around it."""
    url, _ = served
    with _browser() as browser:
        _search_for(browser, url, "köpek")
        _wait(browser, 60).until(lambda b: len(_shown_files(b)) >= 10)
        for screen in ("desktop", "phone"):
            if screen == "phone":
                browser.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
                )
            reached = {
                **_tab_through(browser, "Görselle ara"),
                **_tab_through(browser, "Metinle ara"),
            }
            keys = " | ".join(reached)
            # the walk got everywhere: both tabs, the text tab's and the image tab's controls,
            # the result count, all ten results
            for part in (
                "button Metinle ara", "button Görselle ara", "query input", "search-button button",
                "button karda oynayan köpekler", "deep input", "query-image button",
                "button Benzerlerini bul", "k input number input", "range_id", "k button Reset",
                "results button Thumbnail 10 of 10",
            ):  # fmt: skip
                assert part in keys, (screen, part, keys)
            box = next(f for key, f in reached.items() if key.startswith("query input"))
            unseen = [
                f"{key}: {f['style']} {f['width']:g}px {f['color']}, cut by {f['clippedBy']}"
                for key, f in reached.items()
                if f["style"] != "solid" or f["width"] < 2 or f["color"] != box["color"]
                or f["clippedBy"]
            ]  # fmt: skip
            assert not unseen, (screen, f"the box: {box['color']}", *unseen)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "app-focus-phone.png"))


def test_browser_a_page_opened_after_a_late_load_shows_the_search_not_the_error(app, searcher):
    """A Space that loaded in the background after its start-up tries: a page opened then
    shows what is searched, without the red error frame the first pages had."""
    slot = app.SearcherSlot(app.LoadError("the Hub failed", transient=True))
    demo = app.build_app(slot)
    url = launch(app, demo)
    try:
        with _browser() as browser:

            def banner(b):  # (text, class) read at once: gradio may re-render it between reads
                found = b.execute_script(
                    "const e = document.querySelector('#source');"
                    "return e && [e.innerText.trim(), e.className];"
                )
                return found and found[0] and found

            browser.get(url)
            text, classes = _wait(browser, 60).until(banner)
            assert "Arama kullanılamıyor" in text
            assert "load-error" in classes
            slot.value = searcher  # as the background load sets it
            browser.get(url)
            text, classes = _wait(browser, 60).until(
                lambda b: (found := banner(b)) and "görsel" in found[0] and found
            )
            assert "load-error" not in classes
    finally:
        demo.close()


def test_preload_names_the_model_files_at_the_pinned_revision(local_hub, monkeypatch):
    """preload_from_hub: the files the encoder fetches (MultiEmbedTR: safetensors over the
    pickle; CLIP and SigLIP: their tokenizer and processor files too), pinned."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the local Hub has no Xet

    from imagesearchtr.manifest import Manifest
    from pipeline.space import preload_lines

    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)

    def repo_with(kind: str, files: tuple[str, ...], config: bytes = b"x") -> tuple[str, str]:
        repo = f"testuser/{kind}-{uuid.uuid4().hex[:8]}"
        api.create_repo(repo)
        operations = [
            CommitOperationAdd(
                path_in_repo=f, path_or_fileobj=config if f == "config.json" else b"x"
            )
            for f in files
        ]
        return repo, api.create_commit(repo, operations, commit_message=kind).oid

    model, oid = repo_with(
        "model",
        ("config.json", "model.safetensors", "pytorch_model.bin", "notes.md", "vocab.txt"),
        config=b'{"model_type": "multimodal_embedder"}',
    )
    manifest = Manifest(
        model_id=model,
        model_revision=oid,
        model_fingerprint="sha256:" + "0" * 64,
        dim=8,
        num_rows=1,
        data_hash="0" * 64,
        indices=(),
    )
    assert preload_lines(api, manifest) == (f"{model} config.json,model.safetensors {oid}",)
    # Components taken from the Hub: their config and tokenizer files (no weights) at their pins.
    text, pin = repo_with(
        "text", ("config.json", "tokenizer.json", "vocab.txt", "model.safetensors")
    )
    pinned = Manifest(**{**manifest.__dict__, "component_revisions": {text: pin}})
    assert preload_lines(api, pinned)[1:] == (f"{text} config.json,tokenizer.json,vocab.txt {pin}",)
    clip, clip_oid = repo_with(
        "clip",
        (
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tokenizer.json",
            "vocab.txt",
            "spiece.model",
            "notes.md",
        ),  # fmt: skip
        config=b'{"model_type": "clip"}',
    )
    clip_manifest = Manifest(**{**manifest.__dict__, "model_id": clip, "model_revision": clip_oid})
    assert preload_lines(api, clip_manifest) == (
        f"{clip} config.json,model.safetensors,spiece.model,tokenizer.json,vocab.txt {clip_oid}",
    )
    local = Manifest(**{**manifest.__dict__, "model_id": str(REPO_ROOT)})
    assert preload_lines(api, local) == ()  # a local model folder: nothing to preload
    # A component kept as a folder in the model's repo: the encoder fetches all of it.
    config = b'{"model_type": "multimodal_embedder", "text_model_name": "text_model", '
    config += b'"vision_model_name": "facebook/dinov2-base"}'
    files = ("pytorch_model.bin", "text_model/config.json", "text_model/vocab.txt")
    folders, oid = repo_with("folders", (*files, "vision_model/config.json"))
    api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=folders)
    oid = api.model_info(folders).sha
    in_repo = Manifest(**{**manifest.__dict__, "model_id": folders, "model_revision": oid})
    assert preload_lines(api, in_repo) == (
        f"{folders} config.json,pytorch_model.bin,text_model/config.json,text_model/vocab.txt "
        f"{oid}",
    )


def _shown_files(browser) -> set[str]:
    # One script reads every source at once: gradio may replace the gallery's elements
    # between a find and a per-element read.
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results img'), i => i.src || '')"
    )
    return {src.rsplit("/", 1)[-1] for src in sources if src}


def test_browser_click_a_result_then_find_similar(served, app, searcher):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = served
    with _browser() as browser:
        _search_for(browser, url, "köpek")
        _wait(browser, 60).until(lambda b: len(_shown_files(b)) >= 10)
        first = _shown_files(browser)
        assert _wait(browser, 30).until(_share_link) == url + "?q=k%C3%B6pek&k=10"  # its link
        _wait(browser, 30).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#results img")[1].click() or True
        )
        label = _wait(browser, 30).until(
            lambda b: (lambda e: e[0].text if e and e[0].is_displayed() else False)(
                b.find_elements(By.CSS_SELECTOR, "#similar-button")
            )
        )
        row = int(label.split("#")[1].rstrip(")"))
        _wait(browser, 30).until(lambda b: b.find_element(By.ID, "similar-button").click() or True)
        expected = {
            Path(app.result_image_file(h.image)).name for h in searcher.search_similar(row, 10)
        }
        _wait(browser, 60).until(lambda b: _shown_files(b) == expected)
        assert expected != first
        status = _wait(browser, 30).until(lambda b: _text(b, "status"))
        assert "10 sonuç" in status
        assert status.startswith(f"#{row} “") and "görselinin benzerleri" in status, status
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "app-similar.png"))
        # Neither the text search's link nor the button of a result no longer shown stays.
        _wait(browser, 30).until(
            lambda b: not _displayed(b, "#share-link") and not _displayed(b, "#similar-button")
        )
        # A search that fails shows no link to itself.
        box = browser.find_element(By.CSS_SELECTOR, "#query textarea, #query input")
        box.clear()
        box.send_keys("köpek +", Keys.ENTER)
        _wait(browser, 60).until(lambda b: "⚠️" in b.find_element(By.ID, "status").text)
        time.sleep(1)  # the link, if any, comes in the event after the answer
        assert not _displayed(browser, "#share-link")


def _share_link(browser) -> str:
    """The share link's value (in a wait: gradio may replace the element meanwhile)."""
    from selenium.webdriver.common.by import By

    css = "#share-link textarea, #share-link input"
    return browser.find_element(By.CSS_SELECTOR, css).get_attribute("value")


def _text(browser, elem_id: str) -> str:
    """The text of the element ``elem_id`` (in a wait: gradio may replace it meanwhile)."""
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, elem_id).text


def _displayed(browser, css: str) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(10):  # an element gradio replaced while it was read: read the new one
        try:
            return any(e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, css))
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept being re-rendered for a second")


def test_browser_an_example_searches_with_the_attached_image(served, app, searcher, shared_data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = served
    example = app.EXAMPLES[0]
    text_only = {Path(app.result_image_file(h.image)).name for h in searcher.search_text(example)}
    with _browser() as browser:
        browser.get(url)
        box = _wait(browser, 60).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "#query textarea, #query input")
        )
        upload = browser.find_element(By.CSS_SELECTOR, "#query-image input[type=file]")
        upload.send_keys(str(shared_data / QUERY_PHOTO))
        _wait(browser, 30).until(lambda b: _displayed(b, "#query-image img"))
        box.send_keys(example, Keys.ENTER)
        _wait(browser, 60).until(lambda b: len(_shown_files(b)) == 10)
        typed = _shown_files(browser)
        assert typed != text_only  # the image took part
        # A search that fails empties the gallery: the next ten images shown are the example's
        # answer, not the typed search's still on the page (a wait for `typed` passed at once).
        box.clear()
        box.send_keys("köpek +", Keys.ENTER)
        _wait(browser, 60).until(
            lambda b: "⚠️" in b.find_element(By.ID, "status").text and not _shown_files(b)
        )
        box.clear()
        shown = _wait(browser, 30).until(
            lambda b: [
                e
                for e in b.find_elements(By.XPATH, f"//*[normalize-space(text())='{example}']")
                if e.is_displayed()
            ]
        )
        shown[-1].click()  # the example's own element (the innermost that shows its text)
        _wait(browser, 60).until(lambda b: len(_shown_files(b)) == 10)
        assert _shown_files(browser) == typed, "the example ignored the attached image"
        assert not _displayed(browser, "#share-link")  # a link cannot carry the image


def test_browser_opens_a_share_link(served, app, searcher):
    from selenium.webdriver.common.by import By

    url, _ = served
    with _browser() as browser:
        link = url + "?" + urllib.parse.urlencode({"q": "köpek + kar", "k": 5})
        browser.get(link)
        expected = {
            Path(app.result_image_file(h.image)).name
            for h in searcher.search_combined(["köpek", "kar"], k=5)
        }
        _wait(browser, 60).until(lambda b: _shown_files(b) == expected)
        query = _wait(browser, 30).until(
            lambda b: b.find_element(
                By.CSS_SELECTOR, "#query textarea, #query input"
            ).get_attribute("value")
        )
        assert query == "köpek + kar"
        assert _wait(browser, 30).until(_share_link) == link


def test_space_card_similar_example_runs_against_the_app(served, searcher, capsys):
    """The Space card's gradio_client example for /search_similar, run as written."""
    import re

    from hub_card import render_space_card

    url, _ = served
    card = render_space_card(
        title="T",
        space_id="someone/photos-search",
        dataset_repo="someone/photos",
        dataset_revision=None,
        manifest=searcher.manifest,
        gradio_version="6.31.0",
        python_version="3.11",
        hardware="cpu-basic",
    )
    section = card.split("## More like this from Python", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert 'Client("someone/photos-search")' in code
    assert "https://someone-photos-search.hf.space/gradio_api/mcp/" in card
    exec(code.replace('"someone/photos-search"', repr(url)), {})  # noqa: S102
    printed = capsys.readouterr().out
    assert "görselinin benzerleri · 5 sonuç · " in printed  # the status names the photo


def test_a_composed_query_has_at_most_max_terms(app, searcher):
    search_fn, _, _, _ = app.make_handlers(searcher)
    many = " + ".join(["köpek"] * (app.MAX_TERMS + 1))
    gallery, results, status = search_fn(many, 3)
    assert gallery == [] and results == [] and f"en çok {app.MAX_TERMS} terim" in status
    assert len(search_fn(" + ".join(["köpek"] * app.MAX_TERMS), 3)[1]) == 3


def test_without_the_mcp_package_the_app_starts_without_tools(app, searcher, monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real(name, *a)
    )
    demo = app.build_app(searcher)
    with caplog.at_level(logging.WARNING, logger="imagesearchtr.space"):
        url = launch(app, demo)
    try:
        assert demo.mcp_server is False
        assert any("no MCP tools" in r.getMessage() for r in caplog.records)
        _, results, status = search(client_for(url), "köpek", k=2)
        assert len(results) == 2, status
    finally:
        demo.close()


def test_an_upload_a_search_reads_is_kept_by_the_sweep(app, tmp_path):
    from gradio.data_classes import FileData

    query_image = app.QueryImage(type="filepath")
    query_image.GRADIO_CACHE = str(tmp_path)  # the upload folder
    used, unused = tmp_path / "a" / "used.jpg", tmp_path / "b" / "unused.jpg"
    for path in (used, unused):
        path.parent.mkdir()
        path.write_bytes(b"x")
    time.sleep(1.1)
    payload = FileData(path=str(used), meta={"_type": "gradio.FileData"})
    assert query_image.preprocess(payload) == str(used)  # a search reads it now
    gone = app.sweep_uploads({str(used), str(unused)}, keep_s=1, folder=tmp_path)
    assert gone == {str(unused)}
    assert used.exists() and not unused.exists() and not unused.parent.exists()


def test_number_inputs_refuse_booleans_and_values_that_are_no_finite_number(app):
    import gradio as gr

    k = app.NumberSlider(1, app.MAX_RESULTS, label="Sonuç sayısı")
    row = app.RowNumber(value=None, precision=0)
    for component, label in ((k, "Sonuç sayısı"), (row, "row")):
        for flag in (True, False):  # a bool is an int to Python: True would be 1
            with pytest.raises(gr.Error, match=f"“{label}” bir sayı olmalı"):
                component.preprocess(flag)
        for value in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(gr.Error, match=f"“{label}” çok büyük ya da sonsuz"):
                component.preprocess(value)
        with pytest.raises(gr.Error, match=f"“{label}” çok büyük ya da sonsuz .*21 basamak"):
            component.preprocess(10**20)  # beyond the integers a float holds exactly
    assert k.preprocess(5) == 5 and row.preprocess(3) == 3 and row.preprocess(None) is None


class FakeSearcher:
    """Ten rows; every search finds nothing (the handlers' own checks are under test)."""

    class encoder:  # noqa: N801 - the attribute a Searcher has
        @staticmethod
        def encode_texts(texts):
            return [np.full(4, 0.5, dtype=np.float32) for _ in texts]

    def __len__(self):
        return 10

    def search_vector(self, vector, k, alpha=None):
        return []


def test_a_query_of_exactly_the_limit_is_searched_and_one_more_character_is_not(app):
    search, _, _, embed = app.make_handlers(FakeSearcher())
    limit = app.MAX_QUERY_CHARS
    assert search("a" * limit, 3, False, 0.6, None)[2].startswith("0 sonuç")
    assert f"en çok {limit} karakter" in search("a" * (limit + 1), 3, False, 0.6, None)[2]
    assert len(embed("a" * limit)) == 4


def test_a_row_too_large_for_a_float_is_a_status_not_an_error(app):
    _, _, search_similar, _ = app.make_handlers(FakeSearcher())
    gallery, results, status = search_similar(10**400, 5)  # float() overflows
    assert gallery == [] and results == [] and "Satır numarası bir tam sayı" in status


def test_a_full_disk_while_writing_the_result_images_is_a_status_not_an_error(
    app, tmp_path, monkeypatch, caplog
):
    # The result images are written to the server's disk (ResultFolder); when it is full, the
    # search answers with the status line like any other failure, not with gradio's bare error.
    import errno

    from PIL import Image

    from imagesearchtr import Hit

    class OneHit:  # a Searcher of 10 rows whose every search finds row 1
        def __len__(self):
            return 10

        def search_similar(self, row, k, image_id=None):
            return [Hit(1, 0.9, 0.9, None, ["köpek"], Image.new("RGB", (8, 8), (1, 2, 3)))]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "_result_folder", app.ResultFolder(tmp_path, 10**9, 3600))
    monkeypatch.setattr(app.tempfile, "mkstemp", full)
    _, _, search_similar, _ = app.make_handlers(OneHit())
    with caplog.at_level(logging.ERROR, logger="imagesearchtr.space"):
        gallery, answer, status = search_similar(2, 5)
    assert gallery == [] and answer == []
    assert "Beklenmeyen" in status
    assert any("No space left" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
