"""The exported towers and ranker as plain arrays (``plain.npz`` beside each SavedModel), for ``serving.plain``.

Serving a request calls the query tower once and the ranker once on a few hundred
rows: TensorFlow's per-call overhead (signature binding, tensor conversion) costs
more than the arithmetic. So export also writes what each model computes as
arrays: every encoder's lookup (the index -> token list of its ``StringLookup``,
mask and OOV slots included) or bucket boundaries, its embedding table, and the
dense and cross weights, which ``serving.plain`` evaluates in numpy. The
SavedModel stays the reference: serving checks the two agree before it uses the
arrays (``serving.plain.check``).

Keys (one ``.npz``): ``model`` ("tower" or "ranker"); ``inputs`` (concatenation
order); per input ``enc/<name>/`` ``vocabulary`` + ``oov`` + ``mask`` or
``boundaries``, ``embedding``, ``list``; a tower's ``hidden/`` and ``out/``
``kernel`` + ``bias`` and ``normalize``; a ranker's ``cross/<i>/`` ``kernel`` or
``u`` + ``v``, ``bias``, ``diag``, ``deep/<i>/`` and ``heads/`` ``kernel`` +
``bias``, ``position_bias``, ``position``, ``labels``, ``score_weights``.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from recloop import storage
from recloop.features.spec import LABELS

FILE = "plain.npz"


def _encoder(name: str, enc: tf.keras.Sequential) -> dict[str, np.ndarray]:
    first = enc.layers[0]
    listed = hasattr(first, "lookup")  # towers.MeanOfPresent
    lookup, table = (first.lookup, first.embedding) if listed else (first, enc.layers[1])
    out = {f"enc/{name}/embedding": table.embeddings.numpy(), f"enc/{name}/list": np.array(listed)}
    if isinstance(lookup, tf.keras.layers.StringLookup):
        out |= {f"enc/{name}/vocabulary": np.array(lookup.get_vocabulary(), dtype=str),
                f"enc/{name}/oov": np.array(lookup.num_oov_indices),
                f"enc/{name}/mask": np.array(lookup.mask_token is not None)}
    elif isinstance(lookup, tf.keras.layers.Discretization):
        out[f"enc/{name}/boundaries"] = np.array(lookup.bin_boundaries, dtype=np.float32)
    else:
        raise TypeError(f"encoder {name!r}: no plain form of a {type(lookup).__name__}")
    return out


def _dense(prefix: str, layer: tf.keras.layers.Dense) -> dict[str, np.ndarray]:
    out = {f"{prefix}/kernel": layer.kernel.numpy()}
    if layer.use_bias:
        out[f"{prefix}/bias"] = layer.bias.numpy()
    return out


def _encoders(encoders: Mapping[str, tf.keras.Sequential], names: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"inputs": np.array(list(names), dtype=str)}
    for n in names:
        out |= _encoder(n, encoders[n])
    return out


def tower_arrays(tower: tf.keras.Model) -> dict[str, np.ndarray]:
    """A ``towers.Tower``: encoders -> concat -> ReLU dense -> dense (-> L2 normalisation)."""
    return {"model": np.array("tower"), **_encoders(tower.encoders, tower.names), **_dense("hidden", tower.hidden),
            **_dense("out", tower.out), "normalize": np.array(bool(tower.normalize))}


def ranker_arrays(model: tf.keras.Model, score_weights: Mapping[str, float], position: int,
                  inputs: Sequence[str]) -> dict[str, np.ndarray]:
    """A ``ranking.RankingModel`` served at a fixed position: encoders, crosses, deep layers, heads."""
    out = {"model": np.array("ranker"), **_encoders(model.encoders, inputs), **_dense("heads", model.heads),
           "position_bias": model.position_bias.embeddings.numpy(), "position": np.array(position),
           "labels": np.array(LABELS, dtype=str),
           "score_weights": np.array([score_weights[label] for label in LABELS], dtype=np.float32)}
    for i, cross in enumerate(model.cross):
        if getattr(cross, "_projection_dim", None) is None:
            out |= _dense(f"cross/{i}", cross._dense)
        else:
            out |= {f"cross/{i}/u": cross._dense_u.kernel.numpy(), **_dense(f"cross/{i}/v", cross._dense_v)}
            out[f"cross/{i}/bias"] = out.pop(f"cross/{i}/v/bias", np.zeros(0, np.float32))
            out[f"cross/{i}/v"] = out.pop(f"cross/{i}/v/kernel")
        out[f"cross/{i}/diag"] = np.array(float(cross._diag_scale or 0.0), dtype=np.float32)
    for i, layer in enumerate(model.deep):
        out |= _dense(f"deep/{i}", layer)
    return out


def save(arrays: Mapping[str, np.ndarray], export_dir: str) -> None:
    """Writes ``plain.npz`` into a model's export directory (local or object storage)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(posixpath.join(export_dir, FILE), buffer.getvalue())
