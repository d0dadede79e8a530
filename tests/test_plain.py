"""The models served in numpy (``serving.plain``) against the TensorFlow models they come from."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from dataclasses import replace

import numpy as np
import pytest

from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.features.spec import feature
from recloop.serving import plain
from recloop.serving.funnel import Query, load_version, recommend
from recloop.serving.rows import RowsConfig

DAY = dt.date(2026, 1, 19)


def _columns(names, rows=300, seed=0):
    """Raw feature columns like the logs': strings from a small vocabulary, "" and -1 for missing, padded lists."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in names:
        f = feature(n)
        if f.dtype is str:
            words = np.array([f"{n}-{i}" for i in range(12)] + ["", "né"])
            shape = (rows, f.max_length) if f.is_list else (rows,)
            out[n] = rng.choice(words, size=shape)
        else:
            values = rng.integers(-1, 60, size=rows)
            out[n] = values.astype(np.float32 if f.dtype is float else np.int64)
    return out


def _tensors(columns):
    import tensorflow as tf

    return {n: tf.constant(v) for n, v in columns.items()}


@pytest.mark.parametrize("oov", [1, 3])
def test_a_plain_tower_computes_what_the_keras_tower_computes(oov):
    from recloop.trainer import plain as export
    from recloop.trainer.towers import QUERY, fit_vocabs, query_tower

    train = _columns(QUERY, seed=1)
    tower = query_tower(fit_vocabs(train, QUERY, min_count=2), 8, 16, oov_buckets=oov, normalize=True)
    probe = _columns(QUERY, seed=2) | {"member_id": np.array(["never-seen"] * 150 + ["member_id-3"] * 150)}
    want = tower(_tensors(probe)).numpy()
    got = plain.Tower(export.tower_arrays(tower))(probe)["embedding"]
    assert np.abs(want - got).max() < 1e-5
    assert len(np.unique(got[:150].round(5), axis=0)) < 150  # unknown ids land in the OOV slots


@pytest.mark.parametrize("cross", ["full", "low_rank"])
def test_a_plain_ranker_computes_what_the_keras_ranker_computes(cross):
    from recloop.features.spec import LABELS
    from recloop.trainer import plain as export
    from recloop.trainer.config import RankingConfig
    from recloop.trainer.ranking import INPUTS, RankingModel
    from recloop.trainer.towers import fit_vocabs

    config = RankingConfig(cross=cross, deep=(32, 16), embedding_dim=8, serving_position=2)
    model = RankingModel(fit_vocabs(_columns(INPUTS, seed=1), INPUTS), config, oov_buckets=2)
    probe = _columns(INPUTS, seed=3)
    import tensorflow as tf

    p = model(_tensors(probe) | {"position": tf.fill([300], tf.constant(2, tf.int64))}).numpy()
    got = plain.Ranker(export.ranker_arrays(model, config.score_weights, 2, INPUTS))(probe)
    for i, label in enumerate(LABELS):
        assert np.abs(got[label] - p[:, i]).max() < 1e-5
    w = np.array([config.score_weights[label] for label in LABELS])
    assert np.abs(got["score"] - p @ w / w.sum()).max() < 1e-5


@pytest.fixture(scope="module")
def catalog(clean_world):
    return item_columns(read_items(snapshot(clean_world.root, DAY)))


def test_the_server_uses_the_numpy_models_and_they_serve_the_same_pages(tiny_model, catalog):
    version = load_version(tiny_model, catalog, DAY)
    assert version.runtime == "numpy"
    import tensorflow as tf

    def signature(name):
        return plain.tensorflow(tf.saved_model.load(f"{tiny_model}/{name}").signatures["serving_default"])

    reference = replace(version, query_tower=signature("query_tower"), ranker=signature("ranking"),
                        runtime="tensorflow")
    members = [*list(version.profiles)[:15], "m-never-seen"]
    queries = [Query(request_id=f"r-{i}", member_id=m, member={"tenure_days": i, "country": "US" if i % 2 else None,
                                                               "preferred_category": "yoga"},
                     context={"hour_of_day": i % 24, "day_of_week": i % 7, "platform": "ios"}, day=DAY.toordinal())
               for i, m in enumerate(members)]
    # one query at a time: a request's few hundred pairs are ranked in numpy (a batch of thousands in TensorFlow)
    fast = [recommend(version, [q], RowsConfig())[0] for q in queries]
    slow = recommend(reference, queries, RowsConfig())
    for a, b in zip(fast, slow, strict=True):
        assert [(i.row, i.index, i.explored) for i in a.impressions] == [(i.row, i.index, i.explored)
                                                                        for i in b.impressions]
        assert np.allclose([i.propensity for i in a.impressions], [i.propensity for i in b.impressions], atol=1e-6)
        assert np.abs(a.pool.score - b.pool.score).max() < plain.TOLERANCE


def test_the_ranker_runs_in_numpy_for_a_request_and_in_tensorflow_for_a_large_batch():
    calls = []
    model = plain.by_size(lambda f: calls.append("numpy") or {}, lambda f: calls.append("tensorflow") or {}, 100)
    model({"member_id": np.zeros(100)})
    model({"member_id": np.zeros(101)})
    assert calls == ["numpy", "tensorflow"]


def _copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "export")


def test_a_plain_model_that_disagrees_with_its_savedmodel_is_not_served(tiny_model, catalog, tmp_path, caplog):
    export = _copy(tiny_model, tmp_path)
    path = export / "ranking" / plain.FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["heads/bias"] = arrays["heads/bias"] + 0.01  # a stale or mis-exported weight
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    version = load_version(str(export), catalog, DAY)
    assert version.runtime == "tensorflow"
    assert "ranking: the plain model differs from the SavedModel by" in caplog.text
    pages = recommend(version, [Query(request_id="r", member_id="m", member={}, context={}, day=DAY.toordinal())],
                      RowsConfig())
    assert len(pages[0].impressions) == 40


def test_an_export_without_plain_arrays_is_served_with_tensorflow(tiny_model, catalog, tmp_path):
    export = _copy(tiny_model, tmp_path)
    (export / "query_tower" / plain.FILE).unlink()
    assert load_version(str(export), catalog, DAY).runtime == "tensorflow"
