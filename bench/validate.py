"""The validation benchmark: ``recloop validate`` on two default-scale weeks, timed as subprocesses.

Week 1 infers and curates the schema; week 2 is checked against it, with week 1
as the previous span (drift) and week 1's training statistics as the reference
(skew), as a weekly run would. Week 0 is the simulator's bootstrap week (the
heuristic has no history yet), whose change to week 1 is a real drift.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import MEASURED, START, run_timed, table

NOTES = ("Process seconds include interpreter start and imports; statistics of train, eval and the served "
         "logs (parsed again from the request logs), the checks, both HTML pages and the alerts record. "
         "Week 1 infers and curates the schema; week 2 is checked against it (week 0 is the simulator's "
         "bootstrap week).")


def bench_validate() -> dict[str, Any]:
    """``recloop validate`` on a default-scale week (previous week for drift, its statistics for skew)."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = f"{tmp}/default"
        run_timed(["recloop", "simulate", "--out", logs, "--scale", "default", "--weeks", "3", "--seed", "0"])
        for week in (1, 2):
            start = START + dt.timedelta(days=7 * week)
            run_timed(["recloop", "ingest", "--logs", logs, "--start", start.isoformat(),
                       "--end", (start + dt.timedelta(days=6)).isoformat(), "--out", f"{tmp}/i{week}"])
        runs = []
        for week, extra in ((1, []), (2, ["--previous", f"{tmp}/i1", "--reference-stats", f"{tmp}/v1/stats/train.pb"])):
            rss = f"{tmp}/v{week}.rss"
            wall = run_timed([sys.executable, "-c", MEASURED, rss, "validate", "--data", f"{tmp}/i{week}",
                              "--out", f"{tmp}/v{week}", *extra], ok=(0, 3))  # 3: a blocking anomaly, still measured
            verdict = json.loads(Path(tmp, f"v{week}", "anomalies.json").read_text())
            summary = json.loads(Path(tmp, f"i{week}", "summary.json").read_text())
            runs.append({"week": week, "checks": "schema, catalog" + (", drift, skew" if extra else ""),
                         "train_examples": summary["examples"]["train"], "eval_examples": summary["examples"]["eval"],
                         "served_impressions": summary["impressions"]["in_used_requests"],
                         "process_s": round(wall, 2), "peak_rss_mib": round(int(Path(rss).read_text()) / 1024),
                         "blocking": verdict["blocking"], "distances": len(verdict["measurements"])})
            print(f"  validate week {week}: {wall:.1f} s", file=sys.stderr)
    return {"runs": runs}


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a validation result."""
    rows = [[run["week"], run["checks"], f"{run['train_examples']:,}", f"{run['eval_examples']:,}",
             f"{run['served_impressions']:,}", run["process_s"], run["peak_rss_mib"], run["distances"],
             "yes" if run["blocking"] else "no"] for run in r["figures"]["runs"]]
    return "\n".join([
        "## Validation: TFDV statistics, schema, drift and skew of a default-scale week", "",
        table(["week", "checks", "train examples", "eval examples", "served impressions", "process s",
               "peak RSS MiB", "distances", "blocking"], rows), "", r["notes"]])
