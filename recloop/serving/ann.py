"""Retrieval's search: the items with the largest dot product with a query, exact or through a ScaNN index.

Below ``ANN_MIN_ITEMS`` released items retrieval scores the whole catalog (one
matrix product: at 10k items that is cheaper than any index lookup); from there
on it searches a ScaNN index (the ``scann`` package the exported index already
uses: a k-means tree over the vectors, anisotropic hashing to score the searched
leaves, exact re-scoring of the best ``reorder`` candidates). Either way a
search covers only the items released by its day, and returns catalog rows.

An index is built from a day's item vectors, off the request path: for the day a
version is loaded on (the server keeps serving the old one meanwhile) and for the
next day ahead of it (``Service``); scann's training is seeded, so the same
vectors give the same index, and a logged page can be replayed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

ANN_MIN_ITEMS = 100_000


@dataclass(frozen=True)
class Search:
    """Top-``k`` search over the vectors of ``rows`` (catalog rows, the items released by a day)."""

    rows: np.ndarray
    vectors: np.ndarray | None  # (len(rows), dim) for an exact search; the index holds its own copy
    index: object | None  # a scann searcher, or None: exact
    build_s: float = 0.0

    @property
    def kind(self) -> str:
        return "exact" if self.index is None else "scann"

    def top(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, min(k, items)) catalog rows of each query's best items (in no particular order when exact)."""
        k = min(k, len(self.rows))
        if k == 0:
            return np.zeros((len(queries), 0), np.int64)
        if self.index is not None:
            found, _ = self.index.search_batched(queries, final_num_neighbors=k)
            return self.rows[np.asarray(found, dtype=np.int64)]
        if k == len(self.rows):
            return np.tile(self.rows, (len(queries), 1))
        assert self.vectors is not None
        scores = queries @ self.vectors.T
        return self.rows[np.argpartition(-scores, k - 1, axis=1)[:, :k]]


def parameters(items: int, k: int) -> dict[str, int]:
    """Tree and re-scoring sizes for ``items`` vectors: ~2 sqrt(n) leaves, 5% of them searched (and enough to
    hold twice the re-scored candidates, on average), exact re-scoring of the best 20 k (recall@200 against
    exact search: bench/README.md, "A million items")."""
    leaves = max(1, min(items, round(2 * math.sqrt(items))))
    reorder = min(items, 20 * k)
    search = min(leaves, max(math.ceil(0.05 * leaves), math.ceil(2 * reorder * leaves / items)))
    return {"num_leaves": leaves, "num_leaves_to_search": search, "reorder": reorder,
            "training_sample_size": min(items, 250_000)}


def build(rows: np.ndarray, vectors: np.ndarray, k: int, min_items: int = ANN_MIN_ITEMS) -> Search:
    """The search over ``vectors`` (one per catalog row in ``rows``): exact below ``min_items``, else a ScaNN
    index for top-``k`` searches."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(rows) < min_items:
        return Search(rows, vectors, None)
    import scann

    started = time.perf_counter()
    p = parameters(len(rows), k)
    index = (scann.scann_ops_pybind.builder(vectors, k, "dot_product")
             .tree(num_leaves=p["num_leaves"], num_leaves_to_search=p["num_leaves_to_search"],
                   training_sample_size=p["training_sample_size"])
             .score_ah(2, anisotropic_quantization_threshold=0.2)
             .reorder(p["reorder"]).build())
    return Search(rows, None, index, time.perf_counter() - started)
