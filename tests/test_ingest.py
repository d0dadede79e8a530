"""The ingest Beam job, run for real (DirectRunner, in_memory) on hand-built and simulated logs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
import tensorflow as tf
from conftest import ITEM, SimWorld, event_line, read_truth_json, request_line

from recloop.features import logs
from recloop.features.examples import COLUMNS, from_tf_example
from recloop.features.records import parse_event
from recloop.ingest import IngestConfig, IngestError, run
from recloop.ingest.join import sample_unit

DAY = dt.timedelta(days=1)


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """The examples of one .tfrecord.gz file, or of every one in a folder."""
    path = Path(path)
    files = [str(path)] if path.is_file() else sorted(str(p) for p in path.glob("*.tfrecord.gz"))
    if not files:
        return []
    return [from_tf_example(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def dead_letters(out: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(Path(out, "dead_letters").glob("*.jsonl")) for line in logs.read_lines(str(p))]


# ---------------------------------------------------------------- hand-built logs

@pytest.fixture(scope="module")
def hand_logs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three days, 2026-01-12..14 (the 14th is eval), every labelling case once."""
    root = str(tmp_path_factory.mktemp("hand-logs"))
    truncated = request_line("rF", "m6", "2026-01-12T11:00:00Z", ["g"])[:120]
    requests = {
        "2026-01-11": [request_line("rD", "m4", "2026-01-11T22:00:00Z", ["h"])],  # before the span: ids only
        "2026-01-12": [request_line("rA", "m1", "2026-01-12T08:00:00Z", ["a", "b", "a"]),
                       request_line("rE", "m5", "2026-01-12T09:00:00Z", ["f"]), truncated, ""],
        "2026-01-13": [request_line("rB", "m2", "2026-01-13T23:59:00Z", ["c"])],
        "2026-01-14": [request_line("rC", "m3", "2026-01-14T10:00:00Z", ["d", "e"])],
    }
    dup = event_line("rA", "a", "click", "2026-01-12T08:00:00Z")
    events = {
        "2026-01-12": [dup, dup,  # same second as the request; logged twice
                       event_line("rA", "a", "like", "2026-01-12T08:10:00Z"),
                       event_line("rA", "b", "start", "2026-01-12T07:59:00Z"),  # before its request
                       event_line("rA", "z", "click", "2026-01-12T08:01:00Z"),  # an item rA did not show
                       event_line("rD", "h", "click", "2026-01-12T01:00:00Z"),  # request before the span
                       event_line("r-nobody", "a", "click", "2026-01-12T12:00:00Z"),
                       event_line("rF", "g", "click", "2026-01-12T11:00:05Z")],  # its request is a dead letter
        "2026-01-13": [event_line("rA", "b", "click", "2026-01-13T09:00:00Z")],  # 25 h later: outside the window
        "2026-01-14": [event_line("rB", "c", "click", "2026-01-14T00:00:30Z"),  # after the split: not a train label
                       event_line("rC", "e", "click", "2026-01-14T10:05:00Z")],
    }
    for stream, days in (("requests", requests), ("events", events)):
        for day, lines in days.items():
            logs.write_lines(f"{logs.partition_dir(root, stream, dt.date.fromisoformat(day))}/part-00000.jsonl",
                             lines)
    return root


def _ingest(logs_root: str, out: Path, **kw: Any) -> dict[str, Any]:
    config = IngestConfig(logs=logs_root, start=kw.pop("start", dt.date(2026, 1, 12)),
                          end=kw.pop("end", dt.date(2026, 1, 14)), out=str(out), **kw)
    return run(config)


@pytest.fixture(scope="module")
def hand(hand_logs: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("hand-out") / "ingest"
    return out, _ingest(hand_logs, out, min_member_events=0, max_dead_letter_share=0.5)


def _labels(ex: dict[str, Any]) -> tuple[int, ...]:
    return tuple(ex[f"label_{e}"] for e in ("click", "start", "complete", "like"))


def test_labels_of_hand_built_logs(hand):
    out, summary = hand
    train = {(e["request_id"], e["item_id"]): e for e in read_examples(out / "train")}
    evaluation = {(e["request_id"], e["item_id"]): e for e in read_examples(out / "eval")}
    assert {k: _labels(e) for k, e in train.items()} == {
        ("rA", "a"): (1, 0, 0, 1),  # click at the request's second, like 10 min later, duplicate click once
        ("rA", "b"): (0, 0, 0, 0),  # a click 25 h later is outside the window; a start before the request is dead
        ("rE", "f"): (0, 0, 0, 0),
        ("rB", "c"): (0, 0, 0, 0),  # its click falls in the eval period
    }
    assert {k: _labels(e) for k, e in evaluation.items()} == {("rC", "d"): (0, 0, 0, 0), ("rC", "e"): (1, 0, 0, 0)}
    assert train[("rA", "a")]["position"] == 0  # the first showing of a repeated item is kept
    assert set(train[("rA", "a")]) == set(COLUMNS)
    assert summary["lines"]["events"] == {"read": 11, "blank": 0, "parsed": 11, "used": 3, "duplicate_event": 1,
                                          "outside_window": 1, "after_split": 1, "out_of_span": 1}
    assert summary["lines"]["requests"] == {"read": 5, "blank": 1, "parsed": 4, "used": 4, "duplicate_request": 0}
    assert summary["impressions"]["duplicate_impression"] == 1


def test_dead_letters_of_hand_built_logs_name_reason_source_and_line(hand, hand_logs):
    out, summary = hand
    got = {(d["stream"], d["reason"], d["field"]): d for d in dead_letters(out)}
    assert set(got) == {("requests", "invalid_json", "<line>"), ("events", "before_request", "ts"),
                        ("events", "no_impression", "item_id"), ("events", "unknown_request", "request_id"),
                        ("events", "request_dead_letter", "request_id")}
    for d in got.values():
        assert Path(d["source"]).read_text().splitlines()[d["line_number"] - 1] == d["line"]
    assert "rF" in got[("events", "request_dead_letter", "request_id")]["message"]
    assert summary["dead_letters"]["events"]["by_reason"] == {
        "before_request": 1, "no_impression": 1, "request_dead_letter": 1, "unknown_request": 1}


def test_time_split_leaves_nothing_from_eval_time_in_train(hand):
    out, summary = hand
    eval_start = int(dt.datetime(2026, 1, 14, tzinfo=dt.UTC).timestamp())
    assert summary["span"]["eval_start"] == "2026-01-14T00:00:00+00:00"
    assert max(e["ts"] for e in read_examples(out / "train")) < eval_start
    assert min(e["ts"] for e in read_examples(out / "eval")) >= eval_start
    assert summary["lines"]["events"]["after_split"] == 1


def test_activity_threshold_and_freshness_drop_training_examples_only(hand_logs, tmp_path):
    summary = _ingest(hand_logs, tmp_path / "a", max_dead_letter_share=0.5)  # min_member_events=1
    train = read_examples(tmp_path / "a" / "train")
    assert {e["member_id"] for e in train} == {"m1"}  # m2's only click is after the split; m5 has none
    assert summary["impressions"]["inactive_member"] == 2
    assert {e["member_id"] for e in read_examples(tmp_path / "a" / "eval")} == {"m3"}  # eval keeps everyone
    summary = _ingest(hand_logs, tmp_path / "f", min_member_events=0, freshness_days=1, max_dead_letter_share=0.5)
    assert {e["request_id"] for e in read_examples(tmp_path / "f" / "train")} == {"rB"}
    assert summary["impressions"]["stale"] == 3
    assert summary["span"]["fresh_start"] == "2026-01-13T00:00:00+00:00"


def test_retrieval_and_items_outputs(hand):
    out, summary = hand
    retrieval = read_examples(out / "retrieval" / "train")
    assert [(e["request_id"], e["item_id"]) for e in retrieval] == [("rA", "a")]
    assert [(e["request_id"], e["item_id"]) for e in read_examples(out / "retrieval" / "eval")] == [("rC", "e")]
    items = {i["item_id"]: i for i in map(json.loads, logs.read_lines(str(out / "items" / "items.jsonl.gz")))}
    assert set(items) == {"a", "b", "c", "d", "e", "f"}
    assert items["a"] | {"impressions": 0} == {**ITEM, "item_id": "a", "impressions": 0,
                                               "first_served": 1768204800, "last_served": 1768204800}
    assert items["a"]["impressions"] == 1  # the repeated showing in rA is a duplicate, not a second impression
    assert summary["items"]["served"] == 6


def test_reconciliation_holds_and_is_in_the_summary(hand, record_property):
    _, summary = hand
    rec = summary["reconciliation"]
    record_property("equations", len(rec))
    record_property("equations_holding", sum(eq["holds"] for eq in rec.values()))
    assert set(rec) == {"requests", "events", "impressions", "dead_letters", "written_train", "written_eval"}
    assert all(eq["holds"] for eq in rec.values())
    assert rec["events"]["left"] == 11 and rec["events"]["terms"]["dead_letters"] == 4
    assert rec["impressions"]["equation"].startswith("impressions in used requests = examples_train + examples_eval")
    assert summary["beam_counters"]["impressions.total"] == 7


# ---------------------------------------------------------------- simulated logs


@pytest.fixture(scope="module")
def corrupt_ingest(corrupt_world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corrupt-ingest") / "week1"
    start = corrupt_world.week_start(1)
    return out, _ingest(corrupt_world.root, out, start=start, end=start + 6 * DAY, max_dead_letter_share=0.05)


# simulator corruption kind -> (dead-letter reason, field) per stream
KIND_REASON = {
    ("requests", "truncated_json"): ("invalid_json", "<line>"),
    ("requests", "wrong_type"): ("wrong_type", "context.hour_of_day"),
    ("requests", "missing_field"): ("missing_field", "context"),
    ("requests", "bad_timestamp"): ("invalid_value", "ts"),
    ("events", "truncated_json"): ("invalid_json", "<line>"),
    ("events", "wrong_type"): ("wrong_type", "item_id"),
    ("events", "missing_field"): ("missing_field", "item_id"),
    ("events", "bad_timestamp"): ("invalid_value", "ts"),
    ("events", "unknown_event_type"): ("invalid_value", "event"),
    ("events", "unknown_request"): ("unknown_request", "request_id"),
}


def test_every_corrupt_line_kind_lands_in_dead_letters_with_its_reason(corrupt_world, corrupt_ingest,
                                                                       record_property):
    out, summary = corrupt_ingest
    start = corrupt_world.week_start(1)
    read_days = {"requests": (start, start + 6 * DAY), "events": (start, start + 7 * DAY)}
    truth = [c for c in read_truth_json(corrupt_world.root, "truth/corruption/week-00000.json")
             + read_truth_json(corrupt_world.root, "truth/corruption/week-00001.json")
             if read_days[c["stream"]][0] <= dt.date.fromisoformat(c["dt"]) <= read_days[c["stream"]][1]]
    expected = Counter(KIND_REASON[(c["stream"], c["kind"])] + (c["stream"],) for c in truth
                       if c["kind"] != "duplicate_event")
    letters = dead_letters(out)
    got = Counter((d["reason"], d["field"], d["stream"]) for d in letters if d["reason"] != "request_dead_letter")
    assert got == expected
    assert {kind for _, kind in KIND_REASON} - {c["kind"] for c in truth} == set(), "every kind occurs in the span"

    # events whose request line is corrupt are dead letters too, with their own reason
    dead_requests = {c["request_id"] for c in truth if c["stream"] == "requests"}
    valid_events = []
    for path in logs.partition_files(corrupt_world.root, "events", *read_days["events"]):
        for line in logs.read_lines(path):
            try:
                valid_events.append(parse_event(line))
            except ValueError:
                pass
    assert sum(d["reason"] == "request_dead_letter" for d in letters) == sum(
        e["request_id"] in dead_requests for e in valid_events)
    # a duplicated event line is dropped once, not dead-lettered
    span_ids = {e["request_id"] for e in valid_events} - dead_requests
    dups = [c for c in truth if c["kind"] == "duplicate_event" and c["request_id"] in span_ids
            and c["request_id"].split("-")[1] == "001"]
    assert summary["lines"]["events"]["duplicate_event"] == len(dups) > 0
    assert all(eq["holds"] for eq in summary["reconciliation"].values())
    record_property("corrupt_rate", corrupt_world.corrupt_rate)
    record_property("corrupt_lines_by_kind", json.dumps(dict(sorted(Counter(
        f"{c['stream']}/{c['kind']}" for c in truth).items()))))
    record_property("dead_letters", len(letters))
    record_property("dead_letters_by_reason", json.dumps(dict(sorted(Counter(d["reason"] for d in letters).items()))))
    record_property("duplicate_events_dropped", len(dups))
    record_property("reconciliation_ok", all(eq["holds"] for eq in summary["reconciliation"].values()))


def test_examples_are_readable_by_tensorflow_with_a_feature_spec(corrupt_ingest):
    out, summary = corrupt_ingest
    spec = {name: tf.io.VarLenFeature({str: tf.string, int: tf.int64, float: tf.float32}[kind])
            for name, kind in COLUMNS.items()}
    files = sorted(str(p) for p in (out / "train").glob("*.tfrecord.gz"))
    n = 0
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512).map(
            lambda x: tf.io.parse_example(x, spec)):
        n += int(tf.shape(batch["label_click"].values)[0])
    assert n == summary["examples"]["train"] > 1000
    assert summary["positives"]["train"]["click"] > 0
    assert 0 < summary["positive_negative_ratio"]["train"]["click"] < 1


def test_sampling_is_deterministic_and_by_the_hash(clean_world, tmp_path):
    start = clean_world.week_start(1)
    kw = {"start": start, "end": start + 6 * DAY, "sample_users": 0.5, "sample_data": 0.5, "min_member_events": 0}
    first = _ingest(clean_world.root, tmp_path / "one", **kw)
    _ingest(clean_world.root, tmp_path / "two", **kw)

    def content(folder: Path) -> dict[str, Any]:
        # examples decoded: tf.Example bytes are not canonical (protobuf map order varies by process)
        return {str(p.relative_to(folder)): read_examples(p) if p.name.endswith(".tfrecord.gz")
                else hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "summary.json"}

    assert content(tmp_path / "one") == content(tmp_path / "two")
    evaluation = read_examples(tmp_path / "one" / "eval")
    assert evaluation and all(sample_unit(e["member_id"], "users") < 0.5 for e in evaluation)
    train = read_examples(tmp_path / "one" / "train")
    assert all(sample_unit(f"{e['request_id']}:{e['item_id']}", "data") < 0.5 for e in train)
    imp = first["impressions"]
    assert 0.35 < len(train) / (len(train) + imp["sampled_out_train"]) < 0.65
    assert imp["sampled_out_eval"] > 0


def test_dead_letter_limit_fails_the_run_and_keeps_outputs_out_of_the_way(corrupt_world, tmp_path):
    start = corrupt_world.week_start(1)
    out = tmp_path / "ingest"
    with pytest.raises(IngestError) as info:
        _ingest(corrupt_world.root, out, start=start, end=start + 6 * DAY, max_dead_letter_share=0.001)
    message = str(info.value)
    assert "above the limit of 0.10% (--max-dead-letter-share)" in message
    assert "top reasons: " in message
    assert "of requests lines" in message or "of events lines" in message
    assert not out.exists()
    failed = tmp_path / "ingest.failed"
    summary = json.loads((failed / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == message
    assert dead_letters(failed)
    assert not list(tmp_path.glob("ingest.staging-*"))


def test_an_existing_output_needs_overwrite(hand_logs, hand):
    out, _ = hand
    with pytest.raises(IngestError, match="--overwrite"):
        _ingest(hand_logs, out)


def test_no_request_logs_in_the_span_is_an_error(hand_logs, tmp_path):
    with pytest.raises(IngestError, match="no request logs"):
        _ingest(hand_logs, tmp_path / "x", start=dt.date(2027, 1, 1), end=dt.date(2027, 1, 7))


@pytest.mark.parametrize(("kw", "message"), [
    ({"eval_days": 3}, "eval_days=3 leaves no training day in a 3-day span"),
    ({"end": dt.date(2026, 1, 11)}, "end 2026-01-11 is before start 2026-01-12"),
    ({"sample_users": 0.0}, "greater than 0"),
])
def test_bad_parameters_are_named(kw, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        IngestConfig(logs="x", start=dt.date(2026, 1, 12), out=str(tmp_path), **({"end": dt.date(2026, 1, 14)} | kw))


def test_paths_may_be_urls(hand_logs, hand, tmp_path):
    """Logs and outputs go through fsspec (and TensorFlow's file systems), so object stores work the same way."""
    out, _ = hand
    summary = run(IngestConfig(logs=f"file://{hand_logs}", start=dt.date(2026, 1, 12), end=dt.date(2026, 1, 14),
                               out=f"file://{tmp_path}/u", min_member_events=0, max_dead_letter_share=0.5))
    assert all(eq["holds"] for eq in summary["reconciliation"].values())
    assert read_examples(tmp_path / "u" / "train") == read_examples(out / "train")
    assert {d["source"].split("://")[0] for d in dead_letters(tmp_path / "u")} == {"file"}


def test_a_line_that_is_not_utf8_is_a_dead_letter_not_a_crash(tmp_path):
    day = tmp_path / "logs" / "requests" / "dt=2026-01-12"
    day.mkdir(parents=True)
    good = request_line("rA", "m1", "2026-01-12T08:00:00Z", ["a"]).encode()
    (day / "part-00000.jsonl").write_bytes(good + b"\n" + good.replace(b'"rA"', b'"r\xff"') + b"\n")
    summary = _ingest(str(tmp_path / "logs"), tmp_path / "out", end=dt.date(2026, 1, 13), min_member_events=0,
                      max_dead_letter_share=0.6)
    (letter,) = dead_letters(tmp_path / "out")
    assert (letter["reason"], letter["line_number"]) == ("invalid_json", 2) and "\\xff" in letter["line"]
    assert summary["examples"]["train"] == 1


def test_logs_and_outputs_on_s3(hand_logs, hand, bucket, tmp_path):
    """The same ingest with its logs and its output (spill and staging included) on a real S3 API server."""
    from recloop import storage

    out, _ = hand
    storage.upload(hand_logs, f"{bucket}/logs")
    summary = run(IngestConfig(logs=f"{bucket}/logs", start=dt.date(2026, 1, 12), end=dt.date(2026, 1, 14),
                               out=f"{bucket}/ingest", min_member_events=0, max_dead_letter_share=0.5))
    assert all(eq["holds"] for eq in summary["reconciliation"].values())
    assert storage.listdir(bucket) == ["ingest", "logs"]  # no staging or spill left behind
    local = storage.download(f"{bucket}/ingest", str(tmp_path / "u"))
    assert read_examples(Path(local) / "train") == read_examples(out / "train")
    assert {d["source"].split("://")[0] for d in dead_letters(Path(local))} == {"s3"}


def test_a_weekly_backfill_writes_one_ingest_output_per_week_in_one_process(clean_world, tiny_ingest, tmp_path):
    from typer.testing import CliRunner

    from recloop.cli.app import app
    from recloop.ingest.backfill import weeks

    start = clean_world.week_start(0)
    with pytest.raises(ValueError, match=r"whole weeks: .* is 10 days \(3 left over\); end on 2026-01-11"):
        weeks(start, start + 9 * DAY)
    out = tmp_path / "backfill"
    result = CliRunner().invoke(app, ["ingest", "--logs", clean_world.root, "--start", start.isoformat(),
                                      "--end", (start + 13 * DAY).isoformat(), "--out", str(out), "--weekly"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["week=2026-01-05", "week=2026-01-12"]
    for folder in folders:
        summary = json.loads((out / folder / "summary.json").read_text())
        assert summary["status"] == "ok" and all(eq["holds"] for eq in summary["reconciliation"].values())
    # the second week is the same ingest as a plain run of that week
    same = json.loads(Path(tiny_ingest, "summary.json").read_text())
    again = json.loads((out / "week=2026-01-12" / "summary.json").read_text())
    assert again["examples"] == same["examples"] and again["span"] == same["span"]
    bad = CliRunner().invoke(app, ["ingest", "--logs", clean_world.root, "--start", start.isoformat(),
                                   "--end", (start + 9 * DAY).isoformat(), "--out", str(tmp_path / "x"), "--weekly"])
    assert bad.exit_code == 2 and "whole weeks" in bad.output
