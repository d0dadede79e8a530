"""``recloop simulate``: members on a simulated platform, written as logs."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recloop.cli.console import console, date_option


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
    from recloop.simulator import SCALES, SimulationConfigError, check_declaration, parse_drift
    from recloop.simulator import simulate as run

    try:
        check_declaration()  # before anything: the simulator generates the default features only
    except SimulationConfigError as e:
        raise typer.BadParameter(str(e)) from None
    if scale not in SCALES:
        raise typer.BadParameter(f"expected one of {', '.join(SCALES)}, got {scale!r}", param_hint="--scale")
    try:
        drifts = [parse_drift(d) for d in drift or []]
    except SimulationConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--drift") from None
    first = date_option(start)
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
