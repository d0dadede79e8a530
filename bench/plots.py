"""The README's PNG plots: one matplotlib figure per call, drawn headless and saved without a version stamp."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def figure(path: Path, width: float = 6.4, height: float = 3.2) -> Iterator[Any]:
    """Yields the axes of a new figure; on exit lays it out and writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, nor in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None})  # no version stamp: the file changes only with the figures
    finally:
        plt.close(fig)
