"""Text-to-image retrieval quality of a published dataset: each caption finds its own image.

Reads a published repo or folder (through ``Searcher.from_repo``, so the model is the one the
manifest pins); writes the metrics as JSON (``--output``) and prints a table.

For every caption of every row, the caption is the query and its own row is the right answer.
Ranks are exact: the query is scored against every row's stored embeddings (the same cosine the
flat index computes), for image-only search and for Deep Search at each alpha of the sweep. A
row's rank is 1 + the number of rows with a strictly higher score, so rows tied with the right
answer (identical captions) do not push it down.

Two protocols, each record labelled with its ``protocol``:
- ``leave-one-out`` (the honest one): the right row's caption embedding is recomputed without
  the query caption (the normalised mean of its other captions, as the encode step makes it); a
  row left with no caption is scored on its image alone, as Deep Search scores caption-less rows.
- ``own-caption``: the stored caption embeddings as they are. The query caption is part of its
  own row's caption embedding, so Deep Search partly finds the caption through itself: read it
  as an upper bound, never to choose alpha.
Image-only search uses no caption embedding, so it scores the same under both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from imagesearchtr.vectors import embedding_matrix

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.75, 1.0)
PROTOCOLS = ("leave-one-out", "own-caption")


@dataclass(frozen=True)
class Metrics:
    protocol: str  # "leave-one-out" or "own-caption"
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


def metrics(protocol: str, mode: str, alpha: float | None, ranks: np.ndarray) -> Metrics:
    return Metrics(
        protocol=protocol,
        mode=mode,
        alpha=alpha,
        queries=int(len(ranks)),
        recall_at_1=float((ranks <= 1).mean()),
        recall_at_5=float((ranks <= 5).mean()),
        recall_at_10=float((ranks <= 10).mean()),
        median_rank=float(np.median(ranks)),
        mrr=float((1.0 / ranks).mean()),
    )


def leave_one_out(vectors: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's own row's caption embedding without it: (matrix, mask of rows with one).

    ``vectors``: the caption (query) embeddings; ``targets``: each caption's row. The result
    is the normalised sum of the row's other captions' embeddings (the direction of their mean).
    """
    sums = np.zeros((int(targets.max()) + 1, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, targets, vectors)
    others = sums[targets] - vectors
    counts = np.bincount(targets)[targets]
    norms = np.linalg.norm(others, axis=1, keepdims=True)
    valid = (counts > 1) & (norms[:, 0] > 1e-12)
    return (others / np.maximum(norms, 1e-12)).astype(np.float32), valid


def evaluate(searcher, alphas=DEFAULT_ALPHAS, batch_size: int = 256) -> list[Metrics]:
    """Both protocols' metrics for image-only search and Deep Search at each alpha."""
    dim = searcher.manifest.dim
    image_emb, _ = embedding_matrix(searcher.vectors.data.column("image_emb"), dim)
    caption_emb, caption_valid = embedding_matrix(searcher.vectors.data.column("caption_emb"), dim)
    captions = searcher.rows.data.column("captions").to_pylist()
    queries = [c for caps in captions for c in caps]
    targets = np.array([row for row, caps in enumerate(captions) for _ in caps], dtype=np.int64)
    if not queries:
        raise ValueError(f"{searcher.location} has no captions to evaluate with")
    vectors = np.asarray(searcher.encoder.encode_texts(queries, batch_size=64), dtype=np.float32)
    own_loo, own_loo_valid = leave_one_out(vectors, targets)

    modes = [("image-only", None)] + [(f"deep alpha={a:.2f}", a) for a in alphas]
    ranks = {(p, mode): [] for p in PROTOCOLS for mode, _ in modes}
    for start in range(0, len(queries), batch_size):
        batch = slice(start, start + batch_size)
        q, t = vectors[batch], targets[batch]
        at_target = (np.arange(len(t)), t)
        image_scores = q @ image_emb.T
        caption_scores = q @ caption_emb.T
        for mode, alpha in modes:
            if alpha is None:  # image-only ranks are the same under both protocols
                image_ranks = ranks_of_targets(image_scores, t)
                for protocol in PROTOCOLS:
                    ranks[protocol, mode].append(image_ranks)
                continue
            # Rows without captions keep their image score, as in Searcher.search_vector.
            fused = np.where(
                caption_valid, alpha * image_scores + (1 - alpha) * caption_scores, image_scores
            )
            ranks["own-caption", mode].append(ranks_of_targets(fused, t))
            own = np.einsum("ij,ij->i", q, own_loo[batch])
            fused[at_target] = np.where(
                own_loo_valid[batch],
                alpha * image_scores[at_target] + (1 - alpha) * own,
                image_scores[at_target],
            )
            ranks["leave-one-out", mode].append(ranks_of_targets(fused, t))
    return [
        metrics(protocol, mode, alpha, np.concatenate(ranks[protocol, mode]))
        for protocol in PROTOCOLS
        for mode, alpha in modes
    ]


def format_table(results: list[Metrics]) -> str:
    header = (
        f"{'protocol':<14} {'mode':<18} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'medR':>6} {'MRR':>6}"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        lines.append(
            f"{m.protocol:<14} {m.mode:<18} {m.recall_at_1:6.3f} {m.recall_at_5:6.3f} "
            f"{m.recall_at_10:6.3f} {m.median_rank:6.1f} {m.mrr:6.3f}"
        )
    lines.append(
        "leave-one-out: each caption against its row's caption embedding made without it (use "
        "this to choose alpha); own-caption: the stored embeddings, which contain the query "
        "caption itself (an upper bound)."
    )
    return "\n".join(lines)


def save(results: list[Metrics], path: Path, location: str) -> None:
    payload = {"dataset": location, "results": [asdict(m) for m in results]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
