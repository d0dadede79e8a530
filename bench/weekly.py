"""The weekly pipeline at scale: ``recloop run`` (kfp.local) on one default-scale week, per task and in all.

A default-scale world is simulated for two weeks (the second holds the first week's late events), and the
weekly pipeline runs on week 0 as a first run would: an empty registry, so the gate compares the
candidate with the heuristics and a blessed one becomes the first version. ``recloop run`` is a
subprocess; a sampler thread reads the resident memory of its process tree with psutil every half
second. kfp.local runs each task as one child process (with its own children: the server of
infra-validate), whose command line names the component, so each child's peak is its task's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import START, run_timed, table

SCALE = os.environ.get("RECLOOP_BENCH_WEEKLY_SCALE", "default")  # tiny: a quick check of this script
WEEKS, SAMPLE_S = 2, 0.5
TARGET_MIN = 15.0  # the target for the whole run on this machine

NOTES = ("`recloop simulate --scale default --weeks 2`, then `recloop run --start 2026-01-05 --end 2026-01-11` "
         "(the training config's epochs, a fresh registry and run state). Task seconds are kfp.local's, from the "
         "run's `run.json`; each includes the task's process start-up and imports. Peak RSS is the largest sum "
         f"over a task's process tree, sampled every {SAMPLE_S} s (a shorter peak can be missed). The whole "
         "run is the `recloop run` process, wall clock.")


class _Sampler(threading.Thread):
    """Peak resident memory of each task's process tree under ``pid``: kfp.local starts a task as a child
    running ``--function_to_execute <component>``, so the component names it."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peaks, self.stop = pid, {}, threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                for child in root.children():
                    task, rss = _component(child.cmdline()), 0
                    for p in [child, *child.children(recursive=True)]:
                        try:
                            rss += p.memory_info().rss
                        except psutil.Error:
                            continue
                    self.peaks[task] = max(self.peaks.get(task, 0), rss)
            except psutil.Error:
                pass
            self.stop.wait(SAMPLE_S)


def _component(argv: list[str]) -> str:
    """The task a kfp.local child runs (its component's function, ``infra_validate`` -> ``infra-validate``)."""
    if "--function_to_execute" in argv[:-1]:
        return argv[argv.index("--function_to_execute") + 1].replace("_", "-")
    return "other"


def bench_weekly() -> dict[str, Any]:
    """Times ``recloop run`` on one default-scale week, per task, with each task's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        logs, work = f"{tmp}/logs", f"{tmp}/work"
        simulate_s = run_timed(["recloop", "simulate", "--out", logs, "--scale", SCALE, "--weeks", str(WEEKS),
                                "--seed", "0"])
        end = START + dt.timedelta(days=6)
        argv = [sys.executable, "-m", "recloop.cli", "run", "--logs", logs, "--registry", f"{tmp}/registry",
                "--work", work, "--start", START.isoformat(), "--end", end.isoformat()]
        print(f"  recloop run on {START}..{end} ...", file=sys.stderr)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        sampler = _Sampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        (run_json,) = Path(work, "runs").glob("*/run.json")
        run = json.loads(run_json.read_text())
        summary = json.loads(next(Path(run_json.parent, "ingest").rglob("summary.json")).read_text())
        pushed = next(Path(run_json.parent, "push").rglob("pushed.json"), None)
        pushed = json.loads(pushed.read_text()) if pushed else None
    steps = [{"task": t, "state": x["state"], "seconds": x["seconds"],  # a task shorter than a sample: None
              "peak_rss_mib": round(sampler.peaks[t] / 2**20) if t in sampler.peaks else None}
             for t, x in run["tasks"].items()]
    return {"scale": SCALE, "span": [START.isoformat(), end.isoformat()], "simulate_s": round(simulate_s, 1),
            "exit_code": rc, "state": run["state"], "error": run["error"], "run_s": round(wall, 1),
            "kfp_seconds": run["seconds"], "steps": steps, "unattributed_peak_mib": round(sampler.peaks.get("other", 0) / 2**20),
            "impressions": summary["impressions"]["in_used_requests"],
            "examples": summary["examples"], "pushed": pushed}


def headline(f: dict[str, Any]) -> str:
    slowest = max(f["steps"], key=lambda s: s["seconds"] or 0)
    return (f"**Weekly run** (`recloop run`, one default-scale week, {f['impressions']:,} impressions): "
            f"{f['run_s'] / 60:.1f} min in all ({'under' if f['run_s'] / 60 <= TARGET_MIN else 'over'} the "
            f"{TARGET_MIN:g}-minute target), {slowest['task']} {slowest['seconds'] / 60:.1f} min of it")


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a weekly-run result."""
    f = r["figures"]
    rows = [[s["task"], s["state"].lower(), f"{s['seconds']:.1f}", f"{s['seconds'] / f['run_s']:.0%}",
             "–" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:,}"] for s in f["steps"]]
    rows.append(["**all** (`recloop run`)", f["state"].lower(), f"{f['run_s']:.1f}", "100%", ""])
    pushed = f["pushed"] or {}
    return "\n".join([
        f"## The weekly pipeline on one {f['scale']}-scale week", "",
        (f"Span {f['span'][0]}..{f['span'][1]}: {f['impressions']:,} impressions, {f['examples']['train']:,} "
         f"training and {f['examples']['eval']:,} eval examples. The run {f['state'].lower()} in "
         f"{f['run_s'] / 60:.1f} min (target: {TARGET_MIN:g} min); pushed: "
         f"{'yes, ' + str(pushed.get('version')) if pushed.get('pushed') else 'no (' + str(pushed.get('reason')) + ')'}."),
        "", table(["task", "state", "seconds", "share of the run", "peak RSS MiB"], rows), "", r["notes"]])
