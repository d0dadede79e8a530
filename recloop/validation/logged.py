"""What each serving version logged about its own choices, compared within the same version.

The logging fields (``explored``, ``propensity``, ``score``) depend on the model that served, so a push
moves them legitimately, and a comparison across versions would page on every push. A bug in how a
version logs (every propensity 1, the explored flag never set) moves them while the version stays the
same. The rows a version's page logs (``row``) are its deployment's layout, so they too are compared
within the version: the largest change of a row's share of impressions (L-infinity), which a renamed row
moves by its whole share. So each version's figures in this span are compared with the same version's in
the previous span; a version first seen this span is compared with what it logged for infra validation's
canned requests (the registry keeps that with the version), so a bug that ships with a push is caught in
its first span too. The off-policy estimate and the unbiased (explored) views read these fields: a
version that logs them wrong must not reach training or the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recloop.features.logged import Logged
from recloop.validation.anomaly import Anomaly, moved_shares

__all__ = ["FIGURES", "MIN_IMPRESSIONS", "ROW_MIX", "Logged", "check"]

# figure -> blocking; a share or a mean moving by more than its threshold (absolute) within one version. The
# mean score also moves with the week's members and items (and a heuristic's refreshed popularity), so it
# warns, at its own threshold (config.logged_score_change)
FIGURES = {"explored_share": True, "certain_share": True, "propensity_mean": True, "score_mean": False}
ROW_MIX = "row_mix"  # blocking, at the same threshold
MIN_IMPRESSIONS = 1000  # a version with fewer impressions in either span is not compared


def check(now: Mapping[str, Mapping[str, Any]], was: Mapping[str, Mapping[str, Any]] | None,
          max_change: float, score_change: float, spans: str,
          infra: Callable[[str], Mapping[str, Any] | None] | None = None) -> tuple[list[Anomaly], list[dict[str, Any]]]:
    """Each version's figures against the same version's in the previous span (``was``; None: none kept), or,
    for a version not in it, against ``infra(version)``: what it logged in infra validation (None: unknown).

    Returns the anomalies (a blocking figure moving by more than ``max_change`` blocks; the mean score
    moving by more than ``score_change`` warns) and every distance measured.
    """
    anomalies, measured = [], []
    for version, figures in now.items():
        before, against = (was or {}).get(version), "the same version in the previous span"
        label = f"{version}: {spans}"
        if before is None and infra is not None:
            before, against = infra(version), "what the same version logged in infra validation"
            label = f"{version}: {spans.split(' vs ')[0]} vs its infra validation"
        if before is None or min(figures["impressions"], before["impressions"]) < MIN_IMPRESSIONS:
            continue
        for name, measure, distance, blocking, described, evidence in _compared(version, figures, before):
            threshold = max_change if blocking else score_change
            row = {"feature": f"logged.{name}", "check": "drift", "measure": measure, "distance": round(distance, 6),
                   "threshold": threshold, "version": version, "against": against, "blocks": blocking}
            measured.append(row)
            if distance > threshold:
                anomalies.append(Anomaly(
                    feature=row["feature"], check="drift", measure=measure, distance=row["distance"],
                    threshold=threshold, blocking=blocking, spans=label,
                    description=f"{version} logged {described} ({against})", top_changed_values=evidence))
    return anomalies, measured


def _compared(version: str, now: Mapping[str, Any], was: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """(figure, measure, distance, blocking, what it was and is, evidence) of each figure both spans have."""
    out: list[tuple[Any, ...]] = [
        (name, "SHARE_CHANGE", abs(now[name] - was[name]), blocking, f"{name} {now[name]:.4f}, was {was[name]:.4f}",
         [{"value": f"{name} [{version}]", "now": now[name], "was": was[name]}])
        for name, blocking in FIGURES.items()]
    if "rows" in now and "rows" in was:  # measures kept before rows were would lack them
        a, b = now["rows"], was["rows"]
        moved = moved_shares(a, b)
        out.append((ROW_MIX, "L_INFTY", abs(moved[0][1] - moved[0][2]), True, f"rows {sorted(a)}, was {sorted(b)}",
                    [{"value": f"row {r} [{version}]", "now": x, "was": y} for r, x, y in moved[:4]]))
    return out
