"""The usage snippet both cards show: search a published dataset from Python, without torch.

Reads ``templates/usage.py.jinja`` and the manifest's index list; writes nothing. The rows and the
FAISS index come from the dataset repo (``load_dataset`` + ``load_faiss_index``) and the query's
embedding from an ImageSearchTR Space's ``/embed`` API (``gradio_client``), so a visitor installs
four packages and no torch, pinned to the versions this publish was made with.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import re
from pathlib import Path

import jinja2

from imagesearchtr.manifest import DATA_DIR, Manifest, index_file

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "usage.py.jinja"
SPLIT = "train"
# The parquet files of the train split, as publish writes them (data/train-00000.parquet) and as
# push_to_hub does (data/train-00000-of-00001.parquet).
DATA_FILES = f"{DATA_DIR}/*.parquet"
# What the snippet needs; the card tells the visitor to pip install exactly these. Pillow:
# datasets decodes the rows' images with it (get_nearest_examples returns them).
SNIPPET_PACKAGES = ("datasets", "faiss-cpu", "gradio_client", "Pillow")

_FIRST_PYTHON_BLOCK_RE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.M)


def pip_install_line() -> str:
    """``pip install`` arguments for the snippet, pinned to the installed (tested) versions."""
    return " ".join(f"{name}=={importlib.metadata.version(name)}" for name in SNIPPET_PACKAGES)


def render_usage(
    manifest: Manifest,
    *,
    space: str,
    repo_id: str | None = None,
    revision: str | None = None,
    revision_note: str | None = None,
    local_dir: str | None = None,
) -> str:
    """The snippet: a Hub repo at ``revision`` (or a local published folder) + ``space``'s /embed.

    ``space`` is a Space id (USER/NAME) or the URL of a running app; its model must be the one
    that built the index (the Space refuses to search otherwise).
    """
    if (repo_id is None) == (local_dir is None):
        raise ValueError("give repo_id (a Hub dataset) or local_dir (a local folder), not both")
    columns = [info.column for info in manifest.indices]
    column = "image_emb" if "image_emb" in columns or not columns else columns[0]
    info = manifest.index(column) if columns else None
    index_path = info.file if info is not None else index_file(column)
    params = ",".join(f"{k}={v}" for k, v in sorted(info.params.items())) if info else ""
    data_files = ""
    if local_dir is not None:
        # (escaped: data_files is a glob, and a folder may be called "photos [v2]")
        data_files = f"{glob.escape(Path(local_dir).as_posix())}/{DATA_FILES}"
        # The parquet loader, not load_dataset(folder): datasets caches a folder's Arrow copy
        # under the folder's name without checking file times, so a re-published folder could
        # load stale rows; the parquet loader keys its cache on the files' mtimes.
        index_path = f"{Path(local_dir).as_posix()}/{index_path}"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.filters["py"] = _py  # a JSON string is a valid Python string literal
    return (
        env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))
        .render(
            pip_install=pip_install_line(),
            repo_id=repo_id,
            revision=revision or "main",
            revision_note=revision_note,
            split=SPLIT,
            data_files=data_files,
            index_file=index_path,
            column=column,
            search_params=params,
            model_id=manifest.model_id,
            space=space,
        )
        .strip("\n")
    )


def extract_usage_snippet(card_text: str) -> str:
    """The first ```python block of a card, without the fences (the usage example)."""
    match = _FIRST_PYTHON_BLOCK_RE.search(card_text)
    if match is None:
        raise ValueError("the card has no ```python code block")
    return match.group(1)


def _py(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)
