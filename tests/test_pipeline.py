"""The build side end to end: inputs -> encode -> index -> publish -> load_dataset -> search."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, run_cli
from PIL import Image

from pipeline.encode import EncodeConfig, run_encode
from pipeline.index import ARROW_CACHE_DIR, IndexConfig, choose_index, run_index
from pipeline.inputs import FolderSource
from pipeline.publish import PublishConfig, publish_to_folder


def read_rows(build: Path, columns=("image_id", "captions", "image_emb", "caption_emb")):
    shards = sorted((build / "shards").glob("shard-*.parquet"))
    return pq.read_table(shards, columns=list(columns)) if shards else None


def skipped(build: Path) -> list[dict]:
    text = (build / "skipped.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


# --- encode --------------------------------------------------------------------------------


def test_shared_photos_encode_completely(shared_build):
    table = read_rows(shared_build)
    assert table.num_rows == 413
    assert len(set(table.column("image_id").to_pylist())) == 413
    assert sum(len(c) for c in table.column("captions").to_pylist()) == 826
    assert skipped(shared_build) == []
    emb = np.asarray(table.column("image_emb").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The manifest, published as it is, names the photos' folder, not where it lies here...
    manifest = json.loads((shared_build / "index" / "manifest.json").read_text())
    assert manifest["source"] == "local folder tasviret-flickr8k"
    # ...and the card still knows it for the TasvirEt photos, and cites them.
    from hub_card import render_dataset_card
    from imagesearchtr import Manifest
    from pipeline.encode import features

    card = render_dataset_card(
        Manifest.from_dict(manifest), repo_id="you/photos", source=manifest["source"],
        source_license=None, features=features(manifest["dim"]).to_dict(),
        num_captions=826, num_skipped=0, skipped_reasons={},
    )  # fmt: skip
    assert "TasvirEt" in card and "## Citation" in card


def test_caption_embedding_is_the_normalised_mean(shared_build, tiny_model_dir):
    from imagesearchtr import Encoder

    encoder = Encoder.from_pretrained(tiny_model_dir)  # the default dtype, as the CLI used
    row = read_rows(shared_build).slice(0, 1).to_pylist()[0]
    mean = encoder.encode_texts(row["captions"]).mean(axis=0)
    stored = np.asarray(row["caption_emb"])
    assert abs(np.linalg.norm(stored) - 1) < 1e-5
    # bf16 results shift slightly with the batch they were padded in: compare as cosines.
    assert stored @ (mean / np.linalg.norm(mean)) > 0.9999


def make_messy_folder(root: Path, shared_data: Path) -> Path:
    """Good photos plus every kind of bad row the encode step must survive."""
    folder = root / "messy"
    (folder / "images").mkdir(parents=True)
    photos = sorted((shared_data / "images").glob("*.jpg"))[:4]
    for p in photos:
        shutil.copy(p, folder / "images" / p.name)  # a temporary test folder, not the repo
    shutil.copy(photos[0], folder / "images" / "copy-of-first.jpg")  # same bytes
    (folder / "images" / "zero.jpg").write_bytes(b"")
    data = photos[1].read_bytes()
    (folder / "images" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "images" / "text.jpg").write_text("not a photo")
    Image.new("L", (9000, 9000)).save(folder / "images" / "bomb.png")  # 81 MP > 64 MP limit
    Image.new("RGB", (64, 48), (0, 90, 200)).save(folder / "images" / "uncaptioned.png")
    lines = [
        {"path": f"images/{photos[0].name}", "caption": "Karda koşan iki köpek."},
        {"path": f"images/{photos[0].name}", "caption": "Köpekler karda oynuyor."},
        {"path": f"images/{photos[1].name}", "caption": "Sahilde yürüyen bir adam."},
        {"path": f"images/{photos[2].name}", "caption": "   "},
        {"path": f"images/{photos[3].name}", "caption": "Bisiklet süren bir çocuk."},
        {"path": "images/copy-of-first.jpg", "caption": "Aynı fotoğraf, başka açıklama."},
        {"path": "images/missing.jpg", "caption": "Bu dosya yok."},
        {"path": "../outside.jpg", "caption": "Klasör dışında."},
        {"path": "images/zero.jpg", "caption": "Boş dosya."},
        {"path": "images/truncated.jpg", "caption": "Yarım dosya."},
        {"path": "images/text.jpg", "caption": "Metin dosyası."},
        {"path": "images/bomb.png", "caption": "Çok büyük."},
    ]
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    text += '{"path": "images/x.jpg", "caption": \n'  # malformed JSON
    (folder / "captions.jsonl").write_text(text, encoding="utf-8")
    return folder


def test_bad_rows_are_skipped_with_reasons(tmp_path, shared_data, tiny_model_dir):
    folder = make_messy_folder(tmp_path, shared_data)
    # Uncaptioned files of other image kinds: read (.jfif, .avif), or reported (HEIC, which
    # Pillow cannot read): none left out unsaid.
    Image.new("RGB", (40, 30), (200, 0, 0)).save(folder / "images" / "old.jfif", format="JPEG")
    Image.new("RGB", (40, 30), (0, 200, 0)).save(folder / "images" / "new.avif")
    heic = b"\0\0\0\x18ftypheic" + b"\0" * 64
    (folder / "images" / "IMG_0001.HEIC").write_bytes(heic)  # as an iPhone names it
    build = tmp_path / "build"
    result = run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    reasons = {s["source"]: s["reason"] for s in skipped(build)}
    assert "convert HEIC photos to JPEG first" in reasons["images/IMG_0001.HEIC"]
    assert "duplicate of" in reasons["images/copy-of-first.jpg"]
    assert reasons["images/missing.jpg"] == "missing file"
    assert reasons["images/zero.jpg"] == "empty file (0 bytes)"
    assert "broken or truncated" in reasons["images/truncated.jpg"]
    assert "not an image" in reasons["images/text.jpg"]
    assert "over the 64,000,000-pixel limit" in reasons["images/bomb.png"]
    assert "outside the data folder" in reasons["captions.jsonl:8"]
    assert "empty or missing caption" in reasons["captions.jsonl:4"]
    assert "malformed JSON" in reasons["captions.jsonl:13"]
    rows = {r["image_id"]: r for r in read_rows(build).to_pylist()}
    first = sorted((shared_data / "images").glob("*.jpg"))[0].stem
    # The duplicate's caption joined the original's row; the uncaptioned image is indexed.
    assert rows[f"images/{first}"]["captions"] == [
        "Karda koşan iki köpek.",
        "Köpekler karda oynuyor.",
        "Aynı fotoğraf, başka açıklama.",
    ]
    assert rows["images/uncaptioned"]["captions"] == []
    assert rows["images/uncaptioned"]["caption_emb"] is None
    assert len(rows) == 7  # 4 photos + the uncaptioned one + the JFIF and the AVIF
    assert {"images/old", "images/new"} <= rows.keys()
    assert "skipped 10 inputs" in result.stdout


def test_a_missing_file_names_the_one_file_its_line_probably_meant(tmp_path, tiny_model_dir):
    # {"path": "a.jpg"} for images/a.jpg, images/b.jpg for images/b.JPG: skipped as "missing
    # file", and nothing said which file was there.
    from conftest import write_photos

    folder = write_photos(tmp_path / "photos", ["a", "b", "c"])
    (folder / "images" / "b.jpg").rename(folder / "images" / "b.JPG")
    write_photos(folder / "sub", ["c"], seed=1)  # a second c.jpg: no guess between the two
    with (folder / "captions.jsonl").open("a", encoding="utf-8") as lines:
        for path in ("a.jpg", "c.jpg", "gone.jpg"):
            lines.write(json.dumps({"path": path, "caption": "Karda bir köpek."}) + "\n")
    build = tmp_path / "build"
    result = run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    assert {s["source"]: s["reason"] for s in skipped(build)} == {
        "a.jpg": "missing file (did you mean images/a.jpg?)",
        "images/b.jpg": "missing file (did you mean images/b.JPG?)",
        "c.jpg": "missing file",
        "gone.jpg": "missing file",
    }
    # The printed summary shows the first as an example under the count.
    example = "e.g. a.jpg: missing file (did you mean images/a.jpg?)"
    assert f"     4  missing file\n          {example}\n" in result.stdout


def test_kill_during_encode_then_resume_keeps_every_row_once(
    tmp_path, shared_data, tiny_model_dir, shared_build
):
    build = tmp_path / "build"
    cmd = [sys.executable, "-m", "pipeline", "encode", "--data", str(shared_data)]
    cmd += ["--model", str(tiny_model_dir), "--out", str(build), "--shard-size", "32"]
    for trial in range(2):  # kill at two different points
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        target = 2 + 3 * trial
        while len(list((build / "shards").glob("shard-*.parquet"))) < target:
            assert proc.poll() is None, "encode finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = len(list((build / "shards").glob("shard-*.parquet")))
        assert 0 < done < 13
    complete = shard_stats(build)
    # The resume: the killed runs' settings, in this process (the CLI is what was killed).
    config = EncodeConfig(out=build, model=str(tiny_model_dir), shard_size=32)
    run_encode(FolderSource(shared_data), config)
    assert {n: shard_stats(build)[n] for n in complete} == complete  # not written again
    table = read_rows(build)
    ids = table.column("image_id").to_pylist()
    assert len(ids) == 413 and len(set(ids)) == 413
    # Same rows, in the same order, as the uninterrupted build.
    reference = read_rows(shared_build)
    assert ids == reference.column("image_id").to_pylist()
    np.testing.assert_allclose(
        np.asarray(table.column("image_emb").to_pylist()),
        np.asarray(reference.column("image_emb").to_pylist()),
        atol=1e-6,
    )
    assert not list((build / "shards").glob(".*tmp"))


def test_resume_with_another_model_is_refused(tmp_path, shared_data, tiny_model_dir):
    from tiny_checkpoint import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "other-model", seed=1)
    folder = make_messy_folder(tmp_path, shared_data)
    build = tmp_path / "build"
    run_encode(FolderSource(folder), EncodeConfig(out=build, model=str(tiny_model_dir)))
    result = run_cli("encode", "--data", folder, "--model", other, "--out", build, check=False)
    assert result.returncode == 2
    # It names the model the build was made with, and the way to update it (an update without
    # --model takes that model).
    said = " ".join(result.stderr.split())
    assert f"made with the model {tiny_model_dir} (sha256:" in said, said
    assert f"pass --model {tiny_model_dir} to update it, --overwrite" in said, said
    assert "Traceback" not in result.stderr
    run_encode(FolderSource(folder), EncodeConfig(out=build, model=str(other), overwrite=True))


def test_an_update_without_model_uses_the_model_its_build_was_made_with(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    # README's update command has no --model: it loaded the default Hub model instead (900 MB,
    # then refused as another model's; offline, "cannot reach the Hub") for a model folder's.
    from conftest import write_photos

    from pipeline.cli import main

    folder = write_photos(tmp_path / "photos", ["a0", "a1"])
    build = tmp_path / "build"
    run_encode(FolderSource(folder), EncodeConfig(out=build, model=str(tiny_model_dir)))
    write_photos(folder, ["a2"])
    result = run_cli("encode", "--data", folder, "--out", build, env={"HF_HUB_OFFLINE": "1"})
    assert f"model: {tiny_model_dir.resolve()} (from build.json)\n" in result.stdout
    assert "images: 1 encoded, 2 reused" in result.stdout
    # A new build, or one --overwrite starts again, takes the default model.
    models = []

    def encode(source, config):
        models.append(config.model)
        raise ValueError("stopped")

    monkeypatch.setattr("pipeline.encode.run_encode", encode)
    for out, flags in ((tmp_path / "new", []), (build, ["--overwrite"])):
        assert main(["encode", "--data", str(folder), "--out", str(out), *flags]) == 2
    assert models == [EncodeConfig.model] * 2
    assert "(from build.json)" not in capsys.readouterr().out


def test_a_linked_folder_whose_disk_is_gone_stops_the_update_and_keeps_its_rows(
    tmp_path, tiny_model_dir
):
    # photos/harici -> a disk not mounted now: read as "photos deleted", an update dropped its
    # rows from the build (and the next publish from the dataset), and nothing named the link.
    from conftest import write_photos

    disk = write_photos(tmp_path / "disk", ["t0", "t1"], seed=1)
    folder = write_photos(tmp_path / "photos", ["a0", "a1", "a2"])
    (folder / "harici").symlink_to(disk, target_is_directory=True)
    build = tmp_path / "build"
    config = EncodeConfig(out=build, model=str(tiny_model_dir))
    run_encode(FolderSource(folder), config)
    rows = sorted(read_rows(build).column("image_id").to_pylist())
    assert len(rows) == 5 and "harici/images/t0" in rows
    disk.rename(tmp_path / "unmounted")
    with pytest.raises(FileNotFoundError, match=r"photos: harici is a link to something that"):
        run_encode(FolderSource(folder), config)
    assert sorted(read_rows(build).column("image_id").to_pylist()) == rows
    # A link to a photo that is gone likewise; hidden links are not looked at.
    (tmp_path / "unmounted").rename(disk)
    (folder / "images" / "b.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / ".stale").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r": images/b.jpg is a link to something"):
        FolderSource(folder).read()


def test_an_update_from_another_folder_says_the_build_is_now_that_folders(tmp_path, tiny_model_dir):
    # `--data photos/images/2024` (a sub-folder, a typo, another collection) replaced the
    # build's rows, then the dataset's, and nothing said so.
    from conftest import write_photos

    folder = write_photos(tmp_path / "photos", ["a0", "a1", "a2"])
    write_photos(folder / "2024", ["b0"])
    config = EncodeConfig(out=tmp_path / "build", model=str(tiny_model_dir))
    first = run_encode(FolderSource(folder), config)
    assert first.images == 4 and first.notes == ()
    assert run_encode(FolderSource(folder), config).notes == ()  # the same folder
    (tmp_path / "moved").mkdir()  # the same folder name elsewhere: the same input
    moved = folder.rename(tmp_path / "moved" / "photos")
    assert run_encode(FolderSource(moved), config).notes == ()
    update = run_encode(FolderSource(moved / "2024"), config)
    assert update.images == 1
    assert update.notes == (
        "the build was made from local folder photos, and now holds the rows of local folder "
        "2024 only: 1 (it had 4)",
    )


def test_the_searcher_given_photos_or_an_unindexed_build_names_the_commands_they_need(
    tmp_path, tiny_model_dir
):
    # Searcher.from_repo(PHOTOS) said to run `index --build BUILD`: there was no build yet.
    from conftest import write_photos

    from imagesearchtr import Searcher, SearchSetupError

    photos = write_photos(tmp_path / "photos", ["a", "b"])
    with pytest.raises(SearchSetupError) as err:
        Searcher.from_repo(photos)
    assert (
        f"{photos} has no index/manifest.json: it is not a published dataset; encode it "
        f"(`python -m pipeline encode --data {photos} --out build/`), index it (`python -m "
        "pipeline index --build build/`) and publish it (`python -m pipeline publish --build "
        "build/ --to out/repo`, or --repo you/NAME), then search that"
    ) == str(err.value)
    # A build that encode made and index has not: index it, then publish it.
    build = tmp_path / "build"
    run_encode(FolderSource(photos), EncodeConfig(out=build, model=str(tiny_model_dir)))
    with pytest.raises(SearchSetupError) as err:
        Searcher.from_repo(build)
    assert (
        f"{build} has no index/manifest.json: it is a build that `index` has not finished; "
        f"index it (`python -m pipeline index --build {build}`) and publish it (`python -m "
        f"pipeline publish --build {build} --to out/repo`, or --repo you/NAME), then search that"
    ) == str(err.value)


def test_cli_refuses_bad_numbers_before_any_work(tmp_path, capsys):
    from conftest import write_photos

    from pipeline.cli import main

    data = write_photos(tmp_path / "data", ["a"])
    encode = ["encode", "--data", data, "--model", tmp_path / "no-model", "--out", tmp_path / "b"]
    evaluate = ["evaluate", "--repo", tmp_path / "no-repo", "--output", tmp_path / "e.json"]
    # Each refused before the model or the dataset loads (a missing one is not what is named).
    for argv, said in (
        ([*encode, "--shard-size", "0"], "--shard-size must be >= 1"),
        ([*encode, "--batch-size-img", "0"], "--batch-size-img must be >= 1"),
        ([*evaluate, "--alphas", "1.5"], "--alphas '1.5': each number must be between 0 and 1"),
        ([*evaluate, "--composed", "--negative-weights", "500"], "between 0 and 100"),
        # A size below 1 byte would give every row a data file of its own.
        (["index", "--build", tmp_path / "b", "--max-data-file-size=-5MB"], "size above 0"),
        (["index", "--build", tmp_path / "b", "--max-data-file-size", "0"], "size above 0"),
    ):
        assert main([str(a) for a in argv]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "no-model" not in err and "no-repo" not in err, err
    # The same rule for a run from Python, before the input is hashed.
    from pipeline.encode import EncodeConfig

    with pytest.raises(ValueError, match="--shard-size must be >= 1"):
        EncodeConfig(out=tmp_path / "b", shard_size=0)


def test_index_of_a_photos_folder_says_to_encode_it_into_a_build_folder(tmp_path, capsys):
    from conftest import write_photos

    from pipeline.cli import main

    photos = write_photos(tmp_path / "photos", ["a"])
    assert main(["index", "--build", str(photos)]) == 2
    err = capsys.readouterr().err
    # Not "encode --out PHOTOS", which encode refuses: the photos go in as --data.
    assert f"encode --data {photos} --out BUILD" in err, err
    (tmp_path / "empty").mkdir()
    assert main(["index", "--build", str(tmp_path / "empty")]) == 2
    assert f"encode --out {tmp_path / 'empty'}` first" in capsys.readouterr().err


def test_cli_interrupted_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from pipeline import cli
    from pipeline.cli import main

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "index", interrupted)
    # 130 as a shell reports Ctrl-C: `make` and scripts stop on it and a user knows to re-run.
    assert main(["index", "--build", str(tmp_path)]) == 130
    assert "re-run the same command to resume" in capsys.readouterr().err


def test_cli_names_the_hub_for_a_dropped_connection_of_huggingface_hubs_client(
    tmp_path, capsys, monkeypatch
):
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub >= 2 makes its requests with it
    from pipeline import cli
    from pipeline.cli import main

    request = httpx2.Request("HEAD", "http://127.0.0.1:9/api/datasets/x")
    raised = []

    def dropped(args):
        raise raised[-1]

    monkeypatch.setitem(cli.COMMANDS, "index", dropped)
    argv = ["index", "--build", str(tmp_path)]
    # Unwrapped, with and without the request it was making: one line, not a traceback.
    raised.append(httpx2.ConnectError("[Errno 111] Connection refused", request=request))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Hugging Face Hub at http://127.0.0.1:9 ("), err
    raised.append(httpx2.ReadTimeout("timed out"))
    assert main(argv) == 2
    assert "cannot reach the Hugging Face Hub at " in capsys.readouterr().err
    # Wrapped in an error of ours, ours speaks: it says what was tried and what was kept.
    try:
        raise raised[0]
    except httpx2.ConnectError as cause:
        try:
            raise RuntimeError("publish failed after 2 attempts; the repo was left unchanged")
        except RuntimeError as ours:
            ours.__cause__ = cause
            raised.append(ours)
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "error: publish failed after 2 attempts; the repo was left unchanged\n"
    )


def test_publish_lists_the_first_deletions_and_counts_the_rest(tmp_path, capsys, monkeypatch):
    from pipeline import publish
    from pipeline.cli import main

    deleted = [f"data/train-{i:05d}.parquet" for i in range(12)]
    result = publish.PublishResult(
        location=str(tmp_path / "r"), revision=None, changed=True, deleted=tuple(deleted)
    )
    monkeypatch.setattr(publish, "publish_to_folder", lambda config: result)
    assert main(["publish", "--build", str(tmp_path), "--to", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "deleted data/train-00009.parquet" in out and "train-00010" not in out
    assert "  ... and 2 more" in out


def test_a_lock_taken_on_a_folder_a_refused_run_just_removed_is_refused(tmp_path, monkeypatch):
    from pipeline import _io

    build = tmp_path / "build"
    build.mkdir()
    real = _io._flock

    def after_their_cleanup(handle, shared, folder):
        # A refused first run removed its lock file (and folder) between this run's open and
        # its lock: holding that lock would guard nothing, and a third run would take a new one.
        (folder / _io.LOCK_FILE).unlink()
        return real(handle, shared, folder)

    monkeypatch.setattr(_io, "_flock", after_their_cleanup)
    with (
        pytest.raises(RuntimeError, match="was removed by another run"),
        _io.build_lock(build, "encode"),
    ):
        pass


def test_a_failed_atomic_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    from pipeline import _io

    target = tmp_path / "index" / "manifest.json"
    target.parent.mkdir()
    with pytest.raises(OSError, match="disk full"), _io.atomic_path(target) as tmp:
        tmp.write_text("half a manifest")
        raise OSError("disk full")
    assert list(target.parent.iterdir()) == []  # no hidden .manifest.json.PID.tmp left


def test_cli_errors_are_one_clear_line(tmp_path, tiny_model_dir, capsys):
    from pipeline.cli import main

    # A --data typo is said first, before a model is loaded (this one would fail to load).
    encode = ["encode", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]
    assert main([*encode, "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "no such folder" in err and "Traceback" not in err
    (tmp_path / "photos").mkdir()
    encode[2] = str(tmp_path / "photos")
    assert main([*encode, "--model", str(tiny_model_dir), "--reuse-revision", "v2"]) == 2
    err = capsys.readouterr().err
    assert "--reuse-revision v2" in err
    assert "add --reuse" in err and not (tmp_path / "b").exists()
    result = run_cli("index", "--build", tmp_path, check=False)
    assert result.returncode == 2 and "pipeline encode" in result.stderr
    for command in ("download", "encode", "index", "publish"):
        help_text = run_cli(command, "--help").stdout
        assert "usage: python -m pipeline " + command in help_text


def test_cli_names_the_mistake_a_newcomer_makes(tmp_path, capsys):
    from pipeline.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "captions.jsonl").write_text("")
    out = tmp_path / "b"
    # The captions file instead of its folder: said as such, with the folder to give instead.
    assert main(["encode", "--data", str(photos / "captions.jsonl"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and f"(here: --data {photos})" in err and "no such folder" not in err
    assert not out.exists()
    # A mistyped flag: the command's own usage, and the flag it was probably meant to be.
    with pytest.raises(SystemExit) as exit_:
        main(["encode", "--data", str(photos), "--out", str(out), "--modle", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m pipeline encode" in err
    assert "unrecognized arguments: --modle x (--modle: did you mean --model?)" in err
    # ...written with its value (--flag=value): the flag alone is matched.
    with pytest.raises(SystemExit):
        main(["encode", "--data", str(photos), "--out", str(out), "--modle=utkubascakir/x"])
    assert "(--modle: did you mean --model?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --help is a flag of every command too
        main(["encode", "--data", str(photos), "--out", str(out), "--hlep"])
    assert "(--hlep: did you mean --help?)" in capsys.readouterr().err
    assert not out.exists()


def test_a_mistyped_required_flag_is_named_not_only_missed(tmp_path, capsys):
    # `--ouput b3` said only "the following arguments are required: --out": argparse looks for
    # missing flags before it returns the unknown ones.
    from pipeline.cli import main

    out = tmp_path / "b3"
    with pytest.raises(SystemExit) as exit_:
        main(["encode", "--data", str(tmp_path), "--ouput", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m pipeline encode" in err and "[--out" not in err  # (required)
    assert (
        f"error: unrecognized arguments: --ouput {out} (--ouput: did you mean --out?); "
        "the following arguments are required: --out\n"
    ) in err
    with pytest.raises(SystemExit):  # a missing flag alone, as argparse says it
        main(["publish", "--build", str(tmp_path)])
    assert capsys.readouterr().err.endswith("error: one of the arguments --repo --to is required\n")
    assert not out.exists()


def test_a_split_the_dataset_lacks_is_named_with_the_flag(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.inputs import load_split

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "data" / "train-00000.parquet")
    with pytest.raises(ValueError, match=r"has no split 'long_captions' .*; pass --split"):
        load_split(str(tmp_path), "long_captions")
    assert load_split(str(tmp_path), "train").num_rows == 1
    # Any other error of the dataset is its own, not said to be the split's.
    import datasets

    def other(*args, **kwargs):
        raise ValueError("Couldn't cast array of type int64 to string")

    monkeypatch.setattr(datasets, "load_dataset", other)
    with pytest.raises(ValueError, match=r"^Couldn't cast array"):
        load_split(str(tmp_path), "train")


def test_path_errors_and_a_closed_output_pipe_are_not_tracebacks(tmp_path, generated_build, capsys):
    from pipeline.cli import main

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for command in (
        ["download", "--output-dir", str(a_file), "--num-samples", "1"],
        ["publish", "--build", str(generated_build), "--to", str(a_file / "sub")],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(a_file) in err and "Traceback" not in err
    # `... | head`: the reader goes away; not "cannot reach the Hub", not a traceback.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "publish", "--build", str(generated_build),
         "--to", str(tmp_path / "repo")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
    assert (tmp_path / "repo" / "index" / "manifest.json").is_file()  # the work was done


def test_in_process_api_matches_the_cli(tmp_path, shared_data, tiny_model_dir):
    folder = make_messy_folder(tmp_path, shared_data)
    summary = run_encode(
        FolderSource(folder), EncodeConfig(out=tmp_path / "b", model=str(tiny_model_dir))
    )
    assert (summary.images, summary.skipped) == (5, 9)
    assert summary.skipped_reasons["duplicate"] == 1
    manifest = run_index(IndexConfig(build=tmp_path / "b"))
    assert manifest.num_rows == 5 and manifest.num_captions == 5 and manifest.num_skipped == 9


def test_a_hub_dataset_listing_holds_no_image_bytes(tmp_path):
    """Each record reads its row's bytes when asked: a rank keeps only its own images."""
    import tracemalloc

    from datasets import Dataset, Features, Image, Value

    from pipeline.inputs import HubSource

    rng = np.random.default_rng(0)
    blobs = [rng.bytes(400_000) for _ in range(20)]  # 8 MB; never decoded by the listing
    features = Features({"image": Image(), "text": Value("string"), "image_id": Value("string")})
    rows = {
        "image": [{"bytes": b, "path": None} for b in blobs],
        # Two rows without a caption; a caption's runs of blanks are made one space, as a
        # folder's are (the same text must embed alike from either source).
        "text": [None, ""] + ["foto\t 2\n"] + [f"foto {i}" for i in range(3, 20)],
        "image_id": [f"id{i}" for i in range(20)],
    }
    (tmp_path / "ds" / "data").mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds/data/train.parquet")
    source = HubSource(str(tmp_path / "ds"))
    source.read()  # the Arrow cache is made; the read measured below lists from it
    tracemalloc.start()
    records, skips = source.read()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The rows without a caption are kept for image search, each skip said once.
    assert [s.kind for s in skips] == ["empty or missing caption"] * 2, skips
    assert [r.image_id for r in records] == rows["image_id"]
    assert [r.captions for r in records[:3]] == [[], [], ["foto 2"]]
    assert held < sum(map(len, blobs)) / 4, f"the listing holds {held} bytes"
    assert [r.read_bytes() for r in records] == blobs


def test_a_hub_dataset_with_repeated_or_missing_ids_gives_each_row_an_id_of_its_own(
    tmp_path, monkeypatch
):
    """The card says image_id is unique in the dataset: a source's repeated ids do not make
    two rows one id, and a missing id is the row number, not "None"."""
    from datasets import Dataset, Features, Image, Value

    from pipeline.inputs import HubSource

    features = Features({"image": Image(), "text": Value("string"), "image_id": Value("string")})
    rows = {
        "image": [{"bytes": bytes([i]) * 10, "path": None} for i in range(5)],
        "text": [f"foto {i}" for i in range(5)],
        "image_id": ["x1", "x1", None, None, "2"],
    }
    (tmp_path / "ds" / "data").mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds/data/train.parquet")
    records, _ = HubSource(str(tmp_path / "ds")).read()
    assert [r.image_id for r in records] == ["x1", "x1#2", "2", "3", "2#2"]
    # A dataset folder is named by its name, not by its path on this machine (rows published).
    assert [r.path for r in records] == [f"ds:{n}" for n in range(5)]
    monkeypatch.chdir(tmp_path / "ds")  # --hf-dataset . (from inside it): its name all the same
    assert HubSource(".").label() == "ds"


def test_a_hub_dataset_of_image_paths_and_large_caption_lists_is_read(tmp_path):
    """An image column of paths (strings) and captions as large_list<large_string> (as polars
    and pyarrow write them): both are columns --hf-dataset takes, not refused as not text."""
    from datasets import Dataset, Features, LargeList, Value

    from pipeline.inputs import HubSource

    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    features = Features({"image": Value("string"), "text": LargeList(Value("large_string"))})
    rows = {"image": [str(tmp_path / "a.jpg")], "text": [["iki köpek", "karda köpekler"]]}
    (tmp_path / "ds" / "data").mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds/data/train.parquet")
    records, skips = HubSource(str(tmp_path / "ds")).read()
    assert [(r.captions, r.read_bytes()) for r in records] == [
        (["iki köpek", "karda köpekler"], b"jpeg")
    ]
    assert skips == []


def test_a_hub_dataset_whose_captions_are_all_missing_is_read_without_captions(tmp_path):
    """A caption column of nulls only (parquet stores its type as null): each image is a row
    without captions, each reported as such, as when some captions are missing; not refused as
    a column of something other than text."""
    from datasets import Dataset

    from pipeline.inputs import EMPTY_CAPTION, HubSource

    rows = {"image": [{"bytes": bytes([i]) * 10, "path": None} for i in range(2)]}
    (tmp_path / "ds" / "data").mkdir(parents=True)
    Dataset.from_dict({**rows, "text": [None, None]}).to_parquet(tmp_path / "ds/data/t.parquet")
    records, skips = HubSource(str(tmp_path / "ds")).read()
    assert [(r.image_id, r.captions) for r in records] == [("0", []), ("1", [])]
    assert [s.kind for s in skips] == [EMPTY_CAPTION, EMPTY_CAPTION]


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("--caption-column", "column 'n' holds Value('int64'), not text"),
        ("--image-column", "column 'n' holds int64 values, not images"),
    ],
)
def test_a_hub_dataset_column_of_numbers_is_refused_by_name(tmp_path, tiny_model_dir, flag, said):
    """--caption-column / --image-column naming a column of numbers: one error line naming
    the column and the flag, not a TypeError (or an Arrow cast error) from deep inside."""
    from datasets import Dataset

    (tmp_path / "ds" / "data").mkdir(parents=True)
    rows = {"image": ["a.jpg"], "text": ["foto"], "n": [1]}
    Dataset.from_dict(rows).to_parquet(tmp_path / "ds/data/train.parquet")
    args = ("--hf-dataset", tmp_path / "ds", flag, "n", "--out", tmp_path / "build")
    result = run_cli("encode", *args, "--model", tiny_model_dir, check=False)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and f"with {flag}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_workers_give_the_same_shards_as_the_main_process(tmp_path, tiny_model_dir, capsys):
    from conftest import write_photos

    from pipeline.cli import main

    data = write_photos(tmp_path / "data", [f"p{i:02d}" for i in range(10)])
    (data / "images" / "p04.jpg").write_bytes(b"not a photo")  # a skip, in both runs alike
    builds = {}
    for workers in ("0", "2"):
        build = builds[workers] = tmp_path / f"workers-{workers}"
        args = ("--data", data, "--model", tiny_model_dir, "--out", build, "--shard-size", "4")
        run_cli("encode", *args, "--workers", workers)
    files = {
        w: {p.name: p.read_bytes() for p in sorted((b / "shards").iterdir())}
        for w, b in builds.items()
    }
    assert len(files["0"]) == 6  # three shards, each with its skipped.jsonl
    assert files["2"] == files["0"]  # bit for bit
    assert [s["source"] for s in skipped(builds["2"])] == ["images/p04.jpg"]
    result = run_cli("encode", "--help")
    assert "--workers" in " ".join(result.stdout.split())
    capsys.readouterr()
    code = main(["encode", "--data", str(data), "--out", str(tmp_path / "b"), "--workers", "-1"])
    assert code == 2 and capsys.readouterr().err.startswith("error: --workers must be >= 0")


def test_a_nan_embedding_ends_with_one_error_line_and_writes_nothing(tmp_path):
    import torch
    from conftest import write_photos
    from tiny_checkpoint import write_tiny_checkpoint

    model = write_tiny_checkpoint(tmp_path / "nan-model")
    weights = torch.load(model / "pytorch_model.bin", weights_only=True)
    for key in weights:  # the image head's output: every image embedding is NaN
        if key.startswith("image_proj") and key.endswith("weight"):
            weights[key].fill_(float("nan"))
    torch.save(weights, model / "pytorch_model.bin")
    data = write_photos(tmp_path / "data", ["a", "b"])
    build = tmp_path / "build"
    result = run_cli(
        "encode", "--data", data, "--model", model, "--out", build, "--workers", "0", check=False
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert "images/a.jpg" in errors[0] and "NaN or infinite" in errors[0]
    assert "--dtype float32" in errors[0]
    assert not list(build.glob("shards/*.parquet"))


# --- index -----------------------------------------------------------------------------------


def test_manifest_pins_the_model_and_data(shared_build, tiny_model_dir):
    from imagesearchtr import Encoder, Manifest

    manifest = Manifest.load(shared_build / "index" / "manifest.json")
    encoder = Encoder.from_pretrained(tiny_model_dir)
    assert manifest.model_fingerprint == encoder.fingerprint
    assert manifest.model_id == str(Path(tiny_model_dir).resolve())
    assert (manifest.dim, manifest.num_rows, manifest.num_captions) == (encoder.dim, 413, 826)
    assert manifest.metric == "inner_product" and manifest.normalized
    assert manifest.data_hash.startswith("sha256:")
    assert {i.column: i.ntotal for i in manifest.indices} == {"image_emb": 413, "caption_emb": 413}
    assert {"datasets", "faiss-cpu", "torch", "transformers"} <= set(manifest.versions)


def test_indices_are_inner_product(shared_build):
    import faiss

    for column in ("image_emb", "caption_emb"):
        index = faiss.read_index(str(shared_build / "index" / f"{column}.faiss"))
        assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_index_type_choice():
    from pipeline.index import AUTO_FLAT_MAX_ROWS, AUTO_FP16_MAX_ROWS

    # The rule measured by benchmarks/search.py: exact, then fp16 codes, then 8-bit IVF.
    assert choose_index(1000, "auto").factory == "Flat"
    assert choose_index(AUTO_FLAT_MAX_ROWS, "auto").factory == "Flat"
    assert choose_index(AUTO_FLAT_MAX_ROWS + 1, "auto").factory == "SQfp16"
    assert choose_index(AUTO_FP16_MAX_ROWS, "auto").factory == "SQfp16"
    assert choose_index(AUTO_FP16_MAX_ROWS + 1, "auto").index_type == "ivf-sq8"
    # IVF: sqrt(N) lists (a power of two), 1/8 of them probed, 64 training vectors a list.
    big = choose_index(1_000_000, "auto")
    assert (big.index_type, big.factory, big.params) == ("ivf-sq8", "IVF1024,SQ8", {"nprobe": 128})
    assert big.train_size == 64 * 1024
    ivf = choose_index(100_000, "ivf-sq8")
    assert ivf.factory.startswith("IVF") and ivf.params["nprobe"] > 0
    assert choose_index(100_000, "hnsw").factory.startswith("HNSW")
    small = choose_index(500, "ivf-sq8")  # still >= 39 training vectors a list
    assert small.train_size >= 39 * int(small.factory[3:].split(",")[0])


def test_an_hnsw_index_builds_and_the_run_leaves_no_arrow_copy(tmp_path, shared_build):
    from datasets import config

    build = tmp_path / "b"
    shutil.copytree(shared_build, build, ignore=shutil.ignore_patterns("index"))
    cache = Path(config.HF_DATASETS_CACHE)
    before = set(cache.rglob("*.arrow")) if cache.is_dir() else set()
    manifest = run_index(IndexConfig(build=build, index_type="hnsw"))
    assert manifest.index("image_emb").factory == "HNSW32,Flat"
    # The search depth is recorded for the Searcher to set (FAISS's own default is 16).
    assert [i.params for i in manifest.indices] == [{"efSearch": 128}] * 2
    # datasets' Arrow copy of the shards lived in the build for the run only: none is left
    # there, and none was added to the user's datasets cache.
    assert not (build / ARROW_CACHE_DIR).exists()
    assert (set(cache.rglob("*.arrow")) if cache.is_dir() else set()) == before


def test_an_ivf_index_records_the_nprobe_it_was_planned_with(tmp_path, shared_build):
    # The Searcher sets only what the manifest records: without nprobe an IVF index scans one
    # list a query (FAISS's default) and misses most of the nearest rows, without a word.
    build = tmp_path / "b"
    shutil.copytree(shared_build, build, ignore=shutil.ignore_patterns("index"))
    manifest = run_index(IndexConfig(build=build, index_type="ivf-sq8"))
    plan = choose_index(manifest.num_rows, "ivf-sq8")
    assert plan.params["nprobe"] > 1
    for info in manifest.indices:
        assert (info.factory, info.params) == (plan.factory, plan.params)


def test_ivf_lists_are_trained_on_rows_from_all_over_the_build(tmp_path):
    # Rows are stored in path order, so the first rows are the first folders' photos; trained
    # on them (datasets' train_size), the lists fit the rest badly: here half of all rows, the
    # second folder's, fell into one list of 128, and a query there scanned them all.
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.encode import BUILD_FILE, SHARDS_DIR, SUMMARY_FILE, features

    n, dim = 16384, 32
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((2, dim)).astype(np.float32)
    emb = np.concatenate(
        [c + rng.standard_normal((n // 2, dim), dtype=np.float32) for c in centres]
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    build = tmp_path / "build"
    (build / SHARDS_DIR).mkdir(parents=True)
    ids = [f"{'ab'[i * 2 // n]}/{i:05d}" for i in range(n)]  # two folders, in path order
    table = pa.table(
        {
            "image": [{"bytes": b"\xff\xd8%d" % i, "path": f"{i}.jpg"} for i in range(n)],
            "image_id": ids,
            "path": [f"{i}.jpg" for i in ids],
            "captions": [[] for _ in range(n)],
            "image_emb": list(emb),
            "caption_emb": [None] * n,
            "sha256": [f"{i:064x}" for i in range(n)],
        },
        schema=features(dim).arrow_schema,
    )
    pq.write_table(table, build / SHARDS_DIR / "shard-00000.parquet")
    info = {"model_id": "m", "model_revision": None, "model_fingerprint": "sha256:0", "dim": dim}
    info |= {"source": "two folders", "plan_hash": "", "num_planned": n, "shard_size": n}
    (build / BUILD_FILE).write_text(json.dumps(info))
    (build / SUMMARY_FILE).write_text("{}")  # what a finished encode leaves
    manifest = run_index(IndexConfig(build=build, index_type="ivf-sq8"))
    assert manifest.index("image_emb").factory == "IVF128,SQ8"  # trained on 8,192 of the rows
    index = faiss.read_index(str(build / "index" / "image_emb.faiss"))
    ivf = faiss.extract_index_ivf(index)  # (a view: index must stay alive)
    sizes = [ivf.invlists.list_size(i) for i in range(ivf.nlist)]
    assert sum(sizes) == n and max(sizes) < n // 20, max(sizes)


# --- publish + load -----------------------------------------------------------------------


def test_a_folder_republished_while_a_searcher_loads_it_is_read_again_whole(
    tmp_path, shared_build, generated_build, tiny_encoder, monkeypatch
):
    # `make demo`'s app starting while `publish --to` replaced its folder took the manifest of
    # one build and files of the other, and refused the folder as damaged ("re-run index").
    import imagesearchtr.searcher
    from imagesearchtr import Searcher, SearchSetupError

    repo = tmp_path / "repo"
    publish_to_folder(PublishConfig(build=shared_build, to=repo))
    read_manifest, swaps = imagesearchtr.searcher.load_manifest, []

    def republished_meanwhile(*args, **kwargs):
        loaded = read_manifest(*args, **kwargs)
        if not swaps:  # once: the old build's manifest read, then the folder replaced
            swaps.append(publish_to_folder(PublishConfig(build=generated_build, to=repo)))
        return loaded

    monkeypatch.setattr(imagesearchtr.searcher, "load_manifest", republished_meanwhile)
    with Searcher.from_repo(repo, encoder=tiny_encoder, cache_dir=tmp_path / "c") as searcher:
        assert len(searcher) == 6  # the new build, whole
    assert swaps and swaps[0].changed
    # A folder that is damaged, not replaced, is refused at once, as before.
    damaged = repo / "index" / "image_emb.faiss"
    damaged.unlink()  # (not written in place: it is a hard link to the build's file)
    damaged.write_bytes(b"damaged")
    with pytest.raises(SearchSetupError, match="image_emb.faiss"):
        Searcher.from_repo(repo, encoder=tiny_encoder, cache_dir=tmp_path / "c")


def test_publish_does_not_import_torch(tmp_path, shared_build):
    # imagesearchtr imports its public names on first use, so a command that only reads a
    # manifest and writes files does not pay seconds for importing torch and transformers.
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"assert main(['publish', '--build', {str(shared_build)!r}, '--to', "
        f"{str(tmp_path / 'repo')!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"


def test_publish_to_folder_is_loadable_and_searchable(tmp_path, shared_build, tiny_model_dir):
    import faiss
    from datasets import load_dataset

    from imagesearchtr import Encoder

    target = tmp_path / "repo"
    run_cli("publish", "--build", shared_build, "--to", target)
    names = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "data/train-00000.parquet",
        "index/caption_emb.faiss",
        "index/image_emb.faiss",
        "index/image_ranges.npy",
        "index/manifest.json",
    ]
    ds = load_dataset(str(target), split="train")
    assert len(ds) == 413 and ds.features["image_emb"].length == 32
    ds.load_faiss_index("image_emb", str(target / "index/image_emb.faiss"))
    assert ds.get_index("image_emb").faiss_index.metric_type == faiss.METRIC_INNER_PRODUCT
    photo = ds[7]["image"]
    query = Encoder.from_pretrained(tiny_model_dir).encode_images([photo])[0]
    scores, rows = ds.get_nearest_examples("image_emb", query, k=3)
    assert rows["image_id"][0] == ds[7]["image_id"] and scores[0] > 0.99


def test_republishing_the_same_build_is_a_no_op(tmp_path, shared_build):
    target = tmp_path / "repo"
    first = publish_to_folder(PublishConfig(build=shared_build, to=target))
    (target / "notes.txt").write_text("kept")
    (target / "data" / ".DS_Store").write_bytes(b"\0")  # a file manager looked at it
    second = publish_to_folder(PublishConfig(build=shared_build, to=target))
    assert first.changed and not second.changed
    assert (target / "notes.txt").read_text() == "kept"
    # A published file lost or damaged since: the next publish puts it back.
    index = target / "index" / "image_emb.faiss"
    good = index.read_bytes()
    index.unlink()
    ranges = target / "index" / "image_ranges.npy"
    ranges.unlink()  # (not written in place: it is a hard link to the build's file)
    ranges.write_bytes(b"damaged")
    third = publish_to_folder(PublishConfig(build=shared_build, to=target))
    assert third.changed and index.read_bytes() == good
    assert set(third.uploaded) == {"index/image_emb.faiss", "index/image_ranges.npy"}


def test_publish_to_folder_refuses_to_replace_what_it_did_not_write(tmp_path, shared_build):
    from pipeline.publish import PublishError

    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(PublishError, match="afile is a file; give a folder"):
        publish_to_folder(PublishConfig(build=shared_build, to=afile))
    assert afile.read_text() == "mine"
    # The folder an encode read: data/images/... and data/captions.jsonl, no index/manifest.json.
    photos = tmp_path / "photos"
    (photos / "data" / "images").mkdir(parents=True)
    (photos / "data" / "captions.jsonl").write_text("{}\n")
    (photos / "data" / "images" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(PublishError, match="holds data/ but is not a published repo"):
        publish_to_folder(PublishConfig(build=shared_build, to=photos))
    assert sorted(p.name for p in photos.rglob("*")) == [
        "a.jpg",
        "captions.jsonl",
        "data",
        "images",
    ]
    (photos / "index").mkdir()
    with pytest.raises(PublishError, match="holds data/ and index/ but is not a published"):
        publish_to_folder(PublishConfig(build=shared_build, to=photos))
    # Even with an index/manifest.json (an `index` run with the build inside the photos
    # folder writes one), files under data/ that a publish never writes are not deleted.
    (photos / "index" / "manifest.json").write_text("{}")
    with pytest.raises(
        PublishError,
        match=r"holds files under data/ that publish never writes \(data/captions.jsonl, "
        r"data/images/a.jpg\)",
    ):
        publish_to_folder(PublishConfig(build=shared_build, to=photos))
    assert (photos / "data" / "images" / "a.jpg").read_bytes() == b"jpeg"
    # Nor the photos folder as README's "Your own photos" lays it out: captions.jsonl, images/.
    own = tmp_path / "own photos"
    (own / "images").mkdir(parents=True)
    (own / "captions.jsonl").write_text("{}\n")
    (own / "images" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(PublishError, match=r"holds captions.jsonl: it is a photos folder"):
        publish_to_folder(PublishConfig(build=shared_build, to=own))
    assert sorted(p.name for p in own.rglob("*")) == ["a.jpg", "captions.jsonl", "images"]
    # Nor a folder of photos without captions (its sub-folder images/, or a folder above it):
    # a publish killed between its two renames would hide them from the next encode.
    for target, photo in ((own / "images", "a.jpg"), (tmp_path, "own photos/images/a.jpg")):
        with pytest.raises(PublishError, match=rf"holds photos \({photo}\) and is not a pub"):
            publish_to_folder(PublishConfig(build=shared_build, to=target))
    listed = sorted(p.name for p in own.rglob("*") if not p.name.startswith("."))  # (its lock)
    assert listed == ["a.jpg", "captions.jsonl", "images"]
    # Nor does a publish replace its own build.
    with pytest.raises(PublishError, match="is the build folder .* or inside it"):
        publish_to_folder(PublishConfig(build=shared_build, to=shared_build / "repo"))
    assert not (shared_build / "repo").exists()


def test_publish_refuses_a_negative_retry_count_before_touching_the_hub(shared_build):
    from pipeline.publish import publish_to_hub

    with pytest.raises(ValueError, match="--retries must be 0 or more, got -1"):
        publish_to_hub(PublishConfig(build=shared_build, repo_id="user/photos", retries=-1))


def test_encode_names_a_build_folder_it_cannot_use(tmp_path, shared_data, tiny_model_dir):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ValueError, match="--out .*afile is a file; give a folder"):
        run_encode(FolderSource(shared_data), EncodeConfig(out=afile, model=str(tiny_model_dir)))
    build = tmp_path / "b"
    build.mkdir()
    (build / "build.json").write_text('{"model_fingerprint": ')  # cut off, as by a full disk
    with pytest.raises(ValueError, match="build.json is damaged .*pass --overwrite"):
        run_encode(FolderSource(shared_data), EncodeConfig(out=build, model=str(tiny_model_dir)))
    # JSON, but not an object: the same (through the CLI, where an update without --model reads
    # the build's model from it, it was an AttributeError's traceback).
    from pipeline.cli import main

    (build / "build.json").write_text("[]")
    assert main(["encode", "--data", str(shared_data), "--out", str(build)]) == 2


def test_a_refused_repo_id_says_why(capsys):
    # Both said only "is not a repo id: give USER/NAME".
    from pipeline.cli import main

    url = "https://huggingface.co/datasets/testuser/turkish-photos"
    space_url = "https://huggingface.co/spaces/testuser/turkish-photos-search/tree/main"
    for argv, said in (
        (
            ["publish", "--build", "b", "--repo", "testuser/turkish photos"],
            "'testuser/turkish photos' is not a repo id: a space is not allowed; give USER/NAME "
            "(letters, digits, '-', '_' and '.',",
        ),
        (
            ["publish", "--build", "b", "--repo", "testuser/türkçe-fotoğraflar"],
            "is not a repo id: 'ü' is not allowed; give USER/NAME",
        ),
        (
            ["publish", "--build", "b", "--repo", url],
            f"'{url}' is not a repo id: that is a URL; did you mean testuser/turkish-photos?",
        ),
        (
            ["publish-space", "--dataset-repo", "a/b", "--space", space_url],
            "that is a URL; did you mean testuser/turkish-photos-search?",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert said in capsys.readouterr().err
    from imagesearchtr.manifest import repo_id_problem

    assert repo_id_problem("testuser/turkish-photos") is None
    assert repo_id_problem("testuser/-photos").startswith("give USER/NAME (")  # not '-' alone


def test_the_cli_refuses_empty_paths_and_a_build_among_the_photos(tmp_path, capsys, shared_data):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:  # an unset shell variable: not "this folder"
        main(["encode", "--data", str(shared_data), "--out", ""])
    assert exit_info.value.code == 2
    assert "argument --out: empty path" in capsys.readouterr().err
    for flags in (["publish", "--build", "b", "--repo"], ["publish-space", "--dataset-repo", "a/b",
                                                          "--space"]):  # fmt: skip
        # a bare name does not say whose repo it is
        with pytest.raises(SystemExit) as exit_info:
            main([*flags, "turkish-photos"])
        assert exit_info.value.code == 2
        assert "'turkish-photos' is not a repo id: give USER/NAME" in capsys.readouterr().err
    photos = tmp_path / "photos"
    (photos / "data").mkdir(parents=True)
    for data in (photos, photos / "data"):  # the build folder itself, or its data/
        code = main(["encode", "--data", str(data), "--out", str(photos),
                     "--model", str(tmp_path / "no-model")])  # fmt: skip
        assert code == 2
        assert "give the build a folder of its own" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "photos"]


def test_a_revision_is_refused_with_a_model_folder(tmp_path, capsys, shared_data, tiny_model_dir):
    # A folder has no commits: a --revision beside it would be recorded as a pin it never had.
    from imagesearchtr.encoder import Encoder
    from pipeline.cli import main

    out = tmp_path / "build"
    code = main(["encode", "--data", str(shared_data), "--out", str(out),
                 "--model", str(tiny_model_dir), "--revision", "v2"])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "--revision v2 names a commit of a Hub model" in capsys.readouterr().err
    assert Encoder.from_pretrained(tiny_model_dir, revision="v2").revision is None


def test_an_index_run_over_an_unchanged_build_changes_no_byte(tmp_path, generated_build):
    # make publish runs every step: a manifest with a new creation time alone would make a
    # new dataset commit and a new Space commit each time.
    build = tmp_path / "build"
    shutil.copytree(generated_build, build)
    published = publish_to_folder(PublishConfig(build=build, to=tmp_path / "repo"))
    files = {p: p.read_bytes() for p in sorted((build / "index").iterdir())}
    time.sleep(1.1)  # the creation time is written to the second
    run_index(IndexConfig(build=build))
    assert {p: p.read_bytes() for p in sorted((build / "index").iterdir())} == files
    again = publish_to_folder(PublishConfig(build=build, to=tmp_path / "repo"))
    assert published.changed and not again.changed


def test_a_build_that_recorded_its_photos_path_publishes_only_the_folders_name(
    tmp_path, generated_build
):
    build = tmp_path / "build"
    shutil.copytree(generated_build, build)
    info = json.loads((build / "build.json").read_text())
    info["source"] = "local folder /home/someone/private/photos"  # as encode once recorded it
    (build / "build.json").write_text(json.dumps(info))
    assert run_index(IndexConfig(build=build)).source == "local folder photos"


def test_index_type_names_are_taken_in_any_case(tmp_path, generated_build, capsys):
    from pipeline.cli import main

    build = tmp_path / "build"
    shutil.copytree(generated_build, build)
    assert main(["index", "--build", str(build), "--index-type", " FLAT "]) == 0
    assert "image_emb: Flat" in capsys.readouterr().out


def test_an_index_type_faiss_cannot_train_is_named_with_the_row_count(tmp_path, generated_build):
    from pipeline.index import IndexConfig, run_index

    build = tmp_path / "build"
    shutil.copytree(generated_build, build)
    with pytest.raises(ValueError, match=r"--index-type PQ8: FAISS cannot build PQ8 over 6 rows "
                       r"\(.*256.*\); choose another type"):  # fmt: skip
        run_index(IndexConfig(build=build, index_type="PQ8"))


def test_one_build_is_used_by_one_writer_at_a_time(tmp_path, generated_build):
    # BUILD/.lock is flock'ed: exclusively by encode and index, shared by publish.
    import fcntl

    from pipeline.index import IndexConfig, run_index
    from pipeline.publish import publish_to_folder

    build = tmp_path / "build"
    shutil.copytree(generated_build, build)
    with open(build / ".lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # as another `encode` holds it
        other.truncate(0)
        other.write("`encode` (pid 4242)")
        other.flush()
        with pytest.raises(RuntimeError, match=r"build is in use by `encode` \(pid 4242\); wait"):
            run_index(IndexConfig(build=build))
        with pytest.raises(RuntimeError, match="in use by"):
            publish_to_folder(PublishConfig(build=build, to=tmp_path / "repo"))
        fcntl.flock(other, fcntl.LOCK_UN)
        fcntl.flock(other, fcntl.LOCK_SH)  # as a `publish` reads it: readers share
        assert publish_to_folder(PublishConfig(build=build, to=tmp_path / "repo")).changed
        with pytest.raises(RuntimeError, match="in use by"):
            run_index(IndexConfig(build=build))
    assert run_index(IndexConfig(build=build)).num_rows == 6  # the lock went with its holder


def test_evaluate_checks_its_output_path_before_it_evaluates(tmp_path, capsys):
    from pipeline.cli import main

    for output, said in (
        (tmp_path, "is a folder; give a file"),
        (tmp_path / "nodir" / "e.json", "there is no folder"),
    ):
        code = main(["evaluate", "--repo", str(tmp_path / "no-repo"), "--output", str(output)])
        assert code == 2 and said in capsys.readouterr().err


def test_an_index_type_faiss_cannot_build_is_named_before_the_data_is_written(
    tmp_path, shared_build
):
    build = tmp_path / "b"
    shutil.copytree(shared_build, build, ignore=shutil.ignore_patterns("data", "index"))
    for index_type, said in (
        ("garbage", "could not parse index string garbage"),
        ("PQ5", "multiple of the number of subquantizers"),  # 32-d vectors
    ):
        with pytest.raises(
            ValueError, match=f"--index-type '{index_type}' is neither .*{said}"
        ) as err:
            run_index(IndexConfig(build=build, index_type=index_type))
        # FAISS's own words, without the C++ function and source line it starts them with.
        assert "Error in" not in str(err.value) and ".cpp:" not in str(err.value)
        assert not (build / "data").exists() and not (build / "index").exists()


def test_publish_refuses_rows_and_index_from_different_builds(tmp_path, shared_build):
    build = tmp_path / "b"
    shutil.copytree(shared_build, build)
    for shard in sorted((build / "shards").glob("shard-*.parquet"))[1:]:
        shard.unlink()
    result = run_cli("publish", "--build", build, "--to", tmp_path / "repo", check=False)
    assert result.returncode == 2 and "re-run" in result.stderr
    assert not (tmp_path / "repo").exists()
    # An encode that changed only which inputs were skipped: the manifest's count and the
    # card's reasons would disagree, so the index is stale too.
    from pipeline.publish import PublishConfig, publish_to_folder

    skips = tmp_path / "skips"
    shutil.copytree(shared_build, skips)
    line = {"source": "captions.jsonl:9", "kind": "bad caption line", "reason": "not JSON"}
    with (skips / "skipped.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match="index does not match the encoded rows; re-run"):
        publish_to_folder(PublishConfig(build=skips, to=tmp_path / "repo"))
    # An index run killed between writing a FAISS file and the manifest: the file is not the
    # one the manifest names, and every reader would refuse the published repo.
    killed = tmp_path / "killed"
    shutil.copytree(shared_build, killed)
    with (killed / "index" / "image_emb.faiss").open("ab") as faiss_file:
        faiss_file.write(b"\0")
    with pytest.raises(ValueError, match="index does not match the encoded rows; re-run"):
        publish_to_folder(PublishConfig(build=killed, to=tmp_path / "repo"))
    # ...and the next index run leaves none of a killed run's temporary files behind.
    from pipeline.index import IndexConfig, run_index

    orphans = [killed / "index" / ".image_emb.faiss.999999.tmp", killed / ".indexed.json.9.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    run_index(IndexConfig(build=killed))
    assert not [p.name for p in killed.rglob("*.tmp")]
    publish_to_folder(PublishConfig(build=killed, to=tmp_path / "repo"))


def test_sharded_encoding_with_torchrun_equals_one_process(
    tmp_path, shared_data, tiny_model_dir, shared_build
):
    build = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "pipeline", "encode", "--data", str(shared_data), "--model", str(tiny_model_dir)]
    cmd += ["--out", str(build), "--shard-size", "64", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rank 1/2" in result.stderr  # both ranks really worked
    run_cli("index", "--build", build)
    table, reference = read_rows(build), read_rows(shared_build)
    assert table.column("image_id").to_pylist() == reference.column("image_id").to_pylist()
    np.testing.assert_allclose(
        np.asarray(table.column("image_emb").to_pylist()),
        np.asarray(reference.column("image_emb").to_pylist()),
        atol=1e-5,
    )
    from imagesearchtr import Manifest

    assert Manifest.load(build / "index/manifest.json").num_rows == 413


# --- updates: a changed input re-encodes only what changed --------------------------------------


def encode(data, build, encoder, model_dir, **kw):
    config = EncodeConfig(out=build, model=str(model_dir), dtype="float32", shard_size=4, **kw)
    return run_encode(FolderSource(data), config, encoder=encoder)


def rows_by_id(build: Path) -> dict:
    table = read_rows(build, ("image_id", "sha256", "captions", "image_emb", "caption_emb"))
    return {r["image_id"]: r for r in table.to_pylist()}


def emb_bytes(row, column) -> bytes | None:
    value = row[column]
    return None if value is None else np.asarray(value, dtype=np.float32).tobytes()


def test_update_encodes_only_added_and_modified_images(tmp_path, tiny_encoder, tiny_model_dir):
    from conftest import write_photos

    data = write_photos(tmp_path / "data", [f"p{i:02d}" for i in range(20)])
    build = tmp_path / "build"
    first = encode(data, build, tiny_encoder, tiny_model_dir)
    assert (first.encoded_images, first.reused_images) == (20, 0)
    before = rows_by_id(build)

    # Remove p03; new bytes for p05; new caption for p07; two new photos.
    (data / "images" / "p03.jpg").unlink()
    write_photos(tmp_path / "other", ["p05"], seed=9)
    shutil.copy(tmp_path / "other/images/p05.jpg", data / "images/p05.jpg")
    lines = (data / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    lines = [ln for ln in lines if "p03.jpg" not in ln]
    lines = [ln.replace("karda oynayan", "evde uyuyan") if "p07.jpg" in ln else ln for ln in lines]
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_photos(data, ["n1", "n2"])

    flags = ("--model", tiny_model_dir, "--dtype", "float32", "--shard-size", "4")
    result = run_cli("encode", "--data", data, "--out", build, *flags)
    summary = json.loads((build / "summary.json").read_text())
    assert summary == {
        "images": 21,
        "encoded_images": 3,  # p05, n1, n2
        "reused_images": 18,
        "encoded_captions": 4,  # theirs + p07's new caption
        "reused_captions": 17,
        "skipped": 0,
    }
    assert "3 encoded, 18 reused" in result.stdout and "4 encoded, 17 reused" in result.stdout
    after = rows_by_id(build)
    assert "images/p03" not in after and {"images/n1", "images/n2"} <= set(after)
    for image_id in set(before) - {"images/p03", "images/p05", "images/p07"}:
        for column in ("image_emb", "caption_emb"):  # copied bit for bit
            assert emb_bytes(after[image_id], column) == emb_bytes(before[image_id], column)
    p05, p07 = after["images/p05"], after["images/p07"]
    assert p05["sha256"] != before["images/p05"]["sha256"]
    assert emb_bytes(p05, "image_emb") != emb_bytes(before["images/p05"], "image_emb")
    assert emb_bytes(p07, "image_emb") == emb_bytes(before["images/p07"], "image_emb")
    assert p07["captions"] == ["evde uyuyan köpek p07"]
    # Every row equals what a fresh build of the new input holds.
    fresh = tmp_path / "fresh"
    encode(data, fresh, tiny_encoder, tiny_model_dir)
    reference = rows_by_id(fresh)
    assert list(after) == list(reference)
    for image_id, row in reference.items():
        for column in ("image_emb", "caption_emb"):
            np.testing.assert_allclose(after[image_id][column], row[column], atol=1e-5)
    # The old plan's shards are gone once the new one is complete.
    names = json.loads((build / "build.json").read_text())["shards"]
    assert sorted(p.name for p in (build / "shards").glob("*.parquet")) == sorted(names)


def test_an_update_killed_before_its_summary_leaves_no_summary_of_the_run_before(
    tmp_path, tiny_encoder, tiny_model_dir, monkeypatch
):
    from conftest import write_photos

    import pipeline.encode

    data = write_photos(tmp_path / "data", ["a", "b"])
    build = tmp_path / "build"
    encode(data, build, tiny_encoder, tiny_model_dir)
    assert json.loads((build / "summary.json").read_text())["images"] == 2
    write_photos(data, ["c", "d", "e", "f"])

    def killed(*args):  # every shard of the new plan written, its summary not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.encode, "_collect_skips", killed)
    with pytest.raises(KeyboardInterrupt):
        encode(data, build, tiny_encoder, tiny_model_dir)
    # The first run's summary (2 images) would describe a build that now plans 6, and its
    # skipped.jsonl another input: index refuses the build until the encode is finished.
    assert not (build / "summary.json").exists()
    with pytest.raises(ValueError, match="last encode did not finish.*re-run the same"):
        run_index(IndexConfig(build=build))
    monkeypatch.undo()
    encode(data, build, tiny_encoder, tiny_model_dir)  # the same command resumes
    summary = json.loads((build / "summary.json").read_text())
    assert (summary["images"], summary["encoded_images"]) == (6, 0)


def published_files(folder: Path) -> dict:
    """repo path -> (inode, mtime_ns, size) of every file under data/ and index/."""
    out = {}
    for path in sorted(folder.rglob("*.*")):
        if path.is_file() and path.parent.name in ("data", "index"):
            st = path.stat()
            out[path.relative_to(folder).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_republish_after_an_update_keeps_unchanged_data_files(
    tmp_path, tiny_encoder, tiny_model_dir, monkeypatch
):
    from conftest import write_photos
    from datasets import load_dataset

    from pipeline.datafiles import image_ranges, images_uncompressed

    data = write_photos(tmp_path / "data", [f"p{i:02d}" for i in range(24)])
    build, repo = tmp_path / "build", tmp_path / "repo"
    encode(data, build, tiny_encoder, tiny_model_dir)
    target = 6 * 2_000  # about 6 rows a file (a ~1.6 KB JPEG + embeddings each)
    manifest = run_index(IndexConfig(build=build, target_bytes=target))
    paths = [f["path"] for f in manifest.data_files]
    assert len(paths) >= 3 and sum(f["num_rows"] for f in manifest.data_files) == 24
    publish_to_folder(PublishConfig(build=build, to=repo))
    before = published_files(repo)

    # Rebuilding the same rows writes the same bytes (deterministic files).
    again = tmp_path / "again"
    encode(data, again, tiny_encoder, tiny_model_dir)
    run_index(IndexConfig(build=again, target_bytes=target))
    for path in paths:
        assert (again / path).read_bytes() == (build / path).read_bytes()

    # Add three photos and remove one from the second file.
    (with_p08,) = [
        p for p in paths if "images/p08" in pq.read_table(repo / p)["image_id"].to_pylist()
    ]
    write_photos(data, ["z1", "z2", "z3"])
    (data / "images" / "p08.jpg").unlink()
    encode(data, build, tiny_encoder, tiny_model_dir)
    from pipeline import datafiles

    read = []  # the files whose image ranges index works out (not those it kept)
    monkeypatch.setattr(
        datafiles, "image_ranges", lambda p, f=datafiles.image_ranges: read.append(p.name) or f(p)
    )
    updated = run_index(IndexConfig(build=build, target_bytes=target))
    monkeypatch.undo()
    result = publish_to_folder(PublishConfig(build=build, to=repo))
    after = published_files(repo)
    for path in paths:
        if path != with_p08:
            assert after[path] == before[path], f"{path} was rewritten"
    assert after[with_p08] != before[with_p08]
    new_files = sorted(set(after) - set(before))
    assert new_files and all(p > max(paths) for p in new_files)  # new rows: new files at the end
    assert sorted(read) == sorted(Path(p).name for p in [with_p08, *new_files] if "data/" in p)
    assert set(result.uploaded) == {
        with_p08,
        *new_files,
        "index/image_emb.faiss",
        "index/caption_emb.faiss",
        "index/image_ranges.npy",
        "index/manifest.json",
    }
    # Rows and indices agree: the index's row i is the data files' row i.
    ds = load_dataset(str(repo), split="train")
    assert len(ds) == 26 == updated.num_rows
    assert "images/p08" not in ds["image_id"] and ds["image_id"][-3:] == [
        "images/z1",
        "images/z2",
        "images/z3",
    ]
    ds.load_faiss_index("image_emb", str(repo / "index/image_emb.faiss"))
    for row in (0, 7, 25):
        _, found = ds.get_nearest_examples("image_emb", np.asarray(ds[row]["image_emb"]), k=1)
        assert found["image_id"] == [ds[row]["image_id"]]
    # The kept files' image ranges (taken from the last run, not worked out again) are each
    # file's own, in the manifest's order: the Space's reads find every row's photo.
    published = [image_ranges(repo / f["path"]) for f in updated.data_files]
    assert np.array_equal(np.load(repo / "index/image_ranges.npy"), np.concatenate(published))
    # Nothing changed: nothing is written.
    assert not publish_to_folder(PublishConfig(build=build, to=repo)).changed
    # Every photo of one file removed: that file goes from the build too (a file left behind
    # would be read as the previous layout by the next run).
    for image_id in pq.read_table(build / paths[1])["image_id"].to_pylist():
        (data / f"{image_id}.jpg").unlink(missing_ok=True)
    encode(data, build, tiny_encoder, tiny_model_dir)
    fewer = run_index(IndexConfig(build=build, target_bytes=target))
    listed = {Path(f["path"]).name for f in fewer.data_files}
    assert (
        Path(paths[1]).name not in listed
        and {p.name for p in (build / "data").glob("*.parquet")} == listed
    )

    # A data file an older version wrote (image bytes compressed, or a dictionary page) is
    # written again by index, so that each image stays one range read of its own bytes.
    styles = ({"compression": "snappy"}, {"compression": "zstd", "use_dictionary": False},
              {"compression": "none", "use_dictionary": True})  # fmt: skip
    for old_style in styles:
        pq.write_table(pq.read_table(build / paths[0]), build / paths[0], **old_style)
        assert not images_uncompressed(build / paths[0]), old_style
        run_index(IndexConfig(build=build, target_bytes=target))
        ranges = image_ranges(build / paths[0])
        first = pq.read_table(build / paths[0])["image"][0].as_py()["bytes"]
        offset, length = ranges[0]
        assert (build / paths[0]).read_bytes()[offset : offset + length] == first


def test_reuse_from_a_published_folder(tmp_path, tiny_encoder, tiny_model_dir):
    from conftest import write_photos
    from tiny_checkpoint import write_tiny_checkpoint

    data = write_photos(tmp_path / "data", [f"p{i:02d}" for i in range(12)])
    build, repo = tmp_path / "build", tmp_path / "repo"
    encode(data, build, tiny_encoder, tiny_model_dir)
    run_index(IndexConfig(build=build, target_bytes=8_000))
    publish_to_folder(PublishConfig(build=build, to=repo))
    before = published_files(repo)
    old = rows_by_id(build)

    # A new machine: the photos plus two new ones, no build folder, the published dataset.
    write_photos(data, ["q1", "q2"])
    fresh = tmp_path / "fresh"
    summary = encode(data, fresh, tiny_encoder, tiny_model_dir, reuse=str(repo))
    assert (summary.encoded_images, summary.reused_images) == (2, 12)
    new = rows_by_id(fresh)
    for image_id, row in old.items():
        assert emb_bytes(new[image_id], "image_emb") == emb_bytes(row, "image_emb")
    run_index(IndexConfig(build=fresh, target_bytes=8_000))
    result = publish_to_folder(PublishConfig(build=fresh, to=repo))
    data_uploaded = [p for p in result.uploaded if p.startswith("data/")]
    assert data_uploaded == [max(p for p in published_files(repo) if p.startswith("data/"))]
    for path, stat in before.items():
        if path.startswith("data/"):
            assert published_files(repo)[path] == stat  # untouched

    # A published dataset made with another model is refused before any work.
    other = write_tiny_checkpoint(tmp_path / "other-model", seed=1)
    result = run_cli(
        "encode", "--data", data, "--model", other, "--out", tmp_path / "b2", "--reuse", repo,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--reuse" in result.stderr and "another model" in result.stderr


def test_empty_builds_are_refused_at_encode_index_and_publish(tmp_path, tiny_model_dir, capsys):
    from pipeline.cli import main

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.jpg").write_text("not a photo")
    build = tmp_path / "build"
    result = run_cli(
        "encode", "--data", data, "--model", tiny_model_dir, "--out", build, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error:") and "no usable image" in line
    assert json.loads((build / "summary.json").read_text())["images"] == 0
    for command in (
        ["index", "--build", str(build)],
        ["publish", "--build", str(build), "--to", str(tmp_path / "r")],
    ):
        code, err = main(command), capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("error:") and "Traceback" not in err and "holds no image" in err


def test_an_update_that_finds_no_usable_image_keeps_the_rows_encoded_before(
    tmp_path, tiny_encoder, tiny_model_dir
):
    import shutil

    from conftest import write_photos

    from pipeline.inputs import EmptyBuildError

    data = write_photos(tmp_path / "data", ["a", "b", "c", "d", "e"])
    build = tmp_path / "build"
    encode(data, build, tiny_encoder, tiny_model_dir)
    before = {p.name: p.read_bytes() for p in (build / "shards").iterdir()}
    build_json = (build / "build.json").read_bytes()
    # The photos folder moved away (an unmounted disk): refused before the build changes.
    shutil.move(data / "images", tmp_path / "elsewhere")
    with pytest.raises(
        EmptyBuildError, match=r"skipped: missing file 5\).*No row of the build in .* was changed"
    ):
        encode(data, build, tiny_encoder, tiny_model_dir)
    assert {p.name: p.read_bytes() for p in (build / "shards").iterdir()} == before
    assert (build / "build.json").read_bytes() == build_json
    # Every photo unreadable (found only when decoded): refused, and the old rows kept too.
    (data / "images").mkdir()
    for name in "abcde":
        (data / "images" / f"{name}.jpg").write_bytes(b"not a photo")
    with pytest.raises(EmptyBuildError, match="no usable image"):
        encode(data, build, tiny_encoder, tiny_model_dir)
    assert all((build / "shards" / name).read_bytes() == body for name, body in before.items())
    # The photos back: every row comes from the shards kept, none is encoded again.
    shutil.rmtree(data / "images")
    shutil.move(tmp_path / "elsewhere", data / "images")
    again = encode(data, build, tiny_encoder, tiny_model_dir)
    assert (again.encoded_images, again.reused_images) == (0, 5)


def test_an_update_from_a_folder_that_lost_its_captions_file_is_refused(
    tmp_path, tiny_encoder, tiny_model_dir
):
    # captions.jsonl deleted, or not copied with the photos: the folder read as photos without
    # captions, and the update dropped every caption of the build (then of the dataset) with
    # a warning only.
    from conftest import write_photos

    from pipeline.encode import summary_text

    data = write_photos(tmp_path / "photos", ["a", "b", "c"])
    build = tmp_path / "build"
    encode(data, build, tiny_encoder, tiny_model_dir)
    before = {p.name: p.read_bytes() for p in (build / "shards").iterdir()}
    captions = (data / "captions.jsonl").read_bytes()
    (data / "captions.jsonl").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"--data .*photos has no captions.jsonl, but the build in .*build holds 3 "
        r"captions, which this run would drop; restore .*photos/captions.jsonl .* create it "
        r"empty\. No row of the build in .* was changed",
    ):
        encode(data, build, tiny_encoder, tiny_model_dir)
    assert {p.name: p.read_bytes() for p in (build / "shards").iterdir()} == before
    # An empty captions.jsonl drops them on purpose; the summary counts the images that lost
    # theirs. Restored, they come back, with no image encoded again.
    (data / "captions.jsonl").write_bytes(b"")
    dropped = encode(data, build, tiny_encoder, tiny_model_dir)
    assert (dropped.images, dropped.num_captions, dropped.encoded_images) == (3, 0, 0)
    assert "note: 3 images that had captions before have none now" in summary_text(dropped)
    (data / "captions.jsonl").write_bytes(captions)
    back = encode(data, build, tiny_encoder, tiny_model_dir)
    assert (back.num_captions, back.encoded_images, back.notes) == (3, 0, ())
    # --data photos/images (the sub-folder) is one way to get there: the message says so.
    with pytest.raises(FileNotFoundError, match=r"photos has one: did you mean --data .*photos\?"):
        encode(data / "images", build, tiny_encoder, tiny_model_dir)
    # A captions.jsonl that names fewer images is taken as it is (removing a caption line is
    # how a caption is removed), and the summary says how many images lost their captions.
    (data / "captions.jsonl").write_bytes(captions.splitlines(keepends=True)[0])
    fewer = encode(data, build, tiny_encoder, tiny_model_dir)
    assert fewer.num_captions == 1 and fewer.notes == (
        "2 images that had captions before have none now: no line of captions.jsonl names "
        "them, or theirs were skipped (skipped.jsonl says why); search finds them by their "
        "pixels alone",
    )
    # A first build of a folder without captions, and --overwrite, are not updates: not refused.
    (data / "captions.jsonl").unlink()
    assert encode(data, tmp_path / "new", tiny_encoder, tiny_model_dir).images == 3
    assert encode(data, build, tiny_encoder, tiny_model_dir, overwrite=True).images == 3


def test_a_build_of_another_collection_without_captions_is_not_refused(
    tmp_path, tiny_encoder, tiny_model_dir
):
    # `make demo` (the sample, with captions), then `make demo DATA=my-photos` (no
    # captions.jsonl) into the same BUILD: the build becomes the other folder's, as the note
    # says; there is no captions.jsonl of that folder to restore.
    from conftest import write_photos

    sample = write_photos(tmp_path / "data-1000-14", ["a", "b", "c"])
    mine = write_photos(tmp_path / "my-photos", ["x", "y"], seed=3)
    (mine / "captions.jsonl").unlink()
    build = tmp_path / "build"
    encode(sample, build, tiny_encoder, tiny_model_dir)
    update = encode(mine, build, tiny_encoder, tiny_model_dir)
    assert (update.images, update.num_captions) == (2, 0)
    assert update.notes[0].startswith("the build was made from local folder data-1000-14")


def test_a_reuse_seed_from_a_folder_without_its_captions_file_is_refused(tmp_path, tiny_model_dir):
    # On a new machine, photos copied without captions.jsonl: the build seeded from the
    # published dataset had no captions, and the re-publish would have dropped them all.
    from conftest import write_photos

    data = write_photos(tmp_path / "photos", ["a", "b"])
    build, repo = tmp_path / "build", tmp_path / "repo"
    run_encode(FolderSource(data), EncodeConfig(out=build, model=str(tiny_model_dir)))
    run_index(IndexConfig(build=build))
    publish_to_folder(PublishConfig(build=build, to=repo))
    (data / "captions.jsonl").unlink()
    new = tmp_path / "new-build"
    args = ("--data", data, "--out", new, "--reuse", repo, "--model", tiny_model_dir)
    result = run_cli("encode", *args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: --data {data} has no captions.jsonl, but --reuse {repo} holds 2 " in (
        result.stderr
    )
    assert not new.exists()  # refused before it wrote anything


def test_a_first_run_refused_before_it_writes_leaves_no_build_folder(
    tmp_path, tiny_encoder, tiny_model_dir
):
    from pipeline.inputs import EmptyBuildError

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    # Every caption names a photo that is not there (a run that decodes photos and finds none
    # usable keeps its folder: the skip report the error names is there).
    (data / "captions.jsonl").write_text('{"path": "images/gone.jpg", "caption": "bir kedi"}\n')
    build = tmp_path / "new" / "deeper" / "build"
    with pytest.raises(EmptyBuildError, match="no usable image"):
        encode(data, build, tiny_encoder, tiny_model_dir)
    assert not (tmp_path / "new").exists()  # not folders holding only the lock file
    # A folder the user made beforehand stays, as it was.
    build.mkdir(parents=True)
    with pytest.raises(EmptyBuildError, match="no usable image"):
        encode(data, build, tiny_encoder, tiny_model_dir)
    assert build.is_dir()


def test_an_update_in_another_precision_says_the_rows_kept_stay_in_theirs(
    tmp_path, tiny_encoder, tiny_model_dir
):
    from conftest import write_photos

    from imagesearchtr import Encoder
    from pipeline.encode import summary_text

    data = write_photos(tmp_path / "data", ["a", "b", "c"])
    build = tmp_path / "build"
    bf16 = Encoder.from_pretrained(str(tiny_model_dir), dtype="bfloat16")
    encode(data, build, bf16, tiny_model_dir)
    assert json.loads((build / "build.json").read_text())["dtype"] == "bfloat16"
    write_photos(data, ["d"])
    summary = encode(data, build, tiny_encoder, tiny_model_dir)  # float32
    assert (summary.encoded_images, summary.reused_images) == (1, 3)
    assert (
        "note: the 3 images encoded before keep their bfloat16 embeddings; this run encoded "
        "with float32 (--overwrite encodes every image with float32)"
    ) in summary_text(summary)
    again = encode(data, build, tiny_encoder, tiny_model_dir)  # the build says float32 now
    assert again.notes == ()
    encode(data, build, bf16, tiny_model_dir, overwrite=True)
    anew = encode(data, build, tiny_encoder, tiny_model_dir, overwrite=True)  # nothing kept
    assert anew.reused_images == 0 and anew.notes == ()


def shard_stats(build: Path) -> dict:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (build / "shards").glob("shard-*.parquet")
    }


def test_update_killed_with_sigkill_resumes_without_encoding_done_shards_again(
    tmp_path, tiny_encoder, tiny_model_dir, capsys
):
    from conftest import write_photos

    from pipeline.cli import main

    data = write_photos(tmp_path / "data", [f"a{i:02d}" for i in range(8)])
    build = tmp_path / "build"
    encode(data, build, tiny_encoder, tiny_model_dir)  # two shards of 4
    write_photos(data, [f"b{i:03d}" for i in range(120)])  # 30 more shards
    cmd = [sys.executable, "-m", "pipeline", "encode", "--data", str(data), "--out", str(build)]
    cmd += ["--model", str(tiny_model_dir), "--dtype", "float32", "--shard-size", "4"]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(shard_stats(build)) < 2 + 6:
        assert proc.poll() is None, "encode finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = shard_stats(build)
    assert len(done) < 2 + 30
    # index refuses the half-updated build
    assert main(["index", "--build", str(build)]) == 2
    assert "re-run the same" in capsys.readouterr().err

    encode(data, build, tiny_encoder, tiny_model_dir)  # the same settings as the killed run
    after = shard_stats(build)
    assert len(after) == 32
    for name, stat in done.items():  # every shard that was complete is the very same file
        assert after[name] == stat, f"{name} was written again"
    done_rows = sum(pq.ParquetFile(build / "shards" / n).metadata.num_rows for n in done)
    summary = json.loads((build / "summary.json").read_text())
    assert summary["images"] == 128
    assert summary["encoded_images"] == 128 - done_rows
    # The rows are those of an uninterrupted build of the same input.
    reference = tmp_path / "reference"
    encode(data, reference, tiny_encoder, tiny_model_dir)
    got, want = rows_by_id(build), rows_by_id(reference)
    assert list(got) == list(want)
    for image_id, row in want.items():
        np.testing.assert_allclose(got[image_id]["image_emb"], row["image_emb"], atol=1e-5)
    assert not [p.name for p in build.rglob("*.tmp")]


def test_index_type_help_and_readme_state_the_rule_the_code_applies():
    from pipeline.index import AUTO_FLAT_MAX_ROWS, AUTO_FP16_MAX_ROWS, AUTO_RULE

    assert f"flat up to {AUTO_FLAT_MAX_ROWS:,} rows" in AUTO_RULE
    assert f"fp16 up to {AUTO_FP16_MAX_ROWS:,}" in AUTO_RULE
    help_text = " ".join(run_cli("index", "--help").stdout.split())
    assert AUTO_RULE in help_text
    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"`auto` (default: {AUTO_RULE};" in readme


def test_readme_lists_the_photo_suffixes_the_listing_takes():
    import re

    from pipeline.inputs import IMAGE_SUFFIXES

    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    listed = readme.split("Image files are ", 1)[1].split(" (`pipeline.inputs.IMAGE_SUFFIXES`)")[0]
    assert set(re.findall(r"`(\.\w+)`", listed)) == IMAGE_SUFFIXES


def test_index_refuses_a_row_without_an_image_embedding(tmp_path, tiny_encoder, tiny_model_dir):
    import pyarrow as pa
    from conftest import write_photos

    build = tmp_path / "build"
    encode(write_photos(tmp_path / "data", ["a", "b"]), build, tiny_encoder, tiny_model_dir)
    # A shard damaged by hand, or written by a broken tool: a null image embedding would be
    # indexed as a zero vector, a row no query can find, without a word.
    (shard,) = sorted((build / "shards").glob("shard-*.parquet"))
    table = pq.read_table(shard)
    column = table.column("image_emb").to_pylist()
    damaged = pa.array([None, *column[1:]], table.schema.field("image_emb").type)
    table = table.set_column(table.schema.get_field_index("image_emb"), "image_emb", damaged)
    pq.write_table(table, shard)
    with pytest.raises(ValueError, match="1 rows lack an image embedding"):
        run_index(IndexConfig(build=build))


def test_an_update_publishes_only_once_indexed_and_the_indices_follow_the_data_files(
    tmp_path, tiny_encoder, tiny_model_dir
):
    import faiss
    import pyarrow as pa
    from conftest import write_photos

    data = write_photos(tmp_path / "data", [f"p{i}" for i in range(6)])
    build, target = tmp_path / "build", 3 * 2_000  # about 3 rows a data file
    encode(data, build, tiny_encoder, tiny_model_dir)
    run_index(IndexConfig(build=build, target_bytes=target))
    write_photos(data, ["a0"])  # first in the listing, so row 0 of the updated build
    encode(data, build, tiny_encoder, tiny_model_dir)
    # The index (and the data files it wrote) describe the rows before the update.
    with pytest.raises(ValueError, match="index does not match the encoded rows; re-run"):
        publish_to_folder(PublishConfig(build=build, to=tmp_path / "repo"))
    manifest = run_index(IndexConfig(build=build, target_bytes=target))
    # The kept files keep their rows; the new row goes to a new file at the end. The indices'
    # row i is the data files' row i, not the build's.
    rows = pa.concat_tables([pq.read_table(build / f["path"]) for f in manifest.data_files])
    assert rows["image_id"].to_pylist()[-1] == "images/a0"
    for column in ("image_emb", "caption_emb"):
        index = faiss.read_index(str(build / "index" / f"{column}.faiss"))
        stored = np.asarray(rows[column].to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(index.reconstruct_n(0, index.ntotal), stored)


def test_a_row_key_changes_with_any_of_its_stored_values():
    import pyarrow as pa

    from pipeline.datafiles import row_keys

    vector = pa.list_(pa.float32(), 2)

    def table(image, caption):  # one row without captions: its caption embedding is null
        return pa.table({
            "image_id": ["a"], "path": ["a.jpg"], "sha256": ["00"], "captions": [[]],
            "image_emb": pa.array([image], vector), "caption_emb": pa.array([caption], vector),
        })  # fmt: skip

    keys = row_keys(table([1.0, 0.0], None))
    # A data file whose rows' keys are unchanged is kept as it is: a new image embedding (a
    # model change) must make a new key, with captions or without.
    assert row_keys(table([0.0, 1.0], None)) != keys
    assert row_keys(table([1.0, 0.0], [1.0, 0.0])) != keys
    assert row_keys(table([1.0, 0.0], None)) == keys


def test_row_groups_hold_at_most_max_group_rows():
    import pyarrow as pa

    from pipeline.datafiles import MAX_GROUP_ROWS, group_rows

    # Tiny rows would make groups of tens of thousands by size alone; a reader takes a group at
    # a time, so the cap bounds that read.
    assert group_rows(pa.table({"a": [1] * (4 * MAX_GROUP_ROWS)})) == MAX_GROUP_ROWS


def test_data_file_layout_keeps_rewrites_appends_and_compacts():
    from pipeline.datafiles import MAX_SMALL_FILES, plan_layout

    keys = [f"k{i:03d}" for i in range(40)]
    sizes = [10] * 40
    previous = [
        ("data/train-00000.parquet", keys[0:10]),
        ("data/train-00001.parquet", keys[10:20] + ["gone"]),
        ("data/train-00002.parquet", keys[20:30]),
    ]
    layout = plan_layout(keys, sizes, previous, target_bytes=100)
    by_path = {f.path: f for f in layout}
    assert by_path["data/train-00000.parquet"].keep
    assert by_path["data/train-00001.parquet"].rows == tuple(range(10, 20))
    assert not by_path["data/train-00001.parquet"].keep  # lost a row: rewritten, same name
    assert by_path["data/train-00002.parquet"].keep
    assert by_path["data/train-00003.parquet"].rows == tuple(range(30, 40))  # new rows: new file
    assert [i for f in layout for i in f.rows] == list(range(40))  # every row once

    # Many small files (one row each) are compacted into full ones, order kept.
    small = [(f"data/train-{i:05d}.parquet", [keys[i]]) for i in range(MAX_SMALL_FILES + 1)]
    layout = plan_layout(keys[: MAX_SMALL_FILES + 1], sizes, small, target_bytes=100)
    assert len(layout) == 1 and not layout[0].keep
    assert layout[0].rows == tuple(range(MAX_SMALL_FILES + 1))
    assert layout[0].path == f"data/train-{MAX_SMALL_FILES + 1:05d}.parquet"
