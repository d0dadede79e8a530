"""Replay: what a model version would have served for logged requests, slot by slot.

For every logged impression, ``target_probabilities`` gives the probability that
the version, answering the same request (member, context, the rows and items per
row the logged page had) through the serving funnel with the same exploration
rule (``rows.slot_probability``), would have put the logged item in the logged
slot, given the logged items above it. It is the target-policy side of the gate's
off-policy estimate (``trainer.offpolicy``); the logged propensity is the logging side.

The version is replayed over an item feed. Give it the feed the server served
(``catalog/dt=`` snapshots, picked per request day as the server does): the
funnel's pool depends on the catalog, so with another catalog the replay
approximates the version rather than reproducing it. Replaying the logging
version over its own feed reproduces every logged propensity exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop.features import roles
from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.serving.funnel import CONTEXT_FIELDS, MEMBER_FIELDS, Query, candidates, load_version
from recloop.serving.rows import RowsConfig, slot_choices, slot_probability

# the impression columns a replay reads (ingest's example columns carry them all)
COLUMNS = ("request_id", "ts", "member_id", *MEMBER_FIELDS, *CONTEXT_FIELDS, "item_id", "position", "row")
BATCH = 256  # requests per funnel call


class ReplayError(ValueError):
    """Logged requests that cannot be replayed (a row the serving config lacks, a missing feed)."""


@dataclass(frozen=True)
class Replay:
    """Per logged impression, the version's probability of the logged item in the logged slot."""

    probability: np.ndarray
    requests: int
    outside_pool: int  # impressions whose item the version would show only by its catalog-wide share
    feeds: tuple[str, ...]  # the item feeds replayed over


def target_probabilities(version_dir: str, impressions: Mapping[str, np.ndarray], catalog: str,
                         config: RowsConfig | None = None,
                         progress: Callable[[int, int], None] = lambda done, total: None) -> Replay:
    """Replays ``version_dir`` on the logged requests of ``impressions`` (COLUMNS, one row per impression).

    Args:
      catalog: an item-feed root with ``catalog/dt=YYYY-MM-DD/`` snapshots (the newest on or before each
        request day is used, as the server does) or one items file (ingest's item summaries).
      config: rows and exploration of the serving config the version would run with.
      progress: told (requests done, requests) after each batch.

    Raises:
      ReplayError: a logged row the config does not have, or no feed for a request day.
    """
    config = config or RowsConfig()
    known = {r.name for r in config.rows}
    unknown = sorted(set(np.unique(impressions["row"]).tolist()) - known)
    if unknown:
        raise ReplayError(f"logged row {unknown[0]!r} is not a configured row ({sorted(known)}): the version "
                          "cannot answer that page")
    n = len(impressions["request_id"])
    out = np.zeros(n)
    order = np.lexsort((impressions["position"], impressions["request_id"]))
    rid = impressions["request_id"][order]
    starts = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])
    bounds = list(zip(starts, np.r_[starts[1:], n], strict=True))
    days = np.array([_day(impressions["ts"][order[lo]]) for lo, _ in bounds], dtype=np.int64)
    feeds = {}
    for day in np.unique(days):
        feed = _feed(catalog, dt.date.fromordinal(int(day)))
        feeds.setdefault(feed, []).append(day)
    outside = 0
    done = 0
    for feed, feed_days in feeds.items():
        version = load_version(version_dir, item_columns(read_items(feed)), dt.date.fromordinal(int(min(feed_days))))
        catalog_row = {item: i for i, item in enumerate(version.catalog["item_id"].tolist())}
        mine = [b for b, d in zip(bounds, days, strict=True) if d in feed_days]
        for lo_batch in range(0, len(mine), BATCH):
            batch = mine[lo_batch : lo_batch + BATCH]
            rows = [order[lo:hi] for lo, hi in batch]
            queries = [_query(impressions, r) for r in rows]
            for query, r, pool in zip(queries, rows, candidates(version, queries, config), strict=True):
                retrieved = pool.item_id if pool.retrieved is None else pool.item_id[pool.retrieved]
                in_pool = set(retrieved.tolist())
                profile = version.profiles.get(query.member_id)
                choices, _ = slot_choices(pool, config, query.k, profile,
                                          roles.value("preferred_category", query.member), query.day, query.rows)
                taken: list[int] = []
                for j in r:  # in position order
                    item_id = impressions["item_id"][j]
                    item = catalog_row.get(item_id)
                    position = int(impressions["position"][j])
                    outside += item_id not in in_pool
                    if position < len(choices):
                        out[j] = slot_probability(choices[position], taken, item, config)
                    if item is not None:
                        taken.append(item)
            done += len(batch)
            progress(done, len(bounds))
    return Replay(probability=out, requests=len(bounds), outside_pool=int(outside), feeds=tuple(feeds))


def _day(ts: object) -> int:
    value = float(ts)  # type: ignore[arg-type]
    return dt.datetime.fromtimestamp(value, dt.UTC).date().toordinal()


def _feed(catalog: str, day: dt.date) -> str:
    if catalog.endswith((".jsonl", ".jsonl.gz")):
        return catalog
    found = snapshot(catalog, day)
    if found is None:
        raise ReplayError(f"no item feed under {catalog}/catalog/ on or before {day}")
    return found


def _value(column_value: np.ndarray) -> Any:
    """One request's value of a column: a list feature's row (padded with "") as the list it was served as."""
    if column_value.ndim:
        return [v for v in column_value.tolist() if v != ""]
    return column_value.item()


def _query(impressions: Mapping[str, np.ndarray], rows: np.ndarray) -> Query:
    """The request a logged page answered: its member and context, its rows in page order, k per row."""
    first = rows[0]
    names = impressions["row"][rows].tolist()
    page_rows = list(dict.fromkeys(names))
    k = max(names.count(r) for r in page_rows)
    return Query(request_id=str(impressions["request_id"][first]), member_id=str(impressions["member_id"][first]),
                 member={f: _value(impressions[f][first]) for f in MEMBER_FIELDS},
                 context={f: _value(impressions[f][first]) for f in CONTEXT_FIELDS},
                 day=_day(impressions["ts"][first]), k=k, rows=page_rows)
