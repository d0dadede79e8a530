"""The feature spec: every feature the models see, its type, domain and towers.

One table, read by the simulator (what to generate), ingest (what an example
holds), validation (the seed of the TFDV schema), the trainer (which tower takes
which input) and the server (what a request must carry). A domain here is the
*expected* one: records accept out-of-vocabulary values and out-of-range numbers
that are structurally valid, because catching those is validation's job, not a
parse error (docs/architecture.md, "Serving": unknown categorical values are served).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Group = Literal["member", "context", "item", "impression"]
Kind = Literal["categorical", "numeric"]
Tower = Literal["query", "candidate", "ranking"]

PLATFORMS = ("ios", "android", "web", "tv")
COUNTRIES = ("US", "GB", "DE", "ES", "FR", "BR", "MX", "IN")
CATEGORIES = ("yoga", "hiit", "strength", "running", "cycling", "meditation", "dance", "stretching")
LANGUAGES = ("en", "es", "de", "fr", "pt")

# The labels ingest derives per impression, one model head each.
LABELS = ("click", "complete", "like")


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
      name: the key in the log record's group object and in the tf.Example.
      group: where it lives in the request record (``member``, ``context``,
        ``item`` = ``impressions[].item``, ``impression`` = ``impressions[]``).
      kind: ``categorical`` (string or id) or ``numeric``.
      dtype: ``str``, ``int`` or ``float``; the tf.Example list type follows it.
      towers: which models read it: retrieval ``query`` / ``candidate`` tower, ``ranking``.
      vocabulary: the expected values of a categorical feature; ``None`` for an
        open vocabulary (ids), hashed or looked up with OOV buckets by the model.
      value_range: inclusive expected ``(min, max)`` of a numeric feature.
      nullable: whether a record may leave it out (``null``).
      training_only: an input the server fixes to a constant (position bias).
    """

    name: str
    group: Group
    kind: Kind
    dtype: type
    towers: tuple[Tower, ...]
    description: str
    vocabulary: tuple[str, ...] | None = None
    value_range: tuple[float, float] | None = None
    nullable: bool = False
    training_only: bool = False


FEATURES: tuple[Feature, ...] = (
    # member: static features the server receives with every request
    Feature("member_id", "member", "categorical", str, ("query", "ranking"),
            "member id; hashed with OOV buckets so new members get a vector"),
    Feature("tenure_days", "member", "numeric", int, ("query", "ranking"),
            "days since the member joined", value_range=(0, 3650), nullable=True),
    Feature("country", "member", "categorical", str, ("query", "ranking"),
            "member's country", vocabulary=COUNTRIES, nullable=True),
    Feature("preferred_category", "member", "categorical", str, ("query", "ranking"),
            "category the member chose at sign-up", vocabulary=CATEGORIES, nullable=True),
    # context: per request, so inference is online
    Feature("hour_of_day", "context", "numeric", int, ("query", "ranking"),
            "hour of the request, 0-23 (UTC in the simulator)", value_range=(0, 23)),
    Feature("day_of_week", "context", "numeric", int, ("query", "ranking"),
            "day of the request, 0 = Monday", value_range=(0, 6)),
    Feature("platform", "context", "categorical", str, ("query", "ranking"),
            "client platform", vocabulary=PLATFORMS),
    # item: metadata as served, so an item released today still gets an embedding
    Feature("item_id", "item", "categorical", str, ("candidate", "ranking"),
            "item id; hashed with OOV buckets so new items get a vector"),
    Feature("category", "item", "categorical", str, ("candidate", "ranking"),
            "item category", vocabulary=CATEGORIES),
    Feature("creator", "item", "categorical", str, ("candidate", "ranking"),
            "creator (instructor) id"),
    Feature("duration_min", "item", "numeric", float, ("candidate", "ranking"),
            "length in minutes", value_range=(1, 180)),
    Feature("language", "item", "categorical", str, ("candidate", "ranking"),
            "spoken language", vocabulary=LANGUAGES),
    Feature("age_days", "item", "numeric", int, ("candidate", "ranking"),
            "days since release at request time", value_range=(0, 3650)),
    # impression: where it was shown; position absorbs position bias in training only
    Feature("position", "impression", "numeric", int, ("ranking",),
            "0-based slot on the page", value_range=(0, 49), training_only=True),
)

_BY_NAME = {f.name: f for f in FEATURES}


def feature(name: str) -> Feature:
    """Returns the spec of one feature.

    Raises:
      KeyError: naming the unknown feature and the known ones.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(_BY_NAME)}") from None


def features_for(*, tower: Tower | None = None, group: Group | None = None) -> tuple[Feature, ...]:
    """The features a tower reads and/or a record group holds, in spec order."""
    return tuple(
        f for f in FEATURES if (tower is None or tower in f.towers) and (group is None or f.group == group)
    )


# What a model input holds when a nullable feature is left out: the trainer
# fills examples with it and the server fills requests with it, so both feed the
# exported models the same tensor for "missing".
_MISSING: dict[type, str | int | float] = {str: "", int: -1, float: -1.0}


def missing_value(dtype: type) -> str | int | float:
    """The model-input value of a missing feature of this dtype (``""``, ``-1``, ``-1.0``)."""
    return _MISSING[dtype]
