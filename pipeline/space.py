"""Publish the search app as a Gradio Space (or write the same files to a local folder).

Reads space/app.py, space/requirements.txt and space/imagesearchtr/*.py from this checkout, and
the published dataset's index/manifest.json (from a local folder, or from the Hub at the
dataset revision) for the model id the card names. Writes:

    README.md                 Space card (hub_card.render_space_card): sdk gradio at the
                              installed gradio version, python_version, suggested_hardware,
                              preload_from_hub for the model, the linked dataset and model
    app.py                    the Gradio app
    requirements.txt          space/requirements.txt's pins, fitted to the hardware
                              (``requirements_text``)
    imagesearchtr/*.py        the search library the app imports (no __pycache__)

To the Hub (``--space USER/NAME``): the Space is created if needed (sdk gradio), its variables
DATASET_REPO and DATASET_REVISION are set, then ONE commit uploads the files and deletes stale
files under imagesearchtr/; hardware other than the Space's current one is requested
(``HfApi.request_space_hardware``), and ``wait_for_space`` follows the build until the Space
runs or fails. DATASET_REVISION is pinned to the dataset's commit sha, so a later publish of
the dataset cannot change what a running Space serves until it is re-published.
To a folder (``--to DIR``): the same files, plus the command that runs them locally. Nothing
else is written; the token comes from HF_TOKEN or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from imagesearchtr.manifest import (
    COMPONENT_FILES,
    MULTIEMBEDTR_TYPE,
    SNAPSHOT_FILES,
    Manifest,
    component_folders,
    is_hub_id,
    load_manifest,
    require_image_ranges,
)

from .publish import CARD_FILE, PublishError, check_card, hub_error_text

SPACE_SOURCE = Path(__file__).resolve().parent.parent / "space"
APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
LIBRARY_DIR = "imagesearchtr"
TITLE = "ImageSearchTR"
# The Python the Space is built with: the pins (numpy 2.4, transformers 5.24) need >= 3.11, and
# Spaces builds with 3.10 when the card does not say (pyproject's requires-python agrees).
PYTHON_VERSION = "3.11"
DEFAULT_HARDWARE = "cpu-basic"
CPU_HARDWARE = ("cpu-basic", "cpu-upgrade")
ZERO_GPU_HARDWARE = ("zero-a10g",)
# CPU hardware: PyPI's Linux torch wheel is the CUDA build (several GB of CUDA libraries a CPU
# Space never uses, and a slower build and start); this index serves the CPU-only wheel. Its
# version is 2.13.0+cpu: "torch==2.13.0" matches it (a pin without a local label ignores the
# candidate's label, PEP 440) and pip prefers it, since a local label sorts after the plain
# version. GPU hardware takes PyPI's CUDA wheel, so the line is left out there.
CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
# ZeroGPU needs the spaces package (@spaces.GPU); the app imports it only where installed.
SPACES_REQUIREMENT = "spaces==0.51.3"
# The MultiEmbedTR files the encoder fetches, in the order it tries them (preload_from_hub).
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
# What a Space's runtime stage means for publish-space's wait (huggingface_hub SpaceStage).
RUNNING_STAGES = ("RUNNING",)
FAILED_STAGES = ("NO_APP_FILE", "CONFIG_ERROR", "BUILD_ERROR", "RUNTIME_ERROR", "STOPPED", "PAUSED")
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
    hardware: str = DEFAULT_HARDWARE
    wait: bool = True  # follow the Space's build until it runs or fails
    wait_timeout: float = 1800  # seconds


@dataclass(frozen=True)
class SpaceResult:
    location: str  # Space id or folder
    revision: str | None  # the Space commit; None for a folder
    variables: dict[str, str]  # what the app reads from its environment
    url: str | None = None  # the Space page on the Hub
    run_command: str | None = None  # for a folder: how to start it
    notes: tuple[str, ...] = ()
    stage: str | None = None  # the Space's runtime stage when publish-space stopped waiting


def app_files(source: Path = SPACE_SOURCE) -> dict[str, Path]:
    """Map Space paths to the files of this checkout's space/ folder (app + library)."""
    source = Path(source)
    files = {APP_FILE: source / APP_FILE}
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


def check_hardware(hardware: str) -> str:
    from huggingface_hub import SpaceHardware

    names = [h.value for h in SpaceHardware]
    if hardware not in names:
        raise ValueError(
            f"--hardware {hardware!r} is not a Spaces hardware; one of: {', '.join(names)}"
        )
    return hardware


def requirements_text(hardware: str, source: Path = SPACE_SOURCE) -> str:
    """requirements.txt for ``hardware``: the pins of space/requirements.txt, fitted to it."""
    pins = (Path(source) / REQUIREMENTS_FILE).read_text(encoding="utf-8")
    lines = [f"# Written by publish-space for {check_hardware(hardware)} hardware."]
    if hardware in CPU_HARDWARE:
        lines.append("# CPU hardware: torch from the CPU-only index (no CUDA libraries).")
        lines.append(CPU_TORCH_INDEX)
    else:
        lines.append("# GPU hardware: torch from PyPI, the CUDA build.")
    lines.append(pins.rstrip("\n"))
    if hardware in ZERO_GPU_HARDWARE:
        lines.append("# ZeroGPU: @spaces.GPU around the queries (space/app.py).")
        lines.append(SPACES_REQUIREMENT)
    return "\n".join(lines) + "\n"


def preload_lines(api, manifest: Manifest) -> tuple[str, ...]:
    """``preload_from_hub`` for the model: the files the encoder fetches, at the pinned commit,
    and those of its components from the Hub (configs, tokenizer, image processor) at theirs.

    The builder fetches them into the Space's Hub cache, so a cold start does not download the
    model again. The dataset cannot be preloaded this way (the Hub preloads model repos only).
    """
    model = manifest.model_id
    if not is_hub_id(model):
        return ()  # a local model folder (here or where it was encoded): nothing to preload
    present = set(api.list_repo_files(model, revision=manifest.model_revision))
    config = _model_config(api, model, manifest.model_revision)
    if config.get("model_type") == MULTIEMBEDTR_TYPE:
        files = [f for f in MODEL_FILES if f in present]
        if "model.safetensors" in files and "pytorch_model.bin" in files:
            files.remove("pytorch_model.bin")  # the encoder takes safetensors when both exist
        folders = component_folders(config)
        files += sorted(f for f in present if f.split("/", 1)[0] in folders and "/" in f)
    else:  # CLIP, SigLIP: one snapshot of these
        files = sorted(f for f in present if _matches(f, SNAPSHOT_FILES))
    # A revision needs the file list before it ("repo files revision"), as the Hub parses it.
    revision = f" {manifest.model_revision}" if manifest.model_revision else ""
    lines = [f"{model} {','.join(files)}{revision}"] if files else []
    for component, commit in sorted(manifest.component_revisions.items()):
        present = api.list_repo_files(component, revision=commit)
        wanted = sorted(f for f in present if _matches(f, COMPONENT_FILES))
        if wanted:
            lines.append(f"{component} {','.join(wanted)} {commit}")
    return tuple(lines)


def _matches(path: str, patterns) -> bool:
    """Whether ``huggingface_hub``'s ``allow_patterns`` would take ``path`` (fnmatch)."""
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def _model_config(api, model: str, revision: str | None) -> dict:
    """The model's config.json; {} when it is not a JSON object (then no folders to add)."""
    try:
        config = json.loads(
            Path(api.hf_hub_download(model, "config.json", revision=revision)).read_text()
        )
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def local_model_notes(dataset_repo: str, manifest: Manifest) -> list[str]:
    """A note for a Hub dataset encoded with a local model folder: a Space on the Hub cannot
    load that folder. A note, not an error: an app run on this machine (``--to``, the command
    it prints) or a Space of a test Hub here can."""
    if is_hub_id(manifest.model_id):
        return []
    return [
        f"{dataset_repo} was encoded with the local model folder {manifest.model_id}, which a "
        "Space on the Hub cannot load (an app run on this machine can); upload the model (`hf "
        "upload USER/NAME FOLDER`), then encode with --model USER/NAME and publish again"
    ]


def render_card(
    space_id: str,
    dataset_repo: str,
    dataset_revision: str | None,
    manifest: Manifest,
    hardware: str = DEFAULT_HARDWARE,
    preload: tuple[str, ...] = (),
    space_url: str | None = None,
) -> str:
    from hub_card import gradio_version, render_space_card

    return render_space_card(
        title=TITLE,
        space_id=space_id,
        dataset_repo=dataset_repo,
        dataset_revision=dataset_revision,
        manifest=manifest,
        gradio_version=gradio_version(),
        python_version=PYTHON_VERSION,
        hardware=hardware,
        preload=preload,
        space_url=space_url,
    )


def publish_space_to_hub(config: SpaceConfig) -> SpaceResult:
    """Create/update a Gradio Space that searches ``config.dataset_repo``: one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from hub_card.dataset_card import research_only

    space_id, dataset_repo = config.space_id, config.dataset_repo
    if Path(dataset_repo).expanduser().exists():
        raise ValueError(
            f"--dataset-repo {dataset_repo} is a local folder, which a Space cannot read; "
            "publish the dataset first (`python -m pipeline publish --build BUILD --repo "
            "USER/NAME`) and pass that id"
        )
    hardware = check_hardware(config.hardware)
    files = app_files()
    api = HfApi()
    notes = []
    try:
        # First: its errors name a misspelled --dataset-repo or --dataset-revision as such.
        loaded = load_manifest(dataset_repo, config.dataset_revision, index_files=False)
        revision = loaded.revision  # pin: a branch or tag name would follow later pushes
        manifest = loaded.manifest
        require_image_ranges(manifest, f"{dataset_repo}@{revision}")
        info = api.dataset_info(dataset_repo, revision=revision)
        restricted = research_only(manifest.model_id, manifest.source)
        notes += local_model_notes(dataset_repo, manifest)
        if info.private:
            notes.append(
                f"{dataset_repo} is private: add a Space secret HF_TOKEN with read access to it "
                "(Settings -> Variables and secrets), or the Space cannot load it"
            )
        preload = preload_lines(api, manifest)
        card = render_card(space_id, dataset_repo, revision, manifest, hardware, preload)
        check_card(card, "space")  # before the Space is created
        existing = _check_space_is_ours(api, space_id)  # before a variable restarts an app
        # A public Space would show the photos to all: a new one needs --private, an existing
        # one must be private already (--private does not hide it).
        if restricted and existing is None and not config.private:
            raise PublishError(
                f"{dataset_repo}'s rows come from {manifest.source}, which may be used for "
                "research only and not shown openly; publish a private Space: add --private "
                "(make publish PRIVATE=1)"
            )
        if restricted and existing is not None and not existing.private:
            raise PublishError(
                f"{space_id} is public and {manifest.source} may be used for research only; "
                f"make the Space private first ({api.endpoint}/spaces/{space_id}/settings)"
            )
        api.create_repo(
            space_id, repo_type="space", space_sdk="gradio", private=config.private, exist_ok=True
        )
        # Variables first: every change of a variable restarts the Space, and the commit below
        # starts a build; set this way round, the first build already sees the right dataset.
        variables = {"DATASET_REPO": dataset_repo, "DATASET_REVISION": revision}
        for key, value in variables.items():
            api.add_space_variable(space_id, key, value, description=VARIABLE_DESCRIPTIONS[key])
        space = api.space_info(space_id)
        if space.host:  # the app's address as the Hub gives it, which gradio_client uses too
            card = render_card(
                space_id, dataset_repo, revision, manifest, hardware, preload, space.host
            )
            check_card(card, "space")
        remote = {s.rfilename for s in space.siblings or []}
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source))
            for path, source in files.items()
        ]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
        operations.append(
            CommitOperationAdd(
                path_in_repo=REQUIREMENTS_FILE,
                path_or_fileobj=requirements_text(hardware).encode(),
            )
        )
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
        raise PublishError(hub_error_text(err, space_id)) from None
    url = f"{api.endpoint}/spaces/{space_id}"
    _request_hardware(api, space_id, hardware, commit.oid, url)
    stage = wait_for_space(api, space_id, commit.oid, config.wait_timeout) if config.wait else None
    return SpaceResult(
        location=space_id,
        revision=commit.oid,
        variables=variables,
        url=url,
        notes=tuple(notes),
        stage=stage,
    )


def _check_space_is_ours(api, space_id: str):
    """Refuse an existing Space that holds another app: publishing replaces its app file, card
    and requirements and sets its variables. A new Space, an empty one (its .gitattributes and
    card only) and one this command published (it has imagesearchtr/) are fine. The existing
    Space's info, or None."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.space_info(space_id)
    except RepositoryNotFoundError:
        return None
    files = {s.rfilename for s in info.siblings or []}
    if any(f.startswith(f"{LIBRARY_DIR}/") for f in files):
        return info
    others = sorted(files - {".gitattributes", CARD_FILE})
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise PublishError(
            f"the Space {space_id} holds another app ({shown}); publish-space would replace its "
            f"{APP_FILE}, {REQUIREMENTS_FILE} and card: give a new Space id, or remove those "
            "files from it first"
        )
    return info


def _request_hardware(api, space_id: str, hardware: str, revision: str, url: str) -> None:
    """Ask the Hub for ``hardware`` unless the Space already has (or asked for) it."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        runtime = api.get_space_runtime(space_id)
        if hardware in (runtime.hardware, runtime.requested_hardware):
            return
        if runtime.hardware is None and hardware == DEFAULT_HARDWARE:
            return  # a new Space starts on the free hardware anyway
        api.request_space_hardware(space_id, hardware)
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hub_says = str(err).splitlines()[0] if str(err) else ""
        if status in (402, 403):
            raise PublishError(
                f"the files are published ({space_id}@{revision[:12]}), but the Hub refused "
                f"hardware {hardware} for this account (HTTP {status}: {hub_says}). Upgraded "
                "hardware needs a payment method and ZeroGPU a PRO or Enterprise account "
                f"({url}/settings), or re-run with --hardware cpu-basic"
            ) from None
        raise PublishError(hub_error_text(err, space_id)) from None


def wait_for_space(api, space_id: str, revision: str, timeout: float) -> str:
    """Follow the Space's runtime stage until it runs ``revision`` or fails; return the stage.

    A stage change is printed to stderr. A failed stage raises ``PublishError`` with the Hub's
    message. The Hub names the commit a runtime runs (``sha``) where it knows it; a RUNNING
    stage of an older commit (the build of this one not started yet) does not count.
    """
    from huggingface_hub.errors import HfHubHTTPError

    deadline, delay, last = time.monotonic() + timeout, 1.0, None
    while True:
        try:
            runtime = api.get_space_runtime(space_id)
        except HfHubHTTPError as err:
            raise PublishError(hub_error_text(err, space_id)) from None
        stage, running_sha = str(runtime.stage), runtime.raw.get("sha")
        if stage != last:
            print(f"space {space_id}: {stage}", file=sys.stderr, flush=True)
            last = stage
        if stage in FAILED_STAGES:
            message = runtime.raw.get("errorMessage") or "no message from the Hub"
            raise PublishError(
                f"the Space {space_id} did not start: {stage}: {message} (the build log is on "
                f"the Space page, {api.endpoint}/spaces/{space_id}?logs=build)"
            )
        if stage in RUNNING_STAGES and running_sha in (None, revision):
            return stage
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the Space {space_id} is still {stage} after {timeout:.0f} s; follow it at "
                f"{api.endpoint}/spaces/{space_id} (or pass --no-wait)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _check_space_folder(target: Path) -> None:
    """Refuse a folder this command did not write: it replaces app.py, requirements.txt, the
    card and the whole imagesearchtr/ there, so the source it copies from (space/, or a folder
    holding it) and a folder of someone else's files are off limits."""
    source = SPACE_SOURCE.resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise ValueError(
            f"--to {target} is (or holds, or lies inside) the Space's source folder {source}, "
            "which the command copies from; give the Space a folder of its own"
        )
    if target.exists() and not target.is_dir():
        raise ValueError(f"--to {target} is a file, not a folder")
    ours = (target / LIBRARY_DIR).is_dir()  # written first, so a run cut short leaves it too
    if target.is_dir() and any(target.iterdir()) and not ours:
        raise ValueError(
            f"--to {target} holds files, but not a Space this command wrote (it has "
            f"{LIBRARY_DIR}/); it would replace {APP_FILE}, {REQUIREMENTS_FILE}, {CARD_FILE} "
            f"and {LIBRARY_DIR}/ there: give an empty or new folder"
        )


def publish_space_to_folder(config: SpaceConfig) -> SpaceResult:
    """Write the Space's files to a folder and return the command that runs them."""
    target = Path(config.to).resolve()
    _check_space_folder(target)
    hardware = check_hardware(config.hardware)
    files = app_files()
    local = Path(config.dataset_repo).expanduser()
    notes = []
    if local.is_dir():
        dataset_repo, revision = str(local.resolve()), None
        if config.dataset_revision:
            raise ValueError("--dataset-revision applies to a Hub dataset, not a local folder")
        manifest = load_manifest(local).manifest
        require_image_ranges(manifest, dataset_repo)
        # The card links a Hub dataset; a folder-backed app is for local runs only.
        card = None
        notes.append(f"no {CARD_FILE} written: the Space card needs a Hub dataset id")
    else:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            loaded = load_manifest(config.dataset_repo, config.dataset_revision, index_files=False)
            revision, manifest = loaded.revision, loaded.manifest
            require_image_ranges(manifest, f"{config.dataset_repo}@{revision}")
        except HfHubHTTPError as err:
            raise PublishError(hub_error_text(err, config.dataset_repo)) from None
        dataset_repo = config.dataset_repo
        # These are a Space's files, card included: one uploaded to the Hub needs a Hub model.
        notes += local_model_notes(dataset_repo, manifest)
        # The card's snippet calls this folder's app, run locally (the command printed below).
        from hub_card.dataset_card import default_space

        card = render_card(default_space(None), dataset_repo, revision, manifest, hardware)
    target.mkdir(parents=True, exist_ok=True)
    for path, source in sorted(files.items(), key=lambda f: f[0] == APP_FILE):  # library first
        dest = target / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    # Then no stale modules; after the copy, so that a run cut short still leaves a folder
    # this command knows as its own (imagesearchtr/), which a re-run completes.
    for stale in (target / LIBRARY_DIR).iterdir():
        if f"{LIBRARY_DIR}/{stale.name}" not in files:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (target / REQUIREMENTS_FILE).write_text(requirements_text(hardware), encoding="utf-8")
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


__all__ = [
    "PYTHON_VERSION",
    "SpaceConfig",
    "SpaceResult",
    "app_files",
    "publish_space_to_folder",
    "publish_space_to_hub",
    "preload_lines",
    "render_card",
    "requirements_text",
    "wait_for_space",
]
