"""``recloop validate``, ``monitor`` and ``anomalies``: the data checks and what on-call reads.

Registered on the app in ``cli``; exit code 3 means a blocking anomaly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recloop import storage
from recloop.cli.console import console, date_option, local_out
from recloop.validation.anomaly import ANOMALY_COLUMNS, RUNBOOK, anomaly_cells, evidence, runbook_section

BLOCKING_EXIT = 3
Alertmanager = Annotated[str | None, typer.Option(help="Alertmanager base URL for blocking anomalies")]
State = Annotated[str | None, typer.Option(
    help="run-state folder: the schema versions and the newest accepted span's measures are read there; "
         "undelivered alerts wait there for the next run")]
Schema = Annotated[str | None, typer.Option(help="a pinned schema (default: inferred and curated)")]
Config = Annotated[str | None, typer.Option(help="thresholds, JSON or YAML")]


def validate(
    data: Annotated[str, typer.Option(help="an ingest output folder (summary.json, train/)")],
    out: Annotated[str, typer.Option(help="run folder: stats/, schema.pbtxt, anomalies.json/.md/.pbtxt, alerts")],
    previous: Annotated[str | None, typer.Option(help="the previous span's ingest output (drift)")] = None,
    reference_stats: Annotated[str | None, typer.Option(
        help="statistics the production model was trained on (skew), e.g. a run's stats/train.pb")] = None,
    schema: Schema = None,
    config: Config = None,
    alertmanager: Alertmanager = None,
    state: State = None,
) -> None:
    """Validate an ingested span with TFDV: schema, skew and drift. Exits 3 on a blocking anomaly."""
    from recloop.features.recorded import DeclarationMismatch
    from recloop.validation.run import validate as run

    try:
        with storage.local_views([data, previous, reference_stats]) as (local, prev, reference):  # TFDV: local paths
            verdict = run(local, local_out(out, "--out"), previous=prev, reference_stats=reference,
                          schema_path=schema, config_path=config, alertmanager=alertmanager, state_dir=state)
    except DeclarationMismatch as e:
        console.print(f"[red]validation failed:[/red] {e}")
        raise typer.Exit(1) from None
    _report(verdict, out, state)


def monitor(
    logs: Annotated[str, typer.Option(help="logs root (requests/ partitioned by dt=)")],
    date: Annotated[str, typer.Option(help="the day to check (YYYY-MM-DD), usually yesterday")],
    reference_stats: Annotated[str, typer.Option(help="statistics the production model was trained on")],
    out: Annotated[str, typer.Option(help="run folder")],
    schema: Schema = None,
    config: Config = None,
    alertmanager: Alertmanager = None,
    state: State = None,
) -> None:
    """The daily skew check: a day of serving logs vs the production model's training statistics."""
    from recloop.validation.run import monitor as run

    _report(run(logs, date_option(date, "--date"), reference_stats, out, schema_path=schema, config_path=config,
                alertmanager=alertmanager, state_dir=state), out, state)


def anomalies(run_dir: Annotated[str, typer.Argument(help="a validate or monitor run folder")]) -> None:
    """Print a run's anomalies for on-call: what moved, by how much, against what, the runbook section, and whether
    a model was pushed. Reads only the run's JSON files (no TensorFlow): it answers in about a second."""
    verdict = json.loads(Path(run_dir, "anomalies.json").read_text())
    pushed = Path(run_dir, "pushed.json")
    push = json.loads(pushed.read_text()) if pushed.exists() else None
    _table(verdict)
    console.print(f"compared: {', '.join(f'{k} = {v}' for k, v in verdict['spans'].items())}")
    console.print("model pushed in this run: " + (f"yes, {push.get('version')}" if push and push.get("pushed")
                                                  else "no" if push else "no push recorded in this run folder"))
    alerts = verdict.get("alerts") or {}
    console.print(f"alerts: {alerts.get('raised', 0)} raised, delivered: {alerts.get('delivered')}"
                  + (f" ({alerts['error']})" if alerts.get("error") else ""))
    for a in verdict["anomalies"]:
        if a["blocking"]:  # in full: the table's cells wrap and cut in a narrow terminal
            console.print(f"[bold red]blocking[/]: {a['feature']} ({a['check']} {a['measure']}, {a['spans']}): "
                          f"{evidence(a) or a['description']}; read {runbook_section(a)}", soft_wrap=True)
    console.print(f"runbook: {RUNBOOK}")


def _table(verdict: dict[str, Any]) -> None:
    table = Table(title=f"anomalies in {verdict['spans']['current']}: "
                        f"{'BLOCKING' if verdict['blocking'] else 'no blocking anomaly'}")
    for col in ANOMALY_COLUMNS:
        table.add_column(col)
    for a in verdict["anomalies"]:
        table.add_row(*anomaly_cells(a))
    console.print(table)


def _report(verdict: dict[str, Any], out: str, state: str | None) -> None:
    _table(verdict)
    alerts = verdict["alerts"]
    if alerts["error"] and (alerts["raised"] or alerts["resent"]):
        console.print(f"[yellow]alerts not delivered[/] ({alerts['error']}): kept in {out}/alerts.jsonl"
                      + (f" and {state}/undelivered.jsonl for the next run" if state else ""))
    blocking = [a for a in verdict["anomalies"] if a["blocking"]]
    if blocking:
        named = "; ".join(f"{a['feature']} ({a['check']}: {a['description'][:120]})" for a in blocking)
        console.print(f"[bold red]blocking:[/] {len(blocking)} anomalies in {verdict['spans']['current']}: {named}. "
                      "Do not train on or keep serving this data until each is explained: fix a serving bug, or "
                      "accept a real shift by updating the schema or thresholds (docs/oncall.md). "
                      f"Details: recloop anomalies {out}")
        raise typer.Exit(BLOCKING_EXIT)
    console.print(f"no blocking anomaly; {len(verdict['measurements'])} distances measured, in {out}/anomalies.json")
