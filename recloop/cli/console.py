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
