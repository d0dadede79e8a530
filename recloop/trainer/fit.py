"""Fitting both models on training examples, with per-epoch progress and timings."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.features.spec import LABELS
from recloop.trainer.config import RetrievalConfig, TrainConfig
from recloop.trainer.data import Examples
from recloop.trainer.ranking import FEATURES, RankingModel
from recloop.trainer.retrieval import RetrievalModel, dataset, sampling_probability
from recloop.trainer.towers import CANDIDATE, QUERY, Vocab, candidate_tower, fit_vocabs, query_tower

OnEpoch = Callable[[str, int, int, dict[str, float]], None]  # model, epoch (1-based), epochs, logs
ID_DROPOUT = 0.1  # share of ids trained as OOV, so new members/items get a learned vector


@dataclass
class Fitted:
    """A trained model and what its training measured."""

    model: tf.keras.Model
    examples: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    loss: str | None = None  # the retrieval loss used: pointwise or softmax
    best_epoch: int | None = None  # the epoch kept by early stopping (None: no validation split, the last)

    def record(self) -> dict[str, Any]:
        return {**({"loss": self.loss} if self.loss else {}), "best_epoch": self.best_epoch, "examples": self.examples, "epochs": len(self.history), "seconds": round(self.seconds, 2),
                "examples_per_second": round(self.examples * len(self.history) / max(self.seconds, 1e-9), 1),
                "history": self.history}


def seed_everything(seed: int) -> None:
    """Same seed, same model: seeds Python, numpy and TF and makes TF ops deterministic."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def vocabularies(train: Examples, config: TrainConfig) -> dict[str, Vocab]:
    """Lookups and bucket boundaries of every model input, from the training split."""
    return fit_vocabs(train.columns, FEATURES, min_count=config.retrieval.min_count)


def retrieval_positives(train: Examples, positive: str) -> Examples:
    """The training examples whose ``label_<positive>`` is 1 (what the retrieval model learns from)."""
    return train.take(train[f"label_{positive}"] == 1)


# A logged page has a click rate of a few percent; interaction logs (one request per interaction) have ~100%,
# less the few positives whose event arrived outside the attribution window.
INTERACTION_SHARE = 0.5


def interaction_logs(rows: Examples, positive: str) -> bool:
    """Whether ``rows`` are interaction logs (at least half the impressions positive), not logged pages."""
    return bool(len(rows)) and float(np.mean(rows[f"label_{positive}"] == 1)) >= INTERACTION_SHARE


def pointwise_loss(train: Examples, config: TrainConfig) -> bool:
    """Whether the retrieval model trains pointwise: configured, or ``auto`` and the data are logged pages."""
    rc = config.retrieval
    if rc.loss != "auto":
        return rc.loss == "pointwise"
    return bool(len(train)) and not interaction_logs(train, rc.positives)


def fit_retrieval(train: Examples, vocabs: Mapping[str, Vocab], config: TrainConfig,
                  on_epoch: OnEpoch | None = None, validation: Examples | None = None) -> Fitted:
    """Trains the two towers on the impressions (pointwise) or the positives (softmax) of ``train``.

    With ``validation`` (later in time than ``train``), training stops when its loss stops falling
    and keeps the best epoch's weights.
    """
    rc = config.retrieval
    positives = retrieval_positives(train, rc.positives)
    if len(positives) < 2:
        raise ValueError(f"retrieval needs at least 2 training positives ({rc.positives}), got {len(positives)}")
    pointwise = pointwise_loss(train, config)
    end = float(train["ts"].max())  # recency weights count back from the newest training example
    normalize = (not pointwise) if rc.normalize is None else rc.normalize
    model = RetrievalModel(query_tower(vocabs, rc.embedding_dim, rc.hidden, rc.oov_buckets, normalize, rc.id_l2),
                           candidate_tower(vocabs, rc.embedding_dim, rc.hidden, rc.oov_buckets, normalize, rc.id_l2),
                           rc, pointwise)
    model.compile(optimizer=tf.keras.optimizers.Adam(rc.learning_rate))
    impressions = None
    if pointwise or rc.impression_loss_weight > 0:
        # an epoch is one pass over the impressions (positives repeat as needed with the softmax)
        impressions = dataset(_impressions(train, rc, end), rc.impression_batch_size, config.seed + 1,
                              id_dropout=ID_DROPOUT)
    if pointwise:
        held_out = None if validation is None or not len(validation) else dataset(
            _impressions(validation, rc, end), rc.impression_batch_size, config.seed, shuffle=False)
        return _fit("retrieval", model, impressions, len(train), rc.epochs, on_epoch, held_out, loss="pointwise")
    ds = dataset(_positives(positives, train, rc, end), rc.batch_size, config.seed, id_dropout=ID_DROPOUT)
    held_out = None
    if validation is not None and impressions is None:  # a (positives, impressions) pair has no held-out twin
        later = retrieval_positives(validation, rc.positives)
        if len(later):
            held_out = dataset(_positives(later, validation, rc, end), rc.batch_size, config.seed, shuffle=False)
    if impressions is not None:
        ds = tf.data.Dataset.zip((ds.repeat(), impressions))
    return _fit("retrieval", model, ds, len(positives), rc.epochs, on_epoch, held_out, loss="softmax")


def _impressions(rows: Examples, rc: RetrievalConfig, end: float) -> dict[str, np.ndarray]:
    return rows.features((*QUERY, *CANDIDATE, "position")) | {
        "label": rows[f"label_{rc.positives}"].astype(np.float32)[:, None],
        "weight": recency_weights(rows["ts"], end, rc.recency_half_life_days)}


def recency_weights(ts: np.ndarray, end: float, half_life_days: float | None) -> np.ndarray:
    """``0.5 ** (days before end / half-life)``, scaled to mean 1; all ones without a half-life."""
    if half_life_days is None or not len(ts):
        return np.ones(len(ts), np.float32)
    w = np.power(0.5, np.maximum(end - ts.astype(np.float64), 0.0) / 86_400.0 / half_life_days)
    return (w / w.mean()).astype(np.float32)


def _positives(positives: Examples, shown: Examples, rc: RetrievalConfig, end: float) -> dict[str, np.ndarray]:
    """The softmax's columns: features, the item key, its sampling probability and weight (IPS x recency)."""
    q = sampling_probability(positives["item_id"])
    if rc.exposure_correction:
        q = q / exposure_share(shown["item_id"], positives["item_id"])
    return positives.features((*QUERY, *CANDIDATE)) | {"item_key": positives["item_id"], "sampling_probability": q,
                                                       "weight": ips_weights(positives["propensity"], rc.ips_cap)
                                                       * recency_weights(positives["ts"], end,
                                                                         rc.recency_half_life_days)}


def ips_weights(propensity: np.ndarray, cap: float) -> np.ndarray:
    """``min(1 / propensity, cap)``, scaled to mean 1 (so the learning rate means the same for any cap)."""
    w = np.minimum(1.0 / np.maximum(propensity.astype(np.float64), 1e-12), cap)
    return (w / w.mean()).astype(np.float32)


def exposure_share(shown: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each of ``items``' share of all impressions ``shown``."""
    uniq, counts = np.unique(shown, return_counts=True)
    index = np.searchsorted(uniq, items)
    return (counts[index] / len(shown)).astype(np.float32)


def fit_ranking(train: Examples, vocabs: Mapping[str, Vocab], config: TrainConfig,
                on_epoch: OnEpoch | None = None, validation: Examples | None = None) -> Fitted:
    """Trains the DCN ranker on every training impression (early stopping on ``validation``, as retrieval)."""
    rk = config.ranking

    def columns(rows: Examples) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return (rows.features((*FEATURES, "position")),
                {label: rows[f"label_{label}"].astype(np.float32)[:, None] for label in LABELS})

    ds = dataset(columns(train), rk.batch_size, config.seed, id_dropout=ID_DROPOUT)
    held_out = None if validation is None or not len(validation) else dataset(
        columns(validation), rk.batch_size, config.seed, shuffle=False)
    model = RankingModel(vocabs, rk, config.retrieval.oov_buckets)
    model.compile(optimizer=tf.keras.optimizers.Adam(rk.learning_rate))
    return _fit("ranking", model, ds, len(train), rk.epochs, on_epoch, held_out)


def _fit(name: str, model: tf.keras.Model, ds: tf.data.Dataset, examples: int, epochs: int,
         on_epoch: OnEpoch | None, validation: tf.data.Dataset | None = None, loss: str | None = None) -> Fitted:
    history: list[dict[str, float]] = []
    callbacks: list[tf.keras.callbacks.Callback] = []
    if validation is not None:  # more epochs only while the later days' loss falls; keep the best
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True))

    class _Progress(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            row = {k: round(float(v), 5) for k, v in (logs or {}).items()}
            history.append(row)
            if on_epoch:
                on_epoch(name, epoch + 1, epochs, row)

    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[_Progress(), *callbacks], validation_data=validation)
    best = None
    if validation is not None and history:
        best = 1 + int(np.argmin([row.get("val_loss", np.inf) for row in history]))
    return Fitted(model=model, examples=examples, seconds=time.perf_counter() - start, history=history, loss=loss,
                  best_epoch=best)
