"""The demo's weekly table (terminal and ``report.html``): what was served, what each run decided, and how the
offline figures compare with what then happened online.

One row per simulated week ``w``: the online click rates of week ``w`` by who served
(the model, the heuristic holdout, the oracle's expectation on the same requests), then
the weekly run made on week ``w``'s logs: anomalies, the candidate's offline AUC against
production, its SNIPS estimate, blessed/pushed, and, when it was pushed, the click rate
it realised online the week after (the offline-online agreement).
"""

from __future__ import annotations

import html
import math
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile
STAGES = ("ingest", "validate", "check", "train", "evaluate", "infra-validate", "push")


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The weekly table's rows, as plain values (``None`` where a week has no such figure)."""
    weeks = result["weeks"]
    out = []
    for i, w in enumerate(weeks):
        s, run = w["served"], w.get("run") or {}
        groups = s.get("by_policy", {})
        served_by = "model" if "model" in groups else ("heuristic" if "heuristic" in groups else "fallback")
        blessing, pushed = run.get("blessing") or {}, run.get("pushed") or {}
        est = (blessing.get("offpolicy") or {}).get("estimate") or {}
        cand = (blessing.get("metrics") or {}).get("candidate", {})
        prod = (blessing.get("metrics") or {}).get("production") or {}
        nxt = weeks[i + 1] if i + 1 < len(weeks) else None
        realised: dict[str, Any] = {}
        if pushed.get("pushed") and nxt and nxt.get("version") == pushed.get("version"):
            realised = nxt["served"]["by_policy"].get("model", {})
        anomalies = run.get("anomalies") or []
        out.append({
            "week": w["week"], "start": s["start"], "version": w.get("version") or served_by,
            "requests": s["requests"], "impressions": s["impressions"], "drifts": ", ".join(s.get("drifts", [])),
            "ctr_served": groups.get(served_by, {}).get("click_rate"),
            "ctr_served_se": groups.get(served_by, {}).get("click_rate_se"),
            "ctr_holdout": groups.get("holdout", {}).get("click_rate"),
            "ctr_holdout_se": groups.get("holdout", {}).get("click_rate_se"),
            **_lift(groups.get("model"), groups.get("holdout")),
            "ctr_oracle": s.get("oracle_click_rate"),
            "run": run.get("state"), "examples": (run.get("ingest") or {}).get("examples_train"),
            "anomalies": len(anomalies), "blocking": sum(a["blocking"] for a in anomalies),
            "blocked_on": sorted({a["feature"] for a in anomalies if a["blocking"]}),
            "alerts": (run.get("alerts") or {}).get("raised"),
            "auc_candidate": cand.get("auc_click"), "auc_production": prod.get("auc_click"),
            "snips": est.get("snips"), "snips_ci95": est.get("snips_ci"), "ess": est.get("ess"),
            "realised_next": realised.get("click_rate"), "realised_next_ci95": realised.get("click_rate_ci95"),
            "blessed": blessing.get("blessed") if blessing else None, "pushed": pushed.get("pushed"),
            "candidate": blessing.get("candidate_version"), "failed": blessing.get("failed"),
            "changes": changes(blessing),
            "serve_s": s.get("wall_seconds"),
            "stage_s": {t: (run.get("tasks") or {}).get(t, {}).get("seconds") for t in STAGES} if run else {},
        })
    return out


def changes(blessing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The gate's overall comparisons with production: ``{metric: {difference, se, verdict}}`` (``se`` of the
    difference, paired by request where the gate paired it; none on a first run)."""
    out = {}
    for c in blessing.get("checks") or []:
        if c["kind"] == "max_drop" and c["slice"] == "overall" and c["verdict"] != "skipped":
            out[c["metric"]] = {"difference": c["value"] - c["reference"], "se": c.get("difference_se"),
                                "verdict": c["verdict"]}
    return out


def _lift(model: dict[str, Any] | None, holdout: dict[str, Any] | None) -> dict[str, Any]:
    """The model's click rate over the holdout's, minus 1, with a 95% interval: the two arms are disjoint
    members, so the log ratio's variance is the sum of the two (delta method, member-clustered errors)."""
    if not model or not holdout or not model["click_rate"] or not holdout["click_rate"]:
        return {"lift": None, "lift_ci95": None}
    m, h = model["click_rate"], holdout["click_rate"]
    if model.get("click_rate_se") is None or holdout.get("click_rate_se") is None:
        return {"lift": m / h - 1, "lift_ci95": None}
    se = math.sqrt((model["click_rate_se"] / m) ** 2 + (holdout["click_rate_se"] / h) ** 2)
    return {"lift": m / h - 1, "lift_ci95": [math.exp(math.log(m / h) + z * Z95 * se) - 1 for z in (-1, 1)]}


def lift(result: dict[str, Any]) -> dict[str, Any]:
    """The last week's model vs holdout vs oracle: the headline of the demo."""
    last = rows(result)[-1]
    model, holdout, oracle = last["ctr_served"], last["ctr_holdout"], last["ctr_oracle"]
    return {"week": last["week"], "model": model, "holdout": holdout, "oracle": oracle,
            "lift": last["lift"], "lift_ci95": last["lift_ci95"],
            "gap_to_oracle": None if not (model and oracle) else 1 - model / oracle}


def _f(value: Any, fmt: str = ".4f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt) if isinstance(value, float) else str(value)


COLUMNS = ("week", "served by", "CTR served", "CTR holdout", "lift [95%]", "CTR oracle", "run on this week's logs",
           "anomalies", "AUC cand / prod", "SNIPS (ESS)", "realised next wk", "blessed", "pushed")
TIME_COLUMNS = ("week", "requests", "train examples", "serve", "ingest", "validate", "check", "train", "evaluate",
                "infra-validate", "push")


def cells(r: dict[str, Any]) -> list[str]:
    """One row of the weekly table as text cells, in ``COLUMNS`` order."""
    run = r["run"] or "–"
    if r["blocked_on"]:
        run = f"BLOCKED ({', '.join(r['blocked_on'])})"
    snips = "–" if r["snips"] is None else f"{r['snips']:.4f} ({r['ess']:.0f})"
    return [f"{r['week']} {r['start']}" + (f" [{r['drifts']}]" if r["drifts"] else ""), str(r["version"]),
            _f(r["ctr_served"]), _f(r["ctr_holdout"]), lift_text(r), _f(r["ctr_oracle"]), run,
            f"{r['anomalies']} ({r['blocking']} blocking)" if r["run"] else "–",
            f"{_f(r['auc_candidate'], '.3f')} / {_f(r['auc_production'], '.3f')}", snips, _f(r["realised_next"]),
            _f(r["blessed"]), _f(r["pushed"])]


def lift_text(r: dict[str, Any]) -> str:
    """A week's lift over the holdout with its 95% interval, e.g. ``+12.3% [+4.1%, +21.0%]``."""
    if r.get("lift") is None:
        return "–"
    ci = r.get("lift_ci95")
    return f"{r['lift']:+.1%}" + ("" if ci is None else f" [{ci[0]:+.1%}, {ci[1]:+.1%}]")


def time_cells(r: dict[str, Any]) -> list[str]:
    """Data sizes and wall seconds per stage of a week, in ``TIME_COLUMNS`` order."""
    return [str(r["week"]), f"{r['requests']:,}", "–" if r["examples"] is None else f"{r['examples']:,.0f}",
            _f(r["serve_s"], ".0f"), *(_f(r["stage_s"].get(t), ".0f") for t in STAGES)]


def page(result: dict[str, Any], run_reports: dict[int, str]) -> str:
    """``report.html``: the weekly table, the click-rate chart and links to each run's own report."""
    table = rows(result)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r))
                   + f"<td>{_link(run_reports.get(r['week']))}</td></tr>" for r in table)
    times = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in time_cells(r)) + "</tr>" for r in table)
    time_head = "".join(f"<th>{html.escape(c)}</th>" for c in TIME_COLUMNS)
    h = lift(result)
    headline = (f"Week {h['week']}: model {_f(h['model'])} vs holdout {_f(h['holdout'])} "
                f"({lift_text(h)}), oracle {_f(h['oracle'])} (gap {_f(h['gap_to_oracle'], '.1%')}).")
    cfg = result["config"]
    return (f"<!doctype html><meta charset='utf-8'><title>recloop demo</title><style>body{{font:14px system-ui,"
            f"sans-serif;margin:24px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:3px 7px;"
            f"text-align:left;font-size:13px}}th{{background:#f3f3f3}}</style><h1>recloop demo: {len(table)} weeks, "
            f"scale {html.escape(str(cfg['scale']))}</h1><p>{html.escape(headline)} Incident: "
            f"{html.escape(', '.join(cfg['drifts']) or 'none')}; holdout {cfg['holdout']:.0%} of members on the "
            f"heuristic; {result['seconds']:.0f} s in all.</p>{_chart(table)}<table><tr>{head}<th>run report</th>"
            f"</tr>{body}</table><h2>Data sizes and wall seconds per stage</h2><table><tr>{time_head}</tr>{times}"
            f"</table><p>CTR: clicks per impression in the week. SNIPS: the gate's off-policy estimate "
            "of the candidate's click rate from the week's logs (ESS: its effective sample size); realised: the "
            "candidate's online click rate the week after, when it was pushed.</p>\n")


def _link(path: str | None) -> str:
    return "–" if not path else f"<a href='{html.escape(path)}'>report</a>"


def _chart(table: list[dict[str, Any]], width: int = 560, height: int = 180) -> str:
    """Click rate per week: served (model or heuristic), holdout, oracle, as an inline SVG."""
    series = {"served": ("ctr_served", "#1f77b4"), "holdout": ("ctr_holdout", "#ff7f0e"),
              "oracle": ("ctr_oracle", "#2ca02c")}
    values = [r[k] for k, _ in series.values() for r in table if r[k] is not None]
    if not values:
        return ""
    top = max(values) * 1.1
    x = lambda i: 40 + i * (width - 60) / max(1, len(table) - 1)
    y = lambda v: height - 20 - (height - 40) * v / top
    parts = [f"<svg width='{width}' height='{height}' role='img' aria-label='click rate per week'>"]
    for name, (key, colour) in series.items():
        points = " ".join(f"{x(i):.0f},{y(r[key]):.0f}" for i, r in enumerate(table) if r[key] is not None)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{points}'/>")
        parts.append(f"<text x='{width - 55}' y='{20 + 14 * list(series).index(name)}' fill='{colour}' "
                     f"font-size='12'>{name}</text>")
    parts += [f"<text x='{x(i) - 4:.0f}' y='{height - 4}' font-size='11'>{r['week']}</text>"
              for i, r in enumerate(table)]
    parts.append(f"<text x='0' y='{y(top / 1.1):.0f}' font-size='11'>{top / 1.1:.3f}</text></svg>")
    return "".join(parts)
