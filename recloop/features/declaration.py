"""The feature declaration: a YAML file naming the member, context and item features the models see.

recloop ships one (``features.yaml`` beside this module: the fitness platform the
simulator plays); a user with other logs declares their own and names it with
``RECLOOP_FEATURES`` (``spec`` reads it once, at import). What is fixed stays in
code: ``member_id``, ``item_id``, an impression's ``position`` and an item's
``release_date`` (from which ``age_days`` is measured). ``roles`` tell the
heuristics (popular in context, the member's usual, the rows) which declared
feature plays which part; a role left out switches that part of a heuristic off.
"""

from __future__ import annotations

import importlib.resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT = "features.yaml"  # the package's own declaration, and the file name it travels under
STRUCTURAL = ("member_id", "item_id", "position", "release_date", "age_days")
DTYPES: dict[str, type] = {"str": str, "int": int, "float": float}
NUMERIC_BUCKETS = 10  # quantile buckets of a numeric feature that does not say


class DeclarationError(ValueError):
    """A declaration that does not validate; the message names the file, the feature and the field."""


class Declared(BaseModel):
    """One declared feature (``spec.Feature`` documents each attribute)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    group: Literal["member", "context", "item"]
    kind: Literal["categorical", "numeric"]
    dtype: Literal["str", "int", "float"]
    towers: tuple[Literal["query", "candidate", "ranking"], ...]
    description: str = ""
    vocabulary: tuple[str, ...] | None = None
    value_range: tuple[float, float] | None = None
    nullable: bool = False
    # numeric: ``N`` quantile buckets learned from the training data, or ``per_value``: one slot per integer
    buckets: int | Literal["per_value"] | None = Field(default=None, union_mode="left_to_right")
    strictly_positive: bool = False  # numeric: the contract refuses 0 (every number must be >= 0: -1 is "missing")
    skew: bool = True  # False: one day of serving holds one value (day_of_week), so only drift can compare it
    # categorical member/context only: a list of up to max_length values, newest first (a member's recent items),
    # read by the models as the mean of its values' embeddings; an empty list is "none yet"
    max_length: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _default_buckets(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "numeric" and data.get("buckets") is None:
            return {**data, "buckets": NUMERIC_BUCKETS}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Declared:
        if self.name in STRUCTURAL:
            raise ValueError(f"name: {self.name!r} is fixed by recloop ({', '.join(STRUCTURAL)}); leave it out")
        wrong_tower = {"member": "candidate", "context": "candidate", "item": "query"}[self.group]
        if wrong_tower in self.towers:
            raise ValueError(f"towers: a {self.group} feature cannot feed the {wrong_tower} tower")
        if self.kind == "categorical":
            if self.dtype != "str":
                raise ValueError(f"dtype: a categorical feature is a str (got {self.dtype}); an integer code "
                                 "is declared as str, or numeric with buckets: per_value")
            for field in ("value_range", "buckets"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field}: only a numeric feature has one")
            if self.strictly_positive:
                raise ValueError("strictly_positive: only a numeric feature has one")
            if self.max_length is not None and self.group == "item":
                raise ValueError("max_length: a list is a member or context feature (an item's is not supported)")
            return self
        if self.dtype == "str":
            raise ValueError("dtype: a numeric feature is an int or a float, got str")
        if self.vocabulary is not None:
            raise ValueError("vocabulary: only a categorical feature has one")
        if self.max_length is not None:
            raise ValueError("max_length: only a categorical feature can be a list")
        if self.value_range is not None and not 0 <= self.value_range[0] <= self.value_range[1]:
            raise ValueError(f"value_range: expected [min, max] with 0 <= min <= max, got {list(self.value_range)}")
        if self.buckets == "per_value" and (self.dtype != "int" or self.value_range is None):
            raise ValueError("buckets: per_value needs an int feature with a value_range (a slot per value in it)")
        if isinstance(self.buckets, int) and self.buckets < 1:
            raise ValueError(f"buckets: expected a number of quantile buckets >= 1 or per_value, got {self.buckets}")
        return self


class Roles(BaseModel):
    """Which declared feature each heuristic reads; None switches that part off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hour: str | None = None  # context, int 0-23: popular in context by daypart
    platform: str | None = None  # context, categorical: popular in context by platform, evaluation slices
    category: str | None = None  # item, categorical: the "usual" and "something new" rows, member profiles
    creator: str | None = None  # item, categorical: the "usual" row, member profiles
    duration: str | None = None  # item, numeric minutes: the "quick" row
    preferred_category: str | None = None  # member, categorical: the "usual" row of a member without clicks


# what each role needs of its feature: group, kind, and whether it may be missing
_ROLE_NEEDS = {"hour": ("context", "numeric", False), "platform": ("context", "categorical", True),
               "category": ("item", "categorical", True), "creator": ("item", "categorical", True),
               "duration": ("item", "numeric", True), "preferred_category": ("member", "categorical", True)}


class Declaration(BaseModel):
    """The whole file: the declared features, in order (the order of model inputs), and the roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[Declared, ...]
    roles: Roles = Roles()
    # false (data without release dates): no model reads age_days, and validation accepts it absent from every
    # example; a release date an item does have still keeps it off pages before that day and feeds "new" rows
    release_dates: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Declaration:
        by_name: dict[str, Declared] = {}
        for f in self.features:
            if f.name in by_name:
                raise ValueError(f"features: {f.name!r} is declared twice")
            by_name[f.name] = f
        for role, name in self.roles.model_dump().items():
            if name is None:
                continue
            group, kind, nullable = _ROLE_NEEDS[role]
            f = by_name.get(name)
            if (f is None or f.group != group or f.kind != kind or (f.nullable and not nullable)
                    or f.max_length is not None):
                raise ValueError(f"roles.{role}: expected a declared single-valued "
                                 f"{'' if nullable else 'non-nullable '}{kind} "
                                 f"{group} feature, got {name!r}")
            if role == "hour" and (f.dtype != "int" or f.value_range is None or f.value_range[1] > 23):
                raise ValueError(f"roles.hour: {name!r} must be an int with a value_range inside [0, 23]")
        return self

    def comparable(self) -> dict[str, Any]:
        """What two declarations must agree on to read each other's data and models: all but descriptions."""
        return self.model_dump(mode="json", exclude={"features": {"__all__": {"description"}}})

    def to_yaml(self) -> str:
        """The declaration as YAML, every attribute written out: what travels with data and models."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def parse(text: str, source: str) -> Declaration:
    """A declaration from YAML text.

    Raises:
      DeclarationError: naming ``source``, the feature and the field.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DeclarationError(f"{source}: not valid YAML: {e}") from None
    try:
        return Declaration.model_validate(raw)
    except ValidationError as e:
        raise DeclarationError(_message(e, raw, source)) from None


def _message(error: ValidationError, raw: Any, source: str) -> str:
    first = error.errors(include_url=False)[0]
    loc = list(first["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "features" and isinstance(loc[1], int):
        item = raw["features"][loc[1]] if isinstance(raw, dict) and isinstance(raw.get("features"), list) else None
        name = item.get("name") if isinstance(item, dict) else None
        where = f"feature {name!r} (features[{loc[1]}])" if name else f"features[{loc[1]}]"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    msg = first["msg"].removeprefix("Value error, ")
    got = f", got {first['input']!r}" if first["type"] not in ("missing", "value_error") and loc else ""
    parts = [p for p in (source, where, f"field '{field}'" if field else "", f"{msg}{got}") if p]
    more = f" (and {error.error_count() - 1} more error(s))" if error.error_count() > 1 else ""
    return ": ".join(parts) + more


def default_text() -> str:
    """The YAML of the package's own declaration."""
    return importlib.resources.files("recloop.features").joinpath(DEFAULT).read_text(encoding="utf-8")


def load(uri: str | None) -> Declaration:
    """The declaration at ``uri`` (a local path or any fsspec URI), or the package's own for None or "".

    Raises:
      DeclarationError: naming the file, the feature and the field; or the file cannot be read.
    """
    if not uri:
        return parse(default_text(), f"recloop/features/{DEFAULT}")
    from recloop import storage  # only for a declaration of one's own: reading the default needs no fsspec

    try:
        text = storage.read_text(uri)
    except (OSError, storage.StorageError) as e:
        raise DeclarationError(f"{uri}: cannot read the feature declaration: {e}") from None
    return parse(text, uri)
