"""The serving tables of an export: popularity in context and member profiles.

The server's rows and fallbacks read them (docs/architecture.md, "State and storage"); they come from
the same training clicks as the models and use the heuristics of ``baselines/``,
so "popular" and "usual" mean the same in training, evaluation and serving.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from typing import Any

from recloop.baselines import MemberUsual
from recloop.features import logs, roles
from recloop.trainer.data import Examples
from recloop.trainer.scorers import click_weights, clicked, popularity

POPULARITY = "popularity.json"
PROFILES = "profiles.json.gz"


def member_profiles(train: Examples, day: dt.date, half_life_days: float = 7.0) -> MemberUsual:
    """Every clicking member's usual category/creator, categories tried and recent items (the declared
    features playing those roles; "" for a role nobody plays)."""
    train = clicked(train)
    n = len(train)
    return MemberUsual.fit(train["member_id"], train["item_id"], roles.column("category", train.columns, n),
                           roles.column("creator", train.columns, n), train["ts"],
                           click_weights(train, day, half_life_days))


def write_tables(train: Examples, day: dt.date, folder: str) -> dict[str, Any]:
    """Writes ``popularity.json`` and ``profiles.json.gz`` under ``folder``; returns their sizes."""
    table = popularity(train, day).to_dict()
    profiles = {m: {"usual_category": p.usual_category, "usual_creator": p.usual_creator,
                    "categories_tried": sorted(p.categories_tried), "recent_items": list(p.recent_items)}
                for m, p in sorted(member_profiles(train, day).profiles.items())}
    logs.write_json(posixpath.join(folder, POPULARITY), {"day": day.isoformat(), "contexts": table})
    logs.write_json(posixpath.join(folder, PROFILES), {"day": day.isoformat(), "members": profiles})
    return {"popularity_contexts": len(table), "member_profiles": len(profiles)}
