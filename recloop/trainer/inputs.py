"""The models' input pipelines: examples streamed from their files (or held), the files in a new order and the
examples shuffled in a bounded buffer every epoch, batched, given their derived columns (labels, weights) and
their share of ids dropped to OOV.

Streamed examples (``data.Examples.source``) are parsed again every epoch and never held whole: memory is the
shuffle buffer, whatever the window. Each derived column is computed per batch from constants of the whole split
(a weight's mean, an item's share of positives), which ``fit`` computes from the held columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.trainer.data import Examples, batches

Derive = Callable[[dict[str, tf.Tensor]], Any]  # a batch of raw columns -> what the model's fit takes


def dataset(rows: Examples, names: Sequence[str], derive: Derive, batch_size: int, seed: int, *,
            buffer: int, id_dropout: float = 0.0, shuffle: bool = True,
            keep: Callable[[dict[str, tf.Tensor]], tf.Tensor] | None = None) -> tf.data.Dataset:
    """Batches of ``derive(columns)`` over the examples of ``rows`` (the raw columns ``names``).

    Args:
      rows: streamed from their source where they have one, else from their held columns.
      buffer: the shuffle buffer, in examples (at most the split's size).
      id_dropout: the share of member and item ids turned into unseen ids (trained as OOV), per batch.
      keep: an example's predicate, applied before shuffling (the positives of a split).
    """
    if rows.source is not None:
        ds = batches(rows.source, names, seed=seed if shuffle else None).unbatch()
    else:
        ds = tf.data.Dataset.from_tensor_slices({n: rows[n] for n in names})
    if keep is not None:
        ds = ds.filter(keep)
    if shuffle:
        ds = ds.shuffle(max(1, min(buffer, len(rows))), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(derive)
    if id_dropout > 0:  # a fresh random key per batch and epoch, the same on every worker
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((keys, ds)).map(_dropper(id_dropout))
    options = tf.data.Options()  # several workers: each reads every file and keeps its share of the examples
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(2)


def lookup(values: Mapping[str, float], default: float = 0.0) -> Callable[[tf.Tensor], tf.Tensor]:
    """A string -> float32 table, as a function of a batch of strings."""
    keys = list(values)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys or [""], tf.string),
                                            tf.constant([values[k] for k in keys] or [default], tf.float32)),
        default_value=default)
    return table.lookup


def shares(values: np.ndarray) -> dict[str, float]:
    """Each distinct value's share of ``values``."""
    uniq, counts = np.unique(values, return_counts=True)
    return dict(zip(uniq.tolist(), (counts / max(len(values), 1)).tolist(), strict=True))


def _dropper(rate: float) -> Callable[..., Any]:
    def drop(key: tf.Tensor, element: Any) -> Any:
        batch, labels = element if isinstance(element, tuple) else (element, None)
        out = dict(batch)
        for i, name in enumerate(("member_id", "item_id")):
            if name in out:
                seed = tf.stack([key, tf.constant(i, tf.int64)])
                hit = tf.random.stateless_uniform(tf.shape(out[name]), seed=seed) < rate
                # an unseen string hashes to one of the OOV buckets, as a new id does at serving:
                # every bucket is trained, not only the one "" falls in
                out[name] = tf.where(hit, tf.strings.join([out[name], "#new"]), out[name])
        return out if labels is None else (out, labels)

    return drop
