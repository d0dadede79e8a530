"""Predict payloads: valid ones become queries, every bad-input class gets a message naming the field."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.serving.request import MAX_INSTANCES, InvalidRequest, parse

NOW = dt.datetime(2026, 1, 19, 7, 30, tzinfo=dt.UTC)
ROWS = ("for_your_usual", "quick", "something_new", "popular_now")
IDS = [f"r{i}" for i in range(100)]


def _instance(**over):
    return {"member_id": "m0000001", "member": {"tenure_days": 3, "country": "US", "preferred_category": None},
            "context": {"hour_of_day": 7, "day_of_week": 0, "platform": "ios"}} | over


def test_a_valid_payload_becomes_queries_with_defaults():
    [q, r] = parse({"instances": [_instance(), _instance(member_id="m9", k=4, rows=["quick"],
                                                          context={"hour_of_day": 0, "day_of_week": 6,
                                                                   "platform": "a-new-platform"})]},
                   IDS, NOW, ROWS)
    assert (q.request_id, q.member_id, q.k, q.rows, q.day) == ("r0", "m0000001", 10, None, NOW.date().toordinal())
    assert q.member == {"tenure_days": 3, "country": "US", "preferred_category": None}
    # an unseen platform: served
    assert (r.k, r.rows, r.context["platform"], r.context["hour_of_day"]) == (4, ["quick"], "a-new-platform", 0)


def test_a_client_request_id_is_kept_and_the_others_are_drawn():
    [mine, drawn] = parse({"instances": [_instance(request_id="sim-0-000-0000001"), _instance()]}, IDS, NOW, ROWS)
    assert (mine.request_id, drawn.request_id) == ("sim-0-000-0000001", "r1")


def test_each_instance_needs_its_own_request_id():
    with pytest.raises(ValueError, match="2 instances but only 1 request ids"):
        parse({"instances": [_instance(), _instance()]}, ["r0"], NOW, ROWS)


@pytest.mark.parametrize(("payload", "message"), [
    ([1, 2], 'expected a JSON object {"instances": [...]}, got list'),
    ({"inputs": []}, "got dict without instances"),
    ({"instances": []}, "instances: List should have at least 1 item"),
    ({"instances": [_instance()] * (MAX_INSTANCES + 1)}, f"at most {MAX_INSTANCES} items"),
    ({"instances": [{"context": _instance()["context"]}]}, "instances[0].member_id: Field required"),
    ({"instances": [_instance(member_id=7)]}, "instances[0].member_id: Input should be a valid string, got 7"),
    ({"instances": [_instance(member_id="")]}, "instances[0].member_id: String should have at least 1 character"),
    ({"instances": [_instance(context={"hour_of_day": 25, "day_of_week": 0, "platform": "ios"})]},
     "instances[0].context.hour_of_day: Input should be less than or equal to 23, got 25"),
    ({"instances": [_instance(context={"hour_of_day": "7", "day_of_week": 0, "platform": "ios"})]},
     "instances[0].context.hour_of_day: Input should be a valid integer, got '7'"),
    ({"instances": [_instance(k=0)]}, "instances[0].k: Input should be greater than or equal to 1, got 0"),
    ({"instances": [_instance(k=500)]}, "instances[0].k: Input should be less than or equal to 20, got 500"),
    ({"instances": [_instance(), _instance(member={"tenure_days": -1})]},
     "instances[1].member.tenure_days: Input should be greater than or equal to 0, got -1"),
    ({"instances": [_instance(member={"age": 40})]}, "instances[0].member.age: Extra inputs are not permitted"),
    ({"instances": [_instance(rows=["trending"])]}, "instances[0].rows: unknown row 'trending'"),
    ({"instances": [_instance(request_id="a b")]}, "instances[0].request_id: String should match pattern"),
    ({"instances": [_instance(request_id="")]}, "instances[0].request_id: String should have at least 1 character"),
])
def test_every_bad_input_class_is_named(payload, message):
    with pytest.raises(InvalidRequest) as e:
        parse(payload, IDS, NOW, ROWS)
    assert message in str(e.value)


json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.one_of(json, st.fixed_dictionaries({"instances": st.lists(json, max_size=3)}),
                 st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries(
                     {"member_id": json, "context": st.dictionaries(
                         st.sampled_from(["hour_of_day", "day_of_week", "platform"]), json)}), max_size=2)})))
def test_fuzzed_payloads_are_queries_or_a_named_refusal_never_a_crash(payload):
    try:
        queries = parse(payload, IDS, NOW, ROWS)
    except InvalidRequest as e:
        assert str(e)
    else:
        assert all(0 <= q.context["hour_of_day"] <= 23 and q.member_id for q in queries)
