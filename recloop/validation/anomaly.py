"""One anomaly as people read it: the record ``anomalies.json`` lists, its table cells, its runbook section.

No TFDV here (nor anything heavy): ``recloop anomalies`` reads a run's
``anomalies.json`` with this module alone, so on-call gets the table in a
second. ``checks.py`` makes the records from TFDV's findings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

RUNBOOK = "docs/oncall.md"
DELIVERED = ("events", "requests", "impressions")  # the prefixes of validation.delivery's measures
ANOMALY_COLUMNS = ("feature", "check", "measure", "distance", "threshold", "blocking", "compared",
                   "values: now (was)", "runbook")


@dataclass
class Anomaly:
    """One finding, as ``anomalies.json`` lists it."""

    feature: str
    check: str  # schema | skew | drift | catalog
    measure: str  # the distance, or the schema anomaly's TFDV type
    distance: float | None
    threshold: float | None
    blocking: bool
    spans: str  # what was compared
    description: str
    # the evidence: {"value", "now" or "share", "was", "expected"?}, the offending values first
    top_changed_values: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def runbook_section(a: dict[str, Any]) -> str:
    """The runbook anchor for an anomaly (``docs/oncall.md#check-...``): what it means, and what to do."""
    check, measure = a["check"], a["measure"]
    if check == "schema":
        kind = ("vocabulary" if "STRING" in measure or "ENUM" in measure else
                "range" if "FLOAT" in measure or "INT_TYPE" in measure else
                "missing" if "PRESENT" in measure or "MISSING" in measure else "other")
        return f"{RUNBOOK}#check-schema-{kind}"
    if a.get("feature", "").startswith("logged."):
        return f"{RUNBOOK}#check-logged"
    if measure == "SHARE_CHANGE" or a.get("feature", "").split(".")[0] in DELIVERED:
        return f"{RUNBOOK}#check-delivery"
    if check == "drift" and measure == "RATE_CHANGE":
        return f"{RUNBOOK}#check-rate-change"
    if check == "catalog":
        return f"{RUNBOOK}#check-catalog-{'missing' if measure == 'NOT_IN_CATALOG' else 'mismatch'}"
    return f"{RUNBOOK}#check-{check}"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def evidence(a: dict[str, Any], n: int = 3) -> str:
    """The first ``n`` values of an anomaly's evidence as ``value: now (was W; expected E)``."""
    parts = []
    for t in a["top_changed_values"][:n]:
        now = t.get("now", t.get("share"))
        said = [f"was {_value(t['was'])}"] if "was" in t else []
        said += [f"expected {t['expected']}"] if "expected" in t else []
        parts.append(f"{t['value']}" + ("" if now is None else f": {_value(now)}")
                     + (f" ({'; '.join(said)})" if said else ""))
    return ", ".join(parts)


def anomaly_cells(a: dict[str, Any]) -> list[str]:
    """One anomaly (as in ``anomalies.json``) as the cells of ``ANOMALY_COLUMNS``."""
    return [a["feature"], a["check"], a["measure"], "-" if a["distance"] is None else f"{a['distance']:.4f}",
            "-" if a["threshold"] is None else str(a["threshold"]), "yes" if a["blocking"] else "warn",
            a["spans"], evidence(a) or a["description"][:160], runbook_section(a)]


def moved_shares(now: Mapping[str, float], was: Mapping[str, float]) -> list[tuple[str, float, float]]:
    """Each key of two share mixes as (key, now, was), the largest move first: the first one's move is the
    mixes' L-infinity distance."""
    keys = sorted(set(now) | set(was), key=lambda k: -abs(now.get(k, 0.0) - was.get(k, 0.0)))
    return [(k, now.get(k, 0.0), was.get(k, 0.0)) for k in keys]
