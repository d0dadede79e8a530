"""The two-tower retrieval model: a pointwise click loss over impressions, or an in-batch softmax.

A member in context (query tower) and an item (candidate tower) meet in a dot
product. Where the logs hold whole pages (shown and not clicked), the towers
learn P(click | shown) pointwise, with a position term that absorbs position
bias: it judges every item by what members do once it is shown, not by how
often the logging policy showed it, which the softmax over clicks also learns
(the ablation in bench/README.md). Where every logged impression is a positive
(interaction logs), the softmax is the only signal: each batch holds positives,
the other positives of the batch are the negatives, log-Q subtracts
log(sampling probability) from each logit (Yi et al., RecSys 2019) and
accidental hits (the same item as a negative) are removed.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from recloop.trainer.config import RetrievalConfig
from recloop.trainer.distribute import Replicated, global_count
from recloop.trainer.towers import CANDIDATE, MAX_POSITION, QUERY, Tower


class RetrievalModel(Replicated, tfrs.Model):
    """Query tower + candidate tower, trained pointwise on impressions or by an in-batch softmax.

    ``pointwise``: batches are impressions (``QUERY``, ``CANDIDATE``, ``position``,
    ``label``, ``weight``); the logit ``a * q.c + b + position term`` is fitted to the label.
    ``softmax``: batches are positives holding ``QUERY`` and ``CANDIDATE``
    columns, ``item_key`` (the item id, never dropped to OOV: accidental hits are
    found by it), ``sampling_probability`` (the item's share of training positives)
    and ``weight``; with ``impression_loss_weight`` > 0 a batch is a
    ``(positives, impressions)`` pair and the pointwise loss is added.
    """

    def __init__(self, query: Tower, candidate: Tower, config: RetrievalConfig, pointwise: bool):
        super().__init__()
        self.query_tower = query
        self.candidate_tower = candidate
        self.config = config
        self.pointwise = pointwise
        if not pointwise:
            self.task = tfrs.tasks.Retrieval(remove_accidental_hits=config.remove_accidental_hits,
                                             temperature=config.temperature)
        if pointwise or config.impression_loss_weight > 0:  # variables only where a loss trains them
            self.clicked = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM))
            self.scale = tf.Variable(1.0, name="click_scale")
            self.offset = tf.Variable(-2.0, name="click_offset")
            # clicks once shown depend on the slot: a per-position term keeps that out of the towers
            self.position_bias = tf.keras.layers.Embedding(MAX_POSITION + 2, 1, embeddings_initializer="zeros")

    def compute_loss(self, inputs: Mapping[str, tf.Tensor] | tuple, training: bool = False) -> tf.Tensor:
        """The mean loss per example of the (global) batch (so ``id_l2`` weighs the same against either loss)."""
        if self.pointwise:
            return self._pointwise_loss(inputs)
        features, impressions = inputs if isinstance(inputs, tuple) else (inputs, None)
        loss = self._softmax_loss(features) / global_count(tf.shape(features["item_key"])[0])
        if impressions is not None:
            loss += self.config.impression_loss_weight * self._pointwise_loss(impressions)
        return loss

    def _pointwise_loss(self, impressions: Mapping[str, tf.Tensor]) -> tf.Tensor:
        q = self.query_tower({n: impressions[n] for n in QUERY})
        c = self.candidate_tower({n: impressions[n] for n in CANDIDATE})
        position = tf.clip_by_value(tf.cast(impressions["position"], tf.int32), 0, MAX_POSITION + 1)
        logit = self.scale * tf.reduce_sum(q * c, axis=-1, keepdims=True) + self.offset + self.position_bias(position)
        n = global_count(tf.shape(logit)[0])
        return self.clicked(labels=impressions["label"], predictions=logit, sample_weight=impressions["weight"]) / n

    def _softmax_loss(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        q = self.query_tower({n: features[n] for n in QUERY})
        c = self.candidate_tower({n: features[n] for n in CANDIDATE})
        return self.task(
            q, c, compute_metrics=False, compute_batch_metrics=False, sample_weight=features["weight"],
            candidate_ids=features["item_key"] if self.config.remove_accidental_hits else None,
            candidate_sampling_probability=features["sampling_probability"] if self.config.log_q else None)
