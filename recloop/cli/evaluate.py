"""``recloop evaluate``: the evaluation gate, candidate against the production model of a registry.

The library (``trainer.gate``) takes paths; the pipeline's evaluate step (``components.steps``,
shared with this command) resolves the production version through the registry reader and gives
the gate serving's replay for the off-policy estimate.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from recloop import storage
from recloop.cli.console import console, local_out


def evaluate(
    candidate: Annotated[str, typer.Option(help="the candidate: a trainer export folder")],
    data: Annotated[list[str], typer.Option(help="the ingest output(s) the candidate was trained on; repeatable")],
    registry: Annotated[str, typer.Option(help="registry URI: its production version is the baseline")],
    out: Annotated[str, typer.Option(help="output folder: blessing.json, summary.md")],
    config: Annotated[str | None, typer.Option(help="gate config, YAML or JSON (thresholds, off-policy)")] = None,
    catalog: Annotated[str | None, typer.Option(
        help="the item feed the server served (a root with catalog/dt=...), for the off-policy replay; "
             "default: the newest --data's item summaries (an approximation of the pool)")] = None,
    eval_data: Annotated[list[str] | None, typer.Option(
        help="the separate eval ingest(s) the candidate was trained with (`recloop train --eval-data`)")] = None,
) -> None:
    """Evaluate a candidate against production; write blessing.json (blessed or not: both are normal outcomes)."""
    from recloop.components import steps
    from recloop.features.recorded import DeclarationMismatch
    from recloop.serving.registry import RegistryError
    from recloop.trainer.data import DataError, read_summary
    from recloop.trainer.gate_config import GateConfigError, load_gate_config

    try:
        load_gate_config(config)
    except GateConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from None
    held = eval_data or []
    for option, folders in (("--data", data), ("--eval-data", held)):
        try:
            for folder in folders:
                read_summary(folder)
        except DataError as e:
            raise typer.BadParameter(str(e), param_hint=option) from None
    with console.status("evaluating") as status:
        try:
            with storage.local_views([candidate, *data, *held]) as local:  # TensorFlow reads local paths
                blessing = steps.evaluate(local[0], local[1 : 1 + len(data)], registry, local_out(out, "--out"),
                                          config or "", catalog or "", progress=console.log,
                                          on_replay=lambda done, total: status.update(f"replay {done:,}/{total:,}"
                                                                                      " requests"),
                                          eval_data=local[1 + len(data) :])
        except RegistryError as e:
            console.print(f"[red]cannot read the registry:[/red] {e}")
            raise typer.Exit(2) from None
        except (DataError, DeclarationMismatch, FileNotFoundError) as e:
            console.print(f"[red]cannot evaluate:[/red] {e}")
            raise typer.Exit(2) from None
    _print(blessing, out)


def _print(blessing: dict[str, Any], out: str) -> None:
    z = blessing.get("z", 1.96)
    table = Table(title=f"gate checks (± {z:.2f} standard errors)")
    for column in ("verdict", "check", "slice", "candidate", "reference", "threshold", "support", "note"):
        table.add_column(column)
    colour = {"pass": "green", "fail": "red", "skipped": "dim"}

    def f(v: Any, se: Any = None) -> str:
        return "–" if v is None else f"{v:.4f}" if se is None else f"{v:.4f} ± {z * se:.4f}"

    for c in blessing["checks"]:
        support = "–" if c["support"] is None else f"{c['support']:,.0f}"
        table.add_row(f"[{colour[c['verdict']]}]{c['verdict']}[/]", f"{c['metric']} {c['rule']}", c["slice"],
                      f(c["value"], c.get("se")), f(c["reference"], c.get("reference_se")), f(c["threshold"]),
                      support, c["note"])
    console.print(table)
    est = blessing["offpolicy"].get("estimate")
    if est:
        console.print(f"off-policy: candidate click rate {est['snips']:.4f} (SNIPS, {est['snips_ci'][0]:.4f}.."
                      f"{est['snips_ci'][1]:.4f}, ESS {est['ess']:.0f}) vs logged {est['logged_rate']:.4f}")
    verdict = "[green]BLESSED[/green]" if blessing["blessed"] else "[yellow]NOT BLESSED[/yellow]"
    against = blessing["production_version"] or "nothing (first run)"
    console.print(f"{verdict}: {blessing['candidate_version']} against {against}; "
                  f"{out}/blessing.json, {out}/summary.md")
