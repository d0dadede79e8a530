"""Parts of ingest in plain Python: planning, routing, one bucket's join, the reconciliation."""

from __future__ import annotations

import datetime as dt
import json
import zlib

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
from conftest import event_line, request_line

from recloop.features import logs
from recloop.ingest.join import join_bucket, sample_unit
from recloop.ingest.read import Span, bucket_count, bucket_of, pack, plan_inputs, request_id_of, unpack
from recloop.ingest.summary import IngestError, check, reconcile, summarize

SPAN = Span(dt.date(2026, 1, 12), dt.date(2026, 1, 18))


def test_span_windows():
    assert SPAN.eval_start == dt.datetime(2026, 1, 18, tzinfo=dt.UTC)
    assert SPAN.fresh_start is None
    assert Span(SPAN.start, SPAN.end, eval_days=2, freshness_days=3).fresh_start == dt.datetime(
        2026, 1, 14, tzinfo=dt.UTC)
    assert (SPAN.margin_days, Span(SPAN.start, SPAN.end, attribution_hours=25).margin_days) == (1, 2)
    assert SPAN.window_seconds == 86_400


def test_plan_reads_the_span_the_margins_for_ids_and_events_up_to_the_window(tmp_path):
    for stream in ("requests", "events"):
        for day in logs.days(dt.date(2026, 1, 9), dt.date(2026, 1, 21)):
            logs.write_lines(f"{logs.partition_dir(str(tmp_path), stream, day)}/part-00000.jsonl.gz", ["{}"])
    plan = plan_inputs(str(tmp_path), Span(SPAN.start, SPAN.end, attribution_hours=36))
    by_role = {role: sorted(logs.partition_date(f.path).isoformat() for f in plan if f.role == role)
               for role in ("requests", "keys", "events")}
    assert by_role["requests"] == [d.isoformat() for d in logs.days(SPAN.start, SPAN.end)]
    assert by_role["keys"] == ["2026-01-10", "2026-01-11", "2026-01-19", "2026-01-20"]
    assert by_role["events"] == [d.isoformat() for d in logs.days(SPAN.start, dt.date(2026, 1, 20))]
    assert all(f.size > 0 for f in plan)
    assert bucket_count(plan) == 16 and bucket_count(plan, bytes_per_bucket=1) == min(4096, sum(f.size for f in plan))


@pytest.mark.parametrize(("line", "rid"), [
    ('{"request_id":"r1","ts":"x"}', "r1"),
    ('{"ts":"x", "request_id": "r2"}', "r2"),  # another key order: parsed
    ('{"request_id":"r3","impressions":[{"item_id":"i', "r3"),  # truncated: found by its key
    ('{"ts":"2026', None),
    ("[1, 2]", None),
    ('{"request_id": 5}', None),
    ('{"request_id":"a\\"b"}', 'a"b'),  # escapes go through the JSON parser
])
def test_request_id_of(line, rid):
    assert request_id_of(line) == rid


def test_buckets_are_stable_and_packing_round_trips():
    assert bucket_of("r0-001-0000001", 64) == zlib.crc32(b"r0-001-0000001") % 64  # not hash(): salted per process
    lines = [(1, '{"a": "é"}'), (7, "x"), (9, "")]
    assert unpack(pack(lines)) == lines
    assert 0 <= sample_unit("m1", "users") < 1 and sample_unit("m1", "users") != sample_unit("m1", "data")


def _chunks(requests: list[str], events: list[str], keys: tuple[str, ...] = ()) -> list:
    return [("requests", "r.jsonl", pack(list(enumerate(requests, 1)))),
            ("events", "e.jsonl", pack(list(enumerate(events, 1)))), ("keys", "k.jsonl", list(keys))]


def test_a_repeated_request_line_is_kept_once_and_conflicting_ones_are_dead():
    a = request_line("rA", "m1", "2026-01-12T08:00:00Z", ["a"])
    b1, b2 = (request_line("rB", "m1", "2026-01-12T09:00:00Z", [i]) for i in ("b", "c"))
    result = join_bucket(_chunks([a, a, b1, b2], [event_line("rB", "b", "click", "2026-01-12T09:00:01Z")]),
                         0, 1, SPAN)
    assert result.counts["requests.used"] == 1 and result.counts["requests.duplicate_request"] == 1
    assert [(d["reason"], d["line_number"]) for d in result.dead] == [
        ("conflicting_request", 3), ("conflicting_request", 4), ("request_dead_letter", 1)]
    assert result.train.num_rows == 1


def test_a_request_routed_to_another_bucket_is_not_joined():
    line = '{"request_id":"x",' + request_line("rA", "m1", "2026-01-12T08:00:00Z", ["a"])[1:]
    rid = json.loads(line)["request_id"]
    assert request_id_of(line) == "x" and rid == "rA" and bucket_of("x", 64) != bucket_of("rA", 64)
    result = join_bucket(_chunks([line], []), bucket_of("x", 64), 64, SPAN)
    assert [d["reason"] for d in result.dead] == ["ambiguous_request_id"]


def test_out_of_span_keys_and_eval_sampling():
    member_in = next(f"m{i}" for i in range(100) if sample_unit(f"m{i}", "users") < 0.5)
    member_out = next(f"m{i}" for i in range(100) if sample_unit(f"m{i}", "users") >= 0.5)
    requests = [request_line("r1", member_in, "2026-01-18T08:00:00Z", ["a", "b"]),
                request_line("r2", member_out, "2026-01-18T09:00:00Z", ["c"])]
    result = join_bucket(_chunks(requests, [event_line("r0", "a", "click", "2026-01-12T00:10:00Z")], keys=("r0",)),
                         0, 1, SPAN, sample_users=0.5)
    assert result.counts["events.out_of_span"] == 1 and not result.dead
    assert result.eval.num_rows == 2 and result.counts["impressions.sampled_out_eval"] == 1
    assert set(result.items) == {"a", "b", "c"}  # served, even where sampled out of the outputs


def _counters(**kw: int) -> dict[str, int]:
    base = {"requests.lines": 10, "requests.used": 9, "requests.dead.invalid_json": 1,
            "events.lines": 5, "events.used": 4, "events.out_of_span": 1,
            "impressions.total": 90, "written.train": 60, "written.eval": 20, "impressions.inactive_member": 10,
            "examples.train": 60, "examples.eval": 20, "written.dead_letters": 1}
    return base | kw


def test_reconciliation_catches_a_lost_example():
    assert all(eq["holds"] for eq in reconcile(_counters()).values())
    broken = reconcile(_counters(**{"written.train": 59}))
    assert not broken["impressions"]["holds"] and not broken["written_train"]["holds"]
    summary = summarize(_counters(**{"written.train": 59}), {}, {})
    with pytest.raises(IngestError, match="lost or double-counted"):
        check(summary, 1.0, where="/x.failed")


def test_dead_letter_share_is_checked_per_source():
    summary = summarize(_counters(), {}, {})
    assert summary["dead_letters"]["requests"]["share"] == 0.1
    check(summary, 0.1, where="/x")
    with pytest.raises(IngestError, match=r"10.00% of requests lines \(1 of 10\) .* limit of 5.00% .* "
                                          r"top reasons: invalid_json 1\. The dead letters are in /x/dead_letters"):
        check(summary, 0.05, where="/x")


def test_events_of_a_dead_request_are_listed_but_not_counted_again_toward_the_limit():
    counters = _counters(**{"events.used": 2, "events.dead.request_dead_letter": 2, "written.dead_letters": 3})
    shares = summarize(counters, {}, {})["dead_letters"]["events"]
    assert shares | {"by_reason": None} == {"dead_letters": 2, "lines": 5, "counted": 0, "share": 0.0,
                                            "by_reason": None}
