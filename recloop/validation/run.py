"""``validate`` (one span's ingest output) and ``monitor`` (one day of serving logs) -> a run folder and a verdict."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow_data_validation as tfdv

from recloop.features import logs, recorded
from recloop.features.catalog import snapshot
from recloop.validation import delivery, logged, state, stats
from recloop.validation import schema as schemas
from recloop.validation.alerts import raise_alerts
from recloop.validation.anomaly import ANOMALY_COLUMNS, anomaly_cells
from recloop.validation.catalog import check_catalog
from recloop.validation.checks import CheckResult, check
from recloop.validation.config import ValidationConfig, load_config
from recloop.validation.html import anomaly_table, statistics_html


def validate(data: str, out: str, previous: str | None = None, reference_stats: str | None = None,
             schema_path: str | None = None, config_path: str | None = None, alertmanager: str | None = None,
             state_dir: str | None = None, previous_stats: str | None = None,
             previous_measures: dict[str, Any] | None = None,
             infra_logged: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Validates the ingest output ``data`` and writes the run folder ``out``.

    Args:
      data: an ingest output (``summary.json``, ``train/``); its summary names the logs and span.
      out: the run folder: ``stats/``, ``schema.pbtxt``, ``anomalies.pbtxt``, ``anomalies.json``, ``anomalies.md``.
      previous: the previous span's ingest output, for drift.
      previous_stats: or the previous span's training statistics (a ``stats/train.pb``), e.g. kept in the
        pipeline's run state, for drift.
      previous_measures: with ``previous_stats``, the previous span's measures kept in the run state beside
        them: ``delivery`` (``delivery.py``) and ``logged`` (what each version logged, ``logged.py``).
      reference_stats: statistics the production model was trained on, for skew.
      schema_path: a pinned schema; by default the newest version in ``state_dir``, else one inferred
        and curated from this span (kept as the first version when there is a ``state_dir``).
      config_path: thresholds (JSON or YAML).
      alertmanager: where blocking anomalies are posted as alerts (they are always kept in ``alerts.jsonl``).
      state_dir: the run-state folder: alerts not delivered are kept there and re-sent by the next run.
      infra_logged: what a version logged in its infra validation (``infra_blessing.json``'s ``logged``), by
        version; a version this span's logs hold but the previous span's do not is compared with it.

    Returns:
      The verdict (``anomalies.json``): ``blocking``, the anomalies and every distance measured.

    Raises:
      recorded.DeclarationMismatch: ``data`` was ingested under another feature declaration than the
        active one (the schema is seeded from the active one).
    """
    recorded.check(data, "--data folder")
    config = load_config(config_path)
    summary = logs.read_json(f"{data}/summary.json")
    span = f"{summary['span']['start']}..{summary['span']['end']}"
    versions = logged.Logged()
    train = stats.example_statistics(f"{data}/train", f"train {span}", on_batch=versions.add)
    described = {"train": train}
    if any(Path(data, "eval").glob("*.tfrecord.gz")):
        described["eval"] = stats.example_statistics(f"{data}/eval", f"eval {span}")  # described, not checked
    params = summary["parameters"]
    serving, skipped = stats.serving_statistics(params["logs"], dt.date.fromisoformat(params["start"]),
                                                dt.date.fromisoformat(params["end"]), f"serving {span}")
    spans = {"current": f"train {span}", "serving": f"serving {span}"}
    kept = previous_measures or {}
    delivered = {"now": delivery.measures(summary), "was": kept.get("delivery")}
    versioned = {"now": versions.result(), "was": kept.get("logged")}
    prev = None
    if previous:
        before, earlier = logs.read_json(f"{previous}/summary.json"), logged.Logged()
        p = before["span"]
        spans["previous"] = f"train {p['start']}..{p['end']}"
        prev = stats.example_statistics(f"{previous}/train", spans["previous"], on_batch=earlier.add)
        delivered["was"], versioned["was"] = delivery.measures(before), earlier.result()
    elif previous_stats:
        prev = stats.read(previous_stats)
        spans["previous"] = prev.datasets[0].name or previous_stats
    reference = None
    if reference_stats:
        reference = stats.read(reference_stats)
        spans["reference"] = reference.datasets[0].name or reference_stats
    if schema_path is None and state_dir:
        schema_path = schemas.latest_version(state_dir)
        if schema_path is None:  # the first run with this state: its curated schema becomes version 1
            schema_path = schemas.save_version(schemas.curated_schema(train, config), state_dir)
    schema, added = _schema(schema_path, config, train)
    result = check(schema, config, spans, current=train, previous=prev, reference=reference, serving=serving)
    _check_logging(result, config, delivered, versioned, f"{spans['current']} vs {spans.get('previous')}",
                   infra_logged)
    catalog_path = snapshot(params["logs"], dt.date.fromisoformat(params["end"]))
    catalog: dict[str, Any] = {"snapshot": catalog_path}
    if catalog_path:
        found, catalog["mismatch_share"] = check_catalog(f"{data}/items/items.jsonl.gz", catalog_path,
                                                         config.max_catalog_mismatch_share, span)
        result.anomalies.extend(found)
    return _publish(out, result, schema, described | {"serving": serving}, alertmanager, state_dir,
                    {"data": data, "spans": spans, "schema": schema_path or f"{out}/schema.pbtxt (inferred and curated)",
                     "serving_lines_skipped": skipped, "schema_added": added, "catalog": catalog,
                     "delivery": delivered, "logged": versioned}, reference)


def monitor(logs_root: str, day: dt.date, reference_stats: str, out: str, schema_path: str | None = None,
            config_path: str | None = None, alertmanager: str | None = None, state_dir: str | None = None,
            infra_logged: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """The daily check: one day of serving logs against the production model's training statistics and
    the weekly run state.

    Checks the day's features and logging fields as served against the schema (serving environment:
    no labels) and the features' distributions against ``reference_stats`` (skew). With a ``state_dir``,
    what each version logged that day (a version the span did not hold: against ``infra_logged``, as in
    ``validate``), the day's repeated request and event lines and its clicks' delays are compared with the
    newest accepted span's measures. Then it alerts like ``validate``. Cheap: it reads one day of logs.

    Returns:
      The verdict, also written to ``<out>/anomalies.json``.
    """
    config = load_config(config_path)
    reference = stats.read(reference_stats)
    versions = logged.Logged()
    serving, skipped = stats.serving_statistics(logs_root, day, day, f"serving {day}", on_batch=versions.add)
    spans = {"current": f"serving {day}", "serving": f"serving {day}",
             "reference": reference.datasets[0].name or reference_stats}
    kept = state.previous_measures(state_dir) if state_dir else {}
    if schema_path is None and state_dir:
        schema_path = schemas.latest_version(state_dir)  # the weekly runs' reference, when there is one
    schema, added = _schema(schema_path, config, reference, serving)
    result = check(schema, config, spans, current=serving, environment="SERVING", reference=reference,
                   serving=serving)
    delivered = {"now": delivery.day_measures(logs_root, day), "was": kept.get("delivery")}
    versioned = {"now": versions.result(), "was": kept.get("logged")}
    _check_logging(result, config, delivered, versioned, f"serving {day} vs the newest accepted span",
                   infra_logged)
    return _publish(out, result, schema, {"serving": serving}, alertmanager, state_dir,
                    {"logs": logs_root, "day": day.isoformat(), "spans": spans,
                     "schema": schema_path or f"{out}/schema.pbtxt (curated from the reference)",
                     "serving_lines_skipped": skipped, "schema_added": added, "delivery": delivered,
                     "logged": versioned}, reference)


def _check_logging(result: CheckResult, config: ValidationConfig, delivered: dict[str, Any],
                   versioned: dict[str, Any], compared: str,
                   infra_logged: Callable[[str], dict[str, Any] | None] | None = None) -> None:
    """Adds how the logs arrived (``delivery``) and what each version logged (``logged``), each ``{now, was}``,
    to ``result``."""
    for found, measured in (delivery.check(delivered["now"], delivered["was"], config.delivery_share_change,
                                           config.delivery_rate_change, config.delivery_delay_change, compared),
                            logged.check(versioned["now"], versioned["was"], config.logged_change,
                                         config.logged_score_change, compared, infra_logged)):
        result.anomalies.extend(found)
        result.measurements.extend(measured)


def _schema(path: str | None, config: ValidationConfig, inferred_from: stats.Statistics,
            checked: stats.Statistics | None = None) -> tuple[Any, list[str]]:
    """The schema at ``path`` (thresholds from the config, the domains from the file), or one curated from
    ``inferred_from``; with the logging fields that ``checked`` describes added where it lacks them (a
    schema kept, or statistics computed, before they were described); and the names added."""
    if path:
        schema = schemas.read(path)
        schemas.apply_rules(schema, config)
    else:
        schema = schemas.curated_schema(inferred_from, config)
    return schema, schemas.add_logging_fields(schema, checked or inferred_from)


def _publish(out: str, result: CheckResult, schema: Any, described: dict[str, stats.Statistics],
             alertmanager: str | None, state_dir: str | None, facts: dict[str, Any],
             reference: stats.Statistics | None = None) -> dict[str, Any]:
    """Writes the run folder, raises the alerts and returns the verdict."""
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, s in described.items():
        stats.write(s, f"{out}/stats/{name}.pb")
    schemas.write(schema, f"{out}/schema.pbtxt")
    tfdv.write_anomalies_text(result.proto, f"{out}/anomalies.pbtxt")
    verdict = {"blocking": any(a.blocking for a in result.anomalies), **facts,
               "anomalies": [a.to_dict() for a in result.anomalies], "measurements": result.measurements}
    verdict["alerts"] = raise_alerts(verdict["anomalies"], out, run=f"{Path(out).name} {facts['spans']['current']}",
                                     url=alertmanager, state_dir=state_dir)
    Path(out, "anomalies.json").write_text(json.dumps(verdict, indent=2, default=str) + "\n")
    Path(out, "anomalies.md").write_text(markdown(verdict))
    Path(out, "anomalies.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>anomalies</title>{anomaly_table(verdict['anomalies'])}")
    Path(out, "statistics.html").write_text(statistics_html(
        described | ({"reference": reference} if reference is not None else {}), verdict["anomalies"],
        title=f"statistics: {facts['spans']['current']}"))
    return verdict


def markdown(verdict: dict[str, Any]) -> str:
    """The anomaly table a person reads (Kubeflow UI, on-call)."""
    lines = [(f"**{'BLOCKING' if verdict['blocking'] else 'OK'}**: {len(verdict['anomalies'])} anomalies "
             f"({sum(a['blocking'] for a in verdict['anomalies'])} blocking) in {verdict['spans'].get('current')}."), "",
             "| " + " | ".join(ANOMALY_COLUMNS) + " |", "|" + "---|" * len(ANOMALY_COLUMNS)]
    lines += ["| " + " | ".join(anomaly_cells(a)) + " |" for a in verdict["anomalies"]]
    return "\n".join(lines) + "\n"
