"""A local, Hugging Face Hub-compatible HTTP server for tests (fastapi + uvicorn).

Point the real clients at it with ``HF_ENDPOINT=http://127.0.0.1:PORT``, ``HF_TOKEN=<token>``,
``HF_HUB_DISABLE_XET=1`` and a temporary ``HF_HOME``. huggingface_hub reads ``HF_ENDPOINT`` at
import time (``huggingface_hub.constants.ENDPOINT``, ``datasets.config.HF_ENDPOINT``), so run the
clients in a subprocess with ``env={**os.environ, **hub.env(), "HF_HOME": tmpdir}``.

Only what huggingface_hub 2.x and datasets 5.x really call for create/upload/download/list/
load_dataset/push_to_hub flows is implemented. Every request that matches no route is answered
with 501, printed loudly to stderr and recorded in ``LocalHub.unhandled``.

Routes (``{type}`` is ``models``, ``datasets`` or ``spaces``; ``{repo}`` is ``namespace/name``;
``{prefix}`` is empty for models, ``datasets/`` or ``spaces/`` otherwise; revisions may be a
branch, ``refs/heads/X``, a tag or a full 40-hex commit sha, URL-encoded as the client sends them)::

    GET    /api/whoami-v2
    POST   /api/repos/create                          (409 when it exists)
    DELETE /api/repos/delete
    POST   /api/validate-yaml                         (400 for unparsable YAML, a license
                                                      not on the Hub's list, or a Space's
                                                      short_description over 60 characters)
    GET    /api/{type}/{repo}                         (repo info; ?blobs=true, ?expand=...)
    GET    /api/{type}/{repo}/revision/{rev}
    PUT    /api/{type}/{repo}/settings                (private / visibility only)
    POST   /api/{type}/{repo}/preupload/{rev}         (uploadMode lfs|regular, remote oid)
    POST   /api/{type}/{repo}/commit/{rev}            (ndjson; parentCommit -> 412 if stale;
                                                       ?create_pr=1: a pull request from
                                                       parentCommit; 422 over the file limit)
    GET    /api/{type}/{repo}/discussions             (pull requests; ?type=, ?status=)
    GET    /api/{type}/{repo}/discussions/{n}         (details: filesWithConflicts, changes)
    POST   /api/{type}/{repo}/discussions/{n}/merge   (409 on conflicts with the base)
    POST   /api/{type}/{repo}/discussions/{n}/status  (open or closed)
    GET    /api/{type}/{repo}/tree/{rev}[/{path}]     (?recursive, ?expand, Link pagination)
    POST   /api/{type}/{repo}/paths-info/{rev}        (form: paths=..., expand=...)
    GET    /api/{type}/{repo}/refs
    GET    /api/{type}/{repo}/commits/{rev}
    POST   /api/{type}/{repo}/branch/{branch}         DELETE likewise
    POST   /api/{type}/{repo}/tag/{rev}               DELETE /api/{type}/{repo}/tag/{tag}
    POST   /{prefix}{repo}.git/info/lfs/objects/batch (LFS batch API, "basic" or "multipart")
    PUT    /_lfs/upload/{oid}?size=&sig=              (single-part upload URL handed out)
    PUT    /_lfs/part/{oid}/{n}?sig=                  (multipart part URL; returns an ETag)
    POST   /_lfs/complete/{oid}?sig=                  (multipart completion)
    POST   /_lfs/verify/{oid}                         (LFS verify step)
    GET    /{prefix}{repo}/resolve/{rev}/{path}       HEAD likewise; Range -> 206; an LFS file
                                                      -> 302 to the storage URL below, as the
                                                      Hub redirects to its storage host (unless
                                                      ``lfs_redirects`` is off)
    GET    /_storage/{sha256}?expires=&sig=           HEAD likewise; on "localhost" (another
                                                      origin); 400 with an Authorization header;
                                                      403 once expired (``signed_url_ttl_s``)
    GET    /api/spaces/{repo}/variables               POST (add/update) and DELETE likewise
    GET    /api/spaces/{repo}/runtime                 POST /api/spaces/{repo}/hardware (see the
                                                      "Space runtimes and hardware" section)
    GET    /_test/requests                            (request log, for assertions)
    GET    /_test/faults   POST /_test/faults   DELETE /_test/faults

Fault injection: a rule matches requests by HTTP method (``"*"`` = any) and a regex searched in
the raw (still URL-encoded) request path, without the query string. A matching request is
answered with ``status`` (JSON ``{"error": ...}``), or its connection is closed without any
answer (``drop=True``), or the real answer is cut after ``truncate_after`` body bytes and the
connection closed; ``delay`` seconds are slept first (``status=None`` with a delay only slows
the real answer down). Each rule fires ``times`` times, then is removed. ``/_test/*`` routes
are never faulted. From Python::

    hub.inject_fault("POST", r"/commit/", status=500, times=1)
    hub.inject_fault("GET", r"/resolve/", truncate_after=1000)
    hub.clear_faults()

Over HTTP: ``POST /_test/faults`` with a JSON rule ``{"method": "POST", "path": "/commit/",
"status": 500, "times": 1, "drop": false, "delay": 0, "truncate_after": null}`` (or
``{"faults": [rule, ...]}``); ``DELETE /_test/faults`` clears; ``GET /_test/faults`` lists.

Space variables are kept in the repo's JSON (``"variables": {key: {value, description,
updatedAt}}``). Like the Hub, ``POST`` takes ``{"key", "value", "description"?}``, ``DELETE``
takes ``{"key"}``, and all three answer every variable as ``{key: {"value", "description",
"updatedAt"}}``; they need write access to the Space (404 for other repo types).

Starting it::

    python tests/hub_server.py --port 0 --storage DIR --token TOKEN --user testuser
    # first stdout line: http://127.0.0.1:PORT

    with run_local_hub(storage_dir, token="hf_test", user="testuser") as hub:
        subprocess.run([...], env={**os.environ, **hub.env(), "HF_HOME": tmp})

and the pytest fixture ``local_hub`` (session scope). Storage in ``storage_dir``: ``blobs/``
(content addressed by sha256) and ``repos/{type}/{namespace}/{name}.json`` (branches, tags and
every commit as a full snapshot of its files), so a restarted server sees the same repos.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

# The Hub refuses non-LFS ("regular") files above 10 MiB and tells the client to use LFS for them.
REGULAR_FILE_MAX_SIZE = 10 * 1024 * 1024
TREE_PAGE_SIZE = 1000  # the Hub's page size for /tree (50 with expand=True)
TREE_PAGE_SIZE_EXPAND = 50
READ_CHUNK = 1024 * 1024
# The license identifiers a card's `license` may take: the Hub's documented list
# (huggingface/hub-docs, docs/hub/repositories-licenses.md; the Hub adds to it over time).
HUB_LICENSES = frozenset(
    [
        "apache-2.0",
        "mit",
        "openrail",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0",
        "bigcode-openrail-m",
        "afl-3.0",
        "artistic-2.0",
        "bsl-1.0",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "bsd-3-clause-clear",
        "c-uda",
        "cc",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-2.5",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0",
        "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
        "wtfpl",
        "ecl-2.0",
        "epl-1.0",
        "epl-2.0",
        "etalab-2.0",
        "eupl-1.1",
        "agpl-3.0",
        "gfdl",
        "gpl",
        "gpl-2.0",
        "gpl-3.0",
        "lgpl",
        "lgpl-2.1",
        "lgpl-3.0",
        "isc",
        "lppl-1.3c",
        "ms-pl",
        "mpl-2.0",
        "odc-by",
        "odbl",
        "openrail++",
        "osl-3.0",
        "postgresql",
        "ofl-1.1",
        "ncsa",
        "unlicense",
        "zlib",
        "pddl",
        "lgpl-lr",
        "deepfloyd-if-license",
        "llama2",
        "gemma",
        "unknown",
        "other",
    ]
)

# A storage URL's lifetime: presigned URLs expire (S3's limit is 7 days; hours are common).
SIGNED_URL_TTL_S = 3600.0
API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
OID_RE = re.compile(r"^[0-9a-f]{64}$")
VARIABLE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable name

# What a new repo's first ("initial") commit holds on the Hub: LFS patterns in .gitattributes,
# which the preupload answer honours (e.g. *.parquet goes to LFS even when small).
_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.lz4 *.mds *.mlmodel"
    " *.model *.msgpack *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth"
    " *.rar *.safetensors saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip"
    " *.zst *tfevents* *.mp3 *.ogg *.wav *.jpg *.jpeg *.png *.webp *.gif *.mp4"
)
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in _LFS_PATTERNS.split()
)
SPACE_README = """---
title: {name}
emoji: 🔥
colorFrom: blue
colorTo: green
sdk: {sdk}
pinned: false
---
"""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git for an LFS file (its sha1 is the tree oid)."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


class HubError(Exception):
    """An error answer. ``error_code`` goes to ``X-Error-Code``, which the client maps to
    RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message}
        if self.error_code:
            headers["X-Error-Code"] = self.error_code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def _repo_not_found(user: str | None) -> HubError:
    # The Hub answers 401 to anonymous callers (it won't say whether a private repo exists).
    return HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")


# ---------------------------------------------------------------------------------------------
# Fault injection
# ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    method: str = "*"
    path: str = ".*"  # regex, searched in the raw request path (no query string)
    status: int | None = 500
    times: int = 1
    drop: bool = False  # close the connection without answering
    delay: float = 0.0  # seconds to sleep before acting
    truncate_after: int | None = None  # serve the real answer but cut its body after N bytes

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.search(self.path, path) is not None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        re.compile(fault.path)  # fail early on a bad regex
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._rules]

    def take(self, method: str, path: str) -> Fault | None:
        """Return the first rule matching this request and consume one of its shots."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None


def _transport_of(send: Any) -> Any:
    # uvicorn's `send` is a bound method of its RequestResponseCycle, which owns the transport.
    # This is the only way to drop a connection from ASGI; pinned to http="h11" below.
    return getattr(getattr(send, "__self__", None), "transport", None)


class _FaultAndLogMiddleware:
    """ASGI middleware: applies injected faults and records every request (method, path,
    status) so tests can assert how often the client called or retried something."""

    def __init__(self, app: Any, state: HubState):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "range": dict(scope.get("headers", [])).get(b"range", b"").decode("latin-1") or None,
            "auth": b"authorization" in dict(scope.get("headers", [])),
            "status": None,
            "fault": None,
        }
        fault = None if path.startswith("/_test/") else self.state.faults.take(method, path)
        if not path.startswith("/_test/"):
            self.state.record_request(entry)
        if fault is not None:
            entry["fault"] = asdict(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                transport = _transport_of(send)
                if transport is not None:
                    transport.close()
                    # let connection_lost run so uvicorn does not try to answer with a 500
                    await asyncio.sleep(0.05)
                    entry["status"] = "dropped"
                    return
                raise RuntimeError("injected fault: drop")
            # status=None (with a delay) lets the real answer through, only slower
            if fault.truncate_after is None and fault.status is not None:
                entry["status"] = fault.status
                # Read the request body first, so that an upload sees the error answer rather
                # than a connection reset while it is still sending (the Hub reads it too).
                message = await receive()
                while message["type"] == "http.request" and message.get("more_body"):
                    message = await receive()
                msg = f"Injected fault {fault.status}"
                body = json.dumps({"error": msg}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": fault.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-error-message", msg.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return

        budget = [fault.truncate_after if fault is not None else None]

        async def logged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            if budget[0] is not None and message["type"] == "http.response.body":
                body = message.get("body", b"")
                if budget[0] < 0:
                    return  # already cut: swallow the rest
                if len(body) >= budget[0] and (body or not message.get("more_body")):
                    # more_body=True: h11 must not check the (now short) Content-Length
                    cut = body[: budget[0]]
                    await send({"type": "http.response.body", "body": cut, "more_body": True})
                    budget[0] = -1
                    transport = _transport_of(send)
                    if transport is not None:
                        transport.close()
                    entry["status"] = f"{entry['status']}-truncated"
                    return
                budget[0] -= len(body)
            await send(message)

        await self.app(scope, receive, logged_send)


# ---------------------------------------------------------------------------------------------
# Storage: content-addressed blobs + one JSON document per repo
# ---------------------------------------------------------------------------------------------


class Storage:
    """Blobs under ``blobs/<sha256[:2]>/<sha256>``; repos under ``repos/<type>/<ns>/<name>.json``.

    A repo document: ``{"id", "type", "private", "sdk", "createdAt", "branches": {name: sha},
    "tags": {name: sha}, "commits": {sha: {"parents", "title", "message", "author", "date",
    "files": {path: {"sha256", "size", "lfs", "oid"}}}}}``. Commits are full snapshots and are
    never modified, so every old revision stays readable by its sha. All mutations hold
    ``self.lock`` (an RLock) and rewrite the document atomically (temp file + rename).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._repos: dict[tuple[str, str], dict] = {}

    # -- blobs --------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha, len(data)):
            tmp = self.new_tmp_path()
            tmp.write_bytes(data)
            self.adopt_blob(tmp, sha)
        return sha

    def new_tmp_path(self) -> Path:
        return self.root / "tmp" / uuid.uuid4().hex

    def adopt_blob(self, tmp: Path, sha256: str) -> None:
        dest = self.blob_path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    # -- repos --------------------------------------------------------------------------------

    def _doc_path(self, repo_type: str, repo_id: str) -> Path:
        ns, name = repo_id.split("/")
        return self.root / "repos" / repo_type / ns / f"{name}.json"

    def get_repo(self, repo_type: str, repo_id: str) -> dict | None:
        with self.lock:
            key = (repo_type, repo_id)
            if key not in self._repos:
                path = self._doc_path(repo_type, repo_id)
                if not path.is_file():
                    return None
                self._repos[key] = json.loads(path.read_text())
            return self._repos[key]

    def save_repo(self, repo: dict) -> None:
        with self.lock:
            path = self._doc_path(repo["type"], repo["id"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(repo))
            os.replace(tmp, path)
            self._repos[(repo["type"], repo["id"])] = repo

    def delete_repo(self, repo_type: str, repo_id: str) -> bool:
        with self.lock:
            path = self._doc_path(repo_type, repo_id)
            self._repos.pop((repo_type, repo_id), None)
            if path.is_file():
                path.unlink()
                return True
            return False

    def create_repo(self, repo_type: str, repo_id: str, private: bool, sdk: str | None) -> dict:
        with self.lock:
            if self.get_repo(repo_type, repo_id) is not None:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = {
                "id": repo_id,
                "type": repo_type,
                "private": private,
                "sdk": sdk,
                "createdAt": _now(),
                "branches": {},
                "tags": {},
                "commits": {},
            }
            # Like the Hub: an "initial commit" with .gitattributes (and a card for Spaces).
            files = {".gitattributes": self.regular_entry(DEFAULT_GITATTRIBUTES.encode())}
            if repo_type == "space":
                card = SPACE_README.format(name=repo_id.split("/")[1], sdk=sdk)
                files["README.md"] = self.regular_entry(card.encode())
            sha = self._new_commit(repo, None, files, "initial commit", "", "system")
            repo["branches"]["main"] = sha
            self.save_repo(repo)
            return repo

    def regular_entry(self, data: bytes) -> dict:
        return {
            "sha256": self.put_blob_bytes(data),
            "size": len(data),
            "lfs": False,
            "oid": git_blob_sha1(data),
        }

    @staticmethod
    def lfs_entry(sha256: str, size: int) -> dict:
        return {
            "sha256": sha256,
            "size": size,
            "lfs": True,
            "oid": git_blob_sha1(lfs_pointer(sha256, size)),
        }

    @staticmethod
    def _new_commit(
        repo: dict, parent: str | None, files: dict, title: str, message: str, author: str
    ) -> str:
        date = _now()
        seed = json.dumps([parent, sorted(files.items()), title, message, date, uuid.uuid4().hex])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][sha] = {
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "files": files,
        }
        return sha

    def commit(
        self,
        repo: dict,
        branch: str,
        operations: list[tuple[str, dict]],
        title: str,
        message: str,
        author: str,
        parent_commit: str | None,
    ) -> str:
        """Apply operations on top of ``branch`` atomically and move the branch. Blobs must
        already be stored. Raises HubError (412 on a stale parentCommit) without changing
        anything."""
        with self.lock:
            head = repo["branches"].get(branch)
            if head is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo["commits"][head]["files"])
            for kind, value in operations:
                path = value["path"].strip("/")
                if kind in ("file", "lfsFile"):
                    files[path] = value["entry"]
                elif kind == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(
                            404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                        )
                elif kind == "deletedFolder":
                    doomed = [p for p in files if p.startswith(path + "/")]
                    if not doomed:
                        raise HubError(404, f"Folder not found: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
            sha = self._new_commit(repo, head, files, title, message, author)
            repo["branches"][branch] = sha
            self.save_repo(repo)
            return sha


# ---------------------------------------------------------------------------------------------
# Pull requests and commit limits (the pipeline's large publishes)
#
# Modelled on the Hub's documented behaviour: ``create_commit(create_pr=True)`` (``?create_pr=1``)
# opens a pull request whose head is the ref ``refs/pr/N``, starting from the target branch, or
# from ``parent_commit`` when one is given ("the pull request will be created from
# parent_commit", huggingface_hub's create_commit; no 412 then); more commits go to
# ``revision="refs/pr/N"``; ``POST .../discussions/N/merge`` lands the pull request's changes on
# the base branch as ONE new commit, so readers of the branch see all of it or none. The base
# may have moved since the pull request started: as a git merge would, the merge keeps the
# base's own changes and applies the pull request's; a file both changed differently is a
# conflict. The Hub reports those in ``GET .../discussions/N`` (``filesWithConflicts``, which
# huggingface_hub reads as ``conflicting_files``) and cannot merge them; the status it answers
# that merge with is not documented: 409 here. ``POST .../discussions/N/status`` closes or
# reopens one. The details carry no ``diff`` and no events.
# The Hub asks for at most ~50-100 files per commit; this server refuses a commit with more than
# ``HubState.max_files_per_commit`` operations (default MAX_FILES_PER_COMMIT; None: no limit)
# with 422, so a test sees a publish that ignores the limit fail.
# PR heads are kept in ``repo["branches"]`` under their ref name (so every revision lookup and
# commit works on them unchanged) and hidden from the branch list.
# ---------------------------------------------------------------------------------------------

MAX_FILES_PER_COMMIT = 100


def _check_files_per_commit(state, operations: list) -> None:
    limit = state.max_files_per_commit
    if limit is not None and len(operations) > limit:
        raise HubError(
            422,
            f"Too many files in one commit ({len(operations)} > {limit}); split the upload "
            "into several commits",
        )


def _open_pull_request(storage, repo: dict, base: str, header: dict, author: str):
    """Create refs/pr/N at ``parentCommit`` if the header names one, else at the head of
    ``base``; return (the ref to commit to, N)."""
    with storage.lock:
        if base not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {base}", "RevisionNotFound")
        start = repo["branches"][base]
        if header.get("parentCommit"):
            start = _commit_by_prefix(repo, header["parentCommit"])
        pulls = repo.setdefault("pulls", [])
        num = len(pulls) + 1
        ref = f"refs/pr/{num}"
        repo["branches"][ref] = start
        pulls.append(
            {
                "num": num,
                "title": header.get("summary") or "Upload files",
                "status": "open",
                "author": author,
                "createdAt": _now(),
                "base": base,
                "start": start,  # the commit it started from: the merge's common ancestor
            }
        )
        storage.save_repo(repo)
    return ref, num


def _commit_by_prefix(repo: dict, oid: str) -> str:
    """A commit named by its sha or a unique prefix of at least 7 characters, as the Hub takes
    ``parent_commit``."""
    found = [sha for sha in repo["commits"] if len(oid) >= 7 and sha.startswith(oid.lower())]
    if len(found) != 1:
        raise HubError(404, f"Invalid rev id: {oid}", "RevisionNotFound")
    return found[0]


def _pull_files(repo: dict, pull: dict) -> tuple[dict, dict, dict]:
    """(files where it started, its head's files, the base branch head's files)."""
    head = repo["commits"][repo["branches"][f"refs/pr/{pull['num']}"]]["files"]
    base = repo["commits"][repo["branches"][pull["base"]]]["files"]
    # Pull requests stored before "start" was kept: taken as started from the base's head.
    start = repo["commits"][pull["start"]]["files"] if "start" in pull else base
    return start, head, base


def _conflicts(start: dict, head: dict, base: dict) -> list[str]:
    """Paths the pull request and the base both changed since ``start``, to different ends."""
    return sorted(
        path
        for path in set(start) | set(head) | set(base)
        if head.get(path) != start.get(path)
        and base.get(path) != start.get(path)
        and head.get(path) != base.get(path)
    )


def _find_pull(repo: dict, num: int) -> dict:
    pull = next((p for p in repo.get("pulls", []) if p["num"] == num), None)
    if pull is None:
        raise HubError(404, f"Discussion {num} not found", "EntryNotFound")
    return pull


def _discussion(pull: dict, repo_id: str, repo_type: str) -> dict:
    """A pull request as the Hub's discussion listings and details describe it."""
    return {
        "num": pull["num"],
        "title": pull["title"],
        "status": pull["status"],
        "author": {"name": pull["author"]},
        "createdAt": pull["createdAt"],
        "isPullRequest": True,
        "repo": {"name": repo_id, "type": repo_type},
    }


def _merge_pull_request(storage, repo: dict, num: int, author: str) -> str:
    with storage.lock:
        pull = _find_pull(repo, num)
        if pull["status"] != "open":
            raise HubError(400, f"Pull request {num} is {pull['status']}, not open")
        start, head, base = _pull_files(repo, pull)
        conflicts = _conflicts(start, head, base)
        if conflicts:
            raise HubError(
                409, f"Pull request {num} has conflicts with {pull['base']}: {', '.join(conflicts)}"
            )
        files = dict(base)
        for path in set(start) | set(head):
            if head.get(path) != start.get(path):  # the pull request's change
                if path in head:
                    files[path] = head[path]
                else:
                    files.pop(path, None)
        base_head = repo["branches"][pull["base"]]
        sha = storage._new_commit(
            repo, base_head, files, f"Merge pull request #{num}: {pull['title']}", "", author
        )
        repo["branches"][pull["base"]] = sha
        pull["status"], pull["mergeCommit"] = "merged", sha
        storage.save_repo(repo)
        return sha


# ---------------------------------------------------------------------------------------------
# Space runtimes and hardware (hub stream): stages, hardware requests, the app's host
# ---------------------------------------------------------------------------------------------
#
# The Hub builds a Space after each commit and reports its stage at GET /api/spaces/{repo}/runtime
# (huggingface_hub SpaceStage: NO_APP_FILE, CONFIG_ERROR, BUILDING, BUILD_ERROR, APP_STARTING,
# RUNNING, RUNNING_BUILDING, RUNNING_APP_STARTING, RUNTIME_ERROR, STOPPED, PAUSED, DELETING).
# Nothing is built here: each commit to a Space starts a *script* of stages, and every runtime
# GET moves one step along it and then stays on its last stage. The default script is BUILDING ->
# RUNNING for a first build and RUNNING_BUILDING -> RUNNING after that (the old commit keeps
# serving meanwhile); ``sha`` in the answer is the commit that runs (the new one from RUNNING on).
# What the commit holds is checked first, as the Hub reads the card before it builds (Spaces
# config reference): a card whose ``sdk`` is missing or not one of SPACE_SDKS gives CONFIG_ERROR,
# and a Space without its app file (``app_file``; app.py for gradio and streamlit, index.html
# for static, a Dockerfile for docker) gives NO_APP_FILE; the Hub's wording of those messages is
# not documented. ``hardware.current`` is None until a first build runs ("Can be None if Space
# is BUILDING for the first time", huggingface_hub's SpaceRuntime), then the requested hardware
# or cpu-basic.
# A test makes a build fail with ``hub.script_space(space_id, ["BUILDING", "BUILD_ERROR"],
# error_message="...")`` (used by the next commit), and points ``host`` (what gradio_client
# connects to for a Space id) at a local app with ``hub.set_space_host(space_id, url)``.
# Hardware: POST /api/spaces/{repo}/hardware {"flavor"} is granted for ``hardware_allowed``
# (cpu-basic unless a test adds more); ZeroGPU otherwise answers 403 (PRO accounts only), other
# paid hardware 402 (no payment method), as the Hub does for such accounts.
# Kept in memory: a restarted server forgets runtimes, as a restarted Space would rebuild.


SPACE_SDKS = ("gradio", "streamlit", "docker", "static")


def _space_config_error(card: dict | None, files: dict) -> tuple[str, str] | None:
    """(stage, message) for a Space commit the Hub would not build, else None."""
    sdk = (card or {}).get("sdk")
    if sdk not in SPACE_SDKS:
        return "CONFIG_ERROR", f"Invalid or missing sdk in README.md: {sdk!r}"
    default = {"docker": "Dockerfile", "static": "index.html"}.get(sdk, "app.py")
    app_file = default if sdk == "docker" else (card.get("app_file") or default)
    if app_file not in files:
        return "NO_APP_FILE", f"No application file: {app_file} is not in the repository"
    return None


class SpaceRuntimes:
    def __init__(self):
        self.lock = threading.Lock()
        self.spaces: dict[str, dict] = {}
        self.scripts: dict[str, tuple[list[str], str | None]] = {}
        self.hosts: dict[str, str] = {}
        self.hardware_allowed = {"cpu-basic"}

    def _entry(self, space_id: str) -> dict:
        return self.spaces.setdefault(
            space_id,
            {"stages": ["NO_APP_FILE"], "sha": None, "next_sha": None, "error": None,
             "current": None, "requested": None},
        )  # fmt: skip

    def on_commit(self, space_id: str, sha: str, card: dict | None, files: dict) -> None:
        with self.lock:
            entry = self._entry(space_id)
            default = ["RUNNING_BUILDING", "RUNNING"] if entry["sha"] else ["BUILDING", "RUNNING"]
            config_error = _space_config_error(card, files)
            if config_error is not None:
                default = [config_error[0]]
            stages, error = self.scripts.pop(
                space_id, (default, config_error[1] if config_error else None)
            )
            entry.update(stages=list(stages), next_sha=sha, error=error)

    def runtime(self, space_id: str) -> dict:
        with self.lock:
            entry = self._entry(space_id)
            stage = entry["stages"].pop(0) if len(entry["stages"]) > 1 else entry["stages"][0]
            if stage == "RUNNING" and entry["next_sha"]:
                entry["sha"], entry["next_sha"] = entry["next_sha"], None
            if stage == "RUNNING":
                entry["current"] = entry["requested"] or entry["current"] or "cpu-basic"
            answer = {
                "stage": stage,
                "hardware": {"current": entry["current"], "requested": entry["requested"]},
                "storage": None,
                "gcTimeout": 172800,
                "replicas": {"current": 1, "requested": 1},
                "devMode": False,
                "domains": [],
            }
            if entry["sha"]:
                answer["sha"] = entry["sha"]
            if (stage.endswith("_ERROR") or stage == "NO_APP_FILE") and entry["error"]:
                answer["errorMessage"] = entry["error"]
            return answer

    def request_hardware(self, space_id: str, flavor: str) -> dict:
        if flavor not in self.hardware_allowed:
            if flavor.startswith("zero-"):
                raise HubError(403, "ZeroGPU hardware is only available to PRO subscribers")
            raise HubError(402, f"Payment required: add a payment method to use {flavor}")
        with self.lock:
            entry = self._entry(space_id)
            entry["requested"] = flavor
        return self.runtime(space_id)

    def host(self, space_id: str) -> str:
        namespace, name = space_id.split("/", 1)
        default = f"https://{namespace}-{name}.hf.space".lower().replace("_", "-")
        return self.hosts.get(space_id, default)


# ---------------------------------------------------------------------------------------------
# Server state and the HTTP handlers
# ---------------------------------------------------------------------------------------------


class HubState:
    """Everything the app needs: storage, accepted tokens, the user, faults, the request log."""

    def __init__(
        self,
        storage_dir: str | os.PathLike,
        tokens: list[str],
        user: str,
        orgs: list[str] | None = None,
        multipart_chunk_size: int | None = None,
        tree_page_size: int | None = None,
        request_log: int | None = 10_000,
        lfs_redirects: bool = True,
        signed_url_ttl_s: float = SIGNED_URL_TTL_S,
    ):
        self.storage = Storage(storage_dir)
        self.request_log = request_log  # how many requests the log keeps; None: all
        self.tokens = set(tokens)
        self.user = user
        self.orgs = list(orgs or [])
        # When set, LFS objects bigger than this are announced as multipart uploads.
        self.multipart_chunk_size = multipart_chunk_size
        self.tree_page_size = tree_page_size
        # LFS downloads by redirect to a storage host, as the Hub does (see HubApp.resolve).
        self.lfs_redirects = lfs_redirects
        # How long a storage URL stays valid: a presigned URL carries its own expiry.
        self.signed_url_ttl_s = signed_url_ttl_s
        # Files per commit (pull requests and commit limits section below).
        self.max_files_per_commit: int | None = MAX_FILES_PER_COMMIT
        self.faults = FaultInjector()
        self.space_runtimes = SpaceRuntimes()  # hub stream: Space stages and hardware
        self._secret = secrets.token_bytes(16)  # signs the unauthenticated upload URLs
        self._log_lock = threading.Lock()
        self.requests: list[dict] = []
        self.unhandled: list[str] = []

    def record_request(self, entry: dict) -> None:
        with self._log_lock:
            self.requests.append(entry)
            if self.request_log is not None:
                del self.requests[: -self.request_log]

    def sign(self, oid: str) -> str:
        return hmac.new(self._secret, oid.encode(), hashlib.sha256).hexdigest()[:32]

    # -- auth ---------------------------------------------------------------------------------

    def user_of(self, request: Request) -> str | None:
        """The caller's user name, None if anonymous; 401 on an unknown token, like the Hub."""
        auth = request.headers.get("authorization")
        if not auth:
            return None
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and namespace in (self.user, *self.orgs)

    def readable_repo(self, request: Request, repo_type: str, repo_id: str) -> dict:
        user = self.user_of(request)
        repo = self.storage.get_repo(repo_type, repo_id)
        if repo is None or (repo["private"] and not self.can_write(user, repo_id.split("/")[0])):
            raise _repo_not_found(user)
        return repo

    def writable_repo(self, request: Request, repo_type: str, repo_id: str) -> tuple[dict, str]:
        repo = self.readable_repo(request, repo_type, repo_id)
        user = self.user_of(request)
        if not self.can_write(user, repo_id.split("/")[0]):
            raise HubError(403, "You don't have the rights to write to this repo")
        assert user is not None
        return repo, user

    @staticmethod
    def resolve_rev(repo: dict, raw_rev: str) -> str:
        """Branch, refs/heads/X, tag, refs/tags/X or full commit sha -> commit sha."""
        rev = unquote(raw_rev)
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if rev.startswith(prefix) and rev[len(prefix) :] in repo[table]:
                return repo[table][rev[len(prefix) :]]
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        if SHA_RE.match(rev) and rev in repo["commits"]:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def _card_data(state: HubState, files: dict) -> dict | None:
    entry = files.get("README.md")
    if entry is None:
        return None
    text = state.storage.blob_path(entry["sha256"]).read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _folders(files: dict) -> set[str]:
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def _folder_oid(files: dict, folder: str) -> str:
    # A stand-in for the git tree sha: deterministic in the folder's content.
    lines = sorted(f"{p} {e['oid']}" for p, e in files.items() if p.startswith(folder + "/"))
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _last_commit(repo: dict, sha: str, path: str, is_folder: bool) -> dict:
    """The newest commit in the first-parent chain of ``sha`` that changed ``path``."""

    def state_at(commit_sha: str) -> Any:
        files = repo["commits"][commit_sha]["files"]
        if is_folder:
            return _folder_oid(files, path)
        entry = files.get(path)
        return entry and entry["oid"]

    current = sha
    value = state_at(current)
    while True:
        parents = repo["commits"][current]["parents"]
        if not parents or state_at(parents[0]) != value:
            break
        current = parents[0]
    commit = repo["commits"][current]
    return {"id": current, "title": commit["title"], "date": commit["date"]}


def _tree_entry(repo: dict, sha: str, files: dict, path: str, expand: bool) -> dict:
    if path in files:
        entry = files[path]
        out: dict[str, Any] = {
            "type": "file",
            "oid": entry["oid"],
            "size": entry["size"],
            "path": path,
        }
        if entry["lfs"]:
            pointer = lfs_pointer(entry["sha256"], entry["size"])
            out["lfs"] = {
                "oid": entry["sha256"],
                "size": entry["size"],
                "pointerSize": len(pointer),
            }
        if expand:
            out["lastCommit"] = _last_commit(repo, sha, path, is_folder=False)
        return out
    out = {"type": "directory", "oid": _folder_oid(files, path), "size": 0, "path": path}
    if expand:
        out["lastCommit"] = _last_commit(repo, sha, path, is_folder=True)
    return out


def _repo_info_json(state: HubState, repo: dict, sha: str, blobs: bool, expand: list[str]) -> dict:
    commit = repo["commits"][sha]
    files = commit["files"]
    siblings = []
    for path in sorted(files):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            entry = files[path]
            sibling["size"] = entry["size"]
            sibling["blobId"] = entry["oid"]
            if entry["lfs"]:
                pointer = lfs_pointer(entry["sha256"], entry["size"])
                sibling["lfs"] = {
                    "sha256": entry["sha256"],
                    "size": entry["size"],
                    "pointerSize": len(pointer),
                }
        siblings.append(sibling)
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24],
        "id": repo["id"],
        "author": repo["id"].split("/")[0],
        "sha": sha,
        "lastModified": commit["date"],
        "createdAt": repo["createdAt"],
        "private": repo["private"],
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(e["size"] for e in files.values()),
    }
    card = _card_data(state, files)
    if card is not None:
        info["cardData"] = card
    if repo["type"] == "model":
        info["modelId"] = repo["id"]
    if repo["type"] == "space":
        info["sdk"] = repo["sdk"]
        info["host"] = state.space_runtimes.host(repo["id"])  # where gradio_client connects
        info["subdomain"] = info["host"].split("//", 1)[1].split(".", 1)[0]
    if expand:
        # With ?expand=..., the Hub answers only the requested properties (plus the ids).
        info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
    return info


def _parse_repo_match(m: re.Match) -> tuple[str, str]:
    groups = m.groupdict()
    if groups.get("kind"):
        repo_type = API_TYPES[groups["kind"]]
    else:
        repo_type = {None: "model", "datasets": "dataset", "spaces": "space"}[groups.get("prefix")]
    return repo_type, f"{unquote(groups['ns'])}/{unquote(groups['name'])}"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body or b"{}")
    except json.JSONDecodeError as err:
        raise HubError(400, f"Invalid JSON body: {err}") from err


class HubApp:
    """The route table and handlers. Routing is done on the *raw* request path because the
    clients URL-encode revisions and paths (``refs%2Fconvert%2Fparquet``, ``data%2Fx.parquet``)
    and Starlette's own router would only see the decoded path, where ``/`` is ambiguous."""

    def __init__(self, state: HubState):
        self.state = state
        seg = r"[^/]+"
        api = rf"/api/(?P<kind>models|datasets|spaces)/(?P<ns>{seg})/(?P<name>{seg})"
        git = rf"/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>{seg})/(?P<name>{seg}?)"
        table = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/repos/create", self.create_repo),
            ("DELETE", r"/api/repos/delete", self.delete_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("PUT", r"/_lfs/upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("PUT", r"/_lfs/part/(?P<oid>[0-9a-f]{64})/(?P<part>\d+)", self.lfs_part),
            ("POST", r"/_lfs/complete/(?P<oid>[0-9a-f]{64})", self.lfs_complete),
            ("POST", r"/_lfs/verify/(?P<oid>[0-9a-f]{64})", self.lfs_verify),
            ("GET", api, self.repo_info),
            ("GET", api + rf"/revision/(?P<rev>{seg})", self.repo_info),
            ("PUT", api + r"/settings", self.repo_settings),
            ("POST", api + rf"/preupload/(?P<rev>{seg})", self.preupload),
            ("POST", api + rf"/commit/(?P<rev>{seg})", self.commit),
            ("GET", api + rf"/tree/(?P<rev>{seg})(?:/(?P<path>.*))?", self.tree),
            ("POST", api + rf"/paths-info/(?P<rev>{seg})", self.paths_info),
            ("GET", api + r"/refs", self.refs),
            ("GET", api + rf"/commits/(?P<rev>{seg})", self.commits),
            ("POST", api + rf"/branch/(?P<branch>{seg})", self.create_branch),
            ("DELETE", api + rf"/branch/(?P<branch>{seg})", self.delete_branch),
            ("POST", api + rf"/tag/(?P<rev>{seg})", self.create_tag),
            ("DELETE", api + rf"/tag/(?P<tag>{seg})", self.delete_tag),
            ("POST", git + r"\.git/info/lfs/objects/batch", self.lfs_batch),
            ("GET", git + rf"/resolve/(?P<rev>{seg})/(?P<path>.+)", self.resolve),
            ("HEAD", git + rf"/resolve/(?P<rev>{seg})/(?P<path>.+)", self.resolve),
            ("GET", r"/_storage/(?P<sha>[0-9a-f]{64})", self.storage_read),
            ("HEAD", r"/_storage/(?P<sha>[0-9a-f]{64})", self.storage_read),
            ("GET", api + r"/discussions", self.discussions),
            ("GET", api + r"/discussions/(?P<num>\d+)", self.discussion_details),
            ("POST", api + r"/discussions/(?P<num>\d+)/merge", self.merge_pull_request),
            ("POST", api + r"/discussions/(?P<num>\d+)/status", self.discussion_status),
            ("GET", api + r"/variables", self.space_variables),
            ("POST", api + r"/variables", self.space_variables),
            ("DELETE", api + r"/variables", self.space_variables),
            ("GET", api + r"/runtime", self.space_runtime),
            ("POST", api + r"/hardware", self.space_hardware),
        ]
        self.routes = [(method, re.compile(regex), handler) for method, regex, handler in table]

    async def dispatch(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        raw_path = raw_path.split("?")[0]
        for method, regex, handler in self.routes:
            if method == request.method and (m := regex.fullmatch(raw_path)):
                try:
                    return await handler(request, m)
                except HubError as err:
                    return err.response()
        # Loud on purpose: a route the clients need and we lack must not go unnoticed.
        line = f"{request.method} {raw_path}"
        if request.url.query:
            line += f"?{request.url.query}"
        self.state.unhandled.append(line)
        print(f"LOCAL HUB: UNHANDLED ROUTE {line}", file=sys.stderr, flush=True)
        return JSONResponse(
            {"error": f"Not implemented by the local test hub: {line}"},
            status_code=501,
            headers={"X-Error-Message": "Not implemented by the local test hub"},
        )

    # -- account and repos ---------------------------------------------------------------------

    async def whoami(self, request: Request, m: re.Match) -> Response:
        user = self.state.user_of(request)
        if user is None:
            raise HubError(401, "Invalid username or password.")
        return JSONResponse(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [
                    {"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"}
                    for org in self.state.orgs
                ],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "local-test", "role": "write"},
                },
            }
        )

    async def create_repo(self, request: Request, m: re.Match) -> Response:
        user = self.state.user_of(request)
        body = await _json_body(request)
        name = body.get("name") or ""
        namespace = body.get("organization") or user
        repo_type = body.get("type") or "model"
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not NAME_RE.match(name) or not NAME_RE.match(namespace):
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        if not self.state.can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        sdk = body.get("sdk")
        if repo_type == "space" and not sdk:
            raise HubError(400, "sdk is required for Spaces")
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo_id = f"{namespace}/{name}"
        url = f"{_base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"
        try:
            self.state.storage.create_repo(repo_type, repo_id, private, sdk)
        except HubError as err:
            if err.status == 409:
                return JSONResponse(
                    {"error": err.message, "url": url},
                    status_code=409,
                    headers={"X-Error-Message": err.message},
                )
            raise
        return JSONResponse({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    async def delete_repo(self, request: Request, m: re.Match) -> Response:
        user = self.state.user_of(request)
        body = await _json_body(request)
        namespace = body.get("organization") or user
        repo_type = body.get("type") or "model"
        repo_id = f"{namespace}/{body.get('name')}"
        if repo_type not in URL_PREFIX or self.state.storage.get_repo(repo_type, repo_id) is None:
            raise _repo_not_found(user)
        if not self.state.can_write(user, namespace):
            raise HubError(403, "You don't have the rights to delete this repo")
        self.state.storage.delete_repo(repo_type, repo_id)
        return Response(status_code=200)

    async def validate_yaml(self, request: Request, m: re.Match) -> Response:
        """The card metadata checks huggingface_hub runs before every commit of a README.md
        (``HfApi._validate_yaml``): the Hub answers 400 with ``errors``, which the client raises
        as ``ValueError("Invalid metadata in README.md ...")``. Modelled: the YAML parses, its
        ``license`` is one of the Hub's identifiers, and a Space's ``short_description`` is at
        most 60 characters."""
        body = json.loads(await request.body() or b"{}")
        content, repo_type = str(body.get("content", "")), body.get("repoType", "model")
        errors = []
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            meta, errors = {}, [f"Invalid YAML in the metadata: {err}"]
        meta = meta if isinstance(meta, dict) else {}
        licenses = meta.get("license")
        for license_id in licenses if isinstance(licenses, list) else [licenses]:
            if license_id is not None and license_id not in HUB_LICENSES:
                errors.append(f'"license" must be one of [{", ".join(sorted(HUB_LICENSES))}]')
        short = meta.get("short_description")
        if repo_type == "space" and isinstance(short, str) and len(short) > 60:
            errors.append('"short_description" length must be less than or equal to 60')
        if errors:
            return JSONResponse({"errors": [{"message": e} for e in errors]}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    async def repo_info(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        with self.state.storage.lock:
            sha = self.state.resolve_rev(repo, m.groupdict().get("rev") or "main")
        params = request.query_params
        expand = params.getlist("expand") + params.getlist("expand[]")
        blobs = _truthy(params.get("blobs"))
        return JSONResponse(_repo_info_json(self.state, repo, sha, blobs, expand))

    async def repo_settings(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request)
        with self.state.storage.lock:
            if "private" in body:
                repo["private"] = bool(body["private"])
            if "visibility" in body:
                repo["private"] = body["visibility"] == "private"
            self.state.storage.save_repo(repo)
        return JSONResponse({})

    async def space_variables(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        if repo_type != "space":
            raise HubError(404, "Variables exist for Spaces only")
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request) if request.method != "GET" else {}
        with self.state.storage.lock:
            variables = repo.setdefault("variables", {})
            if request.method != "GET":
                key = body.get("key") if isinstance(body, dict) else None
                if not isinstance(key, str) or not VARIABLE_KEY_RE.match(key):
                    raise HubError(400, f"Invalid variable key: {key!r}")
                if request.method == "POST":
                    value = body.get("value")
                    if not isinstance(value, str):
                        raise HubError(400, "Variable value must be a string")
                    variables[key] = {
                        "value": value,
                        "description": body.get("description"),
                        "updatedAt": _now(),
                    }
                elif variables.pop(key, None) is None:
                    raise HubError(404, f"Variable {key} not found")
                self.state.storage.save_repo(repo)
            return JSONResponse({k: dict(v) for k, v in sorted(variables.items())})

    # -- Space runtime and hardware (see "Space runtimes and hardware" above) --------------------

    async def space_runtime(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        if repo_type != "space":
            raise HubError(404, "Runtimes exist for Spaces only")
        self.state.readable_repo(request, repo_type, repo_id)
        return JSONResponse(self.state.space_runtimes.runtime(repo_id))

    async def space_hardware(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        if repo_type != "space":
            raise HubError(404, "Hardware exists for Spaces only")
        self.state.writable_repo(request, repo_type, repo_id)
        flavor = (await _json_body(request)).get("flavor")
        if not isinstance(flavor, str):
            raise HubError(400, "flavor must be a hardware name")
        return JSONResponse(self.state.space_runtimes.request_hardware(repo_id, flavor))

    # -- upload ---------------------------------------------------------------------------------

    def _lfs_patterns(self, files: dict) -> list[str]:
        entry = files.get(".gitattributes")
        if entry is None:
            return []
        text = self.state.storage.blob_path(entry["sha256"]).read_text(errors="replace")
        return [
            line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()
        ]

    @staticmethod
    def _is_lfs_path(path: str, patterns: list[str]) -> bool:
        name = path.rsplit("/", 1)[-1]
        for pattern in patterns:
            target = path if "/" in pattern else name
            if fnmatch.fnmatchcase(target, pattern) or (
                "**" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))
            ):
                return True
        return False

    async def preupload(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request)
        with self.state.storage.lock:
            sha = self.state.resolve_rev(repo, m["rev"])
        files = repo["commits"][sha]["files"]
        patterns = self._lfs_patterns(files)
        answers = []
        for item in body.get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample") or "")
            # Like the Hub: LFS when .gitattributes tracks it, when it is too big for git, or
            # when it looks binary (a NUL byte in the first 512 bytes).
            lfs = (
                self._is_lfs_path(path, patterns)
                or int(item.get("size", 0)) > REGULAR_FILE_MAX_SIZE
                or b"\0" in sample
            )
            remote = files.get(path)
            # The client compares this oid with its own (sha256 for LFS, git sha1 otherwise)
            # to drop unchanged files from the commit.
            remote_oid = None
            if remote is not None:
                remote_oid = remote["sha256"] if remote["lfs"] else remote["oid"]
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": remote_oid,
                }
            )
        return JSONResponse({"files": answers, "commitOid": sha})

    async def lfs_batch(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request)
        if body.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported by the local hub")
        base = _base_url(request)
        chunk = self.state.multipart_chunk_size
        multipart = chunk is not None and "multipart" in body.get("transfers", ["basic"])
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not OID_RE.match(oid):
                answer["error"] = {"code": 422, "message": "Invalid oid"}
            elif not self.state.storage.has_blob(oid, size):
                sig = self.state.sign(oid)
                verify = {"href": f"{base}/_lfs/verify/{oid}"}
                if multipart and chunk is not None and size > chunk:
                    n_parts = -(-size // chunk)
                    header = {"chunk_size": str(chunk)}
                    for n in range(1, n_parts + 1):
                        header[f"{n:05d}"] = f"{base}/_lfs/part/{oid}/{n}?sig={sig}"
                    upload = {"href": f"{base}/_lfs/complete/{oid}?sig={sig}", "header": header}
                else:
                    upload = {"href": f"{base}/_lfs/upload/{oid}?size={size}&sig={sig}"}
                answer["actions"] = {"upload": upload, "verify": verify}
            # else: already stored -> no "actions", the client skips the upload
            objects.append(answer)
        transfer = "multipart" if multipart else "basic"
        return JSONResponse(
            {"transfer": transfer, "objects": objects, "hash_algo": "sha256"},
            media_type="application/vnd.git-lfs+json",
        )

    def _check_sig(self, request: Request, oid: str) -> None:
        # Upload URLs are used without the Authorization header (like presigned S3 URLs).
        if not hmac.compare_digest(request.query_params.get("sig", ""), self.state.sign(oid)):
            raise HubError(403, "Invalid upload signature")

    async def _receive_to_tmp(self, request: Request) -> tuple[Path, str, int]:
        tmp = self.state.storage.new_tmp_path()
        digest = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return tmp, digest.hexdigest(), size

    async def lfs_upload(self, request: Request, m: re.Match) -> Response:
        oid = m["oid"]
        self._check_sig(request, oid)
        tmp, sha, size = await self._receive_to_tmp(request)
        expected = request.query_params.get("size")
        if sha != oid or (expected is not None and int(expected) != size):
            tmp.unlink()
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {expected}")
        self.state.storage.adopt_blob(tmp, oid)
        return Response(status_code=200)

    async def lfs_part(self, request: Request, m: re.Match) -> Response:
        oid = m["oid"]
        self._check_sig(request, oid)
        tmp, sha, _ = await self._receive_to_tmp(request)
        part_dir = self.state.storage.root / "tmp" / f"parts-{oid}"
        part_dir.mkdir(exist_ok=True)
        os.replace(tmp, part_dir / f"{int(m['part']):05d}")
        return Response(status_code=200, headers={"ETag": f'"{sha}"'})

    async def lfs_complete(self, request: Request, m: re.Match) -> Response:
        oid = m["oid"]
        self._check_sig(request, oid)
        body = await _json_body(request)
        part_dir = self.state.storage.root / "tmp" / f"parts-{oid}"
        tmp = self.state.storage.new_tmp_path()
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in sorted(body.get("parts", []), key=lambda p: p["partNumber"]):
                path = part_dir / f"{int(part['partNumber']):05d}"
                if not path.is_file():
                    tmp.unlink()
                    raise HubError(400, f"Missing part {part['partNumber']} for {oid}")
                data = path.read_bytes()
                if f'"{hashlib.sha256(data).hexdigest()}"' != part.get("etag"):
                    tmp.unlink()
                    raise HubError(400, f"ETag mismatch for part {part['partNumber']}")
                out.write(data)
                digest.update(data)
        if digest.hexdigest() != oid:
            tmp.unlink()
            raise HubError(400, f"Assembled content does not match oid {oid}")
        self.state.storage.adopt_blob(tmp, oid)
        for path in part_dir.iterdir():
            path.unlink()
        part_dir.rmdir()
        return Response(status_code=200)

    async def lfs_verify(self, request: Request, m: re.Match) -> Response:
        self.state.user_of(request)
        body = await _json_body(request)
        if body.get("oid") != m["oid"] or not self.state.storage.has_blob(
            m["oid"], body.get("size")
        ):
            raise HubError(404, f"LFS object {m['oid']} not found")
        return JSONResponse({"success": True})

    async def commit(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, user = self.state.writable_repo(request, repo_type, repo_id)
        create_pr = _truthy(request.query_params.get("create_pr"))
        branch = unquote(m["rev"])
        if branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/") :]
        if branch not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        header: dict = {}
        operations: list[tuple[str, dict]] = []
        storage = self.state.storage
        # Decode and store every blob before taking the lock; the commit itself is atomic.
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')}")
                data = base64.b64decode(value["content"])
                if len(data) > REGULAR_FILE_MAX_SIZE:
                    raise HubError(400, f"{value['path']}: files over 10MiB must use LFS")
                operations.append(
                    (key, {"path": value["path"], "entry": storage.regular_entry(data)})
                )
            elif key == "lfsFile":
                oid = value["oid"]
                if not storage.has_blob(oid):
                    raise HubError(400, f"LFS object {oid} for {value['path']} was not uploaded")
                size = storage.blob_path(oid).stat().st_size
                if value.get("size") is not None and int(value["size"]) != size:
                    raise HubError(400, f"LFS object {oid}: size mismatch")
                operations.append(
                    (key, {"path": value["path"], "entry": storage.lfs_entry(oid, size)})
                )
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, {"path": value["path"]}))
            else:
                raise HubError(400, f"Unsupported commit operation key: {key}")
        _check_files_per_commit(self.state, operations)
        pr_num, parent = None, header.get("parentCommit")
        if create_pr:  # the pull request starts at parentCommit: nothing to be stale against
            branch, pr_num = _open_pull_request(storage, repo, branch, header, user)
            parent = None
        sha = storage.commit(
            repo,
            branch,
            operations,
            title=header.get("summary") or "Upload files",
            message=header.get("description") or "",
            author=user,
            parent_commit=parent,
        )
        if repo_type == "space" and branch == "main":
            files = repo["commits"][sha]["files"]
            card = _card_data(self.state, files)
            self.state.space_runtimes.on_commit(repo_id, sha, card, files)
        prefix = URL_PREFIX[repo_type]
        return JSONResponse(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{_base_url(request)}/{prefix}{repo_id}/commit/{sha}",
                "pullRequestUrl": (
                    f"{_base_url(request)}/{prefix}{repo_id}/discussions/{pr_num}"
                    if pr_num
                    else None
                ),
                "hookOutput": "",
            }
        )

    # -- pull requests (see the section "Pull requests and commit limits") ----------------------

    async def discussions(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        params = request.query_params
        with self.state.storage.lock:
            pulls = list(repo.get("pulls", []))
        if params.get("type") not in (None, "all", "pull_request"):
            pulls = []
        if params.get("status") not in (None, "all"):
            pulls = [p for p in pulls if p["status"] == params["status"]]
        pulls.sort(key=lambda p: -p["num"])  # newest first, like the Hub
        entries = [
            {**_discussion(p, repo_id, repo_type), "numComments": 1, "pinned": False} for p in pulls
        ]
        return JSONResponse({"discussions": entries, "count": len(entries), "start": 0})

    async def discussion_details(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        with self.state.storage.lock:
            pull = dict(_find_pull(repo, int(m["num"])))
            conflicts = _conflicts(*_pull_files(repo, pull)) if pull["status"] == "open" else []
        return JSONResponse(
            {
                **_discussion(pull, repo_id, repo_type),
                "events": [],
                "changes": {
                    "base": f"refs/heads/{pull['base']}",
                    "mergeCommitId": pull.get("mergeCommit"),
                },
                "filesWithConflicts": conflicts,
            }
        )

    async def discussion_status(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, user = self.state.writable_repo(request, repo_type, repo_id)
        status = (await request.json()).get("status")
        if status not in ("open", "closed"):
            raise HubError(400, f"Invalid status {status!r}")
        with self.state.storage.lock:
            pull = _find_pull(repo, int(m["num"]))
            if pull["status"] == "merged":
                raise HubError(400, f"Pull request {pull['num']} is merged")
            pull["status"] = status
            self.state.storage.save_repo(repo)
        event = {
            "id": uuid.uuid4().hex[:24],
            "type": "status-change",
            "createdAt": _now(),
            "author": {"name": user},
            "data": {"status": status},
        }
        return JSONResponse({"newStatus": event})

    async def merge_pull_request(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, user = self.state.writable_repo(request, repo_type, repo_id)
        _merge_pull_request(self.state.storage, repo, int(m["num"]), user)
        return JSONResponse({})

    # -- listing --------------------------------------------------------------------------------

    def _snapshot(self, request: Request, m: re.Match) -> tuple[dict, str, dict]:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        with self.state.storage.lock:
            sha = self.state.resolve_rev(repo, m["rev"])
        return repo, sha, repo["commits"][sha]["files"]

    async def tree(self, request: Request, m: re.Match) -> Response:
        repo, sha, files = self._snapshot(request, m)
        folder = unquote(m["path"] or "").strip("/")
        params = request.query_params
        recursive, expand = _truthy(params.get("recursive")), _truthy(params.get("expand"))
        folders = _folders(files)
        if folder and folder not in folders:
            raise HubError(404, f"{folder} does not exist on {sha}", "EntryNotFound")
        prefix = folder + "/" if folder else ""
        paths = [
            p
            for p in sorted(set(files) | folders)
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        # Cursor pagination with a Link header, like the Hub (1000 per page, 50 with expand).
        page_size = self.state.tree_page_size or (
            TREE_PAGE_SIZE_EXPAND if expand else TREE_PAGE_SIZE
        )
        start = int(params.get("cursor") or 0)
        page = paths[start : start + page_size]
        headers = {}
        if start + page_size < len(paths):
            query = dict(params)
            query["cursor"] = str(start + page_size)
            raw_path = request.scope["raw_path"].decode("latin-1").split("?")[0]
            headers["Link"] = f'<{_base_url(request)}{raw_path}?{urlencode(query)}>; rel="next"'
        entries = [_tree_entry(repo, sha, files, p, expand) for p in page]
        return JSONResponse(entries, headers=headers)

    async def paths_info(self, request: Request, m: re.Match) -> Response:
        repo, sha, files = self._snapshot(request, m)
        # huggingface_hub posts this one form-encoded (paths=a&paths=b&expand=false).
        body = (await request.body()).decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            form = json.loads(body or "{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(body)
            paths, expand = form.get("paths", []), _truthy((form.get("expand") or [None])[0])
        folders = _folders(files)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in files or path in folders:
                entries.append(_tree_entry(repo, sha, files, path, expand))
        return JSONResponse(entries)

    async def refs(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        with self.state.storage.lock:
            branches = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                for n, s in sorted(repo["branches"].items())
                if not n.startswith("refs/pr/")
            ]
            pulls = [
                {"name": n, "ref": n, "targetCommit": s}
                for n, s in sorted(repo["branches"].items())
                if n.startswith("refs/pr/")
            ]
            tags = [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s}
                for n, s in sorted(repo["tags"].items())
            ]
        out: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
        if _truthy(request.query_params.get("include_prs")):
            out["pullRequests"] = pulls
        return JSONResponse(out)

    async def commits(self, request: Request, m: re.Match) -> Response:
        repo, sha, _ = self._snapshot(request, m)
        out = []
        current: str | None = sha
        while current:
            commit = repo["commits"][current]
            out.append(
                {
                    "id": current,
                    "title": commit["title"],
                    "message": commit["message"],
                    "authors": [{"user": commit["author"]}],
                    "date": commit["date"],
                }
            )
            current = commit["parents"][0] if commit["parents"] else None
        return JSONResponse(out)

    async def create_branch(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request)
        branch = unquote(m["branch"])
        with self.state.storage.lock:
            if branch in repo["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            start = self.state.resolve_rev(repo, body.get("startingPoint") or "main")
            repo["branches"][branch] = start
            self.state.storage.save_repo(repo)
        return JSONResponse({})

    async def delete_branch(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        branch = unquote(m["branch"])
        with self.state.storage.lock:
            if branch == "main" or branch not in repo["branches"]:
                raise HubError(404 if branch != "main" else 403, f"Cannot delete branch {branch}")
            del repo["branches"][branch]
            self.state.storage.save_repo(repo)
        return JSONResponse({})

    async def create_tag(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        body = await _json_body(request)
        tag = body.get("tag") or ""
        with self.state.storage.lock:
            if tag in repo["tags"]:
                raise HubError(409, f"Tag {tag} already exists")
            repo["tags"][tag] = self.state.resolve_rev(repo, m["rev"])
            self.state.storage.save_repo(repo)
        return JSONResponse({})

    async def delete_tag(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo, _ = self.state.writable_repo(request, repo_type, repo_id)
        tag = unquote(m["tag"])
        with self.state.storage.lock:
            if tag not in repo["tags"]:
                raise HubError(404, f"Tag {tag} not found", "RevisionNotFound")
            del repo["tags"][tag]
            self.state.storage.save_repo(repo)
        return JSONResponse({})

    # -- download -------------------------------------------------------------------------------

    async def resolve(self, request: Request, m: re.Match) -> Response:
        repo_type, repo_id = _parse_repo_match(m)
        repo = self.state.readable_repo(request, repo_type, repo_id)
        with self.state.storage.lock:
            sha = self.state.resolve_rev(repo, m["rev"])
        path = unquote(m["path"])
        entry = repo["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        size = entry["size"]
        # ETag: git blob sha1 for regular files, the content sha256 for LFS files (plus the
        # X-Linked-* headers the Hub sets on its LFS redirects; the client prefers those).
        headers = {
            "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry["lfs"]:
            headers["X-Linked-Size"] = str(size)
            headers["X-Linked-Etag"] = f'"{entry["sha256"]}"'
            if self.state.lfs_redirects:
                # The Hub answers for an LFS file with a redirect to its storage host: a signed
                # URL on another origin (so clients send it no Authorization header), the
                # file's metadata on the redirect itself. "localhost" stands for that origin.
                sha256 = entry["sha256"]
                base = _base_url(request).replace("//127.0.0.1:", "//localhost:", 1)
                expires = int(time.time() + self.state.signed_url_ttl_s)
                sig = self.state.sign(f"download:{sha256}:{expires}")
                headers.pop("Accept-Ranges")
                headers["Location"] = f"{base}/_storage/{sha256}?expires={expires}&sig={sig}"
                return Response(status_code=302, headers=headers)
        return self._file_response(
            request, self.state.storage.blob_path(entry["sha256"]), size, headers
        )

    async def storage_read(self, request: Request, m: re.Match) -> Response:
        """The storage host an LFS redirect points at: the signed URL is the only credential
        and carries its expiry, and, as with S3's presigned URLs, a request that also carries
        Authorization fails."""
        sha256 = m["sha"]
        query = parse_qs(request.url.query)
        sig, expires = query.get("sig", [""])[0], query.get("expires", [""])[0]
        if not hmac.compare_digest(sig, self.state.sign(f"download:{sha256}:{expires}")):
            raise HubError(403, "Signature does not match")
        if not expires.isdigit() or int(expires) < time.time():
            raise HubError(403, "Request has expired")
        if "authorization" in request.headers:
            raise HubError(400, "Only one auth mechanism allowed")
        blob = self.state.storage.blob_path(sha256)
        if not blob.is_file():
            raise HubError(404, "NoSuchKey")
        headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
        headers["Content-Type"] = "application/octet-stream"
        return self._file_response(request, blob, blob.stat().st_size, headers)

    def _file_response(self, request: Request, blob: Path, size: int, headers: dict) -> Response:
        """The file's bytes, or the one range the request asks for (206), or only the headers
        (HEAD)."""
        start, end, status = 0, size - 1, 200
        range_header = request.headers.get("range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{size}"
                return Response(status_code=416, headers=headers)
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        if length <= READ_CHUNK:  # one read: no generator stepped on a worker thread per chunk
            return Response(b"".join(_read_range(blob, start, length)), status, headers)
        return StreamingResponse(
            _read_range(blob, start, length), status_code=status, headers=headers
        )


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range. None means unsatisfiable (-> 416)."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        n = int(match[2])
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _read_range(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(READ_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk


def create_app(state: HubState) -> Any:
    """The ASGI app: admin routes under /_test/, everything else through HubApp.dispatch."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    hub = HubApp(state)

    @app.get("/_test/faults")
    def list_faults() -> list[dict]:
        return state.faults.list()

    @app.post("/_test/faults")
    async def add_faults(request: Request) -> Any:
        body = await request.json()
        rules = body.get("faults", [body]) if isinstance(body, dict) else body
        try:
            faults = [Fault(**rule) for rule in rules]
            for fault in faults:
                re.compile(fault.path)
        except (TypeError, re.error) as err:
            return JSONResponse({"error": f"bad fault rule: {err}"}, status_code=400)
        return {"added": [asdict(state.faults.add(fault)) for fault in faults]}

    @app.delete("/_test/faults")
    def clear_faults() -> dict:
        state.faults.clear()
        return {"cleared": True}

    @app.get("/_test/requests")
    def list_requests() -> list[dict]:
        return list(state.requests)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    app.add_api_route("/{_rest:path}", hub.dispatch, methods=methods, include_in_schema=False)
    return _FaultAndLogMiddleware(app, state)


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))  # loopback only, never a public interface
    # As production HTTP servers do (nginx's tcp_nodelay): without it a response smaller than
    # one TCP segment waits out the client's delayed ACK, 40 ms on Linux, which no Hub adds.
    # Accepted connections inherit the option.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(128)  # listen now so clients may connect as soon as the URL is known
    return sock


def _uvicorn_server(state: HubState) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(state),
        http="h11",  # the drop/truncate faults rely on h11's RequestResponseCycle.transport
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def client_env(endpoint: str, token: str) -> dict[str, str]:
    """Environment for a huggingface_hub client of a local hub (add your own ``HF_HOME``)."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "30",
        "HF_HUB_DOWNLOAD_TIMEOUT": "60",
    }


class LocalHub:
    """Handle on a running local hub (see ``run_local_hub``)."""

    def __init__(self, state: HubState, endpoint: str, token: str):
        self.state = state
        self.endpoint = endpoint
        self.token = token
        self.user = state.user
        self.storage_dir = state.storage.root

    def env(self) -> dict[str, str]:
        """Environment for client subprocesses (add your own temporary ``HF_HOME``)."""
        return client_env(self.endpoint, self.token)

    def inject_fault(
        self,
        method: str = "*",
        path: str = ".*",
        *,
        status: int | None = 500,
        times: int = 1,
        drop: bool = False,
        delay: float = 0.0,
        truncate_after: int | None = None,
    ) -> Fault:
        """Fail the next ``times`` requests matching ``method`` and the ``path`` regex."""
        fault = Fault(method.upper(), path, status, times, drop, delay, truncate_after)
        return self.state.faults.add(fault)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def pending_faults(self) -> list[dict]:
        return self.state.faults.list()

    @property
    def requests(self) -> list[dict]:
        """The requests served so far (the last ``request_log`` of them, all with None):
        {"method", "path" (raw), "query", "range" (the Range
        header or None), "status" (int, "dropped" or e.g. "200-truncated"), "fault"}."""
        return list(self.state.requests)

    def requests_matching(self, method: str, path_regex: str) -> list[dict]:
        return [
            r
            for r in self.requests
            if method in ("*", r["method"]) and re.search(path_regex, r["path"])
        ]

    @property
    def unhandled(self) -> list[str]:
        """Requests that matched no route ("METHOD /raw/path?query")."""
        return list(self.state.unhandled)

    def script_space(
        self, space_id: str, stages: list[str], error_message: str | None = None
    ) -> None:
        """The runtime stages the next commit to ``space_id`` goes through (see the section)."""
        self.state.space_runtimes.scripts[space_id] = (list(stages), error_message)

    def set_space_host(self, space_id: str, url: str) -> None:
        """Where gradio_client finds the app of ``space_id`` (``host`` in its repo info)."""
        self.state.space_runtimes.hosts[space_id] = url.rstrip("/")

    def allow_space_hardware(self, *flavors: str) -> None:
        """Let this account run ``flavors`` (default: only cpu-basic)."""
        self.state.space_runtimes.hardware_allowed.update(flavors)

    @property
    def lfs_redirects(self) -> bool:
        return self.state.lfs_redirects

    @lfs_redirects.setter
    def lfs_redirects(self, value: bool) -> None:
        self.state.lfs_redirects = value

    @property
    def signed_url_ttl_s(self) -> float:
        return self.state.signed_url_ttl_s

    @signed_url_ttl_s.setter
    def signed_url_ttl_s(self, value: float) -> None:
        self.state.signed_url_ttl_s = value

    @property
    def max_files_per_commit(self) -> int | None:
        return self.state.max_files_per_commit

    @max_files_per_commit.setter
    def max_files_per_commit(self, value: int | None) -> None:
        self.state.max_files_per_commit = value

    @property
    def multipart_chunk_size(self) -> int | None:
        return self.state.multipart_chunk_size

    @multipart_chunk_size.setter
    def multipart_chunk_size(self, value: int | None) -> None:
        self.state.multipart_chunk_size = value


@contextlib.contextmanager
def run_local_hub(
    storage_dir: str | os.PathLike,
    token: str = "hf_local_test_token",
    user: str = "testuser",
    *,
    orgs: list[str] | None = None,
    extra_tokens: list[str] | None = None,
    multipart_chunk_size: int | None = None,
    tree_page_size: int | None = None,
    request_log: int | None = 10_000,
) -> Iterator[LocalHub]:
    """Serve a local hub on a free 127.0.0.1 port in a background thread (``request_log``:
    how many requests ``LocalHub.requests`` keeps, None for all)."""
    state = HubState(
        storage_dir,
        [token, *(extra_tokens or [])],
        user,
        orgs=orgs,
        multipart_chunk_size=multipart_chunk_size,
        tree_page_size=tree_page_size,
        request_log=request_log,
    )
    sock = _bind(0)
    port = sock.getsockname()[1]
    server = _uvicorn_server(state)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="local-hub", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("local hub failed to start")
        time.sleep(0.01)
    try:
        yield LocalHub(state, f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if state.unhandled:
            print(
                "LOCAL HUB: unhandled routes during this run:\n  " + "\n  ".join(state.unhandled),
                file=sys.stderr,
            )


try:  # the fixture is only defined when pytest is around (the CLI must not need it)
    import pytest

    @pytest.fixture(scope="session")
    def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
        """A local hub shared by the session, storage in a fresh temporary directory.

        Tests should use unique repo names; use ``hub.clear_faults()`` after fault tests."""
        with run_local_hub(tmp_path_factory.mktemp("local-hub"), token="hf_test_token") as hub:
            yield hub
            hub.clear_faults()

except ImportError:  # pragma: no cover
    pass


@dataclass(frozen=True)
class HubProcess:
    """Handle on a local hub serving from its own process (see ``run_hub_process``)."""

    endpoint: str
    token: str
    user: str
    pid: int  # of the server process: a benchmark reads its CPU time from /proc

    def env(self) -> dict[str, str]:
        return client_env(self.endpoint, self.token)

    @property
    def requests(self) -> list[dict]:
        """The request log, read over HTTP (``GET /_test/requests``)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/_test/requests", timeout=600) as answer:
            return json.load(answer)

    def inject_fault(self, method: str = "*", path: str = ".*", **rule) -> None:
        """As ``LocalHub.inject_fault``, over HTTP (``POST /_test/faults``)."""
        self._faults("POST", {"method": method.upper(), "path": path, **rule})

    def clear_faults(self) -> None:
        self._faults("DELETE", None)

    def _faults(self, verb: str, rule: dict | None) -> None:
        import urllib.request

        body = json.dumps(rule).encode() if rule is not None else None
        request = urllib.request.Request(f"{self.endpoint}/_test/faults", body, method=verb)
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=30).close()


def stop_process(proc, timeout: float = 30) -> None:
    """End a child process: SIGTERM, then SIGKILL if it has not exited within ``timeout`` s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def run_hub_process(
    storage_dir: str | os.PathLike,
    token: str = "hf_local_test_token",
    user: str = "testuser",
    *,
    request_log: int | None = 10_000,
    lfs_redirects: bool = True,
) -> Iterator[HubProcess]:
    """Serve a local hub from a child process (``python hub_server.py``) on a free port.

    For benchmarks: like the real Hub, the server then runs in its own interpreter, not on
    threads of the client's process that compete with it for one GIL. ``request_log``: as for
    ``run_local_hub`` (None: all); ``lfs_redirects``: as the Hub does (see ``HubApp.resolve``).
    """
    import subprocess
    import urllib.request

    cmd = [sys.executable, str(Path(__file__).resolve()), "--storage", str(storage_dir),
           "--token", token, "--user", user, "--request-log", str(request_log or 0),
           *([] if lfs_redirects else ["--no-lfs-redirects"])]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError("the local hub process failed to start")
        deadline = time.monotonic() + 30
        while True:  # the port is bound before uvicorn answers on it
            try:
                urllib.request.urlopen(f"{endpoint}/_test/requests", timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the local hub process failed to start") from None
                time.sleep(0.05)
        yield HubProcess(endpoint, token, user, proc.pid)
    finally:
        stop_process(proc)
        proc.stdout.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--storage", required=True, help="directory for blobs and repos")
    parser.add_argument("--token", action="append", required=True, help="accepted token(s)")
    parser.add_argument("--user", default="testuser")
    parser.add_argument("--org", action="append", default=[], help="writable org namespace(s)")
    parser.add_argument("--multipart-chunk-size", type=int, default=None)
    parser.add_argument("--tree-page-size", type=int, default=None)
    parser.add_argument(
        "--request-log", type=int, default=10_000, help="requests the log keeps (0: all)"
    )
    parser.add_argument(
        "--no-lfs-redirects",
        action="store_true",
        help="serve LFS files from resolve directly instead of redirecting to a storage URL",
    )
    args = parser.parse_args(argv)
    state = HubState(
        args.storage,
        args.token,
        args.user,
        orgs=args.org,
        multipart_chunk_size=args.multipart_chunk_size,
        tree_page_size=args.tree_page_size,
        request_log=args.request_log or None,
        lfs_redirects=not args.no_lfs_redirects,
    )
    sock = _bind(args.port)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    _uvicorn_server(state).run(sockets=[sock])


if __name__ == "__main__":
    main()
