"""The user's path through a (local) Hub: download, encode from a Hub dataset, publish, load.

Every client call runs in a process of its own with HF_ENDPOINT pointing at tests/hub_server.py
and a fresh HF_HOME, as a user runs the commands (most forked from a server that imported the
clients' modules: run_python, hub_cli); nothing reaches the real Hub.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import cli_forks
import pytest
from conftest import hub_cli, run_cli
from huggingface_hub import HfApi


def run_python(code: str, env: dict, timeout: float = 300) -> str:
    """``python -c CODE`` with this process's environment and ``env`` (which names an HF_HOME,
    the client's own cache); its stdout. Forked from a server that imported the Hub client, the
    Searcher and the CLI's modules (``cli_forks.run_python``; ``hub_cli`` forks from the same
    server): every read and write of HF_HOME lands in ``env``'s, as in a fresh interpreter
    started with it, without the seconds of imports a fresh interpreter spent for each client."""
    result = cli_forks.run_python(code, (), {**os.environ, **env}, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture
def built(shared_build):
    return shared_build


def revision_of(stdout: str) -> str:
    return next(line.split()[-1] for line in stdout.splitlines() if line.startswith("revision:"))


def test_publish_then_load_and_search_from_a_fresh_cache(built, hub_env, local_hub, tmp_path):
    repo = f"{local_hub.user}/tasvir-e2e"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    # The shared photos are research-use data: a public repo is refused before it is created,
    # and an existing public one before anything is uploaded to it.
    public = hub_cli("publish", "--build", built, "--repo", repo, env=hub_env, check=False)
    assert public.returncode == 2 and "research only" in public.stderr, public.stderr
    assert "add --private" in public.stderr
    assert not api.repo_exists(repo, repo_type="dataset")
    api.create_repo(f"{repo}-open", repo_type="dataset")
    public = hub_cli("publish", "--build", built, "--repo", f"{repo}-open", "--private",
                     env=hub_env, check=False)  # fmt: skip
    assert public.returncode == 2 and f"{repo}-open is public" in public.stderr, public.stderr
    public = hub_cli("publish", "--build", built, "--repo", f"{repo}-open", env=hub_env,
                     check=False)  # fmt: skip
    assert public.returncode == 2 and f"{repo}-open is public" in public.stderr, public.stderr
    assert api.list_repo_files(f"{repo}-open", repo_type="dataset") == [".gitattributes"]

    first = hub_cli("publish", "--build", built, "--repo", repo, "--private", env=hub_env)
    revision = revision_of(first.stdout)
    assert local_hub.token not in first.stdout + first.stderr
    assert api.dataset_info(repo).private
    # Without a token the Hub shows no private repo: the run asks for the token, not for a
    # --private that this private repo does not need.
    anonymous = {**hub_env, "HF_TOKEN": ""}
    no_token = run_cli("publish", "--build", built, "--repo", repo, env=anonymous, check=False)
    assert no_token.returncode == 2 and "no Hub token" in no_token.stderr, no_token.stderr
    assert "--private" not in no_token.stderr
    # ...and so is a public Space over them, before it is created or an existing one changed.
    space = hub_cli("publish-space", "--space", f"{repo}-search", "--dataset-repo", repo,
                    "--no-wait", env=hub_env, check=False)  # fmt: skip
    assert space.returncode == 2 and "research only" in space.stderr, space.stderr
    assert not api.repo_exists(f"{repo}-search", repo_type="space")
    api.create_repo(f"{repo}-app", repo_type="space", space_sdk="gradio")
    space = hub_cli("publish-space", "--space", f"{repo}-app", "--dataset-repo", repo,
                    "--private", "--no-wait", env=hub_env, check=False)  # fmt: skip
    assert space.returncode == 2 and f"{repo}-app is public" in space.stderr, space.stderr
    assert api.get_space_variables(f"{repo}-app") == {}
    # A Space that is private already needs no --private.
    api.create_repo(f"{repo}-own", repo_type="space", space_sdk="gradio", private=True)
    hub_cli("publish-space", "--space", f"{repo}-own", "--dataset-repo", repo, "--no-wait",
            env=hub_env)  # fmt: skip
    assert "app.py" in api.list_repo_files(f"{repo}-own", repo_type="space")
    assert api.space_info(f"{repo}-own").private

    # Publishing the same build again changes nothing (a repo that is private already needs no
    # --private); a new license changes the card alone.
    again = hub_cli("publish", "--build", built, "--repo", repo, env=hub_env)
    assert "already up to date" in again.stdout and revision_of(again.stdout) == revision
    licensed = hub_cli("publish", "--build", built, "--repo", repo, "--license", "cc-by-4.0",
                       "--private", "--space", f"{repo}-app", env=hub_env)  # fmt: skip
    assert "files written: 1, deleted: 0\n  wrote README.md (the card)" in licensed.stdout
    assert revision_of(licensed.stdout) != revision
    revision = revision_of(licensed.stdout)
    # A license the Hub does not know is refused before anything is uploaded or committed
    # (the location check below finds the revision above still the newest).
    typo = hub_cli("publish", "--build", built, "--repo", repo, "--license", "cc-by-4.1",
                   "--private", env=hub_env, check=False)  # fmt: skip
    assert typo.returncode == 2, typo.stderr
    assert "the Hub refuses the dataset card's metadata" in typo.stderr
    assert '"license" must be one of' in typo.stderr and "--license" in typo.stderr
    # ...and for a repo that does not exist yet, none is created (a value YAML would cut at
    # its "#" when pasted raw, as the first check once did, is checked as the card carries it).
    typo = hub_cli("publish", "--build", built, "--repo", f"{repo}-new", "--license",
                   "mit # comment", "--private", env=hub_env, check=False)  # fmt: skip
    assert typo.returncode == 2 and "the Hub refuses" in typo.stderr, typo.stderr
    assert not api.repo_exists(f"{repo}-new", repo_type="dataset")

    fresh = {**hub_env, "HF_HOME": str(tmp_path / "fresh-home")}
    space_line = f'Client("{repo}-app")'  # --space: the card's usage example calls that Space
    out = run_python(
        textwrap.dedent(
            f"""
            import json
            from huggingface_hub import HfApi
            from datasets import load_dataset
            from imagesearchtr import Searcher
            files = sorted(HfApi().list_repo_files({repo!r}, repo_type="dataset"))
            card = open(HfApi().hf_hub_download({repo!r}, "README.md", repo_type="dataset")).read()
            import imagesearchtr.searcher

            def not_again(path):  # the Hub's recorded sha256 checks the index files
                raise AssertionError(f"{{path}} was read again to hash it")

            imagesearchtr.searcher.sha256_file = not_again
            searcher = Searcher.from_repo({repo!r})
            # load_dataset(repo) still reads the rows, images included (the viewer's view).
            photo = load_dataset({repo!r}, split="train")[11]["image"]
            hits = searcher.search_image(photo, k=3)
            deep = searcher.search_text("köpek", k=5, alpha=0.5)
            print(json.dumps({{"files": files, "location": searcher.location,
                              "top": hits[0].row, "score": hits[0].score,
                              "licensed": "license: cc-by-4.0" in card,
                              "space": {space_line!r} in card,
                              "deep": [h.score for h in deep]}}))
            """
        ),
        fresh,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert [f for f in result["files"] if f != ".gitattributes"] == [
        "README.md",
        "data/train-00000.parquet",
        "index/caption_emb.faiss",
        "index/image_emb.faiss",
        "index/image_ranges.npy",
        "index/manifest.json",
    ]
    assert result["location"] == f"{repo}@{revision}" and result["licensed"] and result["space"]
    assert result["top"] == 11 and result["score"] > 0.99
    assert result["deep"] == sorted(result["deep"], reverse=True)


def test_a_folder_publish_checks_its_license_with_the_hub_and_names_its_app(
    built, hub_env, tmp_path
):
    folder = tmp_path / "repo"
    typo = run_cli("publish", "--build", built, "--to", folder, "--license", "CC-BY-4.0",
                   env=hub_env, check=False)  # fmt: skip
    assert typo.returncode == 2 and "the Hub refuses the dataset card's metadata" in typo.stderr
    assert not folder.exists()
    # Without a Hub (offline, as make demo may run) the folder is written and the user told.
    offline = {**hub_env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = run_cli("publish", "--build", built, "--to", folder, "--license", "cc-by-4.0",
                   "--space", "http://127.0.0.1:8000/", env=offline)  # fmt: skip
    assert "note: --license cc-by-4.0 was not checked" in done.stdout
    card = (folder / "README.md").read_text()
    assert "license: cc-by-4.0" in card and 'Client("http://127.0.0.1:8000/")' in card
    bad = run_cli("publish", "--build", built, "--to", folder, "--space", "my-space",
                  env=offline, check=False)  # fmt: skip
    assert bad.returncode == 2 and "'my-space' is not a repo id" in bad.stderr, bad.stderr


def test_a_new_build_replaces_the_old_one_in_one_commit(
    built, hub_env, local_hub, tmp_path, tiny_model_dir
):
    import shutil

    repo = f"{local_hub.user}/tasvir-replace"
    hub_cli("publish", "--build", built, "--repo", repo, "--private", env=hub_env)
    smaller = tmp_path / "smaller"
    shutil.copytree(built, smaller, ignore=shutil.ignore_patterns("index"))
    build_info = json.loads((smaller / "build.json").read_text())
    for name in build_info["shards"][1:]:
        (smaller / "shards" / name).unlink()
    build_info["shards"] = build_info["shards"][:1]
    build_info["num_planned"] = 256
    (smaller / "build.json").write_text(json.dumps(build_info))
    run_cli("index", "--build", smaller)
    commits = len(local_hub.requests_matching("POST", f"/api/datasets/{repo}/commit/"))
    second = hub_cli("publish", "--build", smaller, "--repo", repo, "--private", env=hub_env)
    assert len(local_hub.requests_matching("POST", f"/api/datasets/{repo}/commit/")) == commits + 1
    out = run_python(
        "from datasets import load_dataset\n"
        f"ds = load_dataset({repo!r}, split='train')\n"
        "print(len(ds))",
        hub_env,
    )
    assert out.split()[-1] == "256"  # the rows the old build had beyond these are gone
    assert revision_of(second.stdout)


def test_publish_without_a_valid_token_fails_clearly(built, hub_env, local_hub):
    env = {**hub_env, "HF_TOKEN": "hf_wrong_token_123456"}
    result = run_cli(
        "publish",
        "--build",
        built,
        "--repo",
        f"{local_hub.user}/nope",
        "--private",
        env=env,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Hub refused access (HTTP 401)"), last
    assert "HF_TOKEN to a valid token that can write to it" in last, last
    assert "hf_wrong_token_123456" not in result.stderr + result.stdout
    # Reading with a wrong token: the same kind of line, not the client's traceback.
    result = run_cli("evaluate", "--repo", f"{local_hub.user}/nope", env=env, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Hub refused access (HTTP 401)"), last
    assert "HF_TOKEN to a valid token that can read it" in last, last
    assert "hf_wrong_token_123456" not in result.stderr + result.stdout


# --- download and --hf-dataset -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_source(local_hub, tmp_path_factory, shared_data):
    """A small dataset shaped like ituperceptron/image-captioning-turkish on the local Hub."""
    repo = f"{local_hub.user}/image-captioning-turkish"
    home = tmp_path_factory.mktemp("fake-home")
    images = sorted((shared_data / "images").glob("*.jpg"))[:12]
    captions = {}
    for line in (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        captions.setdefault(entry["path"].split("/")[-1], entry["caption"])
    code = textwrap.dedent(
        f"""
        from datasets import Dataset, DatasetDict, Features, Image, Value
        paths = {[str(p) for p in images]!r}
        texts = {[captions[p.name] for p in images]!r}
        feats = Features({{"image": Image(), "text": Value("string"), "image_id": Value("string")}})
        def split(short):
            return Dataset.from_dict(
                {{"image": paths, "text": [t[:20] if short else t for t in texts],
                  "image_id": [f"id{{i}}" for i in range(len(paths))]}}, features=feats)
        # Ids that name files alike: missing, repeated, or the same once sanitised; the last
        # row is the fifth's image again, under its id, with another caption.
        collide = Dataset.from_dict(
            {{"image": paths[:6] + paths[4:5], "text": [f"altyazı {{i}}" for i in range(7)],
              "image_id": [None, "..", "a b", "a/b", "x1", "x1", "x1"]}}, features=feats)
        DatasetDict({{"long_captions": split(False), "short_captions": split(True),
                     "collisions": collide}}).push_to_hub({repo!r})
        """
    )
    run_python(code, {**local_hub.env(), "HF_HOME": str(home)})
    return repo


def test_download_samples_and_completes_a_partial_run(fake_source, hub_env, tmp_path):
    out = tmp_path / "data"
    args = ["download", "--dataset", fake_source, "--num-samples", "5", "--seed", "3"]
    args += ["--buffer-size", "8", "--output-dir", out]
    hub_cli(*args, env=hub_env)
    lines = (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(lines) == 5 and len(files) == 5
    assert {json.loads(line)["path"].split("/")[-1] for line in lines} == set(files)

    # Lose one image and one caption line, as a killed run might; the re-run completes both.
    (out / "images" / files[0]).unlink()
    (out / "captions.jsonl").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    again = hub_cli(*args, env=hub_env)
    assert "wrote 1 images, kept 4 already there (written by an earlier run" in again.stdout
    assert sorted((out / "captions.jsonl").read_text().splitlines()) == sorted(lines)
    assert sorted(p.name for p in (out / "images").iterdir()) == files


def test_download_never_gives_two_images_one_file(fake_source, hub_env, tmp_path, shared_data):
    out = tmp_path / "data"
    args = ["download", "--dataset", fake_source, "--split", "collisions", "--num-samples", "7"]
    args += ["--output-dir", out]
    first = hub_cli(*args, env=hub_env)
    assert "wrote 6 images, kept 1" in first.stdout  # the last row's image is the fifth's
    sources = sorted((shared_data / "images").glob("*.jpg"))[:6]
    sources.append(sources[4])
    lines = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(line["caption"] for line in lines) == [f"altyazı {i}" for i in range(7)]
    for line in lines:  # each caption beside the very image it was published with
        row = int(line["caption"].split()[-1])
        assert (out / line["path"]).read_bytes() == sources[row].read_bytes(), line
    assert len(list((out / "images").iterdir())) == 6
    # (an id of dots names no hidden file, which a folder's listing would pass over)
    assert not [p.name for p in (out / "images").iterdir() if p.name.startswith(".")]
    assert "note:" not in first.stdout
    more = [*args[:-4], "--num-samples", "9", "--output-dir", out]  # the split has 7 rows
    again = hub_cli(*more, env=hub_env)
    assert "wrote 0 images, kept 7" in again.stdout
    assert "has 7 rows, fewer than --num-samples 9: all of them were read" in again.stdout
    assert len((out / "captions.jsonl").read_text().splitlines()) == 7
    # The columns and the seed are checked before anything is fetched.
    for flags, said in (
        (["--caption-column", "caption"], "has no column 'caption': it has image, text, image_id;"
                                          " name the right one with --caption-column"),
        (["--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    ):  # fmt: skip
        result = hub_cli(*args, *flags, env=hub_env, check=False)
        assert result.returncode == 2 and said in result.stderr, result.stderr


def test_download_keeps_every_caption_of_a_list_column(local_hub, hub_env, tmp_path, shared_data):
    """A caption column of lists (several captions an image, as encode --hf-dataset takes):
    each caption is a line; they were all dropped, each row said to have an empty caption."""
    repo = f"{local_hub.user}/list-captions"
    images = sorted((shared_data / "images").glob("*.jpg"))[:3]
    code = textwrap.dedent(
        f"""
        from datasets import Dataset, Features, Image, List, Value
        feats = Features({{"image": Image(), "text": List(Value("string")),
                          "image_id": Value("string")}})
        Dataset.from_dict({{"image": {[str(p) for p in images]!r},
                            "text": [["iki köpek", "karda köpekler"], ["kedi", " "], []],
                            "image_id": ["a", "b", "c"]}}, features=feats).push_to_hub({repo!r})
        """
    )
    run_python(code, {**local_hub.env(), "HF_HOME": str(tmp_path / "home")})
    out = tmp_path / "data"
    result = hub_cli("download", "--dataset", repo, "--split", "train", "--num-samples", "3",
                     "--output-dir", out, env=hub_env)  # fmt: skip
    lines = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted((x["path"], x["caption"]) for x in lines) == [
        ("images/a.jpg", "iki köpek"), ("images/a.jpg", "karda köpekler"), ("images/b.jpg", "kedi"),
    ]  # fmt: skip
    assert "(c): empty caption, image kept" in result.stdout  # (rows come shuffled)
    assert "(a): empty caption" not in result.stdout and "(b): empty caption" not in result.stdout


def test_download_adds_no_line_to_an_unfinished_last_line(fake_source, hub_env, tmp_path):
    """captions.jsonl edited by hand, without a newline at its end: the next download's lines
    start on a line of their own (they were glued to it, and both lines lost)."""
    out = tmp_path / "data"
    out.mkdir()
    mine = json.dumps({"path": "images/mine.jpg", "caption": "benim"}, ensure_ascii=False)
    (out / "captions.jsonl").write_text(mine, encoding="utf-8")
    hub_cli("download", "--dataset", fake_source, "--num-samples", "2", "--output-dir", out,
            env=hub_env)  # fmt: skip
    lines = (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0] == mine and len(lines) == 3
    assert all(json.loads(line)["caption"] for line in lines)


def test_download_after_a_run_killed_before_its_first_line_and_of_a_split_not_there(
    fake_source, hub_env, tmp_path
):
    """A run killed before it wrote a caption leaves captions.jsonl empty: the next one goes
    on. A split the dataset lacks is named with --split, and leaves no folder behind."""
    out = tmp_path / "data"
    out.mkdir()
    (out / "captions.jsonl").write_text("")
    hub_cli("download", "--dataset", fake_source, "--split", "short_captions",
            "--num-samples", "1", "--output-dir", out, env=hub_env)  # fmt: skip
    assert len((out / "captions.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    other = tmp_path / "other"
    args = ["download", "--dataset", fake_source, "--split", "train", "--output-dir", other]
    result = hub_cli(*args, "--num-samples", "1", env=hub_env, check=False)
    assert result.returncode == 2 and "no split 'train'" in result.stderr, result.stderr
    assert "--split" in result.stderr and not other.exists()


def test_encode_reads_a_hub_dataset_directly(fake_source, hub_env, tmp_path, tiny_model_dir):
    build = tmp_path / "build"
    hub_cli(
        "encode", "--hf-dataset", fake_source, "--split", "short_captions",
        "--model", tiny_model_dir, "--out", build, env=hub_env,
    )  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((build / "shards").glob("*.parquet")))
    assert table.num_rows == 12
    assert table.column("image_id").to_pylist()[:2] == ["id0", "id1"]
    assert all(len(c) == 1 and len(c[0]) <= 20 for c in table.column("captions").to_pylist())


# --- updates through the Hub: --reuse, files per commit, resumable large publishes ------------


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, tiny_model_dir, tiny_encoder):
    """24 generated photos, encoded and indexed into several small data files."""
    from conftest import write_photos

    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    root = tmp_path_factory.mktemp("small")
    data = write_photos(root / "data", [f"p{i:02d}" for i in range(24)])
    build = root / "build"
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32", shard_size=8)
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build, target_bytes=8_000))
    return data, build


def lfs_uploads(local_hub, since: int = 0) -> list[str]:
    return [r["path"] for r in local_hub.requests[since:] if r["path"].startswith("/_lfs/upload/")]


def test_reuse_from_the_hub_updates_without_downloading_the_images(
    small_build, hub_env, local_hub, tmp_path, tiny_model_dir
):
    import shutil

    from conftest import write_photos

    data, build = small_build
    repo = f"{local_hub.user}/reuse-from-hub"
    hub_cli("publish", "--build", build, "--repo", repo, env=hub_env)
    head_files = local_hub.state.storage.get_repo("dataset", repo)
    published = {p for p in head_files["commits"][head_files["branches"]["main"]]["files"]}
    old_data = sorted(p for p in published if p.startswith("data/"))

    # A new machine: the photos and two new ones; no build folder.
    photos = tmp_path / "photos"
    shutil.copytree(data, photos)
    write_photos(photos, ["q1", "q2"])
    fresh = tmp_path / "fresh"
    since = len(local_hub.requests)
    result = hub_cli(
        "encode", "--data", photos, "--model", tiny_model_dir, "--dtype", "float32",
        "--out", fresh, "--reuse", repo, env=hub_env,
    )  # fmt: skip
    summary = json.loads((fresh / "summary.json").read_text())
    assert (summary["encoded_images"], summary["reused_images"]) == (2, 24)
    assert "2 encoded, 24 reused" in result.stdout
    # Read lazily: every read of a data file is a byte range, none the whole file.
    reads = [
        r
        for r in local_hub.requests[since:]
        if r["method"] == "GET" and "/resolve/" in r["path"] and "/data/" in r["path"]
    ]
    assert reads and all(r["range"] for r in reads)

    run_cli("index", "--build", fresh, "--max-data-file-size", "8KB")
    since = len(local_hub.requests)
    again = hub_cli("publish", "--build", fresh, "--repo", repo, "--private", env=hub_env)
    assert f"note: {repo} already exists and is public; --private left it so" in again.stdout
    uploaded = lfs_uploads(local_hub, since)
    manifest = json.loads((fresh / "index/manifest.json").read_text())
    new_data = [f for f in manifest["data_files"] if f["path"] not in old_data]
    assert [f["path"] for f in manifest["data_files"]][: len(old_data)] == old_data
    # Only the new data file, the two indices and the image ranges travelled (the manifest is
    # a small file).
    assert sorted(p.rsplit("/", 1)[-1].split("?")[0] for p in uploaded) == sorted(
        [f["sha256"] for f in new_data]
        + [
            __import__("hashlib").sha256((fresh / n).read_bytes()).hexdigest()
            for n in ("index/image_emb.faiss", "index/caption_emb.faiss", "index/image_ranges.npy")
        ]
    )

    # Another model: refused, with one line naming --reuse.
    from tiny_checkpoint import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "other-model", seed=1)
    result = hub_cli(
        "encode", "--data", photos, "--model", other, "--out", tmp_path / "x",
        "--reuse", repo, env=hub_env, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "another model" in result.stderr


def test_a_build_reseeded_from_the_hub_with_the_same_photos_publishes_no_commit(
    small_build, hub_env, local_hub, tmp_path, tiny_model_dir
):
    import shutil

    data, build = small_build
    repo = f"{local_hub.user}/reseed-unchanged"
    hub_cli("publish", "--build", build, "--repo", repo, env=hub_env)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    head = api.dataset_info(repo).sha
    # A new machine: the same photos (in a folder of the same name), no build folder.
    photos = tmp_path / "machine" / data.name
    shutil.copytree(data, photos)
    fresh = tmp_path / "fresh"
    hub_cli(
        "encode", "--data", photos, "--model", tiny_model_dir, "--dtype", "float32",
        "--out", fresh, "--reuse", repo, env=hub_env,
    )  # fmt: skip
    run_cli("index", "--build", fresh, "--max-data-file-size", "8KB")
    # The index wrote the published manifest, creation time included: nothing to commit (a
    # commit rewrote the manifest and the card for their "created" time alone).
    published = api.hf_hub_download(repo, "index/manifest.json", repo_type="dataset")
    assert (fresh / "index/manifest.json").read_bytes() == Path(published).read_bytes()
    since = len(local_hub.requests)
    again = hub_cli("publish", "--build", fresh, "--repo", repo, env=hub_env)
    assert again.stdout.startswith(f"already up to date: {repo}@{head}"), again.stdout
    assert api.dataset_info(repo).sha == head
    assert not [r for r in local_hub.requests[since:] if "/commit/" in r["path"]]


def test_a_pull_request_is_opened_when_main_already_holds_the_same_card(
    generated_build, hub_env, local_hub
):
    from huggingface_hub import CommitOperationDelete

    repo = f"{local_hub.user}/same-card"
    publish = textwrap.dedent(f"""
        from pipeline.publish import PublishConfig, publish_to_hub
        config = PublishConfig(build={str(generated_build)!r}, repo_id={repo!r},
                               max_files_per_commit=2)  # 4 changes go through a pull request
        print(publish_to_hub(config).revision)
    """)  # fmt: skip
    run_python(publish, hub_env)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    published = sorted(api.list_repo_files(repo, repo_type="dataset"))
    # Someone deletes the indices on the Hub; main keeps the card this build writes. Opened
    # with that card alone, the pull request's first commit changed nothing: huggingface_hub
    # skipped it, no pull request was opened, and every run failed on refs/pr/None.
    lost = [f for f in published if f.startswith("index/")]
    api.create_commit(
        repo,
        repo_type="dataset",
        operations=[CommitOperationDelete(path_in_repo=f) for f in lost],
        commit_message="lost",
    )
    revision = run_python(publish, hub_env).split()[-1]
    assert revision == api.dataset_info(repo).sha
    assert sorted(api.list_repo_files(repo, repo_type="dataset")) == published


@pytest.fixture(scope="module")
def many_files_build(tmp_path_factory, tiny_model_dir, tiny_encoder):
    """240 generated photos, one row per data file: 240 data files."""
    from conftest import write_photos

    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource

    root = tmp_path_factory.mktemp("many")
    data = write_photos(root / "data", [f"m{i:03d}" for i in range(240)], size=(16, 16))
    build = root / "build"
    config = EncodeConfig(out=build, model=str(tiny_model_dir), dtype="float32", shard_size=64)
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    manifest = run_index(IndexConfig(build=build, target_bytes=1))
    assert len(manifest.data_files) == 240
    return build


def test_a_publish_of_hundreds_of_files_stays_within_the_commit_limit_and_lands_once(
    many_files_build, hub_env, local_hub
):
    repo = f"{local_hub.user}/many-files"
    limit = local_hub.max_files_per_commit
    assert limit is not None and limit <= 100
    # The repo holds an older build's files, which the pull request deletes, and a file of the
    # user's outside data/ and index/, which it keeps.
    stale = ["data/old-00000.parquet", "data/old-00001.parquet", "index/old.faiss"]
    code = (
        "from huggingface_hub import CommitOperationAdd, HfApi\n"
        f"api = HfApi(); api.create_repo({repo!r}, repo_type='dataset')\n"
        f"ops = [CommitOperationAdd(p, b'old') for p in {stale + ['notes.md']!r}]\n"
        f"api.create_commit({repo!r}, operations=ops, repo_type='dataset', commit_message='old')\n"
    )
    run_python(code, hub_env)
    doc = local_hub.state.storage.get_repo("dataset", repo)
    before = doc["branches"]["main"]
    since = len(local_hub.requests)
    result = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env)
    commits = [
        r for r in local_hub.requests[since:] if r["method"] == "POST" and "/commit/" in r["path"]
    ]
    assert len(commits) >= 5 and all(r["status"] == 200 for r in commits)
    assert "create_pr=1" in commits[0]["query"]
    assert all("refs%2Fpr%2F" in r["path"] for r in commits[1:])
    doc = local_hub.state.storage.get_repo("dataset", repo)
    head = doc["branches"]["main"]
    assert doc["commits"][head]["parents"] == [before]  # main moved by exactly one commit
    files = doc["commits"][head]["files"]
    assert sum(p.startswith("data/") for p in files) == 240
    assert "index/manifest.json" in files
    assert not set(stale) & set(files) and "notes.md" in files
    assert revision_of(result.stdout) == head
    assert [p["status"] for p in doc["pulls"]] == ["merged"]
    # Publishing it again is a no-op.
    again = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env)
    assert "already up to date" in again.stdout


def test_the_hub_refuses_a_commit_over_its_file_limit(many_files_build, hub_env, local_hub):
    # What a publish that ignored the limit would meet (the test Hub enforces it).
    repo = f"{local_hub.user}/too-many-files"
    code = (
        "from huggingface_hub import CommitOperationAdd, HfApi\n"
        "from huggingface_hub.errors import HfHubHTTPError\n"
        f"api = HfApi(); api.create_repo({repo!r}, repo_type='dataset')\n"
        f"ops = [CommitOperationAdd(f'f{{i}}.txt', b'x') for i in range(101)]\n"
        "try:\n"
        f"    api.create_commit({repo!r}, operations=ops, repo_type='dataset', "
        "commit_message='m')\n"
        "except HfHubHTTPError as err:\n"
        "    print(err.response.status_code)\n"
    )
    assert run_python(code, hub_env).split()[-1] == "422"


def test_an_interrupted_large_publish_resumes_its_pull_request(
    many_files_build, hub_env, local_hub
):
    repo = f"{local_hub.user}/many-files-resumed"
    run_python(
        f"from huggingface_hub import HfApi\nHfApi().create_repo({repo!r}, repo_type='dataset')",
        hub_env,
    )
    before = local_hub.state.storage.get_repo("dataset", repo)["branches"]["main"]
    # The third commit to the pull request fails for good (after publish's retries).
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/refs%2Fpr%2F1", status=None)
    local_hub.inject_fault("POST", f"/api/datasets/{repo}/commit/refs%2Fpr%2F1", status=None)
    local_hub.inject_fault(
        "POST", f"/api/datasets/{repo}/commit/refs%2Fpr%2F1", status=503, times=20
    )
    try:
        result = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env,
                         check=False)  # fmt: skip
    finally:
        local_hub.clear_faults()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "run the same publish command again" in result.stderr
    doc = local_hub.state.storage.get_repo("dataset", repo)
    assert doc["branches"]["main"] == before  # readers saw nothing of it
    on_pr = doc["commits"][doc["branches"]["refs/pr/1"]]["files"]
    landed = sum(p.startswith("data/") for p in on_pr)
    assert 0 < landed < 240

    since = len(local_hub.requests)
    result = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env)
    assert "resuming pull request #1" in result.stderr
    from pipeline.publish import MAX_FILES_PER_COMMIT

    commits = [
        r for r in local_hub.requests[since:] if r["method"] == "POST" and "/commit/" in r["path"]
    ]
    # Only what the pull request lacked: the data files it misses, indices, manifest, card.
    missing = 240 - landed + 4
    assert len(commits) == -(-missing // MAX_FILES_PER_COMMIT)
    doc = local_hub.state.storage.get_repo("dataset", repo)
    files = doc["commits"][doc["branches"]["main"]]["files"]
    assert sum(p.startswith("data/") for p in files) == 240
    assert [p["status"] for p in doc["pulls"]] == ["merged"]


def _interrupt_pull_request(local_hub, hub_env, build, repo: str) -> None:
    """Create ``repo`` and run a publish whose pull request gets two commits, then fails."""
    run_python(
        f"from huggingface_hub import HfApi\nHfApi().create_repo({repo!r}, repo_type='dataset')",
        hub_env,
    )
    path = f"/api/datasets/{repo}/commit/refs%2Fpr%2F1"
    local_hub.inject_fault("POST", path, status=None)
    local_hub.inject_fault("POST", path, status=None)
    local_hub.inject_fault("POST", path, status=503, times=20)
    try:
        result = hub_cli("publish", "--build", build, "--repo", repo, env=hub_env, check=False)
    finally:
        local_hub.clear_faults()
    assert result.returncode == 2 and "run the same publish command again" in result.stderr


def test_a_pull_request_that_main_overtook_is_replaced_or_its_merge_checked(
    many_files_build, hub_env, local_hub
):
    # While a large publish is interrupted, main changes. A conflicting change makes the pull
    # request one the Hub cannot merge; another (a file of its own) would be merged into main
    # along with the build. Either way main must end as exactly this build.
    from imagesearchtr.manifest import sha256_file

    storage = local_hub.state.storage

    def commit_to_main(repo: str, path: str, data: bytes) -> None:
        run_python(
            "from huggingface_hub import CommitOperationAdd, HfApi\n"
            f"HfApi().create_commit({repo!r}, operations=[CommitOperationAdd({path!r}, "
            f"{data!r})], repo_type='dataset', commit_message='meanwhile')",
            hub_env,
        )

    def main_of(repo: str) -> tuple[str, dict]:
        doc = storage.get_repo("dataset", repo)
        return doc["branches"]["main"], doc["commits"][doc["branches"]["main"]]["files"]

    build_data = {
        f"data/{p.name}": sha256_file(p) for p in (many_files_build / "data").glob("*.parquet")
    }
    # A conflict: main gets another file at a path the pull request has written.
    repo = f"{local_hub.user}/many-files-conflict"
    _interrupt_pull_request(local_hub, hub_env, many_files_build, repo)
    doc = storage.get_repo("dataset", repo)
    on_pr = doc["commits"][doc["branches"]["refs/pr/1"]]["files"]
    landed = sorted(p for p in on_pr if p.startswith("data/"))[0]
    commit_to_main(repo, landed, b"another build's file")
    result = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env)
    assert f"pull request #1 of {repo} conflicts with main ({landed})" in result.stderr
    assert [p["status"] for p in storage.get_repo("dataset", repo)["pulls"]] == [
        "closed",
        "merged",
    ]
    head, files = main_of(repo)
    assert {p: e["sha256"] for p, e in files.items() if p.startswith("data/")} == build_data
    assert revision_of(result.stdout) == head

    # No conflict: main gains a data file of its own, which the merge keeps.
    repo = f"{local_hub.user}/many-files-overtaken"
    _interrupt_pull_request(local_hub, hub_env, many_files_build, repo)
    commit_to_main(repo, "data/extra-00000.parquet", b"not this build's")
    commit_to_main(repo, "notes.md", b"a note")  # outside data/ and index/: kept
    result = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env,
                     check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"main of {repo} changed while this publish ran" in result.stderr
    assert "(data/extra-00000.parquet)" in result.stderr
    again = hub_cli("publish", "--build", many_files_build, "--repo", repo, env=hub_env)
    head, files = main_of(repo)
    assert {p: e["sha256"] for p, e in files.items() if p.startswith("data/")} == build_data
    assert "notes.md" in files and revision_of(again.stdout) == head


def test_a_build_pins_the_model_components_it_took_from_the_hub(
    hub_env, local_hub, tiny_model_dir, tmp_path
):
    # MultiEmbedTR names its tokenizer and image processor by Hub id. A build records the
    # commits it loaded them at; queries and updates of the build load those, whatever the
    # repos hold later. One process (the pipeline's Python API) keeps the test short.
    import shutil

    from conftest import write_photos

    user, model = local_hub.user, tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    parts = ("text_model", "vision_model")
    ids = {part: f"{user}/pinned-{part.replace('_', '-')}" for part in parts}
    config = json.loads((model / "config.json").read_text())
    config.update(text_model_name=ids["text_model"], vision_model_name=ids["vision_model"])
    (model / "config.json").write_text(json.dumps(config))
    for part in parts:  # to the Hub, and from the model folder: only the Hub has them
        shutil.move(model / part, tmp_path / part)
    write_photos(tmp_path / "photos", ["a", "b", "c"])
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        from huggingface_hub import HfApi, hf_hub_download
        sys.path.insert(0, "space")
        from imagesearchtr import Encoder, Searcher
        from pipeline.encode import EncodeConfig, run_encode
        from pipeline.index import IndexConfig, run_index
        from pipeline.inputs import FolderSource
        from pipeline.publish import PublishConfig, publish_to_folder
        work, ids, api = Path({str(tmp_path)!r}), {ids!r}, HfApi()
        for part, repo in ids.items():
            api.create_repo(repo)
            api.upload_folder(folder_path=work / part, repo_id=repo)
        config = EncodeConfig(out=work / "build", model={str(model)!r}, dtype="float32")
        run_encode(FolderSource(work / "photos"), config)
        run_index(IndexConfig(build=work / "build"))
        publish_to_folder(PublishConfig(build=work / "build", to=work / "repo"))
        # The text component's repo changes: its tokenizer no longer lower-cases.
        tok = json.load(open(hf_hub_download(ids["text_model"], "tokenizer.json")))
        tok["normalizer"]["lowercase"] = False
        api.upload_file(path_or_fileobj=json.dumps(tok).encode(), path_in_repo="tokenizer.json",
                        repo_id=ids["text_model"])
        searcher = Searcher.from_repo(work / "repo")
        latest = Encoder.from_pretrained({str(model)!r})
        def lowercases(encoder):
            a, b = encoder.encode_texts(["DAĞLAR", "dağlar"])
            return bool(np.allclose(a, b, atol=1e-6))
        try:  # an encoder with the component at another commit is refused for this index
            Searcher.from_repo(work / "repo", encoder=latest)
            refused = ""
        except RuntimeError as err:  # ModelMismatchError
            refused = str(err)
        (work / "photos" / "images" / "a.jpg").rename(work / "photos" / "images" / "d.jpg")
        run_encode(FolderSource(work / "photos"), config)  # an update of the build
        # A new build over the published rows (--reuse) takes their components' commits...
        fresh = EncodeConfig(out=work / "fresh", model={str(model)!r}, dtype="float32",
                             reuse=str(work / "repo"))
        run_encode(FolderSource(work / "photos"), fresh)
        # ...and one begun with the components' newest commits is refused those rows.
        other = EncodeConfig(out=work / "other", model={str(model)!r}, dtype="float32")
        run_encode(FolderSource(work / "photos"), other)
        try:
            run_encode(FolderSource(work / "photos"),
                       EncodeConfig(**{{**vars(other), "reuse": str(work / "repo")}}))
            mixed = ""
        except ValueError as err:
            mixed = str(err)
        # The model itself from the Hub (as utkubascakir/MultiEmbedTR is): the manifest pins
        # its commit, and a search loads that commit after the repo moves on.
        model_repo = "{local_hub.user}/pinned-model"
        api.create_repo(model_repo)
        api.upload_folder(folder_path={str(model)!r}, repo_id=model_repo)
        model_commit = api.model_info(model_repo).sha
        hub_built = EncodeConfig(out=work / "hub-model", model=model_repo, dtype="float32")
        run_encode(FolderSource(work / "photos"), hub_built)
        hub_manifest = run_index(IndexConfig(build=work / "hub-model"))
        publish_to_folder(PublishConfig(build=work / "hub-model", to=work / "hub-repo"))
        api.upload_file(path_or_fileobj=b"moved on", path_in_repo="NOTES.md", repo_id=model_repo)
        hub_searcher = Searcher.from_repo(work / "hub-repo")
        # An update, and a new build over the published rows, load the commit they were made
        # with, not the repo's newest (a tokenizer in the model's repo may have changed).
        (work / "photos" / "images" / "d.jpg").rename(work / "photos" / "images" / "e.jpg")
        run_encode(FolderSource(work / "photos"), hub_built)
        hub_fresh = EncodeConfig(out=work / "hub-fresh", model=model_repo, dtype="float32",
                                 reuse=str(work / "hub-repo"))
        run_encode(FolderSource(work / "photos"), hub_fresh)
        kept = [json.loads((work / name / "build.json").read_text())["model_revision"]
                for name in ("hub-model", "hub-fresh")]
        # A commit the Hub no longer has (a squashed history): the error says where it came
        # from and what to do. (The build's model id in other letter case is the same model:
        # Hub ids are not case-sensitive.)
        build_json = work / "hub-model" / "build.json"
        good = build_json.read_text()
        info = json.loads(good)
        info.update(model_revision="0" * 40, model_id=info["model_id"].upper())
        build_json.write_text(json.dumps(info))
        try:
            run_encode(FolderSource(work / "photos"), hub_built)
            lost = ""
        except ValueError as err:
            lost = str(err)
        # ...but a component's lost commit is not reported as the model's.
        info = json.loads(good)
        component = sorted(info["component_revisions"])[0]
        info["component_revisions"][component] = "0" * 40
        build_json.write_text(json.dumps(info))
        try:
            run_encode(FolderSource(work / "photos"), hub_built)
            lost_component = ""
        except Exception as err:
            lost_component = f"{{type(err).__name__}}: {{err}}"
        print(json.dumps({{
            "model_pins": [model_commit, hub_manifest.model_id, hub_manifest.model_revision,
                           hub_searcher.encoder.revision, api.model_info(model_repo).sha],
            "kept": kept, "lost": lost, "lost_component": lost_component,
            "fresh": json.loads((work / "fresh" / "build.json").read_text())[
                "component_revisions"],
            "mixed": mixed,
            "pinned": searcher.encoder.component_revisions, "latest": latest.component_revisions,
            "pinned_lowercases": lowercases(searcher.encoder),
            "latest_lowercases": lowercases(latest),
            "updated": json.loads((work / "build" / "build.json").read_text())[
                "component_revisions"],
            "refused": refused,
        }}))
        """
    )
    seen = json.loads(run_python(script, hub_env).strip().splitlines()[-1])
    pins = json.loads((tmp_path / "repo" / "index" / "manifest.json").read_text())[
        "component_revisions"
    ]
    assert set(pins) == set(ids.values()) and all(len(sha) == 40 for sha in pins.values())
    assert seen["pinned"] == pins and seen["updated"] == pins
    assert seen["latest"][ids["text_model"]] != pins[ids["text_model"]]
    assert seen["pinned_lowercases"] and not seen["latest_lowercases"], seen
    assert f"this index was built with {ids['text_model']} at commit" in seen["refused"]
    assert seen["fresh"] == pins
    commit, model_id, recorded, loaded, newest = seen["model_pins"]
    assert model_id == f"{user}/pinned-model" and len(commit) == 40
    assert recorded == loaded == commit != newest
    assert seen["kept"] == [commit, commit]
    assert f"{user}/pinned-model no longer has commit 000000000000" in seen["lost"], seen["lost"]
    assert "pass --revision" in seen["lost"]
    assert "RevisionNotFound" in seen["lost_component"], seen["lost_component"]
    assert "no longer has commit" not in seen["lost_component"]
    assert "rows were made with the model's components at" in seen["mixed"], seen["mixed"]
