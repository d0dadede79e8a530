"""What each serving version logged about its own choices, compared within the same version.

The logging fields (``explored``, ``propensity``, ``score``) depend on the model that served, so a push
moves them legitimately, and a comparison across versions would page on every push. A bug in how a
version logs (every propensity 1, the explored flag never set) moves them while the version stays the
same. The rows a version's page logs (``row``) are its deployment's layout, so they too are compared
within the version: the largest change of a row's share of impressions (L-infinity), which a renamed row
moves by its whole share. So each version's figures in this span are compared with the same version's in the previous span;
a version first seen this span has nothing to compare with and is checked from its next span on. The
off-policy estimate and the unbiased (explored) views read these fields: a version that logs them wrong
must not reach training or the gate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from recloop.validation.anomaly import Anomaly

# figure -> blocking; a share or a mean moving by more than its threshold (absolute) within one version. The
# mean score also moves with the week's members and items (and a heuristic's refreshed popularity), so it
# warns, at its own threshold (config.logged_score_change)
FIGURES = {"explored_share": True, "certain_share": True, "propensity_mean": True, "score_mean": False}
ROW_MIX = "row_mix"  # blocking, at the same threshold
MIN_IMPRESSIONS = 1000  # a version with fewer impressions in either span is not compared


class Logged:
    """Sums per serving version over the decoded example batches of a span (``stats.example_statistics``)."""

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

    def result(self) -> dict[str, dict[str, float]]:
        """``{version: {impressions, explored_share, certain_share, propensity_mean, score_mean, rows}}``, with
        ``rows`` each row's share of the version's impressions."""
        return {v: {"impressions": int(n), "explored_share": round(e / n, 6), "certain_share": round(c / n, 6),
                    "propensity_mean": round(p / n, 6), "score_mean": round(s / n, 6),
                    "rows": {r: round(k / n, 6) for r, k in sorted(self.rows[v].items())}}
                for v, (n, e, c, p, s) in sorted(self.sums.items())}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check(now: Mapping[str, Mapping[str, float]], was: Mapping[str, Mapping[str, float]] | None,
          max_change: float, score_change: float, spans: str) -> tuple[list[Anomaly], list[dict[str, Any]]]:
    """Each version's figures against the same version's in the previous span (None: nothing compared).

    Returns the anomalies (a blocking figure moving by more than ``max_change`` blocks; the mean score
    moving by more than ``score_change`` warns) and every distance measured.
    """
    anomalies, measured = [], []
    for version, figures in now.items():
        before = (was or {}).get(version)
        if before is None or min(figures["impressions"], before["impressions"]) < MIN_IMPRESSIONS:
            continue
        for name, blocking in FIGURES.items():
            distance, threshold = abs(figures[name] - before[name]), max_change if blocking else score_change
            row = {"feature": f"logged.{name}", "check": "drift", "measure": "SHARE_CHANGE",
                   "distance": round(distance, 6), "threshold": threshold, "version": version}
            measured.append(row)
            if distance > threshold:
                anomalies.append(Anomaly(
                    feature=row["feature"], check="drift", measure="SHARE_CHANGE", distance=row["distance"],
                    threshold=threshold, blocking=blocking, spans=f"{version}: {spans}",
                    description=f"{version} logged {name} {figures[name]:.4f}, was {before[name]:.4f} "
                                "(the same version in the previous span)",
                    top_changed_values=[{"value": f"{name} [{version}]", "now": figures[name],
                                         "was": before[name]}]))
        if "rows" in figures and "rows" in before:  # measures kept before rows were would lack them
            now_rows, was_rows = figures["rows"], before["rows"]
            moved = sorted(set(now_rows) | set(was_rows),
                           key=lambda r: -abs(now_rows.get(r, 0.0) - was_rows.get(r, 0.0)))
            distance = abs(now_rows.get(moved[0], 0.0) - was_rows.get(moved[0], 0.0))
            row = {"feature": f"logged.{ROW_MIX}", "check": "drift", "measure": "L_INFTY",
                   "distance": round(distance, 6), "threshold": max_change, "version": version}
            measured.append(row)
            if distance > max_change:
                anomalies.append(Anomaly(
                    feature=row["feature"], check="drift", measure="L_INFTY", distance=row["distance"],
                    threshold=max_change, blocking=True, spans=f"{version}: {spans}",
                    description=f"{version} logged rows {sorted(now_rows)}, was {sorted(was_rows)} (the same "
                                "version in the previous span)",
                    top_changed_values=[{"value": f"row {r} [{version}]", "now": now_rows.get(r, 0.0),
                                         "was": was_rows.get(r, 0.0)} for r in moved[:4]]))
    return anomalies, measured
