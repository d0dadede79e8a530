"""Tests of recloop.serving.requestlog: hourly files, bounded queue, tail repair, remote upload, errors; the
uploads (interval, size, a killed run's spool, retries and drops) against a real S3 API server (moto)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from recloop import storage
from recloop.features.logs import partition_files
from recloop.serving.logspool import default_spool, safe_name
from recloop.serving.logtail import repair_tail
from recloop.serving.requestlog import RequestLog

UTC = dt.UTC


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def hour_file(root: Path | str, day: int, hour: int, prefix: str = "h1-w0") -> str:
    return f"{root}/requests/dt=2026-01-{day:02d}/{prefix}-{hour:02d}.jsonl"


def final_uri(path: str) -> str:
    """The URI fsspec names a remote path by (``memory://x/..`` reads back as ``memory:///x/..``)."""
    fs, base = fsspec.core.url_to_fs(path)
    return fs.unstrip_protocol(base)


def read(path: str) -> str:
    with fsspec.open(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


class BlockedLog(RequestLog):
    """A writer whose writes wait until the test releases them."""

    def __init__(self, *args, **kwargs) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)

    def _append(self, fd: int, data: bytes) -> int:
        self.entered.set()
        assert self.release.wait(5), "the test never released the writer"
        return super()._append(fd, data)


class PausedLog(RequestLog):
    """A writer that starts reading the queue only once the test says ``go``: the puts before form one batch."""

    def __init__(self, *args, **kwargs) -> None:
        self.go = threading.Event()
        super().__init__(*args, **kwargs)

    def _run(self) -> None:
        assert self.go.wait(5), "the test never started the writer"
        super()._run()


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default spools (``<temp dir>/recloop-spool``) under the test's folder: no test finds another's."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://rl-{uuid.uuid4().hex}"
    yield root
    fs, base = fsspec.core.url_to_fs(root)
    if fs.exists(base):
        fs.rm(base, recursive=True)


def test_lines_land_in_their_date_and_hour_files_whole_and_in_order(tmp_path: Path) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    puts = [('{"r":1}', at(5, 10, 1)), ('{"r":2}', at(5, 11, 0)), ('{"r":3}', at(5, 10, 59)),
            ('{"r":"café"}', at(6, 0, 0)), ('{"r":5}', dt.datetime(2026, 1, 5, 13, 30, tzinfo=plus2))]
    log = RequestLog(str(tmp_path), "h1")
    try:
        assert all(log.put(line, ts) for line, ts in puts)
        log.flush()
        assert (log.written, log.dropped, log.depth) == (5, 0, 0)
        assert log.files == [hour_file(tmp_path, 5, 10), hour_file(tmp_path, 5, 11), hour_file(tmp_path, 6, 0)]
    finally:
        log.close()
    assert read(hour_file(tmp_path, 5, 10)) == '{"r":1}\n{"r":3}\n'
    assert read(hour_file(tmp_path, 5, 11)) == '{"r":2}\n{"r":5}\n'  # 13:30+02:00 is 11:30 UTC
    assert read(hour_file(tmp_path, 6, 0)) == '{"r":"café"}\n'
    assert partition_files(str(tmp_path), "requests", dt.date(2026, 1, 5), dt.date(2026, 1, 6)) == log.files


def test_full_queue_refuses_and_counts_then_writes_everything_accepted(tmp_path: Path) -> None:
    log = BlockedLog(str(tmp_path), "h1", max_queue=5, flush_interval_s=60)
    try:
        assert log.put("first", at(5, 10))
        assert log.entered.wait(2)  # the writer holds "first", the queue is empty again
        accepted = [log.put(f"line{i}", at(5, 10)) for i in range(10)]
        assert accepted == [True] * 5 + [False] * 5
        assert (log.dropped, log.depth, log.written) == (5, 6, 0)
        with pytest.raises(TimeoutError, match="6 records"):
            log.flush(timeout_s=0.05)
    finally:
        log.release.set()
    log.flush()
    assert (log.written, log.dropped, log.depth) == (6, 5, 0)
    assert log.written + log.dropped == 11
    log.close()
    assert read(hour_file(tmp_path, 5, 10)).splitlines() == ["first"] + [f"line{i}" for i in range(5)]


@pytest.mark.parametrize(("before", "after", "cut"), [
    ('{"a":1}\n{"b":', '{"a":1}\n', 5),
    ('{"b":', "", 5),
    ('{"a":1}\n', '{"a":1}\n', 0),
])
def test_a_partial_last_line_is_cut_before_appending(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     before: str, after: str, cut: int) -> None:
    path = hour_file(tmp_path, 5, 10)
    os.makedirs(os.path.dirname(path))
    Path(path).write_text(before)
    with caplog.at_level(logging.WARNING, logger="recloop.serving.requestlog"):
        log = RequestLog(str(tmp_path), "h1")
        log.put('{"c":3}', at(5, 10, 30))
        log.flush()
        log.close()
    assert read(path) == after + '{"c":3}\n'
    assert log.repaired_bytes == cut
    assert (path in caplog.text) == (cut > 0)


def test_repair_tail_finds_a_newline_far_back(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n' + b"x" * 70_000)
    assert repair_tail(str(path)) == 70_000
    assert path.read_bytes() == b'{"a":1}\n'


def test_short_writes_are_completed(tmp_path: Path) -> None:
    class ShortLog(RequestLog):
        def _append(self, fd: int, data: bytes) -> int:
            return super()._append(fd, data[:3])

    log = ShortLog(str(tmp_path), "h1")
    for i in range(3):
        log.put(f'{{"n":{i}}}', at(5, 10))
    log.close()
    assert read(hour_file(tmp_path, 5, 10)) == '{"n":0}\n{"n":1}\n{"n":2}\n'
    assert log.written == 3


def test_a_write_failing_midway_counts_whole_lines_and_repairs_the_tail(tmp_path: Path) -> None:
    class FailingLog(PausedLog):
        fail = True

        def _append(self, fd: int, data: bytes) -> int:
            if not self.fail:
                return super()._append(fd, data)
            if data.startswith(b"aaaa"):
                return super()._append(fd, data[:7])  # "aaaa\nbb": one whole line, then a fragment
            raise OSError(28, "No space left on device")

    log = FailingLog(str(tmp_path), "h1")
    for line in ("aaaa", "bbbb", "cccc"):
        log.put(line, at(5, 10))
    log.go.set()
    log.flush()
    assert (log.written, log.dropped) == (1, 2)
    log.fail = False
    log.put("dddd", at(5, 10))
    log.close()
    assert read(hour_file(tmp_path, 5, 10)) == "aaaa\ndddd\n"
    assert log.repaired_bytes == 2


def test_a_partial_tail_in_the_buffer_is_cut_before_upload(memory_root: str) -> None:
    class FailingLog(PausedLog):
        def _append(self, fd: int, data: bytes) -> int:
            if data.startswith(b"aaaa"):
                return super()._append(fd, data[:7])  # "aaaa\nbb", then the disk fills up
            raise OSError(28, "No space left on device")

    log = FailingLog(memory_root, "h1")
    for line in ("aaaa", "bbbb"):
        log.put(line, at(5, 10))
    log.go.set()
    log.close()
    assert read(hour_file(memory_root, 5, 10)) == "aaaa\n"
    assert (log.written, log.dropped, log.repaired_bytes) == (1, 1, 2)


def test_remote_files_upload_when_their_hour_is_over_and_at_close(tmp_path: Path, memory_root: str) -> None:
    buffer = tmp_path / "buffer"
    log = RequestLog(memory_root, "h1", spool_dir=str(buffer))
    fs, _ = fsspec.core.url_to_fs(memory_root)
    try:
        log.put("a", at(5, 10, 1))
        log.put("b", at(5, 10, 2))
        log.flush()
        assert not fs.exists(hour_file(memory_root, 5, 10))
        assert Path(hour_file(buffer, 5, 10)).read_text() == "a\nb\n"
        log.put("c", at(5, 11, 0))
        log.flush()
        assert read(hour_file(memory_root, 5, 10)) == "a\nb\n"
        assert not Path(hour_file(buffer, 5, 10)).exists()
        assert not fs.exists(hour_file(memory_root, 5, 11))
        assert log.files == [final_uri(hour_file(memory_root, 5, 10))]
    finally:
        log.close()
    assert read(hour_file(memory_root, 5, 11)) == "c\n"
    assert log.files == [final_uri(hour_file(memory_root, 5, h)) for h in (10, 11)]
    assert list(buffer.rglob("*.jsonl")) == []
    assert log.written == 3


def test_a_restart_in_the_same_hour_uploads_beside_the_first_file(memory_root: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the default spools, to check what is left
    for run in range(3):
        log = RequestLog(memory_root, "h1")
        log.put(f"run{run}", at(5, 10))
        log.close()
    first = hour_file(memory_root, 5, 10)
    assert [read(p) for p in (first, first[:-6] + "-1.jsonl", first[:-6] + "-2.jsonl")] == ["run0\n", "run1\n",
                                                                                             "run2\n"]
    assert log.files == [final_uri(first[:-6] + "-2.jsonl")]
    assert list(tmp_path.glob("recloop-log-*")) == []
    assert sorted(p.name for p in Path(default_spool("h1", 0)).rglob("*") if p.is_file()) == [".lock", "uri"]


def test_a_failing_write_drops_its_records_and_the_writer_goes_on(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "requests" / "dt=2026-01-05"
    blocked.parent.mkdir()
    blocked.write_text("not a folder")
    log = PausedLog(str(tmp_path), "h1")
    with caplog.at_level(logging.ERROR, logger="recloop.serving.requestlog"):
        log.put("lost1", at(5, 10))
        log.put("kept1", at(6, 10))
        log.put("lost2", at(5, 10))
        log.go.set()
        log.flush()
    assert (log.written, log.dropped, log.depth) == (1, 2, 0)
    assert "lost 2 records" in caplog.text
    log.put("kept2", at(6, 11))
    log.flush()
    log.close()
    assert log.written == 2
    assert read(hour_file(tmp_path, 6, 10)) + read(hour_file(tmp_path, 6, 11)) == "kept1\nkept2\n"


def test_a_root_under_a_regular_file_drops_everything_and_close_returns(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    log = RequestLog(str(tmp_path / "afile"), "h1")
    for hour in (10, 11):
        log.put("x", at(5, hour))
    log.close(timeout_s=5)
    assert (log.written, log.dropped, log.files) == (0, 2, [])


def test_put_after_close_is_refused_and_counted(tmp_path: Path) -> None:
    log = RequestLog(str(tmp_path), "h1")
    log.put("a", at(5, 10))
    log.close()
    log.close()  # idempotent
    assert log.put("b", at(5, 10)) is False
    assert (log.written, log.dropped) == (1, 1)
    log.flush(timeout_s=0.1)  # nothing pending: returns at once
    assert read(hour_file(tmp_path, 5, 10)) == "a\n"


@pytest.mark.parametrize(("host", "safe"), [
    ("pod/a b", "pod_a_b"),
    ("svc:8080/ü", "svc_8080__"),
    ("ok.host-1_x", "ok.host-1_x"),
])
def test_host_names_become_safe_file_names(tmp_path: Path, host: str, safe: str) -> None:
    assert safe_name(host) == safe
    log = RequestLog(str(tmp_path), host, worker=3)
    log.put("a", at(5, 10))
    log.close()
    assert log.files == [hour_file(tmp_path, 5, 10, prefix=f"{safe}-w3")]
    assert read(log.files[0]) == "a\n"


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_queue must be >= 1, got 0"):
        RequestLog(str(tmp_path), "h1", max_queue=0)
    with pytest.raises(ValueError, match="host must be non-empty"):
        RequestLog(str(tmp_path), "")
    with pytest.raises(ValueError, match="upload_s must be > 0, got 0"):
        RequestLog(str(tmp_path), "h1", upload_s=0)
    log = RequestLog(str(tmp_path), "h1")
    with pytest.raises(ValueError, match="timezone-aware"):
        log.put("a", dt.datetime(2026, 1, 5, 10))
    log.close()
    assert (log.written, log.dropped) == (0, 0)


def test_default_spool_is_one_fixed_folder_per_host_and_worker(tmp_path: Path) -> None:
    assert default_spool("pod/a", 3) == str(tmp_path / "recloop-spool" / "pod_a-w3")
    assert default_spool("pod/a", 3, "/var/spool/recloop") == "/var/spool/recloop/pod_a-w3"


def test_a_second_live_log_on_one_spool_uses_a_private_one(memory_root: str, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    spool = str(tmp_path / "spool")
    first = RequestLog(memory_root, "h1", spool_dir=spool)
    with caplog.at_level(logging.WARNING, logger="recloop.serving.requestlog"):
        second = RequestLog(memory_root, "h1", spool_dir=spool)
    assert "is in use by another server" in caplog.text
    first.put("a", at(5, 10))
    second.put("b", at(5, 10))
    first.close()
    second.close()
    first_uri = hour_file(memory_root, 5, 10)
    assert sorted(read(p) for p in (first_uri, first_uri[:-6] + "-1.jsonl")) == ["a\n", "b\n"]
    assert list(tmp_path.glob("recloop-spool-*")) == []  # the private spool is gone once empty


def test_a_spool_left_for_another_uri_is_uploaded_there(memory_root: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    part = spool / "requests" / "dt=2026-01-05"
    part.mkdir(parents=True)
    (part / "h1-w0-10.jsonl").write_text("old1\nold2\n")
    (spool / "uri").write_text(memory_root + "/before\n")
    log = RequestLog(memory_root + "/after", "h1", spool_dir=str(spool))
    log.put("new", at(5, 10))
    log.close()
    assert read(hour_file(memory_root + "/before", 5, 10)) == "old1\nold2\n"
    assert read(hour_file(memory_root + "/after", 5, 10)) == "new\n"
    assert (log.recovered, log.written, log.uploaded, log.unsent, log.dropped) == (2, 1, 3, 0, 0)
    assert (spool / "uri").read_text() == memory_root + "/after\n"


def test_a_day_folder_the_uploader_removes_just_before_the_writer_creates_its_file_loses_nothing(
        memory_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploader removes a day's spool folder once it emptied it; when that lands between the writer making
    the folder and creating its file, the writer makes it again instead of losing the batch."""
    from recloop.serving import requestlog

    real, removed = requestlog.repair_tail, []

    def uploader_first(path: str) -> int:  # the uploader's rmdir, in the window
        if not removed:
            os.rmdir(os.path.dirname(path))
            removed.append(path)
        return real(path)

    monkeypatch.setattr(requestlog, "repair_tail", uploader_first)
    log = RequestLog(memory_root, "h1", spool_dir=str(tmp_path / "spool"))
    log.put("kept", at(5, 10))
    log.close()
    assert removed and read(hour_file(memory_root, 5, 10)) == "kept\n"
    assert (log.written, log.uploaded, log.dropped) == (1, 1, 0)


# ---------------------------------------------------------------- uploads to a real S3 API server (moto)


def objects(uri: str) -> dict[str, str]:
    """Every object under ``uri`` (recursively), by name relative to ``uri``, as text."""
    fs, base = storage.filesystem(uri)
    return {p[len(base) + 1:]: fs.cat_file(p).decode() for p in sorted(fs.find(base))}


def wait_until(condition, what: str, timeout: float = 20.0) -> float:
    """Polls ``condition`` every 20 ms; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def test_s3_lines_are_uploaded_within_the_interval_as_new_objects(bucket: str, tmp_path: Path) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    log = RequestLog(bucket, "h1", spool_dir=str(tmp_path / "spool"), upload_s=1.0)
    try:
        for i in range(3):  # 2026-01-06 00:3i +02:00 is 2026-01-05 22:3i UTC: that date's partition
            log.put(f'{{"n":{i}}}', dt.datetime(2026, 1, 6, 0, 30 + i, tzinfo=plus2))
        time.sleep(0.3)
        assert objects(bucket) == {}  # not before the interval: one object per upload, not per record
        took = wait_until(lambda: len(objects(bucket)) == 1, "the first upload")
        assert 0.5 < took <= 1.0 + 1.5, took  # the interval counts from the first line; 1.5 s of slack for CI
        log.put('{"n":3}', at(5, 22, 40))
        wait_until(lambda: len(objects(bucket)) == 2, "the second upload", timeout=1.0 + 1.5)
        assert (log.written, log.uploaded, log.unsent, log.dropped) == (4, 4, 0, 0)
    finally:
        log.close()
    assert objects(bucket) == {"requests/dt=2026-01-05/h1-w0-22.jsonl": '{"n":0}\n{"n":1}\n{"n":2}\n',
                               "requests/dt=2026-01-05/h1-w0-22-1.jsonl": '{"n":3}\n'}  # close adds no empty one
    assert sorted(log.files) == sorted(f"{bucket}/{name}" for name in objects(bucket))
    assert partition_files(bucket, "requests", dt.date(2026, 1, 5), dt.date(2026, 1, 5)) == sorted(log.files)


def test_s3_a_spool_file_this_big_is_uploaded_at_once(bucket: str, tmp_path: Path) -> None:
    line = json.dumps({"pad": "x" * 9})  # 20 bytes and a newline
    log = RequestLog(bucket, "h1", spool_dir=str(tmp_path / "spool"), upload_s=3600, upload_bytes=64)
    for i in range(3):
        log.put(line, at(5, 10, i))
        log.flush()  # uploads of the files sealed so far are done too
    assert objects(bucket) == {}  # 63 bytes
    log.put(line, at(5, 10, 3))
    log.flush()
    assert objects(bucket) == {"requests/dt=2026-01-05/h1-w0-10.jsonl": (line + "\n") * 4}
    log.put(line, at(5, 10, 4))
    log.close()
    assert objects(bucket)["requests/dt=2026-01-05/h1-w0-10-1.jsonl"] == line + "\n"
    assert (log.written, log.uploaded, log.unsent) == (5, 5, 0)


_CHILD = """
import datetime as dt, json, os, signal, sys, time
from recloop.serving.requestlog import RequestLog
log = RequestLog(sys.argv[1], "h1", spool_dir=sys.argv[2], upload_bytes=200, retry_s=60)
at = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
for i in range(5):  # 5 x 55 bytes: sealed at once, its upload fails (no bucket yet) and waits 60 s to retry
    log.put(json.dumps({"n": i, "pad": "x" * 35}), at)
while log.upload_errors < 1:
    time.sleep(0.01)
for i in range(5, 7):  # in the open spool file
    log.put(json.dumps({"n": i, "pad": "x" * 35}), at)
while log.written < 7:
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_s3_a_restart_uploads_what_a_killed_server_left_in_its_spool(
        s3_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = f"s3://recloop-later-{uuid.uuid4().hex[:8]}"  # created after the kill: the first run cannot upload
    spool = tmp_path / "spool"
    child = subprocess.run([sys.executable, "-c", _CHILD, uri, str(spool)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = sorted(p.name for p in spool.rglob("h1-w0-*"))
    assert len(left) == 2 and left[0].endswith(".0.put") and left[1] == "h1-w0-10.jsonl", left  # named its object
    with open(spool / "requests" / "dt=2026-01-05" / "h1-w0-10.jsonl", "ab") as f:
        f.write(b'{"n": 7, "pa')  # and a kill inside write(): a torn last line
    storage.filesystem("s3://")[0].mkdir(uri.removeprefix("s3://"))
    with caplog.at_level(logging.WARNING, logger="recloop.serving.requestlog"):
        log = RequestLog(uri, "h1", spool_dir=str(spool))
        assert (log.recovered, log.torn, log.dropped, log.repaired_bytes) == (7, 1, 1, 12)
        log.put('{"n": 8}', at(5, 10))
        log.close()
    assert "a killed run left 7 records in 2 files" in caplog.text
    got = objects(uri)
    assert set(got) == {f"requests/dt=2026-01-05/h1-w0-10{s}.jsonl" for s in ("", "-1", "-2")}
    lines = [json.loads(line)["n"] for text in got.values() for line in text.splitlines()]
    assert sorted(lines) == list(range(7)) + [8]  # each once, the torn one counted instead
    assert (log.uploaded, log.written, log.unsent) == (8, 1, 0)
    assert log.recovered + log.written == log.uploaded


def test_s3_a_file_a_kill_caught_after_its_put_is_not_uploaded_twice(bucket: str, tmp_path: Path) -> None:
    part = tmp_path / "spool" / "requests" / "dt=2026-01-05"
    part.mkdir(parents=True)
    (part / "h1-w0-10.0123abcd-1.0.put").write_text("a\nb\n")  # renamed to name its object, then put, then killed
    storage.write_text(f"{bucket}/requests/dt=2026-01-05/h1-w0-10.jsonl", "a\nb\n")
    log = RequestLog(bucket, "h1", spool_dir=str(tmp_path / "spool"))
    log.close()
    assert objects(bucket) == {"requests/dt=2026-01-05/h1-w0-10.jsonl": "a\nb\n"}
    assert (log.recovered, log.uploaded, log.unsent, log.dropped) == (2, 2, 0, 0)
    assert not part.exists()  # the empty day folder too


def test_s3_a_failed_upload_is_retried_until_the_bucket_exists(s3_server: str, tmp_path: Path) -> None:
    uri = f"s3://recloop-later-{uuid.uuid4().hex[:8]}"
    log = RequestLog(uri, "h1", spool_dir=str(tmp_path / "spool"), upload_s=0.1, retry_s=0.5)
    try:
        for i in range(4):
            log.put(f"line{i}", at(5, 10))
        wait_until(lambda: log.upload_errors >= 1, "a failed upload")
        storage.filesystem("s3://")[0].mkdir(uri.removeprefix("s3://"))
        log.flush()
        assert objects(uri) == {"requests/dt=2026-01-05/h1-w0-10.jsonl": "line0\nline1\nline2\nline3\n"}
        assert (log.uploaded, log.dropped, log.unsent) == (4, 0, 0)
    finally:
        log.close()


def test_s3_an_upload_given_up_counts_its_records_as_dropped(s3_server: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    uri = f"s3://recloop-missing-{uuid.uuid4().hex[:8]}"  # a bucket that does not exist
    spool = tmp_path / "spool"
    log = RequestLog(uri, "h1", spool_dir=str(spool), upload_retries=2, retry_s=0.05)
    with caplog.at_level(logging.WARNING, logger="recloop.serving.requestlog"):
        for i in range(7):
            log.put(f"line{i}", at(5, 10 + i % 2))  # two hour files: two uploads given up
        log.close()
    assert (log.written, log.uploaded, log.dropped, log.unsent, log.upload_errors) == (7, 0, 7, 0, 6)
    assert log.written == log.uploaded + log.dropped  # nothing silently
    assert "attempt 1 of 3" in caplog.text and "attempt 2 of 3" in caplog.text
    assert "after 3 attempts (The specified bucket does not exist): 4 records dropped" in caplog.text
    assert "after 3 attempts (The specified bucket does not exist): 3 records dropped" in caplog.text
    assert not list(spool.rglob("h1-w0-*"))
    assert not storage.exists(uri)
