"""The training example: one row per impression, flattened from a request record.

``flatten`` is the single transformation from the logged request to model
inputs; ingest uses it for training and the server builds the same dict for
inference, so training and serving cannot disagree on a feature. Encoding to
``tf.train.Example`` has a per-example path (readable, for tests and tools) and a
batched Arrow path through tfx_bsl's C++ coder (for ingest: the Arrow batch is
also what TFDV reads, and the coder itself is not the bottleneck).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders import example_coder

from recloop.features.records import Impression, RequestRecord
from recloop.features.spec import FEATURES, LABELS

# Columns besides the features: ids and logging facts for evaluation, slicing and
# off-policy estimates. The model never reads these.
METADATA: dict[str, type] = {
    "request_id": str,
    "ts": int,  # unix seconds of the request
    "row": str,
    "score": float,
    "propensity": float,
    "model_version": str,
}
LABEL_COLUMNS: dict[str, type] = {f"label_{head}": int for head in LABELS}
COLUMNS: dict[str, type] = {f.name: f.dtype for f in FEATURES} | LABEL_COLUMNS | METADATA

_ARROW = {str: pa.large_list(pa.large_binary()), int: pa.large_list(pa.int64()),
          float: pa.large_list(pa.float32())}


def flatten(request: RequestRecord, impression: Impression) -> dict[str, Any]:
    """Model inputs and metadata of one impression, exactly as served (no labels)."""
    item = impression.item
    return {
        **request.member.model_dump(),
        **request.context.model_dump(),
        "item_id": impression.item_id,
        "category": item.category,
        "creator": item.creator,
        "duration_min": item.duration_min,
        "language": item.language,
        "age_days": item.age_days,
        "position": impression.position,
        "request_id": request.request_id,
        "ts": unix_seconds(request.ts),
        "row": impression.row,
        "score": impression.score,
        "propensity": impression.propensity,
        "model_version": request.model_version,
    }


def _check(name: str, value: Any) -> None:
    expected = COLUMNS.get(name)
    if expected is None:
        raise KeyError(f"example column {name!r} is not in the contract; known: {', '.join(COLUMNS)}")
    ok = isinstance(value, expected) and not isinstance(value, bool)
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise TypeError(f"example column {name!r}: expected {expected.__name__}, got {value!r}")


def to_tf_example(example: Mapping[str, Any]) -> tf.train.Example:
    """Encodes one example; ``None`` values are left out (missing, as TFDV counts them).

    Raises:
      KeyError: for a column not in ``COLUMNS``.
      TypeError: naming the column, the expected type and the value.
    """
    proto = tf.train.Example()
    for name, value in example.items():
        if value is None:
            continue
        _check(name, value)
        feature = proto.features.feature[name]
        kind = COLUMNS[name]
        if kind is str:
            feature.bytes_list.value.append(value.encode("utf-8"))
        elif kind is int:
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return proto


def from_tf_example(serialized: bytes | tf.train.Example) -> dict[str, Any]:
    """Decodes an example to ``{column: value or None}`` over all ``COLUMNS``."""
    proto = serialized if isinstance(serialized, tf.train.Example) else tf.train.Example.FromString(serialized)
    out: dict[str, Any] = {}
    for name, kind in COLUMNS.items():
        f = proto.features.feature.get(name)
        if f is None:
            out[name] = None
            continue
        values = f.bytes_list.value if kind is str else f.int64_list.value if kind is int else f.float_list.value
        # an empty list is how the batched coder writes a missing value
        out[name] = None if not values else values[0].decode("utf-8") if kind is str else kind(values[0])
    return out


def to_record_batch(examples: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Columnar form of examples: one ``large_list`` column per contract column
    (a null list for a missing value), the layout TFDV and tfx_bsl read."""
    for ex in examples:
        for name in ex.keys() - COLUMNS.keys():
            _check(name, ex[name])  # raises KeyError: nothing is dropped silently
    arrays = []
    for name, kind in COLUMNS.items():
        present = [v for v in (ex.get(name) for ex in examples) if v is not None]
        for v in present:
            _check(name, v)
        mask = np.fromiter((ex.get(name) is None for ex in examples), dtype=bool, count=len(examples))
        offsets = np.concatenate([[0], np.cumsum(~mask)]).astype(np.int64)
        if kind is str:
            present = [v.encode("utf-8") for v in present]
        values = pa.array(present, type=_ARROW[kind].value_type)
        arrays.append(pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(mask)))
    return pa.RecordBatch.from_arrays(arrays, names=list(COLUMNS))


def to_serialized(examples: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Serialised ``tf.train.Example``s of a batch, through the C++ coder."""
    if not examples:
        return []
    return example_coder.RecordBatchToExamples(to_record_batch(examples))


def unix_seconds(ts: dt.datetime) -> int:
    """Unix seconds of an aware datetime, as the ``ts`` column stores it."""
    return int(ts.timestamp())
