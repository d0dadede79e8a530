"""The evaluation gate's configuration: which checks a candidate must pass, and the file they are read from.

``recloop evaluate --config`` (and the pipeline's evaluate step) reads a YAML or
JSON file into a ``GateConfig``; ``gate.judge`` applies it to the measured
metrics. Without a file, ``DEFAULT_THRESHOLDS`` and the off-policy defaults hold.

Kinds of check (``GateConfig.thresholds``; each names a metric and a slice):

- ``min``: an absolute floor (AUC(click) >= 0.55);
- ``min_vs_popularity``: at least this multiple of the popularity baseline on
  the same split, a floor that holds whatever the catalog size;
- ``min_vs_recent_popularity``: the same against recent popularity (clicks in
  the window the trainer chose on its validation split), the heuristic that
  beats plain popularity on real logs where tastes and the catalog move;
- ``max_drop``: not worse than production by more than this, in the metric's
  units; skipped on the first run, when nothing is in production;
- ``offpolicy``: the candidate's estimated online click rate (SNIPS,
  ``offpolicy.py``) not below the logged rate by more than a share, used only
  when the effective sample size is large enough.

Every figure comes with its standard error, and the checks use it at
``GateConfig.confidence``: a floor (``min``, ``min_vs_popularity``) passes only
when the candidate's lower bound ``value - z * se`` clears it, so a figure that
clears it by noise does not bless; ``max_drop`` fails only when the candidate is
worse than production by more than the allowed drop with that confidence,
``(candidate - production) + z * se_d < -max_drop``, where ``se_d`` is the
difference's standard error paired by request (both scored on the same eval
requests; ``sqrt(se_c**2 + se_p**2)`` for a figure without a paired estimate).

A slice with less support (positives, impressions, requests with a click) than
a check's ``min_support`` skips that check and says so; a skipped check never
blesses. ``min_support`` also keeps the standard errors honest: they are large-
sample figures over requests.

Two default sets of checks: ``DEFAULT_THRESHOLDS`` for logged pages (impressions
with and without clicks) and ``INTERACTION_THRESHOLDS`` for interaction logs,
where (nearly) every logged impression is a positive (one request per
interaction, as data brought from elsewhere usually is; ``fit.interaction_logs``): there AUC and the debiased metrics are
undefined, and recall of the logged positives over the whole catalog is what
the data can judge. ``GateConfig.thresholds`` left out picks by the eval data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recloop import storage


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """One metric on one slice, with any of the three bounds."""

    metric: str  # recall@K, recall@K_explored, auc_<head>[_explored], ndcg@N[_debiased], map@N
    slice: str = "overall"  # overall, member=new|active, item=new|established, platform=<p>
    min: float | None = None
    min_vs_popularity: Annotated[float, Field(gt=0)] | None = None
    min_vs_recent_popularity: Annotated[float, Field(gt=0)] | None = None
    max_drop: Annotated[float, Field(ge=0)] | None = None
    min_support: Annotated[int, Field(ge=0)] = 0


class OffPolicyConfig(_Strict):
    enabled: bool = True
    # the serving exploration the candidate would run with (serving.rows.RowsConfig; a test keeps the defaults equal)
    temperature: Annotated[float, Field(ge=0)] = 0.0
    catalog_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_ess: Annotated[float, Field(ge=1)] = 1000.0
    # sum(w) / n is 1 in expectation; far from 1, the logs rarely hold what the candidate would show (its
    # greedy picks were almost never explored) and the Kish ESS overstates what the figure is worth
    max_mean_weight_error: Annotated[float, Field(gt=0)] = 0.25
    max_relative_drop: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_requests: Annotated[int, Field(gt=0)] = 20_000  # eval requests replayed (a stable sample)
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95


# Explored slots are uniform over everything their row admits in the catalog (not the logging model's pool),
# so explored recall does not favour the model that logged the span; it is still a small sample (a few
# percent of the slots), so it is checked against the heuristics (a floor). It is not compared with
# production, nor is explored AUC: in the closed loop, a gate that required them not to drop (paired by
# request) held back a fresh candidate whose pages then beat the older production model's in the same weeks
# of the same world (bench/README.md, "The gate, judged in the closed loop"; bench/gate_explored.yaml). How
# a model orders random catalog items is not what a page needs; the re-ranking metrics over the logged
# impressions (AUC, debiased NDCG) carry the comparison with production.
DEFAULT_THRESHOLDS = (
    Threshold(metric="auc_click", min=0.55, max_drop=0.01, min_support=1000),
    Threshold(metric="ndcg@10_debiased", min_vs_popularity=1.0, max_drop=0.01, min_support=200),
    Threshold(metric="recall@100_explored", min_vs_popularity=0.8, min_vs_recent_popularity=0.8, min_support=200),
    *(Threshold(metric=m, slice=s, max_drop=0.02, min_support=n)
      for s in ("member=new", "item=new") for m, n in (("auc_click", 1000), ("ndcg@10_debiased", 200))),
)


# Interaction logs: every impression is a positive, so the checks are on logged recall over the whole catalog
# (a positive in the top K of every item), against both heuristics and production.
INTERACTION_THRESHOLDS = (
    Threshold(metric="recall@100", min_vs_popularity=1.0, min_vs_recent_popularity=1.0, max_drop=0.01,
              min_support=200),
    Threshold(metric="recall@10", max_drop=0.01, min_support=200),
    Threshold(metric="recall@100", slice="member=new", max_drop=0.02, min_support=200),
)


class GateConfig(_Strict):
    """The gate's checks; ``recloop evaluate --config`` reads it from YAML or JSON."""

    # None: DEFAULT_THRESHOLDS for logged pages, INTERACTION_THRESHOLDS for interaction logs
    thresholds: tuple[Threshold, ...] | None = None
    offpolicy: OffPolicyConfig = OffPolicyConfig()
    # two-sided confidence of the threshold checks' intervals (0.95: z = 1.96)
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95


def thresholds_for(config: GateConfig, interaction_logs: bool) -> tuple[Threshold, ...]:
    """The checks a gate applies: the configured ones, else the defaults for the kind of logs."""
    if config.thresholds is not None:
        return config.thresholds
    return INTERACTION_THRESHOLDS if interaction_logs else DEFAULT_THRESHOLDS


class GateConfigError(ValueError):
    """A gate config file that cannot be read; the message names the file and the field."""


def load_gate_config(path: str | Path | None) -> GateConfig:
    """Reads a YAML/JSON gate config (None: the defaults).

    Raises:
      GateConfigError: naming the file and each invalid field.
    """
    if path is None:
        return GateConfig()
    try:
        data = yaml.safe_load(storage.read_text(str(path))) or {}  # any URI
        return GateConfig.model_validate(data)
    except yaml.YAMLError as e:
        raise GateConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise GateConfigError(f"{path}: invalid gate config: {fields}") from None
