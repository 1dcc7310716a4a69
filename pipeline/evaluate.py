"""Text-to-image retrieval quality of a published dataset: each caption finds its own image.

Reads a published repo or folder (through ``Searcher.from_repo``, so the model is the one the
manifest pins); writes the metrics as JSON (``--output``) and prints a table.

For every caption of every row, the caption is the query and its own row is the right answer.
Ranks are exact: the query is scored against every row's stored embeddings (the same cosine the
flat index computes), for image-only search and for Deep Search at each alpha of the sweep. A
row's rank is 1 + the number of rows with a strictly higher score, so rows tied with the right
answer (identical captions) do not push it down.

Note: a row's caption embedding is the mean of its captions, so with alpha = 0 a caption need
not rank its own row first when the row has several captions; with one caption per row it must.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.75, 1.0)


@dataclass(frozen=True)
class Metrics:
    mode: str  # "image-only" or "deep alpha=0.60"
    alpha: float | None
    queries: int
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    median_rank: float
    mrr: float


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's target row (ties with the target do not count)."""
    own = scores[np.arange(len(targets)), targets]
    return 1 + (scores > own[:, None]).sum(axis=1)


def metrics(mode: str, alpha: float | None, ranks: np.ndarray) -> Metrics:
    return Metrics(
        mode=mode,
        alpha=alpha,
        queries=int(len(ranks)),
        recall_at_1=float((ranks <= 1).mean()),
        recall_at_5=float((ranks <= 5).mean()),
        recall_at_10=float((ranks <= 10).mean()),
        median_rank=float(np.median(ranks)),
        mrr=float((1.0 / ranks).mean()),
    )


def evaluate(searcher, alphas=DEFAULT_ALPHAS, batch_size: int = 256) -> list[Metrics]:
    from imagesearchtr.vectors import embedding_matrix

    table = searcher._full.data.table
    dim = searcher.manifest.dim
    image_emb, _ = embedding_matrix(table.column("image_emb"), dim)
    caption_emb, caption_valid = embedding_matrix(table.column("caption_emb"), dim)
    captions = table.column("captions").to_pylist()
    queries = [c for caps in captions for c in caps]
    targets = np.array([row for row, caps in enumerate(captions) for _ in caps], dtype=np.int64)
    if not queries:
        raise ValueError(f"{searcher.location} has no captions to evaluate with")
    vectors = searcher.encoder.encode_texts(queries, batch_size=64)

    modes = [("image-only", None)] + [(f"deep alpha={a:.2f}", a) for a in alphas]
    ranks = {mode: [] for mode, _ in modes}
    for start in range(0, len(queries), batch_size):
        q = vectors[start : start + batch_size]
        t = targets[start : start + batch_size]
        image_scores = q @ image_emb.T
        caption_scores = q @ caption_emb.T
        for mode, alpha in modes:
            if alpha is None:
                fused = image_scores
            else:
                # Rows without captions keep their image score, as in Searcher.fuse.
                fused = np.where(
                    caption_valid, alpha * image_scores + (1 - alpha) * caption_scores, image_scores
                )
            ranks[mode].append(ranks_of_targets(fused, t))
    return [metrics(mode, alpha, np.concatenate(ranks[mode])) for mode, alpha in modes]


def format_table(results: list[Metrics]) -> str:
    header = f"{'mode':<18} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'medR':>6} {'MRR':>6}"
    lines = [header, "-" * len(header)]
    for m in results:
        lines.append(
            f"{m.mode:<18} {m.recall_at_1:6.3f} {m.recall_at_5:6.3f} {m.recall_at_10:6.3f} "
            f"{m.median_rank:6.1f} {m.mrr:6.3f}"
        )
    return "\n".join(lines)


def save(results: list[Metrics], path: Path, location: str) -> None:
    payload = {"dataset": location, "results": [asdict(m) for m in results]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
