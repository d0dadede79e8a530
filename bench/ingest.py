"""The ingest benchmark: throughput per scale, linearity at 1x/2x/4x data, and a plain-Python reference join.

Everything is measured in one run on simulated logs written to a temporary
folder: ``recloop simulate`` (small: 2 weeks; default: 5 weeks), then
``recloop ingest`` as a subprocess over one-week spans (small, default) and over
1, 2 and 4 default weeks. The reference join is kept fixed here on purpose: it
reads the same files with ``json.loads``, joins events to impressions by
(request_id, item_id) inside the window and counts labels, with no validation,
dead letters, split, hygiene or encoding. It is the single-core ceiling the
Beam job is compared with, not a competitor.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START = dt.date(2026, 1, 5)
WINDOW_S = 24 * 3600


def reference_join(logs: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Plain single-process join of one span (fixed; see the module docstring)."""
    t0 = time.perf_counter()
    shown: dict[tuple[str, str], int] = {}  # (request, item) -> request ts
    labels: dict[tuple[str, str], set[str]] = {}
    for day in _days(start, end):
        for path in sorted(Path(logs, "requests", f"dt={day}").glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as lines:
                for line in lines:
                    try:
                        r = json.loads(line)
                        ts = dt.datetime.fromisoformat(r["ts"]).timestamp()
                        for imp in r["impressions"]:
                            shown[(r["request_id"], imp["item_id"])] = ts
                    except (ValueError, KeyError, TypeError):
                        continue
    for day in _days(start, end + dt.timedelta(days=1)):
        for path in sorted(Path(logs, "events", f"dt={day}").glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as lines:
                for line in lines:
                    try:
                        e = json.loads(line)
                        key = (e["request_id"], e["item_id"])
                        delay = dt.datetime.fromisoformat(e["ts"]).timestamp() - shown.get(key, -1e18)
                        if 0 <= delay <= WINDOW_S:
                            labels.setdefault(key, set()).add(e["event"])
                    except (ValueError, KeyError, TypeError):
                        continue
    seconds = time.perf_counter() - t0
    return {"impressions": len(shown), "labelled": len(labels), "seconds": round(seconds, 2),
            "impressions_per_s": round(len(shown) / seconds)}


def _days(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    code = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    if code not in ok:
        raise RuntimeError(f"exit {code}: {' '.join(argv[:3])} ... {' '.join(argv[-6:])}")
    return time.perf_counter() - t0


# runs the CLI in a child and reports that child's own peak memory
_MEASURED = ("import resource, sys\n"
             "from recloop.pipelines.cli import app\n"
             "try:\n    app(sys.argv[2:], prog_name='recloop')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
             "sys.exit(code)\n")


def _ingest(logs: str, out: str, weeks_from: int, weeks: int) -> dict[str, Any]:
    start = START + dt.timedelta(days=7 * weeks_from)
    end = start + dt.timedelta(days=7 * weeks - 1)
    rss = f"{out}.rss"
    wall = _run([sys.executable, "-c", _MEASURED, rss, "ingest", "--logs", logs, "--start", start.isoformat(),
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
        _run(["recloop", "simulate", "--out", small, "--scale", "small", "--weeks", "2", "--seed", "0"])
        _run(["recloop", "simulate", "--out", default, "--scale", "default", "--weeks", "5", "--seed", "0"])
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

def section(r: dict[str, Any], table: Any) -> str:
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

