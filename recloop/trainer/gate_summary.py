"""The evaluation gate's Markdown summary: a blessing as a person reads it.

``gate.run`` judges a candidate and writes ``blessing.json``; ``summary`` turns
that blessing into ``summary.md`` (also ``blessing["summary_markdown"]``), which
the pipeline's publish step shows in the Kubeflow UI: the verdict, every check,
the headline metrics and the off-policy estimate. Every figure is shown with its
interval (``± z * se`` at the gate's confidence) and the support it rests on.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

_MARK = {"pass": "✅ pass", "fail": "❌ fail", "skipped": "➖ skipped"}


def summary(blessing: Mapping[str, Any]) -> str:
    """The Markdown a person reads in the Kubeflow UI: the verdict, every check, the headline metrics."""
    b = blessing
    confidence = b["config"].get("confidence", 0.95)
    z = b.get("z") or NormalDist().inv_cdf(0.5 + confidence / 2)
    verdict = "**BLESSED**" if b["blessed"] else "**NOT BLESSED**"
    against = ("no production model (first run: absolute checks only)" if not b["production_version"]
               else f"production `{b['production_version']}`" if b.get("production_compared", True)
               else f"production `{b['production_version']}`, made under another feature declaration (absolute "
                    "checks only)")
    sizes = b["data"].get("eval") or {}
    members = f", {sizes['members']:,} members" if "members" in sizes else ""
    clicks = f", {sizes['positives']['click']:,} clicks" if "positives" in sizes else ""
    lines = [f"# Evaluation gate: {verdict}", "",
             (f"Candidate `{b['candidate_version']}` against {against}, on the eval split from "
             f"{b['data']['span']['eval_start']} ({b['data']['eval_examples']:,} impressions, "
             f"{b['data']['eval_requests']:,} requests{members}{clicks}). Figures are ± the "
             f"{confidence:.0%} interval (z = {z:.2f}) over requests."), ""]
    if b["failed"]:
        lines += ["Failed: " + ", ".join(f"`{f}`" for f in b["failed"]), ""]
    lines += [f"> {n}" for n in b["notes"]]
    lines += ["## Checks", "", "| verdict | check | slice | candidate | reference | threshold | support | note |",
              "|---|---|---|---|---|---|---|---|"]
    for c in b["checks"]:
        lines.append(f"| {_MARK[c['verdict']]} | {c['metric']} {c['rule']} | {c['slice']} | "
                     f"{_pm(c['value'], c.get('se'), z)} | {_pm(c['reference'], c.get('reference_se'), z)} | "
                     f"{_fmt(c['threshold'])} | {_fmt(c['support'])} | {c['note']} |")
    names = [n for n in ("candidate", "production", "popularity", "recent_popularity") if n in b["metrics"]]
    keys = [k for k in b["metrics"]["candidate"] if ":" not in k]
    lines += ["", "## Metrics (overall)", "", "| metric | " + " | ".join(names) + " | support |",
              "|---|" + "---|" * len(names) + "---|"]
    lines += [f"| {k} | " + " | ".join(_pm(b["metrics"][n].get(k), b["metrics"][n].get(f"{k}:se"), z) for n in names)
              + f" | {_fmt(b['metrics']['candidate'].get(f'{k}:support'))} |" for k in keys]
    est = b["offpolicy"].get("estimate")
    lines += ["", "## Off-policy estimate (per-position SNIPS)", ""]
    if est:
        lo, hi = est["snips_ci"]
        llo, lhi = est["logged_ci"]
        lines += [(f"- candidate click rate (SNIPS): **{est['snips']:.4f}** [{lo:.4f}, {hi:.4f}]; IPS "
                  f"{est['ips']:.4f}"),
                  f"- logging policy's observed click rate: {est['logged_rate']:.4f} [{llo:.4f}, {lhi:.4f}]",
                  (f"- effective sample size {est['ess']:.0f} of {est['impressions']:,} impressions; mean weight "
                  f"{est['mean_weight']:.3f}, max weight {est['max_weight']:.1f}")]
    else:
        lines.append(f"- not available: {b['offpolicy'].get('reason')}")
    return "\n".join(lines) + "\n"


def _pm(value: Any, se: Any, z: float) -> str:
    """``value ± z * se``; the value alone when it has no standard error."""
    if value is None or se is None:
        return _fmt(value)
    return f"{_fmt(value)} ± {z * se:.4f}"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
