"""Faults of the running server: a kill -9 under load, then a restart on the same registry and logs.

The server is a real ``recloop serve`` subprocess on 127.0.0.1 under a bounded load from the real ``hey``.
The other faults (a push killed at each step, a corrupt model, corrupt log lines, fuzzed requests, a hot swap
under load, Alertmanager down) are tested next to what they break; bench/faults.py lists them all.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SERVE_DAY, copy_version, require_binary

from recloop import storage
from recloop.features.records import parse_request
from recloop.serving.registry import Registry

CLIENTS = 8
REQUESTS = 3000
UPLOAD_S = 1.0  # --log-upload-s of the S3 kill test
RATE = 50  # requests per second per client in the S3 kill test: at most 400/s, so the load outlasts the kill
KILL_AFTER_S = 3.0


def _instance(member_id: str = "m0000001") -> dict:
    return {"member_id": member_id, "member": {"tenure_days": 40, "country": "US", "preferred_category": "yoga"},
            "context": {"hour_of_day": 8, "day_of_week": 0, "platform": "ios"}, "k": 5}


def _log_files(logs: str) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(Path(logs, "requests").rglob("*.jsonl"))}


def _records(files: dict[str, bytes]) -> list[dict]:
    """Every line of every file through the contract: a file must end with a newline (no torn last line)."""
    records = []
    for path, data in files.items():
        assert data.endswith(b"\n"), f"{path} ends with a partial line: {data[-200:]!r}"
        records += [parse_request(line, source=path) for line in data.decode("utf-8").split("\n")[:-1]]
    return records


@pytest.mark.slow
def test_a_kill_9_under_load_leaves_whole_lines_and_a_restart_serves_the_same_version(
        start_server, tiny_model, clean_world, tmp_path, record_property):
    hey = require_binary("hey", "the kill happens under a bounded load from a real load tool")
    root = str(tmp_path / "registry")
    version = copy_version(tiny_model, root)
    Registry(root).switch(version, None, "push", SERVE_DAY)
    victim = start_server("--registry", root, catalog=clean_world.root)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"instances": [_instance()]}))
    load = subprocess.Popen([hey, "-n", str(REQUESTS), "-c", str(CLIENTS), "-t", "10", "-m", "POST",
                             "-T", "application/json", "-H", "x-recloop-time: 2026-01-19T08:00:00Z", "-D", str(body),
                             "-o", "csv", victim.url], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(timeout=30) == -signal.SIGKILL
    out, _ = load.communicate(timeout=120)
    statuses = [line.split(",")[6] for line in out.splitlines()[1:]]  # hey's CSV: answered requests only
    answered = statuses.count("200")
    assert set(statuses) <= {"200"}, set(statuses)
    assert 0 < answered < REQUESTS, "the kill must land during the load"

    files = _log_files(victim.logs)
    records = _records(files)  # the kill left no torn line: every line parses
    lines = len(records)
    assert len({r["request_id"] for r in records}) == lines
    assert {r["model_version"] for r in records} == {version}
    # a record is queued before its answer is sent: at most the requests in flight at the kill are logged
    # without an answer; records still in the writer's queue at the kill are lost
    assert lines <= answered + CLIENTS, (lines, answered)
    record_property("requests_sent", REQUESTS)
    record_property("answered_200", answered)
    record_property("failed_at_kill", REQUESTS - len(statuses))
    record_property("log_files", len(files))
    record_property("log_lines", lines)
    record_property("lines_lost_at_kill", max(0, answered - lines))
    record_property("lines_without_answer", max(0, lines - answered))
    record_property("torn_lines", 0)

    started = time.monotonic()
    restarted = start_server("--registry", root, "--logs", victim.logs, catalog=clean_world.root)  # the last --logs
    restart_s = time.monotonic() - started
    pages = restarted.predict([_instance(), _instance("m0000002"), _instance("someone-new")]).json()["predictions"]
    assert {page["model_version"] for page in pages} == {Registry(root).pointer().version} == {version}
    assert restarted.stop() == 0  # SIGTERM: the queue is written before exit
    after = _log_files(victim.logs)
    for path, data in files.items():
        assert after[path].startswith(data), f"the restart rewrote {path}"
    again = _records(after)
    assert len(again) == lines + 3 and len({r["request_id"] for r in again}) == lines + 3
    assert {p["request_id"] for p in pages} <= {r["request_id"] for r in again}
    record_property("restart_s", round(restart_s, 1))
    record_property("restart_model_version", pages[0]["model_version"])
    record_property("log_lines_after_restart", len(again))


def _bucket_files(logs: str) -> dict[str, bytes]:
    fs, base = storage.filesystem(logs)
    return {path: fs.cat_file(path) for path in sorted(fs.find(f"{base}/requests"))}


@pytest.mark.slow
def test_a_kill_9_under_load_with_logs_on_s3_loses_at_most_one_upload_interval_and_counts_the_rest(
        start_server, tiny_model, clean_world, bucket, tmp_path, record_property):
    hey = require_binary("hey", "the kill happens under a bounded load from a real load tool")
    root = str(tmp_path / "registry")
    version = copy_version(tiny_model, root)
    Registry(root).switch(version, None, "push", SERVE_DAY)
    logs, spool = f"{bucket}/logs", tmp_path / "spool"
    options = ("--registry", root, "--logs", logs, "--log-spool", str(spool), "--log-upload-s", str(UPLOAD_S))
    victim = start_server(*options, catalog=clean_world.root)  # the last --logs wins
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"instances": [_instance()]}))
    load = subprocess.Popen([hey, "-n", str(REQUESTS), "-c", str(CLIENTS), "-q", str(RATE), "-t", "10", "-m", "POST",
                             "-T", "application/json", "-H", "x-recloop-time: 2026-01-19T08:00:00Z", "-D", str(body),
                             "-o", "csv", victim.url], stdout=subprocess.PIPE, text=True)
    time.sleep(KILL_AFTER_S)
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(timeout=30) == -signal.SIGKILL
    out, _ = load.communicate(timeout=120)
    rows = [line.split(",") for line in out.splitlines()[1:]]  # hey's CSV: answered requests only
    statuses = [row[6] for row in rows]
    answered = statuses.count("200")
    assert set(statuses) <= {"200"}, set(statuses)
    assert 0 < answered < REQUESTS, "the kill must land during the load"
    answered_at = [float(row[7]) + float(row[0]) for row in rows]  # offset + response time: seconds into the load

    # what an eviction keeps (the pod and its spool gone): the objects uploaded before the kill, each whole
    at_kill = _records(_bucket_files(logs))
    not_uploaded = answered - len(at_kill)

    def traffic(seconds: float) -> int:  # answers in the last ``seconds`` before the kill
        return sum(t > max(answered_at) - seconds for t in answered_at)

    # one interval of traffic, plus the upload in flight and the writer's 0.2 s look: 0.5 s of slack
    assert not_uploaded <= traffic(UPLOAD_S + 0.5), (not_uploaded, traffic(UPLOAD_S))
    # what the killed server left in its spool: whole lines, and torn last lines a restart must count
    left = [p.read_bytes() for p in spool.rglob("*") if p.is_file() and "dt=" in str(p.parent)]
    spool_lines = sum(data.count(b"\n") for data in left)
    torn = sum(bool(data) and not data.endswith(b"\n") for data in left)

    restarted = start_server(*options, catalog=clean_world.root)
    restarted.wait_for(lambda: restarted.metric("recloop_log_uploaded_total") >= spool_lines, "the spool's upload")
    counted = restarted.metric("recloop_log_dropped_total")  # the torn lines, before any new traffic
    pages = restarted.predict([_instance(), _instance("m0000002"), _instance("someone-new")]).json()["predictions"]
    assert restarted.stop() == 0  # SIGTERM: queued records are written and uploaded before exit
    after = _records(_bucket_files(logs))
    ids = [r["request_id"] for r in after]
    assert len(set(ids)) == len(ids), "a record was uploaded twice"
    assert {p["request_id"] for p in pages} <= set(ids)
    assert {r["request_id"] for r in at_kill} <= set(ids)
    assert len(after) == len(at_kill) + spool_lines + 3  # the spool uploaded, nothing else lost or added
    assert counted == torn
    lines = len(after) - 3
    # answered but not in the bucket: the torn lines (counted by the restart) and the records still in the
    # killed server's memory (its queue and the batch being written: at most the requests in flight)
    lost = max(0, answered - lines)
    assert lost <= torn + CLIENTS, (lost, torn)
    record_property("upload_interval_s", UPLOAD_S)
    record_property("requests_sent", REQUESTS)
    record_property("answered_200", answered)
    record_property("failed_at_kill", REQUESTS - len(statuses))
    record_property("lines_answered_in_last_interval", traffic(UPLOAD_S))
    record_property("lines_uploaded_at_kill", len(at_kill))
    record_property("lines_not_uploaded_at_kill", not_uploaded)
    record_property("lines_in_spool_at_kill", spool_lines)
    record_property("torn_lines_at_kill", torn)
    record_property("restart_uploaded_from_spool", spool_lines)
    record_property("restart_counted_dropped", int(counted))
    record_property("log_lines_after_restart", len(after))
    record_property("lines_lost", lost)
    record_property("lines_without_answer", max(0, lines - answered))
