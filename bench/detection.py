"""The detection table: every injected serving, client or logging bug, on seeds no test or tuning used.

Each bug starts in week 2 of a tiny simulated world. Week 1 is clean and is validated first (its curated
schema becomes the run state's version 1, as in the weekly pipeline); week 2 is validated against week 1
(drift and the per-version and delivery measures), week 1's training statistics (skew) and that schema.
A bug is caught when week 2 blocks and the blocking anomalies name its field. The clean worlds of the same
seeds (weeks 1-4) and the runs of a tiny ``recloop demo`` (a model pushed before every week but the first)
give the largest distance each check measured on clean data, relative to its threshold. The thresholds and
checks were tuned on seed 21 (tests use seeds 21-24); the seeds here are used nowhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import START, table

from recloop.serving.settings import HOLDOUT_VERSION

SEEDS = (31, 32)
TUNING_SEED = 21
BUG_WEEK = 2
DEMO_WEEKS = 5
ANOMALIES_REPEATS = 5

# bug -> (the field a blocking anomaly must name, whose bug it is)
BUGS: dict[str, tuple[str, str]] = {
    "unit-bug": ("duration_min", "named"),
    "platform-rename": ("platform", "named"),
    "null-surge": ("country", "named"),
    "new-category": ("category", "named"),
    "event-dup": ("events.duplicate_share", "own"),
    "event-clock": ("events.late_share", "own"),
    "event-lag": ("events.click_delay", "own"),
    "propensity-bug": ("logged.certain_share", "own"),
    "explored-bug": ("logged.explored_share", "own"),
    "request-dup": ("requests.duplicate_share", "own"),
    "row-case": ("logged.row_mix", "own"),
    "hour-tz": ("hour_of_day", "own"),
    "tenure-default": ("tenure_days", "own"),
    "stale-category": ("category", "own"),
}

NOTES = ("Tiny worlds: 2,000 requests and 20,000 impressions a week (24,000 on the demo's server pages). Named "
         "= one of the four bugs the issue named (new-category is a real change that must still be flagged); own "
         "= written for the monitoring issue, tuned on seed 21. Distance/threshold is the named field's largest "
         "blocking anomaly; a schema anomaly has no distance and shows its evidence instead. Other blocking = "
         "anything else that blocked that week. Clean: the largest distance/threshold of each check over weeks "
         "1-4 of the clean worlds of both seeds, over the runs of a tiny `recloop demo --drift none` (seed 31) on "
         "weeks a model served, and over its runs right after a push (a version first seen: what it logged is "
         "compared with its infra validation). A warn-only check over its threshold warns and does not block. "
         "`recloop anomalies` is timed as a subprocess on the row-case run folder, 5 times.")


def _validate_weeks(root: str, sim: str, weeks: range, base: str | None = None) -> list[dict[str, Any]]:
    """Ingests and validates ``weeks`` of the simulated logs ``sim`` into ``root`` (i<week>, v<week>), each
    against the week before and the run state's schema, as the weekly pipeline does. ``base``: the clean
    world's folder, which holds the week before the first and the state after week 1 (``state1``)."""
    from recloop.ingest import IngestConfig, run
    from recloop.validation.run import validate

    state, before = f"{root}/state", base or root
    if base:
        shutil.copytree(f"{base}/state1", state)
    verdicts = []
    for week in weeks:
        start = START + dt.timedelta(days=7 * week)
        run(IngestConfig(logs=sim, start=start, end=start + dt.timedelta(days=6), out=f"{root}/i{week}"))
        previous = {} if week == 1 else {"previous": f"{before}/i{week - 1}",
                                         "reference_stats": f"{before}/v{week - 1}/stats/train.pb"}
        verdicts.append(validate(f"{root}/i{week}", f"{root}/v{week}", state_dir=state, **previous))
        if week == 1:
            shutil.copytree(state, f"{root}/state1")  # the state a bug's week 2 starts from
        before = root
    return verdicts


def _ratios(measurements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The largest distance / threshold of each check (feature, check, measure), and whether it blocks."""
    out: dict[str, dict[str, Any]] = {}
    for m in measurements:
        key = f"{m['feature']} {m['check']} {m['measure']}"
        ratio = m["distance"] / m["threshold"]
        if key not in out or ratio > out[key]["ratio"]:
            out[key] = {"feature": m["feature"], "check": m["check"], "measure": m["measure"],
                        "blocks": m["blocks"], "ratio": round(ratio, 4)}
    return out


def _caught(verdict: dict[str, Any], field: str) -> dict[str, Any]:
    from recloop.validation.anomaly import evidence

    blocking = [a for a in verdict["anomalies"] if a["blocking"]]
    named = [a for a in blocking if a["feature"] == field]
    hit = max(named, key=lambda a: (a["distance"] or 0) / (a["threshold"] or 1), default=None)
    return {"blocking": verdict["blocking"], "caught": bool(named),
            "check": hit and f"{hit['check']} {hit['measure']}",
            "ratio": hit and hit["distance"] is not None and round(hit["distance"] / hit["threshold"], 2),
            "evidence": hit and evidence(hit, 2),
            "other_blocking": sorted({a["feature"] for a in blocking} - {field})}


def _demo(tmp: str, seed: int) -> dict[str, Any]:
    """A tiny ``recloop demo`` without incidents: each weekly run's verdict, and whether a push preceded it."""
    work = f"{tmp}/demo"
    subprocess.run([sys.executable, "-m", "recloop.cli", "demo", "--scale", "tiny", "--weeks", str(DEMO_WEEKS),
                    "--seed", str(seed), "--drift", "none", "--work", work], check=True, stdout=subprocess.DEVNULL)
    runs: list[dict[str, Any]] = []
    for path in sorted(Path(work, "runs").rglob("anomalies.json")):
        verdict = json.loads(path.read_text())
        versions = sorted(verdict.get("logged", {}).get("now") or {})
        pushed = bool(runs) and bool(set(versions) - set(runs[-1]["versions"]) - {HOLDOUT_VERSION})
        runs.append({"span": verdict["spans"]["current"], "blocking": verdict["blocking"], "versions": versions,
                     "after_push": pushed, "measurements": verdict["measurements"]})
    return {"seed": seed, "runs": runs}


def _anomalies_wall(run_dir: str) -> dict[str, Any]:
    """``recloop anomalies RUN_DIR`` as on-call runs it: wall seconds and what it wrote to stderr."""
    walls, stderr = [], ""
    for _ in range(ANOMALIES_REPEATS):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "recloop.cli", "anomalies", run_dir], check=True,
                              capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        stderr += proc.stderr
    return {"median_s": round(statistics.median(walls), 3), "max_s": round(max(walls), 3),
            "stderr_lines": len(stderr.splitlines())}


def bench_detection() -> dict[str, Any]:
    """The detection table, the clean distances and ``recloop anomalies``' wall time."""
    from recloop.simulator import parse_drift, simulate

    rows: list[dict[str, Any]] = []
    clean: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            base = f"{tmp}/s{seed}"
            simulate(f"{base}/sim", weeks=5, start=START, scale="tiny", seed=seed)
            verdicts = _validate_weeks(base, f"{base}/sim", range(1, 5))
            clean += [{"seed": seed, "week": w, "blocking": v["blocking"], "measurements": v["measurements"]}
                      for w, v in enumerate(verdicts, start=1)]
            for bug, (field, whose) in BUGS.items():
                root = f"{tmp}/s{seed}-{bug}"
                simulate(f"{root}/sim", weeks=BUG_WEEK + 1, start=START, scale="tiny", seed=seed,
                         drifts=[parse_drift(f"{bug}@{BUG_WEEK}")])
                (verdict,) = _validate_weeks(root, f"{root}/sim", range(BUG_WEEK, BUG_WEEK + 1), base=base)
                rows.append({"bug": bug, "whose": whose, "seed": seed, "field": field,
                             "before_blocking": verdicts[0]["blocking"], **_caught(verdict, field)})
                print(f"  {bug} seed {seed}: {'caught' if rows[-1]['caught'] else 'MISSED'}", file=sys.stderr)
        demo = _demo(tmp, SEEDS[0])
        wall = _anomalies_wall(f"{tmp}/s{SEEDS[0]}-row-case/v{BUG_WEEK}")
    views = {"simulator": _ratios([m for c in clean for m in c["measurements"]]),
             "served": _ratios([m for r in demo["runs"][1:] for m in r["measurements"]]),
             "after_push": _ratios([m for r in demo["runs"] if r["after_push"] for m in r["measurements"]])}
    checks = []
    for key in sorted(set().union(*views.values())):
        first = next(v[key] for v in views.values() if key in v)
        checks.append({k: first[k] for k in ("feature", "check", "measure", "blocks")}
                      | {view: v[key]["ratio"] if key in v else None for view, v in views.items()})
    return {"seeds": list(SEEDS), "tuning_seed": TUNING_SEED, "rows": rows,
            "clean_weeks": [{k: c[k] for k in ("seed", "week", "blocking")} for c in clean],
            "demo_runs": [{k: r[k] for k in ("span", "blocking", "versions", "after_push")} for r in demo["runs"]],
            "checks": checks, "anomalies_cli": wall}


def headline(f: dict[str, Any]) -> str:
    own = [r for r in f["rows"] if r["whose"] == "own"]
    bugs = len({r["bug"] for r in own})
    clean = sum(not c["blocking"] for c in f["clean_weeks"]) + sum(not r["blocking"] for r in f["demo_runs"])
    total = len(f["clean_weeks"]) + len(f["demo_runs"])
    return (f"**Monitoring** (tiny worlds, seeds {', '.join(map(str, f['seeds']))}: unused by tests and tuning): "
            f"{sum(r['caught'] for r in own)}/{len(own)} runs of {bugs} bugs of our own blocked their first week "
            f"naming the field; {clean}/{total} clean weekly runs without a blocking anomaly; `recloop anomalies` "
            f"{f['anomalies_cli']['median_s']:.2f} s")


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a detection result."""
    f = r["figures"]
    rows = [[x["bug"], x["whose"], x["seed"], "yes" if x["caught"] else "**no**", x["field"], x["check"] or "–",
             x["ratio"] if x["ratio"] else (x["evidence"] or "–"), ", ".join(x["other_blocking"]) or "–",
             "no" if not x["before_blocking"] else "**yes**"] for x in f["rows"]]
    views = ("simulator", "served", "after_push")
    checks = sorted(f["checks"], key=lambda c: (not c["blocks"], -max(c[v] or 0 for v in views)))
    clean_rows = [[c["feature"], c["check"], c["measure"], "blocks" if c["blocks"] else "warns",
                   *("–" if c[v] is None else f"{c[v] or 0.0:.2f}" for v in views)] for c in checks]  # no -0.00
    demo = [[d["span"], ", ".join(d["versions"]), "yes" if d["after_push"] else "no", "yes" if d["blocking"] else "no"]
            for d in f["demo_runs"]]
    w = f["anomalies_cli"]
    return "\n".join([
        "## Monitoring: which bugs block their first week, and how far clean weeks stay from the thresholds", "",
        f"Seeds {', '.join(map(str, f['seeds']))}; checks tuned on seed {f['tuning_seed']}.", "",
        table(["bug", "whose", "seed", "caught", "field", "check", "distance / threshold (or evidence)",
               "other blocking", "week before blocked"], rows), "",
        (f"Clean weekly runs: {sum(not c['blocking'] for c in f['clean_weeks'])} of {len(f['clean_weeks'])} "
         f"simulator weeks and {sum(not d['blocking'] for d in f['demo_runs'])} of {len(f['demo_runs'])} demo "
         "runs without a blocking anomaly. The demo's runs and the versions whose logs each checked:"), "",
        table(["span", "versions logged", "right after a push", "blocking"], demo), "",
        ("Largest distance / threshold per check on clean data (1.00 = at the threshold), blocking checks first: "
         "over the clean simulator weeks, over the demo's weeks served by a model, and over its runs right after "
         "a push:"), "",
        table(["feature", "check", "measure", "over its threshold", "clean simulator weeks", "demo, model served",
               "demo, right after a push"], clean_rows), "",
        (f"`recloop anomalies RUN_DIR`: median {w['median_s']:.3f} s, slowest {w['max_s']:.3f} s of "
         f"{ANOMALIES_REPEATS}; {w['stderr_lines']} lines on stderr."), "", r["notes"]])
