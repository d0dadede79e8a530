"""Training configuration: one pydantic model, defaults that train a `small` week well.

Every field can be overridden from a YAML/JSON file (``recloop train --config``)
and the few that people change per run from the command line. The whole config
is recorded in the model card, so a run can be repeated from its card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recloop import storage
from recloop.features.spec import LABELS

Positive = Annotated[int, Field(gt=0)]
Rate = Annotated[float, Field(gt=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrievalConfig(_Strict):
    """The two-tower model (``towers.py``, ``retrieval.py``)."""

    positives: Literal["click", "start", "complete", "like"] = "click"
    # pointwise: sigmoid(a * q.c + b + position term) against positive / not over every logged impression,
    # what members do once shown an item. softmax: in-batch softmax over positives, which also learns what
    # the logging policy chose to show (bench/README.md, ablation). auto: pointwise when the impressions
    # are a logged page (most not clicked), softmax for interaction logs (most impressions positives, fit.py)
    loss: Literal["auto", "pointwise", "softmax"] = "auto"
    embedding_dim: Positive = 32
    hidden: Positive = 64
    epochs: Positive = 4
    batch_size: Positive = 512
    learning_rate: Rate = 0.005
    # log-Q: subtract log(sampling probability) from in-batch logits so popular
    # items are not pushed down for being frequent negatives
    log_q: bool = True
    # also divide by the item's share of impressions: the model then learns what
    # members click when shown an item, not what the logging policy chose to show
    exposure_correction: bool = False
    # inverse-propensity weights of positives, capped: clicks on explored slots
    # (shown uniformly) then count for what members like, not what the logging
    # policy chose to show; 1 = unweighted
    ips_cap: Annotated[float, Field(ge=1.0)] = 1.0
    # weight examples by recency: halved every N days before the newest training example (None = all alike);
    # tastes and what is popular move, and years-old interactions otherwise count as much as last week's
    recency_half_life_days: Annotated[float, Field(gt=0.0)] | None = None
    # softmax loss only: weight of the pointwise loss added to it (0 = softmax only)
    impression_loss_weight: Annotated[float, Field(ge=0.0)] = 0.0
    impression_batch_size: Positive = 4096
    temperature: Annotated[float, Field(gt=0.0)] | None = 0.1  # softmax temperature (None = 1)
    # L2-normalise both towers' outputs (cosine scores); None: with the softmax only, where cosine
    # scores over a temperature beat dot products on interaction logs (bench/README.md, real data)
    normalize: bool | None = None
    remove_accidental_hits: bool = True
    # members/items seen fewer times than this share OOV buckets (hashed)
    min_count: Positive = 1
    # L2 penalty on the member and item id embedding tables, against the mean loss per example (0 = none):
    # ids seen rarely stay near 0 and their items are scored by their features
    id_l2: Annotated[float, Field(ge=0.0)] = 2e-4
    # OOV buckets of the id lookups: 1 gives every new member (item) one shared, well-trained vector
    oov_buckets: Positive = 1
    candidates: Positive = 200  # what the index returns to ranking


class RankingConfig(_Strict):
    """The DCN-v2 multi-task ranker (``ranking.py``)."""

    cross: Literal["full", "low_rank"] = "low_rank"
    projection_dim: Positive = 16  # low-rank cross only
    cross_layers: Positive = 2
    deep: tuple[Positive, ...] = (128, 64)
    embedding_dim: Positive = 16
    epochs: Positive = 3
    batch_size: Positive = 1024
    learning_rate: Rate = 0.002
    loss_weights: dict[str, Annotated[float, Field(ge=0.0)]] = {"click": 1.0, "complete": 0.5, "like": 0.5}
    # the combined score is sum(w * p) / sum(w), so it stays in [0, 1]
    score_weights: dict[str, Annotated[float, Field(ge=0.0)]] = {"click": 0.6, "complete": 0.3, "like": 0.1}
    serving_position: Annotated[int, Field(ge=0)] = 0  # the position fed at serving and in evaluation

    @model_validator(mode="after")
    def _heads(self) -> RankingConfig:
        for name in ("loss_weights", "score_weights"):
            weights = getattr(self, name)
            if set(weights) != set(LABELS):
                raise ValueError(f"ranking.{name} needs one weight per head {list(LABELS)}, got {sorted(weights)}")
            if sum(weights.values()) <= 0:
                raise ValueError(f"ranking.{name} must not be all zero, got {weights}")
        return self


class TrainConfig(_Strict):
    """Everything a training run depends on besides its data."""

    seed: int = 0
    window_weeks: Positive | None = None  # newest N of the --data folders are used (None: all; drops are reported)
    retrieval: RetrievalConfig = RetrievalConfig()
    ranking: RankingConfig = RankingConfig()
    recall_ks: tuple[Positive, ...] = (10, 50, 100)
    eval_max_queries: Positive = 20_000  # retrieval eval positives scored against the catalog
    top_k: Positive = 10  # the list length of NDCG/MAP and of the popularity-bias figures
    # the evaluation set: None = the newest --data's eval split; N = every example in the last N days of the
    # data (all splits), so it is sized by the support it needs, not by one ingest (data.load)
    eval_days: Positive | None = None
    # the last N training days before the evaluation set, held out of `fit` for choices that must not see
    # the eval set (recent popularity's window; early stopping: the models fit the days before it) (0 = none:
    # the models fit every training day for all their epochs)
    validation_days: Annotated[int, Field(ge=0)] = 1
    # sparse logs: the validation split grows back a day at a time until it holds this many positives (at most
    # a quarter of the training examples), so an epoch or a window is not chosen on a few dozen clicks
    validation_min_positives: Annotated[int, Field(ge=0)] = 1000
    # examples in the shuffle buffer of each model's input (data streams from the files, never held whole:
    # this buffer is most of the memory training takes, whatever the window)
    shuffle_buffer: Positive = 100_000

    def fingerprint(self) -> str:
        """A short stable hash of the config, part of the model version."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names the field."""


def load_config(path: str | Path | None = None, **overrides: object) -> TrainConfig:
    """Reads a YAML/JSON config (any subset of fields) and applies dotted ``overrides``.

    ``overrides`` keys are field paths with ``__`` for nesting
    (``retrieval__epochs=3``); ``None`` values are ignored.

    Raises:
      ConfigError: naming the file and each invalid field.
    """
    data: dict = {}
    if path is not None:
        text = storage.read_text(str(path))  # any URI: a config on the bucket beside the logs
        try:
            data = (json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)) or {}
        except (ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        fields = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{where}invalid training config: {fields}") from None
