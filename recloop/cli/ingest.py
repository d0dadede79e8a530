"""``recloop ingest``: one span of logs into labelled examples (the Beam job)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recloop.cli.console import console, date_option


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
    weekly: Annotated[bool, typer.Option(
        help="backfill: cut the span into weeks from --start, one ingest output each under OUT/week=YYYY-MM-DD, "
             "all in this one process")] = False,
) -> None:
    """Turn one span of logs into labelled training examples (an Apache Beam job).

    Options this command does not know are passed to Beam (e.g. --direct_running_mode, --project, --region).
    """
    import pydantic

    from recloop.ingest import IngestConfig, IngestError, run

    try:
        config = IngestConfig(
            logs=logs, start=date_option(start), end=date_option(end), out=out, eval_days=eval_days,
            attribution_hours=attribution_hours, min_member_events=min_member_events, freshness_days=freshness_days,
            sample_users=sample_users, sample_data=sample_data, max_dead_letter_share=max_dead_letter_share,
            join_buckets=join_buckets, overwrite=overwrite)
    except pydantic.ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-") if first["loc"] else None
        raise typer.BadParameter(first["msg"].removeprefix("Value error, "), param_hint=where) from None
    if weekly:
        _backfill(config, ["--runner", runner, *ctx.args])
        return
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


def _backfill(config: Any, beam_args: list[str]) -> None:
    import datetime as dt

    from recloop.ingest import IngestError
    from recloop.ingest.backfill import backfill, week_folder, weeks

    try:
        count = len(weeks(config.start, config.end))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--end") from None
    table = Table(title=f"backfill {config.start}..{config.end}: {count} weeks -> {config.out}")
    for col in ("week", "requests read", "dead letters", "train examples", "eval examples", "reconciliation", "s"):
        table.add_column(col, justify="left" if col == "week" else "right")

    def on_week(i: int, n: int, start: dt.date, s: dict[str, Any]) -> None:
        ok = all(eq["holds"] for eq in s["reconciliation"].values())
        console.log(f"week {i + 1}/{n} {start}: {s['examples']['train']:,} train, {s['examples']['eval']:,} eval "
                    f"examples in {s['wall_seconds']:.1f} s -> {week_folder(config.out, start)}")
        table.add_row(start.isoformat(), f"{s['lines']['requests']['read']:,}",
                      f"{s['dead_letters']['requests']['dead_letters'] + s['dead_letters']['events']['dead_letters']:,}",
                      f"{s['examples']['train']:,}", f"{s['examples']['eval']:,}", "holds" if ok else "FAILS",
                      f"{s['wall_seconds']:.1f}")

    try:
        backfill(config, beam_args, on_week)
    except IngestError as e:
        console.print(table)
        console.print(f"[bold red]backfill failed:[/] {e}")
        raise typer.Exit(1) from None
    console.print(table)


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
