"""bench/README.md and the top README's marked blocks are generated from bench/results/*.json: regenerating
them must give the committed text."""

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
    readme = tmp_path / "TOP-README.md"
    shutil.copy(BENCH.parent / "README.md", readme)
    out = run.report(results, tmp_path / "README.md", readme)
    assert out.read_text() == (BENCH / "README.md").read_text(), "bench/README.md is stale: run bench/run.py report"
    # the top-level README's figures are generated blocks too, never retyped
    assert readme.read_text() == (BENCH.parent / "README.md").read_text(), "README.md's bench blocks are stale"
    assert "<!-- bench:closed_loop -->" in readme.read_text()
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
