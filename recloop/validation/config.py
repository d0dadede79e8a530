"""Validation thresholds: one file, sensible defaults from the feature spec, per-feature overrides.

Categorical features are compared with the L-infinity (Chebyshev) distance and
numeric ones with the Jensen-Shannon divergence: TFDV's L-infinity silently
measures nothing on a numeric feature (docs/stack.md). Labels describe member
behaviour, not the serving path, so their drift is warn-only by default.
"""

from __future__ import annotations

import json
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from recloop import storage
from recloop.features.examples import LABEL_COLUMNS
from recloop.features.spec import ACTIVE, FEATURES, Feature

# RATE_CHANGE: |rate now / rate before - 1| of a 0/1 label (JS divergence of a rare binary outcome is tiny
# whatever happens to it; a change in the click rate is what on-call needs to see)
Measure = Literal["L_INFTY", "JENSEN_SHANNON_DIVERGENCE", "RATE_CHANGE"]


class FeatureRule(BaseModel):
    """How one feature is compared. ``None`` thresholds switch a check off."""

    model_config = ConfigDict(extra="forbid")

    measure: Measure
    skew: float | None = Field(default=None, gt=0)
    drift: float | None = Field(default=None, gt=0)
    warn_only: bool = False
    distance_warn_only: bool = False  # skew/drift distances warn; schema anomalies still block
    max_null_share: float | None = Field(default=None, ge=0, le=1)  # nullable features only


class ValidationConfig(BaseModel):
    """Thresholds for every checked feature; build with ``load_config``."""

    model_config = ConfigDict(extra="forbid")

    categorical_threshold: float = Field(default=0.1, gt=0)
    numeric_threshold: float = Field(default=0.1, gt=0)
    rate_change_threshold: float = Field(default=0.15, gt=0)
    max_null_share: float = Field(default=0.5, ge=0, le=1)
    max_catalog_mismatch_share: float = Field(default=0.01, ge=0, le=1)
    # how the logs arrived (delivery.py): a share of events, requests or impressions ingest read (duplicates,
    # events past the attribution window, of unknown requests) moving by more than this blocks; events per
    # impression moving by more than this ratio warns (a new model moves it with its click rate)
    delivery_share_change: float = Field(default=0.02, gt=0, le=1)
    delivery_rate_change: float = Field(default=0.5, gt=0)
    # and a bucket of the used clicks' delays after their request moving by more than this blocks (a tiny
    # week has ~1,500 clicks: a share's week-to-week noise is ~0.02, so the threshold sits at 5 such errors)
    delivery_delay_change: float = Field(default=0.1, gt=0, le=1)
    # what each serving version logged (logged.py), against the same version's previous span: a share of
    # explored slots or of propensities of 1, or the mean propensity, moving by more than this blocks
    logged_change: float = Field(default=0.05, gt=0, le=1)
    # and its mean score moving by more than this warns (clean weeks of the tuning seeds moved it up to 0.17)
    logged_score_change: float = Field(default=0.25, gt=0, le=1)
    features: dict[str, FeatureRule] = {}

    def rule(self, name: str) -> FeatureRule:
        return self.features[name]


def default_rules(config: ValidationConfig) -> dict[str, FeatureRule]:
    """A rule per model feature and label, from the spec (overrides applied by ``load_config``)."""
    rules = {}
    for f in FEATURES:
        categorical = f.kind == "categorical"
        threshold = config.categorical_threshold if categorical else config.numeric_threshold
        # position is fixed at serving; a day's traffic has one day_of_week (declared skew: false), so only
        # drift can compare it
        no_skew = f.training_only or not f.skew
        # which items were shown, and where, is the serving policy's choice: a new model or page layout
        # moves the mix of categories, ages and positions of impressions legitimately, so those distances
        # warn; a renamed or unknown value, or a unit bug (a value outside the domain), still blocks (schema)
        chosen = f.group in ("item", "impression")
        rules[f.name] = FeatureRule(measure="L_INFTY" if categorical else "JENSEN_SHANNON_DIVERGENCE",
                                    skew=None if no_skew else threshold, drift=threshold, distance_warn_only=chosen,
                                    max_null_share=config.max_null_share if f.nullable and not _never(f) else None)
    for label in LABEL_COLUMNS:
        rules[label] = FeatureRule(measure="RATE_CHANGE", drift=config.rate_change_threshold, warn_only=True)
    return rules


def _never(f: Feature) -> bool:
    """A feature the declaration says examples may all lack: an item's age, under ``release_dates: false``."""
    return f.name == "age_days" and not ACTIVE.release_dates


def load_config(path: str | None = None) -> ValidationConfig:
    """The thresholds: defaults, then a JSON or YAML file's top-level values and per-feature overrides.

    Raises:
      ValueError: naming the file and the field, for an unknown feature or a bad value.
    """
    raw: dict = {}
    if path:
        text = storage.read_text(path)  # any URI: a config on the bucket beside the logs
        raw = json.loads(text) if path.endswith(".json") else (yaml.safe_load(text) or {})
    overrides = raw.pop("features", {}) or {}
    config = ValidationConfig.model_validate(raw)
    rules = default_rules(config)
    for name, override in overrides.items():
        if name not in rules:
            raise ValueError(f"{path}: features.{name} is not a checked feature; known: {', '.join(rules)}")
        rules[name] = FeatureRule.model_validate(rules[name].model_dump() | override)
    return config.model_copy(update={"features": rules})
