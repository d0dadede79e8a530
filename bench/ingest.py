"""The ingest benchmark: throughput per scale, linearity at 1x/2x/4x data, and a plain-Python reference join.

Everything is measured in one run on simulated logs written to a temporary
folder: ``recloop simulate`` (small: 2 weeks; default: 5 weeks), then
``recloop ingest`` as a subprocess over one-week spans (small, default) and over
1, 2 and 4 default weeks. The reference join (``common.reference_join``) is
kept fixed on purpose: it reads the same files with ``json.loads``, joins events
to impressions by (request_id, item_id) inside the window and counts labels,
with no validation, dead letters, split, hygiene or encoding. It is the
single-core ceiling the Beam job is compared with, not a competitor.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import MEASURED, START, reference_join, run_timed, table

NOTES = ("Job seconds are `summary.json`'s `wall_seconds` (plan, Beam pipeline build and run, reconciliation, "
         "publish); process seconds add interpreter start and imports. Peak RSS is the ingest process's own. "
         "Outputs: gzip level 1 TFRecords, one file per join bucket and output.")


def _ingest(logs: str, out: str, weeks_from: int, weeks: int) -> dict[str, Any]:
    start = START + dt.timedelta(days=7 * weeks_from)
    end = start + dt.timedelta(days=7 * weeks - 1)
    rss = f"{out}.rss"
    wall = run_timed([sys.executable, "-c", MEASURED, rss, "ingest", "--logs", logs, "--start", start.isoformat(),
                      "--end", end.isoformat(), "--out", out, "--overwrite"])
    s = json.loads(Path(out, "summary.json").read_text())
    examples = s["examples"]["train"] + s["examples"]["eval"]
    print(f"  ingest {weeks} week(s) from week {weeks_from}: {s['wall_seconds']} s in the job, {wall:.1f} s process",
          file=sys.stderr)
    return {"weeks": weeks, "span": [start.isoformat(), end.isoformat()],
            "impressions": s["impressions"]["in_used_requests"], "examples": examples,
            "job_s": s["wall_seconds"], "process_s": round(wall, 2),
            "impressions_per_s": round(s["impressions"]["in_used_requests"] / s["wall_seconds"]),
            "examples_per_s": round(examples / s["wall_seconds"]), "join_buckets": s["inputs"]["join_buckets"],
            "peak_rss_mib": round(int(Path(rss).read_text()) / 1024),
            "reconciles": all(eq["holds"] for eq in s["reconciliation"].values())}


def bench_ingest() -> dict[str, Any]:
    """Runs the whole benchmark; returns the figures for bench/results/ingest.json."""
    with tempfile.TemporaryDirectory() as tmp:
        small, default = f"{tmp}/small", f"{tmp}/default"
        print("simulating small (2 weeks) and default (5 weeks) ...", file=sys.stderr)
        run_timed(["recloop", "simulate", "--out", small, "--scale", "small", "--weeks", "2", "--seed", "0"])
        run_timed(["recloop", "simulate", "--out", default, "--scale", "default", "--weeks", "5", "--seed", "0"])
        by_scale = {"small": _ingest(small, f"{tmp}/o-s", 1, 1), "default": _ingest(default, f"{tmp}/o-1", 1, 1)}
        scaling = [by_scale["default"], _ingest(default, f"{tmp}/o-2", 1, 2), _ingest(default, f"{tmp}/o-4", 1, 4)]
        reference = reference_join(default, START + dt.timedelta(days=7), START + dt.timedelta(days=13))
    return derive({"by_scale": by_scale, "scaling": scaling, "reference": reference,
                   "target_impressions_per_s": 40_000})


def derive(f: dict[str, Any]) -> dict[str, Any]:
    """Adds the figures computed from the measured runs: ratios, exponent, cost per impression, start-up."""
    n = [r["impressions"] for r in f["scaling"]]
    t = [r["job_s"] for r in f["scaling"]]
    # least-squares slope over 1x/2x/4x: the cost per impression
    n_mean, t_mean = sum(n) / 3, sum(t) / 3
    slope = sum((a - n_mean) * (b - t_mean) for a, b in zip(n, t)) / sum((a - n_mean) ** 2 for a in n)
    small = f["by_scale"]["small"]
    startup = small["job_s"] - slope * small["impressions"]  # what the small run spent beyond its share of work
    return f | {
        "ratio_4x_data": round(n[2] / n[0], 2),
        "ratio_4x_time": round(t[2] / t[0], 2),
        "exponent": round(math.log(t[2] / t[0]) / math.log(n[2] / n[0]), 3),
        "fit_us_per_impression": round(slope * 1e6, 2),
        "fit_intercept_s": round(t_mean - slope * n_mean, 2),
        "startup_s": round(startup, 2),
        "startup_share_1x": round(startup / t[0], 3),
        "ratio_to_reference": round(f["by_scale"]["default"]["impressions_per_s"]
                                    / f["reference"]["impressions_per_s"], 3),
    }


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of an ingest result."""
    f = r["figures"]
    rows = [[name, run["span"][0] + ".." + run["span"][1], f"{run['impressions']:,}", run["job_s"], run["process_s"],
             f"{run['impressions_per_s']:,}", f"{run['examples_per_s']:,}", run["peak_rss_mib"],
             "yes" if run["reconciles"] else "NO"]
            for name, run in [("small, 1 week", f["by_scale"]["small"]), *(
                (f"default, {s['weeks']} week(s)", s) for s in f["scaling"])]]
    ref = f["reference"]
    default = f["by_scale"]["default"]
    return "\n".join([
        "## Ingest: logs -> labelled tf.Examples (Apache Beam, DirectRunner in_memory)",
        "",
        (f"One default-scale week: **{default['impressions_per_s']:,} impressions/s** "
         f"({default['examples_per_s']:,} examples/s) in the job, target {f['target_impressions_per_s']:,}. "
         f"Plain-Python reference join of the same week, measured in the same run: {ref['impressions_per_s']:,} "
         f"impressions/s, so the Beam job runs at **{f['ratio_to_reference']:.2f}x** the reference "
         "(it also validates every line, dead-letters, splits, applies the hygiene rules and encodes tf.Examples)."),
        "",
        table(["span", "dates", "impressions", "job s", "process s", "impressions/s", "examples/s", "peak RSS MiB",
               "reconciles"], rows),
        "",
        (f"Linearity: {f['ratio_4x_data']}x the data took **{f['ratio_4x_time']}x** the time (limit 4.4x), "
         f"exponent {f['exponent']}. The least-squares slope over 1x/2x/4x is {f['fit_us_per_impression']} us per "
         f"impression (intercept {f['fit_intercept_s']} s, within noise of 0); the small run spent "
         f"{f['startup_s']} s beyond that, the start-up: {f['startup_share_1x']:.1%} of the 1x run. Memory grows "
         "with the span: the DirectRunner holds a shuffle in memory (a cluster runner spills it)."),
        "",
        r["notes"],
    ])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of an ingest result's figures."""
    return (f"**Ingest** (Beam DirectRunner): {f['scaling'][-1]['impressions_per_s']:,} impressions/s at "
            f"4x data, exponent {f['exponent']}, {f['ratio_to_reference']}x the plain-Python join.")

