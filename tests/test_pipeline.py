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
from conftest import REPO_ROOT, run_cli
from PIL import Image

from pipeline.encode import EncodeConfig, run_encode
from pipeline.index import IndexConfig, choose_index, run_index
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
    build = tmp_path / "build"
    result = run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    reasons = {s["source"]: s["reason"] for s in skipped(build)}
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
    assert len(rows) == 5  # 4 photos + the uncaptioned one
    assert "skipped 9 inputs" in result.stdout


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
    run_cli(*cmd[3:])
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
    run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    result = run_cli("encode", "--data", folder, "--model", other, "--out", build, check=False)
    assert result.returncode == 2
    assert "different model" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    run_cli("encode", "--data", folder, "--model", other, "--out", build, "--overwrite")


def test_cli_errors_are_one_clear_line(tmp_path, tiny_model_dir):
    result = run_cli(
        "encode",
        "--data",
        tmp_path / "nope",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "b",
        check=False,
    )
    assert result.returncode == 2
    assert "--data" in result.stderr and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("index", "--build", tmp_path, check=False)
    assert result.returncode == 2 and "pipeline encode" in result.stderr
    for command in ("download", "encode", "index", "publish"):
        help_text = run_cli(command, "--help").stdout
        assert "usage: python -m pipeline " + command in help_text


def test_in_process_api_matches_the_cli(tmp_path, shared_data, tiny_model_dir):
    folder = make_messy_folder(tmp_path, shared_data)
    summary = run_encode(
        FolderSource(folder), EncodeConfig(out=tmp_path / "b", model=str(tiny_model_dir))
    )
    assert (summary.num_images, summary.num_skipped) == (5, 9)
    assert summary.skipped_reasons["duplicate"] == 1
    manifest = run_index(IndexConfig(build=tmp_path / "b"))
    assert manifest.num_rows == 5 and manifest.num_captions == 5


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
    # IVF: sqrt(N) lists (a power of two), 1/16 of them probed, 64 training vectors a list.
    big = choose_index(1_000_000, "auto")
    assert (big.index_type, big.factory, big.params) == ("ivf-sq8", "IVF1024,SQ8", {"nprobe": 64})
    assert big.train_size == 64 * 1024
    ivf = choose_index(100_000, "ivf-sq8")
    assert ivf.factory.startswith("IVF") and ivf.params["nprobe"] > 0
    assert choose_index(100_000, "hnsw").factory.startswith("HNSW")
    small = choose_index(500, "ivf-sq8")  # still >= 39 training vectors a list
    assert small.train_size >= 39 * int(small.factory[3:].split(",")[0])


def test_approximate_index_builds_and_searches(tmp_path, shared_build):
    build = tmp_path / "b"
    shutil.copytree(shared_build, build, ignore=shutil.ignore_patterns("index"))
    manifest = run_index(IndexConfig(build=build, index_type="hnsw"))
    assert manifest.index("image_emb").factory == "HNSW32,Flat"


# --- publish + load -----------------------------------------------------------------------


def test_publish_to_folder_is_loadable_and_searchable(tmp_path, shared_build, tiny_model_dir):
    import faiss
    from datasets import load_dataset

    from imagesearchtr import Encoder

    target = tmp_path / "repo"
    run_cli("publish", "--build", shared_build, "--to", target)
    names = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "index/caption_emb.faiss",
        "index/image_emb.faiss",
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
    second = publish_to_folder(PublishConfig(build=shared_build, to=target))
    assert first.changed and not second.changed
    assert (target / "notes.txt").read_text() == "kept"


def test_publish_refuses_rows_and_index_from_different_builds(tmp_path, shared_build):
    build = tmp_path / "b"
    shutil.copytree(shared_build, build)
    for shard in sorted((build / "shards").glob("shard-*.parquet"))[1:]:
        shard.unlink()
    result = run_cli("publish", "--build", build, "--to", tmp_path / "repo", check=False)
    assert result.returncode == 2 and "re-run" in result.stderr
    assert not (tmp_path / "repo").exists()


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
