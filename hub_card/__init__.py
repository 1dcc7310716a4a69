"""Hub cards (README.md) for what ImageSearchTR publishes: the dataset repo and the Space.

Pure text rendering, no network: each function returns the README.md text and the publisher
uploads it. Templates live in ``hub_card/templates/`` (shipped as package data).

- ``render_dataset_card``: YAML metadata + body of the dataset repo, merged with the card
  already in the repo (the user's keys, extra configs and the user-notes block survive).
- ``render_space_card``: YAML + body of the Gradio Space.
- ``render_usage``: the usage snippet both cards show (dataset + a Space's /embed, no torch).
- ``extract_usage_snippet``: the card's first ```python block (the usage example, run by tests).
"""

from hub_card.dataset_card import parquet_sizes, render_dataset_card, size_category
from hub_card.space_card import gradio_version, render_space_card
from hub_card.usage import extract_usage_snippet, pip_install_line, render_usage

__all__ = [
    "extract_usage_snippet",
    "gradio_version",
    "parquet_sizes",
    "pip_install_line",
    "render_dataset_card",
    "render_space_card",
    "render_usage",
    "size_category",
]
