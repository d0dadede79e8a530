"""Training data: weekly ingest outputs, streamed from their TFRecords and partly held as numpy columns.

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

The training examples are never held whole. One streamed pass (``stream_examples``) keeps the columns the
baselines, checks and evaluation read (ids, time, labels, the logging facts, the heuristics' roles, numeric
features: ~85 bytes an example, strings shared, integers narrowed) and counts every categorical feature's
values (the vocabularies); the models read every column again from the files, epoch by epoch (``Examples.source``, see
``fit.py``). The evaluation set is read whole (``read_examples``): its size does not grow with the window.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tensorflow as tf

from recloop.features import logs, recorded
from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.features.examples import COLUMNS, LISTS
from recloop.features.spec import FEATURES, missing_value, role

_TF = {str: tf.string, int: tf.int64, float: tf.float32}
_PARSE: dict[str, Any] = {
    name: tf.io.RaggedFeature(_TF[kind]) if name in LISTS
    else tf.io.FixedLenFeature([], _TF[kind], default_value=missing_value(kind)) for name, kind in COLUMNS.items()}
DAY_SECONDS = 86_400


class DataError(ValueError):
    """Training data that cannot be used; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class Source:
    """Where a split's examples stream from: example files (local or object storage), cut to a request-time
    window, ``start <= ts < end`` (None: open), and where known each file's first and last request time in it."""

    files: tuple[str, ...]
    start: float | None = None
    end: float | None = None
    spans: tuple[tuple[float, float], ...] | None = None

    def cut(self, start: float | None = None, end: float | None = None) -> Source:
        """The window narrowed to ``[start, end)`` as well, without the files whose span lies outside it (a
        validation day of a long window reads its newest files only)."""
        start, end = _tighter(self.start, start, max), _tighter(self.end, end, min)
        if self.spans is None:
            return replace(self, start=start, end=end)
        kept = [(f, (lo, hi)) for f, (lo, hi) in zip(self.files, self.spans, strict=True)
                if (start is None or hi >= start) and (end is None or lo < end)]
        return Source(tuple(f for f, _ in kept), start, end, tuple(span for _, span in kept))


def _tighter(a: float | None, b: float | None, pick: Callable[[float, float], float]) -> float | None:
    return b if a is None else a if b is None else pick(a, b)


@dataclass
class Examples:
    """Examples as aligned numpy columns (strings as ``str`` arrays, missing values per ``missing_value``);
    a list column (``examples.LISTS``) is 2-D, ``(examples, max_length)``, padded with ``""``.

    Streamed examples (``stream_examples``) hold the ``LIGHT`` columns only (strings as shared ``str`` objects),
    their ``source`` to read every column from, and ``tallies``: each categorical feature's value counts.
    """

    columns: dict[str, np.ndarray]
    source: Source | None = None
    tallies: dict[str, Counter[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, index: np.ndarray) -> Examples:
        """The rows selected by a boolean mask or an index array (held columns only: no source)."""
        return Examples({k: v[index] for k, v in self.columns.items()})

    def between(self, start: float | None = None, end: float | None = None) -> Examples:
        """The examples requested in ``[start, end)`` (None: open), from the source too where there is one.

        Rows sorted by time (as ``read_examples`` and ``stream_examples`` leave them) give a slice: views of the
        columns, no copy, so a window's fit and validation splits cost no memory beside its training split.
        """
        ts = self.columns["ts"]
        if bool(np.all(ts[:-1] <= ts[1:])):
            lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
            hi = len(ts) if end is None else int(np.searchsorted(ts, end, "left"))
            columns = {k: v[lo:max(lo, hi)] for k, v in self.columns.items()}
        else:
            keep = np.ones(len(ts), dtype=bool)
            if start is not None:
                keep &= ts >= start
            if end is not None:
                keep &= ts < end
            columns = {k: v[keep] for k, v in self.columns.items()}
        return Examples(columns, self.source.cut(start, end) if self.source else None)

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


def read_examples(folders: str | Sequence[str], start: float | None = None, end: float | None = None) -> Examples:
    """Every column of the examples under ``folders`` (split folders of ``*.tfrecord.gz``) requested in
    ``[start, end)``, by request time, request id, item and position.

    Ingest's runner writes the same examples in an order that can change from run to run; sorted, the same
    logs give the same arrays.

    Raises:
      DataError: for a folder that does not exist.
    """
    files = [f for folder in ([folders] if isinstance(folders, str) else folders) for f in example_files(folder)]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    for batch in (batches(Source(tuple(files), start, end), list(COLUMNS), 16_384) if files else ()):
        for name, value in batch.items():
            parts[name].append(value.numpy())
    out = {}
    for name, kind in COLUMNS.items():
        if not parts[name]:
            out[name] = _empty(name, kind)
            continue
        values = np.concatenate(parts[name])
        out[name] = np.char.decode(values.astype(bytes), "utf-8") if kind is str else values.astype(_numpy_dtype(kind))
    order = np.lexsort((out["position"], out["item_id"], out["request_id"], out["ts"]))
    return Examples({name: values[order] for name, values in out.items()})


def light_columns() -> dict[str, type]:
    """The columns streamed examples hold: every one but the list features, the logged score, the model version
    and the string features no baseline reads (their values are tallied instead)."""
    strings = {"member_id", "item_id", "request_id", "row", *(role(r) for r in ("platform", "category", "creator"))}
    return {n: kind for n, kind in COLUMNS.items()
            if n not in LISTS and n not in ("score", "model_version") and (kind is not str or n in strings)}


def example_files(folder: str) -> list[str]:
    """The example files of an ingest output's split folder, sorted.

    Raises:
      DataError: when the folder does not exist.
    """
    files = sorted(tf.io.gfile.glob(posixpath.join(folder, "*.tfrecord.gz")))
    if not files and not tf.io.gfile.exists(folder):
        raise DataError(f"{folder}: no such folder; expected an ingest output's split folder")
    return files


def batches(source: Source, names: Sequence[str], size: int = 4096, *, seed: int | None = None) -> tf.data.Dataset:
    """The columns ``names`` of the source's examples inside its window, as batches of dicts of up to ``size``
    rows (a list column padded with ``""`` to its declared length). Nothing is held beyond a batch.

    The files are read one after another: in their listed order, or with ``seed``, in a new order every pass
    (the same on every worker). Ingest's files each hold a share of the requests (by a hash of their id) over
    the whole span, in time order, so a shuffle buffer over files in a random order holds examples of the whole
    span; in their listed order an epoch of several weeks would run from the oldest week to the newest.
    """
    spec = {n: _PARSE[n] for n in {*names, "ts"}}

    def parse(records: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(records, spec)
        ts = tf.cast(parsed["ts"], tf.float64)
        keep = tf.ones_like(ts, dtype=tf.bool)
        if source.start is not None:
            keep &= ts >= source.start
        if source.end is not None:
            keep &= ts < source.end
        out = {}
        for n in names:
            value = parsed[n]
            if n in LISTS:
                value = value.to_tensor(default_value=missing_value(COLUMNS[n]), shape=[None, LISTS[n]])
            out[n] = tf.boolean_mask(value, keep)
        return out

    files: Any = list(source.files)
    if seed is not None and files:
        files = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return ds.batch(size).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class _Strings:
    """A string column read batch by batch: a code per row and each distinct value decoded once."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.codes: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        uniq, inverse = np.unique(values, return_inverse=True)
        local = np.fromiter((self.index.setdefault(u, len(self.index)) for u in uniq.tolist()), np.int32, len(uniq))
        self.codes.append(local[inverse.reshape(-1)])

    def _codes(self) -> np.ndarray:
        if len(self.codes) != 1:  # one array from here on
            self.codes = [np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)]
        return self.codes[0]

    def ranks(self) -> np.ndarray:
        """Each row's value's rank in sorted order (for sorting rows without comparing strings)."""
        words = [w.decode("utf-8") for w in self.index]
        rank = np.empty(len(words), np.int32)
        rank[sorted(range(len(words)), key=words.__getitem__)] = np.arange(len(words), dtype=np.int32)
        return rank[self._codes()]

    def column(self) -> np.ndarray:
        """The values: an object array sharing one ``str`` per distinct value."""
        words = np.array([w.decode("utf-8") for w in self.index] or [""], dtype=object)
        return words[self._codes()] if self.index else np.zeros(0, dtype=object)


def stream_examples(folders: Sequence[str], start: float | None = None, end: float | None = None,
                    progress: Callable[[str], None] = lambda line: None) -> Examples:
    """The examples of ``folders`` (split folders) requested in ``[start, end)``, in one streamed pass: their
    ``light_columns`` sorted as ``read_examples`` sorts, the value counts of every categorical feature, and the
    files as their source.

    The source keeps the files with examples in the window, and each file's span (its first and last request
    time there), so that a later cut reads only the files it needs.

    Raises:
      DataError: for a folder that does not exist.
    """
    files = [f for folder in folders for f in example_files(folder)]
    light = light_columns()
    tallied = [f.name for f in FEATURES if f.kind == "categorical"]
    strings = {n: _Strings() for n, kind in light.items() if kind is str}
    parts: dict[str, list[np.ndarray]] = {n: [] for n, kind in light.items() if kind is not str}
    tallies: dict[str, Counter[str]] = {n: Counter() for n in tallied}
    spans: dict[str, tuple[float, float]] = {}
    rows, names = 0, sorted({*light, *tallied})
    for file, batch in ((f, b) for f in files for b in batches(Source((f,), start, end), names, 16_384)):
        ts = batch["ts"].numpy()  # the file's span: a later cut skips the files outside it
        if len(ts):
            lo, hi = spans.get(file, (np.inf, -np.inf))
            spans[file] = (min(lo, float(ts.min())), max(hi, float(ts.max())))
        for name in tallied:
            values = batch[name].numpy().reshape(-1)
            uniq, counts = np.unique(values, return_counts=True)
            tallies[name].update({u.decode("utf-8"): int(c) for u, c in zip(uniq.tolist(), counts.tolist(), strict=True)
                                  if u})  # a list's padding "" is no value
        for name, column in strings.items():
            column.add(batch[name].numpy())
        for name, chunks in parts.items():
            chunks.append(batch[name].numpy().astype(_compact(name, light[name])))
        before, rows = rows, rows + len(ts)
        if rows // 1_000_000 > before // 1_000_000:
            progress(f"read {rows:,} training examples from {len(files)} files")
    # each column built, then reordered, one at a time: at most one column is held twice
    out: dict[str, np.ndarray] = {}
    for name in list(parts):
        chunks = parts.pop(name)
        out[name] = _narrow(np.concatenate(chunks) if chunks else np.zeros(0, _compact(name, light[name])))
        del chunks
    ranks = {name: strings[name].ranks() for name in ("request_id", "item_id")}
    order = np.lexsort((out["position"], ranks.pop("item_id"), ranks.pop("request_id"), out["ts"]))
    for name in list(strings):
        out[name] = strings.pop(name).column()
    for name in list(out):
        out[name] = out[name][order]
    kept = [f for f in files if f in spans]
    return Examples({n: out[n] for n in light}, Source(tuple(kept), start, end, tuple(spans[f] for f in kept)), tallies)


def _compact(name: str, kind: type) -> Any:
    """The dtype a held numeric column keeps: 4 bytes, but for request times."""
    return np.int64 if name == "ts" else np.int32 if kind is int else np.float32


def _narrow(values: np.ndarray) -> np.ndarray:
    """An int32 column in the fewest bytes its values fit (labels, positions, hours: one), by value, so a page
    longer than int8 holds is kept whole. Held columns are most of what grows with the window."""
    if values.dtype != np.int32 or not len(values):
        return values
    lo, hi = int(values.min()), int(values.max())
    for dtype in (np.int8, np.int16):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values


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


def _splits(spans: Sequence[tuple[dict[str, Any], str]]) -> list[str]:
    return [posixpath.join(f, s) for _, f in spans for s in ("train", "eval")]


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
        train, evaluation, train_end = stream_examples(_splits(weeks), progress=progress), read_examples(
            _splits(held)), data_end
    elif eval_days is not None:
        eval_start = train_end = data_end - dt.timedelta(days=eval_days)
        train = stream_examples(_splits(weeks), end=eval_start.timestamp(), progress=progress)
        evaluation = read_examples(_splits(weeks), start=eval_start.timestamp())
    else:
        train = stream_examples([*_splits(weeks[:-1]), posixpath.join(newest, "train")], progress=progress)
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
        return train, train.between(end=-np.inf), None, None
    start = end - dt.timedelta(days=days)
    cut = start.timestamp()
    held = train["ts"] >= cut
    if held.all():
        note = (f"no validation split: validation_days={days} would leave nothing to fit "
                f"(every training example is after {start.isoformat()})")
        return train, train.between(end=-np.inf), None, note
    if not held.any():
        return train, train.between(start=cut), start.isoformat(), f"no training example after {start.isoformat()}"
    return train.between(end=cut), train.between(start=cut), start.isoformat(), None
