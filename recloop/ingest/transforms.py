"""The ingest Beam graph, as composite transforms (their labels form the runner UI's graph)::

    ListLogFiles -> ReadIntoBuckets -> LabelExamples -+-> WriteExamples   (train/, eval/, retrieval/)
                                                      +-> WriteDeadLetters (dead_letters/)
                                                      +-> WriteItems       (items/)

IO stays at the edges: reading is the first step of ``ReadIntoBuckets`` and
writing the last of each ``Write*``; ``LabelExamples`` is pure transformation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import apache_beam as beam

from recloop.features import logs
from recloop.ingest.join import JoinBuckets
from recloop.ingest.outputs import (
    EncodeExamples,
    FilterTrain,
    MergeCounts,
    MergeItems,
    MergeSets,
    WriteExamples,
    write_dead_letters,
    write_items,
)
from recloop.ingest.read import InputFile, ReadLines

if TYPE_CHECKING:
    from recloop.ingest.pipeline import IngestConfig


class ReadIntoBuckets(beam.PTransform):
    """Log files -> ``(bucket, [chunk of lines])``: a request and its events meet in one bucket."""

    def __init__(self, buckets: int, run_id: str | None):
        super().__init__()
        self.buckets, self.run_id = buckets, run_id

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return (files
                | "ReadLogLines" >> beam.ParDo(ReadLines(self.buckets, self.run_id))
                | "GroupByBucket" >> beam.GroupByKey())


class LabelExamples(beam.PTransform):
    """Buckets -> encoded train/eval batches after the hygiene rules, dead letters, item summaries.

    Returns ``{"batches", "dead", "items"}``. The activity threshold and data
    sampling need the whole span (a side input); without them the steps fuse
    and nothing is spilled.
    """

    def __init__(self, config: IngestConfig, buckets: int, staging: str, run_id: str | None):
        super().__init__()
        self.config, self.buckets, self.staging, self.run_id = config, buckets, staging, run_id

    def expand(self, bucketed: beam.PCollection) -> dict[str, beam.PCollection]:
        c = self.config
        joined = bucketed | "JoinBuckets" >> beam.ParDo(
            JoinBuckets(self.buckets, c.span, c.sample_users, self.run_id)).with_outputs(
            "dead", "activity", "items", main="batches")
        needs_span = c.min_member_events > 0 or c.sample_data < 1.0
        batches = joined.batches | "EncodeExamples" >> beam.ParDo(
            EncodeExamples(self.staging if needs_span else None))
        if needs_span:
            activity = joined.activity | "MergeActivity" >> beam.CombineGlobally(MergeCounts())
            batches |= "FilterTrain" >> beam.ParDo(FilterTrain(c.min_member_events, c.sample_data),
                                                   activity=beam.pvalue.AsSingleton(activity))
        return {"batches": batches, "dead": joined.dead, "items": joined.items}


class WriteExampleFiles(beam.PTransform):
    """Encoded batches -> TFRecord files, and the distinct members and items per split (``_distinct.json``)."""

    def __init__(self, staging: str, run_id: str | None):
        super().__init__()
        self.staging, self.run_id = staging, run_id

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return (batches
                | "WriteTFRecords" >> beam.ParDo(WriteExamples(self.staging, self.run_id))
                | "CountDistinct" >> beam.CombineGlobally(MergeSets())
                | "WriteDistinct" >> beam.Map(lambda d: logs.write_json(f"{self.staging}/_distinct.json", d)))


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> ``dead_letters/<stream>.jsonl``."""

    def __init__(self, staging: str):
        super().__init__()
        self.staging = staging

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return (dead
                | "KeyByStream" >> beam.Map(lambda d: (d["stream"], d))
                | "GroupByStream" >> beam.GroupByKey()
                | "WriteJsonLines" >> beam.Map(lambda e: write_dead_letters(self.staging, e)))


class WriteItems(beam.PTransform):
    """Per-bucket item summaries -> ``items/items.jsonl.gz``."""

    def __init__(self, staging: str):
        super().__init__()
        self.staging = staging

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return (items
                | "MergeItems" >> beam.CombineGlobally(MergeItems())
                | "WriteJsonLines" >> beam.Map(lambda merged: write_items(self.staging, merged)))


def build(p: beam.Pipeline, config: IngestConfig, files: list[InputFile], buckets: int, staging: str,
          run_id: str | None = None) -> None:
    """Adds the ingest of ``files`` to ``p``, writing under ``staging``."""
    labelled = (p
                | "ListLogFiles" >> beam.Create(files)
                | "ReadIntoBuckets" >> ReadIntoBuckets(buckets, run_id)
                | "LabelExamples" >> LabelExamples(config, buckets, staging, run_id))
    labelled["batches"] | "WriteExamples" >> WriteExampleFiles(staging, run_id)
    labelled["dead"] | "WriteDeadLetters" >> WriteDeadLetters(staging)
    labelled["items"] | "WriteItems" >> WriteItems(staging)
