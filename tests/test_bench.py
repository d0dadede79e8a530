"""bench/README.md is generated from bench/results/*.json: regenerating it must give the committed text."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run_module():
    sys.path.insert(0, str(BENCH))
    try:
        import run  # bench/run.py

        return run
    finally:
        sys.path.remove(str(BENCH))


def test_the_readme_is_what_the_results_generate(tmp_path):
    run = _run_module()
    results = tmp_path / "results"
    shutil.copytree(BENCH / "results", results, ignore=shutil.ignore_patterns("*.png"))
    out = run.report(results, tmp_path / "README.md")
    assert out.read_text() == (BENCH / "README.md").read_text(), "bench/README.md is stale: run bench/run.py report"
    for link in ("serving.png", "scaling.png", "train.png", "closed_loop.png"):
        assert (results / link).stat().st_size > 10_000, link  # the plots were drawn
        assert (BENCH / "results" / link).exists(), f"{link} is linked from bench/README.md but not committed"


def test_every_result_names_its_command_date_and_machine():
    run = _run_module()
    for path in sorted((BENCH / "results").glob("*.json")):
        r = json.loads(path.read_text())
        assert r["benchmark"] == path.stem and r["benchmark"] in run.SECTIONS, path.name
        assert r["command"].startswith("uv run python bench/run.py"), path.name
        assert r["date"] and r["machine"]["cores"] and r["figures"], path.name
