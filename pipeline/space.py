"""Publish the search app as a Gradio Space (or write the same files to a local folder).

Reads space/app.py, space/requirements.txt and space/imagesearchtr/*.py from this checkout, and
the published dataset's index/manifest.json (from a local folder, or from the Hub at the
dataset revision) for the model id the card names. Writes:

    README.md                 Space card (hub_card.render_space_card): sdk gradio at the
                              installed gradio version, app.py, the linked dataset and model
    app.py                    the Gradio app
    requirements.txt          pinned dependencies
    imagesearchtr/*.py        the search library the app imports (no __pycache__)

To the Hub (``--space USER/NAME``): the Space is created if needed (sdk gradio), its variables
DATASET_REPO and DATASET_REVISION are set, then ONE commit uploads the files and deletes stale
files under imagesearchtr/. DATASET_REVISION is pinned to the dataset's commit sha, so a later
publish of the dataset cannot change what a running Space serves until it is re-published.
To a folder (``--to DIR``): the same files, plus the command that runs them locally. Nothing
else is written; the token comes from HF_TOKEN or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from imagesearchtr.manifest import INDEX_DIR, MANIFEST_FILE, Manifest

from .publish import PublishError, _hub_error_text

SPACE_SOURCE = Path(__file__).resolve().parent.parent / "space"
APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
LIBRARY_DIR = "imagesearchtr"
CARD_FILE = "README.md"
TITLE = "ImageSearchTR"
VARIABLE_DESCRIPTIONS = {
    "DATASET_REPO": "Published ImageSearchTR dataset (rows + FAISS indices) the app searches",
    "DATASET_REVISION": "Dataset commit the Space was published against (pinned)",
}


@dataclass(frozen=True)
class SpaceConfig:
    dataset_repo: str  # Hub dataset id or a local published folder
    space_id: str | None = None
    to: Path | None = None
    dataset_revision: str | None = None
    private: bool = False


@dataclass(frozen=True)
class SpaceResult:
    location: str  # Space id or folder
    revision: str | None  # the Space commit; None for a folder
    variables: dict[str, str]  # what the app reads from its environment
    url: str | None = None  # the Space page on the Hub
    run_command: str | None = None  # for a folder: how to start it
    notes: tuple[str, ...] = ()


def app_files(source: Path = SPACE_SOURCE) -> dict[str, Path]:
    """Map Space paths to the files of this checkout's space/ folder (app + library)."""
    source = Path(source)
    files = {APP_FILE: source / APP_FILE, REQUIREMENTS_FILE: source / REQUIREMENTS_FILE}
    library = sorted((source / LIBRARY_DIR).glob("*.py"))
    if not library:
        raise FileNotFoundError(
            f"{source / LIBRARY_DIR} holds no .py files; publish-space runs from a checkout of "
            "the ImageSearchTR repository (it uploads its space/ folder)"
        )
    files.update({f"{LIBRARY_DIR}/{p.name}": p for p in library})
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; publish-space uploads it")
    return files


def render_card(dataset_repo: str, dataset_revision: str | None, manifest: Manifest) -> str:
    from hub_card import gradio_version, render_space_card

    return render_space_card(
        title=TITLE,
        dataset_repo=dataset_repo,
        dataset_revision=dataset_revision,
        model_id=manifest.model_id,
        model_revision=manifest.model_revision,
        gradio_version=gradio_version(),
    )


def publish_space_to_hub(config: SpaceConfig) -> SpaceResult:
    """Create/update a Gradio Space that searches ``config.dataset_repo``: one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    space_id, dataset_repo = config.space_id, config.dataset_repo
    if Path(dataset_repo).expanduser().exists():
        raise ValueError(
            f"--dataset-repo {dataset_repo} is a local folder, which a Space cannot read; "
            "publish the dataset first (`python -m pipeline publish --build BUILD --repo "
            "USER/NAME`) and pass that id"
        )
    files = app_files()
    api = HfApi()
    notes = []
    try:
        info = api.dataset_info(dataset_repo, revision=config.dataset_revision)
        revision = info.sha  # pin: a branch or tag name would follow later pushes
        manifest = _hub_manifest(api, dataset_repo, revision)
        if info.private:
            notes.append(
                f"{dataset_repo} is private: add a Space secret HF_TOKEN with read access to it "
                "(Settings -> Variables and secrets), or the Space cannot load it"
            )
        card = render_card(dataset_repo, revision, manifest)
        api.create_repo(
            space_id, repo_type="space", space_sdk="gradio", private=config.private, exist_ok=True
        )
        # Variables first: every change of a variable restarts the Space, and the commit below
        # starts a build; set this way round, the first build already sees the right dataset.
        variables = {"DATASET_REPO": dataset_repo, "DATASET_REVISION": revision}
        for key, value in variables.items():
            api.add_space_variable(space_id, key, value, description=VARIABLE_DESCRIPTIONS[key])
        space = api.space_info(space_id)
        remote = {s.rfilename for s in space.siblings or []}
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source))
            for path, source in files.items()
        ]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
        stale = sorted(
            path for path in remote if path.startswith(f"{LIBRARY_DIR}/") and path not in files
        )
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        commit = api.create_commit(
            space_id,
            operations=operations,
            repo_type="space",
            commit_message=f"Search {dataset_repo}@{revision[:12]} ({manifest.num_rows} images)",
            parent_commit=space.sha,  # refuse to overwrite a commit made meanwhile
        )
    except HfHubHTTPError as err:
        raise PublishError(_hub_error_text(err, space_id)) from None
    return SpaceResult(
        location=space_id,
        revision=commit.oid,
        variables=variables,
        url=f"{api.endpoint}/spaces/{space_id}",
        notes=tuple(notes),
    )


def publish_space_to_folder(config: SpaceConfig) -> SpaceResult:
    """Write the Space's files to a folder and return the command that runs them."""
    target = Path(config.to).resolve()
    files = app_files()
    local = Path(config.dataset_repo).expanduser()
    notes = []
    if local.is_dir():
        dataset_repo, revision = str(local.resolve()), None
        if config.dataset_revision:
            raise ValueError("--dataset-revision applies to a Hub dataset, not a local folder")
        manifest = _local_manifest(local)
        # The card links a Hub dataset; a folder-backed app is for local runs only.
        card = None
        notes.append(f"no {CARD_FILE} written: the Space card needs a Hub dataset id")
    else:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi()
        try:
            revision = api.dataset_info(config.dataset_repo, revision=config.dataset_revision).sha
            manifest = _hub_manifest(api, config.dataset_repo, revision)
        except HfHubHTTPError as err:
            raise PublishError(_hub_error_text(err, config.dataset_repo)) from None
        dataset_repo = config.dataset_repo
        card = render_card(dataset_repo, revision, manifest)
    target.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target / LIBRARY_DIR, ignore_errors=True)  # no stale modules
    for path, source in files.items():
        dest = target / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    if card is not None:
        (target / CARD_FILE).write_text(card, encoding="utf-8")
    variables = {"DATASET_REPO": dataset_repo}
    if revision:
        variables["DATASET_REVISION"] = revision
    command = " ".join(
        [f"{k}={shlex.quote(v)}" for k, v in variables.items()]
        + ["python", shlex.quote(str(target / APP_FILE))]
    )
    return SpaceResult(
        location=str(target),
        revision=None,
        variables=variables,
        run_command=command,
        notes=tuple(notes),
    )


def _local_manifest(folder: Path) -> Manifest:
    path = folder / INDEX_DIR / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {INDEX_DIR}/{MANIFEST_FILE}: not a published ImageSearchTR "
            "dataset (`python -m pipeline publish --build BUILD --to FOLDER` writes one)"
        )
    return _parse_manifest(path, str(folder))


def _hub_manifest(api, repo_id: str, revision: str) -> Manifest:
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(
            repo_id, f"{INDEX_DIR}/{MANIFEST_FILE}", repo_type="dataset", revision=revision
        )
    except EntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}@{revision} has no {INDEX_DIR}/{MANIFEST_FILE}: not a published "
            "ImageSearchTR dataset (`python -m pipeline publish --build BUILD --repo ...`)"
        ) from None
    return _parse_manifest(Path(path), f"{repo_id}@{revision}")


def _parse_manifest(path: Path, where: str) -> Manifest:
    try:
        return Manifest.load(path)
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{where}: unreadable {INDEX_DIR}/{MANIFEST_FILE} ({err})") from None


__all__ = [
    "SpaceConfig",
    "SpaceResult",
    "app_files",
    "publish_space_to_folder",
    "publish_space_to_hub",
    "render_card",
]
