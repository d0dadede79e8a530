"""``recloop``: one command line for the whole loop.

Each command parses its options, calls one library function and prints what it
did. Later issues add evaluate, serve, push and demo.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import recloop  # noqa: F401  sets TF_USE_LEGACY_KERAS before anything imports TensorFlow
from recloop.pipelines import (
    demo_cli,
    gate_cli,
    kfp_cli,
    registry_cli,
    report,
    run_cli,
    serve_cli,
    train_cli,
    validation_cli,
)
from recloop.pipelines.console import console

app = typer.Typer(
    help="recloop: continuous training for recommender systems (logs -> Beam -> TFDV -> TFRS -> KServe).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}") from None


@app.callback()
def main() -> None:
    """recloop: continuous training for recommender systems."""


@app.command()
def simulate(
    out: Annotated[str, typer.Option(help="output folder (logs, catalog, truth, simulation.json)")],
    weeks: Annotated[int, typer.Option(min=1, help="simulated weeks")] = 1,
    start: Annotated[str, typer.Option(help="first day, a Monday (YYYY-MM-DD)")] = "2026-01-05",
    scale: Annotated[str, typer.Option(help="tiny | small | default")] = "tiny",
    seed: Annotated[int, typer.Option(help="random seed: same seed, same logs")] = 0,
    drift: Annotated[list[str] | None, typer.Option(
        help="KIND@W[:D]: inject from week W (for D weeks); kinds: unit-bug, platform-rename, "
             "null-surge, new-category, taste-shift")] = None,
    corrupt: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of corrupt log lines")] = 0.0,
    epsilon: Annotated[float, typer.Option(min=0.0, max=1.0, help="exploration share of the bootstrap policy")] = 0.1,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier simulation in --out")] = False,
) -> None:
    """Simulate members on a streaming-fitness platform and write their logs."""
    from recloop.simulator import SCALES, SimulationConfigError, parse_drift
    from recloop.simulator import simulate as run

    if scale not in SCALES:
        raise typer.BadParameter(f"expected one of {', '.join(SCALES)}, got {scale!r}", param_hint="--scale")
    try:
        drifts = [parse_drift(d) for d in drift or []]
    except SimulationConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--drift") from None
    first = _date(start)
    stages = ("traffic", "policy", "behaviour", "logs")
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(f"simulating {weeks} week(s), scale {scale}", total=weeks * len(stages))

        def progress(week: int, stage: str) -> None:
            bar.update(task, completed=week * len(stages) + stages.index(stage) + 1,
                       description=f"week {week}: {stage}")

        try:
            result = run(out, weeks, first, scale=scale, seed=seed, drifts=drifts, corrupt_rate=corrupt,
                         epsilon=epsilon, overwrite=overwrite, progress=progress)
        except SimulationConfigError as e:
            raise typer.BadParameter(str(e)) from None
    _print_summary(result, out, time.perf_counter() - t0)


def _print_summary(result: dict[str, Any], out: str, seconds: float) -> None:
    table = Table(title=f"simulated logs in {out}")
    for col in ("week", "start", "members", "items", "requests", "impressions", "click", "start ", "complete",
                "like", "CTR", "corrupt", "drifts"):
        table.add_column(col, justify="right" if col not in ("start", "drifts") else "left")
    for w in result["weeks"]:
        e = w["events"]
        table.add_row(str(w["week"]), w["start"], f"{w['members']:,}", f"{w['items']:,}", f"{w['requests']:,}",
                      f"{w['impressions']:,}", f"{e['click']:,}", f"{e['start']:,}", f"{e['complete']:,}",
                      f"{e['like']:,}", f"{w['click_rate']:.2%}", f"{w['corrupt_lines']:,}", ", ".join(w["drifts"]))
    console.print(table)
    t = result["totals"]
    console.print(f"requests {t['requests']:,}  impressions {t['impressions']:,}  events "
                  + "  ".join(f"{k} {v:,}" for k, v in t["events"].items()))
    if t["corrupt_lines"]:
        console.print(f"corrupt lines {t['corrupt_lines']:,}: "
                      + ", ".join(f"{k} {v:,}" for k, v in t["corrupt_by_kind"].items()))
    console.print(f"done in {seconds:.1f} s; parameters and counts in {out}/simulation.json")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ingest(
    ctx: typer.Context,
    logs: Annotated[str, typer.Option(help="logs root (requests/ and events/ partitioned by dt=)")],
    start: Annotated[str, typer.Option(help="first day of the span (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option(help="last day of the span, included (YYYY-MM-DD)")],
    out: Annotated[str, typer.Option(help="output folder: train/, eval/, retrieval/, items/, dead_letters/, "
                                          "summary.json")],
    eval_days: Annotated[int, typer.Option(help="last days of the span held out as eval")] = 1,
    attribution_hours: Annotated[int, typer.Option(help="how long after a request its events count")] = 24,
    min_member_events: Annotated[int, typer.Option(
        help="train only on members with at least this many events in the training days")] = 1,
    freshness_days: Annotated[int | None, typer.Option(
        help="train only on the last D days before the eval period")] = None,
    sample_users: Annotated[float, typer.Option(help="share of members kept in eval (hash of member id)")] = 1.0,
    sample_data: Annotated[float, typer.Option(help="share of training examples kept (hash of example)")] = 1.0,
    max_dead_letter_share: Annotated[float, typer.Option(
        help="fail when a source's dead letters exceed this share of its lines")] = 0.01,
    runner: Annotated[str, typer.Option(help="Beam runner: DirectRunner, DataflowRunner, FlinkRunner, ...")
                      ] = "DirectRunner",
    join_buckets: Annotated[int | None, typer.Option(help="join buckets (default: from the input size)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier ingest output in --out")] = False,
) -> None:
    """Turn one span of logs into labelled training examples (an Apache Beam job).

    Options this command does not know are passed to Beam (e.g. --direct_running_mode, --project, --region).
    """
    import pydantic

    from recloop.ingest import IngestConfig, IngestError, run

    try:
        config = IngestConfig(
            logs=logs, start=_date(start), end=_date(end), out=out, eval_days=eval_days,
            attribution_hours=attribution_hours, min_member_events=min_member_events, freshness_days=freshness_days,
            sample_users=sample_users, sample_data=sample_data, max_dead_letter_share=max_dead_letter_share,
            join_buckets=join_buckets, overwrite=overwrite)
    except pydantic.ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-") if first["loc"] else None
        raise typer.BadParameter(first["msg"].removeprefix("Value error, "), param_hint=where) from None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
                  TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}

        def on_plan(plan: dict[str, Any]) -> None:
            tasks["read"] = bar.add_task("read logs (bytes)", total=plan["bytes"])
            tasks["join"] = bar.add_task("join buckets", total=plan["join_buckets"])
            tasks["write"] = bar.add_task("write example files", total=None)

        def on_progress(stage: str, amount: int) -> None:
            bar.advance(tasks[stage], amount)

        try:
            summary = run(config, beam_args=["--runner", runner, *ctx.args], on_progress=on_progress,
                          on_plan=on_plan)
        except IngestError as e:
            bar.stop()
            console.print(f"[bold red]ingest failed:[/] {e}")
            raise typer.Exit(1) from None
    _print_ingest(summary, out)


def _print_ingest(s: dict[str, Any], out: str) -> None:
    from recloop.ingest.summary import OUTCOMES

    table = Table(title=f"ingest {s['span']['start']}..{s['span']['end']} -> {out}")
    for col in ("source", "read", "used", "rule drops", "out of span", "dead letters", "dead share", "top reasons"):
        table.add_column(col, justify="left" if col in ("source", "top reasons", "rule drops") else "right")
    for source in ("requests", "events"):
        lines, dead = s["lines"][source], s["dead_letters"][source]
        drops = {k: lines[k] for k in OUTCOMES[source] if k not in ("used", "out_of_span") and lines[k]}
        table.add_row(source, f"{lines['read']:,}", f"{lines['used']:,}",
                      ", ".join(f"{k} {v:,}" for k, v in drops.items()) or "-", f"{lines.get('out_of_span', 0):,}",
                      f"{dead['dead_letters']:,}", f"{dead['share']:.2%}",
                      ", ".join(f"{k} {v:,}" for k, v in list(dead["by_reason"].items())[:3]) or "-")
    console.print(table)
    imp = s["impressions"]
    drops = ", ".join(f"{k} {v:,}" for k, v in imp.items() if k != "in_used_requests" and v) or "none"
    console.print(f"impressions {imp['in_used_requests']:,} -> examples train {s['examples']['train']:,}, "
                  f"eval {s['examples']['eval']:,} (dropped by rule: {drops}); retrieval positives train "
                  f"{s['examples']['retrieval_train']:,}, eval {s['examples']['retrieval_eval']:,}")
    for split in ("train", "eval"):
        console.print(f"{split}: members {s['members'][split]:,}, items {s['items'][split]:,}, positives "
                      + ", ".join(f"{k} {v:,}" for k, v in s["positives"][split].items()))
    ok = all(eq["holds"] for eq in s["reconciliation"].values())
    console.print(f"reconciliation {'holds' if ok else 'FAILS'} ({len(s['reconciliation'])} equations); "
                  f"{s['wall_seconds']:.1f} s, {s['impressions_per_second']:,.0f} impressions/s on {s['runner']}; "
                  f"counts and parameters in {out}/summary.json")


app.command()(validation_cli.validate)
app.command()(validation_cli.monitor)
app.command()(validation_cli.anomalies)
app.command()(train_cli.train)
app.command()(gate_cli.evaluate)
app.command()(serve_cli.serve)
app.command(name="infra-validate")(serve_cli.infra_validate)
app.command()(registry_cli.push)
app.command()(registry_cli.models)
app.command()(registry_cli.rollback)
app.command()(registry_cli.promote)
app.command()(run_cli.run)
app.command()(report.report)
app.command()(kfp_cli.compile)
app.command()(kfp_cli.submit)
app.command()(kfp_cli.schedule)
app.command()(demo_cli.demo)

if __name__ == "__main__":
    app()
