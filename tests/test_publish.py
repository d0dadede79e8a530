"""What the weekly components show in the Kubeflow UI, from the session's tiny model and its gate run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from recloop.components import publish


class _Artifact(SimpleNamespace):
    """A stand-in for a KFP output artifact (publish duck-types ``path``, ``metadata`` and ``log_metric``)."""

    def __init__(self, path: Path):
        super().__init__(path=str(path), metadata={}, logged={})

    def log_metric(self, name: str, value: float) -> None:
        self.logged[name] = value


def test_the_training_summary_shows_the_model_against_both_heuristics_with_intervals(tiny_model, tmp_path):
    card = json.loads(Path(tiny_model, "model_card.json").read_text())
    model, metrics, summary = (_Artifact(tmp_path / n) for n in ("model", "metrics", "summary.md"))
    publish.training(card, model, metrics, summary)
    text = Path(summary.path).read_text()
    assert "| metric | model | popularity | recent popularity |" in text
    recall = card["metrics"]["recent_popularity"]["retrieval"]["logged"]
    row = next(line for line in text.splitlines() if line.startswith("| recall@100 logged |"))
    assert f"{recall['recall@100']:.4f} ± {1.96 * recall['recall@100_se']:.4f}" in row
    assert row.count("±") == 3  # every scorer's figure has its interval
    assert metrics.logged["recall_at_100_logged"] == card["metrics"]["model"]["retrieval"]["logged"]["recall@100"]
