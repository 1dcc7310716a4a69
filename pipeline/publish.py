"""Publish a finished build as a Hub dataset repo, or as a local folder laid out the same way.

Reads BUILD/shards/*.parquet, BUILD/index/* and BUILD/skipped.jsonl; writes, in ONE commit (or
one atomic folder swap for ``--to DIR``):

    README.md                          dataset card (hub_card), merged with any existing card
    data/train-00000-of-0000N.parquet  the rows: image bytes, ids, captions, embeddings
    index/image_emb.faiss              FAISS inner-product index over image_emb
    index/caption_emb.faiss            FAISS inner-product index over caption_emb
    index/manifest.json                model id/revision/fingerprint, counts, data hash, versions

Older files under data/ and index/ are deleted in the same commit, so the repo never holds rows
from one build and indices from another. Publishing a build whose manifest (data hash, model,
index types) is already the repo's is a no-op. The token comes from HF_TOKEN or
``hf auth login`` through huggingface_hub and is never printed or written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from imagesearchtr.manifest import INDEX_DIR, MANIFEST_FILE, Manifest, index_file

from .encode import SKIPPED_FILE, _reason_kind, features
from .index import load_build_dataset

DATA_DIR = "data"
CARD_FILE = "README.md"
MANAGED_DIRS = (DATA_DIR, INDEX_DIR)


@dataclass(frozen=True)
class PublishConfig:
    build: Path
    repo_id: str | None = None
    to: Path | None = None
    private: bool = False
    source_license: str | None = None
    retries: int = 4  # commit attempts after the first, with exponential backoff
    backoff: float = 1.0  # seconds before the first retry


@dataclass(frozen=True)
class PublishResult:
    location: str  # repo id or folder
    revision: str | None  # the commit on the Hub; None for a folder
    changed: bool


def staged_files(build: Path) -> tuple[Manifest, dict[str, Path]]:
    """Map repo paths to build files, checking the index matches the rows first."""
    build = Path(build)
    manifest = Manifest.load(build / INDEX_DIR / MANIFEST_FILE)
    _, shards = load_build_dataset(build)
    for info in manifest.indices:
        if not (build / info.file).is_file():
            raise FileNotFoundError(f"{build / info.file} is missing; re-run the index step")
    files = {
        f"{DATA_DIR}/train-{i:05d}-of-{len(shards):05d}.parquet": shard
        for i, shard in enumerate(shards)
    }
    files.update({info.file: build / info.file for info in manifest.indices})
    files[f"{INDEX_DIR}/{MANIFEST_FILE}"] = build / INDEX_DIR / MANIFEST_FILE
    _check_rows_match(manifest, shards)
    return manifest, files


def render_card(build: Path, manifest: Manifest, *, repo_id, local_dir, existing, license):
    from hub_card import render_dataset_card

    skipped = []
    if (build / SKIPPED_FILE).is_file():
        skipped = [
            json.loads(line)
            for line in (build / SKIPPED_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    return render_dataset_card(
        manifest,
        repo_id=repo_id,
        local_dir=local_dir,
        source=manifest.source,
        source_license=license,
        features=features(manifest.dim).to_dict(),
        num_captions=manifest.num_captions,
        num_skipped=len(skipped),
        skipped_reasons=dict(Counter(_reason_kind(s["reason"]) for s in skipped)),
        existing=existing,
    )


def publish_to_folder(config: PublishConfig) -> PublishResult:
    """Write the repo layout to a local folder that ``load_dataset(folder)`` reads."""
    build, target = Path(config.build), Path(config.to).resolve()
    manifest, files = staged_files(build)
    existing_card = _read_text(target / CARD_FILE)
    if _read_manifest(target / INDEX_DIR / MANIFEST_FILE) == _identity(manifest):
        return PublishResult(str(target), None, changed=False)
    card = render_card(
        build,
        manifest,
        repo_id=None,
        local_dir=str(target),
        existing=existing_card,
        license=config.source_license,
    )
    # Build the new tree beside the old one, then swap: a crash leaves one or the other whole.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if target.is_dir():  # keep files we do not manage (a .gitattributes, notes, ...)
        for item in target.iterdir():
            if item.name not in (*MANAGED_DIRS, CARD_FILE):
                _copy(item, staging / item.name)
    for repo_path, source in files.items():
        dest = staging / repo_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, dest)
    (staging / CARD_FILE).write_text(card, encoding="utf-8")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return PublishResult(str(target), None, changed=True)


def publish_to_hub(config: PublishConfig) -> PublishResult:
    """One commit to a Hub dataset repo (created if needed) holding data, indices and card."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    build, repo_id = Path(config.build), config.repo_id
    manifest, files = staged_files(build)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=config.private, exist_ok=True)
        info = api.dataset_info(repo_id, files_metadata=False)
    except HfHubHTTPError as err:
        raise PublishError(_hub_error_text(err, repo_id)) from None
    remote = {s.rfilename for s in info.siblings or []}
    remote_manifest = None
    if f"{INDEX_DIR}/{MANIFEST_FILE}" in remote:
        remote_manifest = _read_manifest(
            _download(api, repo_id, f"{INDEX_DIR}/{MANIFEST_FILE}", info.sha)
        )
    if remote_manifest == _identity(manifest) and set(files) <= remote:
        return PublishResult(repo_id, info.sha, changed=False)
    existing_card = None
    if CARD_FILE in remote:
        try:
            existing_card = _read_text(_download(api, repo_id, CARD_FILE, info.sha))
        except EntryNotFoundError:
            existing_card = None
    card = render_card(
        build,
        manifest,
        repo_id=repo_id,
        local_dir=None,
        existing=existing_card,
        license=config.source_license,
    )
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source))
        for path, source in files.items()
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
    stale = sorted(
        path for path in remote if path.split("/", 1)[0] in MANAGED_DIRS and path not in files
    )
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    revision = _commit_with_retries(
        api,
        repo_id,
        operations,
        message=f"Publish {manifest.num_rows} rows and indices ({manifest.data_hash[:19]})",
        parent=info.sha,
        identity=_identity(manifest),
        retries=config.retries,
        backoff=config.backoff,
    )
    return PublishResult(repo_id, revision, changed=True)


def _commit_with_retries(api, repo_id, operations, *, message, parent, identity, retries, backoff):
    """create_commit, retried with exponential backoff on 5xx, timeouts and dropped connections.

    huggingface_hub retries uploads and downloads but posts a commit once. A commit is atomic
    on the Hub, and ``parent_commit`` makes a retry safe: it can only land on the revision the
    operations were computed against. After a failure the repo is checked first, because a
    connection can drop after the Hub has already accepted the commit.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:  # the HTTP client huggingface_hub uses: httpx2 since 2.x, httpx before
        import httpx2 as http_client
    except ImportError:  # pragma: no cover
        import httpx as http_client

    for attempt in range(retries + 1):
        try:
            return api.create_commit(
                repo_id,
                operations=operations,
                repo_type="dataset",
                commit_message=message,
                parent_commit=parent,
            ).oid
        except (HfHubHTTPError, http_client.HTTPError, OSError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not isinstance(err, HfHubHTTPError):
                # huggingface_hub wraps a failed LFS upload (after its own retries) in a bare
                # RuntimeError("Error while uploading ..."); retry the whole commit only when a
                # network error caused it.
                cause = err.__cause__
                if not isinstance(cause, (HfHubHTTPError, http_client.HTTPError, OSError)):
                    raise
                err = cause
            status = getattr(getattr(err, "response", None), "status_code", None)
            retryable = status is None or status >= 500 or status in (408, 429)
            if not retryable or attempt == retries:
                tried = f" after {attempt + 1} attempts" if attempt else ""
                raise PublishError(
                    _hub_error_text(err, repo_id) + tried + "; the repo was left unchanged"
                ) from None
            wait = backoff * 2**attempt
            print(
                f"publish: commit failed ({status or type(err).__name__}); "
                f"retrying in {wait:.0f} s",
                file=sys.stderr,
            )
            time.sleep(wait)
            head = _landed(api, repo_id)
            if head is not None and head[1] == identity:
                return head[0]  # the earlier attempt did land
            if head is not None and head[0] != parent:
                raise PublishError(
                    f"{repo_id} changed while publishing; run the same publish command again"
                ) from None
    raise AssertionError("unreachable")


def _landed(api, repo_id):
    """(head commit, manifest identity at head), or None when the Hub cannot be asked."""
    try:
        info = api.dataset_info(repo_id, files_metadata=False)
        names = {s.rfilename for s in info.siblings or []}
        path = f"{INDEX_DIR}/{MANIFEST_FILE}"
        ident = _read_manifest(_download(api, repo_id, path, info.sha)) if path in names else None
        return info.sha, ident
    except Exception:  # still failing: let the next attempt find out
        return None


class PublishError(RuntimeError):
    """Publishing failed; the message says why and what to do (never the token)."""


def _identity(manifest: Manifest | None):
    """What makes two publishes the same: the rows, the model and the index settings."""
    if manifest is None:
        return None
    return (
        manifest.data_hash,
        manifest.model_fingerprint,
        tuple(
            (i.column, i.factory, json.dumps(i.params, sort_keys=True)) for i in manifest.indices
        ),
    )


def _read_manifest(path: Path | None):
    if path is None or not Path(path).is_file():
        return None
    try:
        return _identity(Manifest.load(path))
    except (ValueError, TypeError, KeyError):
        return None  # an unreadable remote manifest is simply replaced


def _check_rows_match(manifest: Manifest, shards: list[Path]) -> None:
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    if rows != manifest.num_rows:
        raise ValueError(
            f"the index covers {manifest.num_rows} rows but the shards hold {rows}; "
            "re-run `python -m pipeline index` on this build"
        )


def _download(api, repo_id: str, filename: str, revision: str) -> Path:
    return Path(api.hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))


def _hub_error_text(err, repo_id: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return (
            f"the Hub refused access to {repo_id} (HTTP {status}): set HF_TOKEN to a token with "
            "write access, or run `hf auth login`"
        )
    if status == 412:
        return f"{repo_id} changed while publishing; run the same publish command again"
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"publishing to {repo_id} failed: {first_line}"


def _read_text(path: Path) -> str | None:
    return Path(path).read_text(encoding="utf-8") if Path(path).is_file() else None


def _link_or_copy(source: Path, dest: Path) -> None:
    # Hard links make a local publish of a large build instant; fall back across filesystems.
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _copy(item: Path, dest: Path) -> None:
    if item.is_dir():
        shutil.copytree(item, dest)
    else:
        shutil.copy2(item, dest)


__all__ = [
    "PublishConfig",
    "PublishError",
    "PublishResult",
    "index_file",
    "publish_to_folder",
    "publish_to_hub",
    "staged_files",
]
