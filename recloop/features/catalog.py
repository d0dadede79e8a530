"""The item feed and the model inputs built from it, shared by validation, the trainer and the server.

The item feed is ``<root>/catalog/dt=YYYY-MM-DD/items.jsonl.gz``, one JSON object
per item (``ITEM_FIELDS``: the item id, the declared item features and an optional
``release_date``); ingest's ``items/items.jsonl.gz`` item summaries carry the same
fields. The candidate tower of an export takes the spec's candidate features;
``candidate_inputs`` builds them from feed columns for a given day (item age is
measured to it), so the trainer's index and the server's index embed a catalog
the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recloop import storage
from recloop.features import logs
from recloop.features.spec import features_for, missing_value

DECLARED = tuple(f for f in features_for(group="item") if f.name not in ("item_id", "age_days"))
ITEM_FIELDS = ("item_id", *(f.name for f in DECLARED), "release_date")
QUERY_INPUTS = tuple(f.name for f in features_for(tower="query"))
CANDIDATE_INPUTS = tuple(f.name for f in features_for(tower="candidate"))
RANKING_INPUTS = tuple(f.name for f in features_for(tower="ranking") if not f.training_only)  # position: fixed
ITEM_INPUTS = frozenset(f.name for f in features_for(group="item"))
NO_RELEASE = -1  # the release_day of an item without a release_date: served from the start, its age missing
_NUMPY = {str: str, int: np.int64, float: np.float32}


def snapshot(root: str, day: dt.date) -> str | None:
    """The latest ``catalog/dt=`` feed on or before ``day`` under ``root``, or None."""
    fs, base = storage.filesystem(f"{root.rstrip('/')}/catalog")
    if not fs.isdir(base):
        return None
    dates = sorted(d for d in (logs.partition_date(p + "/x") for p in fs.ls(base, detail=False)
                               if p.rstrip("/").split("/")[-1].startswith("dt=")) if d <= day)
    return f"{root.rstrip('/')}/catalog/dt={dates[-1].isoformat()}/items.jsonl.gz" if dates else None


def read_items(path: str) -> list[dict[str, Any]]:
    """The items of a feed (or of ingest's item summaries), one dict each."""
    return [json.loads(line) for line in logs.read_lines(path)]


def item_columns(items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Feed rows as columns: ``item_id``, the declared item features (a missing nullable one is its
    ``missing_value``) and ``release_day`` (date ordinal; ``NO_RELEASE`` without a ``release_date``).

    Raises:
      ValueError: naming the item and the missing or unreadable field.
    """
    cols: dict[str, list[Any]] = {name: [] for name in ("item_id", *(f.name for f in DECLARED), "release_day")}
    for item in items:
        try:
            cols["item_id"].append(item["item_id"])
            for f in DECLARED:
                value = item.get(f.name)
                if value is None and not f.nullable:
                    raise KeyError(f.name)
                cols[f.name].append(missing_value(f.dtype) if value is None else value)
            release = item.get("release_date")
            cols["release_day"].append(NO_RELEASE if release is None else dt.date.fromisoformat(release).toordinal())
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"catalog item {item.get('item_id')!r}: bad or missing field {e}") from None
    dtypes = {f.name: _NUMPY[f.dtype] for f in DECLARED} | {"release_day": np.int64}
    return {name: np.array(values, dtype=dtypes.get(name, str)) for name, values in cols.items()}


def candidate_inputs(items: Mapping[str, np.ndarray], day: dt.date | np.ndarray,
                     names: Sequence[str] = CANDIDATE_INPUTS) -> dict[str, np.ndarray]:
    """The item-side model inputs among ``names`` (default: the candidate tower's) for item columns on ``day``:
    age in days, 0 before release, missing (-1) without a release date.

    ``day`` is one date, or one date ordinal per item row (items shown on different days).
    """
    ordinal = day.toordinal() if isinstance(day, dt.date) else day
    release = items["release_day"]
    age = np.where(release == NO_RELEASE, missing_value(int), np.maximum(ordinal - release, 0)).astype(np.int64)
    return {n: age if n == "age_days" else items[n] for n in names if n in ITEM_INPUTS}


def embed(signature: Any, inputs: Mapping[str, np.ndarray], batch: int = 8192) -> np.ndarray:
    """Runs a tower signature (raw features -> ``embedding``) over numpy columns in batches -> (n, dim)."""
    import tensorflow as tf

    n = len(next(iter(inputs.values())))
    parts = [signature(**{k: tf.constant(v[i : i + batch]) for k, v in inputs.items()})["embedding"].numpy()
             for i in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
