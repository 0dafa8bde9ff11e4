"""The similarity scale every answer uses: (1 + cosine) / 2, in [0, 1].

The deployment plan's figures (threshold 0.78, same person 0.80-0.95) are on this scale;
0.78 corresponds to cosine 0.56.
"""

from __future__ import annotations

import numpy as np


def similarity_from_cosine(cosine: float) -> float:
    return float(min(1.0, max(0.0, (1.0 + float(cosine)) / 2.0)))


def cosine_from_similarity(similarity: float) -> float:
    """The cosine a threshold on the similarity scale corresponds to (0.78 -> 0.56)."""
    return 2.0 * float(similarity) - 1.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def normalize(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def template_of(embeddings: np.ndarray) -> np.ndarray:
    """One identity template: the normalised mean of unit-length face embeddings."""
    rows = np.asarray(embeddings, dtype=np.float32)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return normalize(rows.mean(axis=0))


def weakest_pair(embeddings: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Lowest pairwise similarity among the rows and which pair it is."""
    rows = np.asarray(embeddings, dtype=np.float32)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cosines = rows @ rows.T
    np.fill_diagonal(cosines, np.inf)
    i, j = np.unravel_index(int(np.argmin(cosines)), cosines.shape)
    return similarity_from_cosine(float(cosines[i, j])), (int(min(i, j)), int(max(i, j)))
