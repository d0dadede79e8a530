"""Training data: weekly ingest outputs read back into numpy columns.

The trainer reads what ingest wrote (``train/``, ``eval/``: gzip TFRecords of
``features.examples.COLUMNS``; ``items/items.jsonl.gz``; ``summary.json``) and
nothing else. With several weeks (``--data`` repeated) the newest ``window_weeks``
are used. The evaluation set is one of:

- the newest week's eval split (the default): one day unless ingest held out more;
- with ``eval_days`` N, every example of the weeks' train and eval splits whose
  request falls in the last N days before the end of the newest span (midnight
  UTC), so it can be sized by its support rather than by one ingest;
- with ``eval_dirs``, the train and eval splits of separate ingest outputs,
  which must start after the training data ends.

Everything before the evaluation set is training data, so evaluation is always
later in time than training. The last ``validation_days`` days of the training
data are the validation split, for choices that must not see the evaluation set
(recent popularity's window, early stopping); ``fit`` is the training data before
them, what the models fit while the validation days decide when they stop. Two
caveats when the evaluation set is cut out of train splits: their
examples passed ingest's training filters (activity threshold, freshness), and
the labels of the last training day may count events up to the attribution
window after the cut (examples carry no event time); an ingest's own eval split
has neither.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.features import logs, recorded
from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.features.examples import COLUMNS, LISTS
from recloop.features.spec import missing_value

_TF = {str: tf.string, int: tf.int64, float: tf.float32}
_PARSE: dict[str, Any] = {
    name: tf.io.RaggedFeature(_TF[kind]) if name in LISTS
    else tf.io.FixedLenFeature([], _TF[kind], default_value=missing_value(kind)) for name, kind in COLUMNS.items()}
DAY_SECONDS = 86_400


class DataError(ValueError):
    """Training data that cannot be used; the message names the folder and what is wrong."""


@dataclass
class Examples:
    """Examples as aligned numpy columns (strings as ``str`` arrays, missing values per ``missing_value``);
    a list column (``examples.LISTS``) is 2-D, ``(examples, max_length)``, padded with ``""``."""

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
            return cls({name: _empty(name, kind) for name, kind in COLUMNS.items()})
        return cls({k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns})


@dataclass
class TrainingData:
    """The training and evaluation examples, the catalog and where they came from."""

    train: Examples  # every training day (the models fit on ``fit`` when there is a validation split)
    eval: Examples
    catalog: Examples  # features.catalog.item_columns, newest metadata per item
    sources: list[str]
    span: dict[str, str | None]  # start, end, eval_start, validation_start (None: no validation split)
    fit: Examples  # train before the validation days
    validation: Examples  # train's last validation days (held out by time, for choices)
    eval_sources: list[str] = field(default_factory=list)  # the separate eval ingests, if any
    eval_from: list[str] = field(default_factory=list)  # the folders the evaluation set was read from
    validation_note: str | None = None  # why the validation split is empty, when it is

    def sizes(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "train_examples": len(self.train), "eval_examples": len(self.eval), "catalog_items": len(self.catalog),
            "train_members": len(np.unique(self.train["member_id"])),
            "train_items": len(np.unique(self.train["item_id"])),
            "fit_examples": len(self.fit), "validation_examples": len(self.validation)}
        if self.validation_note:
            out["validation_note"] = self.validation_note
        return out


def _numpy_dtype(kind: type) -> Any:
    return {str: str, int: np.int64, float: np.float32}[kind]


def _empty(name: str, kind: type) -> np.ndarray:
    return np.zeros((0, LISTS[name]) if name in LISTS else (0,), dtype=_numpy_dtype(kind))


def read_examples(folder: str) -> Examples:
    """Every example under ``folder`` (``*.tfrecord.gz``), by request time, request id and position.

    Ingest's runner writes the same examples in an order that can change from run to run; sorted, the same
    logs give the same arrays, so a seeded training run gives the same model.

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
                if name in LISTS:  # ragged -> padded with "" (the lookups' mask) to the declared length
                    value = value.to_tensor(default_value=missing_value(COLUMNS[name]), shape=[None, LISTS[name]])
                batches[name].append(value.numpy())
    out = {}
    for name, kind in COLUMNS.items():
        if not batches[name]:
            out[name] = _empty(name, kind)
            continue
        values = np.concatenate(batches[name])
        out[name] = np.char.decode(values.astype(bytes), "utf-8") if kind is str else values.astype(_numpy_dtype(kind))
    order = np.lexsort((out["position"], out["item_id"], out["request_id"], out["ts"]))
    return Examples({name: values[order] for name, values in out.items()})


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


def _spans(folders: Sequence[str], option: str) -> list[tuple[dict[str, Any], str]]:
    """``(span, folder)`` of each ingest output, oldest first.

    Raises:
      DataError: for a folder that is not a finished ingest output, one made under another feature
        declaration than the active one, or two with the same span.
    """
    spans = sorted(((read_summary(f)["span"], f) for f in folders), key=lambda s: s[0]["start"])
    for _, folder in spans:
        try:
            recorded.check(folder, f"{option} folder")
        except recorded.DeclarationMismatch as e:
            raise DataError(str(e)) from None
    starts = [s["start"] for s, _ in spans]
    if len(set(starts)) != len(starts):
        raise DataError(f"two {option} folders cover the same span: {[f for _, f in spans]}")
    return spans


def _every_split(spans: Sequence[tuple[dict[str, Any], str]]) -> Examples:
    return Examples.concat([read_examples(posixpath.join(f, s)) for _, f in spans for s in ("train", "eval")])


def _midnight(day: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC)


def load(folders: Sequence[str], window_weeks: int | None = None, eval_days: int | None = None,
         validation_days: int = 1, eval_dirs: Sequence[str] = (), feed: str | None = None,
         progress: Callable[[str], None] = lambda line: None, validation_min_positives: int = 0,
         positive: str = "click") -> TrainingData:
    """Reads the newest ``window_weeks`` ingest outputs of ``folders`` (any order), split by time.

    Args:
      folders: ingest outputs (``--data``).
      window_weeks: how many of the newest ``folders`` are used (None: all); the dropped ones are reported.
      eval_days: None: the newest folder's eval split is the evaluation set; N: the last N days of the data.
      validation_days: the last N training days before the evaluation set form ``validation`` (0: none).
      validation_min_positives: the validation split grows back a day at a time until it holds this many
        ``label_<positive>`` positives, but not beyond a quarter of the training examples (sparse logs: one day
        of them says nothing about an epoch or a window).
      eval_dirs: separate ingest outputs whose train and eval splits are the evaluation set (``--eval-data``).
      feed: the item feed (a ``feed.jsonl.gz``-style file, or a root holding ``catalog/dt=...``: the snapshot
        of the data's last day) added to the catalog, so items never served are indexed and evaluated too.
      progress: receives a line naming the folders the window dropped.

    Raises:
      DataError: for a folder that is not a finished ingest output, one made under another feature
        declaration than the active one (``features.recorded``), two folders with the same span,
        ``eval_days`` together with ``eval_dirs``, eval data that does not start after the training data
        ends, or an empty training or evaluation split.
    """
    if not folders:
        raise DataError("no --data folder given")
    every = _spans(folders, "--data")
    weeks = every[-window_weeks:] if window_weeks else every
    if len(weeks) < len(every):
        progress(f"window_weeks={window_weeks}: using the newest {len(weeks)} of {len(every)} --data folders, "
                 f"dropping {[f for _, f in every[: len(every) - len(weeks)]]}")
    newest_span, newest = weeks[-1]
    data_end = _midnight(newest_span["end"]) + dt.timedelta(days=1)  # the first instant after the newest span
    held: list[tuple[dict[str, Any], str]] = []
    if eval_dirs:
        if eval_days is not None:
            raise DataError(f"eval_days={eval_days} (--eval-days) and --eval-data {list(eval_dirs)} both choose the "
                            "evaluation set; give one")
        held = _spans(eval_dirs, "--eval-data")
        eval_start = _midnight(held[0][0]["start"])
        if eval_start < data_end:
            raise DataError(f"--eval-data {[f for _, f in held]} starts {held[0][0]['start']}, before the training "
                            f"data {[f for _, f in weeks]} ends ({newest_span['end']}): evaluation must be later "
                            "than training")
        train, evaluation, train_end = _every_split(weeks), _every_split(held), data_end
    elif eval_days is not None:
        everything = _every_split(weeks)
        eval_start = train_end = data_end - dt.timedelta(days=eval_days)
        later = everything["ts"] >= eval_start.timestamp()
        train, evaluation = everything.take(~later), everything.take(later)
    else:
        train = Examples.concat([_every_split(weeks[:-1]), read_examples(posixpath.join(newest, "train"))])
        evaluation = read_examples(posixpath.join(newest, "eval"))
        eval_start = train_end = dt.datetime.fromisoformat(newest_span["eval_start"])
    used = [f for _, f in (*weeks, *held)]
    for name, split in (("training", train), ("evaluation", evaluation)):
        if not len(split):
            hint = ("ingest with --eval-days >= 1 and a span with traffic" if eval_days is None and not held else
                    "choose eval days inside the data's span, after at least one training day")
            raise DataError(f"the {name} split is empty (data: {used}, eval from {eval_start.isoformat()}); {hint}")
    length = _validation_length(train, train_end, validation_days, validation_min_positives, positive)
    fit, validation, validation_start, note = _validation(train, train_end, length)
    if note is None and length > validation_days:
        note = f"validation split of {length} days (not {validation_days}) to hold {validation_min_positives} positives"
        progress(note)
    items: dict[str, dict[str, Any]] = {}
    for _, f in (*weeks, *held):  # oldest first, so the newest metadata wins
        items.update((item["item_id"], item) for item in read_items(posixpath.join(f, "items", "items.jsonl.gz")))
    if feed is not None:  # the feed is the catalog as published: its metadata wins, its unserved items join
        path = snapshot(feed, dt.date.fromisoformat((held or weeks)[-1][0]["end"])) or feed
        try:
            items.update((item["item_id"], item) for item in read_items(path))
        except FileNotFoundError:
            raise DataError(f"{feed}: no item feed (expected a feed file or a root with catalog/dt=YYYY-MM-DD/)") from None
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not an item feed of JSON objects with item_id: {e}") from None
    span = {"start": weeks[0][0]["start"], "end": (held or weeks)[-1][0]["end"], "eval_start": eval_start.isoformat(),
            "validation_start": validation_start}
    return TrainingData(train=train, eval=evaluation, catalog=catalog_columns(list(items.values())),
                        sources=[f for _, f in weeks], span=span, fit=fit, validation=validation,
                        eval_sources=[f for _, f in held], validation_note=note,
                        eval_from=[f for s, f in (held or weeks) if _midnight(s["end"]) >= eval_start])


def _validation_length(train: Examples, end: dt.datetime, days: int, min_positives: int, positive: str) -> int:
    """How many days before ``end`` the validation split takes: ``days``, or more until it holds ``min_positives``
    positives, as long as it stays within a quarter of the training examples."""
    if not days or not min_positives or not len(train):
        return days
    back = np.floor((end.timestamp() - train["ts"]) / DAY_SECONDS).astype(np.int64)  # 0: the last day before end
    positives = np.sort(back[train[f"label_{positive}"] == 1])
    need = int(positives[min_positives - 1]) + 1 if len(positives) >= min_positives else int(back.max()) + 1
    ordered = np.sort(back)
    cap = int(ordered[len(ordered) // 4])  # days with back < cap hold at most a quarter of the examples
    return max(days, min(need, cap))


def _validation(train: Examples, end: dt.datetime, days: int) -> tuple[Examples, Examples, str | None, str | None]:
    """``(fit, validation, validation start, note)``: the last ``days`` days before ``end`` held out of ``fit``."""
    if not days:
        return train, train.take(np.zeros(len(train), dtype=bool)), None, None
    start = end - dt.timedelta(days=days)
    held = train["ts"] >= start.timestamp()
    if held.all():
        note = (f"no validation split: validation_days={days} would leave nothing to fit "
                f"(every training example is after {start.isoformat()})")
        return train, train.take(~held), None, note
    if not held.any():
        return train, train.take(held), start.isoformat(), f"no training example after {start.isoformat()}"
    return train.take(~held), train.take(held), start.isoformat(), None



