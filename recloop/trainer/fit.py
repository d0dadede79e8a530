"""Fitting both models on training examples, with per-epoch progress and timings."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.features.spec import LABELS
from recloop.trainer import distribute, memory
from recloop.trainer.config import TrainConfig
from recloop.trainer.data import DAY_SECONDS, Examples
from recloop.trainer.inputs import dataset, lookup, shares
from recloop.trainer.ranking import FEATURES, RankingModel
from recloop.trainer.retrieval import RetrievalModel
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
    """Lookups and bucket boundaries of every model input, from the training split (a streamed split's
    categorical features from its tallies)."""
    return fit_vocabs(train.columns, FEATURES, min_count=config.retrieval.min_count, tallies=train.tallies)


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
    label = f"label_{rc.positives}"
    n_positives = int((train[label] == 1).sum())
    if n_positives < 2:
        raise ValueError(f"retrieval needs at least 2 training positives ({rc.positives}), got {n_positives}")
    pointwise = pointwise_loss(train, config)
    end = float(train["ts"].max())  # recency weights count back from the newest training example
    normalize = (not pointwise) if rc.normalize is None else rc.normalize
    with distribute.strategy().scope():  # variables mirrored on every worker when several train together
        model = RetrievalModel(query_tower(vocabs, rc.embedding_dim, rc.hidden, rc.oov_buckets, normalize, rc.id_l2),
                               candidate_tower(vocabs, rc.embedding_dim, rc.hidden, rc.oov_buckets, normalize,
                                               rc.id_l2), rc, pointwise)
        model.compile(optimizer=tf.keras.optimizers.Adam(rc.learning_rate))
    held = validation is not None and len(validation) > 0
    impressions = None
    if pointwise or rc.impression_loss_weight > 0:
        # an epoch is one pass over the impressions (positives repeat as needed with the softmax)
        impressions = _impressions(train, config, end, config.seed + 1)
    if pointwise:
        held_out = _impressions(validation, config, end, config.seed, shuffle=False) if held else None
        return _fit("retrieval", model, impressions, len(train), rc.epochs, on_epoch, held_out, loss="pointwise")
    ds = _positives(train, config, end, config.seed)
    held_out = None
    if held and impressions is None and (validation[label] == 1).any():  # a (positives, impressions) pair has no
        held_out = _positives(validation, config, end, config.seed, shuffle=False)  # held-out twin
    if impressions is not None:
        ds = tf.data.Dataset.zip((ds.repeat(), impressions))
    return _fit("retrieval", model, ds, n_positives, rc.epochs, on_epoch, held_out, loss="softmax")


def _impressions(rows: Examples, config: TrainConfig, end: float, seed: int, shuffle: bool = True) -> tf.data.Dataset:
    """Every impression: the towers' features, position, the positive label and the recency weight."""
    rc = config.retrieval
    label, mean = f"label_{rc.positives}", _recency_mean(rows["ts"], end, rc.recency_half_life_days)

    def derive(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {n: batch[n] for n in (*QUERY, *CANDIDATE, "position")} | {
            "label": tf.cast(batch[label], tf.float32)[:, None],
            "weight": _recency(batch["ts"], end, rc.recency_half_life_days, mean)}

    return dataset(rows, (*QUERY, *CANDIDATE, "position", label, "ts"), derive, rc.impression_batch_size, seed,
                   buffer=config.shuffle_buffer, id_dropout=ID_DROPOUT if shuffle else 0.0, shuffle=shuffle)


def _positives(rows: Examples, config: TrainConfig, end: float, seed: int, shuffle: bool = True) -> tf.data.Dataset:
    """The softmax's batches: the positives' features, the item key, its sampling probability (its share of
    positives, over its share of impressions with exposure correction) and weight (IPS x recency)."""
    rc = config.retrieval
    label = f"label_{rc.positives}"
    positive = rows[label] == 1
    items, propensity, ts = rows["item_id"][positive], rows["propensity"][positive], rows["ts"][positive]
    q = shares(items)
    if rc.exposure_correction:
        shown = shares(rows["item_id"])
        q = {item: share / shown[item] for item, share in q.items()}
    probability = lookup(q)
    ips_mean = float(_ips(propensity, rc.ips_cap).mean())
    recency_mean = _recency_mean(ts, end, rc.recency_half_life_days)

    def derive(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        ips = tf.minimum(1.0 / tf.maximum(tf.cast(batch["propensity"], tf.float64), 1e-12), rc.ips_cap) / ips_mean
        return {n: batch[n] for n in (*QUERY, *CANDIDATE)} | {
            "item_key": batch["item_id"], "sampling_probability": probability(batch["item_id"]),
            "weight": tf.cast(ips, tf.float32) * _recency(batch["ts"], end, rc.recency_half_life_days, recency_mean)}

    return dataset(rows, tuple(dict.fromkeys((*QUERY, *CANDIDATE, "item_id", "propensity", "ts", label))), derive,
                   rc.batch_size, seed, buffer=config.shuffle_buffer, id_dropout=ID_DROPOUT if shuffle else 0.0,
                   shuffle=shuffle, keep=lambda row: tf.equal(row[label], 1))


def _recency_raw(ts: np.ndarray, end: float, half_life_days: float) -> np.ndarray:
    return np.power(0.5, np.maximum(end - ts.astype(np.float64), 0.0) / DAY_SECONDS / half_life_days)


def _recency_mean(ts: np.ndarray, end: float, half_life_days: float | None) -> float:
    return 1.0 if half_life_days is None or not len(ts) else float(_recency_raw(ts, end, half_life_days).mean())


def _recency(ts: tf.Tensor, end: float, half_life_days: float | None, mean: float) -> tf.Tensor:
    """``recency_weights`` of a batch, ``mean`` being the raw weights' mean over its whole split."""
    if half_life_days is None:
        return tf.ones_like(ts, tf.float32)
    days = tf.maximum(end - tf.cast(ts, tf.float64), 0.0) / DAY_SECONDS / half_life_days
    return tf.cast(tf.pow(tf.constant(0.5, tf.float64), days) / mean, tf.float32)


def recency_weights(ts: np.ndarray, end: float, half_life_days: float | None) -> np.ndarray:
    """``0.5 ** (days before end / half-life)``, scaled to mean 1; all ones without a half-life."""
    if half_life_days is None or not len(ts):
        return np.ones(len(ts), np.float32)
    w = _recency_raw(ts, end, half_life_days)
    return (w / w.mean()).astype(np.float32)


def _ips(propensity: np.ndarray, cap: float) -> np.ndarray:
    return np.minimum(1.0 / np.maximum(propensity.astype(np.float64), 1e-12), cap)


def ips_weights(propensity: np.ndarray, cap: float) -> np.ndarray:
    """``min(1 / propensity, cap)``, scaled to mean 1 (so the learning rate means the same for any cap)."""
    w = _ips(propensity, cap)
    return (w / w.mean()).astype(np.float32)


def fit_ranking(train: Examples, vocabs: Mapping[str, Vocab], config: TrainConfig,
                on_epoch: OnEpoch | None = None, validation: Examples | None = None) -> Fitted:
    """Trains the DCN ranker on every training impression (early stopping on ``validation``, as retrieval)."""
    rk = config.ranking
    labels = tuple(f"label_{label}" for label in LABELS)

    def derive(batch: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        return ({n: batch[n] for n in (*FEATURES, "position")},
                {label: tf.cast(batch[f"label_{label}"], tf.float32)[:, None] for label in LABELS})

    def columns(rows: Examples, seed: int, shuffle: bool) -> tf.data.Dataset:
        return dataset(rows, (*FEATURES, "position", *labels), derive, rk.batch_size, seed,
                       buffer=config.shuffle_buffer, id_dropout=ID_DROPOUT if shuffle else 0.0, shuffle=shuffle)

    held_out = None if validation is None or not len(validation) else columns(validation, config.seed, False)
    with distribute.strategy().scope():
        model = RankingModel(vocabs, rk, config.retrieval.oov_buckets)
        model.compile(optimizer=tf.keras.optimizers.Adam(rk.learning_rate))
    return _fit("ranking", model, columns(train, config.seed, True), len(train), rk.epochs, on_epoch, held_out)


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
            memory.trim()  # the epoch's spent iterators and buffers, before the next epoch's fill
            if on_epoch:
                on_epoch(name, epoch + 1, epochs, row)

    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[_Progress(), *callbacks], validation_data=validation)
    best = None
    if validation is not None and history:
        best = 1 + int(np.argmin([row.get("val_loss", np.inf) for row in history]))
    return Fitted(model=model, examples=examples, seconds=time.perf_counter() - start, history=history, loss=loss,
                  best_epoch=best)
