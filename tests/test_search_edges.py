"""Searcher edges the other search tests leave open: ties among many candidates keep row order,
more-like-this returns k rows from an approximate index, and its range error names the last
row. Each test kills a mutant of space/imagesearchtr/searcher.py that survived the rest of the
suite (an unstable sort, k dropped, ``len - 1`` turned into ``len + 1``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from search_repo import FakeEncoder, open_repo, unit, write_repo

from imagesearchtr import Searcher, SearchSetupError

DIM = 8


def test_tied_scores_keep_row_order_among_many_candidates(tmp_path):
    # Two tied groups of 100 rows (every third row scores lower): more than the 16 elements
    # below which numpy's default sort happens to keep equal keys in order.
    high, low = unit(np.eye(1, DIM)[0]), unit(np.eye(1, DIM)[0] + np.eye(1, DIM, 1)[0])
    x = np.stack([low if i % 3 == 0 else high for i in range(100)])
    searcher = open_repo(write_repo(tmp_path / "repo", x))
    hits = searcher.search_vector(high, 100)
    rows = list(range(100))
    assert [h.row for h in hits] == [r for r in rows if r % 3] + [r for r in rows if r % 3 == 0]


def test_more_like_this_from_an_approximate_index_gives_k_rows(tmp_path):
    x = unit(np.random.default_rng(4).normal(size=(200, DIM)))
    searcher = open_repo(write_repo(tmp_path / "repo", x, factory="IVF4,Flat"))
    assert searcher.exact["image_emb"] is False  # so the index is asked for a larger pool
    hits = searcher.search_similar(0, k=3)
    assert len(hits) == 3 and 0 not in [h.row for h in hits]


def test_a_row_out_of_range_is_refused_naming_the_last_row(tmp_path):
    searcher = open_repo(write_repo(tmp_path / "repo", unit(np.eye(6, DIM) + 0.1)))
    expected = "row 6 is out of range: the dataset has rows 0 to 5"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        searcher.search_similar(6)


@pytest.mark.parametrize(
    "broken", ["manifest", "index", "data", "data-file", "no-caption-index", "damaged-index"]
)
def test_a_broken_folder_is_refused_with_a_message_naming_it(tmp_path, broken):
    import shutil

    folder = write_repo(tmp_path / "repo", unit(np.eye(3, DIM) + 0.1))
    if broken == "manifest":
        (folder / "index" / "manifest.json").write_text("not json", encoding="utf-8")
    elif broken == "index":
        (folder / "index" / "image_emb.faiss").unlink()
    elif broken == "data-file":
        for path in (folder / "data").glob("*.parquet"):
            path.unlink()
    elif broken == "no-caption-index":
        manifest = json.loads((folder / "index" / "manifest.json").read_text(encoding="utf-8"))
        manifest["indices"] = [i for i in manifest["indices"] if i["column"] != "caption_emb"]
        (folder / "index" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    elif broken == "damaged-index":
        (folder / "index" / "image_emb.faiss").write_bytes(b"not a faiss index")
    else:
        shutil.rmtree(folder / "data")
    with pytest.raises(SearchSetupError) as caught:
        Searcher.from_repo(folder, encoder=FakeEncoder(DIM))
    assert str(folder) in str(caught.value)
