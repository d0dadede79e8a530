"""``validate``: one span's ingest output -> statistics, schema, anomalies and a verdict in a run folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import tensorflow_data_validation as tfdv

from recloop.features import logs
from recloop.validation import schema as schemas
from recloop.validation import stats
from recloop.validation.alerts import raise_alerts
from recloop.validation.checks import check
from recloop.validation.config import load_config


def validate(data: str, out: str, previous: str | None = None, reference_stats: str | None = None,
             schema_path: str | None = None, config_path: str | None = None, alertmanager: str | None = None,
             state_dir: str | None = None) -> dict[str, Any]:
    """Validates the ingest output ``data`` and writes the run folder ``out``.

    Args:
      data: an ingest output (``summary.json``, ``train/``); its summary names the logs and span.
      out: the run folder: ``stats/``, ``schema.pbtxt``, ``anomalies.pbtxt``, ``anomalies.json``, ``anomalies.md``.
      previous: the previous span's ingest output, for drift.
      reference_stats: statistics the production model was trained on, for skew.
      schema_path: a pinned schema; by default the schema is inferred and curated from this span.
      config_path: thresholds (JSON or YAML).
      alertmanager: where blocking anomalies are posted as alerts (they are always kept in ``alerts.jsonl``).
      state_dir: the run-state folder: alerts not delivered are kept there and re-sent by the next run.

    Returns:
      The verdict (``anomalies.json``): ``blocking``, the anomalies and every distance measured.
    """
    config = load_config(config_path)
    summary = logs.read_json(f"{data}/summary.json")
    span = f"{summary['span']['start']}..{summary['span']['end']}"
    train = stats.example_statistics(f"{data}/train", f"train {span}")
    params = summary["parameters"]
    serving, skipped = stats.serving_statistics(params["logs"], dt.date.fromisoformat(params["start"]),
                                                dt.date.fromisoformat(params["end"]), f"serving {span}")
    spans = {"current": f"train {span}", "serving": f"serving {span}"}
    prev = None
    if previous:
        p = logs.read_json(f"{previous}/summary.json")["span"]
        spans["previous"] = f"train {p['start']}..{p['end']}"
        prev = stats.example_statistics(f"{previous}/train", spans["previous"])
    reference = None
    if reference_stats:
        reference = stats.read(reference_stats)
        spans["reference"] = reference.datasets[0].name or reference_stats
    if schema_path:
        schema = schemas.read(schema_path)
        schemas.apply_rules(schema, config)
    else:
        schema = schemas.curated_schema(train, config)
    result = check(schema, config, spans, current=train, previous=prev, reference=reference, serving=serving)
    Path(out).mkdir(parents=True, exist_ok=True)
    stats.write(train, f"{out}/stats/train.pb")
    stats.write(serving, f"{out}/stats/serving.pb")
    schemas.write(schema, f"{out}/schema.pbtxt")
    tfdv.write_anomalies_text(result.proto, f"{out}/anomalies.pbtxt")
    verdict = {
        "blocking": any(a.blocking for a in result.anomalies),
        "data": data, "spans": spans, "schema": schema_path or f"{out}/schema.pbtxt (inferred and curated)",
        "serving_lines_skipped": skipped,
        "anomalies": [a.to_dict() for a in result.anomalies],
        "measurements": result.measurements,
    }
    verdict["alerts"] = raise_alerts(verdict["anomalies"], out, run=f"{Path(out).name} {span}", url=alertmanager,
                                     state_dir=state_dir)
    Path(out, "anomalies.json").write_text(json.dumps(verdict, indent=2, default=str) + "\n")
    Path(out, "anomalies.md").write_text(markdown(verdict))
    return verdict


def markdown(verdict: dict[str, Any]) -> str:
    """The anomaly table a person reads (Kubeflow UI, on-call)."""
    lines = [(f"**{'BLOCKING' if verdict['blocking'] else 'OK'}**: {len(verdict['anomalies'])} anomalies "
             f"({sum(a['blocking'] for a in verdict['anomalies'])} blocking) in {verdict['spans'].get('current')}."), "",
             "| feature | check | measure | distance | threshold | blocking | compared | top changed values |",
             "|---|---|---|---|---|---|---|---|"]
    for a in verdict["anomalies"]:
        top = ", ".join(f"{t['value']}: {t.get('share', t.get('now'))} (was {t.get('was', '-')})"
                        for t in a["top_changed_values"][:3])
        lines.append(f"| {a['feature']} | {a['check']} | {a['measure']} | {a['distance'] if a['distance'] is not None else '-'} "
                     f"| {a['threshold'] if a['threshold'] is not None else '-'} | {'yes' if a['blocking'] else 'warn'} "
                     f"| {a['spans']} | {top or a['description']} |")
    return "\n".join(lines) + "\n"
