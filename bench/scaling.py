"""The pipeline scaling benchmark: ingest, validation and training at 1x, 2x and 4x data, in one run.

``recloop simulate --scale default`` into a temporary folder (week 0 is the
bootstrap week and is not used), then spans of whole weeks starting at week 1.
Each stage has its own 1x (``SIZES``), as large as this machine allows, so that
start-up stays a small share of it: ingest and validate 2/4/8 weeks, train
1/2/4 weeks (bench/window.py trains 1/2/4/8-week windows). ``recloop ingest``
holds out the span's last ``weeks`` days as eval, so train and eval splits both
grow with the span; ``recloop validate`` runs the
schema and catalog checks only (no previous span, no reference statistics, so
every size does the same work per example); ``recloop train`` runs its default
config (12 retrieval and 3 ranking epochs, export, index, offline evaluation:
all of what the weekly run does). Each is a subprocess whose own peak RSS is
recorded. Start-up is the process time of the same three commands on a
trivially small input (two ``tiny`` days, one of them eval): interpreter start,
imports, pipeline and model construction, export and every other cost that does
not grow with the data. The plain-Python reference join
(``common.reference_join``) of ingest's 1x span runs in the same process.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import plots
from common import MEASURED, START, reference_join, run_timed, table

STAGES = ("ingest", "validate", "train")
SIZES = {"ingest": (2, 4, 8), "validate": (2, 4, 8), "train": (1, 2, 4)}  # weeks from week 1: 1x, 2x, 4x
STARTUP_REPEATS = 2  # the fastest of these: the fixed costs, less the machine's other load
IMPORTS = {"ingest": "recloop.ingest", "validate": "recloop.validation.run", "train": "recloop.trainer.train"}

NOTES = ("Process seconds: the whole subprocess (interpreter start, imports, the work, the writes). In-job seconds: "
         "what the stage reports itself: ingest's `summary.json` `wall_seconds` (plan, Beam build and run, "
         "reconciliation, publish), train's model card `training_seconds` (read, checks, 12 retrieval and 3 ranking "
         "epochs, export, index, offline evaluation); validate reports none. Throughput is over in-job seconds where there "
         "are some, else process seconds. Each span holds one eval day per week, so train and eval examples both "
         "grow with it. Exponent: log(t4/t1) / log(n4/n1) of process seconds, n the stage's input (impressions for "
         "ingest, train + eval examples for validate and train); 'net' subtracts the start-up first. Start-up: the "
         "fastest of two process runs of the same command on two `tiny` days (fixed costs: interpreter, imports, "
         "Beam/TFDV/Keras construction, train's export and index); 'import s' is `python -c 'import recloop...'` "
         "alone. The issue asks for sizes where start-up is under 10% of each stage's 1x time.")


def _span(weeks_from: int, weeks: int) -> tuple[str, str]:
    start = START + dt.timedelta(days=7 * weeks_from)
    return start.isoformat(), (start + dt.timedelta(days=7 * weeks - 1)).isoformat()


def _measured(args: list[str], rss: str, ok: tuple[int, ...] = (0,)) -> tuple[float, int]:
    """Runs ``recloop ARGS`` in a child; its process seconds and peak RSS (MiB)."""
    wall = run_timed([sys.executable, "-c", MEASURED, rss, *args], ok=ok)
    return round(wall, 2), round(int(Path(rss).read_text()) / 1024)


def _stages(logs: str, work: str, start: str, end: str, eval_days: int,
            stages: tuple[str, ...] = STAGES) -> dict[str, dict[str, Any]]:
    """Ingest one span, then validate and train it where ``stages`` asks; one record per stage run."""
    data, checked, model = f"{work}/ingest", f"{work}/validate", f"{work}/model"
    wall, rss = _measured(["ingest", "--logs", logs, "--start", start, "--end", end, "--eval-days", str(eval_days),
                           "--out", data], f"{work}.ingest.rss")
    s = json.loads(Path(data, "summary.json").read_text())
    impressions = s["impressions"]["in_used_requests"]
    n_train, n_eval = s["examples"]["train"], s["examples"]["eval"]
    examples = n_train + n_eval
    out: dict[str, dict[str, Any]] = {"ingest": {
        "n": impressions, "unit": "impressions", "impressions": impressions, "examples": examples,
        "process_s": wall, "job_s": s["wall_seconds"], "peak_rss_mib": rss,
        "reconciles": all(eq["holds"] for eq in s["reconciliation"].values())}}

    if "validate" in stages:
        wall, rss = _measured(["validate", "--data", data, "--out", checked], f"{work}.validate.rss",
                              ok=(0, 3))  # 3: a blocking anomaly, still measured
        verdict = json.loads(Path(checked, "anomalies.json").read_text())
        out["validate"] = {"n": examples, "unit": "examples", "train_examples": n_train, "eval_examples": n_eval,
                           "served_impressions": impressions, "process_s": wall, "job_s": None,
                           "peak_rss_mib": rss, "blocking": verdict["blocking"]}

    if "train" not in stages:
        return out
    wall, rss = _measured(["train", "--data", data, "--out", model], f"{work}.train.rss")
    card = json.loads(Path(model, "model_card.json").read_text())
    t = card["training"]
    out["train"] = {"n": examples, "unit": "examples", "train_examples": n_train, "eval_examples": n_eval,
                    "process_s": wall, "job_s": card["training_seconds"], "peak_rss_mib": rss,
                    "retrieval": {k: t["retrieval"][k] for k in ("examples", "seconds")},
                    "ranking": {k: t["ranking"][k] for k in ("examples", "seconds")},
                    "catalog_items": card["data"]["catalog_items"]}
    return out


def _startup(tmp: str) -> dict[str, dict[str, Any]]:
    """Process seconds of each stage on two ``tiny`` days (the fastest of ``STARTUP_REPEATS``), and import time."""
    logs = f"{tmp}/tiny"
    run_timed(["recloop", "simulate", "--out", logs, "--scale", "tiny", "--weeks", "1", "--seed", "0"])
    start = START.isoformat()
    end = (START + dt.timedelta(days=1)).isoformat()
    runs = [_stages(logs, f"{tmp}/tiny-{i}", start, end, 1) for i in range(STARTUP_REPEATS)]
    out = {}
    for stage in STAGES:
        imports = min(run_timed([sys.executable, "-c", f"import recloop.cli, {IMPORTS[stage]}"])
                      for _ in range(STARTUP_REPEATS))
        best = min((r[stage] for r in runs), key=lambda r: r["process_s"])
        out[stage] = {"n": best["n"], "process_s": best["process_s"], "job_s": best["job_s"],
                      "all_process_s": [r[stage]["process_s"] for r in runs], "import_s": round(imports, 2)}
    return out


def bench_scaling(quick: bool = False) -> dict[str, Any]:
    """Runs the whole benchmark (``quick``: the same on the ``small`` scale); the figures for results/scaling.json."""
    scale = "small" if quick else "default"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        logs = f"{tmp}/{scale}"
        weeks_needed = 1 + max(max(sizes) for sizes in SIZES.values())
        print(f"simulating {scale} ({weeks_needed} weeks) ...", file=sys.stderr)
        simulate_s = run_timed(["recloop", "simulate", "--out", logs, "--scale", scale, "--weeks", str(weeks_needed),
                                "--seed", "0"])
        print("start-up: the three stages on two tiny days ...", file=sys.stderr)
        startup = _startup(tmp)
        runs: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
        for weeks in sorted({w for sizes in SIZES.values() for w in sizes}):
            start, end = _span(1, weeks)
            wanted = tuple(stage for stage in STAGES if weeks in SIZES[stage])
            for stage, record in _stages(logs, f"{tmp}/w{weeks}", start, end, weeks, wanted).items():
                if stage not in wanted:
                    continue  # ingest of a span only validate or train needs
                runs[stage].append({"weeks": weeks, "span": [start, end], **record})
                print(f"  {stage} {weeks} week(s): {record['process_s']} s process, {record['job_s']} s in the job, "
                      f"{record['peak_rss_mib']} MiB", file=sys.stderr)
        reference = reference_join(logs, *(dt.date.fromisoformat(d) for d in _span(1, SIZES["ingest"][0])))
    figures = derive({"scale": scale, "quick": quick, "simulate_s": round(simulate_s, 1), "runs": runs,
                      "startup": startup, "reference": reference, "train_streams": True})
    figures["total_s"] = round(time.perf_counter() - t0)
    return figures


def _fit(n: list[float], t: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of t over n."""
    n_mean, t_mean = sum(n) / len(n), sum(t) / len(t)
    slope = sum((a - n_mean) * (b - t_mean) for a, b in zip(n, t)) / sum((a - n_mean) ** 2 for a in n)
    return slope, t_mean - slope * n_mean


def derive(f: dict[str, Any]) -> dict[str, Any]:
    """Per stage: time ratios, exponents, the least-squares fit and the start-up share of the 1x run."""
    stages = {}
    for stage in STAGES:
        runs = f["runs"][stage]
        n = [r["n"] for r in runs]
        t = [r["process_s"] for r in runs]
        s = f["startup"][stage]["process_s"]
        slope, intercept = _fit(n, t)
        log_n = math.log(n[2] / n[0])
        job = [r["job_s"] for r in runs]
        net = (t[2] - s) / (t[0] - s) if t[0] > s else None
        for r in runs:
            seconds = r["job_s"] or r["process_s"]
            r["per_s"] = round(r["n"] / seconds)
        stages[stage] = {
            "n_ratio_2x": round(n[1] / n[0], 3), "n_ratio_4x": round(n[2] / n[0], 3),
            "t_ratio_2x": round(t[1] / t[0], 2), "t_ratio_4x": round(t[2] / t[0], 2),
            "exponent": round(math.log(t[2] / t[0]) / log_n, 3),
            "exponent_net_of_startup": round(math.log(net) / log_n, 3) if net and net > 0 else None,
            "exponent_job": round(math.log(job[2] / job[0]) / log_n, 3) if all(job) else None,
            "fit_us_per_unit": round(slope * 1e6, 3), "fit_intercept_s": round(intercept, 2),
            "startup_s": s, "import_s": f["startup"][stage]["import_s"],
            "startup_share_1x": round(s / t[0], 3), "startup_under_10pct": s / t[0] < 0.10,
            "peak_rss_mib": [r["peak_rss_mib"] for r in runs]}
    one = f["runs"]["ingest"][0]
    return f | {"stages": stages, "ratio_to_reference": round(one["per_s"] / f["reference"]["impressions_per_s"], 3)}


def _one_x(f: dict[str, Any]) -> str:
    return ", ".join(f"{stage} {f['runs'][stage][0]['weeks']} week(s)" for stage in STAGES)


def plot(f: dict[str, Any], path: Path) -> None:
    """Process seconds against data (log-log) with each stage's start-up."""
    with plots.figure(path, height=4.2) as ax:
        for stage, color in zip(STAGES, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            runs = f["runs"][stage]
            x = [r["n"] / runs[0]["n"] for r in runs]
            ax.plot(x, [r["process_s"] for r in runs], "o-", color=color,
                    label=f"{stage} (exponent {f['stages'][stage]['exponent']})")
            ax.axhline(f["stages"][stage]["startup_s"], color=color, linestyle=":", linewidth=1)
            ax.plot([1, 4], [runs[0]["process_s"], 4 * runs[0]["process_s"]], "--", color=color, linewidth=0.8,
                    alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 4], ["1x", "2x", "4x"])
        ax.set_xlabel(f"data, x the stage's 1x ({f['scale']} scale: {_one_x(f)})")
        ax.set_ylabel("process seconds")
        ax.set_title("Pipeline scaling (dashed: linear from 1x; dotted: start-up)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a scaling result (and its plot, ``results/scaling.png``)."""
    f = r["figures"]
    plot(f, results / "scaling.png")
    rows, exps, warnings = [], [], []
    for stage in STAGES:
        st = f["stages"][stage]
        for run in f["runs"][stage]:
            rows.append([stage, (f"{run['weeks'] // f['runs'][stage][0]['weeks']}x: {run['weeks']} week(s) "
                         f"({run['span'][0]}..{run['span'][1]})"),
                         f"{run['n']:,} {run['unit']}", run["process_s"],
                         "-" if run["job_s"] is None else round(run["job_s"], 2), f"{run['per_s']:,}",
                         run["peak_rss_mib"]])
        net = st["exponent_net_of_startup"]
        exps.append([stage, f"{st['n_ratio_4x']}x", st["t_ratio_2x"], st["t_ratio_4x"], f"**{st['exponent']}**",
                     "-" if net is None else net, "-" if st["exponent_job"] is None else st["exponent_job"],
                     f"{st['fit_us_per_unit']} / {st['fit_intercept_s']}",
                     f"{st['startup_s']} ({st['import_s']})", f"{st['startup_share_1x']:.1%}"])
        if not st["startup_under_10pct"]:
            warnings.append(f"{stage} ({st['startup_share_1x']:.0%}, imports {st['import_s']} s)")
    ref = f["reference"]
    ingest_1x = f["runs"]["ingest"][0]
    lines = [
        "## Pipeline scaling: ingest, validation, training at 1x/2x/4x", "",
        (f"`{f['scale']}` scale, spans of whole weeks from week 1, each stage's 1x {_one_x(f)}"
         + (" (quick run)" if f.get("quick") else "") + f"; whole benchmark {f['total_s']} s."), "",
        table(["stage", "size", "input", "process s", "in-job s", "input/s", "peak RSS MiB"], rows), "",
        table(["stage", "n4/n1", "t2/t1", "t4/t1", "exponent", "exponent net of start-up", "exponent in-job",
               "fit us per unit / intercept s", "start-up s (import s)", "start-up % of 1x"], exps), "",
        (f"Reference join (plain Python, one process) of ingest's 1x span: {ref['impressions_per_s']:,} impressions/s; "
         f"ingest's job ran at {ingest_1x['per_s']:,} impressions/s, **{f['ratio_to_reference']:.2f}x** the "
         "reference."),
    ]
    if warnings:
        lines += ["", (f"Start-up is 10% or more of the 1x run for {', '.join(warnings)}: read the exponent net of "
                       "start-up for the growth per example.")]
    if not f.get("train_streams"):  # results recorded before d1977c0
        train_4x = f["runs"]["train"][-1]["peak_rss_mib"]
        lines += ["", (f"Train's rows were measured before training streamed its examples (it held them in memory: "
                       f"{train_4x:,} MiB at 4x); the training windows section measures the streaming trainer.")]
    lines += ["", "![process seconds against data, log-log](results/scaling.png)"]
    return "\n".join([*lines, "", r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a scaling result's figures: per stage, exponents, start-up and peak at 4x."""
    return "**Pipeline scaling** (1x/2x/4x default weeks): " + "; ".join(
        f"{stage} exponent {st['exponent']} (net of start-up {st['exponent_net_of_startup']}), start-up "
        f"{st['startup_share_1x']:.0%} of 1x, peak {f['runs'][stage][-1]['peak_rss_mib']:,} MiB at 4x"
        for stage, st in f["stages"].items()) + "."
