"""What the heuristics read of the declared features: the column or value behind each role.

The heuristics (``baselines``: popular in context, the member's usual; the server's
rows) are written for an hour, a platform, an item's category, creator and
duration, and a member's preferred category. The declaration's ``roles`` name the
feature playing each part (``spec.role``); where none does, these give a constant
that switches the part off: hour -1 (one daypart), platform "" (one platform),
category and creator "" (nothing to match), duration -1 (no quick item),
preferred category None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recloop.features.spec import Role, role

ABSENT: dict[Role, Any] = {"hour": -1, "platform": "", "category": "", "creator": "", "duration": -1.0,
                           "preferred_category": None}


def column(name: Role, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The column of the feature playing ``name`` among ``columns`` (``n`` rows), or the constant for none."""
    feature = role(name)
    return columns[feature] if feature is not None else np.full(n, ABSENT[name])


def value(name: Role, record: Mapping[str, Any]) -> Any:
    """The value of the feature playing ``name`` in a member or context record; the constant when there is
    no such feature or the record leaves it out (a preferred category left out is None)."""
    feature = role(name)
    found = record.get(feature) if feature is not None else None
    return ABSENT[name] if found is None else found
