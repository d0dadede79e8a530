"""What every command shares: the one rich console it prints to, and the date option's parser."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console

console = Console()
if not console.is_terminal:  # logs and CI: do not squeeze the tables to 80 columns
    console.width = 150


def date_option(value: str, hint: str | None = None) -> dt.date:
    """A ``YYYY-MM-DD`` option's date, or the usage error that names it."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}", param_hint=hint) from None


def local_out(value: str, hint: str) -> str:
    """An output folder option that must be on this machine (a run folder or an export: the registry and the
    run state are where results are shared), or the usage error that says so."""
    from recloop import storage

    if not storage.is_local(value):
        raise typer.BadParameter(f"expected a local folder, got {value!r}: write here, then share it through "
                                 "the registry (recloop push) or copy it", param_hint=hint)
    return value
