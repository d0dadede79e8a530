"""The item feed and the model inputs built from it, shared by validation, the trainer and the server.

The item feed is ``<root>/catalog/dt=YYYY-MM-DD/items.jsonl.gz``, one JSON object
per item (``ITEM_FIELDS``); ingest's ``items/items.jsonl.gz`` item summaries
carry the same fields. The candidate tower of an export takes the spec's
candidate features; ``candidate_inputs`` builds them from feed columns for a
given day (item age is measured to it), so the trainer's index and the
server's index embed a catalog the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recloop import storage
from recloop.features import logs
from recloop.features.spec import features_for

ITEM_FIELDS = ("item_id", "category", "creator", "duration_min", "language", "release_date")
QUERY_INPUTS = tuple(f.name for f in features_for(tower="query"))
CANDIDATE_INPUTS = tuple(f.name for f in features_for(tower="candidate"))
_DTYPES = {"duration_min": np.float32, "release_day": np.int64}


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
    """Feed rows as columns: the feed fields but ``release_date``, plus ``release_day`` (date ordinal).

    Raises:
      ValueError: naming the item and the missing or unreadable field.
    """
    cols: dict[str, list[Any]] = {name: [] for name in (*ITEM_FIELDS[:-1], "release_day")}
    for item in items:
        try:
            for name in ITEM_FIELDS[:-1]:
                cols[name].append(item[name])
            cols["release_day"].append(dt.date.fromisoformat(item["release_date"]).toordinal())
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"catalog item {item.get('item_id')!r}: bad or missing field {e}") from None
    return {name: np.array(values, dtype=_DTYPES.get(name, str)) for name, values in cols.items()}


def candidate_inputs(items: Mapping[str, np.ndarray], day: dt.date | np.ndarray) -> dict[str, np.ndarray]:
    """The candidate tower's inputs for item columns on ``day`` (age in days, 0 before release).

    ``day`` is one date, or one date ordinal per item row (items shown on different days).
    """
    ordinal = day.toordinal() if isinstance(day, dt.date) else day
    age = np.maximum(ordinal - items["release_day"], 0).astype(np.int64)
    return {n: items[n] for n in CANDIDATE_INPUTS if n != "age_days"} | {"age_days": age}


def embed(signature: Any, inputs: Mapping[str, np.ndarray], batch: int = 8192) -> np.ndarray:
    """Runs a tower signature (raw features -> ``embedding``) over numpy columns in batches -> (n, dim)."""
    import tensorflow as tf

    n = len(next(iter(inputs.values())))
    parts = [signature(**{k: tf.constant(v[i : i + batch]) for k, v in inputs.items()})["embedding"].numpy()
             for i in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
