"""The serving tables of an export: popularity in context and member profiles.

The server's rows and fallbacks read them (DESIGN.md, "State"); they come from
the same training clicks as the models and use the heuristics of ``baselines/``,
so "popular" and "usual" mean the same in training, evaluation and serving.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import posixpath
from typing import Any

import fsspec

from recloop.baselines import MemberUsual, decay_weights
from recloop.trainer.data import Examples
from recloop.trainer.scorers import DAY_SECONDS, popularity

POPULARITY = "popularity.json"
PROFILES = "profiles.json.gz"


def member_profiles(train: Examples, day: dt.date, half_life_days: float = 7.0) -> MemberUsual:
    """Every clicking member's usual category/creator, categories tried and recent items."""
    end = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    weights = decay_weights(train["label_click"], (end - train["ts"]) / DAY_SECONDS, half_life_days)
    return MemberUsual.fit(train["member_id"], train["item_id"], train["category"], train["creator"],
                           train["ts"], weights)


def write_tables(train: Examples, day: dt.date, folder: str) -> dict[str, Any]:
    """Writes ``popularity.json`` and ``profiles.json.gz`` under ``folder``; returns their sizes."""
    table = popularity(train, day).to_dict()
    profiles = member_profiles(train, day)
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    with fs.open(posixpath.join(root, POPULARITY), "w") as f:
        json.dump({"day": day.isoformat(), "contexts": table}, f)
    rows = {m: {"usual_category": p.usual_category, "usual_creator": p.usual_creator,
                "categories_tried": sorted(p.categories_tried), "recent_items": list(p.recent_items)}
            for m, p in sorted(profiles.profiles.items())}
    with fs.open(posixpath.join(root, PROFILES), "wb") as raw, gzip.open(raw, "wt") as f:
        json.dump({"day": day.isoformat(), "members": rows}, f)
    return {"popularity_contexts": len(table), "member_profiles": len(rows)}
