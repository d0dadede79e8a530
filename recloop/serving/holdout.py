"""The online holdout: which members the server always answers with the heuristic, never the model.

A fixed share of members is a control group measured in the same weeks as the
model. Membership is a keyed hash of the member id, so every server process and
restart agrees on it without shared state, and a larger share keeps the members
of a smaller one.
"""

from __future__ import annotations

import hashlib

HOLDOUT_KEY = b"recloop-holdout"  # fixed: the same members stay held out across restarts and versions


def holdout_draw(member_id: str) -> float:
    """A member's fixed uniform draw in [0, 1): a keyed hash of the id, the same in every process."""
    digest = hashlib.blake2b(member_id.encode("utf-8"), digest_size=8, key=HOLDOUT_KEY).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_holdout(member_id: str, share: float) -> bool:
    """Whether a member belongs to the online holdout of ``share`` (0 <= share < 1) of all members."""
    return share > 0 and holdout_draw(member_id) < share
