"""What a served page becomes: checked, answered to the client, and written to the request log.

``Service`` checks every page a model makes (``check_page``) before it is served,
then turns each page into the instance's answer (``response``) and into its
request-log line (``log_line``), the record training reads back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

from recloop.features.catalog import DECLARED, NO_RELEASE
from recloop.features.records import ImpressionColumns, format_request
from recloop.features.spec import LABELS, Feature, missing_value
from recloop.serving.funnel import Page


def check_page(page: Page) -> None:
    """Raises ValueError unless a page is a valid answer: scores and heads in [0, 1], propensities in
    (0, 1], no item twice."""
    pool = page.pool
    index = [i.index for i in page.impressions]
    if len(set(index)) != len(index):
        raise ValueError(f"request {page.query.request_id}: an item appears twice on the page")
    for name, values in {"score": pool.score, **pool.heads}.items():
        v = np.asarray(values)[index]
        if not np.isfinite(v).all() or (v < 0).any() or (v > 1).any():
            raise ValueError(f"request {page.query.request_id}: {name} outside [0, 1]: {v.tolist()}")
    if any(not 0 < i.propensity <= 1 for i in page.impressions):
        raise ValueError(f"request {page.query.request_id}: a propensity outside (0, 1]")


def response(page: Page, version: str, fallback: str | None) -> dict[str, Any]:
    """One instance's answer: rows of ``{item_id, score, propensity, explored, heads}`` in page order."""
    pool, imps = page.pool, page.impressions
    index = [imp.index for imp in imps]
    ids, scores = pool.item_id[index].tolist(), pool.score[index].tolist()  # one conversion per column
    heads = ([dict(zip(LABELS, values, strict=True)) for values in zip(*(pool.heads[h][index].tolist()
                                                                          for h in LABELS), strict=True)]
             if pool.heads else [None] * len(imps))
    rows: dict[str, list[dict[str, Any]]] = {}
    for imp, item_id, score, head in zip(imps, ids, scores, heads, strict=True):
        rows.setdefault(imp.row, []).append({"item_id": item_id, "score": score, "propensity": imp.propensity,
                                             "explored": imp.explored, "heads": head})
    return {"request_id": page.query.request_id, "model_version": version, "fallback": fallback,
            "rows": [{"name": name, "items": items} for name, items in rows.items()]}


def log_line(page: Page, version: str, ts: dt.datetime, catalog: Mapping[str, np.ndarray],
             release_date: np.ndarray) -> str:
    """The request record of a served page (the log contract), as one JSON line: the member and context
    exactly as received, every impression with the item metadata as served.

    ``catalog`` is the served catalog's columns and ``release_date`` the ISO date of each of its items (None:
    unknown, and then so is the item's age).
    """
    q, pool, imps = page.query, page.pool, page.impressions
    assert pool.index is not None
    index = [imp.index for imp in imps]
    rows = pool.index[index]  # the catalog row of each impression: its metadata as served
    release_day = catalog["release_day"][rows]
    shown = ImpressionColumns(
        item_id=catalog["item_id"][rows].tolist(), position=[imp.position for imp in imps],
        row=[imp.row for imp in imps], score=pool.score[index].tolist(), propensity=[imp.propensity for imp in imps],
        explored=[imp.explored for imp in imps],
        item={f.name: _as_served(f, catalog[f.name][rows].tolist()) for f in DECLARED},
        release_date=release_date[rows].tolist(),
        age_days=[None if r == NO_RELEASE else q.day - r for r in release_day.tolist()])
    return format_request(q.request_id, ts, version, q.member_id, q.member, q.context, shown)


def _as_served(f: Feature, values: list) -> list:
    """A nullable feature's missing value in the catalog columns is a null in the log, as the feed had it."""
    if not f.nullable:
        return values
    missing = missing_value(f.dtype)
    return [None if v == missing else v for v in values]
