"""The feature spec: every feature the models see, its type, domain and towers.

One table, read by the simulator (what to generate), ingest (what an example
holds), validation (the seed of the TFDV schema), the trainer (which tower takes
which input) and the server (what a request must carry). A domain here is the
*expected* one: records accept out-of-vocabulary values and out-of-range numbers
that are structurally valid, because catching those is validation's job, not a
parse error (docs/architecture.md, "Serving": unknown categorical values are served).

The member, context and item features come from the feature declaration
(``declaration``): ``RECLOOP_FEATURES`` names a YAML file (any URI), or the
package's own ``features.yaml`` is used. It is read once, when this module is
imported, and tables across recloop (``examples.COLUMNS``, the record types, the
towers' inputs) are built from it then: a declaration is per process. Ingest
outputs and exports record the one they were made with (``recorded``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from recloop.features import declaration

Group = Literal["member", "context", "item", "impression"]
Kind = Literal["categorical", "numeric"]
Tower = Literal["query", "candidate", "ranking"]
Role = Literal["hour", "platform", "category", "creator", "duration", "preferred_category"]

ENV = "RECLOOP_FEATURES"
SOURCE = os.environ.get(ENV) or None  # None: the package's own declaration
DEFAULT = declaration.load(None)
ACTIVE = declaration.load(SOURCE) if SOURCE else DEFAULT


def is_default() -> bool:
    """Whether the active declaration is the package's own (descriptions aside), the one the simulator plays."""
    return ACTIVE.comparable() == DEFAULT.comparable()


def _vocabulary(name: str) -> tuple[str, ...]:
    return next(f.vocabulary for f in DEFAULT.features if f.name == name) or ()


# The default declaration's vocabularies: what the simulator generates (it runs with the default only).
PLATFORMS = _vocabulary("platform")
COUNTRIES = _vocabulary("country")
CATEGORIES = _vocabulary("category")
LANGUAGES = _vocabulary("language")

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
      buckets: how the models encode a numeric feature: ``N`` quantile buckets of
        the training data, or ``per_value`` (a slot per integer in ``value_range``).
      strictly_positive: the log contract refuses 0 (every number is >= 0: -1 means missing).
      skew: whether serving is compared with training (one day of traffic holds one day_of_week).
      max_length: a list-valued categorical feature holds up to this many values (newest first); None: one value.
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
    buckets: int | Literal["per_value"] | None = None
    strictly_positive: bool = False
    skew: bool = True
    max_length: int | None = None

    @property
    def is_list(self) -> bool:
        return self.max_length is not None


def _declared(d: declaration.Declared) -> Feature:
    dtype = declaration.DTYPES[d.dtype]
    value_range = (dtype(d.value_range[0]), dtype(d.value_range[1])) if d.value_range else None
    return Feature(d.name, d.group, d.kind, dtype, d.towers, d.description,
                   vocabulary=d.vocabulary, value_range=value_range, nullable=d.nullable, buckets=d.buckets,
                   strictly_positive=d.strictly_positive, skew=d.skew, max_length=d.max_length)


def features_of(decl: declaration.Declaration) -> tuple[Feature, ...]:
    """The structural features around the declared ones, in the order of model inputs."""
    declared = {group: tuple(_declared(d) for d in decl.features if d.group == group)
                for group in ("member", "context", "item")}
    return (
        # member: static features the server receives with every request
        Feature("member_id", "member", "categorical", str, ("query", "ranking"),
                "member id; hashed with OOV buckets so new members get a vector"),
        *declared["member"],
        # context: per request, so inference is online
        *declared["context"],
        # item: metadata as served, so an item released today still gets an embedding
        Feature("item_id", "item", "categorical", str, ("candidate", "ranking"),
                "item id; hashed with OOV buckets so new items get a vector"),
        *declared["item"],
        Feature("age_days", "item", "numeric", int, ("candidate", "ranking") if decl.release_dates else (),
                "days since release at request time (missing for an item without a release_date)",
                value_range=(0, 3650), nullable=True, buckets=declaration.NUMERIC_BUCKETS),
        # impression: where it was shown; position absorbs position bias in training only
        Feature("position", "impression", "numeric", int, ("ranking",),
                "0-based slot on the page", value_range=(0, 49), training_only=True),
    )


FEATURES: tuple[Feature, ...] = features_of(ACTIVE)
ROLES: dict[Role, str | None] = ACTIVE.roles.model_dump()  # type: ignore[assignment]

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


def role(name: Role) -> str | None:
    """The declared feature a heuristic reads for ``name`` (``declaration.Roles``), or None when undeclared."""
    return ROLES[name]
