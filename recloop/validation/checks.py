"""Schema, skew and drift checks with TFDV, turned into one flat list of anomalies for people.

``tfdv.validate_statistics`` does the work; its anomalies proto mixes schema
problems and comparator results, so schema anomalies come from ``anomaly_info``
and skew/drift from ``drift_skew_info`` (every measured distance, above its
threshold or not, so a run also records how far clean data moved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from recloop.validation.anomaly import Anomaly
from recloop.validation.config import ValidationConfig

Stats = statistics_pb2.DatasetFeatureStatisticsList
_MEASURES = {anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L_INFTY",
             anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "JENSEN_SHANNON_DIVERGENCE"}


@dataclass
class CheckResult:
    anomalies: list[Anomaly]  # over a threshold or against the schema
    measurements: list[dict[str, Any]]  # every skew/drift distance measured, and whether it blocks when over
    proto: anomalies_pb2.Anomalies


def check(schema: schema_pb2.Schema, config: ValidationConfig, spans: dict[str, str], current: Stats,
          environment: str = "TRAINING", previous: Stats | None = None, reference: Stats | None = None,
          serving: Stats | None = None) -> CheckResult:
    """Checks ``current`` against the schema and ``previous`` (drift), and ``serving`` against ``reference`` (skew).

    Args:
      schema: the reference schema (``schema.curated_schema`` or a pinned one).
      config: thresholds and warn-only features.
      spans: what each side covers, for the report: ``current``, ``previous``, ``reference``, ``serving``.
      current: statistics of this run's data; ``environment`` is ``SERVING`` for logs (no labels).
      previous: the previous span's statistics, for drift.
      reference: what the production model was trained on, and ``serving``: today's traffic, for skew.
    """
    proto = tfdv.validate_statistics(current, schema, environment=environment, previous_statistics=previous)
    anomalies = [a for name, info in sorted(proto.anomaly_info.items())
                 if (a := _schema_anomaly(name, info, config, spans, schema, current, previous)) is not None]
    infos = list(proto.drift_skew_info)
    if reference is not None and serving is not None:
        skew = tfdv.validate_statistics(reference, schema, environment="TRAINING", serving_statistics=serving)
        infos += list(skew.drift_skew_info)
        proto.drift_skew_info.extend(skew.drift_skew_info)
    measurements = []
    for info in infos:
        name = info.path.step[-1]
        rule = config.features.get(name)
        for kind, items in (("drift", info.drift_measurements), ("skew", info.skew_measurements)):
            new, old, compared = ((current, previous, f"{spans.get('current')} vs {spans.get('previous')}")
                                  if kind == "drift" else
                                  (serving, reference, f"{spans.get('serving')} vs {spans.get('reference')}"))
            blocks = not (rule and (rule.warn_only or rule.distance_warn_only))
            for m in items:
                row = {"feature": name, "check": kind, "measure": _MEASURES.get(m.type, str(m.type)),
                       "distance": round(m.value, 6), "threshold": m.threshold}
                measurements.append(row | {"blocks": blocks})
                if m.value > m.threshold:
                    anomalies.append(Anomaly(
                        **row, blocking=blocks, spans=compared,
                        description=f"{row['measure']} {m.value:.4f} is above {m.threshold}",
                        top_changed_values=_changes(new, old, name)))
    if previous is not None:
        for row in _rate_changes(current, previous, config):
            measurements.append(row)
            if row["distance"] > row["threshold"]:
                anomalies.append(Anomaly(
                    row["feature"], "drift", "RATE_CHANGE", row["distance"], row["threshold"], blocking=row["blocks"],
                    spans=f"{spans.get('current')} vs {spans.get('previous')}",
                    description=f"positive rate {row['now']:.4f}, was {row['was']:.4f}",
                    top_changed_values=[{"value": "positive rate", "now": row["now"], "was": row["was"]}]))
    return CheckResult(anomalies, measurements, proto)


def _rate_changes(current: Stats, previous: Stats, config: ValidationConfig) -> list[dict[str, Any]]:
    rows = []
    for name, rule in config.features.items():
        a, b = _feature(current, name), _feature(previous, name)
        if rule.measure != "RATE_CHANGE" or rule.drift is None or a is None or b is None:
            continue
        now, was = a.num_stats.mean, b.num_stats.mean
        change = abs(now / was - 1.0) if was > 0 else (0.0 if now == 0 else float("inf"))
        rows.append({"feature": name, "check": "drift", "measure": "RATE_CHANGE", "distance": round(change, 6),
                     "threshold": rule.drift, "now": round(now, 6), "was": round(was, 6), "blocks": not rule.warn_only})
    return rows


def _schema_anomaly(name: str, info: anomalies_pb2.AnomalyInfo, config: ValidationConfig, spans: dict[str, str],
                    schema: schema_pb2.Schema, current: Stats, previous: Stats | None) -> Anomaly | None:
    reasons = [r for r in info.reason if not anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith("COMPARATOR")]
    if not reasons:
        return None
    rule = config.features.get(name)
    return Anomaly(feature=name, check="schema",
                   measure=", ".join(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in reasons),
                   distance=None, threshold=None, blocking=not (rule and rule.warn_only), spans=spans["current"],
                   description="; ".join(r.description for r in reasons),
                   top_changed_values=_schema_evidence(schema, name, current, previous))


def _schema_evidence(schema: schema_pb2.Schema, name: str, current: Stats, previous: Stats | None,
                     n: int = 5) -> list[dict[str, Any]]:
    """What broke the schema, as it is now, as it was in the previous span, and what the schema expects:
    the values outside the vocabulary (largest share first), the extremes outside the range, or the share
    present; a feature without such a domain gets its largest shares."""
    now, was = _feature(current, name), (_feature(previous, name) if previous is not None else None)
    declared = next((f for f in schema.feature if f.name == name), None)
    if now is None or declared is None:
        return _top_values(current, name, n)
    before = _shares(was) if was is not None else {}
    domain = declared.WhichOneof("domain_info")
    if domain == "string_domain" or domain == "domain":
        vocabulary = set(declared.string_domain.value) if domain == "string_domain" else next(
            (set(d.value) for d in schema.string_domain if d.name == declared.domain), set())
        outside = sorted(((v, share) for v, share in _shares(now).items() if v not in vocabulary),
                         key=lambda kv: -kv[1])[:n]
        if outside:
            return [{"value": v, "share": round(share, 4),
                     **({"was": round(before.get(v, 0.0), 4)} if was is not None else {}),
                     "expected": "not in the schema's vocabulary"} for v, share in outside]
    if domain in ("float_domain", "int_domain") and now.HasField("num_stats"):
        bounds, rows = getattr(declared, domain), []
        for stat, sign in (("min", -1), ("max", 1)):  # below the min, above the max
            value = getattr(now.num_stats, stat)
            if bounds.HasField(stat) and sign * (value - getattr(bounds, stat)) > 0:
                rows.append({"value": stat, "now": round(value, 4),
                             **({"was": round(getattr(was.num_stats, stat), 4)} if was is not None else {}),
                             "expected": f"{'>=' if sign < 0 else '<='} {getattr(bounds, stat):g}"})
        if rows:
            return rows
    if declared.presence.min_fraction > 0:
        present = _present_share(now)
        if present < declared.presence.min_fraction:
            return [{"value": "present", "now": round(present, 4),
                     **({"was": round(_present_share(was), 4)} if was is not None else {}),
                     "expected": f">= {declared.presence.min_fraction:g}"}]
    return _top_values(current, name, n)


def _present_share(f: statistics_pb2.FeatureNameStatistics) -> float:
    common = (f.string_stats if f.HasField("string_stats") else f.num_stats).common_stats
    total = common.num_non_missing + common.num_missing
    return common.num_non_missing / total if total else 0.0


def _feature(stats: Stats, name: str) -> statistics_pb2.FeatureNameStatistics | None:
    return next((f for f in stats.datasets[0].features if f.path.step[-1] == name), None)


def _shares(f: statistics_pb2.FeatureNameStatistics) -> dict[str, float]:
    if f.HasField("string_stats"):
        buckets = f.string_stats.rank_histogram.buckets
        total = f.string_stats.common_stats.num_non_missing or 1
        return {b.label: b.sample_count / total for b in buckets}
    return {}


def _top_values(stats: Stats, name: str, n: int = 5) -> list[dict[str, Any]]:
    f = _feature(stats, name)
    if f is None:
        return []
    shares = _shares(f)
    return [{"value": v, "share": round(s, 4)} for v, s in sorted(shares.items(), key=lambda kv: -kv[1])[:n]]


def _changes(new: Stats | None, old: Stats | None, name: str, n: int = 5) -> list[dict[str, Any]]:
    """The values whose share moved most (categorical) or the moments that moved (numeric)."""
    a, b = (_feature(s, name) if s is not None else None for s in (new, old))
    if a is None or b is None:
        return []
    if a.HasField("string_stats"):
        sa, sb = _shares(a), _shares(b)
        moved = {v: sa.get(v, 0.0) - sb.get(v, 0.0) for v in set(sa) | set(sb)}
        return [{"value": v, "share": round(sa.get(v, 0.0), 4), "was": round(sb.get(v, 0.0), 4)}
                for v, _ in sorted(moved.items(), key=lambda kv: -abs(kv[1]))[:n]]
    na, nb = a.num_stats, b.num_stats
    return [{"value": stat, "now": round(getattr(na, stat), 4), "was": round(getattr(nb, stat), 4)}
            for stat in ("mean", "median", "min", "max")]
