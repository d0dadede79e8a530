"""The trainer on tiny simulated data: real TFRS training, real SavedModels, real ScaNN.

One model is trained per session (``tiny_model`` in conftest, through the CLI);
these tests read its export, load it in a fresh process, rebuild its index and
feed the correctness checks crafted bad inputs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from recloop.features.catalog import candidate_inputs, embed, read_items
from recloop.features.spec import LABELS
from recloop.trainer import checks, export
from recloop.trainer.config import ConfigError, load_config
from recloop.trainer.data import DataError, Examples, catalog_columns, load


def _json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def test_the_export_holds_both_models_the_index_the_tables_and_a_model_card(tiny_model):
    root = Path(tiny_model)
    for folder in ("query_tower", "candidate_tower", "index", "ranking"):
        assert (root / folder / "saved_model.pb").exists(), folder
    card = _json(root / "model_card.json")
    assert card["version"].startswith("v20260118-")
    assert card["data"]["span"] == {"start": "2026-01-12", "end": "2026-01-18",
                                    "eval_start": "2026-01-18T00:00:00+00:00",
                                    "validation_start": "2026-01-17T00:00:00+00:00"}
    assert card["data"]["train_examples"] > 10_000 and card["data"]["eval_examples"] > 1_000
    # the validation day is held out of `fit`: the models fit the days before it and stop early on it
    assert card["data"]["fit_examples"] + card["data"]["validation_examples"] == card["data"]["train_examples"]
    assert card["data"]["validation_examples"] > 0 and card["data"]["eval_sources"] == []
    assert card["data"]["eval"]["impressions"] == card["data"]["eval_examples"]
    assert card["features"]["training_only"] == ["position"]
    assert "position" not in card["features"]["ranking"]
    assert card["config"]["retrieval"]["epochs"] == 3 and card["config"]["seed"] == 0
    for model in ("retrieval", "ranking"):
        history = card["training"][model]["history"]
        assert 1 <= len(history) <= 3 and all("val_loss" in row for row in history)
        # the kept epoch is the one with the lowest validation loss
        best = card["training"][model]["best_epoch"]
        assert history[best - 1]["val_loss"] == min(row["val_loss"] for row in history)
        assert card["training"][model]["examples_per_second"] > 0
    # simulated logs hold whole pages, so retrieval learns pointwise from every impression
    assert card["training"]["retrieval"]["loss"] == "pointwise"
    assert card["index"]["items"] == card["data"]["catalog_items"]
    assert card["tables"]["member_profiles"] > 0 and card["tables"]["popularity_contexts"] > 0
    profiles_day = json.loads(__import__("gzip").decompress((root / "tables" / "profiles.json.gz").read_bytes()))
    assert profiles_day["day"] == "2026-01-18"


def test_metrics_cover_every_scorer_view_and_cohort_with_their_sizes(tiny_model):
    m = _json(Path(tiny_model) / "metrics.json")
    assert set(m["scorers"]) == {"model", "popularity", "recent_popularity", "oracle"}
    e = m["eval"]
    assert e["start"] == "2026-01-18T00:00:00+00:00" and e["sources"][0].endswith("week1")
    assert e["impressions"] > 1_000 and 0 < e["members"] <= e["requests"] <= e["impressions"]
    assert 0 < e["requests_with_click"] <= e["requests"] and e["positives"]["click"] >= e["requests_with_click"]
    for name, r in m["scorers"].items():
        for view in ("logged", "explored"):
            overall = r["retrieval"][view]["overall"]
            assert overall["positives"] > 0, (name, view)
            assert 0 <= overall["recall@10"] <= overall["recall@50"] <= overall["recall@100"] <= 1
            cohorts = r["retrieval"][view]["cohorts"]
            assert {"member=new", "member=active", "item=new", "item=established"} <= set(cohorts)
            # a cohort always reports its size; an empty one has no figure instead of a made-up one
            for c in cohorts.values():
                assert c["positives"] > 0 or c["recall@100"] is None
            assert cohorts["member=new"]["positives"] + cohorts["member=active"]["positives"] == overall["positives"]
        ranking = r["ranking"]["overall"]
        for head in LABELS:
            assert 0 <= ranking[f"auc_{head}"] <= 1
        assert 0 < ranking["ndcg@10"] <= 1 and 0 < ranking["ndcg@10_debiased"] <= 1
        # every figure says how sure it is
        figures = [k for k, v in ranking.items() if isinstance(v, float) and not k.endswith("_se")]
        assert figures and all(0 < ranking[f"{k}_se"] < 0.2 for k in figures), (name, ranking)
        for view in ("logged", "explored", "expected"):
            assert 0 < r["retrieval"][view]["overall"]["recall@100_se"] < 0.2, (name, view)
        bias = r["retrieval"]["popularity_bias"]
        assert 1 <= bias["items_for_50pct"] <= bias["items_for_90pct"] <= bias["distinct_items"]
    # ranking by the true click probability maximises the expected view: nothing may beat the oracle there
    expected = {name: r["retrieval"]["expected"]["overall"]["recall@100"] for name, r in m["scorers"].items()}
    assert expected["oracle"] >= max(expected["model"], expected["popularity"]) - 1e-9
    assert 0 < expected["popularity"] < 1
    # the oracle knows the hidden relevance: it must rank the logged impressions better than popularity
    assert m["scorers"]["oracle"]["ranking"]["overall"]["auc_click"] > \
        m["scorers"]["popularity"]["ranking"]["overall"]["auc_click"]
    seen = m["examination"]
    assert seen[0] == 1 and seen[9] < 0.8 and all(a >= b for a, b in itertools.pairwise(seen))
    assert set(m["ratios"]) == {"retrieval_recall@100_explored", "retrieval_recall@100_logged",
                                "ranking_ndcg@10_debiased", "ranking_ndcg@10", "ranking_auc_click_explored"}
    for figure, by_scorer in m["ratios"].items():
        assert set(by_scorer) == {"model", "recent_popularity", "oracle"}, figure
        for r in by_scorer.values():
            assert 0 < r["low"] < r["ratio"] < r["high"], (figure, r)
            assert r["difference_low"] < r["difference"] < r["difference_high"] and r["requests"] > 0
    # the oracle ranks the logged impressions better than popularity, and the paired interval says so
    assert m["ratios"]["ranking_auc_click_explored"]["oracle"]["low"] > 1
    recent = m["recent_popularity"]
    assert recent["chosen_on"] == "validation" and recent["validation_start"] == "2026-01-17"
    assert set(recent["candidates"]) == {"1", "3", "7", "14", "28", "91", "182", "365", "all"}
    assert recent["validation_recall@100"] == max(recent["candidates"].values())
    card = _json(Path(tiny_model) / "model_card.json")
    assert card["metrics"]["recent_popularity"]["window_days"] == recent["window_days"]
    assert card["metrics"]["ratios"] == m["ratios"]


def test_exports_load_in_a_fresh_process_with_tensorflow_and_scann_only(tiny_model):
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import scann, tensorflow as tf
        root = {tiny_model!r}
        query = dict(member_id=["m0000001", "a-member-nobody-saw"], tenure_days=[30, -1], country=["US", ""],
                     preferred_category=["yoga", ""], hour_of_day=[7, 21], day_of_week=[0, 6],
                     platform=["ios", "a-new-platform"])
        item = dict(item_id=["i000001", "i999999"], category=["yoga", "boxing"], creator=["c00001", "new"],
                    duration_min=[20.0, 45.0], language=["en", "de"], age_days=[3, 0])
        def tensors(d):
            kinds = {{float: tf.float32, int: tf.int64, str: tf.string}}
            return {{k: tf.constant(v, kinds[type(v[0])]) for k, v in d.items()}}
        found = tf.saved_model.load(root + "/index").signatures["serving_default"](**tensors(query))
        heads = tf.saved_model.load(root + "/ranking").signatures["serving_default"](**tensors(query | item))
        q = tf.saved_model.load(root + "/query_tower").signatures["serving_default"](**tensors(query))
        c = tf.saved_model.load(root + "/candidate_tower").signatures["serving_default"](**tensors(item))
        assert not [m for m in sys.modules if m.startswith("recloop") or m.startswith("tensorflow_recommenders")]
        print(found["item_ids"].shape, found["scores"].shape, q["embedding"].shape, c["embedding"].shape)
        for k in ("click", "complete", "like", "score"):
            v = heads[k].numpy()
            assert v.shape == (2,) and ((v >= 0) & (v <= 1)).all(), (k, v)
        print(sorted(set(found["item_ids"].numpy().ravel().tolist()))[:1])
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    card = _json(Path(tiny_model) / "model_card.json")
    k = card["index"]["k"]
    assert f"(2, {k}) (2, {k}) (2, 32) (2, 32)" in out.stdout
    assert "[b'i" in out.stdout


def test_rebuilding_the_index_with_a_new_item_makes_it_retrievable(tiny_model, tiny_ingest, tmp_path):
    import shutil

    import tensorflow as tf

    export_dir = tmp_path / "export"
    shutil.copytree(tiny_model, export_dir)
    items = read_items(f"{tiny_ingest}/items/items.jsonl.gz")
    new = {"item_id": "i777777", "category": "yoga", "creator": items[0]["creator"], "duration_min": 10.0,
           "language": "en", "release_date": "2026-01-19"}
    day = dt.date(2026, 1, 19)
    catalog = catalog_columns([*items, new])
    query = {"member_id": ["m0000001"] * 24, "tenure_days": [100] * 24, "country": ["US"] * 24,
             "preferred_category": ["yoga"] * 24, "hour_of_day": list(range(24)), "day_of_week": [0] * 24,
             "platform": ["ios"] * 24}
    index = tf.saved_model.load(str(export_dir / "index")).signatures["serving_default"]
    before = index(**{k: tf.constant(np.array(v)) for k, v in query.items()})["item_ids"].numpy()
    assert b"i777777" not in before

    record = export.build_index(str(export_dir), catalog, day, k=len(catalog))
    assert record["items"] == len(items) + 1 and record["day"] == "2026-01-19"
    assert _json(export_dir / "index.json") == record
    index = tf.saved_model.load(str(export_dir / "index")).signatures["serving_default"]
    after = index(**{k: tf.constant(np.array(v)) for k, v in query.items()})
    ids, scores = after["item_ids"].numpy(), after["scores"].numpy()
    assert (ids == b"i777777").sum() == 24  # every query can reach it
    # and the index scores it like the saved towers do: it was embedded from its metadata
    q = tf.saved_model.load(str(export_dir / "query_tower")).signatures["serving_default"]
    c = tf.saved_model.load(str(export_dir / "candidate_tower")).signatures["serving_default"]
    features = candidate_inputs(catalog.take(np.array([len(catalog) - 1])).columns, day)
    exact = embed(q, {k: np.array(v) for k, v in query.items()}) @ embed(c, features).T
    got = scores[ids == b"i777777"]
    np.testing.assert_allclose(got, exact[:, 0], rtol=0.05, atol=0.05)


def _rows(n: int = 200, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    return Examples({
        "request_id": np.array([f"r{i // 10}" for i in range(n)]), "item_id": np.array([f"i{i % 10}" for i in range(n)]),
        "ts": np.repeat(np.arange(n // 10), 10).astype(np.int64) + 1000,
        "position": np.tile(np.arange(10), n // 10).astype(np.int64),
        **{f"label_{e}": (rng.random(n) < 0.2).astype(np.int64) for e in ("click", "start", "complete", "like")}})


def test_the_correctness_checks_fire_on_crafted_bad_inputs():
    rows = _rows()
    with pytest.raises(checks.TrainingCheckError, match="'label_click' is a label"):
        checks.check_inputs(["member_id", "label_click"])
    with pytest.raises(checks.TrainingCheckError, match="'ts' is a label or logging column"):
        checks.check_inputs(["ts"])
    with pytest.raises(checks.TrainingCheckError, match="not in the feature spec"):
        checks.check_inputs(["watched_seconds"])
    leaky = Examples(rows.columns | {"position": rows["label_like"].copy()})
    with pytest.raises(checks.TrainingCheckError, match="'position' equals 'label_like'"):
        checks.check_no_label_copies(leaky, ["position"])
    checks.check_no_label_copies(rows, ["position"])  # an honest position passes
    with pytest.raises(checks.TrainingCheckError, match=r"20 \(request_id, item_id\) pairs.*\(r0, i0\)"):
        checks.check_unique_pairs(Examples.concat([rows, rows.take(np.arange(20))]), "train")
    later = Examples(rows.columns | {"ts": rows["ts"] + 10_000})
    checks.check_time_order(rows, later)
    with pytest.raises(checks.TrainingCheckError, match="not after the last training example"):
        checks.check_time_order(later, rows)
    with pytest.raises(checks.TrainingCheckError, match=r"ranking click: 1 scores outside \[0, 1\]"):
        checks.check_scores("ranking", {"click": np.array([0.2, 1.5]), "score": np.array([0.1, 0.2])})


def test_training_fails_loudly_on_overlapping_weeks_and_bad_folders(tiny_ingest, tmp_path):
    with pytest.raises(DataError, match="same span"):
        load([tiny_ingest, tiny_ingest])
    with pytest.raises(DataError, match="no summary.json"):
        load([str(tmp_path)])


def test_config_files_and_overrides_are_validated(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("retrieval:\n  embedding_dim: 16\nranking:\n  cross: full\n")
    cfg = load_config(path, retrieval__epochs=2, seed=None)
    assert (cfg.retrieval.embedding_dim, cfg.retrieval.epochs, cfg.ranking.cross) == (16, 2, "full")
    assert cfg.fingerprint() != load_config().fingerprint()
    path.write_text("ranking:\n  score_weights: {click: 1.0}\n")
    with pytest.raises(ConfigError, match="one weight per head"):
        load_config(path)
    path.write_text("retrieval:\n  embeding_dim: 16\n")
    with pytest.raises(ConfigError, match=r"retrieval\.embeding_dim: Extra inputs"):
        load_config(path)


def test_the_same_seed_trains_the_same_model(tiny_ingest):
    from recloop.trainer import fit

    data = load([tiny_ingest])
    config = load_config(retrieval__epochs=1, ranking__epochs=1)
    weights = []
    for _ in range(2):
        fit.seed_everything(config.seed)
        model = fit.fit_retrieval(data.train, fit.vocabularies(data.train, config), config).model
        weights.append([w.numpy() for w in model.candidate_tower.weights])
    assert len(weights[0]) > 4
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_cli_refuses_an_existing_export_and_reports_bad_data_without_a_traceback(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from recloop.cli.app import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", tiny_model])
    assert result.exit_code == 1 and "exists; pass" in result.output
    assert (Path(tiny_model) / "model_card.json").exists()
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no summary.json" in result.output and not (tmp_path / "x").exists()
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "x"),
                                      "--positives", "view"])
    assert result.exit_code == 2 and "retrieval.positives" in result.output


def test_validation_statistics_and_schema_are_copied_into_the_export(tmp_path):
    from recloop.trainer.train import _copy_validation

    run = tmp_path / "validate"
    (run / "stats").mkdir(parents=True)
    (run / "stats" / "train.pb").write_bytes(b"stats")
    (run / "schema.pbtxt").write_text("feature {}")
    record = _copy_validation(str(run), str(tmp_path / "export" / "validation"))
    assert record == {"source": str(run), "files": ["stats/train.pb", "schema.pbtxt"]}
    assert (tmp_path / "export" / "validation" / "stats" / "train.pb").read_bytes() == b"stats"
    with pytest.raises(FileNotFoundError, match="recloop validate"):
        _copy_validation(str(tmp_path / "empty"), str(tmp_path / "x"))


def test_retrieval_learns_pointwise_from_pages_and_by_softmax_from_interaction_logs():
    from recloop.trainer.fit import pointwise_loss

    pages = _rows()
    interactions = pages.take(pages["label_click"] == 1)
    assert pointwise_loss(pages, load_config()) and not pointwise_loss(interactions, load_config())
    # a few impressions whose click arrived outside the attribution window do not make interactions pages
    late = interactions.take(np.arange(len(interactions)))
    late.columns["label_click"] = late["label_click"].copy()
    late.columns["label_click"][: max(1, len(late) // 10)] = 0
    assert not pointwise_loss(late, load_config())
    assert not pointwise_loss(pages, load_config(retrieval__loss="softmax"))
    assert pointwise_loss(interactions, load_config(retrieval__loss="pointwise"))
    with pytest.raises(ConfigError, match=r"retrieval\.loss"):
        load_config(retrieval__loss="listwise")


def test_recency_weights_halve_every_half_life_and_keep_a_mean_of_one():
    from recloop.trainer.fit import recency_weights

    day = 86_400
    ts = np.array([0, 7 * day, 14 * day])
    w = recency_weights(ts, 14 * day, 7.0)
    np.testing.assert_allclose(w / w[-1], [0.25, 0.5, 1.0], rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(recency_weights(ts, 14 * day, None), np.ones(3))


def test_the_window_uses_every_folder_unless_told_and_says_what_it_dropped(tiny_ingest, tmp_path):
    import shutil

    older = tmp_path / "week0"
    shutil.copytree(tiny_ingest, older)
    summary = _json(older / "summary.json")
    summary["span"] = {k: (dt.datetime.fromisoformat(v) - dt.timedelta(days=7)).isoformat()[: len(v)]
                       for k, v in summary["span"].items() if isinstance(v, str)} | {
        k: v for k, v in summary["span"].items() if not isinstance(v, str)}
    (older / "summary.json").write_text(json.dumps(summary))
    lines: list[str] = []
    both = load([tiny_ingest, str(older)], progress=lines.append)
    assert both.sources == [str(older), tiny_ingest] and lines == []
    newest = load([tiny_ingest, str(older)], window_weeks=1, progress=lines.append)
    assert newest.sources == [tiny_ingest]
    assert lines == [f"window_weeks=1: using the newest 1 of 2 --data folders, dropping {[str(older)]}"]


def test_the_item_feed_joins_the_catalog_so_unserved_items_are_indexed(tiny_ingest, tmp_path):
    import gzip

    served = load([tiny_ingest]).catalog
    item = {"item_id": "i_never_served", "category": "yoga", "creator": "c00001", "duration_min": 20.0,
            "language": "en", "release_date": "2026-01-10"}
    feed = tmp_path / "catalog" / "dt=2026-01-18" / "items.jsonl.gz"
    feed.parent.mkdir(parents=True)
    feed.write_bytes(gzip.compress((json.dumps(item) + "\n").encode()))
    for source in (str(feed), str(tmp_path)):  # a feed file, or a root holding catalog/dt=
        catalog = load([tiny_ingest], feed=source).catalog
        assert len(catalog) == len(served) + 1 and "i_never_served" in set(catalog["item_id"])
    with pytest.raises(DataError, match="no item feed"):
        load([tiny_ingest], feed=str(tmp_path / "nowhere.jsonl.gz"))


def test_truth_agreement_ranks_offline_figures_against_the_expected_recall():
    from recloop.trainer.evaluate import truth_agreement

    def scorer(expected: float, explored: float, logged: float) -> dict:
        return {"retrieval": {"expected": {"overall": {"recall@100": expected}},
                              "explored": {"overall": {"recall@100": explored}},
                              "logged": {"overall": {"recall@100": logged}}},
                "ranking": {"overall": {"ndcg@10_debiased": explored, "ndcg@10": logged, "auc_click_explored": None}}}

    results = {"a": scorer(0.1, 0.11, 0.9), "b": scorer(0.2, 0.19, 0.5), "c": scorer(0.3, 0.33, 0.4),
               "d": scorer(0.25, 0.3, 0.45)}
    a = truth_agreement(results, 100, 10)
    assert a["scorers"] == ["a", "b", "c", "d"]
    assert a["recall@100_explored"] == pytest.approx(1.0) and a["recall@100_logged"] == pytest.approx(-1.0)
    assert a["auc_click_explored"] is None  # not measured: no figure rather than a made-up one
    assert truth_agreement({"a": results["a"], "b": results["b"]}, 100, 10)["recall@100_explored"] is None
