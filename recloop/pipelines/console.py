"""The one rich console every command prints to."""

from rich.console import Console

console = Console()
if not console.is_terminal:  # logs and CI: do not squeeze the tables to 80 columns
    console.width = 150
