"""``publish --to DIR`` keeps what it does not manage, merges the card there, and copies when it
cannot hard-link. Each test kills a mutant of pipeline/publish.py that survived the rest of the
suite (the deleted list counting unmanaged files, the existing card dropped, the copy fallback
writing nowhere).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from pipeline import _io
from pipeline.publish import PublishConfig, publish_to_folder


@pytest.fixture
def build(generated_build):
    return generated_build  # publish reads a build, never changes it


def test_files_it_does_not_manage_are_kept_and_not_reported_deleted(build, tmp_path):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    result = publish_to_folder(PublishConfig(build=build, to=target))
    assert result.changed and result.deleted == ()
    assert (target / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_the_card_already_in_the_folder_is_merged_not_replaced(build, tmp_path):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "README.md").write_text("---\ntags:\n- my-own-tag\n---\n# Mine\n", encoding="utf-8")
    publish_to_folder(PublishConfig(build=build, to=target))
    assert "- my-own-tag" in (target / "README.md").read_text(encoding="utf-8")


def test_a_new_license_on_an_unchanged_build_is_published(build, tmp_path):
    target = tmp_path / "dataset"
    assert publish_to_folder(PublishConfig(build=build, to=target)).changed
    again = publish_to_folder(PublishConfig(build=build, to=target, source_license="cc-by-4.0"))
    assert again.changed and again.card_changed and again.uploaded == again.deleted == ()
    assert "license: cc-by-4.0" in (target / "README.md").read_text(encoding="utf-8")
    same = publish_to_folder(PublishConfig(build=build, to=target, source_license="cc-by-4.0"))
    assert not same.changed


def test_publish_names_the_terms_of_a_license_other(build, tmp_path, capsys):
    from pipeline.cli import main

    target = tmp_path / "dataset"
    flags = ["--license-name", "my-terms-1.0", "--license-link", "LICENSE.md"]
    # with another license they are refused before anything is written
    assert main(["publish", "--build", str(build), "--to", str(target), "--license", "mit",
                 *flags]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "error: --license-name 'my-terms-1.0' and --license-link 'LICENSE.md'" in err
    assert "pass --license other" in err and not target.exists()
    assert main(["publish", "--build", str(build), "--to", str(target), *flags]) == 0
    from huggingface_hub import DatasetCard

    meta = DatasetCard.load(target / "README.md").data
    assert (meta.license, meta.license_name, meta.license_link) == (
        "other", "my-terms-1.0", "LICENSE.md")  # fmt: skip


def test_publish_of_a_build_not_indexed_says_to_index_it_then_publish_again(
    tmp_path, tiny_model_dir, capsys
):
    # load_manifest's words are for a search (publish it with --to out/repo, then search that),
    # not for the publish that was run.
    from conftest import write_photos

    from pipeline.cli import main
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.inputs import FolderSource

    build = tmp_path / "build"
    photos = write_photos(tmp_path / "photos", ["a", "b"])
    run_encode(FolderSource(photos), EncodeConfig(out=build, model=str(tiny_model_dir)))
    target = tmp_path / "dataset"
    assert main(["publish", "--build", str(build), "--to", str(target)]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {build} has no index/manifest.json: it is a build that `index` has not "
        f"finished; index it (`python -m pipeline index --build {build}`), then publish again\n"
    ) in err
    assert not target.exists()


def test_files_are_copied_when_hard_links_are_refused(build, tmp_path, monkeypatch):
    def refuse(source, dest):  # as across filesystems: EXDEV
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    target = tmp_path / "dataset"
    result = publish_to_folder(PublishConfig(build=build, to=target))
    assert result.uploaded
    for repo_path in result.uploaded:
        copied, original = target / repo_path, build / repo_path
        assert copied.stat().st_ino != original.stat().st_ino
        digest = hashlib.sha256(copied.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(original.read_bytes()).hexdigest()


def test_a_killed_publishs_leftovers_are_cleared_and_kept_files_are_linked(build, tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid no process has now
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "notes.bin").write_bytes(b"x" * 1000)  # the user's, beside the dataset
    (target / "extra").mkdir()
    (target / "extra" / "a.txt").write_text("a")
    inode = (target / "notes.bin").stat().st_ino
    stale = tmp_path / f".dataset.staging-{dead.pid}"  # a killed run's half-made tree
    (stale / "data").mkdir(parents=True)
    other = tmp_path / f".dataset.staging-{os.getppid()}"  # a live process's: not touched
    other.mkdir()
    sibling = tmp_path / f".dataset2.old-{dead.pid}-0"  # another folder's: not touched
    sibling.mkdir()
    publish_to_folder(PublishConfig(build=build, to=target))
    assert not stale.exists() and other.exists() and sibling.exists()
    assert (target / "notes.bin").stat().st_ino == inode  # linked into the new tree, not copied
    assert (target / "extra" / "a.txt").read_text() == "a"
    # Killed between its two renames: no target, the whole old tree beside it. It comes back,
    # whatever its process id (in a container each run may have the same one).
    for pid in (dead.pid, os.getpid()):
        os.replace(target, tmp_path / f".dataset.old-{pid}-0")
        result = publish_to_folder(PublishConfig(build=build, to=target))
        assert not result.changed and (target / "notes.bin").stat().st_ino == inode
        assert not list(tmp_path.glob(".dataset.old-*"))
    # Two runs killed in turn: the first while deleting its old tree (a tree named "trash"
    # is never put back; older versions deleted it under its "old" name, half-deleted trees
    # without a manifest), the second between its renames: the second's whole tree comes back.
    half = tmp_path / f".dataset.old-{dead.pid}-1"
    shutil.copytree(target / "index", half / "index")
    (half / "index" / "manifest.json").unlink()
    trash = tmp_path / f".dataset.trash-{dead.pid}-0"
    shutil.copytree(target / "index", trash / "index")
    os.replace(target, tmp_path / f".dataset.old-{dead.pid}-2")
    result = publish_to_folder(PublishConfig(build=build, to=target))
    assert not result.changed and (target / "notes.bin").stat().st_ino == inode
    assert not trash.exists() and half.exists()  # (half: noted, as any old tree beside one)
    assert any(str(half) in note for note in result.notes), result.notes
    shutil.rmtree(half)
    # An old tree beside a folder that exists may hold the only copy of a file: kept, named.
    leftover = tmp_path / f".dataset.old-{dead.pid}-0"
    shutil.copytree(target, leftover)
    result = publish_to_folder(PublishConfig(build=build, to=target))
    assert leftover.exists() and any(str(leftover) in note for note in result.notes)
    shutil.rmtree(leftover)
    # A republish that fails on its second rename puts the old tree back at once.
    import pipeline._io

    real_replace = os.replace

    def second_rename_fails(src, dst):
        if ".staging-" in str(src):
            raise KeyboardInterrupt  # Ctrl-C between the two renames
        real_replace(src, dst)

    pipeline._io.os.replace = second_rename_fails
    try:
        with pytest.raises(KeyboardInterrupt):
            # (another license: a new card, so there is a tree to swap in)
            publish_to_folder(PublishConfig(build=build, to=target, source_license="mit"))
    finally:
        pipeline._io.os.replace = real_replace
    assert (target / "notes.bin").stat().st_ino == inode
    assert not list(tmp_path.glob(".dataset.old-*")), list(tmp_path.iterdir())
    # A name with glob characters matches its own leftovers only, not "ab"'s.
    theirs = tmp_path / f".ab.old-{dead.pid}-0"
    theirs.mkdir()
    publish_to_folder(PublishConfig(build=build, to=tmp_path / "a*"))
    assert theirs.exists() and not (tmp_path / "a*" / "notes.bin").exists()


def test_a_search_app_running_on_a_folder_keeps_showing_its_own_rows_after_a_republish(
    tmp_path, tiny_encoder, tiny_model_dir
):
    import numpy as np
    from conftest import write_photos

    from imagesearchtr import Searcher
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    def build_and_publish():
        config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32")
        run_encode(FolderSource(data), config, encoder=tiny_encoder)
        run_index(IndexConfig(build=build))
        publish_to_folder(PublishConfig(build=build, to=repo))

    data, build, repo = tmp_path / "photos", tmp_path / "build", tmp_path / "repo"
    write_photos(data, ["a", "b", "c", "d", "e", "f"])
    build_and_publish()
    searcher = Searcher.from_repo(repo, encoder=tiny_encoder, cache_dir=tmp_path / "cache")

    def shown():
        hits = searcher.search_similar(0, k=5)
        assert all(h.image_error is None for h in hits), [h.image_error for h in hits]
        return {h.row: (h.captions, np.asarray(h.image).tobytes()) for h in hits}

    before = shown()
    # Rows shift: every row after "a" moves up one in the new files of the same names.
    (data / "images" / "a.jpg").unlink()
    build_and_publish()
    assert shown() == before  # the app shows the photos its index and captions describe
    with Searcher.from_repo(repo, encoder=tiny_encoder, cache_dir=tmp_path / "cache") as fresh:
        assert len(fresh) == 5  # and a new start reads the new folder
    searcher.close()
    with pytest.raises(ValueError, match="this Searcher was closed"):  # not the new files' bytes
        searcher.search_similar(0, k=5)
    with pytest.raises(ValueError, match="this Searcher was closed"):  # nor their embeddings
        searcher.embeddings()
    if Path("/proc/self/fd").is_dir():  # every data file let go of (the old tree's included)
        held = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
        assert not [path for path in held if str(tmp_path) in path], held


def test_a_folder_with_more_data_files_than_the_process_may_open_is_one_clear_error(
    generated_build, tmp_path, tiny_encoder, monkeypatch
):
    import errno

    import imagesearchtr.lazy_rows
    from imagesearchtr import Searcher
    from imagesearchtr.searcher import SearchSetupError

    repo = tmp_path / "repo"
    publish_to_folder(PublishConfig(build=generated_build, to=repo))

    def no_more_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(imagesearchtr.lazy_rows, "open", no_more_files, raising=False)
    with pytest.raises(
        SearchSetupError, match=r"may open no more files; raise the limit .*index --max-data-file"
    ):
        Searcher.from_repo(repo, encoder=tiny_encoder, cache_dir=tmp_path / "cache")


def test_a_hub_that_never_answers_the_license_check_does_not_hold_up_a_folder_publish(
    build, tmp_path, monkeypatch
):
    import socket

    from huggingface_hub import constants

    import pipeline.publish

    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(pipeline.publish, "LICENSE_CHECK_TIMEOUT_S", 0.5)
    try:
        result = publish_to_folder(
            PublishConfig(build=build, to=tmp_path / "r", source_license="mit")
        )
    finally:
        silent.close()
    assert result.changed and "license: mit" in (tmp_path / "r" / "README.md").read_text()
    assert result.notes == (
        "--license mit was not checked: the Hub's card validation did not answer",
    )


def moved_aside(tmp_path: Path, name: str, label: str, manifest: bool = True) -> Path:
    """A tree at ``tmp_path/name``, put there by one rename (as swap_folder moves a tree aside)."""
    made = tmp_path / f"making-{label}"
    (made / "index").mkdir(parents=True)
    (made / "label.txt").write_text(label, encoding="utf-8")
    if manifest:
        (made / "index" / "manifest.json").write_text("{}", encoding="utf-8")
    os.replace(made, tmp_path / name)
    time.sleep(0.05)  # the next rename gets a later ctime
    return tmp_path / name


def test_of_two_whole_old_trees_the_one_moved_aside_last_comes_back(tmp_path):
    # Names do not tell the order: "-9" sorts after "-1" but was moved aside first.
    earlier = moved_aside(tmp_path, ".dataset.old-1-9", "earlier")
    later = moved_aside(tmp_path, ".dataset.old-1-1", "later")
    target = tmp_path / "dataset"
    notes = _io.swap_leftovers(target)
    assert (target / "label.txt").read_text(encoding="utf-8") == "later"
    assert earlier.exists() and not later.exists()
    assert any(str(earlier) in note for note in notes), notes


def test_a_whole_old_tree_comes_back_before_a_newer_one_without_its_manifest(tmp_path):
    whole = moved_aside(tmp_path, ".dataset.old-1-0", "whole")
    half = moved_aside(tmp_path, ".dataset.old-1-1", "half", manifest=False)  # newer
    target = tmp_path / "dataset"
    _io.swap_leftovers(target)
    assert (target / "label.txt").read_text(encoding="utf-8") == "whole"
    assert (target / "index" / "manifest.json").is_file()
    assert half.exists() and not whole.exists()


def test_a_publish_killed_while_deleting_the_old_tree_leaves_nothing_behind(
    generated_build, tmp_path, monkeypatch
):
    target = tmp_path / "dataset"
    publish_to_folder(PublishConfig(build=generated_build, to=target))
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # the manifest goes first, then the kill
        if Path(path).name.startswith(f".{target.name}."):
            (Path(path) / "index" / "manifest.json").unlink()
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):  # (another license: a new tree to swap in)
        publish_to_folder(PublishConfig(build=generated_build, to=target, source_license="mit"))
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    # The half-deleted tree is no old tree that could be put back, kept or reported: the next
    # run removes it.
    result = publish_to_folder(
        PublishConfig(build=generated_build, to=target, source_license="mit")
    )
    assert not result.changed
    assert not [n for n in result.notes if f".{target.name}." in n], result.notes
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dataset.lock", "dataset"]


def test_a_second_publish_to_a_folder_in_use_is_refused(generated_build, tmp_path):
    import fcntl

    target = tmp_path / "dataset"
    publish_to_folder(PublishConfig(build=generated_build, to=target))
    # Two publishes to one folder put back each other's old trees and linked each other's files.
    with open(tmp_path / ".dataset.lock", "a+") as other:  # as another publish holds it
        fcntl.flock(other, fcntl.LOCK_EX)
        other.truncate(0)
        other.write("`publish` (pid 4242)")
        other.flush()
        with pytest.raises(RuntimeError, match=r"dataset is in use by `publish` \(pid 4242\)"):
            publish_to_folder(PublishConfig(build=generated_build, to=target, source_license="mit"))
    publish_to_folder(PublishConfig(build=generated_build, to=target, source_license="mit"))


def test_a_refused_publish_leaves_the_folder_and_its_parent_as_they_were(build, tmp_path):
    from conftest import write_photos

    from pipeline.publish import PublishError

    (tmp_path / "half" / "data").mkdir(parents=True)  # data/ without a manifest
    write_photos(tmp_path / "photos", ["a"])  # a photos folder an encode reads
    (tmp_path / "a-file").write_text("mine")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    for name in ("half", "photos", "a-file"):
        with pytest.raises(PublishError, match=f"--to {tmp_path / name} "):
            publish_to_folder(PublishConfig(build=build, to=tmp_path / name))
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    # A lock file a publish left before stays (a run may hold it); a new one is taken after.
    publish_to_folder(PublishConfig(build=build, to=tmp_path / "dataset"))
    (tmp_path / "dataset" / "data" / "a.jpg").write_bytes(b"")  # now refused: not its file
    with pytest.raises(PublishError, match="publish never writes"):
        publish_to_folder(PublishConfig(build=build, to=tmp_path / "dataset"))
    assert (tmp_path / ".dataset.lock").is_file()


def test_a_folder_lock_a_refused_publish_just_removed_is_not_taken(tmp_path, monkeypatch):
    real = _io._flock

    def after_their_cleanup(handle, shared, folder):
        # A refused publish removed the lock file it made between this run's open and its
        # lock: holding that lock would guard nothing, and a third run would take a new one.
        (tmp_path / ".dataset.lock").unlink()
        return real(handle, shared, folder)

    monkeypatch.setattr(_io, "_flock", after_their_cleanup)
    with (
        pytest.raises(RuntimeError, match="in use by another run as this one started; run again"),
        _io.swap_lock(tmp_path / "dataset", "publish"),
    ):
        pass


def test_a_folder_a_publish_left_moved_aside_is_named_by_its_readers(build, tmp_path):
    from imagesearchtr.manifest import ManifestError, load_manifest

    target = tmp_path / "dataset"
    publish_to_folder(PublishConfig(build=build, to=target))
    aside = tmp_path / ".dataset.old-4242-0"
    os.replace(target, aside)  # killed between its two renames
    # The search, and encode --reuse, said "neither a local folder nor a Hub dataset id".
    named = re.escape(f"previous tree at {aside}; run that publish again")
    with pytest.raises(ManifestError, match=named):
        load_manifest(target)
    result = publish_to_folder(PublishConfig(build=build, to=target))  # puts it back
    assert not result.changed and not aside.exists()
    assert load_manifest(target).manifest.num_rows == 6
    # The same for a tree named as versions before named it, without the -N.
    older = tmp_path / ".dataset.old-4242"
    os.replace(target, older)
    with pytest.raises(ManifestError, match=re.escape(f"previous tree at {older};")):
        load_manifest(target)
    assert not publish_to_folder(PublishConfig(build=build, to=target)).changed
    assert not older.exists() and load_manifest(target).manifest.num_rows == 6


def test_a_pin_refused_after_close_holds_no_file_while_its_error_is_kept(tmp_path):
    from imagesearchtr.lazy_rows import Source

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    (tmp_path / "data.parquet").write_bytes(b"rows")
    source = Source(str(tmp_path), tmp_path, revision=None)
    source.close()
    with pytest.raises(ValueError, match="this Searcher was closed") as refused:
        source.pin("data.parquet")
    # The error's traceback is alive (a caller that logs or keeps it): the file is closed anyway.
    assert refused.value.__traceback__ is not None
    held = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
    assert str(tmp_path / "data.parquet") not in held


def test_a_folder_named_like_an_old_tree_is_swapped_and_cleaned_up_as_any(tmp_path, monkeypatch):
    target, staging = tmp_path / "set.old-2", tmp_path / "new"
    for folder, text in ((target, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "a.txt").write_text(text)

    def interrupted(path, *args, **kwargs):  # killed while deleting the old tree
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _io.swap_folder(staging, target)
    monkeypatch.undo()
    assert (target / "a.txt").read_text() == "new"
    left = sorted(p.name for p in tmp_path.iterdir() if p != target)
    assert left == [f".set.old-2.trash-{os.getpid()}-0"]  # (not ".set.trash-2.old-...")
    assert _io.swap_leftovers(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.old-2"]
