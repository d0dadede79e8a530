"""The weekly pipeline under kfp.local on tiny data: a good week is pushed, a serving bug is blocked at check
after validate published and alerted, and the daily skew check catches the same bug. Plus the steps' rules.

Real everything: kfp.local's SubprocessRunner runs each component in a subprocess of this
environment (Beam, TFDV, TFRS training, the real server for infra validation), and the
blocked run posts to a real Alertmanager.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)
from recloop.cli import report
from recloop.cli.app import app
from recloop.components import steps
from recloop.pipelines import local
from recloop.pipelines.definitions import TASKS, weekly
from recloop.serving.registry import Registry

SEED = 31


@pytest.fixture(scope="module")
def loop(make_world, alertmanager, tmp_path_factory):
    """Week 0 clean, week 1 with the unit bug: run 1 (week 0) pushes, run 2 (week 1, via the CLI) is blocked."""
    world = make_world(SEED, 2, ("unit-bug@1",))
    work = tmp_path_factory.mktemp("pipeline")
    registry, state = str(work / "registry"), str(work / "state")
    first = local.run(weekly(""), {"logs": world.root, "registry": registry, "run_state": state,
                                   "start": str(world.week_start(0)), "end": str(world.week_start(1) - dt.timedelta(1)),
                                   # 3 epochs: the gate's AUC floor is cleared by the lower bound, and the tiny
                                   # week's eval (~2,700 impressions, se ~0.04) needs a model trained past noise
                                   "catalog": world.root, "epochs": 3, "infra_requests": 50}, str(work / "runs"))
    production = Registry(registry).pointer()
    second = CliRunner().invoke(app, [
        "run", "--logs", world.root, "--registry", registry, "--work", str(work), "--run-state", state,
        "--start", str(world.week_start(1)), "--end", str(world.week_start(2) - dt.timedelta(1)),
        "--alertmanager-url", alertmanager, "--epochs", "2"])
    runs = sorted((work / "runs").iterdir())
    return {"world": world, "work": work, "registry": registry, "state": state, "first": first,
            "production": production, "second": second, "second_dir": runs[-1], "alertmanager": alertmanager}


@pytest.mark.slow
def test_a_good_week_runs_every_task_and_pushes(loop):
    run = loop["first"]
    assert run.state == "SUCCEEDED", run.error
    assert list(run.tasks) == list(TASKS) and all(t["state"] == "SUCCEEDED" for t in run.tasks.values())
    ingest = run.outputs("ingest")["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert ingest["reconciled"] == 1 and ingest["examples_train"] > 1000 and ingest["dead_letters_requests"] == 0
    for task, name in (("validate", "statistics"), ("validate", "anomalies"), ("evaluate", "plots")):
        assert Path(run.artifact(task, name)).read_text().startswith("<!doctype html>")
    blessing = json.loads(Path(run.artifact("evaluate", "blessing"), "blessing.json").read_text())
    pushed = json.loads(Path(run.artifact("push", "pushed"), "pushed.json").read_text())
    assert blessing["blessed"] and blessing["first_run"] and pushed["pushed"]
    assert loop["production"].version == pushed["version"] == blessing["candidate_version"]
    assert run.outputs("push")["parameterValues"]["Output"] == pushed["version"]
    saved = json.loads(Path(run.run_dir, "run.json").read_text())
    assert saved["state"] == "SUCCEEDED" and saved["parameters"]["epochs"] == 3
    assert (Path(run.run_dir) / "pipeline.yaml").exists()
    # the drift reference for the next run is this span's training statistics
    assert json.loads(Path(loop["state"], "previous.json").read_text())["span"].startswith("train 2026-01-05")
    page = report.render(run.run_dir)
    assert all(task in page for task in TASKS) and "PUSHED" in page


@pytest.mark.slow
def test_a_serving_bug_stops_the_run_at_check_after_validate_published_and_alerted(loop):
    result, run_dir = loop["second"], loop["second_dir"]
    assert result.exit_code == 3, result.output
    saved = json.loads((run_dir / "run.json").read_text())
    states = {task: t["state"] for task, t in saved["tasks"].items()}
    assert states == {"ingest": "SUCCEEDED", "validate": "SUCCEEDED", "check": "FAILED", "train": "NOT_RUN",
                      "evaluate": "NOT_RUN", "infra-validate": "NOT_RUN", "push": "NOT_RUN"}
    assert saved["error"].startswith("BlockingAnomalies:") and "duration_min" in saved["error"]
    verdict = json.loads((run_dir / "validate" / "validation" / "anomalies.json").read_text())
    assert {a["feature"] for a in verdict["anomalies"] if a["blocking"]} == {"duration_min"}
    assert (run_dir / "validate" / "statistics").read_text().startswith("<!doctype html>")
    assert verdict["alerts"]["delivered"] and verdict["alerts"]["raised"] >= 1
    with urllib.request.urlopen(f"{loop['alertmanager']}/api/v2/alerts", timeout=5) as r:
        received = json.load(r)
    assert any(a["labels"].get("feature") == "duration_min" for a in received)
    # nothing moved: production, and the drift reference (the bad week is not the next week's baseline)
    assert Registry(loop["registry"]).pointer() == loop["production"]
    assert "2026-01-05" in json.loads(Path(loop["state"], "previous.json").read_text())["span"]
    assert "BLOCKED" not in result.output or "blocking" in result.output
    assert "check" in result.output and "failed" in result.output


@pytest.mark.slow
def test_the_daily_skew_check_catches_the_bug_against_production(loop):
    world, work = loop["world"], loop["work"]
    day = world.week_start(1) + dt.timedelta(days=2)
    args = ["run", "--pipeline", "daily", "--logs", world.root, "--registry", loop["registry"], "--work", str(work),
            "--run-state", loop["state"], "--day"]
    bad = CliRunner().invoke(app, [*args, str(day)])
    assert bad.exit_code == 3, bad.output
    run_dir = max((work / "runs").glob("recloop-daily-skew-*"))
    verdict = json.loads((run_dir / "monitor" / "validation" / "anomalies.json").read_text())
    assert {a["feature"] for a in verdict["anomalies"] if a["blocking"]} == {"duration_min"}
    skew = [m for m in verdict["measurements"] if m["feature"] == "duration_min" and m["check"] == "skew"]
    assert skew and skew[0]["distance"] > 0.5  # against production's training statistics
    good = CliRunner().invoke(app, [*args, str(world.week_start(0) + dt.timedelta(days=2))])
    assert good.exit_code == 0, good.output


def test_the_span_comes_from_the_dates_or_the_scheduled_time():
    assert steps.span("2026-01-05", "2026-01-11") == (dt.date(2026, 1, 5), dt.date(2026, 1, 11))
    # a run scheduled Monday 03:00 ingests the week before, Monday..Sunday
    assert steps.span("", "", "2026-01-12T03:00:00Z") == (dt.date(2026, 1, 5), dt.date(2026, 1, 11))
    assert steps.span("", "", "2026-01-13T00:00:00+00:00", days=1) == (dt.date(2026, 1, 12),) * 2
    for bad, match in (((("2026-01-05", "")), "go together"), (("", "", "{{$.pipeline_job_schedule_time_utc}}"),
                                                                "before 2.17.0 leave unfilled"),
                       (("2026-13-01", "2026-01-11"), "start: expected a date"),
                       (("", "", "monday"), "RFC 3339")):
        with pytest.raises(steps.StepError, match=match):
            steps.span(*bad)


def test_a_remote_beam_runner_writes_the_examples_to_the_artifacts_uri_on_the_object_store():
    path, direct = "/minio/mlpipeline/v2/artifacts/run/ingest/examples", ["--runner", "DirectRunner"]
    assert steps.ingest_target(path, "minio://mlpipeline/v2/artifacts/run/ingest/examples", direct) == path
    assert steps.ingest_target(path, "minio://mlpipeline/v2/artifacts/run/ingest/examples", []) == path
    flink = ["--runner", "PortableRunner", "--job_endpoint", "jobserver:8099"]
    assert steps.ingest_target(path, "minio://mlpipeline/v2/artifacts/run/ingest/examples", flink) == (
        "s3://mlpipeline/v2/artifacts/run/ingest/examples")
    assert steps.ingest_target("/gcs/b/x", "gs://b/x", ["--runner=DataflowRunner"]) == "gs://b/x"
    with pytest.raises(steps.StepError, match="DataflowRunner writes the examples where its workers can reach"):
        steps.ingest_target("/tmp/x", "/tmp/x", ["--runner", "DataflowRunner"])  # kfp.local: a local pipeline root


@pytest.mark.parametrize("unfilled", ["", "{{$.pipeline_job_schedule_time_utc}}"])  # KFP 2.16, and before
def test_a_backend_that_leaves_the_scheduled_time_unfilled_needs_span_clock_run_start(unfilled):
    started = dt.datetime(2026, 1, 12, 3, 0, 41, tzinfo=dt.UTC)  # the pod's clock as the scheduled run starts
    with pytest.raises(steps.StepError, match="set span_clock=run-start"):
        steps.span("", "", unfilled, now=started)
    assert steps.span("", "", unfilled, span_clock="run-start", now=started) == (dt.date(2026, 1, 5),
                                                                                 dt.date(2026, 1, 11))
    # a filled-in scheduled time (KFP >= 2.17) wins over the clock, and dates over both
    late = started + dt.timedelta(days=1)
    assert steps.span("", "", "2026-01-12T03:00:00Z", span_clock="run-start", now=late)[1] == dt.date(2026, 1, 11)
    assert steps.span("2026-01-01", "2026-01-02", unfilled, span_clock="run-start", now=late)[0] == dt.date(2026, 1, 1)
    with pytest.raises(steps.StepError, match="span_clock: expected one of scheduled, run-start, got 'wall'"):
        steps.span("", "", unfilled, span_clock="wall", now=started)


def test_check_names_each_blocking_anomaly(tmp_path):
    verdict = {"spans": {"current": "train 2026-01-12..2026-01-18"}, "alerts": {"raised": 1},
               "anomalies": [{"feature": "duration_min", "check": "drift", "description": "JS 0.87 > 0.1",
                              "blocking": True},
                             {"feature": "label_click", "check": "drift", "description": "rate", "blocking": False}]}
    (tmp_path / "anomalies.json").write_text(json.dumps(verdict))
    with pytest.raises(steps.BlockingAnomalies, match=r"1 blocking anomalies .*duration_min \(drift: JS 0.87"):
        steps.check(str(tmp_path))
    verdict["anomalies"][0]["blocking"] = False
    (tmp_path / "anomalies.json").write_text(json.dumps(verdict))
    assert steps.check(str(tmp_path))["anomalies"]
    with pytest.raises(steps.StepError, match="missing"):
        steps.check(str(tmp_path / "nowhere"))


def test_an_unblessed_candidate_is_not_infra_validated_nor_pushed_and_the_step_succeeds(tmp_path):
    blessing = tmp_path / "blessing"
    blessing.mkdir()
    (blessing / "blessing.json").write_text(json.dumps({
        "blessed": False, "candidate_version": "v20260111-aaaa", "baseline_version": "v20260104-bbbb",
        "failed": ["max_drop:auc_click[overall]"]}))
    infra = steps.infra_validate(str(tmp_path / "model"), str(blessing), str(tmp_path / "data"),
                                 str(tmp_path / "infra"))
    assert infra["skipped"] and not infra["passed"]
    t0 = time.perf_counter()
    record = steps.push(str(tmp_path / "model"), str(blessing), str(tmp_path / "infra"), str(tmp_path / "registry"),
                        str(tmp_path / "pushed"))
    assert time.perf_counter() - t0 < 5
    assert record == {"pushed": False, "version": "v20260111-aaaa", "registry": str(tmp_path / "registry"),
                      "production_before": "v20260104-bbbb", "reason": "not blessed: failed max_drop:auc_click[overall]"}
    assert json.loads((tmp_path / "pushed" / "pushed.json").read_text()) == record
    assert Registry(str(tmp_path / "registry")).pointer() is None
