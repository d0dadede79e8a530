"""Training data streamed from the ingest output's files: the held columns match a whole read, the models'
inputs hold every example once, and the vocabularies and fitted models do not depend on how rows were held."""

from __future__ import annotations

import os
import posixpath

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pytest
import tensorflow as tf

from recloop.features.spec import FEATURES
from recloop.trainer import fit
from recloop.trainer.config import TrainConfig
from recloop.trainer.data import (
    Examples,
    Source,
    batches,
    example_files,
    light_columns,
    load,
    read_examples,
    stream_examples,
)
from recloop.trainer.inputs import dataset


@pytest.fixture(scope="module")
def whole_and_streamed(tiny_ingest):
    folders = [posixpath.join(tiny_ingest, "train")]
    return read_examples(folders), stream_examples(folders)


def test_a_streamed_split_holds_the_light_columns_of_a_whole_read_in_the_same_order(whole_and_streamed):
    whole, streamed = whole_and_streamed
    assert len(streamed) == len(whole) > 10_000
    assert set(streamed.columns) == set(light_columns())
    assert {"country", "language", "model_version", "score"}.isdisjoint(streamed.columns)
    for name, values in streamed.columns.items():
        assert values.dtype.itemsize <= 8, name  # strings as shared objects, numbers in 4 bytes (ts in 8)
        np.testing.assert_array_equal(values, whole[name], err_msg=name)
    assert {streamed[n].dtype for n in ("label_click", "position", "hour_of_day", "explored")} == {np.dtype(np.int8)}
    # one str object per distinct value, not one per row
    ids = streamed["member_id"]
    assert len({id(v) for v in ids}) == len(set(ids.tolist()))
    # every categorical feature tallied, held or not
    for f in FEATURES:
        if f.kind == "categorical":
            uniq, counts = np.unique(whole[f.name], return_counts=True)
            assert streamed.tallies[f.name] == {u: c for u, c in zip(uniq, counts, strict=True) if u}, f.name


def test_the_vocabularies_of_a_streamed_split_are_those_of_its_whole_read(whole_and_streamed):
    whole, streamed = whole_and_streamed
    config = TrainConfig(retrieval={"min_count": 2})
    assert fit.vocabularies(streamed, config) == fit.vocabularies(whole, config)


def test_a_window_cut_streams_exactly_the_rows_it_holds(whole_and_streamed):
    whole, streamed = whole_and_streamed
    cut = float(np.median(whole["ts"]))
    later = streamed.between(start=cut)
    assert 0 < len(later) < len(streamed) and later.source.start == cut
    names = ("ts", "item_id", "label_click")
    got = [batch for batch in dataset(later, names, dict, 1000, 0, buffer=10, shuffle=False).as_numpy_iterator()]
    ts = np.concatenate([b["ts"] for b in got])
    assert len(ts) == len(later) and ts.min() >= cut
    held = later.take(np.lexsort((later["item_id"].astype(str), later["ts"])))
    order = np.lexsort((np.concatenate([b["item_id"] for b in got]).astype(str), ts))
    np.testing.assert_array_equal(ts[order], held["ts"])
    assert int(np.concatenate([b["label_click"] for b in got]).sum()) == int(later["label_click"].sum())


def test_a_cut_reads_only_the_files_with_requests_in_its_window(tiny_ingest):
    folders = [posixpath.join(tiny_ingest, split) for split in ("train", "eval")]
    both = stream_examples(folders)
    train_files, eval_files = (set(example_files(f)) for f in folders)
    assert set(both.source.files) == train_files | eval_files and len(both.source.spans) == len(both.source.files)
    eval_start = float(read_examples(folders[1])["ts"].min())
    for part, files in ((both.between(start=eval_start), eval_files), (both.between(end=eval_start), train_files)):
        assert set(part.source.files) == files
        streamed = sum(len(b["ts"]) for b in dataset(part, ("ts",), dict, 4096, 0, buffer=1).as_numpy_iterator())
        assert streamed == len(part) > 0
    assert both.between(start=float(both["ts"].max()) + 1).source.files == ()


def test_a_bounded_shuffle_buffer_still_yields_every_example_once_per_epoch(whole_and_streamed):
    _, streamed = whole_and_streamed
    ds = dataset(streamed, ("request_id", "item_id"), dict, 4096, 0, buffer=500)
    for _ in range(2):  # two epochs: each a new order, each every example once
        keys = [f"{r}|{i}" for b in ds.as_numpy_iterator() for r, i in zip(b["request_id"], b["item_id"], strict=True)]
        assert len(keys) == len(set(keys)) == len(streamed)
    first = next(iter(ds))["request_id"].numpy()
    assert not np.array_equal(first, streamed["request_id"][: len(first)].astype(bytes)), "not shuffled"


def test_each_epoch_reads_the_files_in_a_new_order_the_same_for_every_worker(whole_and_streamed):
    """Ingest's files are each in time order: read in their listed order, an epoch of several weeks would run from
    the oldest to the newest. Shuffled, the files come in a new order each epoch, seeded (every worker alike)."""
    _, streamed = whole_and_streamed
    files = list(streamed.source.files)
    assert len(files) > 2
    alone = {f: np.concatenate([b["ts"] for b in batches(Source((f,)), ("ts",))
                                .as_numpy_iterator()]) for f in files}

    def orders(seed: int | None) -> list[list[str]]:
        """Each epoch's files, matched as the runs of request times the epoch reads."""
        ds = batches(streamed.source, ("ts",), seed=seed)
        out = []
        for _ in range(2):
            ts, order, at = np.concatenate([b["ts"] for b in ds.as_numpy_iterator()]), [], 0
            while at < len(ts):
                f = next(f for f in files if f not in order and np.array_equal(ts[at:at + len(alone[f])], alone[f]))
                order.append(f)
                at += len(alone[f])
            out.append(order)
        return out

    assert orders(None) == [files, files]
    one = orders(7)
    assert one == orders(7)  # seeded: the same orders on every worker and every run
    assert one[0] != one[1] and sorted(one[0]) == sorted(one[1]) == sorted(files)


def test_training_reads_the_training_split_by_streaming_and_the_evaluation_whole(tiny_ingest):
    data = load([tiny_ingest], validation_days=1)
    for split in (data.train, data.fit, data.validation):
        assert split.source is not None and "country" not in split.columns
    assert data.fit.source.end == data.validation.source.start
    assert "country" in data.eval.columns and data.eval.source is None
    assert len(data.fit) + len(data.validation) == len(data.train)


def test_a_model_fitted_on_streamed_rows_is_the_one_fitted_on_the_same_rows_held(tiny_ingest):
    """The same rows in the same order (the held rows in the files' order of the first epoch: a buffer of one
    shuffles nothing else), a buffer as large as the split: the same batches, the same first epoch. (A second
    epoch reads the files in a new order, which held rows cannot follow.)"""
    data = load([tiny_ingest], validation_days=0)
    config = TrainConfig(retrieval={"epochs": 1}, ranking={"epochs": 1}, validation_days=0)
    assert len(data.train.source.files) > 1
    names = (*fit.FEATURES, "position", *(f"label_{h}" for h in fit.LABELS))
    fit.seed_everything(0)  # the global seed the fits below start from (an op's seed pairs with it)
    parts = list(dataset(data.train, names, dict, 4096, config.seed, buffer=1).as_numpy_iterator())
    held = Examples({n: np.concatenate([p[n] for p in parts]) for n in names})  # no source: the held path
    histories = []
    for rows in (data.train, held):
        fit.seed_everything(0)
        histories.append(fit.fit_ranking(rows, fit.vocabularies(data.train, config), config).history)
    assert len(held) == len(data.train) and len(histories[0]) == 1
    assert histories[0][0]["loss"] == pytest.approx(histories[1][0]["loss"], rel=1e-5), histories
    tf.keras.backend.clear_session()


def test_the_softmax_inputs_of_a_streamed_split_weigh_and_sample_as_the_held_columns_say(tiny_ingest):
    """The softmax path (interaction logs): positives only, IPS x recency weights and log-Q sampling
    probabilities computed per batch from whole-split constants equal the numpy formulas over the held columns."""
    data = load([tiny_ingest], validation_days=0)
    config = TrainConfig(retrieval={"loss": "softmax", "exposure_correction": True, "ips_cap": 10.0,
                                    "recency_half_life_days": 3.0, "impression_loss_weight": 0.5, "epochs": 1})
    train, end = data.train, float(data.train["ts"].max())
    got = list(fit._positives(train, config, end, 0, shuffle=False).as_numpy_iterator())
    positive = train["label_click"] == 1
    weight = np.concatenate([b["weight"] for b in got])
    assert len(weight) == int(positive.sum())
    expected = (fit.ips_weights(train["propensity"][positive], 10.0)
                * fit.recency_weights(train["ts"][positive], end, 3.0))
    np.testing.assert_allclose(np.sort(weight), np.sort(expected), rtol=1e-5)
    items, q = (np.concatenate([b[k] for b in got]) for k in ("item_key", "sampling_probability"))
    shown = train["item_id"]
    for item, p in list(zip(items.astype(str), q, strict=True))[:50]:
        share = np.mean(train["item_id"][positive] == item) / np.mean(shown == item)
        assert p == pytest.approx(share, rel=1e-5), item
    fitted = fit.fit_retrieval(train, fit.vocabularies(train, config), config)
    assert fitted.loss == "softmax" and np.isfinite(fitted.history[0]["loss"])
    tf.keras.backend.clear_session()


def test_a_held_integer_column_narrows_only_as_far_as_its_values_fit():
    from recloop.trainer.data import _narrow

    assert _narrow(np.array([0, 1, 127], np.int32)).dtype == np.int8
    wide = _narrow(np.array([0, 200, -129], np.int32))  # a page of 200 slots is not cut to int8
    assert wide.dtype == np.int16 and wide.tolist() == [0, 200, -129]
    assert _narrow(np.array([70_000], np.int32)).dtype == np.int32
    assert _narrow(np.array([0.5], np.float32)).dtype == np.float32
