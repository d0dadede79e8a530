"""Training on several workers: ``tf.distribute.MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster.

A Kubeflow ``TFJob`` (Training Operator) sets ``TF_CONFIG`` in each worker's environment; so does the test, for
two processes on loopback. Every worker runs the same ``recloop train``: it reads the same files, keeps its share
of each batch (``inputs.dataset`` shards by data), and holds a copy of every variable, kept equal by all-reducing
the gradients. The first worker (``chief``) writes the export; the others write theirs to a scratch folder that
is removed (saving a mirrored model takes every worker).

Losses are sums over a replica's examples divided by the examples of the global batch, so the all-reduced
gradient is the gradient of the global batch's mean loss, as in one process; regularization is divided by the
number of replicas for the same reason (``scale_regularization_loss``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

_STRATEGY: tf.distribute.Strategy | None = None


def cluster() -> dict[str, Any]:
    """``TF_CONFIG`` (``{}`` when unset).

    Raises:
      ValueError: naming ``TF_CONFIG`` when it is not a JSON object with a ``cluster`` and a ``task``.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not JSON ({e}): {raw[:200]}") from None
    shaped = isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in ("cluster", "task"))
    if not shaped:
        raise ValueError('TF_CONFIG must be {"cluster": {...}, "task": {"type": ..., "index": ...}}, got '
                         f"{raw[:200]}")
    return config


def workers() -> int:
    """How many processes train together (1 without ``TF_CONFIG``)."""
    nodes = cluster().get("cluster", {})
    return max(1, len(nodes.get("chief", [])) + len(nodes.get("worker", [])))


def is_chief() -> bool:
    """Whether this process writes the export: the ``chief`` task, or worker 0 where the cluster has no chief."""
    config = cluster()
    if not config:
        return True
    task = config["task"]
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not config["cluster"].get("chief")


def strategy() -> tf.distribute.Strategy:
    """The strategy of this run, made once: multi-worker mirrored when ``TF_CONFIG`` names more than one process
    (make it before any other TensorFlow op: collectives are set up at start), else TensorFlow's default."""
    global _STRATEGY
    if _STRATEGY is None:
        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy() if workers() > 1 else tf.distribute.get_strategy()
    return _STRATEGY


def replica_sum(value: tf.Tensor) -> tf.Tensor:
    """``value`` summed over the replicas training together (itself in one process)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_count(local: tf.Tensor) -> tf.Tensor:
    """The examples of the global batch, from a replica's ``local`` count (float32)."""
    return replica_sum(tf.cast(local, tf.float32))


class Replicated:
    """``train_step`` and ``test_step`` of a ``tfrs.Model`` whose ``compute_loss`` is a replica's share of the
    global batch's mean loss: the reported loss is summed over replicas (the same figure on every worker, so
    early stopping stops all of them together) and regularization is divided among the replicas."""

    @property
    def distribute_reduction_method(self) -> str:
        """Keras reports the first replica's figures: each is already the global one (the loss all-reduced here,
        metrics synchronised); Keras's default sums them over the workers."""
        return "first"

    def _step(self, inputs: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        loss = self.compute_loss(inputs, training=training)  # type: ignore[attr-defined]
        losses = self.losses  # type: ignore[attr-defined]
        regularization = tf.add_n([tf.reduce_sum(x) for x in losses]) if losses else tf.constant(0.0)
        return loss, regularization, loss + tf.nn.scale_regularization_loss(regularization)

    def _report(self, loss: tf.Tensor, regularization: tf.Tensor) -> dict[str, tf.Tensor]:
        total = replica_sum(loss)
        metrics = {metric.name: metric.result() for metric in self.metrics}  # type: ignore[attr-defined]
        return metrics | {"loss": total, "regularization_loss": regularization,
                          "total_loss": total + regularization}

    def train_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss, regularization, objective = self._step(inputs, True)
        variables = self.trainable_variables  # type: ignore[attr-defined]
        self.optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))  # type: ignore[attr-defined]
        return self._report(loss, regularization)

    def test_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        loss, regularization, _ = self._step(inputs, False)
        return self._report(loss, regularization)
