"""After the join: encoding, the training rules that need the whole span, and writing files.

A bucket's examples are encoded right after the join (tfx_bsl's C++ coder, on a
background thread) and travel on as serialized records with a few key columns;
each join bucket becomes one file per output, so the same logs and parameters
give the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from tfx_bsl.coders import example_coder

from recloop import storage
from recloop.features import logs
from recloop.features.examples import LABEL_COLUMNS
from recloop.ingest.join import Batch, merge_item, sample_unit
from recloop.ingest.progress import report
from recloop.ingest.read import NAMESPACE


def _counter(name: str, n: int) -> None:
    if n:
        beam.metrics.Metrics.counter(NAMESPACE, name).inc(n)


KEY_COLUMNS = ("member_id", "request_id", "item_id", *LABEL_COLUMNS)


@dataclass
class Encoded:
    """A bucket's examples of one split, encoded, with the few columns the later
    steps read (``KEY_COLUMNS``, one value per row) kept beside them.

    Before a step that waits for the whole span (the activity side input), the
    records are spilled to an Arrow file in the staging folder and only its path
    travels: moving ~600 MB per million examples through the in-process runner
    took longer than the join itself.
    """

    split: str
    bucket: int
    keys: pa.RecordBatch
    records: pa.LargeBinaryArray | None = None
    spill: str | None = None
    keep: np.ndarray | None = None  # which of the spilled records are kept

    def __len__(self) -> int:
        return self.keys.num_rows

    def filter(self, keep: np.ndarray) -> Encoded:
        """The rows where ``keep`` is true (once: a spilled batch's mask is over the spilled rows)."""
        if self.keep is not None:
            raise ValueError(f"batch {self.split}/{self.bucket} is already filtered")
        mask = pa.array(keep)
        if self.records is not None:
            return Encoded(self.split, self.bucket, self.keys.filter(mask), records=self.records.filter(mask))
        return Encoded(self.split, self.bucket, self.keys.filter(mask), spill=self.spill, keep=keep)

    def spilled(self, root: str) -> Encoded:
        path = f"{root}/_spill/{self.split}-{self.bucket:05d}.arrow"
        fs, local = storage.filesystem(path)
        fs.makedirs(f"{root}/_spill", exist_ok=True)
        table = pa.table({"record": self.records})
        with fs.open(local, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        return Encoded(self.split, self.bucket, self.keys, spill=path)

    def load(self) -> pa.LargeBinaryArray:
        if self.records is not None:
            return self.records
        with fsspec.open(self.spill, "rb") as f:
            records = pa.ipc.open_file(f).read_all().column("record").combine_chunks()
        return records if self.keep is None else records.filter(pa.array(self.keep))

    def column(self, name: str) -> pa.Array:
        return self.keys.column(self.keys.schema.get_field_index(name))


def _encode(split: str, bucket: int, examples: pa.RecordBatch) -> Encoded:
    keys = [pc.list_flatten(examples.column(examples.schema.get_field_index(n))) for n in KEY_COLUMNS]
    records = pa.array(example_coder.RecordBatchToExamples(examples), type=pa.large_binary())
    return Encoded(split, bucket, pa.RecordBatch.from_arrays(keys, names=list(KEY_COLUMNS)), records=records)


class _Pipelined(beam.DoFn):
    """A DoFn whose heavy C++ work (tfx_bsl encoding, TensorFlow's gzip writer, both
    release the GIL) runs on background threads while the bundle's thread goes on
    joining the next bucket: on two cores this hides most of it. At most
    ``in_flight`` batches are queued or running (a join yields a train and an
    eval batch back to back, so one is too few); the bundle ends when all are done."""

    workers = 1
    in_flight = 3

    def setup(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=type(self).__name__)

    def start_bundle(self) -> None:
        self._pending: list[Future] = []

    def teardown(self) -> None:
        self._pool.shutdown()

    def _submit(self, fn: Any, *args: Any) -> list[Any]:
        """Submits ``fn(*args)``; returns the results of earlier work that had to finish first."""
        done = []
        while len(self._pending) >= self.in_flight:
            done.append(self._pending.pop(0).result())  # re-raises a failure
        self._pending.append(self._pool.submit(fn, *args))
        return done

    def _drain(self) -> list[Any]:
        done = [f.result() for f in self._pending]
        self._pending = []
        return done


class EncodeExamples(_Pipelined):
    """Encodes each ``(split, bucket, RecordBatch)`` to serialized tf.Examples
    (``Encoded``), spilled under ``spill_root`` when given."""

    def __init__(self, spill_root: str | None = None):
        self.spill_root = spill_root

    def process(self, batch: Batch) -> Iterator[Encoded]:
        yield from self._submit(self._encode, *batch)

    def _encode(self, split: str, bucket: int, examples: pa.RecordBatch) -> Encoded:
        encoded = _encode(split, bucket, examples)
        return encoded.spilled(self.spill_root) if self.spill_root else encoded

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for encoded in self._drain():  # finish_bundle outputs need a window
            yield GlobalWindows.windowed_value(encoded)


class FilterTrain(beam.DoFn):
    """Drops training examples of members below the activity threshold, then samples
    (eval batches pass through).

    The activity map (member -> events used in fresh training requests) is a
    side input: it needs the whole span, and it is member-sized, not example-sized.
    """

    def __init__(self, min_member_events: int, sample_data: float):
        self.min_member_events, self.sample_data = min_member_events, sample_data
        self._inactive: tuple[int, pa.Array] | None = None

    def _inactive_members(self, activity: dict[str, int]) -> pa.Array:
        if self._inactive is None or self._inactive[0] != id(activity):
            members = [m.encode("utf-8") for m, n in activity.items() if n < self.min_member_events]
            self._inactive = (id(activity), pa.array(members, type=pa.large_binary()))
        return self._inactive[1]

    def process(self, batch: Encoded, activity: dict[str, int]) -> Iterator[Encoded]:
        if batch.split != "train":
            yield batch
            return
        active = np.ones(len(batch), dtype=bool)
        if self.min_member_events > 0:
            inactive = pc.is_in(batch.column("member_id"), value_set=self._inactive_members(activity))
            active = ~inactive.to_numpy(zero_copy_only=False)
        sampled = np.ones(len(batch), dtype=bool)
        if self.sample_data < 1.0:
            keys = zip(batch.column("request_id").to_pylist(), batch.column("item_id").to_pylist())
            sampled = np.fromiter((sample_unit(f"{r.decode()}:{i.decode()}", "data") < self.sample_data
                                   for r, i in keys), dtype=bool, count=len(batch))
        _counter("impressions.inactive_member", int((~active).sum()))
        _counter("impressions.sampled_out_train", int((active & ~sampled).sum()))
        keep = active & sampled
        if keep.any():
            yield batch.filter(keep)


class WriteExamples(_Pipelined):
    """Writes ``<split>/part-BBBBB.tfrecord.gz`` and, for the rows with any positive
    outcome, ``retrieval/<split>/part-BBBBB.tfrecord.gz``.

    One file per join bucket: no second shuffle of encoded examples (moving
    bytes between steps is what costs most on the in-process runner), and the
    file name is fixed by the bucket, so a retried bundle rewrites the same file.
    Yields the distinct members and items of each batch.
    """

    workers = 2

    def __init__(self, root: str, progress: str | None = None):
        self.root, self.progress = root, progress

    def process(self, batch: Encoded) -> Iterator[dict[str, set]]:
        labels = {name: batch.column(name).to_numpy() for name in LABEL_COLUMNS}
        _counter(f"examples.{batch.split}", len(batch))
        for name, values in labels.items():
            _counter(f"positives.{batch.split}.{name.removeprefix('label_')}", int(values.sum()))
        positive = np.logical_or.reduce([v > 0 for v in labels.values()])
        self._written(self._submit(_write, self.root, batch, positive))
        yield {f"members.{batch.split}": set(pc.unique(batch.column("member_id")).to_pylist()),
               f"items.{batch.split}": set(pc.unique(batch.column("item_id")).to_pylist())}

    def finish_bundle(self) -> None:
        self._written(self._drain())

    def _written(self, done: list[dict[str, int]]) -> None:
        for written in done:
            for output, n in written.items():  # counters count on the bundle's own thread only
                _counter(f"written.{output.replace('/', '_')}", n)
            report(self.progress, "write")


def _write(root: str, batch: Encoded, positive: np.ndarray) -> dict[str, int]:
    records = batch.load()
    written = {batch.split: _write_tfrecord(f"{root}/{batch.split}", batch.bucket, records)}
    if positive.any():
        chosen = records.filter(pa.array(positive))
        written[f"retrieval/{batch.split}"] = _write_tfrecord(f"{root}/retrieval/{batch.split}", batch.bucket, chosen)
    return written


def _write_tfrecord(folder: str, bucket: int, records: pa.LargeBinaryArray) -> int:
    # gzip level 1: ~3x faster to write than the default level 6, files ~1.4x larger
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=1)
    # TensorFlow writes local paths (and gs://, not s3://): a remote file is written locally, then uploaded whole
    with storage.local_file(f"{folder}/part-{bucket:05d}.tfrecord.gz") as path, \
            tf.io.TFRecordWriter(path, options=options) as writer:
        for record in records.to_pylist():
            writer.write(record)
    return len(records)


def write_dead_letters(root: str, element: tuple[str, Iterable[dict[str, Any]]]) -> str:
    """Writes ``<root>/dead_letters/<stream>.jsonl``, sorted by source and line."""
    stream, letters = element
    ordered = sorted(letters, key=lambda d: (d["source"], d["line_number"], d["reason"]))
    path = f"{root}/dead_letters/{stream}.jsonl"
    _counter("written.dead_letters", logs.write_lines(path, (json.dumps(d, sort_keys=True) for d in ordered)))
    return path


class MergeCounts(beam.CombineFn):
    """Sums ``{key: int}`` maps (member activity)."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], value: dict[str, int]) -> dict[str, int]:
        for key, n in value.items():
            acc[key] = acc.get(key, 0) + n
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


class MergeSets(MergeCounts):
    """Unions ``{key: set}`` maps (distinct members and items per split)."""

    def add_input(self, acc: dict, value: dict) -> dict:  # type: ignore[override]
        for key, values in value.items():
            acc.setdefault(key, set()).update(values)
        return acc

    def extract_output(self, acc: dict) -> dict[str, int]:  # type: ignore[override]
        return {key: len(values) for key, values in sorted(acc.items())}


class MergeItems(MergeCounts):
    """Merges item maps from the buckets: counts add up, metadata as last served."""

    def add_input(self, acc: dict, value: dict) -> dict:  # type: ignore[override]
        for item in value.values():
            merge_item(acc, item)
        return acc


def write_items(root: str, items: dict[str, dict[str, Any]]) -> str:
    """Writes ``<root>/items/items.jsonl.gz``: one line per item served in the span."""
    path = f"{root}/items/items.jsonl.gz"
    lines = (json.dumps(items[k], sort_keys=True, default=str) for k in sorted(items))
    _counter("written.items", logs.write_lines(path, lines))
    return path

