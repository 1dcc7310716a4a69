"""Security: no remote code, safe unpickling, the token never leaks, the app serves only results.

1. The project's own source (space/, pipeline/, hub_card/, benchmarks/, tests/) never passes
   ``trust_remote_code``, and every ``torch.load`` passes ``weights_only=True``.
2. With a recognisable HF_TOKEN, the whole user path (encode -> index -> publish -> publish-space
   -> a refused publish -> the app started from the Hub dataset -> an app whose dataset is
   missing) never writes the token to any output, file, card, manifest, commit or log.
3. The running app refuses every request for a file it did not create (gradio's file routes,
   path traversal, server paths passed to the API, loopback URLs), serves uploads back only as
   downloads, refuses oversized uploads, and does serve the result images it returned.
(The Space's requirements are checked to be pinned by tests/test_app.py.)

Reads nothing shared (synthetic photos); writes temporary folders only; every server listens on
127.0.0.1.
"""

from __future__ import annotations

import ast
import base64
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import REPO_ROOT, free_port, load_app, stop
from hub_server import run_local_hub

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

SECRET = "hf_SECRETtokenForTests1234567890"
READER = "hf_otherTokenThatMayRead987654"
SOURCE_DIRS = ("space", "pipeline", "hub_card", "benchmarks", "tests")
TRC = "trust_remote_" + "code"  # spelled apart so this file does not match its own search


def synthetic_folder(folder: Path, n: int = 10) -> Path:
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / "images" / f"p{i}.jpg", quality=85)
        lines.append(json.dumps({"path": f"images/p{i}.jpg", "caption": f"köpek {i}"}) + "\n")
    (folder / "captions.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------
# 1. the source: no remote code, pickles only with weights_only
# ---------------------------------------------------------------------------------------------


def python_sources() -> list[Path]:
    files = []
    for folder in SOURCE_DIRS:
        files += [
            p
            for p in sorted((REPO_ROOT / folder).rglob("*.py"))
            if "__pycache__" not in p.parts and p.resolve() != Path(__file__).resolve()
        ]
    return files


def test_source_list_is_not_empty():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in python_sources()}
    assert {"space/app.py", "space/imagesearchtr/multiembedtr.py", "pipeline/encode.py"} <= names
    assert "tests/test_security.py" not in names


def test_no_remote_code_and_pickles_only_with_weights_only():
    problems = []
    torch_loads = 0
    for path in python_sources():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(REPO_ROOT).as_posix()
        if re.search(TRC + r"\s*=\s*True", text):
            problems.append(f"{where}: {TRC}=True")
        for node in ast.walk(ast.parse(text, filename=where)):
            if not isinstance(node, ast.Call):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            value = keywords.get(TRC)
            if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                problems.append(f"{where}:{node.lineno}: {TRC} passed as {ast.unparse(value)}")
            name = ast.unparse(node.func)
            if name == "torch.load":
                torch_loads += 1
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                problems.append(f"{where}:{node.lineno}: {name}")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                allow = keywords.get("allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and not allow.value):
                    problems.append(f"{where}:{node.lineno}: np.load with allow_pickle")
    assert not problems, "\n".join(problems)
    assert torch_loads >= 2  # the scan really sees the loader and the tests' calls


def test_the_scan_catches_what_it_forbids(tmp_path, monkeypatch):
    """The check above fails on the patterns it forbids (a bad file among the sources)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\n"
        f"m = AutoModel.from_pretrained('x', {TRC}=True)\n"
        "sd = torch.load('model.bin')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "python_sources", lambda: [bad])
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    with pytest.raises(AssertionError) as failed:
        test_no_remote_code_and_pickles_only_with_weights_only()
    assert f"{TRC}=True" in str(failed.value) and "weights_only" in str(failed.value)


# ---------------------------------------------------------------------------------------------
# 2. the token never leaks
# ---------------------------------------------------------------------------------------------


def leaks(data: bytes | str) -> list[str]:
    """Which recognisable forms of SECRET occur in ``data``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    forms = {
        "token": SECRET.encode(),
        "token, lowercased": SECRET.lower().encode(),
        "token, base64": base64.b64encode(SECRET.encode()).rstrip(b"="),
        "token, URL-encoded": urllib.parse.quote(SECRET).encode(),
        "token's distinctive middle": SECRET[3:-6].encode(),
    }
    return [name for name, form in forms.items() if form in data or form in data.lower()]


def scan_tree(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            hits = leaks(path.read_bytes())
            if hits:
                found[str(path)] = hits
    return found


def run_app(env: dict, log: Path, timeout: float = 150):
    """space/app.py as a subprocess; returns (process, url) once it listens."""
    port = free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "space" / "app.py")],
            cwd=log.parent,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"app.py did not listen:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.3)


# The user's commands, run by the CLI's own main() one after another in ONE process (a Python
# start-up with torch and datasets costs several seconds on 2 cores); every line they print is
# kept. The last one is refused: another user's namespace (HTTP 403). Then, in the same process
# (the token in its environment as before), the app's start-up with a dataset that does not
# exist (argv[2]; argv[3]: app.py, run in the folder argv[4]): its message and its log, after a
# line that marks where they start.
MISSING_MARK = "=== app.py with a missing dataset"
PIPELINE_SCRIPT = f"""
import json, sys
from pipeline.cli import main
for args in json.loads(sys.argv[1]):
    for stream in (sys.stdout, sys.stderr):
        print("=== python -m pipeline " + " ".join(args), file=stream, flush=True)
    print("exit status", main(args), flush=True)

import importlib.util, logging, os
for stream in (sys.stdout, sys.stderr):
    print({MISSING_MARK!r}, file=stream, flush=True)
os.environ["DATASET_REPO"] = sys.argv[2]
os.chdir(sys.argv[4])
logging.basicConfig(
    level=logging.INFO, format="%(levelname)s %(name)s %(message)s", force=True
)
spec = importlib.util.spec_from_file_location("app", sys.argv[3])
app = importlib.util.module_from_spec(spec); sys.modules["app"] = app
spec.loader.exec_module(app)
loaded = app.load_searcher()
print(loaded.message)
app.build_app(loaded)  # the page is built around the message
"""


def test_the_token_never_appears_in_any_output(tmp_path, tiny_model_dir):
    from gradio_client import Client

    data = synthetic_folder(tmp_path / "photos")
    build = tmp_path / "build"
    outputs: dict[str, str] = {}
    with run_local_hub(tmp_path / "hub", token=SECRET, extra_tokens=[READER]) as hub:
        env = {**os.environ, **hub.env(), "HF_HOME": str(tmp_path / "hf-home")}
        env["GRADIO_TEMP_DIR"] = str(tmp_path / "gradio-tmp")
        assert env["HF_TOKEN"] == SECRET
        repo, space = f"{hub.user}/token-check", f"{hub.user}/token-check-space"
        commands = [
            ["encode", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(build)],
            ["index", "--build", str(build)],
            ["publish", "--build", str(build), "--repo", repo],
            ["publish-space", "--space", space, "--dataset-repo", repo],
            ["publish", "--build", str(build), "--repo", "someone-else/stolen"],
        ]
        missing_repo = f"{hub.user}/no-such-dataset"
        done = subprocess.run(
            [sys.executable, "-c", PIPELINE_SCRIPT, json.dumps(commands), missing_repo,
             str(REPO_ROOT / "space" / "app.py"), str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        stdout, missing_stdout = done.stdout.split(MISSING_MARK + "\n")
        stderr, missing_log = done.stderr.split(MISSING_MARK + "\n")
        outputs["pipeline stdout"], outputs["pipeline stderr"] = stdout, stderr
        outputs["missing app stdout"], outputs["missing app log"] = missing_stdout, missing_log
        assert stdout.count("exit status 0") == 4, stdout + stderr[-3000:]
        assert stdout.rstrip().endswith("exit status 2")
        assert "HTTP 403" in stderr and "Traceback" not in stderr
        # ... saying why, for a token that is valid: the Hub's own reason.
        assert "the Hub says: You don't have the rights to create a repo under someone-else" in (
            stderr
        )
        assert f"published space {space}@" in stdout
        assert "no-such-dataset" in missing_stdout and "search is unavailable" in missing_log

        # The app, started from the Hub dataset with the token in its environment: page + log.
        (tmp_path / "app").mkdir()
        proc, url = run_app({**env, "DATASET_REPO": repo}, tmp_path / "app" / "app.log")
        try:
            outputs["app page"] = urllib.request.urlopen(url, timeout=30).read().decode()
            with urllib.request.urlopen(url + "config", timeout=30) as answer:
                outputs["app config"] = answer.read().decode()
            client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            answer = client.predict(query="köpek", k=3, deep=True, alpha=0.5, api_name="/search")
            assert len(answer[1]) == 3, answer[2]
            outputs["app answer"] = json.dumps(answer, ensure_ascii=False)
            client.close()
        finally:
            stop(proc)
        outputs["app log"] = (tmp_path / "app" / "app.log").read_text()

        outputs["hub request log (paths and queries)"] = json.dumps(hub.requests)

    leaked = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    # Everything the Hub stored (blobs of every file, commits, cards, manifest, Space
    # variables) and everything the build wrote.
    leaked.update(scan_tree(tmp_path / "hub"))
    leaked.update(scan_tree(build))
    assert not leaked, f"the token appeared in: {leaked}"
    # The scan itself works: the token IS in the environment the commands ran with.
    assert leaks(json.dumps(env)) and leaks(SECRET.lower())
    # ...and what was scanned is the real thing: the Hub holds the card and the manifest.
    stored = b"".join(p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file())
    assert b'"model_fingerprint"' in stored and b"sdk: gradio" in stored


# ---------------------------------------------------------------------------------------------
# 3. the running app serves only the dataset's images
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_model_dir, tiny_encoder) -> Path:
    from pipeline.encode import EncodeConfig, run_encode
    from pipeline.index import IndexConfig, run_index
    from pipeline.inputs import FolderSource
    from pipeline.publish import PublishConfig, publish_to_folder

    data = synthetic_folder(tmp_path_factory.mktemp("security-data") / "photos")
    build = tmp_path_factory.mktemp("security-build")
    config = EncodeConfig(out=build, model=str(tiny_model_dir), device="cpu", dtype="float32")
    run_encode(FolderSource(data), config, encoder=tiny_encoder)
    run_index(IndexConfig(build=build))
    target = tmp_path_factory.mktemp("security-published") / "dataset"
    publish_to_folder(PublishConfig(build=build, to=target))
    return target


def launch_app(app, demo) -> str:
    port = free_port()
    app.launch(
        demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(published, tiny_encoder):
    """The app launched in this process, as test_app.py does: (url, demo, client)."""
    from gradio_client import Client

    from imagesearchtr import Searcher

    app = load_app("imagesearchtr_space_app_security")
    demo = app.build_app(Searcher.from_repo(published, encoder=tiny_encoder))
    url = launch_app(app, demo)
    try:
        yield (
            url,
            app,
            Client(url + "/", verbose=False, download_files=False, analytics_enabled=False),
        )
    finally:
        demo.close()


def raw_get(url: str, path: str) -> tuple[int, dict, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ../ or %2F)."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def result_image_path(client) -> str:
    gallery, results, status = client.predict(
        query="köpek", k=3, deep=False, alpha=0.6, api_name="/search"
    )
    assert len(gallery) == 3, status
    return gallery[0]["image"]["path"]


def test_result_images_are_served(served):
    url, _, client = served
    path = result_image_path(client)
    status, headers, body = raw_get(url, "/gradio_api/file=" + urllib.parse.quote(path))
    assert status == 200 and headers["content-type"] == "image/jpeg"
    with PIL.Image.open(io.BytesIO(body)) as image:
        assert image.format == "JPEG" and image.size == (64, 48)


def test_arbitrary_files_are_refused(served, published):
    url, _, client = served
    result = result_image_path(client)  # a file the app did create, as a base for traversal
    app_py = str(REPO_ROOT / "space" / "app.py")
    index_file = str(published / "index" / "image_emb.faiss")
    data_file = str(next((published / "data").glob("*.parquet")))
    manifest = str(published / "index" / "manifest.json")
    attempts = [
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/gradio_api/file/etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=/proc/self/environ",  # would hold HF_TOKEN on a Space
        "/gradio_api/file=" + app_py,
        "/gradio_api/file=space/app.py",  # relative to the working directory
        "/gradio_api/file=" + index_file,
        "/gradio_api/file=" + data_file,
        "/gradio_api/file=" + manifest,
        "/gradio_api/file=" + str(published),
        "/gradio_api/file=" + str(Path(result).parent),  # a directory of the cache
        "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/file=../../../../etc/passwd",
        "/gradio_api/file=" + result + "/../../../../../etc/passwd",
        "/gradio_api/file=" + urllib.parse.quote(result + "/../../../../../etc/passwd", safe=""),
        "/gradio_api/file=" + str(Path(result).parent.parent) + "/../../etc/passwd",
        "/gradio_api/file=file:///etc/passwd",
        "/gradio_api/file=" + url + "/config",  # a loopback URL: no server-side fetch
        "/gradio_api/file=http://169.254.169.254/latest/meta-data/",
        "/static/../../../../etc/passwd",
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/custom_component/x/y/..%2F..%2F..%2Fetc%2Fpasswd",
    ]
    served_files = []
    for path in attempts:
        status, _, body = raw_get(url, path)
        if not 400 <= status < 500 or b"root:" in body or b"model_fingerprint" in body:
            served_files.append(f"{path} -> {status} {body[:80]!r}")
    assert not served_files, "\n".join(served_files)


def call_api(url: str, endpoint: str, data: list) -> str:
    """POST /gradio_api/call/ENDPOINT and return the event stream's text."""
    body = json.dumps({"data": data}).encode()
    request = urllib.request.Request(
        f"{url}/gradio_api/call/{endpoint}", body, {"Content-Type": "application/json"}
    )
    event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/{endpoint}/{event_id}", timeout=60) as r:
        return r.read().decode()


@pytest.mark.parametrize("target", ["/etc/passwd", "index", "dataset-photo", "app.py"])
@pytest.mark.parametrize("tagged", [True, False], ids=["FileData", "bare-path"])
def test_server_paths_sent_to_the_api_are_refused(served, published, tmp_path, target, tagged):
    """A client cannot make the image search read a server file by naming its path, with or
    without gradio's FileData tag (gradio checks the path only with it)."""
    url, _, _ = served
    path = {
        "/etc/passwd": "/etc/passwd",
        "index": str(published / "index" / "image_emb.faiss"),
        "app.py": str(REPO_ROOT / "space" / "app.py"),
    }.get(target)
    if target == "dataset-photo":  # a real image on the server, outside gradio's cache
        path = str(tmp_path / "server-photo.jpg")
        PIL.Image.new("RGB", (32, 32), (9, 9, 9)).save(path)
    payload = {"path": path, "meta": {"_type": "gradio.FileData"}} if tagged else {"path": path}
    events = call_api(url, "search_image", [payload, 3])
    assert "event: error" in events and "sonuç" not in events, events
    assert "root:" not in events and "açılamadı" not in events  # nothing read, nothing told
    if not tagged:  # the composed search's image term too
        events = call_api(url, "search", ["köpek", 3, False, 0.5, payload])
        assert "event: error" in events and "sonuç" not in events, events


def upload(url: str, name: str, content: bytes, content_type="application/octet-stream") -> str:
    """POST a file to gradio's /gradio_api/upload, as any visitor may; its path on the server."""
    boundary = "----imagesearchtr-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/gradio_api/upload",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    (stored,) = json.loads(urllib.request.urlopen(request, timeout=30).read())
    return stored


def test_uploads_come_back_only_as_downloads(served):
    """Anyone can upload (gradio's /upload); an uploaded page must not run as the app's page."""
    url, _, _ = served
    page = b"<html><script>alert(document.cookie)</script></html>"
    stored = upload(url, "x.html", page, "text/html")
    status, headers, content = raw_get(url, "/gradio_api/file=" + urllib.parse.quote(stored))
    assert status == 200 and content == page
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")


def test_uploads_do_not_stay_for_the_spaces_life(published, tiny_encoder, monkeypatch):
    """Uploads nobody searched with would fill the disk (and keep visitors' photos) for weeks."""
    from imagesearchtr import Searcher

    app = load_app("imagesearchtr_space_app_uploads")
    monkeypatch.setattr(app, "UPLOADS_SWEEP_S", 1)  # the default: every 10 minutes, 1 h unused
    monkeypatch.setattr(app, "UPLOADS_KEEP_S", 1)
    demo = app.build_app(Searcher.from_repo(published, encoder=tiny_encoder))
    url = launch_app(app, demo)
    theirs = Path(app.get_upload_folder()) / f"another-app-{os.getpid()}" / "example.png"
    theirs.parent.mkdir(parents=True, exist_ok=True)
    theirs.write_bytes(b"x")  # another gradio app's file: the folder may be shared
    try:
        stored = Path(upload(url, "x.bin", b"\0" * 4096))
        assert stored.is_file()
        deadline = time.monotonic() + 20
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not stored.exists() and theirs.exists()
        # A search with an upload that is gone says so (the page may keep it attached).
        gone = {"path": str(stored), "meta": {"_type": "gradio.FileData"}}
        events = call_api(url, "search_image", [gone, 3])
        message = json.loads(events.split("data: ", 1)[1].splitlines()[0])["error"]
        assert "event: error" in events and "yeniden yükleyin" in message, events
        # The gallery's note of each result image shown goes with the file (ResultFolder's).
        call_api(url, "search", ["köpek", 3, False, 0.5, None])
        (noted,) = [b.temp_files for b in demo.blocks.values() if isinstance(b, app.gr.Gallery)]
        assert noted and all(Path(p).is_file() for p in noted)
        for path in noted.copy():
            Path(path).unlink()  # as ResultFolder's prune does
        deadline = time.monotonic() + 20
        while noted and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not noted
    finally:
        demo.close()
        shutil.rmtree(theirs.parent, ignore_errors=True)


def test_the_upload_sweep_counts_from_the_last_use_and_deletes_only_what_the_app_took_in(
    tmp_path,
):
    app = load_app("imagesearchtr_space_app_sweep")
    old, used, new = tmp_path / "a" / "old.jpg", tmp_path / "b" / "used.jpg", tmp_path / "new.jpg"
    result = tmp_path / app.RESULTS_FOLDER / "shown-long-ago.jpg"
    theirs = tmp_path / "c" / "another-apps-example.png"  # the folder may be shared
    named = tmp_path / "d" / app.RESULTS_FOLDER  # an upload named like the results folder
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    for path in (old, used, new, result, theirs, named, outside):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    time.sleep(1.1)
    os.utime(used)  # what QueryImage does when a search reads it
    new.write_bytes(b"y")
    taken = {str(p) for p in (old, used, new, result, named, outside, tmp_path / "e" / "gone")}
    gone = app.sweep_uploads(taken, keep_s=1, folder=tmp_path)
    assert gone == {str(old), str(named), str(tmp_path / "e" / "gone")}
    assert not old.parent.exists() and not named.parent.exists()  # and the folders they leave
    assert used.exists() and new.exists() and result.exists() and theirs.exists()
    assert outside.exists() and tmp_path.is_dir()


def test_oversized_uploads_are_refused(served):
    url, app, _ = served
    limit = 50 * 1024 * 1024
    assert app.MAX_UPLOAD == "50mb"
    boundary = "----imagesearchtr-big"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + b"\xff" * (limit + 1024) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/gradio_api/upload",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
