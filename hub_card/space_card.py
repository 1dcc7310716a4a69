"""The README.md of the ImageSearchTR Gradio Space.

Reads: the published dataset repo id and revision, the manifest's model, the installed gradio
version, the Python version and hardware the Space is built for, and the model files to preload.
Writes nothing: ``render_space_card`` returns the card text; the publisher uploads it.

The card is ``SpaceCardData`` (the Spaces YAML) plus a body rendered from
``templates/space_card.md``; the usage snippet is ``hub_card.usage``'s, shared with the dataset
card. ``SpaceCard.from_template`` is not used: its default template is the model-card body.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import jinja2
from huggingface_hub import SpaceCard, SpaceCardData, SpaceHardware

from hub_card.dataset_card import hub_url
from hub_card.usage import render_usage
from imagesearchtr.manifest import Manifest, is_hub_id

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "space_card.md"

# The Hub's limits (Spaces configuration reference): short_description is shown on the Space's
# thumbnail and is cut at 60 characters; colorFrom/colorTo take one of these colour names.
SHORT_DESCRIPTION_MAX = 60
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
DEFAULT_SHORT_DESCRIPTION = "Türkçe metinle veya görselle anlamsal görsel arama"
SPACE_TAGS = ["image-search", "turkish", "faiss", "imagesearchtr"]  # + the model's name
HARDWARE = tuple(h.value for h in SpaceHardware)


def gradio_version() -> str:
    """The installed gradio's version: the Space's ``sdk_version`` must match what was tested."""
    return importlib.metadata.version("gradio")


def render_space_card(
    *,
    title: str,
    space_id: str,
    dataset_repo: str,
    dataset_revision: str | None,
    manifest: Manifest,
    gradio_version: str,
    python_version: str,
    hardware: str,  # publish-space picks it (its DEFAULT_HARDWARE); the card says it
    preload: tuple[str, ...] = (),
    license: str = "apache-2.0",
    emoji: str = "🔎",
    color_from: str = "red",
    color_to: str = "indigo",
    short_description: str = DEFAULT_SHORT_DESCRIPTION,
    space_url: str | None = None,
) -> str:
    """The Space's README.md: Spaces YAML + body.

    ``python_version`` is what the builder installs the requirements with (Spaces defaults to
    3.10 without it); ``hardware`` goes to ``suggested_hardware``; ``preload`` are
    ``preload_from_hub`` lines ("repo file1,file2 revision"), fetched when the Space is built.
    ``space_url``: where the app answers as the Hub says (``SpaceInfo.host``, what gradio_client
    connects to); without it, the ``*.hf.space`` name made from ``space_id``.
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
    if hardware not in HARDWARE:
        raise ValueError(f"hardware {hardware!r} is not a Spaces hardware: {', '.join(HARDWARE)}")
    if not gradio_version:
        raise ValueError("gradio_version is empty; pass hub_card.gradio_version()")

    model_name = Path(manifest.model_id).name  # MultiEmbedTR, or the model the index was built with
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio_version,
        python_version=python_version,
        app_file="app.py",
        suggested_hardware=hardware,
        license=license,
        # datasets/models make the Hub link this Space from the dataset and model pages.
        datasets=[dataset_repo],
        # A local model folder (a build for local runs) has no Hub page to link.
        models=[manifest.model_id] if is_hub_id(manifest.model_id) else None,
        tags=SPACE_TAGS + ([model_name.lower()] if is_hub_id(manifest.model_id) else []),
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        pinned=False,
        short_description=short_description,
        **({"preload_from_hub": list(preload)} if preload else {}),
    )
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    body = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(
        title=title,
        tr_summary=(
            f"Türkçe bir açıklama yazın ya da bir görsel yükleyin; {model_name} ile en yakın "
            "görselleri bulun."
        ),
        dataset_repo=dataset_repo,
        dataset_revision=dataset_revision,
        dataset_url=hub_url(dataset_repo, "dataset"),
        model_id=manifest.model_id,
        model_url=hub_url(manifest.model_id, "model"),
        hardware=hardware,
        space_id=space_id,
        space_url=space_url.rstrip("/") if space_url else _space_url(space_id),
        usage_snippet=render_usage(
            manifest, space=space_id, repo_id=dataset_repo, revision=dataset_revision
        ),
    )
    return str(SpaceCard(f"---\n{card_data.to_yaml()}\n---\n{body}"))


def _space_url(space_id: str) -> str:
    """Where the app answers: a Space's ``*.hf.space`` host as the Hub names most (the Hub's
    own word, ``SpaceInfo.host``, is taken where known), or the URL of a local app (the card of
    ``publish-space --to``)."""
    if "://" in space_id:
        return space_id.rstrip("/")
    host = space_id.replace("/", "-").replace("_", "-").replace(".", "-").lower()
    return f"https://{host}.hf.space"
