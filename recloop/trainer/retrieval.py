"""The two-tower retrieval model: in-batch softmax over clicked items, with log-Q correction.

A member in context (query tower) and an item (candidate tower) meet in a dot
product. Each training batch holds positives only; the other positives of the
batch are the negatives. Popular items are negatives more often than their
share of the catalog, so without correction the model learns to push them
down; log-Q subtracts log(sampling probability) from each logit (Yi et al.,
RecSys 2019), and accidental hits (the same item as a negative) are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recloop.trainer.config import RetrievalConfig
from recloop.trainer.towers import CANDIDATE, QUERY, Tower


class RetrievalModel(tfrs.Model):
    """Query tower + candidate tower + ``tfrs.tasks.Retrieval``.

    Batches are feature dicts holding ``QUERY`` and ``CANDIDATE`` columns,
    ``item_key`` (the item id, never dropped to OOV: accidental hits are found by
    it) and ``sampling_probability`` (the item's share of training positives).
    """

    def __init__(self, query: Tower, candidate: Tower, config: RetrievalConfig):
        super().__init__()
        self.query_tower = query
        self.candidate_tower = candidate
        self.config = config
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=config.remove_accidental_hits)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        q = self.query_tower({n: features[n] for n in QUERY})
        c = self.candidate_tower({n: features[n] for n in CANDIDATE})
        return self.task(
            q, c, compute_metrics=False, compute_batch_metrics=False,
            candidate_ids=features["item_key"] if self.config.remove_accidental_hits else None,
            candidate_sampling_probability=features["sampling_probability"] if self.config.log_q else None)


def sampling_probability(item_ids: np.ndarray) -> np.ndarray:
    """Each positive's item frequency among all positives: the in-batch sampling probability."""
    _, inverse, counts = np.unique(item_ids, return_inverse=True, return_counts=True)
    return (counts[inverse] / len(item_ids)).astype(np.float32)


def dataset(columns: Mapping[str, np.ndarray], batch_size: int, seed: int, id_dropout: float = 0.0,
            shuffle: bool = True) -> tf.data.Dataset:
    """A shuffled, batched dataset of feature dicts; ``id_dropout`` of member/item ids become OOV ("")."""
    n = len(next(iter(columns.values())))
    ds = tf.data.Dataset.from_tensor_slices(dict(columns))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    if id_dropout > 0:
        ds = ds.map(_dropper(id_dropout, seed))
    return ds.prefetch(2)


def _dropper(rate: float, seed: int) -> Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    gen = tf.random.Generator.from_seed(seed)

    def drop(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(batch)
        for name in ("member_id", "item_id"):
            if name in out:
                hit = gen.uniform(tf.shape(out[name])) < rate
                out[name] = tf.where(hit, tf.constant(""), out[name])
        return out

    return drop
