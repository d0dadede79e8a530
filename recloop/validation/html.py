"""A standalone statistics page, rendered from TFDV's statistics proto: no scripts, no network.

TFDV's own ``get_statistics_html`` loads Facets from public web hosts and shows
a blank page offline and behind most firewalls (docs/stack.md). This page draws the
same facts (count, missing share, moments, histograms, top values) as inline
SVG for every dataset of a run side by side (train, serving, reference), and
puts the run's anomalies above them.
"""

from __future__ import annotations

import html
from typing import Any

from tensorflow_metadata.proto.v0 import statistics_pb2

from recloop.validation.anomaly import ANOMALY_COLUMNS, anomaly_cells

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
.feature{display:inline-block;vertical-align:top;margin:0 16px 24px 0;width:430px}
.feature h3{margin:4px 0;font-size:15px}.facts{font-size:12px;color:#555}.legend span{margin-right:12px}
.blocking{color:#b00020;font-weight:bold}
"""


def statistics_html(datasets: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
                    anomalies: list[dict[str, Any]] | None = None, title: str = "recloop statistics") -> str:
    """The page for ``{label: statistics}``; each feature gets one chart with a series per dataset."""
    series = [(label, s.datasets[0]) for label, s in datasets.items()]
    names = sorted({f.path.step[-1] for _, d in series for f in d.features})
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"),
             "<p class='legend'>" + "".join(
                 f"<span style='color:{COLOURS[i % 4]}'>&#9632; {html.escape(label)} "
                 f"({d.num_examples:,} examples)</span>" for i, (label, d) in enumerate(series)) + "</p>"]
    if anomalies is not None:
        parts.append(anomaly_table(anomalies))
    for name in names:
        features = [(label, next((f for f in d.features if f.path.step[-1] == name), None)) for label, d in series]
        parts.append(_feature(name, features))
    parts.append("</body></html>")
    return "\n".join(parts)


def anomaly_table(anomalies: list[dict[str, Any]]) -> str:
    """The anomalies as an HTML table (also the Kubeflow UI's anomaly artifact)."""
    if not anomalies:
        return "<p>No anomaly.</p>"
    rows = [f"<tr class='{'blocking' if a['blocking'] else 'warn'}'>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in anomaly_cells(a)) + "</tr>" for a in anomalies]
    header = "".join(f"<th>{c}</th>" for c in ANOMALY_COLUMNS)
    return f"<h2>Anomalies</h2><table><tr>{header}</tr>{''.join(rows)}</table>"


def _feature(name: str, features: list[tuple[str, statistics_pb2.FeatureNameStatistics | None]]) -> str:
    facts, numeric, categorical = [], [], []  # one entry per dataset, empty where it lacks the feature,
    for label, f in features:                 # so each dataset keeps its colour
        if f is None:
            facts.append(f"{html.escape(label)}: absent")
            numeric.append([])
            categorical.append({})
            continue
        common = f.num_stats.common_stats if f.HasField("num_stats") else f.string_stats.common_stats
        total = common.num_non_missing + common.num_missing
        missing = common.num_missing / total if total else 0.0
        if f.HasField("num_stats"):
            n = f.num_stats
            facts.append(f"{html.escape(label)}: mean {n.mean:.3g}, sd {n.std_dev:.3g}, min {n.min:.3g}, "
                         f"max {n.max:.3g}, missing {missing:.1%}")
            hist = next((h for h in n.histograms if h.type == h.STANDARD), None)
            numeric.append([((b.low_value + b.high_value) / 2, b.sample_count) for b in hist.buckets] if hist else [])
            categorical.append({})
        else:
            s = f.string_stats
            facts.append(f"{html.escape(label)}: {s.unique:,} unique, missing {missing:.1%}")
            categorical.append({b.label: b.sample_count for b in s.rank_histogram.buckets})
            numeric.append([])
    chart = (_svg(*_common_bins(numeric)) if any(numeric) else
             _svg(*_top_labels(categorical)) if any(categorical) else "")
    return (f"<div class='feature'><h3>{html.escape(name)}</h3><div class='facts'>"
            + "<br>".join(facts) + f"</div>{chart}</div>")


def _common_bins(series: list[list[tuple[float, float]]], bins: int = 10) -> tuple[list[str], list[list[float]]]:
    """Histograms of several datasets on one set of bins (each bucket counted at its middle)."""
    points = [x for s in series for x, _ in s]
    low, high = (min(points), max(points)) if points else (0.0, 1.0)
    width = (high - low) / bins or 1.0
    shares = []
    for s in series:
        counts = [0.0] * bins
        for x, c in s:
            counts[min(bins - 1, int((x - low) / width))] += c
        total = sum(counts) or 1.0
        shares.append([c / total for c in counts])
    return [f"{low + i * width:.3g}" for i in range(bins)], shares


def _top_labels(series: list[dict[str, float]], n: int = 10) -> tuple[list[str], list[list[float]]]:
    """Shares of the most frequent values of the first dataset, and of any value another one adds."""
    first = next((s for s in series if s), {})
    labels = list(first)[:n]
    labels += [v for s in series for v in list(s)[:3] if v not in labels][: max(0, n + 2 - len(labels))]
    shares = []
    for s in series:
        total = sum(s.values()) or 1.0
        shares.append([s.get(label, 0.0) / total for label in labels])
    return labels, shares


def _svg(labels: list[str], shares: list[list[float]], width: int = 420, height: int = 140) -> str:
    """Grouped bars, one group per label and one bar per dataset, as shares so sizes compare."""
    top = max((v for row in shares for v in row), default=1.0) or 1.0
    group = (width - 20) / max(len(labels), 1)
    bar = max(group / (len(shares) + 1), 1.0)
    rects = []
    for j, row in enumerate(shares):
        for k, v in enumerate(row):
            h = (height - 30) * v / top
            rects.append(f"<rect class='bar' x='{10 + k * group + j * bar:.1f}' y='{height - 20 - h:.1f}' "
                         f"width='{bar:.1f}' height='{h:.1f}' fill='{COLOURS[j % 4]}'><title>"
                         f"{html.escape(labels[k])}: {v:.1%}</title></rect>")
    ticks = "".join(f"<text x='{10 + k * group:.1f}' y='{height - 6}' font-size='9'>{html.escape(labels[k][:8])}"
                    "</text>" for k in range(0, len(labels), max(1, len(labels) // 6)))
    return f"<svg class='histogram' width='{width}' height='{height}'>{''.join(rects)}{ticks}</svg>"
