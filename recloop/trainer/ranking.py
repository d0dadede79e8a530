"""The DCN-v2 multi-task ranker: one sigmoid head per label, position bias in a shallow tower.

Member, context and item features are embedded, crossed (``tfrs.layers.dcn.Cross``,
full or low-rank) and passed through a deep network; each head (click,
complete, like) is a logit on top. Position only enters through a shallow tower
that adds a per-position logit to each head, so the main network learns
relevance without the slot it was shown in; serving feeds a constant position
(``RankingConfig.serving_position``) and gets position-free scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from recloop.features.catalog import RANKING_INPUTS
from recloop.features.spec import LABELS, features_for
from recloop.trainer.config import RankingConfig
from recloop.trainer.distribute import Replicated, global_count
from recloop.trainer.towers import CANDIDATE, MAX_POSITION, QUERY, Vocab, encoder

# every model input but position (each gets a vocabulary), in spec order
FEATURES = tuple(f.name for f in features_for() if {*QUERY, *CANDIDATE, *RANKING_INPUTS} & {f.name})
INPUTS = RANKING_INPUTS  # what the ranker reads besides position: the declared ranking features


class RankingModel(Replicated, tfrs.Model):
    """DCN-v2 over ``INPUTS`` + a position tower; a ``tfrs.tasks.Ranking`` per head.

    Args:
      vocabs: a ``Vocab`` per name in ``INPUTS``.
      config: the ranking section of the training config.
    """

    def __init__(self, vocabs: Mapping[str, Vocab], config: RankingConfig, oov_buckets: int = 1):
        super().__init__()
        self.config = config
        self.encoders = {n: encoder(vocabs[n], config.embedding_dim, oov_buckets if n.endswith("_id") else 1)
                         for n in INPUTS}
        projection = config.projection_dim if config.cross == "low_rank" else None
        self.cross = [tfrs.layers.dcn.Cross(projection_dim=projection, kernel_initializer="glorot_uniform")
                      for _ in range(config.cross_layers)]
        self.deep = [tf.keras.layers.Dense(units, activation="relu") for units in config.deep]
        self.heads = tf.keras.layers.Dense(len(LABELS))
        self.position_bias = tf.keras.layers.Embedding(MAX_POSITION + 2, len(LABELS), embeddings_initializer="zeros")
        self.tasks = {label: tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name=f"{label}_auc")]) for label in LABELS}

    def logits(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Per-head logits (batch, len(LABELS)) with the position term included."""
        x0 = tf.concat([self.encoders[n](features[n]) for n in INPUTS], axis=-1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        for layer in self.deep:
            x = layer(x)
        position = tf.clip_by_value(tf.cast(features["position"], tf.int32), 0, MAX_POSITION + 1)
        return self.heads(x) + self.position_bias(position)

    def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Per-head probabilities (batch, len(LABELS))."""
        return tf.sigmoid(self.logits(features))

    def compute_loss(self, inputs: tuple[Mapping[str, tf.Tensor], Mapping[str, tf.Tensor]],
                     training: bool = False) -> tf.Tensor:
        features, labels = inputs
        logits = self.logits(features)
        weights, n = self.config.loss_weights, global_count(tf.shape(logits)[0])  # mean over the global batch
        return tf.add_n([weights[label] * self.tasks[label](labels=labels[label], predictions=logits[:, i : i + 1])
                         for i, label in enumerate(LABELS)]) / n


def combined(probabilities: tf.Tensor, weights: Mapping[str, float]) -> tf.Tensor:
    """The one score rows are ranked by: sum(w * p) / sum(w) over heads, in [0, 1]."""
    w = tf.constant([weights[label] for label in LABELS], dtype=probabilities.dtype)
    return tf.reduce_sum(probabilities * w, axis=-1) / tf.reduce_sum(w)
