"""What each serving version logged about its own choices, summed per ``model_version``.

The figures of ``validation.logged`` (which compares them within a version) and of infra validation
(which records what a candidate logged for its canned requests, so the first span a version serves has
something to be compared with): counted over the Arrow batches of ``features.examples`` (decoded examples
or parsed request records).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa


class Logged:
    """Sums per serving version over example batches (``ExampleColumns.to_record_batch`` or decoded examples)."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}  # version -> [impressions, explored, certain, propensity, score]
        self.rows: dict[str, Counter[str]] = {}  # version -> impressions per row

    def add(self, batch: pa.RecordBatch) -> None:
        def column(name: str) -> np.ndarray:
            return batch.column(batch.schema.get_field_index(name)).flatten().to_numpy(zero_copy_only=False)

        version, explored = column("model_version"), column("explored").astype(np.float64)
        propensity, score = column("propensity").astype(np.float64), column("score").astype(np.float64)
        row = column("row")
        for v in np.unique(version):
            m = version == v
            name = _text(v)
            add = np.array([m.sum(), explored[m].sum(), (propensity[m] >= 1.0).sum(), propensity[m].sum(),
                            score[m].sum()])
            self.sums[name] = self.sums.get(name, np.zeros(5)) + add
            names, counts = np.unique(row[m], return_counts=True)
            self.rows.setdefault(name, Counter()).update({_text(r): int(c) for r, c in zip(names, counts)})

    def result(self) -> dict[str, dict[str, Any]]:
        """``{version: {impressions, explored_share, certain_share, propensity_mean, score_mean, rows}}``, with
        ``rows`` each row's share of the version's impressions."""
        return {v: {"impressions": int(n), "explored_share": round(e / n, 6), "certain_share": round(c / n, 6),
                    "propensity_mean": round(p / n, 6), "score_mean": round(s / n, 6),
                    "rows": {r: round(k / n, 6) for r, k in sorted(self.rows[v].items())}}
                for v, (n, e, c, p, s) in sorted(self.sums.items())}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
