"""load_manifest: one reader for folders and Hub repos, refusing files outside ``index/``."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imagesearchtr import IndexInfo, Manifest, ManifestError, SearchSetupError, load_manifest


def write_repo(
    folder,
    image_file="index/image_emb.faiss",
    caption_file="index/caption_emb.faiss",
    data_files=(),
):
    (folder / "index").mkdir(parents=True)
    manifest = Manifest(
        model_id="fake/model",
        model_revision=None,
        model_fingerprint="sha256:aaa",
        dim=4,
        num_rows=1,
        data_hash="sha256:x",
        indices=(
            IndexInfo("image_emb", image_file, "flat", "Flat", 1),
            IndexInfo("caption_emb", caption_file, "flat", "Flat", 1),
        ),
        data_files=list(data_files),
    )
    manifest.save(folder / "index" / "manifest.json")
    for name in ("image_emb.faiss", "caption_emb.faiss"):
        (folder / "index" / name).write_bytes(b"placeholder")
    return manifest


def test_a_folder_loads_in_place(tmp_path):
    manifest = write_repo(tmp_path / "repo")
    loaded = load_manifest(tmp_path / "repo")
    assert loaded.manifest == manifest and loaded.revision is None
    assert loaded.root == tmp_path / "repo"
    assert loaded.index_path("image_emb") == tmp_path / "repo" / "index" / "image_emb.faiss"


@pytest.mark.parametrize(
    "file",
    [
        "../../../../proc/self/environ",
        "/proc/self/environ",
        "index/../../secret.faiss",
        "data/train-00000-of-00001.parquet",
        "index/sub/image_emb.faiss",
        "index\\..\\..\\secret",
        "index/..",
    ],
)
def test_index_files_outside_index_are_refused_before_opening(tmp_path, file):
    write_repo(tmp_path / "repo", image_file=file)
    with pytest.raises(ManifestError, match=r"must be plain files inside the repo's index/") as err:
        load_manifest(tmp_path / "repo")
    assert repr(file) in str(err.value)


@pytest.mark.parametrize(
    "path",
    ["../../../../proc/self/environ", "/etc/passwd", "data/../index/x.parquet", "data/a/b.parquet",
     "data/a.txt", "index/image_emb.faiss", "../secret.parquet", "index/x.parquet",
     "data/x.parquet/../../../secret.parquet"],
)  # fmt: skip
def test_data_files_outside_data_are_refused(tmp_path, path):
    good = {"path": "data/train-00000.parquet", "num_rows": 1, "sha256": "0" * 64}
    write_repo(tmp_path / "ok", data_files=[good])
    assert load_manifest(tmp_path / "ok").manifest.data_files == [good]
    write_repo(tmp_path / "repo", data_files=[good, {**good, "path": path}])
    with pytest.raises(ManifestError, match="data files must be data/NAME.parquet"):
        load_manifest(tmp_path / "repo")


@pytest.mark.parametrize("field,value", [("num_rows", "1"), ("sha256", None), ("size", "10")])
def test_data_file_entries_without_a_row_count_and_hash_are_refused(tmp_path, field, value):
    good = {"path": "data/train-00000.parquet", "num_rows": 1, "sha256": "0" * 64, "size": 10}
    write_repo(tmp_path / "repo", data_files=[{**good, field: value}])
    with pytest.raises(ManifestError, match="entries with num_rows and sha256"):
        load_manifest(tmp_path / "repo")


def test_a_symlink_out_of_index_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET=1")
    write_repo(tmp_path / "repo")
    link = tmp_path / "repo" / "index" / "image_emb.faiss"
    link.unlink()
    os.symlink(secret, link)
    with pytest.raises(ManifestError, match="index/image_emb.faiss"):
        load_manifest(tmp_path / "repo")


def test_a_symlink_inside_index_is_kept(tmp_path):
    write_repo(tmp_path / "repo")
    index = tmp_path / "repo" / "index"
    (index / "image_emb.faiss").unlink()
    os.symlink(index / "caption_emb.faiss", index / "image_emb.faiss")
    assert load_manifest(tmp_path / "repo").manifest.num_rows == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "has no index/manifest.json"),
        (b"{not json", "not a valid index manifest"),
        (b"\xff\xfe", "not a valid index manifest"),
        (b"[1, 2]", "not a valid index manifest"),
        (json.dumps({"model_id": "x"}).encode(), "not a valid index manifest"),
        (json.dumps({"manifest_version": 99}).encode(), "newer than this imagesearchtr"),
    ],
)
def test_unreadable_manifests_name_the_location(tmp_path, content, expected):
    repo = tmp_path / "repo"
    write_repo(repo)
    if content is None:
        (repo / "index" / "manifest.json").unlink()
    else:
        (repo / "index" / "manifest.json").write_bytes(content)
    with pytest.raises(ManifestError, match=expected) as err:
        load_manifest(repo)
    assert str(repo) in str(err.value)


def test_fields_a_newer_writer_adds_are_left_out(tmp_path):
    repo = tmp_path / "repo"
    manifest = write_repo(repo)
    data = json.loads((repo / "index" / "manifest.json").read_text())
    data["added_later"] = {"x": 1}
    data["indices"][0]["added_later"] = 2
    (repo / "index" / "manifest.json").write_text(json.dumps(data))
    assert load_manifest(repo).manifest == manifest


def test_a_hub_snapshot_is_checked_by_name_and_gives_its_commit(tmp_path, monkeypatch):
    # huggingface_hub names a snapshot folder by its commit, and its files are links into the
    # cache's blobs/: they are not followed, so the names alone keep the index in index/.
    import huggingface_hub

    commit = "c" * 40
    snapshot = tmp_path / "snapshots" / commit
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(snapshot))
    monkeypatch.chdir(tmp_path)
    manifest = write_repo(snapshot)
    for name in ("image_emb.faiss", "caption_emb.faiss"):
        (blobs / name).write_bytes(b"placeholder")
        (snapshot / "index" / name).unlink()
        (snapshot / "index" / name).symlink_to(f"../../../blobs/{name}")
    loaded = load_manifest("someone/photos")
    assert (loaded.manifest, loaded.root, loaded.revision) == (manifest, snapshot, commit)
    for file in ("data/train-00000.parquet", "../secret.faiss"):
        shutil.rmtree(snapshot)
        write_repo(snapshot, image_file=file)
        with pytest.raises(ManifestError, match="must be plain files inside the repo's index/"):
            load_manifest("someone/photos")


def test_an_unknown_column_is_refused(tmp_path):
    repo = tmp_path / "repo"
    write_repo(repo)
    data = json.loads((repo / "index" / "manifest.json").read_text())
    data["indices"][0]["column"] = "image"
    (repo / "index" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="unknown column 'image'"):
        load_manifest(repo)


def test_neither_folder_nor_repo_id_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="neither a local folder nor a Hub dataset id"):
        load_manifest(tmp_path / "no" / "such" / "folder")


def test_the_searcher_shows_our_message_for_a_hostile_manifest(tmp_path, tiny_encoder):
    """The Space's path: the error the page shows names the file, and carries none of it."""
    from imagesearchtr import Searcher

    secret = tmp_path / "environ"
    secret.write_bytes(b"SECR" + b"=" * 60)
    write_repo(tmp_path / "repo", image_file=os.path.relpath(secret, tmp_path / "repo"))
    with pytest.raises(SearchSetupError) as err:
        Searcher.from_repo(tmp_path / "repo", encoder=tiny_encoder)
    assert "must be plain files inside the repo's index/" in str(err.value)
    assert "SECR" not in str(err.value) and "not recognized" not in str(err.value)


def test_an_index_that_fails_to_load_gives_our_message(tmp_path):
    """FAISS's own error quotes the file's first bytes; the Searcher's message must not."""
    import numpy as np
    from search_repo import open_repo, unit, write_repo

    repo = write_repo(tmp_path / "repo", unit(np.eye(3, 4) + 0.1))
    (repo / "index" / "image_emb.faiss").write_bytes(b"SECR" + b"\0" * 60)
    with pytest.raises(SearchSetupError, match="cannot load index/image_emb.faiss") as err:
        open_repo(repo)
    assert "SECR" not in str(err.value) and "not recognized" not in str(err.value)
