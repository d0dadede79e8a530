"""``recloop demo``: the closed loop, week after week, on this machine (``demo``), and its weekly table."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recloop.cli.console import console


def demo(
    weeks: Annotated[int, typer.Option(min=2, help="simulated weeks: week 0 bootstraps, each later week is "
                                                   "served by what the weekly run on the week before pushed")] = 5,
    scale: Annotated[str, typer.Option(help="tiny | small | default (simulated platform size)")] = "small",
    drift: Annotated[list[str] | None, typer.Option(
        help="KIND@W[:D], repeatable; default: a one-week serving incident, unit-bug@2:1 "
             "(pass --drift none for a quiet run)")] = None,
    work: Annotated[str, typer.Option(help="work folder (replaced): sim/, registry/, state/, runs/, report.html")
                    ] = "runs/demo",
    seed: Annotated[int, typer.Option(help="random seed of the simulated world and of training")] = 0,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.5, help="share of members kept on the heuristic (the control group)")
                         ] = 0.2,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs of both models (the training budget)")] = 4,
    alertmanager_url: Annotated[str, typer.Option(help="post blocking anomalies there (default: recorded only)")
                                ] = "",
    gate_config: Annotated[str, typer.Option(help="the weekly runs' gate config, YAML or JSON (default: the "
                                                  "defaults); try a gate's checks in the loop")] = "",
) -> None:
    """Run the closed loop: simulated members, the real server, the weekly pipeline; print the weekly table."""
    from recloop.cli import demo_page, report
    from recloop.cli.demo_loop import DemoConfig, run
    from recloop.simulator import SCALES, SimulationConfigError, check_declaration, parse_drift

    try:
        check_declaration()  # before anything: the demo's members are simulated
    except SimulationConfigError as e:
        raise typer.BadParameter(str(e)) from None
    if scale not in SCALES:
        raise typer.BadParameter(f"expected one of {', '.join(SCALES)}, got {scale!r}", param_hint="--scale")
    drifts = ["unit-bug@2:1"] if drift is None else [d for d in drift if d != "none"]
    try:
        for d in drifts:
            parse_drift(d)
    except SimulationConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--drift") from None
    if gate_config:
        from recloop.trainer.gate_config import GateConfigError, load_gate_config

        try:
            load_gate_config(gate_config)  # now, not in week 1's evaluate step
        except GateConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--gate-config") from None
        gate_config = str(Path(gate_config).absolute()) if "://" not in gate_config else gate_config
    cfg = DemoConfig(work=work, weeks=weeks, scale=scale, drifts=drifts, seed=seed, holdout=holdout, epochs=epochs,
                     alertmanager_url=alertmanager_url, gate_config=gate_config)
    t0 = time.perf_counter()
    result = run(cfg, say=lambda line: console.log(f"[{dt.timedelta(seconds=round(time.perf_counter() - t0))}] "
                                                   f"{line}"))
    runs = {}
    for w in result["weeks"]:
        if w.get("run"):
            out = Path(w["run"]["run_dir"], "report.html")
            report.write(w["run"]["run_dir"], str(out))
            runs[w["week"]] = str(out.relative_to(Path(result["work"])))
    print_tables(result)
    h = demo_page.lift(result)
    if h["lift"] is not None:
        console.print(f"week {h['week']}: the model's click rate {h['model']:.4f} vs the heuristic holdout "
                      f"{h['holdout']:.4f} ({demo_page.lift_text(h)}); the oracle {h['oracle']:.4f} (gap "
                      f"{h['gap_to_oracle']:.1%})")
    page = Path(result["work"], "report.html")
    page.write_text(demo_page.page(result, runs))
    console.print(f"{page} (the table, a chart, each run's report); every figure in {result['work']}/demo.json")


def print_tables(result: dict[str, Any]) -> None:
    """The weekly table, then data sizes and wall time per stage."""
    from recloop.cli import demo_page

    rows = demo_page.rows(result)
    for title, columns, cells in (
            (f"recloop demo: {len(rows)} weeks, scale {result['config']['scale']}, {result['seconds']:.0f} s",
             demo_page.COLUMNS, demo_page.cells),
            ("data sizes and wall seconds per stage", demo_page.TIME_COLUMNS, demo_page.time_cells)):
        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*cells(row))
        console.print(table)
