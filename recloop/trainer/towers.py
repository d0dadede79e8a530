"""Feature encoders and the two retrieval towers, preprocessing included.

Lookups, bucket boundaries and normalisation are Keras preprocessing layers
whose vocabularies and boundaries are computed from the training data here, so
an exported tower takes raw features (strings, ints) and serving cannot
transform them differently (docs/architecture.md, "Principles"). Ids not seen in training
(a new member, an item released today) fall into OOV buckets; the training loop
drops a share of ids to OOV on purpose, so those buckets learn "someone new"
and new items are represented by their metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from recloop.features.catalog import CANDIDATE_INPUTS, QUERY_INPUTS
from recloop.features.spec import feature

QUERY = QUERY_INPUTS  # the spec's query-tower features, in spec order
CANDIDATE = CANDIDATE_INPUTS
MAX_POSITION = int(feature("position").value_range[1])  # position terms have a slot per position up to this


@dataclass(frozen=True)
class Vocab:
    """What an encoder learned from the training data: a vocabulary or bucket boundaries."""

    name: str
    vocabulary: tuple[str, ...] | None = None
    boundaries: tuple[float, ...] | None = None
    max_length: int | None = None  # a list feature: its values are looked up, embedded and averaged


def fit_vocab(name: str, values: np.ndarray, min_count: int = 1) -> Vocab:
    """Vocabulary (categorical) or bucket boundaries (numeric) of one feature.

    Categorical values seen fewer than ``min_count`` times are left to the OOV
    buckets. Numeric features get a bucket of their own for missing (``-1``), then
    the declared ``buckets``: that many quantile buckets, or a slot per value.
    """
    spec = feature(name)
    if spec.kind == "categorical":
        uniq, counts = np.unique(values, return_counts=True)  # a list column's 2-D values count one by one
        return vocab_of_counts(name, dict(zip(uniq.tolist(), counts.tolist(), strict=True)), min_count)
    present = values[values >= 0].astype(np.float64)
    if spec.buckets == "per_value":
        hi = int(spec.value_range[1]) if spec.value_range else int(present.max())
        return Vocab(name, boundaries=tuple(float(b) + 0.5 for b in range(-1, hi)))
    qs = np.unique(np.quantile(present, np.linspace(0, 1, int(spec.buckets) + 1)[1:-1])) if len(present) else []
    return Vocab(name, boundaries=(-0.5, *(float(q) for q in qs)))


def vocab_of_counts(name: str, counts: Mapping[str, int], min_count: int = 1) -> Vocab:
    """The vocabulary of a categorical feature from its values' counts (``""``, a list's padding, is none)."""
    spec = feature(name)
    # an expected value keeps its slot even in a week without it
    vocab = sorted({v for v, c in counts.items() if c >= min_count} | set(spec.vocabulary or ()))
    return Vocab(name, vocabulary=tuple(v for v in vocab if v != ""), max_length=spec.max_length)


def is_id_like(name: str) -> bool:
    """Ids and lists of them (a member's recent items) get id-sized, L2-penalised embeddings."""
    return name in ("member_id", "item_id") or feature(name).is_list


def fit_vocabs(columns: Mapping[str, np.ndarray], names: Sequence[str], min_count: int = 1,
               tallies: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Vocab]:
    """``fit_vocab`` of each of ``names``, from ``tallies`` (value counts) where they hold it."""
    tallies = tallies or {}
    return {n: vocab_of_counts(n, tallies[n], min_count if is_id_like(n) else 1) if n in tallies
            else fit_vocab(n, columns[n], min_count if is_id_like(n) else 1) for n in names}


def input_specs(names: Sequence[str]) -> dict[str, tf.TensorSpec]:
    """The raw-feature signature of a tower: a 1-D tensor per feature, ``(batch, max_length)`` for a list
    (padded with ``""``)."""
    dtypes = {str: tf.string, int: tf.int64, float: tf.float32}
    return {n: tf.TensorSpec([None] if feature(n).max_length is None else [None, feature(n).max_length],
                             dtypes[feature(n).dtype], name=n) for n in names}


class MeanOfPresent(tf.keras.layers.Layer):
    """A list feature's embedding: the mean over its present values (index 0 is the ``""`` padding);
    zeros for an empty list, so "nothing yet" is a point of its own."""

    def __init__(self, lookup: tf.keras.layers.Layer, embedding: tf.keras.layers.Layer, **kwargs: object):
        super().__init__(**kwargs)
        self.lookup, self.embedding = lookup, embedding

    def call(self, values: tf.Tensor) -> tf.Tensor:
        ids = self.lookup(values)
        present = tf.cast(ids > 0, self.embedding.dtype)[..., None]
        total = tf.reduce_sum(self.embedding(ids) * present, axis=1)
        return total / tf.maximum(tf.reduce_sum(present, axis=1), 1.0)


def encoder(vocab: Vocab, dim: int, oov_buckets: int = 1, l2: float = 0.0) -> tf.keras.Sequential:
    """Raw feature (1-D) -> embedding (batch, dim): lookup or bucketing, then an embedding table (L2 ``l2``);
    a list feature (2-D, ``""``-padded) -> the mean embedding of its values."""
    listed = vocab.max_length is not None
    if vocab.vocabulary is not None:
        words = list(vocab.vocabulary) or ["<none seen>"]  # a lookup needs a word; every id then is OOV
        # a list's padding "" is the mask (index 0), which MeanOfPresent leaves out
        lookup = tf.keras.layers.StringLookup(vocabulary=words, num_oov_indices=oov_buckets,
                                              mask_token="" if listed else None, name=f"{vocab.name}_lookup")
        size = len(words) + oov_buckets + listed
    else:
        lookup = tf.keras.layers.Discretization(bin_boundaries=list(vocab.boundaries), name=f"{vocab.name}_buckets")
        size = len(vocab.boundaries) + 1
    table = tf.keras.layers.Embedding(size, dim, embeddings_regularizer=tf.keras.regularizers.L2(l2) if l2 else None,
                                      name=f"{vocab.name}_embedding")
    layers = [MeanOfPresent(lookup, table, name=f"{vocab.name}_mean")] if listed else [lookup, table]
    return tf.keras.Sequential(layers, name=f"{vocab.name}_encoder")


class Tower(tf.keras.Model):
    """Raw features -> L2-free embedding: encoders, concatenation, a ReLU layer, a linear output.

    Args:
      vocabs: one ``Vocab`` per input feature, in input order.
      embedding_dim: output size (the dot-product space of retrieval).
      hidden: size of the hidden layer.
      oov_buckets: OOV buckets of the id lookups.
    """

    def __init__(self, vocabs: Sequence[Vocab], embedding_dim: int, hidden: int, oov_buckets: int = 1,
                 normalize: bool = False, id_l2: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.normalize = normalize
        self.names = [v.name for v in vocabs]
        ids = ("member_id", "item_id")  # a list's OOV values share one bucket: a new member's id needs more
        self.encoders = {v.name: encoder(v, embedding_dim if is_id_like(v.name) else max(4, embedding_dim // 4),
                                         oov_buckets if v.name in ids else 1, id_l2 if is_id_like(v.name) else 0.0)
                         for v in vocabs}
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu")
        self.out = tf.keras.layers.Dense(embedding_dim)

    def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        x = tf.concat([self.encoders[n](features[n]) for n in self.names], axis=-1)
        y = self.out(self.hidden(x))
        return tf.math.l2_normalize(y, axis=-1) if self.normalize else y


def query_tower(vocabs: Mapping[str, Vocab], embedding_dim: int, hidden: int, oov_buckets: int,
                normalize: bool = False, id_l2: float = 0.0) -> Tower:
    return Tower([vocabs[n] for n in QUERY], embedding_dim, hidden, oov_buckets, normalize, id_l2, name="query_tower")


def candidate_tower(vocabs: Mapping[str, Vocab], embedding_dim: int, hidden: int, oov_buckets: int,
                    normalize: bool = False, id_l2: float = 0.0) -> Tower:
    return Tower([vocabs[n] for n in CANDIDATE], embedding_dim, hidden, oov_buckets, normalize, id_l2,
                 name="candidate_tower")
