"""The training example: one row per impression, flattened from a request record.

Where every column comes from in a request record is written down once here
(``_MEMBER`` ... ``_IMPRESSION``); ``flatten`` (one dict per impression, for the
server and tools) and ``ExampleColumns`` (column lists for many requests,
ingest's hot path) both read those tables, so training and serving cannot
disagree on a feature. Encoding to ``tf.train.Example`` has a per-example path
(readable, for tests and tools) and a batched Arrow path through tfx_bsl's C++
coder (for ingest; the Arrow batch is also what TFDV reads).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders import example_coder

from recloop.features.records import EVENT_TYPES, Impression, RequestRecord
from recloop.features.spec import FEATURES, features_for

# Columns besides the features: ids and logging facts for evaluation, slicing and
# off-policy estimates. The model never reads these.
METADATA: dict[str, type] = {
    "request_id": str,
    "ts": int,  # unix seconds of the request
    "row": str,
    "score": float,
    "propensity": float,
    "explored": int,  # 0/1: the slot was drawn by the catalog-wide exploration
    "model_version": str,
}
# One 0/1 label per logged outcome: the ranking heads (spec.LABELS) are three of
# them; "start" is a weaker positive the retrieval model can be trained on.
LABEL_COLUMNS: dict[str, type] = {f"label_{event}": int for event in EVENT_TYPES}
COLUMNS: dict[str, type] = {f.name: f.dtype for f in FEATURES} | LABEL_COLUMNS | METADATA
# List-valued columns (declared with ``max_length``): a list of values where the others hold one.
LISTS: dict[str, int] = {f.name: f.max_length for f in FEATURES if f.max_length is not None}

_ARROW = {str: pa.large_list(pa.large_binary()), int: pa.large_list(pa.int64()),
          float: pa.large_list(pa.float32())}

# Where each column lives in a request record.
_MEMBER = tuple(f.name for f in features_for(group="member"))  # request["member"], nullable ones may be absent
_CONTEXT = tuple(f.name for f in features_for(group="context"))  # request["context"], nullable ones may be absent
_ITEM = tuple(f.name for f in features_for(group="item") if f.name != "item_id")  # impressions[].item, or absent
_IMPRESSION = ("item_id", *(f.name for f in features_for(group="impression")), "row", "score", "propensity")
OLD_EXPLORED_BELOW = 0.5  # epsilon-greedy servers logged no flag: an explored slot had propensity epsilon / pool
_REQUEST = ("request_id", "model_version")  # and ts, as unix seconds


def flatten(request: RequestRecord, impression: Impression) -> dict[str, Any]:
    """Model inputs and metadata of one impression, exactly as served (no labels).

    A nullable feature left out of the record is ``None`` here.
    """
    return _request_part(request) | _impression_part(impression)


def flatten_all(request: RequestRecord) -> list[dict[str, Any]]:
    """``flatten`` of every impression of a request, in order (the request part built once)."""
    shared = _request_part(request)
    return [shared | _impression_part(imp) for imp in request["impressions"]]


def _request_part(request: RequestRecord) -> dict[str, Any]:
    member, context = request["member"], request["context"]
    out = {name: member.get(name) for name in _MEMBER}
    out.update((name, context.get(name)) for name in _CONTEXT)
    out.update((name, request[name]) for name in _REQUEST)
    out["ts"] = unix_seconds(request["ts"])
    return out


def _impression_part(impression: Impression) -> dict[str, Any]:
    item = impression["item"]
    out = {name: item.get(name) for name in _ITEM}
    out.update((name, impression[name]) for name in _IMPRESSION)
    out["explored"] = explored(impression)
    return out


def explored(impression: Impression) -> int:
    """1 when the slot was drawn by the catalog-wide exploration; for a log from before the flag, by the
    epsilon-greedy rule its server used."""
    flag = impression.get("explored")
    return int(impression["propensity"] < OLD_EXPLORED_BELOW if flag is None else flag)


class ExampleColumns:
    """Examples of many requests, built column by column.

    Ingest's hot path: appending to column lists and converting each list once
    is ~3x faster than a dict per example transposed afterwards. Values come
    from parsed (type-checked) records, so they are not checked again here.
    """

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self.num_rows = 0

    def add(self, request: RequestRecord, keep: Sequence[int] | None = None,
            labels: Mapping[str, Sequence[int]] | None = None) -> None:
        """Appends the examples of a request.

        Args:
          request: a parsed request record.
          keep: indices of the impressions to append, in order; all by default.
          labels: ``{label column: one value per kept impression}``; a label
            column left out is a missing value.
        """
        imps = request["impressions"]
        shown = imps if keep is None else [imps[i] for i in keep]
        k = len(shown)
        cols = self.columns
        member, context = request["member"], request["context"]
        for name in _MEMBER:
            cols[name] += [member.get(name)] * k
        for name in _CONTEXT:
            cols[name] += [context.get(name)] * k
        for name in _REQUEST:
            cols[name] += [request[name]] * k
        cols["ts"] += [unix_seconds(request["ts"])] * k
        for name in _IMPRESSION:
            cols[name] += [imp[name] for imp in shown]
        cols["explored"] += [explored(imp) for imp in shown]
        for name in _ITEM:
            cols[name] += [imp["item"].get(name) for imp in shown]
        labels = labels or {}
        for name in LABEL_COLUMNS:
            values = labels.get(name)
            if values is not None and len(values) != k:
                raise ValueError(f"{name}: {len(values)} values for {k} impressions of {request['request_id']}")
            cols[name] += [None] * k if values is None else values
        self.num_rows += k

    def rows(self) -> list[dict[str, Any]]:
        """The examples as dicts (for tests and tools)."""
        names = list(self.columns)
        return [dict(zip(names, values)) for values in zip(*self.columns.values())]

    def to_record_batch(self) -> pa.RecordBatch:
        """The examples in ``to_record_batch``'s layout."""
        return pa.RecordBatch.from_arrays(
            [_list_column(name, values, check=False) for name, values in self.columns.items()], names=list(COLUMNS))


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
        values = _values(name, value)
        for v in values:
            _check(name, v)
        feature = proto.features.feature[name]
        kind = COLUMNS[name]
        if kind is str:
            feature.bytes_list.value.extend(v.encode("utf-8") for v in values)
        elif kind is int:
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return proto


def _values(name: str, value: Any) -> list[Any]:
    """The values of one column: a list column's list, or a plain column's one value."""
    if name not in LISTS:
        return [value]
    if not isinstance(value, list):
        raise TypeError(f"example column {name!r}: expected a list of {COLUMNS[name].__name__}, got {value!r}")
    return value


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
        if name in LISTS:
            out[name] = [v.decode("utf-8") if kind is str else kind(v) for v in values]
            continue
        # an empty list is how the batched coder writes a missing value
        out[name] = None if not values else values[0].decode("utf-8") if kind is str else kind(values[0])
    return out


def to_record_batch(examples: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Columnar form of examples: one ``large_list`` column per contract column
    (a null list for a missing value), the layout TFDV and tfx_bsl read.

    Raises:
      KeyError: for a column not in ``COLUMNS`` (nothing is dropped silently).
      TypeError: naming the column, the expected type and the first wrong value.
    """
    unknown = set().union(*(ex.keys() for ex in examples)) - COLUMNS.keys()
    if unknown:
        _check(min(unknown), None)
    return pa.RecordBatch.from_arrays(
        [_list_column(name, [ex.get(name) for ex in examples], check=True) for name in COLUMNS], names=list(COLUMNS))


_ALLOWED = {str: {str}, int: {int}, float: {float, int}}


def _list_column(name: str, values: list[Any], check: bool) -> pa.LargeListArray:
    kind = COLUMNS[name]
    if name in LISTS:  # already a list per example (None: missing)
        if check:
            for value in values:
                for v in [] if value is None else _values(name, value):
                    _check(name, v)
        return pa.array(values, type=_ARROW[kind])
    if check:  # one set of the value types per column, not a check per value
        wrong = set(map(type, values)) - _ALLOWED[kind] - {type(None)}
        if wrong:
            _check(name, next(v for v in values if type(v) in wrong))  # raises TypeError naming it
    flat = pa.array(values, type=_ARROW[kind].value_type)
    offsets = np.arange(len(values) + 1, dtype=np.int64)
    if flat.null_count == 0:
        return pa.LargeListArray.from_arrays(offsets, flat)
    mask = flat.is_null().to_numpy(zero_copy_only=False)
    offsets[1:] = np.cumsum(~mask)
    return pa.LargeListArray.from_arrays(offsets, flat.drop_null(), mask=pa.array(mask))


def to_serialized(examples: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Serialised ``tf.train.Example``s of a batch, through the C++ coder."""
    if not examples:
        return []
    return example_coder.RecordBatchToExamples(to_record_batch(examples))


def unix_seconds(ts: dt.datetime) -> int:
    """Unix seconds of an aware datetime, as the ``ts`` column stores it."""
    return int(ts.timestamp())
