"""Which version actually serves: the replicas' reports beside the registry pointer, on a real S3 bucket."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from typer.testing import CliRunner

from recloop import storage
from recloop.cli.app import app
from recloop.components import steps
from recloop.serving import replicas
from recloop.serving.registry import Registry

NOW = dt.datetime(2026, 1, 19, 3, 0, tzinfo=dt.UTC)


def report(replica: str, version: str | None, pointer: str | None, rejected: tuple[str, ...] = (),
           age: dt.timedelta = dt.timedelta(seconds=30)) -> replicas.Report:
    return replicas.Report(replica=replica, version=version, reason=None if version else "no_model", pointer=pointer,
                           rejected=list(rejected), since=NOW - dt.timedelta(days=1), at=NOW - age)


def test_the_serving_version_is_the_pointer_unless_the_replicas_say_otherwise():
    assert replicas.serving_version("v2", []) == ("v2", "the registry pointer (no server reports what it serves)")
    assert replicas.serving_version(None, []) == (None, "the registry pointer (no server reports what it serves)")
    mid_rollout = [report("a", "v2", "v2"), report("b", "v1", "v1")]
    assert replicas.serving_version("v2", mid_rollout) == ("v2", "the registry pointer, served by 1 of 2 replica(s)")
    refused = [report("a", "v1", "v2", rejected=("v2",)), report("b", "v1", "v2", rejected=("v2",))]
    assert replicas.serving_version("v2", refused) == (
        "v1", "served by 2 of 2 replica(s); the registry pointer names v2, which 2 replica(s) rejected")
    lagging = [report("a", "v1", "v1")]
    assert replicas.serving_version("v2", lagging)[1].endswith("which 0 replica(s) rejected (not loaded yet)")


def test_stale_reports_are_from_replicas_that_are_gone():
    reports = [report("a", "v1", "v1", age=dt.timedelta(minutes=11)), report("b", "v2", "v2")]
    assert [r.replica for r in replicas.fresh(reports, NOW)] == ["b"]


def test_a_reporter_writes_on_change_and_when_due_and_removes_its_report(bucket):
    registry = f"{bucket}/registry"
    reporter = replicas.Reporter(registry, "pod-a/w1", every_s=60)
    assert reporter.update("v1", None, "v1", [], monotonic=0.0)
    assert not reporter.update("v1", None, "v1", [], monotonic=30.0)  # nothing new, not due
    assert reporter.update("v1", None, "v2", ["v2"], monotonic=31.0)  # rejected the pointer's v2
    assert reporter.update("v1", None, "v2", ["v2"], monotonic=92.0)  # due: readers see it is alive
    (only,) = replicas.read(registry)
    assert (only.replica, only.version, only.pointer, only.rejected) == ("pod-a/w1", "v1", "v2", ["v2"])
    assert storage.listdir(f"{registry}/serving") == ["pod-a_w1.json"]
    reporter.close()
    assert replicas.read(registry) == []


def _pushed_twice(registry: str) -> Registry:
    """A registry whose pointer moved from v1 to v2 (the versions hold only a model card)."""
    for name in ("v1", "v2"):
        storage.write_json(f"{registry}/versions/{name}/model_card.json", {"version": name})
    reg = Registry(registry)
    reg.switch("v1", None, "push", NOW)
    reg.switch("v2", "v1", "push", NOW)
    return reg


def test_the_gate_and_the_skew_check_compare_with_what_serves_not_with_the_pointer(bucket, caplog):
    registry = f"{bucket}/registry"
    _pushed_twice(registry)
    assert steps.production(registry) == ("v2", f"{registry}/versions/v2")  # no server reports: the pointer
    now = dt.datetime.now(dt.UTC)
    for name in ("pod-a", "pod-b"):
        replicas.write(registry, replicas.Report(replica=name, version="v1", reason=None, pointer="v2",
                                                 rejected=["v2"], since=now, at=now))
    with caplog.at_level("WARNING", logger="recloop.components.steps"):
        assert steps.production(registry) == ("v1", f"{registry}/versions/v1")
    assert "the registry pointer names v2, which 2 replica(s) rejected" in caplog.text


def test_models_names_the_serving_version_and_the_replicas(bucket):
    registry = f"{bucket}/registry"
    _pushed_twice(registry)
    now = dt.datetime.now(dt.UTC)
    replicas.write(registry, replicas.Report(replica="pod-a", version="v1", reason=None, pointer="v2",
                                             rejected=["v2"], since=now, at=now))
    replicas.write(registry, replicas.Report(replica="pod-old", version="v1", reason=None, pointer="v1",
                                             rejected=[], since=now, at=now - dt.timedelta(hours=1)))
    r = CliRunner().invoke(app, ["models", "--registry", registry], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = re.sub(r"\s+", " ", r.output)
    assert "in production (actually serving): v1 (served by 1 of 1 replica(s); the registry pointer names v2" in out
    assert re.search(r"v1 .*serving", out) and re.search(r"v2 .*pointer", out)
    assert re.search(r"pod-a .*v1 .*v2 .*v2 .*s ago", out) and re.search(r"pod-old .*\(gone\)", out)


@pytest.mark.parametrize("replica", ["pod-a", "pod/a:1"])
def test_report_paths_are_safe_names(replica):
    assert replicas.path("s3://b/reg", replica).startswith("s3://b/reg/serving/pod")
    assert "/" not in replicas.path("s3://b/reg", replica).removeprefix("s3://b/reg/serving/")
