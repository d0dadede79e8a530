"""``recloop push``, ``recloop models`` and ``recloop rollback``: the model registry from the command line."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from recloop.pipelines.console import console


def push(
    model: Annotated[str, typer.Option(help="the candidate: a trainer export folder")],
    registry: Annotated[str, typer.Option(help="registry URI (a folder, gs://, s3://, ...)")],
    blessing: Annotated[str | None, typer.Option(help="the gate's blessing.json (default: MODEL/blessing.json)")
                        ] = None,
    infra_blessing: Annotated[str | None, typer.Option(
        help="infra validation's infra_blessing.json (default: MODEL/infra_blessing.json)")] = None,
    force: Annotated[bool, typer.Option(help="push without passing blessings (emergencies; recorded in history)")
                     ] = False,
    note: Annotated[str, typer.Option(help="a note for the history")] = "",
) -> None:
    """Copy a blessed candidate into the registry and switch production to it (compare-and-swap)."""
    from recloop.serving.registry import Registry, RegistryError

    try:
        pointer = Registry(registry).push(model, dt.datetime.now(dt.UTC), blessing, infra_blessing, force, note,
                                          progress=lambda step: console.log(step) if step == "switch" else None)
    except (RegistryError, OSError) as e:
        console.print(f"[red]push refused:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(f"production is now [bold]{pointer.version}[/bold] (was {pointer.previous}); {pointer.reason}")


def models(registry: Annotated[str, typer.Option(help="registry URI")]) -> None:
    """List the registry's versions, the one in production and the pointer's history."""
    from recloop.serving.registry import Registry, read_card

    reg = Registry(registry)
    pointer = reg.pointer()
    table = Table(title=f"versions in {registry}")
    for column in ("version", "", "span", "train examples", "training s"):
        table.add_column(column)
    for version in reg.versions():
        card = read_card(reg.version_dir(version))
        span = card.get("data", {}).get("span", {})
        table.add_row(version, "[green]production[/green]" if pointer and pointer.version == version else "",
                      f"{span.get('start', '?')} .. {span.get('end', '?')}",
                      f"{card.get('data', {}).get('train_examples', 0):,}", str(card.get("training_seconds", "")))
    console.print(table)
    history = Table(title="pointer history (newest last)")
    for column in ("switched at", "version", "previous", "reason", "note"):
        history.add_column(column)
    for p in reg.history()[-20:]:
        history.add_row(p.switched_at.isoformat(timespec="seconds"), p.version, str(p.previous), p.reason, p.note)
    console.print(history)


def rollback(
    registry: Annotated[str, typer.Option(help="registry URI")],
    to: Annotated[str | None, typer.Option(help="the version to go back to (default: the one before)")] = None,
    note: Annotated[str, typer.Option(help="a note for the history")] = "",
) -> None:
    """Point production back at the previous version (servers watching the registry switch back)."""
    from recloop.serving.registry import Registry, RegistryError

    try:
        pointer = Registry(registry).rollback(dt.datetime.now(dt.UTC), to, note)
    except RegistryError as e:
        console.print(f"[red]rollback refused:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(f"production is now [bold]{pointer.version}[/bold] (rolled back from {pointer.previous})")
