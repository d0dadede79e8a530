"""``recloop run``: the weekly pipeline (or the daily skew check) on this machine, with ``kfp.local``.

The same pipeline a cluster runs, task by task in subprocesses of this environment;
each artifact lands under ``WORK/runs/<pipeline>-<timestamp>/<task>/<output>``.
Exit codes: 0 the run succeeded (pushed or not), 3 blocked by a data anomaly at
check, 1 another task failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recloop.cli.console import console

BLOCKED_EXIT = 3


def run(
    logs: Annotated[str, typer.Option(help="logs root: requests/, events/ by dt= (and catalog/ feeds)")],
    registry: Annotated[str, typer.Option(help="model registry URI: production is the gate's baseline")],
    work: Annotated[str, typer.Option(help="work folder: runs/ (one folder per run) and state/ by default")],
    start: Annotated[str, typer.Option(help="first day of the span (YYYY-MM-DD)")] = "",
    end: Annotated[str, typer.Option(help="last day of the span, included (YYYY-MM-DD)")] = "",
    run_state: Annotated[str | None, typer.Option(
        help="run-state folder: previous span's statistics, schema versions, undelivered alerts "
             "(default: WORK/state)")] = None,
    catalog: Annotated[str | None, typer.Option(
        help="served item feed root (catalog/dt=...) for replay and infra validation (default: --logs)")] = None,
    alertmanager_url: Annotated[str, typer.Option(help="Alertmanager base URL for blocking anomalies")] = "",
    epochs: Annotated[int, typer.Option(min=0, help="both models' epochs (0: the training config's)")] = 0,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    sample_users: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of eval members kept")] = 1.0,
    sample_data: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of training examples kept")] = 1.0,
    train_config: Annotated[str, typer.Option(help="training config file (YAML/JSON)")] = "",
    gate_config: Annotated[str, typer.Option(help="gate thresholds file (YAML/JSON)")] = "",
    validation_config: Annotated[str, typer.Option(help="validation thresholds file (YAML/JSON)")] = "",
    beam_arg: Annotated[list[str] | None, typer.Option(
        help="a Beam pipeline option for ingest, repeatable (default: --runner DirectRunner)")] = None,
    pipeline: Annotated[str, typer.Option(help="weekly | daily (the skew check of one day: --day)")] = "weekly",
    day: Annotated[str, typer.Option(help="daily: the day of serving logs to check (YYYY-MM-DD)")] = "",
) -> None:
    """Run the weekly pipeline locally (kfp.local): ingest -> validate -> check -> train -> evaluate ->
    infra-validate -> push. Prints each task's outputs and where the run folder is."""
    from recloop.features import spec
    from recloop.pipelines import local
    from recloop.pipelines.definitions import daily, weekly

    state = run_state or str(Path(work, "state").absolute())
    if pipeline == "weekly":
        if not (start and end):
            raise typer.BadParameter("a local weekly run needs --start and --end (a schedule derives them on a "
                                     "cluster)", param_hint="--start/--end")
        func, arguments = weekly(""), {
            "logs": logs, "registry": registry, "run_state": state, "start": start, "end": end,
            "catalog": catalog if catalog is not None else logs, "alertmanager_url": alertmanager_url,
            "epochs": epochs, "seed": seed, "sample_users": sample_users, "sample_data": sample_data,
            "train_config": train_config, "gate_config": gate_config, "validation_config": validation_config,
            "beam_args": beam_arg or ["--runner", "DirectRunner"], "features": spec.SOURCE or ""}
    elif pipeline == "daily":
        if not day:
            raise typer.BadParameter("the daily skew check needs --day", param_hint="--day")
        func, arguments = daily(""), {"logs": logs, "registry": registry, "run_state": state, "day": day,
                                      "alertmanager_url": alertmanager_url, "validation_config": validation_config,
                                      "features": spec.SOURCE or ""}
    else:
        raise typer.BadParameter(f"expected weekly or daily, got {pipeline!r}", param_hint="--pipeline")
    with console.status(f"{func.name}: starting") as status:
        def on_task(task: str, state: str, seconds: float | None) -> None:
            if state == "RUNNING":
                status.update(f"{func.name}: [bold]{task}[/bold] running")
            else:
                colour = "green" if state == "SUCCEEDED" else "red"
                console.log(f"{task}: [{colour}]{state.lower()}[/{colour}] in {seconds:.1f} s")

        result = local.run(func, arguments, str(Path(work, "runs")), on_task=on_task)
    print_run(result)
    if result.state == "FAILED":
        blocked = result.tasks.get("check", {}).get("state") == "FAILED"
        raise typer.Exit(BLOCKED_EXIT if blocked else 1)


def print_run(result: Any) -> None:
    """One line per task: state, seconds and what it produced."""
    table = Table(title=f"{result.pipeline}: {result.state} in {result.seconds:.0f} s")
    for column in ("task", "state", "s", "outputs"):
        table.add_column(column, justify="right" if column == "s" else "left")
    for task, info in result.tasks.items():
        colour = {"SUCCEEDED": "green", "FAILED": "red"}.get(info["state"], "dim")
        seconds = "" if info["seconds"] is None else f"{info['seconds']:.1f}"
        table.add_row(task, f"[{colour}]{info['state'].lower()}[/{colour}]", seconds, _outputs(result, task))
    console.print(table)
    if result.error:
        console.print(f"[red]{result.error}[/red]", soft_wrap=True)
    console.print(f"run folder {result.run_dir} (run.json, pipeline.yaml, kfp-local.log); "
                  f"`recloop report {result.run_dir}` renders it as one page")


def _outputs(result: Any, task: str) -> str:
    """The facts a person looks for first, from the task's artifact metadata."""
    out = result.outputs(task)
    meta = {name: a["artifacts"][0].get("metadata", {}) for name, a in out.get("artifacts", {}).items()}
    params = out.get("parameterValues", {})
    m = meta.get("metrics", {})
    if task == "ingest" and m:
        return (f"{m['examples_train']:,.0f} train / {m['examples_eval']:,.0f} eval examples, dead letters "
                f"{m['dead_letters_requests']:,.0f} + {m['dead_letters_events']:,.0f}; {result.artifact(task, 'examples')}")
    if task in ("validate", "monitor") and m:
        return (f"{'BLOCKING' if m['blocking'] else 'ok'}: {m['anomalies']:.0f} anomalies "
                f"({m['blocking_anomalies']:.0f} blocking), {m['alerts_raised']:.0f} alerts; "
                f"{result.artifact(task, 'statistics')}")
    if task == "train" and "model" in meta:
        md = meta["model"]
        return f"{md['version']}: AUC click {md['auc_click']:.3f}; {result.artifact(task, 'model')}"
    if task == "evaluate" and "blessing" in meta:
        b = meta["blessing"]
        return (f"{'BLESSED' if b['blessed'] else 'not blessed'}" + (f" (failed {', '.join(b['failed'])})"
                if b["failed"] else "") + f"; {result.artifact(task, 'summary')}")
    if task == "infra-validate" and "infra_blessing" in meta:
        i = meta["infra_blessing"]
        return f"{'passed' if i['passed'] else 'not passed'} {i.get('reason') or ''}".strip()
    if task == "push" and "pushed" in meta:
        p = meta["pushed"]
        return f"{'PUSHED' if p['pushed'] else 'not pushed'}: {p['reason']}; production {params.get('Output') or '-'}"
    return json.dumps(params) if params else ""
