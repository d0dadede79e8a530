"""TFDV statistics of what a model reads: ingested examples, and serving logs as served.

Both paths end in the same Arrow layout (``features.examples``) and TFDV's
in-memory generator, so training and serving statistics are computed the same
way. The model's features, the labels and the logging fields (``LOGGED``) are
described: ids of requests would cost time and say nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
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

# what the serving path logs about its own choice, read by the off-policy estimate, the explored views and
# the per-version checks (validation.logged); position is a feature already
LOGGED = ("row", "score", "propensity", "explored", "model_version")
SERVED = [f.name for f in FEATURES] + list(LOGGED)  # what a request record holds
DESCRIBED = SERVED + list(LABEL_COLUMNS)
BATCH = 50_000  # examples per batch fed to TFDV: bounds memory, large enough to keep TFDV's C++ busy
Statistics = statistics_pb2.DatasetFeatureStatisticsList


class _Describer:
    """TFDV's in-memory statistics generators fed batch by batch, so memory stays bounded by one batch."""

    def __init__(self, name: str, described: list[str]):
        self.name, self.described = name, described
        self.options: tfdv.StatsOptions | None = None
        self.generators: list = []
        self.accumulators: list = []

    def add(self, batch: pa.RecordBatch) -> None:
        if self.options is None:
            self.options = tfdv.StatsOptions(feature_allowlist=[c for c in self.described if c in batch.schema.names])
            self.generators = stats_impl.get_generators(self.options, in_memory=True)
            self.accumulators = [g.create_accumulator() for g in self.generators]
        columns = [c for c in self.options.feature_allowlist]
        batch = pa.RecordBatch.from_arrays([batch.column(batch.schema.get_field_index(c)) for c in columns], columns)
        self.accumulators = [g.add_input(a, batch) for g, a in zip(self.generators, self.accumulators)]

    def result(self) -> Statistics:
        if self.options is None:
            raise ValueError(f"{self.name}: nothing to describe")
        stats = stats_impl.extract_statistics_output(self.accumulators, self.generators)
        stats.datasets[0].name = self.name
        return stats


def example_statistics(folder: str, name: str, batch_size: int = BATCH,
                       on_batch: Callable[[pa.RecordBatch], None] | None = None) -> Statistics:
    """Statistics of an ingest output folder (``train/``, ``eval/``: gzipped tf.Example TFRecords).

    ``on_batch`` also sees every decoded batch (every column), so other figures need no second read.
    """
    files = sorted(str(p) for p in Path(folder).glob("*.tfrecord.gz"))
    if not files:
        raise ValueError(f"{folder}: no examples to describe")
    describer, decoder = _Describer(name, DESCRIBED), example_coder.ExamplesToRecordBatchDecoder()
    for records in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        _feed(decoder.DecodeBatch(list(records.numpy())), describer, on_batch)
    return describer.result()


def serving_statistics(logs_root: str, start: dt.date, end: dt.date, name: str, batch_size: int = BATCH,
                       on_batch: Callable[[pa.RecordBatch], None] | None = None) -> tuple[Statistics, int]:
    """Statistics of the features and logging fields exactly as served from ``start`` to ``end`` (request
    logs); ``on_batch`` also sees every batch, as in ``example_statistics``.

    Lines that do not parse are left to ingest's dead letters; here they are counted.

    Returns:
      The statistics and the number of request lines skipped.
    """
    describer = _Describer(name, SERVED)  # served requests carry no outcomes
    columns, skipped = ExampleColumns(), 0
    for path in logs.partition_files(logs_root, "requests", start, end):
        for line in logs.read_lines(path):
            try:
                columns.add(parse_request(line))
            except RecordError:
                skipped += 1
            if columns.num_rows >= batch_size:
                _feed(columns.to_record_batch(), describer, on_batch)
                columns = ExampleColumns()
    if columns.num_rows:
        _feed(columns.to_record_batch(), describer, on_batch)
    if describer.options is None:
        raise ValueError(f"{logs_root}: no request logs from {start} to {end}")
    return describer.result(), skipped


def _feed(batch: pa.RecordBatch, describer: _Describer, on_batch: Callable[[pa.RecordBatch], None] | None) -> None:
    if on_batch is not None:
        on_batch(batch)
    describer.add(batch)


def write(stats: Statistics, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(stats.SerializeToString())


def read(path: str) -> Statistics:
    return Statistics.FromString(Path(path).read_bytes())
