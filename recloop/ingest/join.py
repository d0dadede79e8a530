"""One join bucket: parse its lines, match events to requests, label, split by time.

``join_bucket`` is plain Python (tested without Beam); ``JoinBuckets`` runs it
per bucket and turns its counts into Beam counters. Every line of the bucket
ends in exactly one count: used, a rule drop, out of span, or a dead letter.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa

from recloop.features.examples import ExampleColumns, unix_seconds
from recloop.features.records import EventRecord, RecordError, RequestRecord, parse_event, parse_request
from recloop.features.spec import features_for
from recloop.ingest.labels import label_request
from recloop.ingest.progress import report
from recloop.ingest.read import NAMESPACE, Chunk, Span, bucket_of, request_id_of, unpack
from recloop.ingest.summary import PARSE_REASONS


def sample_unit(key: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key``: the same in every run and process."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class BucketResult:
    """What one bucket produced. ``counts`` keys are Beam counter names."""

    counts: Counter[str] = field(default_factory=Counter)
    dead: list[dict[str, Any]] = field(default_factory=list)
    train: ExampleColumns = field(default_factory=ExampleColumns)
    eval: ExampleColumns = field(default_factory=ExampleColumns)
    activity: Counter[str] = field(default_factory=Counter)  # member -> events used in fresh training requests
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item -> metadata as last served


@dataclass
class _Line:
    source: str
    number: int
    text: str


def _dead(out: BucketResult, stream: str, reason: str, line: _Line, field_: str | None, message: str) -> None:
    out.counts[f"{stream}.dead.{reason}"] += 1
    out.dead.append({"stream": stream, "reason": reason, "field": field_, "message": message,
                     "source": line.source, "line_number": line.number, "line": line.text})


def join_bucket(chunks: Iterable[Chunk], bucket: int, buckets: int, span: Span,
                sample_users: float = 1.0) -> BucketResult:
    """Joins the requests and events of one bucket into labelled examples.

    Args:
      chunks: ``(role, source, payload)`` from ``ReadLines``.
      bucket, buckets: this bucket's number and the bucket count (a request
        whose parsed id routes elsewhere is dead-lettered, never joined wrongly).
      span: dates, windows and the train/eval split.
      sample_users: share of members kept in eval (by a hash of the member id).
    """
    out = BucketResult()
    context: set[str] = set()
    request_lines: list[_Line] = []
    event_lines: list[_Line] = []
    unpacked = []
    for role, source, payload in chunks:
        if role == "keys":
            context.update(payload)
        else:
            unpacked.append((role, source, unpack(payload)))
    # the shuffle delivers chunks in any order; line order makes the output files identical run to run
    for role, source, lines in sorted(unpacked, key=lambda c: (c[0], c[1], c[2][0][0] if c[2] else 0)):
        target = request_lines if role == "requests" else event_lines
        target.extend(_Line(source, number, text) for number, text in lines)
    requests, dead_ids = _parse_requests(out, request_lines, bucket, buckets)
    events = _parse_events(out, event_lines)
    _orphans(out, events, requests, dead_ids, context)
    seen_items: dict[str, list] = {}
    for rid, (request, _) in requests.items():
        _label(out, request, events.get(rid, []), span, sample_users, seen_items)
    out.items = _item_summaries(seen_items)
    return out


def _orphans(out: BucketResult, events: dict[str, list[tuple[EventRecord, _Line]]],
             requests: dict[str, Any], dead_ids: set[str], context: set[str]) -> None:
    """Accounts for the events whose request is not one of the span's parsed requests."""
    for rid, evs in events.items():
        if rid in requests:
            continue
        for _, line in evs:
            if rid in context:
                out.counts["events.out_of_span"] += 1
            elif rid in dead_ids:
                _dead(out, "events", "request_dead_letter", line, "request_id",
                      f"event on request {rid!r}, whose request line is a dead letter")
            else:
                _dead(out, "events", "unknown_request", line, "request_id",
                      f"event on request {rid!r}: no such request in the span or the days around it")


def _label(out: BucketResult, request: RequestRecord, evs: list[tuple[EventRecord, _Line]], span: Span,
           sample_users: float, seen_items: dict[str, list]) -> None:
    """Labels one request and routes its examples: eval (sampled by member), stale, or train."""
    ts = request["ts"]
    is_train = ts < span.eval_start
    labelled = label_request(request, [e for e, _ in evs], span.window_seconds,
                             cutoff=span.eval_start if is_train else None)
    out.counts["impressions.total"] += len(request["impressions"])
    out.counts["impressions.duplicate_impression"] += labelled.drops.pop("duplicate_impression", 0)
    for reason, n in labelled.drops.items():
        out.counts[f"events.{reason}"] += n
    out.counts["events.used"] += labelled.events_used
    for bucket, n in labelled.click_delays.items():
        out.counts[f"click_delay.{bucket}"] += n
    lines = {id(e): line for e, line in evs}
    for reason, event in labelled.dead_events:
        _dead(out, "events", reason, lines[id(event)], "item_id" if reason == "no_impression" else "ts",
              _event_message(reason, event, request))
    _note_items(seen_items, request, labelled.kept)  # served, whatever the rules below keep
    kept, member = len(labelled.kept), request["member"]["member_id"]
    if not is_train:
        if sample_users < 1.0 and sample_unit(member, "users") >= sample_users:
            out.counts["impressions.sampled_out_eval"] += kept
        else:
            labelled.add_to(out.eval)
    elif span.fresh_start is not None and ts < span.fresh_start:
        out.counts["impressions.stale"] += kept
    else:
        labelled.add_to(out.train)
        out.activity[member] += labelled.events_used


def _parse_requests(out: BucketResult, lines: list[_Line], bucket: int, buckets: int
                    ) -> tuple[dict[str, tuple[RequestRecord, _Line]], set[str]]:
    by_id: dict[str, list[tuple[RequestRecord, _Line]]] = defaultdict(list)
    dead_ids: set[str] = set()
    for line in lines:
        try:
            record = parse_request(line.text, source=f"{line.source}:{line.number}")
        except RecordError as e:
            _dead(out, "requests", PARSE_REASONS[e.reason], line, e.field, str(e))
            rid = request_id_of(line.text)
            if rid is not None:
                dead_ids.add(rid)
            continue
        rid = record["request_id"]
        if bucket_of(rid, buckets) != bucket:  # e.g. two request_id keys in one line
            _dead(out, "requests", "ambiguous_request_id", line, "request_id",
                  f"request record: the line names more than one request_id (parsed {rid!r})")
            dead_ids.add(rid)
            continue
        by_id[rid].append((record, line))
    requests: dict[str, tuple[RequestRecord, _Line]] = {}
    for rid, copies in by_id.items():
        texts = {line.text for _, line in copies}
        if len(texts) == 1:  # the same line logged again: keep one
            requests[rid] = copies[0]
            out.counts["requests.used"] += 1
            out.counts["requests.duplicate_request"] += len(copies) - 1
        else:
            dead_ids.add(rid)
            for _, line in copies:
                _dead(out, "requests", "conflicting_request", line, "request_id",
                      f"request record: {len(copies)} different lines share request_id {rid!r}")
    return requests, dead_ids


def _parse_events(out: BucketResult, lines: list[_Line]) -> dict[str, list[tuple[EventRecord, _Line]]]:
    events: dict[str, list[tuple[EventRecord, _Line]]] = defaultdict(list)
    for line in lines:
        try:
            record = parse_event(line.text, source=f"{line.source}:{line.number}")
        except RecordError as e:
            _dead(out, "events", PARSE_REASONS[e.reason], line, e.field, str(e))
            continue
        events[record["request_id"]].append((record, line))
    return events


def _event_message(reason: str, event: EventRecord, request: RequestRecord) -> str:
    if reason == "no_impression":
        return f"event on item {event['item_id']!r}, which request {request['request_id']!r} did not show"
    return (f"event at {event['ts'].isoformat()} is before its request "
            f"{request['request_id']!r} at {request['ts'].isoformat()}")


def _note_items(seen: dict[str, list], request: RequestRecord, kept: list[int]) -> None:
    """Counts showings per item: ``{item: [impressions, first ts, last ts, metadata as last served]}``."""
    ts = unix_seconds(request["ts"])
    for i in kept:
        imp = request["impressions"][i]
        entry = seen.get(imp["item_id"])
        if entry is None:
            seen[imp["item_id"]] = [1, ts, ts, imp["item"]]
            continue
        entry[0] += 1
        entry[1] = min(entry[1], ts)
        if ts > entry[2] or (ts == entry[2] and _metadata(imp["item"]) > _metadata(entry[3])):
            entry[2], entry[3] = ts, imp["item"]


def _item_summaries(seen: dict[str, list]) -> dict[str, dict[str, Any]]:
    return {item_id: {"item_id": item_id, **{k: meta.get(k) for k in _METADATA}, "release_date": _iso(meta),
                      "impressions": n, "first_served": first, "last_served": last}
            for item_id, (n, first, last, meta) in seen.items()}


def _iso(item: dict[str, Any]) -> str | None:
    release = item.get("release_date")
    return None if release is None else release.isoformat()


# the item metadata as served: the declared item features, the release date and the age it gives
_METADATA = (*(f.name for f in features_for(group="item") if f.name not in ("item_id", "age_days")),
             "release_date", "age_days")


def _metadata(item: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(item.get(k)) for k in _METADATA)


def merge_item(items: dict[str, dict[str, Any]], item: dict[str, Any]) -> None:
    """Merges an item summary of one bucket into ``items`` (``MergeItems``): showings
    add up and the metadata is the one last served; a tie in time keeps the larger
    metadata tuple, so the result does not depend on the order buckets merge in."""
    seen = items.get(item["item_id"])
    if seen is None:
        items[item["item_id"]] = dict(item)
        return
    seen["impressions"] += item["impressions"]
    seen["first_served"] = min(seen["first_served"], item["first_served"])
    last = (item["last_served"], _metadata(item)) > (seen["last_served"], _metadata(seen))
    if last:
        seen.update((k, item[k]) for k in _METADATA)
        seen["last_served"] = item["last_served"]


class JoinBuckets(beam.DoFn):
    """``join_bucket`` per bucket; outputs ``train``/``eval`` Arrow batches (main),
    and tagged ``dead`` letters, ``activity`` and ``items`` maps."""

    def __init__(self, buckets: int, span: Span, sample_users: float, progress: str | None = None):
        self.buckets, self.span, self.sample_users, self.progress = buckets, span, sample_users, progress

    def process(self, element: tuple[int, Iterable[Chunk]]) -> Iterator[Any]:
        bucket, chunks = element
        result = join_bucket(chunks, bucket, self.buckets, self.span, self.sample_users)
        for name, n in result.counts.items():
            beam.metrics.Metrics.counter(NAMESPACE, name).inc(n)
        for split, columns in (("train", result.train), ("eval", result.eval)):
            if columns.num_rows:
                yield split, bucket, columns.to_record_batch()
        for letter in result.dead:
            yield beam.pvalue.TaggedOutput("dead", letter)
        yield beam.pvalue.TaggedOutput("activity", dict(result.activity))
        yield beam.pvalue.TaggedOutput("items", result.items)
        report(self.progress, "join")


Batch = tuple[str, int, pa.RecordBatch]  # (split, bucket, examples)
