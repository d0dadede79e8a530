"""Tests of recloop.features.examples: flatten and tf.Example encoding."""

from __future__ import annotations

import datetime as dt
import json

import recloop  # noqa: F401  (first: sets the Keras switch before TensorFlow is imported)

# isort: split
import pytest
import tensorflow as tf
from tfx_bsl.coders import example_coder

from recloop.features.examples import (
    COLUMNS,
    LABEL_COLUMNS,
    METADATA,
    ExampleColumns,
    flatten,
    flatten_all,
    from_tf_example,
    to_record_batch,
    to_serialized,
    to_tf_example,
    unix_seconds,
)
from recloop.features.records import EVENT_TYPES, parse_request
from recloop.features.spec import FEATURES, LABELS

# Every float here is exactly representable in float32, so round trips compare equal.
REQUEST = {
    "request_id": "req-1",
    "ts": "2026-01-05T08:30:00+01:00",  # 07:30 UTC = 1767598200
    "model_version": "v3",
    "member": {"member_id": "m1", "tenure_days": 120, "country": "US", "preferred_category": "hiit"},
    "context": {"hour_of_day": 7, "day_of_week": 0, "platform": "ios"},
    "impressions": [
        {"item_id": "i1", "position": 0, "row": "top", "score": 0.75, "propensity": 0.5, "explored": False,
         "item": {"category": "yoga", "creator": "c7", "duration_min": 20.0, "language": "en",
                  "release_date": "2025-12-01", "age_days": 35}},
        {"item_id": "i2", "position": 3, "row": "because-you-watched", "score": 0.25, "propensity": 0.125, "explored": False,
         "item": {"category": "hiit", "creator": "c9", "duration_min": 45.5, "language": "es",
                  "release_date": "2026-01-05", "age_days": 0}},
    ],
}
TS = 1767598200


def _full_example() -> dict:
    record = parse_request(json.dumps(REQUEST))
    return flatten(record, record["impressions"][0]) | {"label_click": 1, "label_start": 1, "label_complete": 0, "label_like": 0}


def test_columns_are_features_then_labels_then_metadata():
    assert list(COLUMNS) == [f.name for f in FEATURES] + [f"label_{e}" for e in EVENT_TYPES] + list(METADATA)
    assert LABEL_COLUMNS == {"label_click": int, "label_start": int, "label_complete": int, "label_like": int}
    assert {f"label_{head}" for head in LABELS} <= set(LABEL_COLUMNS)
    assert METADATA["ts"] is int and METADATA["propensity"] is float
    assert all(COLUMNS[f.name] is f.dtype for f in FEATURES)


def test_flatten_gives_every_feature_with_the_logged_values():
    record = parse_request(json.dumps(REQUEST))
    first = flatten(record, record["impressions"][0])
    second = flatten(record, record["impressions"][1])
    assert set(first) == set(COLUMNS) - set(LABEL_COLUMNS)
    assert {f.name for f in FEATURES} <= set(first)
    assert first == {
        "member_id": "m1", "tenure_days": 120, "country": "US", "preferred_category": "hiit",
        "hour_of_day": 7, "day_of_week": 0, "platform": "ios",
        "item_id": "i1", "category": "yoga", "creator": "c7", "duration_min": 20.0, "language": "en",
        "age_days": 35, "position": 0,
        "request_id": "req-1", "ts": TS, "row": "top", "score": 0.75, "propensity": 0.5,
        "explored": 0, "model_version": "v3",
    }
    assert second["item_id"] == "i2"
    assert second["duration_min"] == 45.5
    assert second["age_days"] == 0
    assert second["position"] == 3
    assert second["row"] == "because-you-watched"
    assert second["language"] == "es"
    assert second["propensity"] == 0.125
    assert second["ts"] == TS and second["member_id"] == "m1" and second["hour_of_day"] == 7
    for name, value in first.items():
        assert isinstance(value, COLUMNS[name]) and not isinstance(value, bool), name
    assert "release_date" not in first  # not a model input; age_days carries it


def test_flatten_keeps_missing_member_features_as_none():
    raw = json.loads(json.dumps(REQUEST))
    raw["member"] = {"member_id": "m2", "country": None}
    record = parse_request(json.dumps(raw))
    flat = flatten(record, record["impressions"][0])
    assert flat["tenure_days"] is None and flat["country"] is None and flat["preferred_category"] is None
    decoded = from_tf_example(to_tf_example(flat))
    assert decoded["member_id"] == "m2"
    assert decoded["tenure_days"] is None and decoded["country"] is None
    assert decoded["preferred_category"] is None


def test_unix_seconds():
    assert unix_seconds(dt.datetime(2026, 1, 5, 7, 30, tzinfo=dt.UTC)) == TS
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert unix_seconds(dt.datetime(2026, 1, 5, 8, 30, 0, 999_999, tzinfo=plus_one)) == TS


def test_tf_example_round_trip():
    example = _full_example()
    proto = to_tf_example(example)
    assert isinstance(proto, tf.train.Example)
    assert from_tf_example(proto) == example
    assert from_tf_example(proto.SerializeToString()) == example
    feature = proto.features.feature
    assert list(feature["member_id"].bytes_list.value) == [b"m1"]
    assert list(feature["ts"].int64_list.value) == [TS]
    assert list(feature["duration_min"].float_list.value) == [20.0]
    assert list(feature["label_click"].int64_list.value) == [1]


def test_tf_example_parses_with_tensorflow():
    serialized = to_tf_example(_full_example()).SerializeToString()
    parsed = tf.io.parse_single_example(serialized, {
        "member_id": tf.io.FixedLenFeature([], tf.string),
        "hour_of_day": tf.io.FixedLenFeature([], tf.int64),
        "duration_min": tf.io.FixedLenFeature([], tf.float32),
        "label_click": tf.io.FixedLenFeature([], tf.int64),
    })
    assert parsed["member_id"].numpy() == b"m1"
    assert parsed["hour_of_day"].numpy() == 7
    assert parsed["duration_min"].numpy() == 20.0
    assert parsed["label_click"].numpy() == 1


def test_none_values_are_absent_features_and_decode_as_none():
    example = {"member_id": "m1", "tenure_days": None, "country": None, "hour_of_day": 0, "label_like": None}
    proto = to_tf_example(example)
    assert set(proto.features.feature) == {"member_id", "hour_of_day"}
    decoded = from_tf_example(proto)
    assert set(decoded) == set(COLUMNS)
    assert decoded["member_id"] == "m1"
    assert decoded["hour_of_day"] == 0  # a zero is present, not missing
    assert all(decoded[name] is None for name in COLUMNS if name not in ("member_id", "hour_of_day"))


def test_empty_example_decodes_to_all_none():
    assert from_tf_example(to_tf_example({})) == dict.fromkeys(COLUMNS)


def test_non_ascii_strings_and_int_for_float_columns():
    proto = to_tf_example({"creator": "Zoë Núñez 東京", "duration_min": 20, "score": -3})
    decoded = from_tf_example(proto.SerializeToString())
    assert decoded["creator"] == "Zoë Núñez 東京"
    assert decoded["duration_min"] == 20.0 and isinstance(decoded["duration_min"], float)
    assert decoded["score"] == -3.0


def test_float_values_are_float32():
    decoded = from_tf_example(to_tf_example({"score": 0.1}))
    assert decoded["score"] == pytest.approx(0.1, rel=1e-7)
    assert decoded["score"] != 0.1


def _batch() -> list[dict]:
    full = _full_example()
    record = parse_request(json.dumps(REQUEST))
    second = flatten(record, record["impressions"][1]) | {"label_click": 0, "label_start": 1, "label_complete": 1, "label_like": 1}
    sparse = {  # missing member features, labels absent or None, a zero and an empty string
        "member_id": "m9", "tenure_days": None, "country": None, "hour_of_day": 0, "day_of_week": 6,
        "platform": "Android", "item_id": "", "duration_min": 1200.0, "label_click": None,
        "ts": 0, "score": 0.0,
    }
    return [full, sparse, second, {}]


def test_to_serialized_matches_to_tf_example():
    batch = _batch()
    serialized = to_serialized(batch)
    assert len(serialized) == len(batch)
    assert all(isinstance(s, bytes) for s in serialized)
    batched = [from_tf_example(s) for s in serialized]
    single = [from_tf_example(to_tf_example(ex)) for ex in batch]
    assert batched == single
    assert batched[0] == batch[0]
    assert batched[1]["member_id"] == "m9"
    assert batched[1]["tenure_days"] is None and batched[1]["country"] is None
    assert batched[1]["hour_of_day"] == 0 and batched[1]["ts"] == 0 and batched[1]["score"] == 0.0
    assert batched[1]["item_id"] == ""
    assert batched[1]["platform"] == "Android" and batched[1]["duration_min"] == 1200.0
    assert batched[1]["label_click"] is None and batched[1]["label_like"] is None
    assert batched[2]["item_id"] == "i2" and batched[2]["label_like"] == 1
    assert batched[3] == dict.fromkeys(COLUMNS)


def test_to_serialized_present_values_have_one_entry():
    (serialized,) = to_serialized([{"member_id": "m1", "hour_of_day": 5}])
    proto = tf.train.Example.FromString(serialized)
    assert list(proto.features.feature["member_id"].bytes_list.value) == [b"m1"]
    assert list(proto.features.feature["hour_of_day"].int64_list.value) == [5]
    # a missing value is an empty list (or absent), never a default
    country = proto.features.feature.get("country")
    assert country is None or not country.bytes_list.value


def test_record_batch_layout():
    batch = to_record_batch(_batch())
    assert batch.num_rows == 4
    assert batch.schema.names == list(COLUMNS)
    tenure = batch.column(batch.schema.get_field_index("tenure_days"))
    assert tenure.to_pylist() == [[120], None, [120], None]
    member = batch.column(batch.schema.get_field_index("member_id"))
    assert member.to_pylist() == [[b"m1"], [b"m9"], [b"m1"], None]


def test_to_serialized_empty_batch():
    assert to_serialized([]) == []


@pytest.mark.parametrize("encode", [to_tf_example, lambda ex: to_serialized([ex])], ids=["single", "batched"])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("hour_of_day", "7"),
        ("hour_of_day", 7.0),
        ("label_click", True),
        ("label_like", False),
        ("member_id", 5),
        ("member_id", b"m1"),
        ("duration_min", "20"),
        ("duration_min", True),
        ("ts", 1.5),
        ("position", [0]),
    ],
)
def test_wrong_type_raises_type_error_naming_the_column(encode, column, value):
    with pytest.raises(TypeError) as info:
        encode({"member_id": "m1", column: value} if column != "member_id" else {column: value})
    message = str(info.value)
    assert repr(column) in message
    assert COLUMNS[column].__name__ in message
    assert repr(value) in message


def test_unknown_column_raises_key_error():
    with pytest.raises(KeyError, match="'nope' is not in the contract"):
        to_tf_example({"member_id": "m1", "nope": 1})
    with pytest.raises(KeyError, match="release_date"):
        to_tf_example({"release_date": "2025-12-01"})


def test_unknown_column_raises_key_error_in_the_batched_path_too():
    with pytest.raises(KeyError, match="'nope' is not in the contract"):
        to_serialized([{"member_id": "m1", "nope": 1}])


def test_flatten_all_is_flatten_of_each_impression():
    record = parse_request(json.dumps(REQUEST))
    assert flatten_all(record) == [flatten(record, imp) for imp in record["impressions"]]


def test_a_subclassed_value_of_the_right_type_is_encoded():
    class Name(str):
        pass

    (serialized,) = to_serialized([{"member_id": Name("m1")}])
    assert from_tf_example(serialized)["member_id"] == "m1"


def test_example_columns_hold_the_same_examples_as_flatten():
    record = parse_request(json.dumps(REQUEST))
    columns = ExampleColumns()
    columns.add(record)
    columns.add(record, keep=[1], labels={"label_click": [1]})
    flat = flatten_all(record)
    none = dict.fromkeys(LABEL_COLUMNS)
    assert columns.rows() == [flat[0] | none, flat[1] | none, flat[1] | none | {"label_click": 1}]
    assert columns.num_rows == 3
    batched = [from_tf_example(s) for s in example_coder.RecordBatchToExamples(columns.to_record_batch())]
    assert batched == [from_tf_example(to_tf_example(ex)) for ex in columns.rows()]


def test_example_columns_reject_labels_that_do_not_fit():
    record = parse_request(json.dumps(REQUEST))
    with pytest.raises(ValueError, match="label_like: 1 values for 2 impressions of req-1"):
        ExampleColumns().add(record, labels={"label_like": [1]})


def test_a_log_from_before_the_explored_flag_reads_it_from_the_epsilon_greedy_propensity():
    from recloop.features.examples import ExampleColumns, flatten_all
    from recloop.features.records import parse_request

    raw = json.loads(json.dumps(REQUEST))
    for imp in raw["impressions"]:
        imp.pop("explored")
    raw["impressions"][1]["propensity"] = 0.01  # an explored slot of an epsilon-greedy server
    old = parse_request(json.dumps(raw))
    assert [row["explored"] for row in flatten_all(old)] == [0, 1]
    columns = ExampleColumns()
    columns.add(old)
    assert columns.columns["explored"] == [0, 1]
