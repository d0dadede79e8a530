"""Push and rollback: blessings required, compare-and-swap, atomic against a kill at any step."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SERVE_DAY, copy_version
from typer.testing import CliRunner

from recloop.cli.app import app
from recloop.serving.registry import PushRefused, Registry, RegistryError, SwitchRefused

AT = dt.datetime(2026, 1, 19, 3, tzinfo=dt.UTC)


def _export(folder: Path, version: str, baseline: str | None = None, blessed: bool = True, passed: bool = True
            ) -> str:
    """A stand-in trainer export (files only: push never loads the models) with its two blessings."""
    (folder / "ranking" / "variables").mkdir(parents=True)
    (folder / "ranking" / "saved_model.pb").write_bytes(b"pb" * 1000)
    (folder / "ranking" / "variables" / "variables.data").write_bytes(b"w" * 5000)
    (folder / "tables").mkdir()
    (folder / "tables" / "popularity.json").write_text("{}")
    (folder / "model_card.json").write_text(json.dumps({"version": version}))
    (folder / "blessing.json").write_text(json.dumps({"blessed": blessed, "baseline_version": baseline}))
    (folder / "infra_blessing.json").write_text(json.dumps({"passed": passed}))
    return str(folder)


def test_push_needs_both_blessings_and_force_is_recorded(tmp_path):
    registry = Registry(str(tmp_path / "reg"))
    for blessed, passed, message in ((False, True, "blessing.json: not blessed"),
                                     (True, False, "infra_blessing.json: infra validation did not pass")):
        model = _export(tmp_path / f"m-{blessed}-{passed}", "v1", blessed=blessed, passed=passed)
        with pytest.raises(PushRefused, match=message):
            registry.push(model, AT)
    assert registry.pointer() is None and registry.versions() == []
    bare = tmp_path / "bare"
    _export(bare, "v2")
    (bare / "blessing.json").unlink()
    with pytest.raises(PushRefused, match="blessing.json: missing"):
        registry.push(str(bare), AT)
    pointer = registry.push(str(bare), AT, force=True, note="incident 42")
    assert (pointer.version, pointer.reason) == ("v2", "force-push")
    assert "incident 42" in pointer.note and "forced past" in pointer.note and "missing" in pointer.note


def test_the_registry_keeps_what_each_version_logged_in_infra_validation_for_its_first_span(tmp_path):
    """Validation compares a version's first span with what it logged for infra validation (steps.validate and
    steps.monitor read it through the registry); a name the registry does not hold is never read as a path."""
    from recloop.components.steps import _infra_figures

    model = _export(tmp_path / "m", "v1")
    figures = {"impressions": 2110, "explored_share": 0.05}
    infra = json.loads(Path(model, "infra_blessing.json").read_text()) | {"logged": {"v1": figures}}
    Path(model, "infra_blessing.json").write_text(json.dumps(infra))
    Registry(str(tmp_path / "reg")).push(model, AT)
    lookup = _infra_figures(str(tmp_path / "reg"))
    assert lookup("v1") == figures
    assert lookup("heuristic-holdout") is None and lookup("../reg/versions/v1") is None


def test_push_is_a_compare_and_swap_against_the_version_the_gate_measured(tmp_path):
    registry = Registry(str(tmp_path / "reg"))
    registry.push(_export(tmp_path / "a", "va"), AT)
    stale = _export(tmp_path / "b", "vb", baseline=None)  # measured before va was pushed
    with pytest.raises(SwitchRefused, match="evaluated against None, but production is now 'va'"):
        registry.push(stale, AT)
    assert registry.versions() == ["va"]  # refused before copying anything
    registry.push(_export(tmp_path / "c", "vc", baseline="va"), AT)
    assert registry.pointer().version == "vc"
    version = Path(tmp_path / "reg" / "versions" / "vc")
    assert json.loads((version / "blessing.json").read_text())["blessed"]
    assert (version / "infra_blessing.json").exists() and (version / "ranking" / "variables" / "variables.data").exists()
    with pytest.raises(RegistryError, match="exists with another model card"):
        changed = _export(tmp_path / "d", "vc", baseline="vc")
        Path(changed, "model_card.json").write_text(json.dumps({"version": "vc", "other": 1}))
        registry.push(changed, AT)


_PUSH_AND_DIE = """
import datetime as dt, os, signal, sys
from recloop.serving.registry import Registry
steps = []
def progress(step):
    steps.append(step)
    if len(steps) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
Registry(sys.argv[1]).push(sys.argv[2], dt.datetime(2026, 1, 19, tzinfo=dt.UTC), progress=progress)
"""


def test_a_push_killed_at_any_step_leaves_the_pointer_on_a_complete_version(tmp_path, record_property):
    root = str(tmp_path / "reg")
    registry = Registry(root)
    registry.push(_export(tmp_path / "old", "v-old"), AT)
    new = _export(tmp_path / "new", "v-new", baseline="v-old")
    killed = 0
    for kill_at in range(1, 20):
        r = subprocess.run([sys.executable, "-c", _PUSH_AND_DIE, root, new, str(kill_at)], check=False,
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 0:  # fewer steps than kill_at: the push finished
            break
        assert r.returncode == -signal.SIGKILL, r.stderr
        killed += 1
        assert registry.pointer().version == "v-old"  # killed before the switch: still the old one
        if registry.versions() != ["v-old"]:  # killed at the switch: the copy was complete, card last
            assert registry.versions() == ["v-new", "v-old"]
            copied = {p.relative_to(Path(root, "versions", "v-new")) for p in Path(root, "versions", "v-new").rglob("*")}
            assert copied == {p.relative_to(new) for p in Path(new).rglob("*")}
    record_property("push_steps_killed", killed)
    record_property("pointer_after_each_kill", "v-old")
    record_property("pointer_after_the_finished_push", registry.pointer().version)
    assert killed >= 6 and registry.pointer().version == "v-new"  # killed at every copy, the card and the switch
    assert registry.versions() == ["v-new", "v-old"]


LIGHT_PROBE = ("import sys, runpy, time; t0 = time.perf_counter(); sys.argv = ['recloop', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('recloop.cli', run_name='__main__')\nexcept SystemExit as e:\n"
               "    assert not e.code, e.code\n"
               "heavy = sorted(m for m in ('tensorflow', 'apache_beam', 'tensorflow_data_validation', 'kfp')\n"
               "               if m in sys.modules)\n"
               "print('HEAVY', heavy, 'SECONDS', round(time.perf_counter() - t0, 3))\n")


def test_the_registry_commands_start_in_a_second_without_tensorflow_beam_or_kfp(tmp_path):
    """The commands on-call and release engineers run by hand (help, push, models, rollback, report's help) import
    no heavy library, print nothing on stderr, and answer in under 2 s (the better of two runs)."""
    root = str(tmp_path / "reg")
    v1, v2 = _export(tmp_path / "m1", "v1"), _export(tmp_path / "m2", "v2", baseline="v1")
    commands = [["--help"], ["push", "--model", v1, "--registry", root],
                ["push", "--model", v2, "--registry", root], ["models", "--registry", root],
                ["rollback", "--registry", root], ["report", "--help"]]
    for argv in commands:
        walls = []
        for _ in range(1 if argv[0] in ("push", "rollback") else 2):  # those change the registry: once
            done = subprocess.run([sys.executable, "-c", LIGHT_PROBE, *argv], check=False, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0 and done.stderr == "", (argv, done.stdout[-500:], done.stderr[-2000:])
            heavy, seconds = done.stdout.split("HEAVY ")[-1].rsplit(" SECONDS ", 1)
            assert heavy == "[]", (argv, heavy)
            walls.append(float(seconds))
        assert min(walls) < 2.0, (argv, walls)
    assert Registry(root).pointer().version == "v1"  # the rollback went back from v2


def test_cli_push_models_rollback(tmp_path):
    root = str(tmp_path / "reg")
    runner = CliRunner()
    r = runner.invoke(app, ["push", "--model", _export(tmp_path / "a", "va", blessed=False), "--registry", root])
    assert r.exit_code == 1 and "push refused" in r.output and "not blessed" in r.output
    assert runner.invoke(app, ["push", "--model", _export(tmp_path / "b", "vb"), "--registry", root]).exit_code == 0
    r = runner.invoke(app, ["push", "--model", _export(tmp_path / "c", "vc", baseline="vb"), "--registry", root])
    assert r.exit_code == 0 and "production is now vc" in r.output
    r = runner.invoke(app, ["models", "--registry", root])
    assert r.exit_code == 0 and "vb" in r.output and "production" in r.output and "push" in r.output
    r = runner.invoke(app, ["rollback", "--registry", root])
    assert r.exit_code == 0 and "production is now vb" in r.output
    assert [p.reason for p in Registry(root).history()] == ["push", "push", "rollback"]
    r = runner.invoke(app, ["rollback", "--registry", root, "--to", "nope"])
    assert r.exit_code == 1 and "'nope'" in r.output


def test_rollback_switches_a_running_server_back(start_server, tiny_model, clean_world, tmp_path):
    root = str(tmp_path / "reg")
    registry = Registry(root)
    first = copy_version(tiny_model, root)
    registry.switch(first, None, "push", AT)
    server = start_server("--registry", root, catalog=clean_world.root)
    second = copy_version(tiny_model, root, "-next")
    registry.switch(second, first, "push", AT)

    def serving() -> str:
        return server.predict([{"member_id": "m1", "context": {"hour_of_day": 8, "day_of_week": 0,
                                                                "platform": "ios"}}], SERVE_DAY).json()[
            "predictions"][0]["model_version"]

    server.wait_for(lambda: serving() == second, "the push")
    registry.rollback(AT)
    server.wait_for(lambda: serving() == first, "the rollback")
    assert registry.pointer().reason == "rollback"
