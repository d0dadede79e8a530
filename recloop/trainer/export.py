"""SavedModels that serving loads with TensorFlow (+ scann) alone, and the index rebuild.

Layout of an export directory (docs/architecture.md, "State and storage" lists what a registry version holds):

    query_tower/      raw member + context features -> {"embedding"}
    candidate_tower/  raw item features -> {"embedding"}
    index/            raw member + context features -> {"scores", "item_ids"}: ScaNN over a catalog
    index.json        the catalog the index was built from (day, items, parameters)
    ranking/          raw member + context + item features -> {"click", "complete", "like", "score"}

Each of the three model directories also holds ``plain.npz``: the same model as
arrays, which serving evaluates in numpy once it has checked it against the
SavedModel (``trainer.plain``, ``serving.plain``).

Every signature takes 1-D tensors, one per feature, named as in the feature
spec; a missing nullable feature is ``features.spec.missing_value``. The index
wraps the saved query tower, so ``build_index`` can rebuild it from a newer
catalog with the saved towers alone: an item released today is recommendable
today, without retraining.
"""

from __future__ import annotations

import datetime as dt
import math
import posixpath
import shutil
import tempfile
from collections.abc import Mapping

import tensorflow as tf

from recloop.features import logs
from recloop.features.catalog import candidate_inputs, embed
from recloop.features.spec import LABELS
from recloop.trainer import plain
from recloop.trainer.data import Examples
from recloop.trainer.ranking import INPUTS, RankingModel, combined
from recloop.trainer.towers import QUERY, Tower, input_specs

SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])


class _TowerModule(tf.Module):
    def __init__(self, tower: Tower, names: tuple[str, ...]):
        super().__init__()
        self.tower = tower
        self.serve = tf.function(lambda **features: {"embedding": self.tower(features)},
                                 input_signature=None).get_concrete_function(**input_specs(names))


def save_tower(tower: Tower, names: tuple[str, ...], path: str) -> None:
    """Saves a tower with a ``serving_default`` signature over its raw features."""
    module = _TowerModule(tower, names)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    plain.save(plain.tower_arrays(tower), path)


class _RankingModule(tf.Module):
    def __init__(self, model: RankingModel, score_weights: Mapping[str, float], position: int):
        super().__init__()
        self.model = model

        def serve(**features: tf.Tensor) -> dict[str, tf.Tensor]:
            batch = tf.shape(features["member_id"])[0]
            p = self.model(features | {"position": tf.fill([batch], tf.constant(position, tf.int64))})
            out = {label: p[:, i] for i, label in enumerate(LABELS)}
            out["score"] = combined(p, score_weights)
            return out

        self.serve = tf.function(serve).get_concrete_function(**input_specs(INPUTS))


def save_ranking(model: RankingModel, score_weights: Mapping[str, float], position: int, path: str) -> None:
    """Saves the ranker with a signature from raw features (position fixed) to head probabilities and score."""
    module = _RankingModule(model, score_weights, position)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    plain.save(plain.ranker_arrays(model, score_weights, position, INPUTS), path)


class _IndexModule(tf.Module):
    def __init__(self, query: tf.Module, scann: tf.keras.layers.Layer):
        super().__init__()
        self.query = query
        self.scann = scann
        fn = query.signatures["serving_default"]

        def serve(**features: tf.Tensor) -> dict[str, tf.Tensor]:
            scores, ids = self.scann(fn(**features)["embedding"])
            return {"scores": scores, "item_ids": ids}

        self.serve = tf.function(serve).get_concrete_function(**input_specs(QUERY))


def scann_parameters(items: int, k: int) -> dict[str, int]:
    """Tree size for a catalog: ~sqrt(n) leaves, a third searched (and enough leaves to hold ~2k items,
    so a small catalog still returns k), exact re-scoring of 4k candidates."""
    leaves = max(1, min(items, round(math.sqrt(items))))
    search = min(leaves, max(math.ceil(leaves / 3), math.ceil(2 * k * leaves / items)))
    return {"num_leaves": leaves, "num_leaves_to_search": search,
            "num_reordering_candidates": min(items, 4 * k), "k": min(k, items)}


def build_index(export_dir: str, catalog: Examples, day: dt.date, k: int, out: str | None = None) -> dict:
    """(Re)builds the ScaNN index of ``export_dir`` over ``catalog`` with the saved towers.

    Args:
      export_dir: an export with ``query_tower/`` and ``candidate_tower/``.
      catalog: item rows (``data.catalog_columns``): the item feed of ``day``.
      day: the day the index serves; item age is measured to it.
      k: candidates returned per query.
      out: where to write the index (default ``export_dir/index``); written
        next to it first and moved into place, so a reader never sees half an index.

    Returns:
      What ``index.json`` records.

    Raises:
      ValueError: for an empty catalog.
    """
    import scann  # noqa: F401  (registers the ScaNN ops the index saves)
    from tensorflow_recommenders.layers.factorized_top_k import ScaNN

    if not len(catalog):
        raise ValueError("cannot build a retrieval index over an empty catalog")
    candidate = tf.saved_model.load(posixpath.join(export_dir, "candidate_tower"))
    query = tf.saved_model.load(posixpath.join(export_dir, "query_tower"))
    embeddings = embed(candidate.signatures["serving_default"], candidate_inputs(catalog.columns, day))
    params = scann_parameters(len(catalog), k)
    layer = ScaNN(k=params["k"], num_leaves=params["num_leaves"], num_leaves_to_search=params["num_leaves_to_search"],
                  num_reordering_candidates=params["num_reordering_candidates"])
    layer.index(tf.constant(embeddings), tf.constant(catalog["item_id"]))
    out = out or posixpath.join(export_dir, "index")
    staging = tempfile.mkdtemp(prefix="index-", dir=posixpath.dirname(out.rstrip("/")) or ".")
    module = _IndexModule(query, layer)
    tf.saved_model.save(module, staging, signatures={"serving_default": module.serve}, options=SAVE_OPTIONS)
    if tf.io.gfile.exists(out):
        shutil.rmtree(out)
    shutil.move(staging, out)
    record = {"day": day.isoformat(), "items": len(catalog), "embedding_dim": int(embeddings.shape[1]), **params}
    logs.write_json(posixpath.join(posixpath.dirname(out.rstrip("/")), "index.json"), record)
    return record
