"""The run state on a real S3 API server (moto on loopback): drift reference, schema versions, undelivered
alerts and the lock, through the weekly run's validate step. The lock also on a GCS emulator (fake-gcs-server)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
from conftest import free_port
from test_validation import weeks  # noqa: F401  (the module's fixture: ingested weeks of seed 21)

from recloop import storage
from recloop.components import steps
from recloop.validation import state

NOW = dt.datetime(2026, 1, 19, 3, 0, tzinfo=dt.UTC)


def test_validate_keeps_its_state_on_s3_and_the_next_week_reads_it_back(weeks, bucket, tmp_path):  # noqa: F811
    runs, _ = weeks(21, 5)
    run_state, registry = f"{bucket}/run-state", f"{bucket}/registry"
    first = steps.validate(str(runs / "i1"), str(tmp_path / "v1"), run_state, registry)
    assert not first["blocking"] and first["schema"] == f"{run_state}/schemas/v001.pbtxt"
    assert state.previous_stats(run_state) == f"{run_state}/previous/train_2026-01-12..2026-01-18/train.pb"
    assert storage.read_bytes(state.previous_stats(run_state)) == (tmp_path / "v1/stats/train.pb").read_bytes()
    assert first["delivery"]["was"] is None and first["logged"]["was"] is None
    assert state.previous_measures(run_state) == {"delivery": first["delivery"]["now"], "logged": first["logged"]["now"]}
    second = steps.validate(str(runs / "i2"), str(tmp_path / "v2"), run_state, registry)
    assert second["spans"]["previous"] == "train 2026-01-12..2026-01-18"  # the drift reference, back from S3
    assert second["delivery"]["was"] == first["delivery"]["now"]  # the measures too, beside the statistics
    assert second["logged"]["was"] == first["logged"]["now"] and "heuristic-v1" in second["logged"]["now"]
    assert {m["feature"] for m in second["measurements"] if m["measure"] == "SHARE_CHANGE"} >= {
        "events.duplicate_share", "events.late_share"}
    assert second["schema"] == f"{run_state}/schemas/v001.pbtxt"
    assert storage.listdir(run_state) == ["previous", "previous.json", "schemas"]  # the lock is gone
    assert not storage.exists(f"{run_state}/lock.json")


def test_undelivered_alerts_wait_in_the_s3_state_for_the_next_run(bucket, tmp_path):
    from recloop.validation.alerts import raise_alerts

    anomaly = {"feature": "duration_min", "check": "drift", "measure": "JENSEN_SHANNON_DIVERGENCE", "distance": 0.9,
               "threshold": 0.1, "blocking": True, "spans": "w2 vs w1", "description": "JS 0.9", "top_changed_values": []}
    run_state, down = f"{bucket}/run-state", f"http://127.0.0.1:{free_port()}"
    outcome = raise_alerts([anomaly], str(tmp_path / "r1"), run="r1", url=down, state_dir=run_state, now=NOW,
                           attempts=1)
    assert outcome["delivered"] is False
    kept = [json.loads(line) for line in storage.read_text(f"{run_state}/undelivered.jsonl").splitlines()]
    assert [a["labels"]["feature"] for a in kept] == ["duration_min"]
    again = raise_alerts([], str(tmp_path / "r2"), run="r2", url=down, state_dir=run_state, now=NOW, attempts=1)
    assert again["resent"] == 1 and storage.exists(f"{run_state}/undelivered.jsonl")


def test_a_second_run_is_refused_while_the_first_holds_the_state(bucket):
    run_state = f"{bucket}/run-state"
    held = r"held by 'validate week 2' on .* since 2026-01-19 03:00 UTC; another run of this pipeline is validating"
    with state.locked(run_state, "validate week 2", now=NOW):
        with pytest.raises(state.StateLocked, match=held), \
                state.locked(run_state, "validate week 3", now=NOW + dt.timedelta(minutes=5)):
            pass
        assert storage.read_json(f"{run_state}/lock.json")["holder"] == "validate week 2"
    assert not storage.exists(f"{run_state}/lock.json")


def test_a_lock_left_by_a_dead_run_is_taken_over_after_a_while(bucket):
    run_state = f"{bucket}/run-state"
    storage.write_json(f"{run_state}/lock.json", {"holder": "validate week 1", "host": "pod-x", "pid": 7,
                                                  "since": NOW.isoformat()})
    with pytest.raises(state.StateLocked, match="wait until 2026-01-19 09:00 UTC"), \
            state.locked(run_state, "validate week 2", now=NOW + dt.timedelta(hours=5)):
        pass
    with state.locked(run_state, "validate week 2", now=NOW + dt.timedelta(hours=7)):
        assert storage.read_json(f"{run_state}/lock.json")["holder"] == "validate week 2"


@pytest.mark.parametrize("store", ["bucket", "gcs_bucket"], ids=["s3", "gs"])
def test_of_many_runs_at_once_exactly_one_holds_the_state(store, request):
    run_state, held, refused = f"{request.getfixturevalue(store)}/run-state", [], []
    inside = threading.Barrier(8)

    def run(i: int) -> None:
        try:
            inside.wait()
            with state.locked(run_state, f"run {i}", now=NOW):
                held.append(i)
                inside.wait(timeout=0.5)  # hold it while the others try
        except state.StateLocked:
            refused.append(i)
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 1 and len(refused) == 7
