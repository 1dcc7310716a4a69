"""Publish a finished build as a Hub dataset repo, or as a local folder laid out the same way.

Reads BUILD/data/*.parquet, BUILD/index/* and BUILD/skipped.jsonl (the index step wrote them and
listed the data files, with their sha256, in the manifest), and BUILD/build.json and
BUILD/indexed.json (a build whose index is older than its shards is refused); writes:

    README.md                  dataset card (hub_card), merged with any existing card
    data/train-NNNNN.parquet   the rows: image bytes, ids, captions, embeddings (row order =
                               sorted file names; pipeline/datafiles.py decides the layout)
    index/image_emb.faiss      FAISS inner-product index over image_emb
    index/caption_emb.faiss    FAISS inner-product index over caption_emb
    index/image_ranges.npy     where each row's image bytes lie in its data file
    index/manifest.json        model id/revision/fingerprint, counts, data hash, data files

Only what changed travels: a file whose sha256 the repo already holds at that path is not
uploaded again, and files under data/ and index/ that the new build does not have are deleted,
so the repo never holds rows from one build and indices from another. A readers' view changes
at once, never half-way:
- up to MAX_FILES_PER_COMMIT files, changed and deleted ones and the card together: ONE
  commit to main;
- more (a large first publish): commits of at most MAX_FILES_PER_COMMIT files to a pull-request
  ref (``create_commit(create_pr=True)``, then ``revision="refs/pr/N"``), deletions first, the
  manifest and the card last, then ``merge_pull_request`` lands them on main as one change.
  An interrupted publish finds its open pull request (by title) and uploads only what the pull
  request still lacks; one that conflicts with main (main changed a file it wrote meanwhile)
  is closed and replaced. The Hub's merge keeps main's own changes, so main is read back after
  it and a file of data/ or index/ that is not this build's is an error (a re-run removes it).
- ``--to DIR``: the new tree is built beside the old one (unchanged files hard-linked from it,
  so they stay untouched) and swapped in with two renames (``_io.swap_folder``).
Publishing a build whose manifest (data hash, model, index types), files and card are already
the repo's is a no-op. The token comes from HF_TOKEN or ``hf auth login`` through huggingface_hub
and is never printed or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from imagesearchtr.manifest import (
    IMAGE_RANGES_FILE,
    INDEX_DIR,
    MANIFEST_FILE,
    Manifest,
    is_transient_status,
    load_manifest,
    refused_access,
    sha256_file,
)

from . import _io
from .datafiles import DATA_DIR
from .encode import features, skip_kind
from .index import INDEXED_FILE, SKIPPED_FILE, build_shards, indexed_state
from .inputs import CAPTIONS_FILE, first_photo

CARD_FILE = "README.md"
MANAGED_DIRS = (DATA_DIR, INDEX_DIR)
DESKTOP_FILES = ("Thumbs.db", "desktop.ini")  # what Windows drops into a folder it shows
# The Hub asks for commits of at most ~50-100 files; above this, publish goes through a PR.
MAX_FILES_PER_COMMIT = 50
LICENSE_CHECK_TIMEOUT_S = 10  # how long a folder publish waits for the Hub to check --license


@dataclass(frozen=True)
class PublishConfig:
    build: Path
    repo_id: str | None = None
    to: Path | None = None
    private: bool = False
    source_license: str | None = None
    # The terms a `license: other` card names (hub_card.dataset_card.check_license_terms).
    license_name: str | None = None
    license_link: str | None = None
    space: str | None = None  # the card's usage example calls its /embed (hub_card.default_space)
    retries: int = 4  # commit attempts after the first, with exponential backoff
    backoff: float = 1.0  # seconds before the first retry
    max_files_per_commit: int = MAX_FILES_PER_COMMIT


@dataclass(frozen=True)
class PublishResult:
    location: str  # repo id or folder
    revision: str | None  # the commit on the Hub; None for a folder
    changed: bool
    uploaded: tuple[str, ...] = ()  # repo paths written (uploaded, or written to the folder)
    deleted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the user should know but that did not stop the publish
    card_changed: bool = False  # README.md written anew (it is not among ``uploaded``)


def staged_files(build: Path) -> tuple[Manifest, dict[str, tuple[Path, str]]]:
    """Map repo paths to (build file, sha256), checking the index matches the rows first."""
    build = Path(build)
    shards = build_shards(build)  # complete and not empty, or a clear error
    if not (build / INDEX_DIR / MANIFEST_FILE).is_file():  # (load_manifest's words fit a search)
        raise ValueError(
            f"{build} has no {INDEX_DIR}/{MANIFEST_FILE}: it is a build that `index` has not "
            f"finished; index it (`python -m pipeline index --build {build}`), then publish again"
        )
    # The one manifest loader: it refuses index and data paths outside index/ and data/, so a
    # manifest can never make publish upload a file from elsewhere on this machine.
    manifest = load_manifest(build).manifest
    stale = (
        f"{build}: the index does not match the encoded rows; re-run "
        f"`python -m pipeline index --build {build}`"
    )
    layout = build / INDEXED_FILE
    indexed = json.loads(layout.read_text(encoding="utf-8")) if layout.is_file() else {}
    now = indexed_state(build, shards)
    if not manifest.data_files or indexed.get("shards") != now["shards"]:
        raise ValueError(stale)
    if "skipped_sha256" in indexed and indexed["skipped_sha256"] != now["skipped_sha256"]:
        raise ValueError(stale)  # an encode that changed only which inputs it skipped
    files = {}
    for entry in manifest.data_files:
        path = build / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise ValueError(stale)
        files[entry["path"]] = (path, entry["sha256"])
    for info in manifest.indices:
        if not (build / info.file).is_file():
            raise FileNotFoundError(f"{build / info.file} is missing; re-run the index step")
        sha = sha256_file(build / info.file)
        if manifest.index_sha256 and manifest.index_sha256.get(info.file) != sha:
            raise ValueError(stale)  # (an index run killed between the FAISS file and manifest)
        files[info.file] = (build / info.file, sha)
    ranges = build / IMAGE_RANGES_FILE
    if not ranges.is_file() or sha256_file(ranges) != manifest.image_ranges_sha256:
        raise ValueError(stale)  # (also a build indexed before image ranges were recorded)
    files[IMAGE_RANGES_FILE] = (ranges, manifest.image_ranges_sha256)
    manifest_path = build / INDEX_DIR / MANIFEST_FILE
    files[f"{INDEX_DIR}/{MANIFEST_FILE}"] = (manifest_path, sha256_file(manifest_path))
    return manifest, files


def render_card(
    build: Path,
    manifest: Manifest,
    *,
    repo_id,
    local_dir,
    existing,
    license,
    space=None,
    license_name=None,
    license_link=None,
):
    from hub_card import parquet_sizes, render_dataset_card

    skipped = []
    if (build / SKIPPED_FILE).is_file():
        skipped = [
            json.loads(line)
            for line in (build / SKIPPED_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    num_bytes, download_size = parquet_sizes(
        [build / entry["path"] for entry in manifest.data_files]
    )
    return render_dataset_card(
        manifest,
        repo_id=repo_id,
        local_dir=local_dir,
        source=manifest.source,
        source_license=license,
        features=features(manifest.dim).to_dict(),
        num_captions=manifest.num_captions,
        num_skipped=len(skipped),
        skipped_reasons=dict(Counter(skip_kind(s) for s in skipped)),
        existing=existing,
        space=space,
        license_name=license_name,
        license_link=license_link,
        num_bytes=num_bytes,
        download_size=download_size,
    )


def publish_to_folder(config: PublishConfig) -> PublishResult:
    """Write the repo layout to a local folder that ``load_dataset(folder)`` reads."""
    with (
        _io.build_lock(config.build, "publish", shared=True),
        _io.swap_lock(Path(config.to).resolve(), "publish"),
    ):
        return _publish_to_folder(config)


def _publish_to_folder(config: PublishConfig) -> PublishResult:
    build, target = Path(config.build), Path(config.to).resolve()
    manifest, files = staged_files(build)
    if target == build.resolve() or target.is_relative_to(build.resolve()):
        raise PublishError(
            f"--to {target} is the build folder {build} or inside it: publishing there would "
            "replace the build; give another folder"
        )
    notes = tuple(_io.swap_leftovers(target))  # (a run killed mid-swap: its tree comes back)
    _check_target_folder(target)
    # The folder is laid out for the Hub, so the Hub's rule for the license holds too.
    license_note = _check_license(config, offline_ok=True)
    notes += (license_note,) if license_note else ()
    existing_card = _read_text(target / CARD_FILE)
    old_files = _folder_files(target)
    unchanged = {
        path
        for path, (_, sha) in files.items()
        if path in old_files and _same_file(target / path, sha)
    }  # hashed once: the check below and the staging loop both use it
    card = render_card(
        build,
        manifest,
        repo_id=None,
        local_dir=str(target),
        existing=existing_card,
        license=config.source_license,
        space=config.space,
        license_name=config.license_name,
        license_link=config.license_link,
    )
    same_index = _read_manifest(target / INDEX_DIR / MANIFEST_FILE) == _identity(manifest)
    if same_index and len(unchanged) == len(files) and card == existing_card:
        return PublishResult(str(target), None, changed=False, notes=notes)
    # Build the new tree beside the old one, then swap: a crash leaves one or the other whole.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    staging.mkdir()  # (one this process id left was removed by swap_leftovers above)
    if target.is_dir():  # keep files we do not manage (a .gitattributes, notes, ...)
        for item in target.iterdir():
            if item.name not in (*MANAGED_DIRS, CARD_FILE):
                _copy(item, staging / item.name)
    written = []
    for repo_path, (source, _) in files.items():
        dest = staging / repo_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if repo_path in unchanged:
            _link_or_copy(target / repo_path, dest)  # unchanged: the very same file
        else:
            _link_or_copy(source, dest)
            written.append(repo_path)
    (staging / CARD_FILE).write_text(card, encoding="utf-8")
    _io.swap_folder(staging, target)
    deleted = sorted(p for p in old_files if p.split("/", 1)[0] in MANAGED_DIRS and p not in files)
    return PublishResult(
        str(target), None, True, tuple(written), tuple(deleted), notes,
        card_changed=card != existing_card,
    )  # fmt: skip


def _check_license(config: PublishConfig, *, offline_ok: bool = False) -> str | None:
    """Refuse a ``--license`` the Hub's card validation refuses (checked as the card writes
    it), or a ``--license-name``/``--license-link`` the card cannot carry, before anything is
    created or written. ``offline_ok`` (a folder publish, which needs no Hub): when the Hub
    cannot be asked, or does not answer within ``LICENSE_CHECK_TIMEOUT_S``, a note saying so
    instead of an error."""
    from hub_card.dataset_card import check_license_terms

    license = config.source_license
    check_license_terms(license, config.license_name, config.license_link)
    if not license:
        return None
    probe = f"---\n{yaml.safe_dump({'license': license})}---\n"  # quoted as the card's
    if not offline_ok:
        check_card(probe, "dataset")
        return None
    # huggingface_hub's validation request has no timeout; a folder publish must not hang on a
    # Hub that accepts the connection and never answers (a proxy, a captive portal).
    outcome: list = []

    def check() -> None:
        try:
            check_card(probe, "dataset")
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - handed to the caller below
            outcome.append(err)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(LICENSE_CHECK_TIMEOUT_S)
    if outcome and isinstance(outcome[0], PublishError):
        raise outcome[0]
    if outcome and outcome[0] is None:
        return None
    return f"--license {license} was not checked: the Hub's card validation did not answer"


def _check_target_folder(target: Path) -> None:
    """Refuse a target whose data/ or index/ this publish would replace but did not write, or
    that is the user's photos folder (the images and captions.jsonl an encode read)."""
    if target.exists() and not target.is_dir():
        raise PublishError(f"--to {target} is a file; give a folder (new, or published before)")
    published = (target / INDEX_DIR / MANIFEST_FILE).is_file()
    theirs = [name for name in MANAGED_DIRS if (target / name).exists()]
    if theirs and not published:
        raise PublishError(
            f"--to {target} holds {' and '.join(f'{n}/' for n in theirs)} but is not a "
            f"published repo (no {INDEX_DIR}/{MANIFEST_FILE}); publishing would replace "
            f"{'them' if len(theirs) > 1 else 'it'}. Give a new folder, or one published before"
        )
    # Nor the photos folder an encode reads as README's "Your own photos" lays it out
    # (captions.jsonl beside images/, no data/): publishing would make it a dataset repo, in
    # place. Other files of the user's are fine (kept beside the published ones).
    if not published and (target / CAPTIONS_FILE).is_file():
        raise PublishError(
            f"--to {target} holds {CAPTIONS_FILE}: it is a photos folder an encode reads, not "
            "a published repo; give a new folder (or one published before), not the photos"
        )
    # Nor any other folder that holds photos (a sub-folder of them, photos without captions):
    # the publish swaps the whole folder for a new tree, and a run killed between its two
    # renames leaves them in a hidden one, where the next encode would not find them.
    photo = None if published else first_photo(target)
    if photo is not None:
        raise PublishError(
            f"--to {target} holds photos ({photo}) and is not a published repo; publishing "
            "would make their folder a dataset repo. Give a new folder (or one published "
            "before), or move the photos out"
        )
    # A publish writes only parquet files under data/: anything else there (say, photos an
    # encode read, when the build was made inside their folder) is someone else's.
    foreign = sorted(
        p.relative_to(target).as_posix()
        for p in (target / DATA_DIR).rglob("*")
        if p.is_file() and p.suffix != ".parquet" and p.name not in DESKTOP_FILES
        and not p.name.startswith(".")  # .DS_Store and the like: a file manager's, not data
    )  # fmt: skip
    if foreign:
        raise PublishError(
            f"--to {target} holds files under {DATA_DIR}/ that publish never writes "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); publishing "
            "would delete them. Give a new folder, or one published before"
        )


def publish_to_hub(config: PublishConfig) -> PublishResult:
    """Publish to a Hub dataset repo (created if needed): data, indices and card, atomically."""
    with _io.build_lock(config.build, "publish", shared=True):
        return _publish_to_hub(config)


def _private(api, repo_id: str) -> bool | None:
    """Whether the dataset repo is private; None when there is no such repo."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return bool(api.dataset_info(repo_id).private)
    except RepositoryNotFoundError:
        return None


def _research_only_refusal(repo_id: str, source: str, endpoint: str) -> PublishError:
    return PublishError(
        f"{repo_id} is public and {source} may be used for research only; make the repo "
        f"private first ({endpoint}/datasets/{repo_id}/settings) or publish to another one"
    )


def _publish_to_hub(config: PublishConfig) -> PublishResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from hub_card.dataset_card import research_only

    build, repo_id = Path(config.build), config.repo_id
    if (
        isinstance(config.retries, bool)
        or not isinstance(config.retries, int)
        or config.retries < 0
    ):
        raise ValueError(f"--retries must be 0 or more, got {config.retries!r}")
    manifest, files = staged_files(build)
    _check_license(config)  # a license the Hub refuses creates no repo
    restricted = research_only(manifest.model_id, manifest.source)
    api = HfApi()
    try:
        # A repo this run would create public needs --private; one that exists private stays
        # private, and a public one is refused (--private does not hide it).
        if restricted and not config.private:
            private = _private(api, repo_id)
            if private is None and get_token() is None:
                # The Hub shows private repos to their owners only: this one may exist.
                raise PublishError(
                    f"no Hub token, so {repo_id} cannot be published to (nor seen, if it is "
                    "private): set HF_TOKEN to a token with write access, or run `hf auth login`"
                )
            if private is None:
                raise PublishError(
                    f"{build}'s rows come from {manifest.source}, which may be used for "
                    "research only and not published openly; publish to a private repo: add "
                    "--private (make publish PRIVATE=1)"
                )
            if not private:
                raise _research_only_refusal(repo_id, manifest.source, api.endpoint)
        api.create_repo(repo_id, repo_type="dataset", private=config.private, exist_ok=True)
        info = api.dataset_info(repo_id, files_metadata=False)
        remote = _remote_files(api, repo_id, info.sha)
    except HfHubHTTPError as err:
        raise PublishError(hub_error_text(err, repo_id)) from None
    if restricted and not info.private:  # --private creates private; it does not hide a repo
        raise _research_only_refusal(repo_id, manifest.source, api.endpoint)
    remote_manifest = None
    if f"{INDEX_DIR}/{MANIFEST_FILE}" in remote:
        remote_manifest = _read_manifest(
            _download(api, repo_id, f"{INDEX_DIR}/{MANIFEST_FILE}", info.sha)
        )
    changes = _changes(files, remote)
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
        space=config.space,
        license_name=config.license_name,
        license_link=config.license_link,
    )
    notes = ()
    if config.private and not info.private:  # --private creates; it does not hide a repo
        notes = (
            f"{repo_id} already exists and is public; --private left it so (change it in the "
            f"repo's settings, {api.endpoint}/datasets/{repo_id}/settings)",
        )
    if remote_manifest == _identity(manifest) and not any(changes) and card == existing_card:
        return PublishResult(repo_id, info.sha, changed=False, notes=notes)
    check_card(card, "dataset")  # before any upload: the card goes in the last commit
    title = f"Publish {manifest.num_rows} rows and indices ({manifest.data_hash[:19]})"
    uploads, deletes = changes
    if len(uploads) + len(deletes) + 1 <= config.max_files_per_commit:
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(files[path][0]))
            for path in uploads
        ]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
        operations += [CommitOperationDelete(path_in_repo=path) for path in deletes]
        revision = _commit_with_retries(
            api,
            repo_id,
            operations,
            message=title,
            parent=info.sha,
            identity=_identity(manifest),
            retries=config.retries,
            backoff=config.backoff,
        )
    else:
        revision, uploads, deletes = _publish_through_pr(api, repo_id, files, card, title, config)
    return PublishResult(
        repo_id, revision, True, tuple(uploads), tuple(deletes), notes, card != existing_card
    )


def _changes(files: dict, remote: dict) -> tuple[list[str], list[str]]:
    """(paths to upload, managed paths to delete) to turn ``remote`` into ``files``."""
    uploads = [path for path, (local, sha) in files.items() if not _same(local, sha, remote, path)]
    # The manifest and indices go last: whoever sees them sees the data files they describe.
    uploads.sort(key=lambda p: (p.startswith(f"{INDEX_DIR}/"), p.endswith(MANIFEST_FILE), p))
    deletes = sorted(p for p in remote if p.split("/", 1)[0] in MANAGED_DIRS and p not in files)
    return uploads, deletes


def _remote_files(api, repo_id: str, revision: str) -> dict[str, tuple[str | None, str]]:
    """Repo path -> (sha256 of an LFS file's content or None, git blob id)."""
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for entry in api.list_repo_tree(
        repo_id, repo_type="dataset", revision=revision, recursive=True
    ):
        if isinstance(entry, RepoFile):
            out[entry.path] = (entry.lfs.sha256 if entry.lfs else None, entry.blob_id)
    return out


def _same(local: Path, sha256: str, remote: dict, path: str) -> bool:
    """Whether the repo already holds ``local`` at ``path`` (small files: by git blob id)."""
    if path not in remote:
        return False
    lfs_sha, blob_id = remote[path]
    if lfs_sha is not None:
        return lfs_sha == sha256
    data = Path(local).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob_id


def _publish_through_pr(api, repo_id, files, card, title, config):
    """Commits of at most ``max_files_per_commit`` files on a pull request, merged once."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    limit = config.max_files_per_commit
    try:
        pr = next(
            (
                d
                for d in api.get_repo_discussions(
                    repo_id,
                    repo_type="dataset",
                    discussion_type="pull_request",
                    discussion_status="open",
                )
                if d.title == title
            ),
            None,
        )
        if pr is not None:
            conflicts = api.get_discussion_details(
                repo_id, pr.num, repo_type="dataset"
            ).conflicting_files
            if conflicts:  # main changed the same files since: it can never be merged
                named = ", ".join(conflicts[:5]) if isinstance(conflicts, list) else "some files"
                print(
                    f"publish: pull request #{pr.num} of {repo_id} conflicts with main "
                    f"({named}); closing it and opening a new one",
                    file=sys.stderr,
                )
                api.change_discussion_status(
                    repo_id,
                    pr.num,
                    "closed",
                    comment="Conflicts with main; a new pull request replaces it.",
                    repo_type="dataset",
                )
                pr = None
        if pr is None:  # open one with the deletions (none of them is read by anyone yet)
            head = api.dataset_info(repo_id).sha
            uploads, deletes = _changes(files, _remote_files(api, repo_id, head))
            first = [CommitOperationDelete(path_in_repo=p) for p in deletes[:limit]]
            # Else with files main lacks: the card alone may be main's own card, a commit that
            # changes nothing, which huggingface_hub skips, and so opens no pull request.
            first = first or [
                CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(files[p][0]))
                for p in uploads[:limit]
            ]
            commit = api.create_commit(
                repo_id,
                operations=first
                or [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode())],
                repo_type="dataset",
                commit_message=title,
                create_pr=True,
                parent_commit=head,
            )
            pr_num = commit.pr_num
        else:
            pr_num = pr.num
            print(f"publish: resuming pull request #{pr_num} of {repo_id}", file=sys.stderr)
        ref = f"refs/pr/{pr_num}"
        uploads, deletes = _changes(files, _remote_files(api, repo_id, ref))
        batches = [
            [CommitOperationDelete(path_in_repo=p) for p in deletes[i : i + limit]]
            for i in range(0, len(deletes), limit)
        ]
        adds = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(files[p][0])) for p in uploads
        ]
        adds.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
        batches += [adds[i : i + limit] for i in range(0, len(adds), limit)]
        for n, batch in enumerate(batches, start=1):
            print(f"publish: commit {n}/{len(batches)} to {ref}", file=sys.stderr)
            api.create_commit(
                repo_id,
                operations=batch,
                repo_type="dataset",
                commit_message=f"{title} [{n}/{len(batches)}]",
                revision=ref,
            )
        api.merge_pull_request(repo_id, pr_num, repo_type="dataset")
    except (HfHubHTTPError, OSError, RuntimeError) as err:
        raise PublishError(
            hub_error_text(err, repo_id) + "; main was left unchanged: run the same publish "
            "command again to resume"
        ) from None
    try:
        details = api.get_discussion_details(repo_id, pr_num, repo_type="dataset")
        revision = details.merge_commit_oid or api.dataset_info(repo_id).sha
        # The merge keeps what main gained meanwhile (another publish, a user's commit): files
        # of data/ or index/ that are not this build's would mix rows of two builds.
        differ, extra = _changes(files, _remote_files(api, repo_id, revision))
    except (HfHubHTTPError, OSError) as err:
        raise PublishError(
            f"pull request #{pr_num} was merged, but reading main back failed: "
            f"{hub_error_text(err, repo_id)}; run the same publish command again to check it"
        ) from None
    if differ or extra:
        left = differ + extra
        raise PublishError(
            f"main of {repo_id} changed while this publish ran: after the merge ({revision}) "
            f"{len(left)} file(s) under data/ or index/ differ from this build "
            f"({', '.join(left[:5])}); run the same publish command again to make main match"
        )
    return revision, uploads, deletes


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
            retryable = status is None or is_transient_status(status)
            if not retryable or attempt == retries:
                tried = f" after {attempt + 1} attempts" if attempt else ""
                # Out of tries for a failure that may pass: the same command, later, may land.
                again = ": run the same publish command again later" if retryable else ""
                raise PublishError(
                    f"{hub_error_text(err, repo_id)}{tried}; the repo was left unchanged{again}"
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


def check_card(card: str, repo_type: str) -> None:
    """The Hub's own check of a card's metadata (``RepoCard.validate``: a known license id, a
    Space's short_description within 60 characters, ...), so that a bad card fails before any
    upload rather than at the commit that carries it; PublishError with the Hub's reasons."""
    from huggingface_hub import RepoCard

    try:
        RepoCard(card).validate(repo_type=repo_type)
    except ValueError as err:
        try:  # the Hub's answer: {"errors": [{"message": ...}, ...]}
            reasons = "; ".join(e["message"] for e in json.loads(str(err))["errors"])
        except (ValueError, KeyError, TypeError):
            reasons = " ".join(str(err).split())
        where = (
            " (the card's license comes from --license, or from the card already in the repo)"
            if repo_type == "dataset"
            else ""
        )
        raise PublishError(
            f"the Hub refuses the {repo_type} card's metadata: {reasons}{where}"
        ) from None


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


def _download(api, repo_id: str, filename: str, revision: str) -> Path:
    return Path(api.hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))


def hub_error_text(err, repo_id: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        text = refused_access(status, repo_id, can="write to it")
        # A valid token is refused too (another user's namespace, a read-only token): the Hub's
        # reason says which, where the advice alone would blame a token that is fine.
        reason = (getattr(err, "server_message", None) or "").strip()
        if status == 403 and reason:
            text += f" (the Hub says: {reason.splitlines()[0][:300]})"
        return text
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


def _folder_files(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _same_file(path: Path, sha: str) -> bool:
    return path.is_file() and sha256_file(path) == sha


def _copy(item: Path, dest: Path) -> None:
    """A file or folder the publish keeps, linked into the new tree (copied where it cannot
    be): a folder of large files of the user's costs no space and no time at each publish."""
    if item.is_symlink():
        try:
            dest.symlink_to(os.readlink(item))
        except OSError:  # (Windows without the symlink privilege): what it points to
            shutil.copytree(item, dest) if item.is_dir() else shutil.copy2(item, dest)
    elif item.is_dir():
        shutil.copytree(item, dest, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(item, dest)


__all__ = [
    "PublishConfig",
    "PublishError",
    "PublishResult",
    "publish_to_folder",
    "publish_to_hub",
    "staged_files",
]
