"""Scorers the offline evaluation measures: an exported model and the popularity baseline.

The model is scored through its exported SavedModels, so what is measured is
what serving loads. The popularity-in-context baseline is the heuristic of
``baselines/`` (the bootstrap policy and the server's fallback) fitted on the
training clicks, decayed to the evaluation day.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from recloop.baselines import PopularInContext, decay_weights
from recloop.features.catalog import candidate_inputs, embed
from recloop.features.spec import LABELS
from recloop.trainer.data import Examples
from recloop.trainer.evaluate import RankingScorer, RetrievalScorer
from recloop.trainer.ranking import FEATURES
from recloop.trainer.towers import QUERY

DAY_SECONDS = 86_400


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
            batch = {n: tf.constant(rows[n][lo : lo + 8192]) for n in FEATURES}
            for name, value in ranker(**batch).items():
                parts[name].append(value.numpy())
        return {name: np.concatenate(v) if v else np.zeros(0, np.float32) for name, v in parts.items()}

    return retrieval, ranking


def click_weights(train: Examples, day: dt.date, half_life_days: float = 7.0) -> np.ndarray:
    """Each example's click, decayed from its request time to the start of ``day`` (0 without a click)."""
    end = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    return decay_weights(train["label_click"], (end - train["ts"]) / DAY_SECONDS, half_life_days)


def popularity(train: Examples, day: dt.date, half_life_days: float = 7.0) -> PopularInContext:
    """The popularity-in-context table of the training clicks, decayed to ``day``."""
    return PopularInContext.fit(train["item_id"], train["hour_of_day"], train["platform"],
                                click_weights(train, day, half_life_days))


def _contexts(rows: Examples) -> Iterator[tuple[int, str, np.ndarray]]:
    """``(hour, platform, mask)`` of each distinct request context among ``rows``."""
    keys = np.char.add(np.char.add(rows["hour_of_day"].astype(str), "|"), rows["platform"])
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
