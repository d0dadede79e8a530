"""Alerts reach a real Alertmanager; when it is down they are retried, kept, and re-sent by the next run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
from conftest import free_port

from recloop.validation.alerts import raise_alerts

NOW = dt.datetime(2026, 1, 19, 6, 0, tzinfo=dt.UTC)
ANOMALY = {"feature": "duration_min", "check": "drift", "measure": "JENSEN_SHANNON_DIVERGENCE",
           "distance": 0.93, "threshold": 0.1, "blocking": True, "spans": "train 2026-01-12..18 vs 2026-01-05..11",
           "description": "JENSEN_SHANNON_DIVERGENCE 0.9300 is above 0.1", "top_changed_values": []}
WARNING = dict(ANOMALY, feature="label_click", blocking=False)


def _active(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as r:
        return json.loads(r.read())


def test_a_blocking_anomaly_arrives_in_alertmanager_with_its_labels(alertmanager, tmp_path):
    outcome = raise_alerts([ANOMALY, WARNING], str(tmp_path / "run"), run="r1", url=alertmanager, now=NOW)
    assert outcome == {"raised": 1, "resent": 0, "delivered": True, "error": None}
    got = [a for a in _active(alertmanager) if a["labels"].get("run") == "r1"]
    assert [a["labels"] for a in got] == [{"alertname": "RecloopDataAnomaly", "feature": "duration_min",
                                          "check": "drift", "severity": "critical", "run": "r1"}]
    assert "0.9300 > 0.1" in got[0]["annotations"]["summary"]
    local = [json.loads(line) for line in (tmp_path / "run" / "alerts.jsonl").read_text().splitlines()]
    assert [a["labels"]["feature"] for a in local] == ["duration_min"]


def test_alertmanager_down_retries_warns_keeps_and_the_next_run_resends(alertmanager, tmp_path, caplog,
                                                                        record_property):
    down = f"http://127.0.0.1:{free_port()}"
    state = str(tmp_path / "state")
    with caplog.at_level(logging.WARNING, logger="recloop.validation.alerts"):
        outcome = raise_alerts([ANOMALY], str(tmp_path / "run1"), run="r2", url=down, state_dir=state, now=NOW,
                               attempts=3, backoff_s=0.01)
    assert not outcome["delivered"] and outcome["error"]
    assert sum("attempt" in r.message for r in caplog.records) == 3
    assert any("kept in" in r.message and "for the next run" in r.message for r in caplog.records)
    assert len((tmp_path / "run1" / "alerts.jsonl").read_text().splitlines()) == 1
    assert len(Path(state, "undelivered.jsonl").read_text().splitlines()) == 1
    record_property("attempts_while_down", sum("attempt" in r.message for r in caplog.records))
    record_property("alerts_kept", len(Path(state, "undelivered.jsonl").read_text().splitlines()))
    # the next run, with Alertmanager up, sends the earlier alert with its own
    outcome = raise_alerts([dict(ANOMALY, feature="platform")], str(tmp_path / "run2"), run="r3", url=alertmanager,
                           state_dir=state, now=NOW)
    assert outcome == {"raised": 1, "resent": 1, "delivered": True, "error": None}
    runs = {(a["labels"]["run"], a["labels"]["feature"]) for a in _active(alertmanager)}
    assert {("r2", "duration_min"), ("r3", "platform")} <= runs
    assert not Path(state, "undelivered.jsonl").exists()
    record_property("alerts_resent", outcome["resent"])
    record_property("alerts_left_undelivered", 0)


def test_without_a_url_alerts_are_recorded_and_kept_for_later(tmp_path):
    outcome = raise_alerts([ANOMALY], str(tmp_path / "run"), run="r4", state_dir=str(tmp_path / "s"), now=NOW)
    assert outcome["raised"] == 1 and not outcome["delivered"] and "recorded only" in outcome["error"]
    assert (tmp_path / "s" / "undelivered.jsonl").exists()
