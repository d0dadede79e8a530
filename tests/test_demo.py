"""``recloop demo`` end to end on the tiny world: four weeks of the closed loop with a one-week serving incident.

Real everything (the weekly pipeline under kfp.local, the real server with hot reload and the
holdout, the simulated members): the incident's run is blocked and alerts, the version served
does not change the week after it, and the run after the incident pushes again.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recloop.cli.app import app

GATE = "offpolicy: {max_requests: 19999}\n"  # the default checks; a setting the blessings show they read


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "work"
    gate = work.parent / "gate.yaml"
    gate.write_text(GATE)
    result = CliRunner().invoke(app, ["demo", "--weeks", "4", "--scale", "tiny", "--drift", "unit-bug@1:1",
                                      "--epochs", "3", "--seed", "3", "--holdout", "0.1", "--work", str(work),
                                      "--gate-config", str(gate)])
    assert result.exit_code == 0, result.output
    return work, json.loads((work / "demo.json").read_text()), result.output


def test_a_gate_config_that_does_not_validate_stops_the_demo_before_it_starts(tmp_path):
    gate = tmp_path / "gate.yaml"
    gate.write_text("thresholds: [{metric: auc_click, max_drop: -1}]\n")
    result = CliRunner().invoke(app, ["demo", "--scale", "tiny", "--work", str(tmp_path / "work"),
                                      "--gate-config", str(gate)])
    assert result.exit_code == 2, result.output
    assert "thresholds.0.max_drop" in result.output and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_the_incident_is_blocked_the_model_keeps_serving_and_a_model_is_pushed_after_it(demo):
    _, out, _ = demo
    weeks = out["weeks"]
    assert [w["week"] for w in weeks] == [0, 1, 2, 3]
    assert set(weeks[0]["served"]["by_policy"]) == {"heuristic"} and "version" not in weeks[0]
    first, incident, after = (weeks[i]["run"] for i in range(3))
    assert first["state"] == "SUCCEEDED" and first["pushed"]["pushed"]
    assert weeks[1]["version"] == first["pushed"]["version"]
    # the run on the incident week: blocked at check on the served durations, alert recorded, nothing pushed
    assert incident["state"] == "FAILED" and incident["tasks"]["check"]["state"] == "FAILED"
    assert {a["feature"] for a in incident["anomalies"] if a["blocking"]} == {"duration_min"}
    assert incident["alerts"]["raised"] >= 1 and incident["pushed"] is None
    assert weeks[2]["version"] == weeks[1]["version"]
    # the week after: not blocked, a candidate trained and gated, and the gate's word is what serves next
    # (on 2,000 requests a week the gate may reject it; the default `small` demo pushes again: README)
    assert after["state"] == "SUCCEEDED" and not [a for a in after["anomalies"] if a["blocking"]]
    assert after["tasks"]["train"]["state"] == after["tasks"]["evaluate"]["state"] == "SUCCEEDED"
    assert after["blessing"]["baseline_version"] == weeks[2]["version"]
    assert after["pushed"]["pushed"] == after["blessing"]["blessed"], after["pushed"]
    assert {run["blessing"]["config"]["offpolicy"]["max_requests"] for run in (first, after)} == {19999}
    expected = after["pushed"]["version"] if after["pushed"]["pushed"] else weeks[2]["version"]
    assert weeks[3]["version"] == expected


@pytest.mark.slow
def test_every_served_week_measures_model_holdout_and_oracle_on_the_same_requests(demo):
    _, out, _ = demo
    for w in out["weeks"][1:]:
        s = w["served"]
        groups = s["by_policy"]
        assert set(groups) == {"model", "holdout"}, groups
        assert sum(g["requests"] for g in groups.values()) == s["requests"]
        assert 0.05 < groups["holdout"]["requests"] / s["requests"] < 0.2
        assert 0 < groups["model"]["expected_click_rate"] < s["oracle_click_rate"]


@pytest.mark.slow
def test_the_table_the_report_and_a_stopped_server(demo):
    work, out, _ = demo
    page = (work / "report.html").read_text()
    assert page.count("<tr>") == 10 and "BLOCKED (duration_min)" in page and "<svg" in page
    for w in out["weeks"][:3]:
        assert (Path(w["run"]["run_dir"]) / "report.html").exists()
    assert "Data sizes and wall seconds per stage" in page and "model" in page
    port = int(out["server"]["url"].split(":")[2].split("/")[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped
