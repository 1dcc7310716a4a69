"""Text-to-image retrieval quality of a published dataset: each caption finds its own image.

Reads a published repo or folder (through ``Searcher.from_repo``, so the model is the one the
manifest pins); writes the metrics as JSON (``--output``) and prints a table.

For every caption of every row, the caption is the query and its own row is the right answer.
Ranks are exact: the query is scored against every row's stored embeddings (the same cosine the
flat index computes), for image-only search and for Deep Search at each alpha of the sweep. A
row's rank is its place in the order the Searcher shows: 1 + the rows with a higher score + the
rows tied with it that come first in row order (as ``Searcher._best`` breaks ties). Counting
ties for the right answer would give a model that embeds everything alike Recall@1 = 1. Every
row is ranked (no top-k cut-off): MRR averages 1/rank over all queries.

Two protocols, each record labelled with its ``protocol``:
- ``leave-one-out`` (the honest one): the right row's caption embedding is recomputed without
  the query caption, every copy of it (the normalised mean of its other captions, as the encode
  step makes it); a row left with no caption is scored on its image alone, as Deep Search
  scores caption-less rows.
- ``own-caption``: the stored caption embeddings as they are. The query caption is part of its
  own row's caption embedding, so Deep Search partly finds the caption through itself: read it
  as an upper bound, never to choose alpha.
Image-only search uses no caption embedding, so it scores the same under both.

``evaluate_composed`` (``evaluate --composed``) measures composed queries as
``Searcher.search_combined`` builds them (``compose_vectors``; the weights applied by scaling the
vectors passed in), scored the same exact way, on two tasks:
- ``negation``: frequent caption words A, B (Turkish lower-casing) where enough rows have A with B
  and A without B; the query "A - w*B" against "A" alone. Metric: the share of the top 10 rows
  whose captions have A and not B, and the share that have B (ties in score keep row order, as
  the Searcher shows them). The rows are labelled by their captions, not by any embedding.
- ``image+text``: for each caption c of row t, the image of t's nearest other row by image (the
  reference, left out of the ranking) plus w * c; Recall@1/10 and MRR of t. Weight 0 is the
  reference image alone, "text alone" the caption alone.
Image-only scoring (what ``search_combined`` does) uses no caption embedding, so nothing can leak
and the records say ``leave-one-out``. With Deep Search (``composed_alphas``) the image+text task
scores t against its caption embedding made without c (``leave-one-out``); the negation task
scores every row's stored caption embedding, made from the very captions that label it
(``own-caption``: a lexical upper bound, not for choosing weights).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imagesearchtr.vectors import compose_vectors, embedding_matrix

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.75, 1.0)
PROTOCOLS = ("leave-one-out", "own-caption")

# Composed-query sweeps: the weight of the negative term (positive weight 1), the weight of the
# text term (image weight 1; "text alone" is added), and the Deep Search alphas tried besides
# image-only search (alpha 0: the caption side alone).
DEFAULT_NEGATIVE_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
DEFAULT_TEXT_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
DEFAULT_COMPOSED_ALPHAS = (0.0,)
TOP = 10  # the negation task's labels are counted in the top 10 rows
STEM = 4  # words sharing their first 4 letters are taken as forms of one word (çocuk, çocuğu)
# Function words and postpositions, which say little about a photo's content; other words of
# 3+ letters count as content.
STOPWORDS = frozenset(
    {"bir", "iki", "üç", "ve", "ile", "bu", "şu", "için", "gibi", "olan", "olarak", "daha"}
    | {"çok", "her", "hem", "ama", "veya", "ise", "kadar", "diğer", "onun", "onlar", "başka"}
    | {"biri", "üzerinde", "önünde", "arkasında", "yanında", "içinde", "kenarında", "doğru"}
)


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
    """1-based rank of each query's target row in the Searcher's order: by score, ties in row
    order (a row tied with the target and before it in the dataset is shown first)."""
    own = scores[np.arange(len(targets)), targets][:, None]
    earlier = np.arange(scores.shape[1]) < targets[:, None]
    return 1 + (scores > own).sum(axis=1) + ((scores == own) & earlier).sum(axis=1)


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


def leave_one_out(
    vectors: np.ndarray, targets: np.ndarray, texts: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's own row's caption embedding without it: (matrix, mask of rows with one).

    ``vectors``: the caption (query) embeddings; ``targets``: each caption's row; ``texts``:
    the captions, so that every copy of the query caption in its row is left out (a caption
    listed twice would otherwise find its row through its other copy). The result is the
    normalised sum of the row's other captions' embeddings (the direction of their mean).
    """
    keys = range(len(targets)) if texts is None else texts
    groups: dict = {}
    group = np.array(
        [
            groups.setdefault((int(t), key), len(groups))
            for t, key in zip(targets, keys, strict=True)
        ]
    )
    sums = np.zeros((int(targets.max()) + 1, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, targets, vectors)
    copies = np.zeros((len(groups), vectors.shape[1]), dtype=np.float64)
    np.add.at(copies, group, vectors)
    others = sums[targets] - copies[group]
    counts = np.bincount(targets)[targets] - np.bincount(group)[group]
    norms = np.linalg.norm(others, axis=1, keepdims=True)
    valid = (counts > 0) & (norms[:, 0] > 1e-12)
    return (others / np.maximum(norms, 1e-12)).astype(np.float32), valid


def evaluate(searcher, alphas=DEFAULT_ALPHAS, batch_size: int = 256) -> list[Metrics]:
    """Both protocols' metrics for image-only search and Deep Search at each alpha."""
    (image_emb, caption_emb, caption_valid), captions = _rows(searcher)
    queries = [c for caps in captions for c in caps]
    targets = np.array([row for row, caps in enumerate(captions) for _ in caps], dtype=np.int64)
    if not queries:
        raise ValueError(f"{searcher.location} has no captions to evaluate with")
    vectors = np.asarray(searcher.encoder.encode_texts(queries, batch_size=64), dtype=np.float32)
    own_loo, own_loo_valid = leave_one_out(vectors, targets, queries)

    modes = _modes(alphas)
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


@dataclass(frozen=True)
class ComposedMetrics:
    protocol: str  # see the module docstring: which caption embeddings were scored
    task: str  # "negation" or "image+text"
    mode: str  # "image-only" or "deep alpha=0.00"
    alpha: float | None
    weights: dict[str, float]  # {"positive", "negative"} or {"image", "text"}
    queries: int  # word pairs (negation) or captions (image+text)
    values: dict[str, float]  # the task's metrics, and what chance would score
    pairs: list[list[str]] | None = field(default=None)  # negation: the (A, B) word pairs


def turkish_lower(text: str) -> str:
    """Lower-case Turkish text: "I" is "ı" and "İ" is "i" (str.lower gets both wrong)."""
    return text.replace("I", "ı").replace("İ", "i").lower()


def caption_words(text: str) -> set[str]:
    """The content words of a caption: lower-cased words of 3+ letters, not in STOPWORDS."""
    words = re.findall(r"[^\W\d_]+", turkish_lower(text))
    return {w for w in words if len(w) >= 3 and w not in STOPWORDS}


def word_pairs(
    row_words: list[set[str]], min_rows: int = 5, max_words: int = 30, max_pairs: int = 20
) -> list[tuple[str, str]]:
    """(A, B) pairs of frequent words where at least ``min_rows`` rows have A with B and as many
    have A without B: the pairs on which "A - B" can be told from "A". Most shared rows first.
    Two forms of one word (çocuk, çocuğu: the same first STEM letters) are not a pair."""
    counts = Counter(w for words in row_words for w in words)
    frequent = sorted(
        (w for w, c in counts.items() if c >= 2 * min_rows), key=lambda w: (-counts[w], w)
    )
    frequent = frequent[:max_words]
    found = []
    for a in frequent:
        with_a = [words for words in row_words if a in words]
        for b in frequent:
            both = sum(b in words for words in with_a)
            same_word = a[:STEM] == b[:STEM]
            if not same_word and both >= min_rows and len(with_a) - both >= min_rows:
                found.append((-both, a, b))
    return [(a, b) for _, a, b in sorted(found)[:max_pairs]]


def _scores(queries, image_emb, caption_emb, caption_valid, alpha):
    """Exact scores of each query against every row, as ``Searcher.search_vector`` fuses them."""
    image_scores = queries @ image_emb.T
    if alpha is None:
        return image_scores
    fused = alpha * image_scores + (1 - alpha) * (queries @ caption_emb.T)
    return np.where(caption_valid, fused, image_scores)


def _rows(searcher):
    """((image_emb, caption_emb, caption_valid), captions) of every row: the exact float32
    embeddings (read from the data files once) and each row's list of captions."""
    dim, stored = searcher.manifest.dim, searcher.embeddings()
    image_emb, _ = embedding_matrix(stored.column("image_emb"), dim)
    caption_emb, caption_valid = embedding_matrix(stored.column("caption_emb"), dim)
    captions = searcher.rows.data.column("captions").to_pylist()
    return (image_emb, caption_emb, caption_valid), captions


def _modes(alphas) -> list[tuple[str, float | None]]:
    return [("image-only", None)] + [(f"deep alpha={a:.2f}", a) for a in alphas]


def nearest_other_rows(image_emb: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Each row's nearest other row by image embedding (the lowest row number among ties)."""
    nearest = np.empty(len(image_emb), dtype=np.int64)
    for start in range(0, len(image_emb), batch_size):
        scores = image_emb[start : start + batch_size] @ image_emb.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        nearest[start : start + len(scores)] = scores.argmax(axis=1)
    return nearest


def evaluate_composed(
    searcher,
    negative_weights=DEFAULT_NEGATIVE_WEIGHTS,
    text_weights=DEFAULT_TEXT_WEIGHTS,
    alphas=DEFAULT_COMPOSED_ALPHAS,
    pairs: list[tuple[str, str]] | None = None,
    min_rows: int = 5,
    batch_size: int = 256,
) -> list[ComposedMetrics]:
    """The negation and image+text tasks (module docstring) at each weight, for image-only
    search and Deep Search at each of ``alphas``. ``pairs``: the negation task's (A, B) words
    (default: ``word_pairs`` of the captions)."""
    tables, captions = _rows(searcher)
    if len(captions) < 2:
        raise ValueError(f"{searcher.location}: composed queries need at least 2 rows")
    row_words = [set().union(*map(caption_words, caps)) for caps in captions]
    if pairs is None:
        pairs = word_pairs(row_words, min_rows)
    results = _negation(searcher.encoder, tables, row_words, pairs, negative_weights, alphas)
    queries = [c for caps in captions for c in caps]
    if not queries:
        raise ValueError(f"{searcher.location} has no captions to evaluate with")
    targets = np.array([row for row, caps in enumerate(captions) for _ in caps], dtype=np.int64)
    texts = np.asarray(searcher.encoder.encode_texts(queries, batch_size=64), dtype=np.float32)
    results += _image_and_text(tables, texts, targets, queries, text_weights, alphas, batch_size)
    return results


def _negation(encoder, tables, row_words, pairs, weights, alphas) -> list[ComposedMetrics]:
    if not pairs:
        return []  # too few captions share words: nothing to measure
    words = sorted({w for pair in pairs for w in pair})
    vector = dict(zip(words, np.asarray(encoder.encode_texts(words), np.float32), strict=True))
    # Two words the encoder cannot tell apart (both unknown to its tokenizer, say) would cancel
    # out in "A - B": such a pair measures nothing.
    pairs = [(a, b) for a, b in pairs if float(vector[a] @ vector[b]) < 0.999]
    if not pairs:
        return []
    has_a = np.array([[a in ws for ws in row_words] for a, _ in pairs])
    has_b = np.array([[b in ws for ws in row_words] for _, b in pairs])
    n = len(row_words)
    chance = {
        "chance_a_not_b": float((has_a & ~has_b).mean()),
        "chance_b": float(has_b.mean()),
    }
    results = []
    for mode, alpha in _modes(alphas):
        protocol = "leave-one-out" if alpha is None else "own-caption"
        for w in weights:
            # The weight scales the negative vector passed to compose_vectors; 0 is "A" alone.
            composed = [
                compose_vectors([vector[a]], [w * vector[b]] if w else []) for a, b in pairs
            ]
            scores = _scores(np.stack(composed), *tables, alpha)
            top = np.argsort(-scores, axis=1, kind="stable")[:, : min(TOP, n)]
            picked = np.arange(len(pairs))[:, None], top
            values = {
                "share_a_not_b": float((has_a[picked] & ~has_b[picked]).mean()),
                "share_b": float(has_b[picked].mean()),
            } | chance
            results.append(
                ComposedMetrics(
                    protocol, "negation", mode, alpha, {"positive": 1.0, "negative": float(w)},
                    len(pairs), values, [list(p) for p in pairs],
                )
            )  # fmt: skip
    return results


def _image_and_text(
    tables, texts, targets, queries, weights, alphas, batch_size
) -> list[ComposedMetrics]:
    image_emb = tables[0]
    reference = nearest_other_rows(image_emb)[targets]
    own_loo, own_loo_valid = leave_one_out(texts, targets, queries)
    sweep = [(1.0, float(w)) for w in weights] + [(0.0, 1.0)]  # (image, text); then text alone
    results = []
    for mode, alpha in _modes(alphas):
        for image_weight, text_weight in sweep:
            ranks = []
            for start in range(0, len(targets), batch_size):
                batch = slice(start, start + batch_size)
                t, ref = targets[batch], reference[batch]
                # The weights scale the vectors passed to compose_vectors; a 0 drops the term.
                composed = [
                    compose_vectors(
                        [w * v for w, v in ((image_weight, image), (text_weight, text)) if w], []
                    )
                    for image, text in zip(image_emb[ref], texts[batch], strict=True)
                ]
                q = np.stack(composed)
                scores = _scores(q, *tables, alpha)
                if alpha is not None:  # leave-one-out: t's caption embedding made without c
                    at_target = (np.arange(len(t)), t)
                    own = np.einsum("ij,ij->i", q, own_loo[batch])
                    image_scores = np.einsum("ij,ij->i", q, image_emb[t])
                    scores[at_target] = np.where(
                        own_loo_valid[batch],
                        alpha * image_scores + (1 - alpha) * own,
                        image_scores,
                    )
                scores[np.arange(len(t)), ref] = -np.inf  # the reference row is not an answer
                ranks.append(ranks_of_targets(scores, t))
            ranks = np.concatenate(ranks)
            values = {
                "recall_at_1": float((ranks <= 1).mean()),
                "recall_at_10": float((ranks <= 10).mean()),
                "mrr": float((1.0 / ranks).mean()),
                "chance_recall_at_1": 1.0 / (len(image_emb) - 1),
            }
            weights_used = {"image": image_weight, "text": text_weight}
            results.append(
                ComposedMetrics(
                    "leave-one-out", "image+text", mode, alpha, weights_used, len(ranks), values
                )
            )
    return results


def format_composed(results: list[ComposedMetrics]) -> str:
    """One table per task: each weight's metrics, with what chance would score."""
    lines = []
    negation = [m for m in results if m.task == "negation"]
    if negation:
        lines.append(
            f"negation: 'A - w*B' against 'A' over {negation[0].queries} word pairs; share of "
            f"the top {TOP} rows whose captions have A and not B / have B"
        )
        header = f"{'protocol':<14} {'mode':<16} {'w':>5} {'A-not-B':>8} {'B':>6}"
        lines += [header, "-" * len(header)]
        for m in negation:
            lines.append(
                f"{m.protocol:<14} {m.mode:<16} {m.weights['negative']:5.2f} "
                f"{m.values['share_a_not_b']:8.3f} {m.values['share_b']:6.3f}"
            )
        v = negation[0].values
        lines.append(f"{'chance':<37} {v['chance_a_not_b']:8.3f} {v['chance_b']:6.3f}")
    else:
        lines.append("negation: no word pair has enough rows with and without the second word")
    pairs = [m for m in results if m.task == "image+text"]
    if pairs:
        lines.append(
            "\nimage+text: the image of the target's nearest other row (left out of the ranking) "
            f"+ w * a caption of the target; {pairs[0].queries} queries"
        )
        header = (
            f"{'protocol':<14} {'mode':<16} {'image':>5} {'text':>5} "
            f"{'R@1':>6} {'R@10':>6} {'MRR':>6}"
        )
        lines += [header, "-" * len(header)]
        for m in pairs:
            w, v = m.weights, m.values
            lines.append(
                f"{m.protocol:<14} {m.mode:<16} {w['image']:5.2f} {w['text']:5.2f} "
                f"{v['recall_at_1']:6.3f} {v['recall_at_10']:6.3f} {v['mrr']:6.3f}"
            )
        lines.append(f"{'chance':<43} {pairs[0].values['chance_recall_at_1']:6.3f}")
    lines.append(
        "Every weight is measured on the same captions (no held-out split): the best one's "
        "figure is optimistic, the more so the fewer the queries (word pairs)."
    )
    return "\n".join(lines)


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


def save(
    results: list[Metrics],
    path: Path,
    location: str,
    composed: list[ComposedMetrics] | None = None,
) -> None:
    """Write ``{"dataset", "results"}`` (and ``"composed"`` when given) as JSON."""
    payload = {"dataset": location, "results": [asdict(m) for m in results]}
    if composed is not None:
        payload["composed"] = [asdict(m) for m in composed]
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
