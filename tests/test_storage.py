"""recloop.storage on a real S3 API server (moto, on loopback), a GCS emulator (fake-gcs-server, on loopback)
and the local disk: the same calls, the same results, whole objects only."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from recloop import storage

BUCKETS = {"s3": "bucket", "gs": "gcs_bucket"}  # the conftest fixture that makes a new bucket of each store


@pytest.fixture(params=["local", "s3", "gs"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue(BUCKETS[request.param]) + "/root"


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> str:
    """A new, empty bucket of each object store."""
    return request.getfixturevalue(BUCKETS[request.param])


def test_objects_round_trip_and_list(root):
    assert not storage.exists(root) and storage.listdir(root) == []
    storage.write_json(storage.join(root, "a", "card.json"), {"version": "v1"})
    storage.write_text(storage.join(root, "a", "notes.txt"), "é\n")
    storage.write_bytes(storage.join(root, "b.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(root, "a/card.json")) == {"version": "v1"}
    assert storage.read_text(storage.join(root, "a/notes.txt")) == "é\n"
    assert storage.read_bytes(storage.join(root, "b.bin")) == b"\x00\x01"
    assert storage.listdir(root) == ["a", "b.bin"] and storage.listdir(storage.join(root, "a")) == [
        "card.json", "notes.txt"]
    storage.remove(storage.join(root, "a"))
    assert storage.listdir(root) == ["b.bin"]


def test_a_missing_object_is_named(root):
    with pytest.raises(FileNotFoundError, match=r"root/nothing\.json: no such object"):
        storage.read_json(storage.join(root, "nothing.json"))


def test_folders_travel_both_ways_through_a_local_view(root, tmp_path):
    out = tmp_path / "made-here"
    os.makedirs(out / "sub" / "deeper")
    (out / "top.txt").write_text("top")
    (out / "sub" / "deeper" / "x.json").write_text(json.dumps([1, 2]))
    storage.upload(str(out), storage.join(root, "out"))
    assert storage.read_json(storage.join(root, "out/sub/deeper/x.json")) == [1, 2]
    with storage.local_view(storage.join(root, "out")) as view:
        top, deeper = Path(view, "top.txt").read_text(), json.loads(Path(view, "sub/deeper/x.json").read_text())
    assert top == "top" and deeper == [1, 2]
    with storage.local_view(storage.join(root, "absent"), missing_ok=True) as view:
        assert view is None
    with pytest.raises(FileNotFoundError, match="absent"), storage.local_view(storage.join(root, "absent")):
        pass


def test_a_file_written_locally_is_uploaded_whole_or_not_at_all(store):
    with storage.local_file(f"{store}/part-00000.bin") as path, open(path, "wb") as f:
        f.write(b"whole")
    assert storage.read_bytes(f"{store}/part-00000.bin") == b"whole"
    with pytest.raises(RuntimeError, match="boom"), storage.local_file(f"{store}/part-00001.bin") as path:
        with open(path, "wb") as f:
            f.write(b"ha")
        raise RuntimeError("boom")
    assert not storage.exists(f"{store}/part-00001.bin")


def test_a_reader_sees_the_old_object_or_the_new_one_never_part(root):
    # a pointer rewritten while another thread reads it: every read parses, whole
    uri = storage.join(root, "CURRENT")
    storage.write_json(uri, {"version": "v0", "pad": "x" * 50_000})
    seen, stop = set(), threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(storage.read_json(uri)["version"])

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 30):
        storage.write_json(uri, {"version": f"v{i}", "pad": "x" * 50_000})
    stop.set()
    reader.join()
    assert seen and seen <= {f"v{i}" for i in range(30)}


def test_another_writer_is_seen_at_once(store):
    # no listings cache on an object store: a pointer another process wrote is read, not remembered
    import fsspec

    assert storage.listdir(store) == []
    scheme, name = store.split("://")
    other = fsspec.filesystem(scheme, skip_instance_cache=True)
    other.pipe_file(f"{name}/CURRENT", b"{}")
    assert storage.exists(f"{store}/CURRENT") and storage.listdir(store) == ["CURRENT"]


def test_a_scheme_without_a_backend_is_named():
    with pytest.raises(storage.StorageError, match=r"nope://x/y: no storage backend for 'nope'"):
        storage.exists("nope://x/y")


def test_join_keeps_the_scheme():
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.join("/tmp/a", "b") == "/tmp/a/b"
    assert storage.is_local("/tmp/a") and storage.is_local("file:///tmp/a") and not storage.is_local("gs://b/a")


def test_create_lets_exactly_one_writer_win(root):
    uri = storage.join(root, "lock.json")
    assert storage.create(uri, b'{"owner": "a"}')
    assert not storage.create(uri, b'{"owner": "b"}')
    assert storage.read_json(uri) == {"owner": "a"}


def test_the_commands_read_their_inputs_from_s3(bucket, tiny_ingest, tiny_model, tmp_path):
    """validate, train and evaluate take their ``--data`` (and candidate) as URIs; TensorFlow and TFDV read
    local copies. Their output folders stay local (results are shared through the registry), but train's, which
    may also be a URI: a TFJob's chief uploads its export."""
    import re

    from typer.testing import CliRunner

    from recloop.cli.app import app

    storage.upload(tiny_ingest, f"{bucket}/ingest")
    storage.upload(tiny_model, f"{bucket}/model")
    runner = CliRunner()
    r = runner.invoke(app, ["validate", "--data", f"{bucket}/ingest", "--out", str(tmp_path / "v")])
    assert r.exit_code in (0, 3), r.output
    assert (tmp_path / "v" / "anomalies.json").exists()
    # an export on the bucket: written here, then uploaded whole (what a TFJob's chief does)
    r = runner.invoke(app, ["train", "--data", f"{bucket}/ingest", "--out", f"{bucket}/export", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    assert storage.read_json(f"{bucket}/export/model_card.json")["data"]["span"]["start"] == "2026-01-12"
    assert storage.exists(f"{bucket}/export/ranking/saved_model.pb")
    r = runner.invoke(app, ["train", "--data", f"{bucket}/ingest", "--out", f"{bucket}/export", "--epochs", "1"])
    assert r.exit_code == 1 and "pass --overwrite" in re.sub(r"\s+", " ", r.output)
    r = runner.invoke(app, ["evaluate", "--candidate", f"{bucket}/model", "--data", f"{bucket}/ingest",
                            "--registry", f"{bucket}/registry", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert storage.read_json(str(tmp_path / "g" / "blessing.json"))["first_run"]

