"""Training data: weekly ingest outputs read back into numpy columns.

The trainer reads what ingest wrote (``train/``, ``eval/``: gzip TFRecords of
``features.examples.COLUMNS``; ``items/items.jsonl.gz``; ``summary.json``) and
nothing else. With several weeks (``--data`` repeated) the newest ``window_weeks``
are used: the newest week's eval split is the evaluation set and everything
before it (older weeks' train and eval splits, the newest train split) is
training data, so evaluation is always later in time than training.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.features import logs
from recloop.features.catalog import item_columns, read_items
from recloop.features.examples import COLUMNS
from recloop.features.spec import missing_value

_TF = {str: tf.string, int: tf.int64, float: tf.float32}
_PARSE = {name: tf.io.FixedLenFeature([], _TF[kind], default_value=missing_value(kind)) for name, kind in COLUMNS.items()}


class DataError(ValueError):
    """Training data that cannot be used; the message names the folder and what is wrong."""


@dataclass
class Examples:
    """Examples as aligned numpy columns (strings as ``str`` arrays, missing values per ``missing_value``)."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, index: np.ndarray) -> Examples:
        """The rows selected by a boolean mask or an index array."""
        return Examples({k: v[index] for k, v in self.columns.items()})

    def features(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {n: self.columns[n] for n in names}

    @classmethod
    def concat(cls, parts: Sequence[Examples]) -> Examples:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls({name: np.array([], dtype=_numpy_dtype(kind)) for name, kind in COLUMNS.items()})
        return cls({k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns})


@dataclass
class TrainingData:
    """The training and evaluation examples, the catalog and where they came from."""

    train: Examples
    eval: Examples
    catalog: Examples  # features.catalog.item_columns, newest metadata per item
    sources: list[str]
    span: dict[str, str]  # start, end, eval_start of the data used

    def sizes(self) -> dict[str, int]:
        return {"train_examples": len(self.train), "eval_examples": len(self.eval), "catalog_items": len(self.catalog),
                "train_members": len(np.unique(self.train["member_id"])),
                "train_items": len(np.unique(self.train["item_id"]))}


def _numpy_dtype(kind: type) -> Any:
    return {str: str, int: np.int64, float: np.float32}[kind]


def read_examples(folder: str) -> Examples:
    """Every example under ``folder`` (``*.tfrecord.gz``), in file order.

    Raises:
      DataError: when the folder holds no example files.
    """
    files = sorted(tf.io.gfile.glob(posixpath.join(folder, "*.tfrecord.gz")))
    if not files and not tf.io.gfile.exists(folder):
        raise DataError(f"{folder}: no such folder; expected an ingest output's split folder")
    batches: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    if files:
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(16_384)
        for batch in ds.map(lambda x: tf.io.parse_example(x, _PARSE)):
            for name, value in batch.items():
                batches[name].append(value.numpy())
    out = {}
    for name, kind in COLUMNS.items():
        values = np.concatenate(batches[name]) if batches[name] else np.array([], dtype=object)
        out[name] = np.char.decode(values.astype(bytes), "utf-8") if kind is str else values.astype(_numpy_dtype(kind))
    return Examples(out)


def read_summary(folder: str) -> dict[str, Any]:
    """The ingest ``summary.json`` of an output folder."""
    try:
        summary = logs.read_json(posixpath.join(folder, "summary.json"))
    except FileNotFoundError:
        raise DataError(f"{folder}: no summary.json; is this a finished `recloop ingest` output?") from None
    if summary.get("status") != "ok":
        raise DataError(f"{folder}: ingest status is {summary.get('status')!r}, expected 'ok'")
    return summary


def catalog_columns(items: Sequence[dict[str, Any]]) -> Examples:
    """Catalog rows (item feed or item summaries) as ``Examples`` (``features.catalog.item_columns``).

    Raises:
      DataError: naming the item and the missing field.
    """
    try:
        return Examples(item_columns(items))
    except ValueError as e:
        raise DataError(str(e)) from None


def load(folders: Sequence[str], window_weeks: int = 4) -> TrainingData:
    """Reads the newest ``window_weeks`` ingest outputs of ``folders`` (any order).

    Raises:
      DataError: for a folder that is not a finished ingest output, two folders
        with the same span, or an empty training or evaluation split.
    """
    if not folders:
        raise DataError("no --data folder given")
    weeks = sorted(((read_summary(f)["span"], f) for f in folders), key=lambda s: s[0]["start"])
    starts = [s["start"] for s, _ in weeks]
    if len(set(starts)) != len(starts):
        raise DataError(f"two --data folders cover the same span: {[f for _, f in weeks]}")
    weeks = weeks[-window_weeks:]
    *older, (newest_span, newest) = weeks
    train = Examples.concat([read_examples(posixpath.join(f, s)) for _, f in older for s in ("train", "eval")]
                            + [read_examples(posixpath.join(newest, "train"))])
    evaluation = read_examples(posixpath.join(newest, "eval"))
    for name, split in (("training", train), ("evaluation", evaluation)):
        if not len(split):
            raise DataError(f"the {name} split is empty (data: {[f for _, f in weeks]}); "
                            "ingest with --eval-days >= 1 and a span with traffic")
    items: dict[str, dict[str, Any]] = {}
    for _, f in weeks:  # oldest first, so the newest metadata wins
        items.update((item["item_id"], item) for item in read_items(posixpath.join(f, "items", "items.jsonl.gz")))
    span = {"start": weeks[0][0]["start"], "end": newest_span["end"], "eval_start": newest_span["eval_start"]}
    return TrainingData(train=train, eval=evaluation, catalog=catalog_columns(list(items.values())),
                        sources=[f for _, f in weeks], span=span)



