"""TFDV statistics of what a model reads: ingested examples, and serving logs as served.

Both paths end in the same Arrow layout (``features.examples``) and TFDV's
in-memory generator, so training and serving statistics are computed the same
way. Only the model's features and the labels are described: ids of requests
would cost time and say nothing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.coders import example_coder

from recloop.features import logs
from recloop.features.examples import LABEL_COLUMNS, ExampleColumns
from recloop.features.records import RecordError, parse_request
from recloop.features.spec import FEATURES

DESCRIBED = [f.name for f in FEATURES] + list(LABEL_COLUMNS)
Statistics = statistics_pb2.DatasetFeatureStatisticsList


def _statistics(batch: pa.RecordBatch, name: str, described: list[str] = DESCRIBED) -> Statistics:
    options = tfdv.StatsOptions(feature_allowlist=[c for c in described if c in batch.schema.names])
    stats = stats_impl.generate_statistics_in_memory(batch, options)
    stats.datasets[0].name = name
    return stats


def example_statistics(folder: str, name: str) -> Statistics:
    """Statistics of an ingest output folder (``train/``, ``eval/``: gzipped tf.Example TFRecords)."""
    files = sorted(str(p) for p in Path(folder).glob("*.tfrecord.gz"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")] if files else []
    if not records:
        raise ValueError(f"{folder}: no examples to describe")
    return _statistics(example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records), name)


def serving_statistics(logs_root: str, start: dt.date, end: dt.date, name: str) -> tuple[Statistics, int]:
    """Statistics of the features exactly as served from ``start`` to ``end`` (request logs).

    Lines that do not parse are left to ingest's dead letters; here they are counted.

    Returns:
      The statistics and the number of request lines skipped.
    """
    columns, skipped = ExampleColumns(), 0
    for path in logs.partition_files(logs_root, "requests", start, end):
        for line in logs.read_lines(path):
            try:
                columns.add(parse_request(line))
            except RecordError:
                skipped += 1
    if not columns.num_rows:
        raise ValueError(f"{logs_root}: no request logs from {start} to {end}")
    # served requests carry no outcomes: only the features are described
    return _statistics(columns.to_record_batch(), name, [f.name for f in FEATURES]), skipped


def write(stats: Statistics, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(stats.SerializeToString())


def read(path: str) -> Statistics:
    return Statistics.FromString(Path(path).read_bytes())
