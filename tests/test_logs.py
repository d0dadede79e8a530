"""Tests of recloop.features.logs: JSON Lines partitions, atomic writes."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest

from recloop.features.logs import (
    STREAMS,
    days,
    partition_date,
    partition_dir,
    partition_files,
    read_json,
    read_lines,
    write_json,
    write_lines,
)

LINES = [
    json.dumps({"request_id": "r1", "ts": "2026-01-05T07:30:00Z"}),
    json.dumps({"request_id": "r2", "note": "non-ASCII: café, 東京"}),
    "{}",
]


def _all_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["part-0.jsonl", "part-0.jsonl.gz"])
def test_write_then_read_lines_round_trip(tmp_path, name):
    path = str(tmp_path / "requests" / "dt=2026-01-05" / name)  # parent folders are created
    assert write_lines(path, iter(LINES)) == len(LINES)
    assert list(read_lines(path)) == LINES


def test_gz_is_gzip_and_plain_is_text(tmp_path):
    write_lines(str(tmp_path / "a.jsonl.gz"), LINES)
    write_lines(str(tmp_path / "a.jsonl"), LINES)
    raw_gz = (tmp_path / "a.jsonl.gz").read_bytes()
    assert raw_gz[:2] == b"\x1f\x8b"
    expected = ("\n".join(LINES) + "\n").encode("utf-8")
    assert gzip.decompress(raw_gz) == expected
    assert (tmp_path / "a.jsonl").read_bytes() == expected


def test_gzip_output_is_deterministic(tmp_path):
    first, second = tmp_path / "one" / "x.jsonl.gz", tmp_path / "two" / "x.jsonl.gz"
    write_lines(str(first), LINES)
    write_lines(str(second), LINES)
    assert first.read_bytes() == second.read_bytes()
    # and writing the same path again gives the same bytes too
    before = first.read_bytes()
    write_lines(str(first), LINES)
    assert first.read_bytes() == before


def test_read_lines_skips_blank_lines_and_keeps_content(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": "x y"}\n\n')
    assert list(read_lines(str(path))) == ['{"a": 1}', '{"b": "x y"}']
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n\n{"b": 2}'))  # no trailing newline
    assert list(read_lines(str(gz))) == ['{"a": 1}', '{"b": 2}']


def test_write_empty_file(tmp_path):
    for name in ("e.jsonl", "e.jsonl.gz"):
        path = str(tmp_path / name)
        assert write_lines(path, []) == 0
        assert list(read_lines(path)) == []


@pytest.mark.parametrize("name", ["part.jsonl", "part.jsonl.gz"])
def test_write_is_atomic_no_temp_files_left(tmp_path, name):
    folder = tmp_path / "events" / "dt=2026-01-05"
    path = str(folder / name)
    write_lines(path, LINES)
    write_lines(path, LINES[:1])  # overwrite in place
    assert _all_files(tmp_path) == [f"events/dt=2026-01-05/{name}"]
    assert list(read_lines(path)) == LINES[:1]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "x.jsonl"
    write_lines(str(path), LINES)

    def broken():
        yield "first"
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        write_lines(str(path), broken())
    assert list(read_lines(str(path))) == LINES
    assert _all_files(tmp_path) == ["x.jsonl"]


def test_partition_dir():
    assert partition_dir("/logs/", "requests", dt.date(2026, 1, 5)) == "/logs/requests/dt=2026-01-05"
    assert partition_dir("gs://b/logs", "events", dt.date(2026, 12, 31)) == "gs://b/logs/events/dt=2026-12-31"
    assert STREAMS == ("requests", "events")


def test_days():
    assert days(dt.date(2026, 1, 5), dt.date(2026, 1, 5)) == [dt.date(2026, 1, 5)]
    assert days(dt.date(2025, 12, 30), dt.date(2026, 1, 2)) == [
        dt.date(2025, 12, 30), dt.date(2025, 12, 31), dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    with pytest.raises(ValueError, match="2026-01-04 is before start 2026-01-05"):
        days(dt.date(2026, 1, 5), dt.date(2026, 1, 4))


@pytest.fixture
def logs_root(tmp_path):
    """requests/ with days 01-03..01-08 except 01-06, plus files that are not logs."""
    root = tmp_path / "logs"
    for day in (3, 4, 5, 7, 8):
        folder = root / "requests" / f"dt=2026-01-0{day}"
        folder.mkdir(parents=True)
        (folder / "part-1.jsonl.gz").write_bytes(gzip.compress(b"{}\n", mtime=0))
        (folder / "part-0.jsonl").write_text("{}\n")
    noise = root / "requests" / "dt=2026-01-05"
    (noise / "_SUCCESS").write_text("")
    (noise / "part-2.jsonl.tmp-123").write_text("{}\n")
    (noise / "part-3.json").write_text("{}\n")
    (noise / "part-4.jsonl.gz.partial").write_text("")
    (root / "events" / "dt=2026-01-05").mkdir(parents=True)
    (root / "events" / "dt=2026-01-05" / "e.jsonl").write_text("{}\n")
    return root


def test_partition_files_inclusive_sorted_skips_missing_days_and_non_logs(logs_root):
    files = partition_files(str(logs_root), "requests", dt.date(2026, 1, 4), dt.date(2026, 1, 7))
    base = str(logs_root / "requests")
    assert files == [
        f"{base}/dt=2026-01-04/part-0.jsonl",
        f"{base}/dt=2026-01-04/part-1.jsonl.gz",
        f"{base}/dt=2026-01-05/part-0.jsonl",
        f"{base}/dt=2026-01-05/part-1.jsonl.gz",
        # 2026-01-06 has no partition
        f"{base}/dt=2026-01-07/part-0.jsonl",
        f"{base}/dt=2026-01-07/part-1.jsonl.gz",
    ]
    assert all(os.path.isfile(f) for f in files)
    assert [partition_date(f) for f in files] == [dt.date(2026, 1, d) for d in (4, 4, 5, 5, 7, 7)]


def test_partition_files_edges(logs_root):
    root = str(logs_root)
    one_day = partition_files(root, "requests", dt.date(2026, 1, 8), dt.date(2026, 1, 8))
    assert [os.path.basename(f) for f in one_day] == ["part-0.jsonl", "part-1.jsonl.gz"]
    assert partition_files(root, "requests", dt.date(2026, 1, 6), dt.date(2026, 1, 6)) == []
    assert partition_files(root, "requests", dt.date(2025, 1, 1), dt.date(2025, 12, 31)) == []
    assert partition_files(root, "events", dt.date(2026, 1, 1), dt.date(2026, 1, 31)) == [
        f"{root}/events/dt=2026-01-05/e.jsonl"]
    nowhere = str(logs_root / "nowhere")
    assert partition_files(nowhere, "requests", dt.date(2026, 1, 1), dt.date(2026, 1, 9)) == []
    with pytest.raises(ValueError, match="before start"):
        partition_files(root, "requests", dt.date(2026, 1, 8), dt.date(2026, 1, 3))


def test_partition_files_reads_back_what_write_lines_wrote(tmp_path):
    root = str(tmp_path)
    for day in days(dt.date(2026, 1, 5), dt.date(2026, 1, 6)):
        write_lines(f"{partition_dir(root, 'events', day)}/part-0.jsonl.gz", [json.dumps({"day": str(day)})])
    files = partition_files(root, "events", dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    assert [json.loads(line)["day"] for f in files for line in read_lines(f)] == ["2026-01-05", "2026-01-06"]


def test_partition_date():
    assert partition_date("/logs/requests/dt=2026-01-05/part-0.jsonl.gz") == dt.date(2026, 1, 5)
    assert partition_date("gs://bucket/logs/events/dt=2025-12-31/x.jsonl") == dt.date(2025, 12, 31)
    assert partition_date("dt=2026-02-28") == dt.date(2026, 2, 28)


@pytest.mark.parametrize("path", ["/logs/requests/part-0.jsonl", "/logs/requests/2026-01-05/x.jsonl", ""])
def test_partition_date_without_dt_folder_names_the_path(path):
    with pytest.raises(ValueError) as info:
        partition_date(path)
    assert repr(path) in str(info.value)
    assert "dt=YYYY-MM-DD" in str(info.value)


def test_write_json_read_json_round_trip(tmp_path):
    value = {"b": [1, 2.5, None, True], "a": {"nested": "café"}, "when": dt.date(2026, 1, 5)}
    path = str(tmp_path / "reports" / "stats.json")
    write_json(path, value)
    assert read_json(path) == {"a": {"nested": "café"}, "b": [1, 2.5, None, True], "when": "2026-01-05"}
    text = (tmp_path / "reports" / "stats.json").read_text("utf-8")
    assert text.index('"a"') < text.index('"b"')  # sorted keys, indented for people
    assert "\n  " in text
    assert _all_files(tmp_path) == ["reports/stats.json"]


def test_write_json_gz_round_trip(tmp_path):
    path = str(tmp_path / "x.json.gz")
    write_json(path, [1, {"k": "v"}])
    assert (tmp_path / "x.json.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert read_json(path) == [1, {"k": "v"}]


def test_memory_filesystem_round_trip():
    # fsspec paths: the same code on an object-store-like filesystem
    root = "memory://recloop-test-logs"
    path = f"{partition_dir(root, 'requests', dt.date(2026, 1, 5))}/part-0.jsonl.gz"
    try:
        write_lines(path, LINES)
        files = partition_files(root, "requests", dt.date(2026, 1, 5), dt.date(2026, 1, 5))
        # fsspec spells the memory root "memory:///"; the file is the one written
        assert len(files) == 1 and files[0].startswith("memory://")
        assert files[0].endswith("/recloop-test-logs/requests/dt=2026-01-05/part-0.jsonl.gz")
        assert partition_date(files[0]) == dt.date(2026, 1, 5)
        assert list(read_lines(files[0])) == LINES
    finally:
        import fsspec

        fsspec.filesystem("memory").rm("/recloop-test-logs", recursive=True)


@pytest.mark.parametrize("path", ["/logs/requests/dt=2026-13-01/a.jsonl", "/logs/events/dt=today/a.jsonl"])
def test_partition_date_with_a_bad_date_names_the_path(path):
    with pytest.raises(ValueError) as info:
        partition_date(path)
    assert repr(path) in str(info.value)
