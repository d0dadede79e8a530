"""The member's usual: what a member clicked recently, summarised per member.

Gives the "For your usual" row its category and creator, the "Something new" row
the categories already tried, and models the member's recent items. A member
with no clicks has no profile: callers fall back to the declared
``preferred_category`` and then to popularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RECENT_ITEMS = 20


def decay_weights(clicked: Sequence[float], age_days: Sequence[float], half_life_days: float = 7.0) -> np.ndarray:
    """Click weights that halve every ``half_life_days`` (age measured back from "now")."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    clicked = np.asarray(clicked, dtype=float)
    age = np.maximum(np.asarray(age_days, dtype=float), 0.0)
    return clicked * np.power(0.5, age / half_life_days)


@dataclass
class MemberProfile:
    """One member's usual, from decay-weighted clicks."""

    usual_category: str
    usual_creator: str
    categories_tried: frozenset[str]
    recent_items: tuple[str, ...] = field(default_factory=tuple)  # newest first


class MemberUsual:
    """Profiles of every member with at least one click."""

    def __init__(self, profiles: dict[str, MemberProfile]):
        self.profiles = profiles

    @classmethod
    def fit(
        cls,
        member_id: Sequence[str],
        item_id: Sequence[str],
        category: Sequence[str],
        creator: Sequence[str],
        ts: Sequence[int],
        weight: Sequence[float],
    ) -> MemberUsual:
        """Builds profiles from impressions; only those with ``weight > 0`` (clicks) count.

        Args:
          member_id, item_id, category, creator: as logged, one per impression.
          ts: unix seconds of the request, for "recent".
          weight: decayed click weight (``decay_weights``).
        """
        cats: dict[str, dict[str, float]] = {}
        creators: dict[str, dict[str, float]] = {}
        recent: dict[str, list[tuple[int, str]]] = {}
        for m, i, cat, cre, t, w in zip(member_id, item_id, category, creator, ts, weight, strict=True):
            if not w:
                continue
            m = str(m)
            c = cats.setdefault(m, {})
            c[str(cat)] = c.get(str(cat), 0.0) + float(w)
            r = creators.setdefault(m, {})
            r[str(cre)] = r.get(str(cre), 0.0) + float(w)
            recent.setdefault(m, []).append((int(t), str(i)))
        profiles = {}
        for m, c in cats.items():
            items = [i for _, i in sorted(recent[m], reverse=True)]
            profiles[m] = MemberProfile(
                usual_category=max(sorted(c), key=c.__getitem__),  # sorted: ties break by name
                usual_creator=max(sorted(creators[m]), key=creators[m].__getitem__),
                categories_tried=frozenset(c),
                recent_items=tuple(dict.fromkeys(items))[:RECENT_ITEMS],
            )
        return cls(profiles)

    def get(self, member_id: str) -> MemberProfile | None:
        """The member's profile, or None for a member without clicks."""
        return self.profiles.get(member_id)

    def __len__(self) -> int:
        return len(self.profiles)
