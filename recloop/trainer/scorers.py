"""Scorers the offline evaluation measures: an exported model and the popularity baselines.

The model is scored through its exported SavedModels, so what is measured is
what serving loads. The popularity-in-context baseline is the heuristic of
``baselines/`` (the bootstrap policy and the server's fallback) fitted on the
training clicks, decayed to the evaluation day. Recent popularity is plain click
counts over a window before the evaluation day, without context; the window is
chosen on the validation split (``choose_recent_window``), so a model is compared
with the best simple baseline, not with one picked after seeing the eval set.
"""

from __future__ import annotations

import datetime as dt
import math
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.baselines import PopularInContext, decay_weights
from recloop.features import roles
from recloop.features.catalog import candidate_inputs, embed
from recloop.features.spec import LABELS
from recloop.trainer import metrics
from recloop.trainer.data import Examples
from recloop.trainer.evaluate import RankingScorer, RetrievalScorer
from recloop.trainer.ranking import INPUTS
from recloop.trainer.towers import QUERY

DAY_SECONDS = 86_400
# days; None: all of the training data (the long ones matter on logs spanning years: bench/README.md, real data)
RECENT_WINDOWS: tuple[int | None, ...] = (1, 3, 7, 14, 28, 91, 182, 365, None)
RECENT_WINDOW_K = 100  # the window is chosen by logged recall@100 of the validation positives
RECENT_DEFAULT_WINDOW = 7  # without a validation split


def model_scorers(export_dir: str, day: dt.date) -> tuple[RetrievalScorer, RankingScorer]:
    """Scorers over an export: exact dot products of the saved towers, and the saved ranker.

    Args:
      export_dir: a trainer export (``query_tower/``, ``candidate_tower/``, ``ranking/``).
      day: the day candidates are embedded for (item age).
    """
    query = tf.saved_model.load(posixpath.join(export_dir, "query_tower")).signatures["serving_default"]
    candidate = tf.saved_model.load(posixpath.join(export_dir, "candidate_tower")).signatures["serving_default"]
    ranker = tf.saved_model.load(posixpath.join(export_dir, "ranking")).signatures["serving_default"]
    cache: dict[int, np.ndarray] = {}

    def retrieval(queries: Examples, catalog: Examples) -> np.ndarray:
        key = id(catalog)
        if key not in cache:  # one catalog per evaluation: embed it once
            cache.clear()
            cache[key] = embed(candidate, candidate_inputs(catalog.columns, day))
        return embed(query, queries.features(QUERY)) @ cache[key].T

    def ranking(rows: Examples) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {h: [] for h in (*LABELS, "score")}
        for lo in range(0, len(rows), 8192):
            batch = {n: tf.constant(rows[n][lo : lo + 8192]) for n in INPUTS}
            for name, value in ranker(**batch).items():
                parts[name].append(value.numpy())
        return {name: np.concatenate(v) if v else np.zeros(0, np.float32) for name, v in parts.items()}

    return retrieval, ranking


def click_weights(train: Examples, day: dt.date, half_life_days: float = 7.0) -> np.ndarray:
    """Each example's click, decayed from its request time to the start of ``day`` (0 without a click)."""
    end = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    return decay_weights(train["label_click"], (end - train["ts"]) / DAY_SECONDS, half_life_days)


def clicked(train: Examples) -> Examples:
    """The clicked impressions of ``train``: all that the click-weighted tables read (a copy of a tenth of the
    rows rather than weights and a Python pass over all of them, which a window of weeks makes costly)."""
    return train.take(np.flatnonzero(train["label_click"] != 0))


def popularity(train: Examples, day: dt.date, half_life_days: float = 7.0) -> PopularInContext:
    """The popularity-in-context table of the training clicks, decayed to ``day`` (the declared hour and
    platform roles: ``features.roles``)."""
    train = clicked(train)
    n = len(train)
    return PopularInContext.fit(train["item_id"], roles.column("hour", train.columns, n),
                                roles.column("platform", train.columns, n), click_weights(train, day, half_life_days))


def _contexts(rows: Examples) -> Iterator[tuple[int, str, np.ndarray]]:
    """``(hour, platform, mask)`` of each distinct request context among ``rows``."""
    hours, platforms = (roles.column(r, rows.columns, len(rows)) for r in ("hour", "platform"))
    keys = np.char.add(np.char.add(hours.astype(str), "|"), platforms.astype(str))
    for key in np.unique(keys):
        hour, platform = key.split("|", 1)
        yield int(hour), platform, keys == key


def popularity_scorers(table: PopularInContext) -> tuple[RetrievalScorer, RankingScorer]:
    """The baseline as scorers: one ranking per (daypart, platform) context."""

    def retrieval(queries: Examples, catalog: Examples) -> np.ndarray:
        items = catalog["item_id"].tolist()
        out = np.zeros((len(queries), len(items)))
        for hour, platform, m in _contexts(queries):
            out[m] = table.scores(hour, platform, items)
        return out

    def ranking(rows: Examples) -> dict[str, np.ndarray]:
        scores = np.zeros(len(rows))
        for hour, platform, m in _contexts(rows):
            scores[m] = table.scores(hour, platform, rows["item_id"][m].tolist())
        return {"score": scores}

    return retrieval, ranking


def recent_popularity(train: Examples, day: dt.date, window_days: int | None) -> dict[str, float]:
    """Clicks per item in the ``window_days`` days before ``day`` (None: every example before ``day``).

    Plain counts: no context, no decay; an item without a click in the window is absent (scores 0).
    """
    end = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    keep = (train["ts"] < end) & (train["label_click"] == 1)
    if window_days is not None:
        keep &= train["ts"] >= end - window_days * DAY_SECONDS
    items, counts = np.unique(train["item_id"][keep], return_counts=True)
    return dict(zip(items.tolist(), counts.astype(float).tolist(), strict=True))


def counts_scorers(counts: Mapping[str, float]) -> tuple[RetrievalScorer, RankingScorer]:
    """A context-free table ``{item: score}`` as scorers: every query gets the same ranking."""
    cache: dict[int, np.ndarray] = {}

    def scores(items: np.ndarray) -> np.ndarray:
        return np.array([counts.get(i, 0.0) for i in items.tolist()], dtype=np.float64)

    def retrieval(queries: Examples, catalog: Examples) -> np.ndarray:
        key = id(catalog)
        if key not in cache:  # one catalog per evaluation
            cache.clear()
            cache[key] = scores(catalog["item_id"])
        return np.broadcast_to(cache[key], (len(queries), len(cache[key])))

    def ranking(rows: Examples) -> dict[str, np.ndarray]:
        return {"score": scores(rows["item_id"])}

    return retrieval, ranking


def choose_recent_window(fit: Examples, validation: Examples, catalog: Examples, day: dt.date | None,
                         positive: str, windows: Sequence[int | None] = RECENT_WINDOWS, k: int = RECENT_WINDOW_K) -> dict[str, Any]:
    """The recent-popularity window with the best logged recall@k of the validation positives.

    Each window's counts are fitted on ``fit`` up to ``day``, so nothing of the validation or evaluation
    set is used to fit, and the evaluation set is not used to choose. Ties go to the shorter window.

    Args:
      fit, validation: ``TrainingData.fit`` and ``TrainingData.validation``.
      catalog: the items ranked.
      day: the validation split's first day (``span["validation_start"]``); None: no validation split.
      positive: the retrieval positives' label (``click``, ...).

    Returns:
      ``{"window_days", "chosen_on", "validation_start", "validation_positives", "validation_recall@k",
      "validation_recall@k_se", "candidates": {window: recall}}``, window ``None`` meaning all days.
    """
    positives = validation.take(validation[f"label_{positive}"] == 1)
    positives = positives.take(np.isin(positives["item_id"].astype(str), catalog["item_id"].astype(str)))
    if day is None or not len(positives) or not len(fit):
        return {"window_days": RECENT_DEFAULT_WINDOW, "chosen_on": "default: no validation positives",
                "validation_start": None, "validation_positives": 0, "candidates": {}}
    index = {item: i for i, item in enumerate(catalog["item_id"].tolist())}
    target = np.array([index[i] for i in positives["item_id"].tolist()], dtype=np.int64)
    found: dict[int | None, float] = {}
    for window in windows:
        score = counts_scorers(recent_popularity(fit, day, window))[0](positives.take(np.arange(1)), catalog)[0]
        ordered = np.sort(score)
        # the same ranking for every query: greater / tied counts by binary search, as metrics.positive_ranks
        right, left = np.searchsorted(ordered, score[target], "right"), np.searchsorted(ordered, score[target], "left")
        found[window] = metrics.recall_at_k(len(ordered) - right, right - left - 1, [k])[k]
    best = max(found, key=lambda w: found[w])  # the first (shortest) of equals
    r = found[best]
    return {"window_days": best, "chosen_on": "validation", "validation_start": day.isoformat(),
            "validation_positives": len(positives), f"validation_recall@{k}": r,
            f"validation_recall@{k}_se": math.sqrt(r * (1 - r) / len(positives)),
            "candidates": {("all" if w is None else str(w)): v for w, v in found.items()}}
