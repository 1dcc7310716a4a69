"""End-to-end checks of tests/hub_server.py with the real huggingface_hub and datasets clients.

Clients run in subprocesses: huggingface_hub and datasets read HF_ENDPOINT at import time, so the
environment must be set before they are imported (as it is for a user running them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from hub_server import SIGNED_URL_TTL_S, _parse_range, local_hub  # noqa: F401  (local_hub is a fixture)

pytestmark = pytest.mark.slow

PRELUDE = """
import json, os, sys
ARGS = json.loads(sys.argv[1])
def emit(obj):
    print("RESULT " + json.dumps(obj))
"""


def run_client(hub, code: str, hf_home: Path, args: dict | None = None, timeout: int = 120) -> dict:
    """Run ``code`` in a fresh interpreter pointed at ``hub``; return what it ``emit``-ted."""
    # Drop the caller's HF_* settings (offline mode, another endpoint or token, a shared cache).
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env = {**base, **hub.env(), "HF_HOME": str(hf_home)}
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), json.dumps(args or {})],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"client failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    results = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, f"client emitted nothing:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(results[-1])


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }


@pytest.fixture(scope="module")
def hub(local_hub):  # noqa: F811
    yield local_hub
    local_hub.clear_faults()
    assert local_hub.unhandled == [], f"routes the clients needed: {local_hub.unhandled}"


@pytest.fixture(scope="module")
def uploaded(hub, tmp_path_factory):
    """A private dataset repo uploaded with upload_folder: README (YAML), text, nested, 11 MB."""
    src = tmp_path_factory.mktemp("src")
    (src / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- tr\n---\n# Deneme\n")
    (src / "notes.txt").write_text("küçük bir metin dosyası\n", encoding="utf-8")
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "nested.json").write_text('{"a": 1}\n')
    (src / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))
    repo = f"{hub.user}/{unique('ds')}"
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi
        api = HfApi()
        url = api.create_repo(ARGS["repo"], repo_type="dataset", private=True)
        info = api.upload_folder(folder_path=ARGS["src"], repo_id=ARGS["repo"], repo_type="dataset")
        emit({"url": str(url), "oid": info.oid})
        """,
        tmp_path_factory.mktemp("home"),
        {"repo": repo, "src": str(src)},
    )
    assert out["url"] == f"{hub.endpoint}/datasets/{repo}"
    return {"repo": repo, "src": src, "oid": out["oid"], "files": read_tree(src)}


def test_whoami_accepts_the_token_and_rejects_a_wrong_one(hub, tmp_path):
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        me = HfApi().whoami()
        try:
            HfApi(token="hf_wrong").whoami()
            wrong = None
        except HfHubHTTPError as err:
            wrong = err.response.status_code
        emit({"name": me["name"], "wrong": wrong})
        """,
        tmp_path,
    )
    assert out == {"name": hub.user, "wrong": 401}


def test_card_metadata_is_validated_before_a_commit_as_the_hub_does(hub, tmp_path):
    """huggingface_hub posts a README.md to /api/validate-yaml before committing it; the Hub
    refuses a license it does not know and a Space's short_description over 60 characters."""
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi, RepoCard
        api = HfApi()
        repo = api.create_repo(ARGS["repo"], repo_type="dataset").repo_id
        def refused(text, repo_type="dataset"):
            try:
                RepoCard(text).validate(repo_type=repo_type)
                return None
            except ValueError as err:
                return str(err)
        try:  # the client's own check inside create_commit
            api.upload_file(path_or_fileobj=b"---\\nlicense: not-a-license\\n---\\n",
                            path_in_repo="README.md", repo_id=repo, repo_type="dataset")
            committed = None
        except ValueError as err:
            committed = str(err)
        emit({
            "ok": refused("---\\nlicense: cc-by-4.0\\n---\\n# x\\n"),
            "license": refused("---\\nlicense: cc-by-4.1\\n---\\n"),
            "short": refused("---\\nshort_description: " + "x" * 61 + "\\n---\\n", "space"),
            "short_dataset": refused("---\\nshort_description: " + "x" * 61 + "\\n---\\n"),
            "committed": committed,
            "files": api.list_repo_files(repo, repo_type="dataset"),
        })
        """,
        tmp_path,
        {"repo": unique("cards")},
    )
    assert out["ok"] is None and out["short_dataset"] is None
    assert '\\"license\\" must be one of' in out["license"] and "cc-by-4.0" in out["license"]
    # YAML that does not parse (RepoCard refuses it before asking; another client may not).
    asked = urllib.request.Request(
        f"{hub.endpoint}/api/validate-yaml",
        data=json.dumps({"content": "---\nlicense: [\n---\n", "repoType": "dataset"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(asked)
    assert answer.value.code == 400 and b"Invalid YAML" in answer.value.read()
    assert "short_description" in out["short"] and "60" in out["short"]
    assert out["committed"].startswith("Invalid metadata in README.md")
    assert "README.md" not in out["files"]  # refused before anything was committed


def test_upload_folder_then_download_in_a_fresh_cache(hub, uploaded, tmp_path):
    out = run_client(
        hub,
        """
        import os
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        api, repo = HfApi(), ARGS["repo"]
        folder = snapshot_download(repo, repo_type="dataset")
        one = hf_hub_download(repo, "sub/deeper/nested.json", repo_type="dataset",
                              revision=ARGS["oid"])
        tree = api.list_repo_tree(repo, repo_type="dataset", recursive=True)
        entries = {e.path: {"type": type(e).__name__, "lfs": getattr(e, "lfs", None) is not None,
                            "size": getattr(e, "size", None)} for e in tree}
        def error_of(call):
            try:
                call()
                return None
            except Exception as err:
                return type(err).__name__
        errors = {
            "anonymous": error_of(lambda: HfApi(token=False).dataset_info(repo)),
            "no_repo": error_of(lambda: api.dataset_info(repo + "-missing")),
            "parquet_ref": error_of(
                lambda: api.dataset_info(repo, revision="refs/convert/parquet")),
            "no_file": error_of(lambda: hf_hub_download(repo, "nope.txt", repo_type="dataset")),
        }
        emit({
            "folder": folder,
            "one": open(one, encoding="utf-8").read(),
            "files": api.list_repo_files(repo, repo_type="dataset"),
            "entries": entries,
            "sha": api.dataset_info(repo).sha,
            "card": api.dataset_info(repo).card_data.to_dict(),
            "errors": errors,
        })
        """,
        tmp_path,
        {"repo": uploaded["repo"], "oid": uploaded["oid"]},
    )
    downloaded = read_tree(Path(out["folder"]))
    assert set(downloaded) == set(uploaded["files"]) | {".gitattributes"}
    for name, content in uploaded["files"].items():
        assert downloaded[name] == content, name
    assert out["one"] == '{"a": 1}\n'
    assert sorted(out["files"]) == sorted([*uploaded["files"], ".gitattributes"])
    assert out["entries"]["big.bin"] == {"type": "RepoFile", "lfs": True, "size": 11 * 1024 * 1024}
    assert out["entries"]["notes.txt"]["lfs"] is False
    assert out["entries"]["sub"]["type"] == out["entries"]["sub/deeper"]["type"] == "RepoFolder"
    assert out["sha"] == uploaded["oid"]
    assert out["card"]["license"] == "apache-2.0"
    assert out["errors"] == {
        "anonymous": "RepositoryNotFoundError",  # private: anonymous callers get a 401
        "no_repo": "RepositoryNotFoundError",
        "parquet_ref": "RevisionNotFoundError",
        "no_file": "RemoteEntryNotFoundError",
    }
    # The 11 MB binary went through the LFS batch + upload URL, the rest inline in the commit.
    assert len(hub.requests_matching("PUT", r"^/_lfs/upload/")) >= 1


def test_old_revision_stays_downloadable_after_a_second_commit(hub, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("version 1\n")
    (src / "w.bin").write_bytes(b"\0v1" * 1000)  # binary -> LFS
    out = run_client(
        hub,
        """
        from pathlib import Path
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError
        api, repo, src = HfApi(), ARGS["repo"], Path(ARGS["src"])
        api.create_repo(repo)
        first = api.upload_folder(folder_path=src, repo_id=repo).oid
        (src / "a.txt").write_text("version 2\\n")
        (src / "w.bin").write_bytes(b"\\0v2" * 1000)
        second = api.upload_folder(folder_path=src, repo_id=repo).oid
        old = {f: open(hf_hub_download(repo, f, revision=first), "rb").read().hex()
               for f in ("a.txt", "w.bin")}
        new = {f: open(hf_hub_download(repo, f), "rb").read().hex() for f in ("a.txt", "w.bin")}
        commits = [c.commit_id for c in api.list_repo_commits(repo)]
        head = api.model_info(repo).sha
        try:  # a commit whose parent is not the branch head anymore is refused
            api.upload_file(path_or_fileobj=b"late", path_in_repo="late.txt", repo_id=repo,
                            parent_commit=first)
            stale = "accepted"
        except HfHubHTTPError as err:
            stale = err.response.status_code
        try:
            api.create_repo(repo)
            again = "created twice"
        except HfHubHTTPError as err:
            again = err.response.status_code
        api.create_repo(repo, exist_ok=True)
        api.delete_file("a.txt", repo)
        api.upload_file(path_or_fileobj=b"n", path_in_repo="dir/sub/n.txt", repo_id=repo)
        api.delete_folder("dir", repo)
        emit({"first": first, "second": second, "old": old, "new": new, "commits": commits,
              "head": head, "stale": stale, "again": again, "files": api.list_repo_files(repo)})
        """,
        tmp_path / "home",
        {"repo": f"{hub.user}/{unique('model')}", "src": str(src)},
    )
    assert out["first"] != out["second"] and out["head"] == out["second"]
    assert out["commits"][:2] == [out["second"], out["first"]]  # newest first, then initial
    assert bytes.fromhex(out["old"]["a.txt"]) == b"version 1\n"
    assert bytes.fromhex(out["old"]["w.bin"]) == b"\0v1" * 1000
    assert bytes.fromhex(out["new"]["a.txt"]) == b"version 2\n"
    assert bytes.fromhex(out["new"]["w.bin"]) == b"\0v2" * 1000
    assert out["stale"] == 412
    assert out["again"] == 409
    assert out["files"] == [".gitattributes", "w.bin"]


def test_pull_requests_start_at_parent_commit_and_merge_as_git_does(hub, tmp_path):
    # huggingface_hub's create_commit: "If specified and create_pr is True, the pull request will
    # be created from parent_commit"; its merge keeps the base's own changes, and a file both
    # sides changed differently is a conflict that get_discussion_details names.
    out = run_client(
        hub,
        """
        from huggingface_hub import CommitOperationAdd as Add, CommitOperationDelete as Delete
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api, repo = HfApi(), ARGS["repo"]
        api.create_repo(repo, repo_type="dataset")
        def commit(ops, **kw):
            return api.create_commit(repo, operations=ops, repo_type="dataset",
                                     commit_message="m", **kw)
        def files(rev):
            return sorted(api.list_repo_files(repo, repo_type="dataset", revision=rev))
        start = commit([Add("a.txt", b"a1"), Add("b.txt", b"b1"), Add("gone.txt", b"g")]).oid
        commit([Add("c.txt", b"c1")])  # main moves on: start is stale now
        pr = commit([Add("a.txt", b"a2"), Delete("gone.txt")], create_pr=True,
                    parent_commit=start[:7])
        on_pr = files(f"refs/pr/{pr.pr_num}")
        commit([Add("b.txt", b"b2")])  # another change of main's, to a file the PR keeps
        details = api.get_discussion_details(repo, pr.pr_num, repo_type="dataset")
        api.merge_pull_request(repo, pr.pr_num, repo_type="dataset")
        merged = {f: api.hf_hub_download(repo, f, repo_type="dataset") for f in files("main")}
        merged = {f: open(path, "rb").read().decode() for f, path in merged.items()
                  if f.endswith(".txt")}
        clash = commit([Add("a.txt", b"a3")], create_pr=True, parent_commit=start)
        commit([Add("a.txt", b"a4")])  # both change a.txt since start
        head = api.dataset_info(repo).sha
        conflicting = api.get_discussion_details(repo, clash.pr_num,
                                                 repo_type="dataset").conflicting_files
        try:
            api.merge_pull_request(repo, clash.pr_num, repo_type="dataset")
            refused = "merged"
        except HfHubHTTPError as err:
            refused = err.response.status_code
        api.change_discussion_status(repo, clash.pr_num, "closed", repo_type="dataset")
        status = api.get_discussion_details(repo, clash.pr_num, repo_type="dataset").status
        emit({"on_pr": on_pr, "conflicts": details.conflicting_files, "merged": merged,
              "base": details.target_branch, "conflicting": conflicting, "refused": refused,
              "unchanged": api.dataset_info(repo).sha == head, "status": status})
        """,
        tmp_path / "home",
        {"repo": f"{hub.user}/{unique('pulls')}"},
    )
    assert out["on_pr"] == [".gitattributes", "a.txt", "b.txt"]  # from start, not from main
    assert out["conflicts"] == [] and out["base"] == "refs/heads/main"
    assert out["merged"] == {"a.txt": "a2", "b.txt": "b2", "c.txt": "c1"}
    assert out["conflicting"] == ["a.txt"]
    assert out["refused"] == 409 and out["unchanged"]
    assert out["status"] == "closed"


def test_hffilesystem_partial_read_uses_range(hub, uploaded, tmp_path):
    before = len(hub.requests)
    out = run_client(
        hub,
        """
        from huggingface_hub import HfFileSystem
        with HfFileSystem().open(f"datasets/{ARGS['repo']}/big.bin", "rb") as f:
            f.seek(5_000_000)
            chunk = f.read(1234)
        emit({"chunk": chunk.hex()})
        """,
        tmp_path,
        {"repo": uploaded["repo"]},
    )
    assert bytes.fromhex(out["chunk"]) == uploaded["files"]["big.bin"][5_000_000:5_001_234]
    ranged = [r for r in hub.requests[before:] if r["method"] == "GET" and r["range"]]
    # (through the storage host's URL when the hub redirects LFS reads, as the Hub does)
    assert ranged and ranged[-1]["status"] == 206
    assert all(r["status"] in (206, 302) for r in ranged)


def test_an_lfs_read_redirects_to_a_signed_storage_url_that_expires(hub, uploaded):
    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # urllib then raises the 302 as an HTTPError

    def get(url: str, headers: dict) -> tuple[int, str, bytes]:
        opener = urllib.request.build_opener(NoRedirects)
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as answer:
                return answer.status, "", answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Location", ""), err.read()

    resolve = f"{hub.endpoint}/datasets/{uploaded['repo']}/resolve/main/big.bin"
    auth = {"Authorization": f"Bearer {hub.token}", "Range": "bytes=10-19"}
    status, location, _ = get(resolve, auth)
    assert status == 302 and location.startswith("http://localhost:")  # another origin
    expected = uploaded["files"]["big.bin"][10:20]
    assert get(location, {"Range": "bytes=10-19"})[::2] == (206, expected)
    assert get(location, auth)[0] == 400  # the signature is the only credential
    assert get(location.replace("sig=", "sig=0"), {"Range": "bytes=10-19"})[0] == 403
    hub.signed_url_ttl_s = -1  # every URL signed from now on has already expired
    try:
        _, expired, _ = get(resolve, auth)
        status, _, body = get(expired, {"Range": "bytes=10-19"})
        assert status == 403 and b"expired" in body
    finally:
        hub.signed_url_ttl_s = SIGNED_URL_TTL_S


def test_tree_pagination_and_expand(hub, uploaded, tmp_path):
    hub.state.tree_page_size = 2  # force several pages; the client follows the Link header
    try:
        out = run_client(
            hub,
            """
            from huggingface_hub import HfApi
            api, repo = HfApi(), ARGS["repo"]
            flat = [e.path for e in api.list_repo_tree(repo, repo_type="dataset", recursive=True)]
            top = [e.path for e in api.list_repo_tree(repo, repo_type="dataset")]
            sub = [e.path for e in api.list_repo_tree(repo, "sub", repo_type="dataset")]
            expanded = {e.path: e.last_commit.oid
                        for e in api.list_repo_tree(repo, repo_type="dataset", expand=True)}
            info = api.get_paths_info(repo, ["big.bin", "sub", "missing"], repo_type="dataset")
            emit({"flat": flat, "top": top, "sub": sub, "expanded": expanded,
                  "info": [[type(i).__name__, i.path] for i in info]})
            """,
            tmp_path,
            {"repo": uploaded["repo"]},
        )
    finally:
        hub.state.tree_page_size = None
    assert sorted(out["flat"]) == sorted(
        [".gitattributes", "README.md", "big.bin", "notes.txt", "sub", "sub/deeper"]
        + ["sub/deeper/nested.json"]
    )
    assert sorted(out["top"]) == [".gitattributes", "README.md", "big.bin", "notes.txt", "sub"]
    assert out["sub"] == ["sub/deeper"]
    assert out["expanded"]["big.bin"] == uploaded["oid"]
    assert out["expanded"][".gitattributes"] != uploaded["oid"]  # from the initial commit
    assert out["info"] == [["RepoFile", "big.bin"], ["RepoFolder", "sub"]]


def test_multipart_lfs_upload(hub, tmp_path):
    data = os.urandom(9 * 1024 * 1024 + 17)
    (tmp_path / "weights.safetensors").write_bytes(data)
    repo = f"{hub.user}/{unique('multipart')}"
    hub.multipart_chunk_size = 4 * 1024 * 1024
    try:
        out = run_client(
            hub,
            """
            from huggingface_hub import HfApi, hf_hub_download
            api, repo = HfApi(), ARGS["repo"]
            api.create_repo(repo)
            api.upload_file(path_or_fileobj=ARGS["file"], path_in_repo="w.safetensors",
                            repo_id=repo)
            emit({"path": hf_hub_download(repo, "w.safetensors")})
            """,
            tmp_path / "home",
            {"repo": repo, "file": str(tmp_path / "weights.safetensors")},
        )
    finally:
        hub.multipart_chunk_size = None
    assert Path(out["path"]).read_bytes() == data
    assert len(hub.requests_matching("PUT", r"^/_lfs/part/")) >= 3
    assert len(hub.requests_matching("POST", r"^/_lfs/complete/")) >= 1


def test_download_resumes_with_range_after_a_truncated_body(hub, uploaded, tmp_path):
    # huggingface_hub writes 10 MiB chunks: cut after one so that there is something to resume.
    # (An LFS file's bytes come from the storage host the Hub redirects to.)
    hub.inject_fault("GET", r"/_storage/[0-9a-f]+$", truncate_after=10 * 1024 * 1024 + 4096)
    before = len(hub.requests)
    out = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(ARGS["repo"], "big.bin", repo_type="dataset")
        emit({"data": open(path, "rb").read().hex()})
        """,
        tmp_path,
        {"repo": uploaded["repo"]},
    )
    assert bytes.fromhex(out["data"]) == uploaded["files"]["big.bin"]
    gets = [r for r in hub.requests[before:] if r["method"] == "GET"]
    assert [g["status"] for g in gets] == ["200-truncated", 206]
    assert gets[1]["range"] == f"bytes={10 * 1024 * 1024}-"


def test_push_to_hub_then_load_dataset(hub, tmp_path):
    repo = f"{hub.user}/{unique('pushed')}"
    rows = {"text": ["merhaba dünya", "kedi", "köpek"], "label": [0, 1, 1]}
    run_client(
        hub,
        """
        import datasets
        datasets.Dataset.from_dict(ARGS["rows"]).push_to_hub(ARGS["repo"])
        emit({})
        """,
        tmp_path / "push-home",
        {"repo": repo, "rows": rows},
    )
    out = run_client(
        hub,
        """
        import datasets
        emit(datasets.load_dataset(ARGS["repo"], split="train").to_dict())
        """,
        tmp_path / "load-home",
        {"repo": repo},
    )
    assert out == rows


def test_upload_folder_with_yaml_configs_then_load_dataset(hub, tmp_path):
    repo = f"{hub.user}/{unique('configs')}"
    rows = {"caption": ["bir kedi", "iki köpek"], "id": [7, 8]}
    out = run_client(
        hub,
        """
        import datasets
        from pathlib import Path
        import pyarrow as pa, pyarrow.parquet as pq
        from huggingface_hub import HfApi
        src = Path(ARGS["src"])
        (src / "data").mkdir(parents=True)
        pq.write_table(pa.table(ARGS["rows"]), src / "data" / "train-00000-of-00001.parquet")
        (src / "README.md").write_text(
            "---\\nconfigs:\\n- config_name: default\\n  data_files:\\n"
            "  - split: train\\n    path: data/*.parquet\\n---\\n# Captions\\n"
        )
        api = HfApi()
        api.create_repo(ARGS["repo"], repo_type="dataset")
        api.upload_folder(folder_path=src, repo_id=ARGS["repo"], repo_type="dataset")
        emit({})
        """,
        tmp_path / "push-home",
        {"repo": repo, "rows": rows, "src": str(tmp_path / "src")},
    )
    out = run_client(
        hub,
        """
        import datasets
        emit(datasets.load_dataset(ARGS["repo"], split="train").to_dict())
        """,
        tmp_path / "load-home",
        {"repo": repo},
    )
    assert out == rows


def test_space_create_upload_and_snapshot(hub, tmp_path):
    src = tmp_path / "space"
    src.mkdir()
    (src / "app.py").write_text("import gradio as gr\n")
    (src / "requirements.txt").write_text("faiss-cpu\n")
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi, snapshot_download
        api, repo = HfApi(), ARGS["repo"]
        api.create_repo(repo, repo_type="space", space_sdk="gradio")
        api.upload_folder(folder_path=ARGS["src"], repo_id=repo, repo_type="space")
        emit({"folder": snapshot_download(repo, repo_type="space"),
              "sdk": api.space_info(repo).sdk})
        """,
        tmp_path / "home",
        {"repo": f"{hub.user}/{unique('space')}", "src": str(src)},
    )
    downloaded = read_tree(Path(out["folder"]))
    assert downloaded["app.py"] == b"import gradio as gr\n"
    assert downloaded["requirements.txt"] == b"faiss-cpu\n"
    assert b"sdk: gradio" in downloaded["README.md"]  # the Hub's generated Space card
    assert out["sdk"] == "gradio"


def test_a_space_runtime_follows_what_its_commit_holds(hub, tmp_path):
    # The Hub reads the card and looks for the app file before it builds; a first build has
    # no hardware yet (huggingface_hub: "Can be None if Space is BUILDING for the first time").
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi
        api, repo = HfApi(), ARGS["repo"]
        def step():
            runtime = api.get_space_runtime(repo)
            return [runtime.stage, runtime.hardware, runtime.raw.get("errorMessage")]
        api.create_repo(repo, repo_type="space", space_sdk="gradio")
        seen = {"created": step()}
        api.upload_file(path_or_fileobj=b"x = 1", path_in_repo="main.py", repo_id=repo,
                        repo_type="space")
        seen["no app file"] = step()
        api.upload_file(path_or_fileobj=b"---\\ntitle: t\\n---\\n", path_in_repo="README.md",
                        repo_id=repo, repo_type="space")
        seen["no sdk"] = step()
        api.upload_file(path_or_fileobj=b"---\\nsdk: gradio\\napp_file: main.py\\n---\\n",
                        path_in_repo="README.md", repo_id=repo, repo_type="space")
        seen["builds"] = [step(), step(), step()]
        emit(seen)
        """,
        tmp_path / "home",
        {"repo": f"{hub.user}/{unique('runtime')}"},
    )
    assert out["created"] == ["NO_APP_FILE", None, None]
    stage, hardware, message = out["no app file"]
    assert (stage, hardware) == ("NO_APP_FILE", None) and "app.py" in message
    stage, hardware, message = out["no sdk"]
    assert (stage, hardware) == ("CONFIG_ERROR", None) and "sdk" in message
    running = ["RUNNING", "cpu-basic", None]
    assert out["builds"] == [["BUILDING", None, None], running, running]


def test_injected_commit_failure_raises_and_changes_nothing(hub, tmp_path):
    repo = f"{hub.user}/{unique('faults')}"
    hub.inject_fault("POST", rf"^/api/models/{repo}/commit/", status=500, times=1)
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api, repo = HfApi(), ARGS["repo"]
        api.create_repo(repo)
        before = api.model_info(repo).sha
        try:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo)
            first = "no error"
        except HfHubHTTPError as err:
            first = err.response.status_code
        after = api.model_info(repo).sha
        retried = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo).oid
        emit({"first": first, "unchanged": before == after, "files": api.list_repo_files(repo),
              "retried": retried})
        """,
        tmp_path,
        {"repo": repo},
    )
    # create_commit does not retry the commit POST: the 500 surfaces as HfHubHTTPError.
    assert out["first"] == 500
    assert out["unchanged"] is True
    assert out["files"] == [".gitattributes", "x.txt"]
    assert len(hub.requests_matching("POST", rf"^/api/models/{repo}/commit/")) == 2


def test_injected_faults_on_idempotent_calls_are_retried(hub, tmp_path):
    repo = f"{hub.user}/{unique('retry')}"
    # Over HTTP this time: a 503 on preupload and a dropped connection on a download.
    for rule in (
        {"method": "POST", "path": f"/api/models/{repo}/preupload/", "status": 503},
        {"method": "GET", "path": f"^/{repo}/resolve/", "drop": True},
    ):
        request = urllib.request.Request(
            f"{hub.endpoint}/_test/faults",
            data=json.dumps(rule).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
    out = run_client(
        hub,
        """
        from huggingface_hub import HfApi, hf_hub_download
        api, repo = HfApi(), ARGS["repo"]
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="h.txt", repo_id=repo)
        emit({"content": open(hf_hub_download(repo, "h.txt"), "rb").read().decode()})
        """,
        tmp_path,
        {"repo": repo},
    )
    assert out["content"] == "hello"
    preuploads = hub.requests_matching("POST", rf"^/api/models/{repo}/preupload/")
    assert [r["status"] for r in preuploads] == [503, 200]  # http_backoff retried it
    gets = hub.requests_matching("GET", rf"^/{repo}/resolve/")
    assert [r["status"] for r in gets] == ["dropped", 200]  # the download resumed
    assert hub.pending_faults() == []


def test_fault_admin_endpoint_validates_and_delay_only_slows_down(hub):
    bad = urllib.request.Request(
        f"{hub.endpoint}/_test/faults",
        data=json.dumps({"methd": "GET"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(bad)
    assert excinfo.value.code == 400
    hub.inject_fault("GET", r"^/api/whoami-v2$", status=None, delay=0.3)
    whoami = urllib.request.Request(
        f"{hub.endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {hub.token}"}
    )
    start = time.monotonic()
    with urllib.request.urlopen(whoami) as response:
        assert json.load(response)["name"] == hub.user
    assert time.monotonic() - start >= 0.3
    assert hub.pending_faults() == []


def test_cli_serves_the_same_storage(hub, uploaded, tmp_path):
    """`python tests/hub_server.py` prints its URL first and serves what is on disk."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("hub_server.py")),
            "--port",
            "0",
            "--storage",
            str(hub.storage_dir),
            "--token",
            hub.token,
            "--user",
            hub.user,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        class CliHub:
            def env(self):
                return {**hub.env(), "HF_ENDPOINT": url}

        out = run_client(
            CliHub(),
            """
            from huggingface_hub import HfApi, hf_hub_download
            path = hf_hub_download(ARGS["repo"], "notes.txt", repo_type="dataset")
            emit({"text": open(path, encoding="utf-8").read(),
                  "sha": HfApi().dataset_info(ARGS["repo"]).sha})
            """,
            tmp_path,
            {"repo": uploaded["repo"]},
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert out["text"] == "küçük bir metin dosyası\n"
    assert out["sha"] == uploaded["oid"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=100-", None),
        ("bytes=9-3", None),
        ("items=0-1", None),
    ],
)
def test_parse_range(header, expected):
    assert _parse_range(header, 100) == expected
