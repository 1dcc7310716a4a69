"""The README.md of the ImageSearchTR Gradio Space.

Reads: the published dataset repo id and revision, the model id and the installed gradio
version. Writes nothing: ``render_space_card`` returns the card text; the publisher uploads it
as the Space's README.md.

The card is built from its YAML (``SpaceCardData``) plus a body rendered from
``templates/space_card.md``. ``SpaceCard.from_template`` is not used: it renders the
*model*-card body (see TRAPS.md).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import jinja2
from huggingface_hub import SpaceCard, SpaceCardData

from hub_card.dataset_card import SPLIT, is_hub_id

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "space_card.md"

# The Hub's limits (Spaces configuration reference): short_description is shown on the Space's
# thumbnail and is cut at 60 characters; colorFrom/colorTo take one of these colour names.
SHORT_DESCRIPTION_MAX = 60
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
DEFAULT_SHORT_DESCRIPTION = "Türkçe metinle veya görselle anlamsal görsel arama"
SPACE_TAGS = ["image-search", "turkish", "faiss", "multiembedtr", "imagesearchtr"]


def gradio_version() -> str:
    """The installed gradio's version: the Space's ``sdk_version`` must match what was tested."""
    return importlib.metadata.version("gradio")


def render_space_card(
    *,
    title: str,
    dataset_repo: str,
    dataset_revision: str | None,
    model_id: str,
    gradio_version: str,
    license: str = "apache-2.0",
    emoji: str = "🔎",
    color_from: str = "red",
    color_to: str = "indigo",
    short_description: str = DEFAULT_SHORT_DESCRIPTION,
    model_revision: str | None = None,
) -> str:
    """The Space's README.md: Spaces YAML (sdk gradio, app.py, linked dataset and model) + body.

    ``dataset_revision`` is the revision the Space was published against (None: the latest);
    the app reads the repo and revision it searches from DATASET_REPO / DATASET_REVISION.
    """
    if len(short_description) > SHORT_DESCRIPTION_MAX:
        raise ValueError(
            f"short_description is {len(short_description)} characters; the Hub allows at most "
            f"{SHORT_DESCRIPTION_MAX}: {short_description!r}"
        )
    for name, color in (("color_from", color_from), ("color_to", color_to)):
        if color not in SPACE_COLORS:
            raise ValueError(f"{name} must be one of {', '.join(SPACE_COLORS)}, not {color!r}")
    if not is_hub_id(dataset_repo):
        raise ValueError(f"dataset_repo {dataset_repo!r} is not a Hub id 'namespace/name'")
    if not gradio_version:
        raise ValueError("gradio_version is empty; pass hub_card.gradio_version()")

    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio_version,
        app_file="app.py",
        license=license,
        # datasets/models make the Hub link this Space from the dataset and model pages.
        datasets=[dataset_repo],
        models=[model_id],
        tags=list(SPACE_TAGS),
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        pinned=False,
        short_description=short_description,
    )
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    body = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(
        title=title,
        tr_summary=(
            "Türkçe bir açıklama yazın ya da bir görsel yükleyin; MultiEmbedTR ile en yakın "
            "görselleri bulun."
        ),
        dataset_repo=dataset_repo,
        dataset_revision=dataset_revision,
        dataset_url=f"https://huggingface.co/datasets/{dataset_repo}",
        model_id=model_id,
        model_url=f"https://huggingface.co/{model_id}",
        usage_snippet=_usage_snippet(dataset_repo, dataset_revision, model_id, model_revision),
    )
    return str(SpaceCard(f"---\n{card_data.to_yaml()}\n---\n{body}"))


def _py_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _usage_snippet(
    dataset_repo: str, dataset_revision: str | None, model_id: str, model_revision: str | None
) -> str:
    rev = f", revision={_py_str(dataset_revision)}" if dataset_revision else ""
    model_rev = f", revision={_py_str(model_revision)}" if model_revision else ""
    repo = _py_str(dataset_repo)
    return "\n".join(
        [
            "from datasets import load_dataset",
            "from huggingface_hub import hf_hub_download",
            "from imagesearchtr import Encoder",
            "",
            "# Rows and index must come from the same revision.",
            f"ds = load_dataset({repo}, split={_py_str(SPLIT)}{rev})",
            f'index_file = hf_hub_download({repo}, "index/image_emb.faiss", repo_type="dataset"'
            f"{rev})",
            'ds.load_faiss_index("image_emb", index_file)',
            f"encoder = Encoder.from_pretrained({_py_str(model_id)}{model_rev})",
            'query = encoder.encode_texts(["karlı dağlar"])[0]',
            'scores, rows = ds.get_nearest_examples("image_emb", query, k=5)',
            'print(rows["captions"])',
        ]
    )
