"""The closed-loop benchmark: ``recloop demo`` with its defaults, kept as figures.

Each served week: the model's online click rate against the heuristic holdout
(20% of members by default, same week, same server) and the oracle's expectation; each run:
what the gate estimated offline (SNIPS, with its effective sample size) against
the click rate the pushed candidate then realised online the week after.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import plots
from common import MEASURED, run_timed, table

from recloop.cli import demo_page

NOTES = ("CTR = clicks / impressions of the week, by who served them (the server logs `heuristic-holdout` for the "
         "holdout's members), with 95% intervals clustered by member; lift = model CTR / holdout CTR - 1, its "
         "interval by the delta method on the log ratio (disjoint members); oracle = the mean of the simulator's "
         "best click probability over the same requests (it knows each member's hidden relevance: a bound, not a target). SNIPS is the gate's estimate of the "
         "candidate's click rate from the week's logs (cluster-robust interval by request, ESS its effective "
         "sample size); realised is that candidate's online rate the week after, when it was pushed, and the "
         "SNIPS-vs-realised column says whether the interval covered it. Week 0 is served by the simulator's "
         "heuristic (bootstrap). Stage seconds are kfp.local's per task (subprocess start included).")


def bench_closed_loop() -> dict[str, Any]:
    """Runs ``recloop demo`` (defaults) in a temporary folder; returns its per-week rows and headline."""
    return _demo() | {"reproducible": _reproducible()}


def _demo(*args: str) -> dict[str, Any]:
    """``recloop demo ARGS`` (defaults otherwise) in a temporary folder: its config, times, rows and headline."""
    with tempfile.TemporaryDirectory() as tmp:
        work, rss = f"{tmp}/demo", f"{tmp}/demo.rss"
        print(f"recloop demo {' '.join(args) or '(defaults)'} (10-20 min) ...", file=sys.stderr)
        wall = run_timed([sys.executable, "-c", MEASURED, rss, "demo", "--work", work, *args])
        result = json.loads(Path(work, "demo.json").read_text())
        peak_rss_kib = int(Path(rss).read_text())
        if os.environ.get("RECLOOP_BENCH_KEEP"):  # the whole work folder, for a look afterwards
            shutil.copytree(work, os.environ["RECLOOP_BENCH_KEEP"], dirs_exist_ok=True)
    return {"config": result["config"], "demo_s": round(result["seconds"], 1), "process_s": round(wall, 1),
            "peak_rss_mib": round(peak_rss_kib / 1024), "rows": demo_page.rows(result),
            "headline": demo_page.lift(result)}


# ----------------------------------------------------------------------------- the gate, judged in the loop

GATE = Path(__file__).parent / "gate_explored.yaml"
GATE_NOTES = ("Both runs are `recloop demo` with its defaults and the same seed: the same members, requests and "
              "week-1 logs; they part where the two gates decide differently, and from then on each week is served "
              "by what its own gate let through. Model CTR is the served model's click rate over the members not "
              "held out, with its 95% interval (clustered by member). The holdout's heuristic reads the serving "
              "version's popularity and profile tables, so it is as fresh as the model in production and the "
              "lift over it does not compare the two runs; the model CTRs of the same week do.")


def bench_closed_loop_gate() -> dict[str, Any]:
    """Runs ``recloop demo --gate-config bench/gate_explored.yaml``: the demo under a gate that also compares the
    explored views with production, to set beside the default gate's run (``results/closed_loop.json``)."""
    return _demo("--gate-config", str(GATE)) | {"gate": GATE.read_text()}


def gate_section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section: the explored-gate run beside the default run, week by week."""
    f = r["figures"]
    default = json.loads((results / "closed_loop.json").read_text())
    base = {x["week"]: x for x in default["figures"]["rows"]}

    def served(x: dict[str, Any] | None) -> list[str]:
        if x is None:
            return ["–", "–"]
        return [x["version"], _rate(x, "ctr_served")]

    rows = [[x["week"], *served(base.get(x["week"])), *served(x),
             "–" if x["week"] not in base or not x["ctr_served"] else
             f"{x['ctr_served'] / base[x['week']]['ctr_served'] - 1:+.1%}"] for x in f["rows"]]
    checks = [x for x in f["rows"] if x.get("failed")]
    return "\n".join([
        "## The gate, judged in the closed loop: explored views compared with production", "",
        ("`recloop demo --gate-config bench/gate_explored.yaml`: the default checks "
         "plus explored AUC and explored recall@100 against production, paired by request, no drop allowed. The "
         f"default gate's run is `{default['command']}` ({default['date']})."), "",
        table(["week", "default gate: served by", "model CTR [95%]", "explored gate: served by", "model CTR [95%]",
               "explored gate vs default"], rows), "",
        "Where the explored gate failed a candidate: " + ("; ".join(
            f"the run on week {x['week']} ({x['candidate']}): {', '.join(x['failed'])}" for x in checks) or "nowhere")
        + ".", "",
        gate_table(f["rows"]), "",
        GATE_NOTES])


# what a rerun must give again: who served, every click rate, every decision and estimate
SAME = ("version", "requests", "impressions", "ctr_served", "ctr_holdout", "ctr_oracle", "run", "blessed", "pushed",
        "candidate", "snips", "ess", "examples")


def _reproducible(args: tuple[str, ...] = ("--scale", "tiny", "--weeks", "3", "--seed", "1")) -> dict[str, Any]:
    """Runs a small demo twice with the same seed and compares the two weekly tables, figure by figure."""
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("first", "second"):
            print(f"recloop demo {' '.join(args)} ({run} run, a few minutes) ...", file=sys.stderr)
            run_timed([sys.executable, "-m", "recloop.cli", "demo", *args, "--work", f"{tmp}/{run}"])
            tables.append(demo_page.rows(json.loads(Path(tmp, run, "demo.json").read_text())))
    differences = [{"week": a["week"], "figure": k, "first": a[k], "second": b[k]}
                   for a, b in zip(*tables, strict=True) for k in SAME if a[k] != b[k]]
    return {"command": f"recloop demo {' '.join(args)}, twice", "weeks": len(tables[0]), "figures": len(SAME),
            "same_table": not differences, "differences": differences}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    with plots.figure(path) as ax:
        _draw(ax, rows)


def _draw(ax: Any, rows: list[dict[str, Any]]) -> None:
    for key, label in (("ctr_served", "served (model from week 1)"), ("ctr_holdout", "heuristic holdout"),
                       ("ctr_oracle", "oracle")):
        points = [(r["week"], r[key]) for r in rows if r[key] is not None]
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    for r in rows:
        if r["blocked_on"]:
            ax.axvline(r["week"], color="red", alpha=0.3, linestyle="--")
            ax.annotate("run blocked", (r["week"], 0.02), color="red", fontsize=8)
    ax.set_xticks([r["week"] for r in rows])
    ax.set(xlabel="week", ylabel="click rate", ylim=(0, None), title="recloop demo: online click rate per week")
    ax.legend(fontsize=8)


def _f(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def _ci(x: float | None, ci: list[float] | None, fmt: str = ".4f") -> str:
    if x is None:
        return "–"
    return format(x, fmt) + ("" if not ci else f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]")


def _rate(x: dict[str, Any], key: str) -> str:
    """A click rate of a weekly row with its 95% interval (from its ``<key>_se``)."""
    return _ci(x[key], _interval(x[key], x.get(f"{key}_se")))


def _covered(x: dict[str, Any]) -> str:
    """Whether the candidate's SNIPS interval covers the rate it realised, and how far the estimate was."""
    if x["snips"] is None or x["realised_next"] is None:
        return "–"
    ci = x.get("snips_ci95")
    inside = "" if not ci else (" (covered)" if ci[0] <= x["realised_next"] <= ci[1] else " (not covered)")
    return f"{x['snips'] / x['realised_next'] - 1:+.1%}{inside}"


def weekly_table(rows: list[dict[str, Any]]) -> str:
    """The weekly table: online click rates with their 95% intervals, what each run decided, and the gate's
    off-policy estimate of its candidate next to the rate the candidate realised the week after."""
    weekly = []
    for x in rows:
        run = (f"BLOCKED ({', '.join(x['blocked_on'])})" if x["blocked_on"] else (x["run"] or "–").lower())
        weekly.append([x["week"], x["version"] + (f" [{x['drifts']}]" if x["drifts"] else ""),
                       _rate(x, "ctr_served"), _rate(x, "ctr_holdout"),
                       demo_page.lift_text(x), _f(x["ctr_oracle"]), run,
                       "–" if x["blessed"] is None else ("yes" if x["pushed"] else "no"),
                       _ci(x["snips"], x.get("snips_ci95")), "–" if x["ess"] is None else f"{x['ess']:,.0f}",
                       _ci(x["realised_next"], x.get("realised_next_ci95")), _covered(x)])
    return table(["week", "served by", "CTR served [95%]", "CTR holdout [95%]", "lift [95%]", "CTR oracle",
                  "run on this week's logs", "pushed", "SNIPS of the candidate [95%]", "ESS",
                  "realised next week [95%]", "SNIPS vs realised"], weekly)


GATE_TABLE = ("What each run's gate saw: the candidate minus production on every overall change check, with the "
              "95% interval of the difference (paired by request: both models score the same eval requests).")


def gate_table(rows: list[dict[str, Any]]) -> str:
    """What each run's gate saw of its candidate against production: every overall change check's difference
    with its 95% interval (paired by request), and the checks that failed."""
    runs = [x for x in rows if x.get("changes")]
    metrics = sorted({m for x in runs for m in x["changes"]})

    def cell(c: dict[str, Any] | None) -> str:
        if c is None:
            return "–"
        half = "" if c["se"] is None else f" ± {demo_page.Z95 * c['se']:.4f}"
        return f"{c['difference']:+.4f}{half}" + (" **fail**" if c["verdict"] == "fail" else "")

    body = [[x["week"], x["candidate"], *(cell(x["changes"].get(m)) for m in metrics),
             ", ".join(x.get("failed") or []) or "–", "yes" if x["pushed"] else "no",
             _ci(x["realised_next"], x.get("realised_next_ci95"))] for x in runs]
    return table(["run on week", "candidate", *(f"{m} cand − prod" for m in metrics), "failed checks", "pushed",
                  "realised next week [95%]"], body)


def _interval(x: float | None, se: float | None) -> list[float] | None:
    return None if x is None or se is None else [x - demo_page.Z95 * se, x + demo_page.Z95 * se]


def readme_block(r: dict[str, Any]) -> str:
    """The top-level README's demo block: the headline and the weekly table of the recorded run."""
    f = r["figures"]
    return "\n".join([_summary(f), "", weekly_table(f["rows"]), "", _rerun(f), "",
                      (f"Generated by `uv run python bench/run.py report` from `bench/results/closed_loop.json` "
                       f"(measured {r['date']}, `{r['command']}`).")])


def _summary(f: dict[str, Any]) -> str:
    h, cfg, rows = f["headline"], f["config"], f["rows"]
    return (f"`recloop demo` defaults: {len(rows)} weeks, `{cfg['scale']}` scale, incident "
            f"{', '.join(cfg['drifts'])}, holdout {cfg['holdout']:.0%}, {cfg['epochs']} epochs, seed {cfg['seed']}; "
            f"**{f['demo_s'] / 60:.1f} min** in all. Week {h['week']}: the model's click rate **{h['model']:.4f}** "
            f"against the holdout's {h['holdout']:.4f} (**{demo_page.lift_text(h)}**), "
            f"{h['gap_to_oracle']:.0%} below the oracle's {h['oracle']:.4f}.{_resolution(rows)}")


def _resolution(rows: list[dict[str, Any]]) -> str:
    """What the holdout can resolve in one week: the widest half-width of a weekly lift interval."""
    widths = [(x["lift_ci95"][1] - x["lift_ci95"][0]) / 2 for x in rows if x.get("lift_ci95")]
    if not widths:
        return ""
    verdict = "a +10% lift excludes 0 in every week" if max(widths) < 0.10 else "a +10% lift may not exclude 0"
    return f" The weekly lift intervals are at most ±{max(widths):.1%} wide ({verdict})."


def _rerun(f: dict[str, Any]) -> str:
    """Whether the same seed gave the same table (the bench reruns a small demo twice)."""
    r = f.get("reproducible")
    if not r:
        return "Reproducibility: not measured in this run."
    verdict = ("the same table" if r["same_table"] else
               f"{len(r['differences'])} differences, e.g. week {r['differences'][0]['week']} "
               f"{r['differences'][0]['figure']}: {r['differences'][0]['first']} vs {r['differences'][0]['second']}")
    return (f"Reproducibility: `{r['command']}` gave {verdict} ({r['weeks']} weeks x {r['figures']} figures: "
            "who served, click rates, decisions, estimates).")


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a closed-loop result (and its plot, ``results/closed_loop.png``)."""
    f = r["figures"]
    rows = f["rows"]
    _plot(rows, results / "closed_loop.png")
    stages = [[x["week"], f"{x['requests']:,}", "–" if x["examples"] is None else f"{x['examples']:,.0f}",
               _f(x["serve_s"], ".0f"), *(_f(x["stage_s"].get(t), ".0f") for t in demo_page.STAGES)]
              for x in rows]
    return "\n".join([
        "## Closed loop: the demo's online click rate, week after week", "",
        _summary(f) + (f" Process peak RSS {f['peak_rss_mib']:,} MiB (the server and kfp.local's task processes "
                       "not included)."), "",
        "![click rate per week](results/closed_loop.png)", "",
        weekly_table(rows), "", _rerun(f), "",
        *([GATE_TABLE, "", gate_table(rows), ""] if any(x.get("changes") for x in rows) else []),
        table(["week", "requests", "train examples", "serve s", *(f"{t} s" for t in demo_page.STAGES)], stages), "",
        r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a closed-loop result's figures."""
    h = f["headline"]
    return (f"**Closed loop** (`recloop demo`, {f['demo_s'] / 60:.1f} min): week {h['week']} model CTR "
            f"{h['model']:.4f} vs heuristic holdout {h['holdout']:.4f} ({demo_page.lift_text(h)}), "
            f"oracle {h['oracle']:.4f}.")
