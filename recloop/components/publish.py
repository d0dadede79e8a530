"""What each weekly component shows in the Kubeflow UI: ``dsl.Metrics``, Markdown, HTML and artifact metadata.

Artifacts are duck-typed (``.path``, ``.metadata``, ``.log_metric``), so this module
does not import KFP and tests can pass stand-ins. Metric names are stable
snake_case: dashboards and the run report read them.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Z = 1.96  # the card's figures are shown ± Z standard errors (a 95% interval, as the gate's default)


def _log(metrics: Any, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float) and not math.isnan(value):  # NaN has no place in dsl.Metrics
            metrics.log_metric(name, round(float(value), 6))


def ingest(s: Mapping[str, Any], examples: Any, metrics: Any, summary: Any, seconds: float) -> None:
    """The ingest summary: examples per split, dead letters, reconciliation, throughput."""
    dead = {source: d["dead_letters"] for source, d in s["dead_letters"].items()}
    reconciled = all(eq["holds"] for eq in s["reconciliation"].values())
    facts = {"examples_train": s["examples"]["train"], "examples_eval": s["examples"]["eval"],
             "request_lines": s["lines"]["requests"]["read"], "event_lines": s["lines"]["events"]["read"],
             "dead_letters_requests": dead["requests"], "dead_letters_events": dead["events"],
             "reconciled": reconciled, "impressions_per_second": s["impressions_per_second"], "seconds": seconds}
    _log(metrics, facts)
    examples.metadata.update({"span": f"{s['span']['start']}..{s['span']['end']}", **facts})
    lines = [f"# Ingest {s['span']['start']}..{s['span']['end']}", "",
             "| source | read | used | dead letters | share | top reasons |", "|---|---|---|---|---|---|"]
    for source in ("requests", "events"):
        d = s["dead_letters"][source]
        reasons = ", ".join(f"{k} {v:,}" for k, v in list(d["by_reason"].items())[:3]) or "–"
        lines.append(f"| {source} | {s['lines'][source]['read']:,} | {s['lines'][source]['used']:,} | "
                     f"{d['dead_letters']:,} | {d['share']:.2%} | {reasons} |")
    lines += ["", (f"Examples: train {s['examples']['train']:,}, eval {s['examples']['eval']:,}; members "
              f"{s['members']['train']:,} / {s['members']['eval']:,}. Reconciliation "
              f"{'holds' if reconciled else '**FAILS**'} ({len(s['reconciliation'])} equations). "
              f"{s['wall_seconds']:.1f} s on {s['runner']}.")]
    _write(summary, "\n".join(lines) + "\n")


def validation(verdict: Mapping[str, Any], folder: Any, statistics: Any, anomalies: Any, table: Any,
               metrics: Any, seconds: float) -> None:
    """The TFDV statistics page, the anomaly table (HTML and Markdown) and the verdict's counts."""
    shutil.copyfile(Path(folder.path, "statistics.html"), statistics.path)
    shutil.copyfile(Path(folder.path, "anomalies.html"), anomalies.path)
    shutil.copyfile(Path(folder.path, "anomalies.md"), table.path)
    blocking = sum(a["blocking"] for a in verdict["anomalies"])
    alerts = verdict.get("alerts") or {}
    facts = {"blocking": bool(verdict["blocking"]), "anomalies": len(verdict["anomalies"]),
             "blocking_anomalies": blocking, "distances_measured": len(verdict["measurements"]),
             "alerts_raised": alerts.get("raised", 0), "alerts_delivered": int(bool(alerts.get("delivered"))),
             "seconds": seconds}
    _log(metrics, facts)
    folder.metadata.update({"spans": verdict["spans"], **facts})


def training(card: Mapping[str, Any], model: Any, metrics: Any, summary: Any) -> None:
    """The model card's headline offline metrics (model vs both heuristics, ± their interval) and the training time."""
    m = card["metrics"]["model"]
    values = {"train_examples": card["data"]["train_examples"], "eval_examples": card["data"]["eval_examples"],
              "recall_at_100_logged": m["retrieval"]["logged"]["recall@100"],
              "recall_at_100_explored": m["retrieval"]["explored"]["recall@100"],
              "ndcg_at_10_debiased": m["ranking"]["ndcg@10_debiased"], "auc_click": m["ranking"]["auc_click"],
              "auc_complete": m["ranking"]["auc_complete"], "auc_like": m["ranking"]["auc_like"],
              "seconds": card["training_seconds"]}
    _log(metrics, values)
    model.metadata.update({"version": card["version"], "span": card["data"]["span"], **values})
    rows = [("recall@100 logged", ("retrieval", "logged", "recall@100")),
            ("recall@100 explored", ("retrieval", "explored", "recall@100")),
            ("NDCG@10 debiased", ("ranking", "ndcg@10_debiased")), ("AUC click", ("ranking", "auc_click")),
            ("AUC complete", ("ranking", "auc_complete")), ("AUC like", ("ranking", "auc_like"))]
    names = [n for n in ("model", "popularity", "recent_popularity") if n in card["metrics"]]
    lines = [f"# Model {card['version']}", "",
             (f"Trained on {card['data']['train_examples']:,} examples ({card['data']['span']['start']}.."
             f"{card['data']['span']['end']}) in {card['training_seconds']} s; evaluated on "
             f"{card['data']['eval_examples']:,} held-out impressions. Figures are ± {Z:.2f} standard errors."), "",
             "| metric | " + " | ".join(n.replace("_", " ") for n in names) + " |", "|---|" + "---|" * len(names)]
    for name, path in rows:
        lines.append(f"| {name} | " + " | ".join(_pm(card["metrics"][n], path) for n in names) + " |")
    _write(summary, "\n".join(lines) + "\n")


def blessing(b: Mapping[str, Any], folder: Any, summary: Any, plots: Any, metrics: Any, seconds: float) -> None:
    """The gate's verdict: Markdown summary, evaluation plots, and the candidate's metrics."""
    _write(summary, b["summary_markdown"])
    _write(plots, evaluation_html(b))
    est = b["offpolicy"].get("estimate") or {}
    values = {"blessed": b["blessed"], "failed_checks": len(b["failed"]),
              **{k.replace("@", "_at_"): v for k, v in b["metrics"]["candidate"].items() if ":" not in k},
              **({"snips": est["snips"], "ess": est["ess"]} if est else {}), "seconds": seconds}
    _log(metrics, values)
    folder.metadata.update({"blessed": b["blessed"], "candidate_version": b["candidate_version"],
                            "baseline_version": b["baseline_version"], "failed": b["failed"]})


def infra(result: Mapping[str, Any], folder: Any, metrics: Any, seconds: float) -> None:
    """Whether the server loaded and answered, and the canned requests' latency."""
    latency = result.get("latency_ms") or {}
    _log(metrics, {"passed": result["passed"], "skipped": bool(result.get("skipped")),
                   **{f"latency_{k}_ms": v for k, v in latency.items()}, "seconds": seconds})
    folder.metadata.update({"passed": result["passed"], "reason": result.get("reason") or ""})


def push(record: Mapping[str, Any], folder: Any, summary: Any, metrics: Any, seconds: float) -> None:
    """Pushed 0/1, the version in production, and why."""
    _log(metrics, {"pushed": record["pushed"], "seconds": seconds})
    folder.metadata.update({k: v if v is not None else "" for k, v in record.items()})
    now = record.get("production_after") or record["production_before"] or "nothing"
    _write(summary, f"# Push: {'**PUSHED**' if record['pushed'] else '**NOT PUSHED**'}\n\n"
                    f"Candidate `{record['version']}`: {record['reason']}.\n\nProduction is `{now}` "
                    f"(registry `{record['registry']}`).\n")


SCORERS = ("candidate", "production", "popularity", "recent_popularity")
COLOURS = {"candidate": "#1f77b4", "production": "#ff7f0e", "popularity": "#999", "recent_popularity": "#bbb"}


def evaluation_html(b: Mapping[str, Any]) -> str:
    """One standalone page (no scripts, no network): per metric, a bar per scorer for every slice."""
    slices = b["slices"]
    names = [n for n in SCORERS if n in slices]
    metrics = [k for k in slices["candidate"]["overall"] if ":" not in k]
    legend = " ".join(f"<span style='color:{COLOURS[n]}'>&#9632; {n}</span>" for n in names)
    parts = [f"<!doctype html><meta charset='utf-8'><title>evaluation {html.escape(b['candidate_version'])}</title>",
             ("<style>body{font:13px sans-serif;margin:16px}table{border-collapse:collapse;margin-bottom:18px}"
             "td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}.bar{height:10px;display:inline-block}"
             "</style>"),
             f"<h1>Evaluation: {'blessed' if b['blessed'] else 'not blessed'}</h1>",
             (f"<p>candidate <b>{html.escape(b['candidate_version'])}</b> vs production "
             f"{html.escape(str(b['production_version'] or 'none (first run)'))}; {legend}</p>")]
    for metric in metrics:
        values = [slices[n][s].get(metric) for n in names for s in slices["candidate"]]
        top = max([v for v in values if isinstance(v, int | float)] or [1.0]) or 1.0
        parts.append(f"<h2>{html.escape(metric)}</h2><table><tr><th>slice</th><th>support</th>"
                     + "".join(f"<th>{n}</th>" for n in names) + "<th></th></tr>")
        for s in slices["candidate"]:
            cells, bars = [], []
            for n in names:
                v = slices[n].get(s, {}).get(metric)
                cells.append(f"<td>{_fmt(v)}</td>")
                width = 0 if not isinstance(v, int | float) else max(0.0, 240 * v / top)
                bars.append(f"<span class='bar' style='width:{width:.0f}px;background:{COLOURS[n]}'></span><br>")
            support = slices["candidate"][s].get(f"{metric}:support")
            parts.append(f"<tr><td>{html.escape(s)}</td><td>{_fmt(support)}</td>{''.join(cells)}"
                         f"<td>{''.join(bars)}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def _get(tree: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping):
            return None
        tree = tree.get(key)
    return tree


def _pm(tree: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """A card figure ``± Z * se`` (its ``<name>_se`` beside it), or the value alone without one."""
    value, se = _get(tree, path), _get(tree, (*path[:-1], f"{path[-1]}_se"))
    return _fmt(value) if value is None or se is None else f"{_fmt(value)} ± {Z * se:.4f}"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–" if value is None else html.escape(str(value))
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 10 else f"{value:.4f}"


def _write(artifact: Any, text: str) -> None:
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(text)
