"""Embedding math: columns as numpy matrices straight from Arrow, a query vector, a composed
query's vector, and the content hash of a build.

Reads Arrow columns of ``List(float32, length=dim)`` (as ``datasets`` stores them); writes
nothing. Going through Arrow avoids ``np.asarray(ds[col])``, which converts row by row (seconds
for 20k rows).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def embedding_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (float32 matrix (n, dim) with zero rows for nulls, boolean mask of non-null rows)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    valid = ~column.is_null().to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=bool)
    matrix = np.zeros((n, dim), dtype=np.float32)
    if valid.any():
        # flatten() drops null lists and honours slice offsets.
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        matrix[valid] = values.reshape(-1, dim)
    return matrix, valid


def data_hash(
    image_ids: list[str], image_emb: np.ndarray, caption_emb: np.ndarray, caption_valid: np.ndarray
) -> str:
    """sha256 over ids and embeddings in row order: identifies exactly what an index covers."""
    digest = hashlib.sha256()
    digest.update("\n".join(image_ids).encode())
    digest.update(np.ascontiguousarray(image_emb, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(caption_emb, dtype=np.float32).tobytes())
    digest.update(np.packbits(caption_valid).tobytes())
    return "sha256:" + digest.hexdigest()


def as_query(vector) -> np.ndarray:
    # float32 on purpose: FAISS takes float32, and a float64 query would upcast the rows.
    return np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(-1))


def compose_vectors(plus: list[np.ndarray], minus: list[np.ndarray]) -> np.ndarray:
    """The query vector of a composed query: the positive terms' embeddings minus the negative
    ones', each weighted 1, L2-normalised. One positive term alone is its own (already
    normalised) embedding, so a single text searches exactly as ``search_text`` does. Terms that
    cancel out are a ValueError."""
    if len(plus) == 1 and not minus:
        return plus[0]
    query = np.sum(plus, axis=0) - np.sum(minus or [np.zeros_like(plus[0])], axis=0)
    norm = float(np.linalg.norm(query))
    if norm < 1e-6:
        raise ValueError("the terms cancel each other out; drop a negative term")
    return query / norm
