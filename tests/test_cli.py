"""Tests of the ``recloop simulate`` command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
from conftest import log_files
from typer.testing import CliRunner

from recloop.cli.app import app
from recloop.features.logs import read_lines
from recloop.features.records import RecordError, parse_request
from recloop.simulator.world import DURATIONS


def _flat(text: str) -> str:
    """The output with rich's boxes and line wrapping removed, single-spaced."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text)).strip()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cli") / "logs"
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), "--weeks", "1", "--scale", "tiny",
                                      "--seed", "3", "--corrupt", "0.01", "--drift", "unit-bug@0"])
    return out, result


def test_simulate_succeeds_and_summarises(simulated) -> None:
    out, result = simulated
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "simulation.json").read_text())
    totals = manifest["totals"]
    text = _flat(result.output)
    assert f"requests {totals['requests']:,}" in text and totals["requests"] == 2_000
    assert f"impressions {totals['impressions']:,}" in text and totals["impressions"] == 20_000
    for event, n in totals["events"].items():
        assert f"{event} {n:,}" in text
    assert totals["corrupt_lines"] > 0
    assert f"corrupt lines {totals['corrupt_lines']:,}: " in text
    for kind, n in totals["corrupt_by_kind"].items():
        assert f"{kind} {n:,}" in text
    assert "unit-bug@0" in text
    assert f"{out}/simulation.json" in text


def test_simulate_writes_the_layout_with_the_options(simulated) -> None:
    out, result = simulated
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["params"] == {**manifest["params"], "scale": "tiny", "seed": 3, "corrupt": 0.01,
                                  "drifts": ["unit-bug@0"], "start": "2026-01-05"}
    assert len(manifest["weeks"]) == 1
    assert sorted(p.name for p in (out / "requests").iterdir()) == [f"dt=2026-01-{d:02d}" for d in range(5, 12)]
    assert list((out / "events").glob("dt=*/part-00000.jsonl.gz"))
    assert (out / "catalog" / "dt=2026-01-05" / "items.jsonl.gz").is_file()
    assert (out / "truth" / "corruption" / "week-00000.json").is_file()
    assert (out / "truth" / "impressions" / "week-00000.parquet").is_file()
    assert (out / "truth" / "world.npz").is_file()


def test_simulate_applies_the_drift(simulated) -> None:
    out, _ = simulated
    durations = set()
    for path in log_files(str(out), "requests"):
        for line in read_lines(path):
            try:
                r = parse_request(line)
            except RecordError:  # a corrupt line
                continue
            durations |= {im["item"]["duration_min"] for im in r["impressions"]}
    assert durations and durations <= set(60 * DURATIONS)


@pytest.mark.parametrize(("args", "expected"), [
    (["--drift", "earthquake@1"], ["--drift", "'earthquake@1'", "KIND@WEEK[:WEEKS]", "unit-bug", "taste-shift"]),
    (["--drift", "unit-bug@1:0"], ["--drift", "'unit-bug@1:0'", ">= 1"]),
    (["--start", "2026-01-06"], ["start must be a Monday", "2026-01-06", "Tuesday"]),
    (["--start", "2026-13-01"], ["expected a date YYYY-MM-DD", "'2026-13-01'"]),
    (["--scale", "huge"], ["--scale", "'huge'", "tiny, small, default"]),
    (["--corrupt", "2"], ["--corrupt"]),
    (["--weeks", "0"], ["--weeks"]),
])
def test_simulate_rejects_bad_options(args: list[str], expected: list[str], tmp_path: Path) -> None:
    out = tmp_path / "logs"
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    for piece in expected:
        assert piece in text, (piece, text)
    assert "Traceback" not in result.output
    assert not (out / "simulation.json").exists()


def test_help_through_python_m() -> None:
    result = subprocess.run([sys.executable, "-m", "recloop.cli", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "simulate" in result.stdout
    assert "continuous training" in result.stdout


# ---------------------------------------------------------------- recloop ingest


def _ingest_args(logs: Path, out: Path, *extra: str) -> list[str]:
    return ["ingest", "--logs", str(logs), "--start", "2026-01-05", "--end", "2026-01-11", "--out", str(out), *extra]


def test_ingest_succeeds_and_summarises(simulated, tmp_path: Path) -> None:
    logs, _ = simulated
    out = tmp_path / "ingest"
    result = CliRunner().invoke(app, _ingest_args(logs, out, "--max-dead-letter-share", "0.05",
                                                  "--direct_running_mode", "in_memory"))
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    summary = json.loads((out / "summary.json").read_text())
    assert "reconciliation holds (6 equations)" in text
    assert f"examples train {summary['examples']['train']:,}, eval {summary['examples']['eval']:,}" in text
    assert f"requests {summary['lines']['requests']['read']:,} {summary['lines']['requests']['used']:,}" in text
    assert summary["beam_args"] == ["--runner", "DirectRunner", "--direct_running_mode", "in_memory"]
    assert summary["parameters"]["max_dead_letter_share"] == 0.05
    assert sorted(p.name for p in out.iterdir()) == ["dead_letters", "eval", "features.yaml", "items", "retrieval",
                                                     "summary.json", "train"]


def test_ingest_over_the_dead_letter_limit_exits_1_with_the_reason(simulated, tmp_path: Path) -> None:
    logs, _ = simulated
    result = CliRunner().invoke(app, _ingest_args(logs, tmp_path / "ingest", "--max-dead-letter-share", "0.001"))
    assert result.exit_code == 1, result.output
    text = _flat(result.output)
    assert "ingest failed:" in text and "above the limit of 0.10% (--max-dead-letter-share)" in text
    assert not (tmp_path / "ingest").exists() and (tmp_path / "ingest.failed" / "summary.json").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--eval-days", "7"], "eval_days=7 leaves no training day in a 7-day span"),
    (["--sample-users", "1.5"], "less than or equal to 1"),
    (["--end", "2026-13-01"], "expected a date YYYY-MM-DD, got '2026-13-01'"),
])
def test_ingest_rejects_bad_options(simulated, extra: list[str], expected: str, tmp_path: Path) -> None:
    logs, _ = simulated
    result = CliRunner().invoke(app, _ingest_args(logs, tmp_path / "out", *extra))
    assert result.exit_code == 2, result.output
    assert expected in _flat(result.output)
