"""Ingest: logged requests + events -> labelled training examples, as an Apache Beam job.

``run(IngestConfig(...))`` reads one span of logs (docs/architecture.md, "Data contract"),
joins events to impressions inside the attribution window, applies the dataset
hygiene rules, and writes ``train/``, ``eval/``, ``retrieval/``, ``items/``,
``dead_letters/`` and ``summary.json``, in which every line read is accounted
for. ``labels`` (per-request rules) and ``join`` (per-bucket join) are plain
Python; ``transforms`` wires them into Beam and ``pipeline`` runs it.
"""

from recloop.ingest.pipeline import IngestConfig, run
from recloop.ingest.summary import IngestError

__all__ = ["IngestConfig", "IngestError", "run"]
