"""The closed-loop benchmark: ``recloop demo`` with its defaults, kept as figures.

Each served week: the model's online click rate against the heuristic holdout
(5% of members, same week, same server) and the oracle's expectation; each run:
what the gate estimated offline (SNIPS, with its effective sample size) against
the click rate the pushed candidate then realised online the week after.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import plots
from common import MEASURED, run_timed, table

from recloop.cli import demo_page

NOTES = ("CTR = clicks / impressions of the week, by who served them (the server logs `heuristic-holdout` for the "
         "holdout's members); oracle = the mean of the simulator's best click probability over the same requests "
         "(it knows each member's hidden relevance: a bound, not a target). SNIPS is the gate's estimate of the "
         "candidate's click rate from the week's logs; realised is that candidate's online rate the week after, "
         "when it was pushed. Week 0 is served by the simulator's heuristic (bootstrap). Stage seconds are "
         "kfp.local's per task (subprocess start included).")


def bench_closed_loop() -> dict[str, Any]:
    """Runs ``recloop demo`` (defaults) in a temporary folder; returns its per-week rows and headline."""
    with tempfile.TemporaryDirectory() as tmp:
        work, rss = f"{tmp}/demo", f"{tmp}/demo.rss"
        print("recloop demo (defaults, 10-20 min) ...", file=sys.stderr)
        wall = run_timed([sys.executable, "-c", MEASURED, rss, "demo", "--work", work])
        result = json.loads(Path(work, "demo.json").read_text())
        peak_rss_kib = int(Path(rss).read_text())
    return {"config": result["config"], "demo_s": round(result["seconds"], 1), "process_s": round(wall, 1),
            "peak_rss_mib": round(peak_rss_kib / 1024), "rows": demo_page.rows(result),
            "headline": demo_page.lift(result)}


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


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a closed-loop result (and its plot, ``results/closed_loop.png``)."""
    f = r["figures"]
    rows, h, cfg = f["rows"], f["headline"], f["config"]
    _plot(rows, results / "closed_loop.png")
    weekly = []
    for x in rows:
        lift = x["ctr_served"] / x["ctr_holdout"] - 1 if x["ctr_served"] and x["ctr_holdout"] else None
        run = (f"BLOCKED ({', '.join(x['blocked_on'])})" if x["blocked_on"] else (x["run"] or "–").lower())
        agreement = (x["snips"] / x["realised_next"] - 1) if x["snips"] and x["realised_next"] else None
        weekly.append([x["week"], x["version"] + (f" [{x['drifts']}]" if x["drifts"] else ""), _f(x["ctr_served"]),
                       _f(x["ctr_holdout"]), _f(lift, "+.1%"), _f(x["ctr_oracle"]), run,
                       "–" if x["blessed"] is None else ("yes" if x["pushed"] else "no"),
                       "–" if x["snips"] is None else f"{x['snips']:.4f} ({x['ess']:.0f})", _f(x["realised_next"]),
                       _f(agreement, "+.0%")])
    stages = [[x["week"], f"{x['requests']:,}", "–" if x["examples"] is None else f"{x['examples']:,.0f}",
               _f(x["serve_s"], ".0f"), *(_f(x["stage_s"].get(t), ".0f") for t in demo_page.STAGES)]
              for x in rows]
    return "\n".join([
        "## Closed loop: the demo's online click rate, week after week", "",
        (f"`recloop demo` defaults: {len(rows)} weeks, `{cfg['scale']}` scale, incident {', '.join(cfg['drifts'])}, "
         f"holdout {cfg['holdout']:.0%}, {cfg['epochs']} epochs; **{f['demo_s'] / 60:.1f} min** in all (process "
         f"peak RSS {f['peak_rss_mib']:,} MiB, the server and kfp.local's task processes not included). Week "
         f"{h['week']}: the model's click rate **{h['model']:.4f}** against the holdout's {h['holdout']:.4f} "
         f"(**{h['lift']:+.1%}**), {h['gap_to_oracle']:.0%} below the oracle's {h['oracle']:.4f}."), "",
        "![click rate per week](results/closed_loop.png)", "",
        table(["week", "served by", "CTR served", "CTR holdout", "lift", "CTR oracle", "run on this week's logs",
               "pushed", "SNIPS of the candidate (ESS)", "realised next week", "SNIPS vs realised"], weekly), "",
        table(["week", "requests", "train examples", "serve s", *(f"{t} s" for t in demo_page.STAGES)], stages), "",
        ("Offline-online agreement: the candidate's SNIPS estimate rests on the few logged impressions where the "
         "production policy explored what the candidate would show (ESS in brackets), so it is far from the rate "
         "the candidate then realised; the gate skips it below an ESS of 1,000. The off-policy section shows "
         "the estimator covering the truth when the logs support it (the production policy on its own logs)."), "",
        r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a closed-loop result's figures."""
    h = f["headline"]
    return (f"**Closed loop** (`recloop demo`, {f['demo_s'] / 60:.1f} min): week {h['week']} model CTR "
            f"{h['model']:.4f} vs heuristic holdout {h['holdout']:.4f} ({h['lift']:+.1%}), oracle {h['oracle']:.4f}.")
