"""Catalog consistency: item metadata as served in the logs vs the item feed.

The server logs each impression's metadata as it served it; the catalog is the
source of truth. A field that disagrees for more than a small share of the
served items means the serving path transforms metadata (a unit change, a stale
cache), which the model would learn from.
"""

from __future__ import annotations

import json
from typing import Any

from recloop.features import logs
from recloop.features.catalog import ITEM_FIELDS
from recloop.validation.anomaly import Anomaly

FIELDS = ITEM_FIELDS[1:]  # the declared item features and the release date


def check_catalog(served_path: str, catalog_path: str, max_mismatch_share: float, span: str) -> tuple[
        list[Anomaly], dict[str, Any]]:
    """Compares ``items/items.jsonl.gz`` of an ingest output with a catalog snapshot.

    Returns:
      Blocking anomalies for fields that disagree on more than ``max_mismatch_share``
      of the served items found in the catalog, and the measured shares.
    """
    served = {i["item_id"]: i for i in map(json.loads, logs.read_lines(served_path))}
    catalog = {i["item_id"]: i for i in map(json.loads, logs.read_lines(catalog_path))}
    known = [k for k in served if k in catalog]
    measured: dict[str, Any] = {"served_items": len(served), "not_in_catalog": len(served) - len(known)}
    anomalies = []
    for name in FIELDS:
        wrong = [k for k in known if not _same(served[k].get(name), catalog[k].get(name))]
        share = len(wrong) / len(known) if known else 0.0
        measured[name] = round(share, 6)
        if share > max_mismatch_share:
            anomalies.append(Anomaly(
                feature=name, check="catalog", measure="MISMATCH_SHARE", distance=round(share, 6),
                threshold=max_mismatch_share, blocking=True, spans=f"served {span} vs {catalog_path}",
                description=f"{len(wrong)} of {len(known)} served items have a {name} that differs from the catalog",
                top_changed_values=[{"value": k, "now": served[k].get(name), "was": catalog[k].get(name)}
                                    for k in wrong[:5]]))
    if len(known) < len(served) * (1 - max_mismatch_share):
        anomalies.append(Anomaly(
            feature="item_id", check="catalog", measure="NOT_IN_CATALOG", distance=1 - len(known) / len(served),
            threshold=max_mismatch_share, blocking=True, spans=f"served {span} vs {catalog_path}",
            description=f"{len(served) - len(known)} served items are not in the catalog",
            top_changed_values=[{"value": k} for k in list(set(served) - set(catalog))[:5]]))
    return anomalies, measured


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return a == b
