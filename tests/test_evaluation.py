"""An evaluation that can be trusted: the evaluation set sized by days or a separate ingest, the
validation split, standard errors and paired ratios, the recent-popularity baseline, and the gate's
checks on intervals. Small hand-made ingest outputs and metric sets; the trained model's figures are
checked in test_trainer.py and test_gate.py."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from recloop.features.examples import COLUMNS, to_serialized
from recloop.features.spec import missing_value
from recloop.trainer import evaluate
from recloop.trainer.data import DataError, Examples, load
from recloop.trainer.gate import flat_metrics, judge
from recloop.trainer.gate_config import GateConfig, OffPolicyConfig, Threshold
from recloop.trainer.gate_summary import summary
from recloop.trainer.scorers import choose_recent_window, counts_scorers, recent_popularity

START = dt.date(2026, 1, 5)
ITEMS = [f"i{n}" for n in range(8)]  # shown, one of them clicked a day
CATALOG = [*ITEMS, *(f"x{n:02d}" for n in range(32))]  # and never shown (ScaNN needs more than a handful)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _ingest(root: Path, start: dt.date, days: int = 7, eval_days: int = 1, requests: int = 4) -> str:
    """A finished ingest output: ``requests`` a day of 3 impressions each, the last ``eval_days`` days eval.

    Item ``i<day>`` is clicked at the top of every request of its day, so recent popularity can be told apart.
    """
    end = start + dt.timedelta(days=days - 1)
    eval_start = _midnight(end + dt.timedelta(days=1 - eval_days))
    splits: dict[str, list[dict]] = {"train": [], "eval": []}
    for d in range(days):
        day = start + dt.timedelta(days=d)
        for r in range(requests):
            ts = _midnight(day) + dt.timedelta(minutes=60 + r * (22 * 60 // requests))
            for position in range(3):
                row = {name: 0 if name.startswith("label_") else missing_value(kind) for name, kind in COLUMNS.items()}
                row |= {"request_id": f"r{day:%m%d}-{r}", "ts": int(ts.timestamp()), "member_id": f"m{r}",
                        "item_id": ITEMS[(day.toordinal() + position) % len(ITEMS)], "position": position,
                        "label_click": int(position == 0), "propensity": 0.05 if position == 2 else 0.95,
                        "explored": int(position == 2),
                        "platform": "ios", "hour_of_day": ts.hour, "day_of_week": ts.weekday()}
                splits["train" if ts < eval_start else "eval"].append(row)
    folder = root / f"ingest-{start}-{days}"
    for split, rows in splits.items():
        (folder / split).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / split / "part-00000.tfrecord.gz"), options="GZIP") as w:
            for record in to_serialized(rows):
                w.write(record)
    (folder / "items").mkdir()
    items = [{"item_id": i, "category": "yoga", "creator": "c1", "duration_min": 20.0, "language": "en",
              "release_date": "2025-12-01"} for i in CATALOG]
    (folder / "items" / "items.jsonl.gz").write_bytes(gzip.compress("".join(
        json.dumps(i) + "\n" for i in items).encode()))
    span = {"start": start.isoformat(), "end": end.isoformat(), "eval_start": eval_start.isoformat()}
    (folder / "summary.json").write_text(json.dumps({"status": "ok", "span": span}))
    return str(folder)


def _days(examples: Examples) -> set[str]:
    return {dt.datetime.fromtimestamp(int(t), dt.UTC).date().isoformat() for t in examples["ts"]}


# ------------------------------------------------------------------------------ the evaluation set


def test_by_default_the_newest_eval_split_is_evaluated_and_its_last_training_day_validates(tmp_path):
    weeks = [_ingest(tmp_path, START), _ingest(tmp_path, START + dt.timedelta(days=7))]
    data = load(weeks[::-1])
    assert _days(data.eval) == {"2026-01-18"}
    assert _days(data.validation) == {"2026-01-17"}
    assert max(_days(data.fit)) == "2026-01-16" and len(data.fit) + len(data.validation) == len(data.train)
    assert data.span == {"start": "2026-01-05", "end": "2026-01-18", "eval_start": "2026-01-18T00:00:00+00:00",
                         "validation_start": "2026-01-17T00:00:00+00:00"}
    sizes = data.sizes()
    assert (sizes["eval_examples"], sizes["validation_examples"], sizes["fit_examples"]) == (12, 12, 12 * 12)
    assert "validation_note" not in sizes and data.sources == weeks and data.eval_sources == []
    assert data.eval_from == weeks[1:]


def test_eval_days_takes_the_last_days_of_every_split_and_trains_on_what_came_before(tmp_path):
    weeks = [_ingest(tmp_path, START), _ingest(tmp_path, START + dt.timedelta(days=7))]
    data = load(weeks, eval_days=3, validation_days=2)
    assert _days(data.eval) == {"2026-01-16", "2026-01-17", "2026-01-18"}  # train splits' days too
    assert max(_days(data.train)) == "2026-01-15" and data.train["ts"].max() < data.eval["ts"].min()
    assert _days(data.validation) == {"2026-01-14", "2026-01-15"}
    assert data.span["eval_start"] == "2026-01-16T00:00:00+00:00"
    assert data.span["validation_start"] == "2026-01-14T00:00:00+00:00"
    # the old week's eval split is training data; only the window of weeks is read
    assert "2026-01-11" in _days(data.train) and data.eval_from == weeks[1:]
    assert load(weeks, eval_days=10).eval_from == weeks
    assert min(_days(load(weeks, window_weeks=1, eval_days=3).train)) == "2026-01-12"
    with pytest.raises(DataError, match="the training split is empty"):
        load(weeks, window_weeks=1, eval_days=7)


def test_a_separate_eval_ingest_is_the_evaluation_set_and_must_come_after_training(tmp_path):
    week0, week1 = _ingest(tmp_path, START), _ingest(tmp_path, START + dt.timedelta(days=7), eval_days=2)
    data = load([week0], eval_dirs=[week1])
    assert _days(data.eval) == {f"2026-01-{d}" for d in range(12, 19)}  # its train and eval splits
    assert _days(data.train) == {f"2026-01-{d:02d}" for d in range(5, 12)}  # week 0's eval day included
    assert _days(data.validation) == {"2026-01-11"}
    assert data.span == {"start": "2026-01-05", "end": "2026-01-18", "eval_start": "2026-01-12T00:00:00+00:00",
                         "validation_start": "2026-01-11T00:00:00+00:00"}
    assert data.sources == [week0] and data.eval_sources == data.eval_from == [week1]
    with pytest.raises(DataError, match=r"--eval-data \[.*ingest-2026-01-05-7'\] starts 2026-01-05, before the "
                                        r"training data \[.*ingest-2026-01-12-7'\] ends \(2026-01-18\)"):
        load([week1], eval_dirs=[week0])
    with pytest.raises(DataError, match="both choose the evaluation set"):
        load([week0], eval_days=2, eval_dirs=[week1])


def test_a_validation_split_that_would_leave_nothing_to_fit_is_empty_and_says_so(tmp_path):
    week = _ingest(tmp_path, START)
    data = load([week], validation_days=6)
    assert len(data.validation) == 0 and len(data.fit) == len(data.train)
    assert data.span["validation_start"] is None
    assert "would leave nothing to fit" in data.sizes()["validation_note"]
    none = load([week], validation_days=0)
    assert len(none.validation) == 0 and none.span["validation_start"] is None
    assert "validation_note" not in none.sizes()


def test_on_sparse_logs_the_validation_split_grows_to_hold_enough_positives_within_a_quarter(tmp_path):
    week = _ingest(tmp_path, START, days=14, eval_days=1)  # 13 training days, 4 clicks a day
    exact = load([week], validation_days=1)
    assert exact.span["validation_start"] == "2026-01-17T00:00:00+00:00" and "validation_note" not in exact.sizes()
    grown = load([week], validation_days=1, validation_min_positives=10)  # 3 days hold 12 clicks
    assert grown.span["validation_start"] == "2026-01-15T00:00:00+00:00"
    assert (grown.validation["label_click"] == 1).sum() == 12 and len(grown.fit) + len(grown.validation) == len(grown.train)
    assert "validation split of 3 days (not 1) to hold 10 positives" in grown.sizes()["validation_note"]
    capped = load([week], validation_days=1, validation_min_positives=10_000)  # a quarter of 13 days: 3 days
    assert capped.span["validation_start"] == "2026-01-15T00:00:00+00:00"
    assert len(capped.validation) <= len(capped.train) / 4


def test_recloop_train_evaluates_on_a_separate_ingest_and_prints_intervals_and_sizes(tmp_path):
    from typer.testing import CliRunner

    from recloop.cli.app import app

    week0 = _ingest(tmp_path, START, requests=30)
    week1 = _ingest(tmp_path, START + dt.timedelta(days=7), requests=30)
    runner, out = CliRunner(), tmp_path / "model"
    early = runner.invoke(app, ["train", "--data", week1, "--eval-data", week0, "--out", str(out)])
    assert early.exit_code == 1 and "before the training data" in " ".join(early.output.split())
    assert not out.exists()
    empty = runner.invoke(app, ["train", "--data", week0, "--eval-days", "7", "--out", str(out)])
    assert empty.exit_code == 1 and "the training split is empty" in " ".join(empty.output.split())
    assert runner.invoke(app, ["train", "--data", week0, "--eval-days", "0", "--out", str(out)]).exit_code == 2

    result = runner.invoke(app, ["train", "--data", week0, "--eval-data", week1, "--validation-days", "2",
                                 "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = " ".join(result.output.split())
    assert "± the 95% interval" in text and "eval set from 2026-01-12T00:00:00+00:00" in text
    assert "630 impressions, 210 requests, 30 members, 210 clicks" in text
    assert "recent_popularity: clicks over the last" in text and "paired on the same requests" in text
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["eval_sources"] == [week1] and card["data"]["sources"] == [week0]
    assert card["data"]["span"]["validation_start"] == "2026-01-10T00:00:00+00:00"
    assert card["data"]["validation_examples"] == 2 * 90 and card["config"]["validation_days"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["sources"] == [week1] and metrics["eval"]["requests"] == 210
    assert metrics["confidence"] == 0.95 and set(metrics["ratios"]["ranking_ndcg@10"]) == {"model", "recent_popularity"}
    assert card["metrics"]["recent_popularity"]["chosen_on"] == "validation"


def test_the_gate_needs_the_eval_data_the_candidate_was_evaluated_on(tmp_path):
    from typer.testing import CliRunner

    from recloop.cli.app import app
    from recloop.trainer.config import TrainConfig

    week0 = _ingest(tmp_path, START)
    week1 = _ingest(tmp_path, START + dt.timedelta(days=7))
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    data = load([week0], eval_dirs=[week1])
    (candidate / "model_card.json").write_text(json.dumps({
        "version": "v1", "config": TrainConfig().model_dump(mode="json"),
        "data": {"span": data.span, "sources": [week0], "eval_sources": [week1]}}))
    result = CliRunner().invoke(app, ["evaluate", "--candidate", str(candidate), "--data", week0, "--registry",
                                      str(tmp_path / "registry"), "--out", str(tmp_path / "gate")])
    assert result.exit_code == 2 and "pass the same --eval-data as to train" in " ".join(result.output.split())
    # with it, the gate holds out what the candidate held out (and goes on to load the models, absent here)
    result = CliRunner().invoke(app, ["evaluate", "--candidate", str(candidate), "--data", week0, "--eval-data",
                                      week1, "--registry", str(tmp_path / "registry"), "--out", str(tmp_path / "gate")])
    assert isinstance(result.exception, OSError) and "query_tower" in str(result.exception)


# ------------------------------------------------------------------------------ recent popularity


def test_recent_popularity_counts_clicks_in_the_window_and_its_window_is_chosen_on_validation(tmp_path):
    data = load([_ingest(tmp_path, START, days=14, eval_days=1)], validation_days=1)
    day = dt.date(2026, 1, 18)
    # each day's top item is i<ordinal % 8>, clicked 4 times that day
    yesterday = recent_popularity(data.train, day, 1)
    assert yesterday == {ITEMS[(day.toordinal() - 1) % 8]: 4.0}
    assert sum(recent_popularity(data.train, day, None).values()) == 13 * 4
    assert sum(recent_popularity(data.train, day, 3).values()) == 3 * 4
    chosen = choose_recent_window(data.fit, data.validation, data.catalog, dt.date(2026, 1, 17), "click")
    assert chosen["chosen_on"] == "validation" and chosen["validation_positives"] == 4
    assert set(chosen["candidates"]) == {"1", "3", "7", "14", "28", "91", "182", "365", "all"}
    assert chosen["validation_recall@100"] == max(chosen["candidates"].values())
    # the catalog has 40 items, so recall@100 is 1 for every window and the shortest wins the tie
    assert chosen["window_days"] == 1
    retrieve, rank = counts_scorers(yesterday)
    scores = retrieve(data.eval.take(np.arange(2)), data.catalog)
    assert scores.shape == (2, len(CATALOG)) and (scores[0] == scores[1]).all() and scores.max() == 4
    assert rank(data.validation)["score"].max() == 4 and rank(data.eval)["score"].max() == 0
    nothing = choose_recent_window(data.fit, data.validation.take(np.arange(0)), data.catalog, None, "click")
    assert nothing["chosen_on"].startswith("default") and nothing["window_days"] == 7


def test_the_window_is_chosen_by_recall_on_validation(tmp_path):
    data = load([_ingest(tmp_path, START, days=14, eval_days=1)], validation_days=1)
    k1 = choose_recent_window(data.fit, data.validation, data.catalog, dt.date(2026, 1, 17), "click", k=1)
    # validation's clicked item is the one clicked 8 days before (8 items cycle): the 14-day window is the
    # first that ranks it first alone; the 28-day and all-days windows give the same counts
    assert k1["candidates"]["1"] == 0 and k1["candidates"]["14"] == k1["candidates"]["all"]
    assert k1["window_days"] == min(int(w) for w, r in k1["candidates"].items() if w != "all"
                                    and r == k1["validation_recall@1"])


# ------------------------------------------------------------------------------ standard errors, paired ratios


def _rows(n_requests: int = 60, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    n = n_requests * 5
    explored = rng.random(n) < 0.3
    return Examples({
        "request_id": np.repeat([f"r{i:03d}" for i in range(n_requests)], 5),
        "member_id": np.repeat([f"m{i % 20}" for i in range(n_requests)], 5),
        "item_id": np.array([f"i{i}" for i in rng.integers(0, 30, n)]), "platform": np.full(n, "ios"),
        "position": np.tile(np.arange(5), n_requests), "propensity": np.where(explored, 0.02, 0.9),
        "explored": explored.astype(np.int64),
        **{f"label_{h}": (rng.random(n) < p).astype(np.int64)
           for h, p in (("click", 0.3), ("start", 0.3), ("complete", 0.2), ("like", 0.1))}})


def test_every_ranking_figure_has_a_standard_error_and_scorers_are_compared_paired():
    rows, train = _rows(), _rows(seed=1)
    truth = 0.5 * rows["label_click"] + np.random.default_rng(2).random(len(rows))
    scorers = {"popularity": lambda r: {"score": np.random.default_rng(3).random(len(r))},
               "good": lambda r: {"score": truth}}
    found: dict[str, dict] = {}
    results = {name: evaluate.evaluate_ranking(s, train, rows, 3, np.ones(5), found.setdefault(name, {}))
               for name, s in scorers.items()}
    overall = results["good"]["overall"]
    for metric in ("auc_click", "auc_like_explored", "ndcg@3", "ndcg@3_debiased", "map@3"):
        assert 0 < overall[f"{metric}_se"] < 0.2, metric
        assert found["good"][f"ranking_{metric}"].value == overall[metric]
    assert overall["ndcg@3_se"] == pytest.approx(found["good"]["ranking_ndcg@3"].se)
    assert "auc_click_se" in results["good"]["cohorts"]["member=new"]
    ratios = evaluate.paired_ratios(found, "ranking_ndcg@3", "popularity")
    r = ratios["good"]
    assert r["ratio"] == pytest.approx(overall["ndcg@3"] / results["popularity"]["overall"]["ndcg@3"])
    assert 1 < r["low"] < r["ratio"] < r["high"]
    assert r["difference_low"] > 0 and r["requests"] == overall["requests_with_click"]
    # the ratio's interval is the delta method's on the log scale: symmetric around log(ratio)
    assert math.log(r["high"] / r["ratio"]) == pytest.approx(math.log(r["ratio"] / r["low"]))
    assert evaluate.sizes(rows)["requests"] == 60 and evaluate.sizes(rows)["members"] == 20


# ------------------------------------------------------------------------------ the gate on intervals


def _m(auc: float, se: float | None, support: int = 5000, ndcg: float = 0.3, ndcg_se: float = 0.01) -> dict:
    return {"overall": {"auc_click": auc, "auc_click:se": se, "auc_click:support": support,
                        "ndcg@10_debiased": ndcg, "ndcg@10_debiased:se": ndcg_se,
                        "ndcg@10_debiased:support": 400}}


GATE = GateConfig(thresholds=(
    Threshold(metric="auc_click", min=0.55, max_drop=0.01, min_support=1000),
    Threshold(metric="ndcg@10_debiased", min_vs_popularity=1.0, min_support=200),
), offpolicy=OffPolicyConfig(enabled=False))
POPULARITY = {"overall": {"ndcg@10_debiased": 0.25, "ndcg@10_debiased:se": 0.01}}


def _verdict(checks: list[dict], kind: str, metric: str = "auc_click") -> dict:
    return next(c for c in checks if c["kind"] == kind and c["metric"] == metric)


def test_a_drop_within_the_noise_passes_and_a_drop_the_data_show_fails():
    # 0.02 below production, but the difference's se is sqrt(2) * 0.01: 0.68 + 1.96 * 0.0141 > 0.69
    blessed, checks = judge(GATE, _m(0.68, 0.01), _m(0.70, 0.01), POPULARITY)
    drop = _verdict(checks, "max_drop")
    assert drop["verdict"] == "pass" and blessed
    assert drop["bound"] == pytest.approx(0.68 + 1.959964 * math.sqrt(2) * 0.01, rel=1e-6)
    assert drop["threshold"] == pytest.approx(0.69) and drop["se"] == drop["reference_se"] == 0.01
    blessed, checks = judge(GATE, _m(0.68, 0.002), _m(0.70, 0.002), POPULARITY)
    assert _verdict(checks, "max_drop")["verdict"] == "fail" and not blessed
    # without standard errors the value alone decides, and the note says so
    checks = judge(GATE, _m(0.68, None), _m(0.70, None), POPULARITY)[1]
    drop = _verdict(checks, "max_drop")
    assert drop["verdict"] == "fail" and "no standard error for the candidate and the reference" in drop["note"]
    # a stricter confidence widens the interval: what failed at 95% may pass at 99.9%
    strict = GATE.model_copy(update={"confidence": 0.999})
    for config, verdict in ((strict, "pass"), (GATE, "fail")):
        checks = judge(config, _m(0.685, 0.0015), _m(0.70, 0.0015), POPULARITY)[1]
        assert _verdict(checks, "max_drop")["verdict"] == verdict, config.confidence


def test_a_floor_is_cleared_by_the_lower_bound_not_by_noise():
    checks = judge(GATE, _m(0.56, 0.01), None, POPULARITY)[1]
    floor = _verdict(checks, "min")
    assert floor["verdict"] == "fail" and floor["bound"] == pytest.approx(0.56 - 1.959964 * 0.01, rel=1e-6)
    assert _verdict(judge(GATE, _m(0.60, 0.01), None, POPULARITY)[1], "min")["verdict"] == "pass"
    # the same for a multiple of popularity: 0.27 - 1.96 * 0.02 < 0.25, 0.27 - 1.96 * 0.005 >= 0.25
    noisy = judge(GATE, _m(0.60, 0.01, ndcg=0.27, ndcg_se=0.02), None, POPULARITY)
    assert _verdict(noisy[1], "min_vs_popularity", "ndcg@10_debiased")["verdict"] == "fail" and not noisy[0]
    sure = judge(GATE, _m(0.60, 0.01, ndcg=0.27, ndcg_se=0.005), None, POPULARITY)
    assert _verdict(sure[1], "min_vs_popularity", "ndcg@10_debiased")["verdict"] == "pass" and sure[0]


def test_a_check_without_support_is_skipped_and_never_blesses():
    config = GateConfig(thresholds=(Threshold(metric="auc_click", min=0.55, min_support=1000),),
                        offpolicy=OffPolicyConfig(enabled=False))
    blessed, checks = judge(config, _m(0.9, 0.001, support=47), None, POPULARITY)
    assert checks[0]["verdict"] == "skipped" and "support 47 < min_support 1000" in checks[0]["note"]
    assert not blessed


def test_flat_metrics_carry_every_standard_error_and_the_summary_shows_intervals_and_support():
    rows = _rows()
    result = {"retrieval": {"logged": {"overall": {"recall@10": 0.2, "recall@10_se": 0.05, "positives": 64},
                                       "cohorts": {}},
                            "explored": {"overall": {"recall@10": 0.1, "recall@10_se": 0.04, "positives": 20},
                                         "cohorts": {}}},
              "ranking": evaluate.clean(evaluate.evaluate_ranking(lambda r: {"score": r["position"] * -1.0},
                                                                  rows, rows, 10, np.ones(5)))}
    flat = flat_metrics(result)["overall"]
    metrics = [k for k in flat if ":" not in k]
    assert metrics and all(f"{k}:se" in flat and f"{k}:support" in flat for k in metrics)
    assert flat["map@10:se"] == result["ranking"]["overall"]["map@10_se"] and "map@10_se" not in flat
    assert flat["recall@10_explored:se"] == 0.04
    blessed, checks = judge(GATE, _m(0.70, 0.01), _m(0.70, 0.01), POPULARITY)
    blessing = {"blessed": blessed, "candidate_version": "v2", "production_version": "v1", "failed": [],
                "notes": [], "checks": checks, "config": GATE.model_dump(mode="json"), "z": 1.959964,
                "data": {"span": {"eval_start": "2026-01-18T00:00:00+00:00"}, "eval_examples": 1234,
                         "eval_requests": 99, "eval": {"members": 40, "positives": {"click": 77}}},
                "metrics": {"candidate": _m(0.70, 0.01)["overall"], "production": _m(0.70, 0.01)["overall"]},
                "offpolicy": {"reason": "disabled"}}
    text = summary(blessing)
    assert "99 requests, 40 members, 77 clicks). Figures are ± the 95% interval (z = 1.96)" in text
    assert "| auc_click >= production - 0.01 | overall | 0.7000 ± 0.0196 | 0.7000 ± 0.0196 | 0.6900 | 5,000 |" in text
    assert "| auc_click | 0.7000 ± 0.0196 | 0.7000 ± 0.0196 | 5,000 |" in text


def test_examination_is_fitted_within_rows_whose_explored_items_differ():
    # two rows of 5 slots; the catalog-wide share explores what each row admits, so the second row's explored
    # items are clicked 3x as often: only the within-row position effect is examination
    rng = np.random.default_rng(0)
    n = 200_000
    position = rng.integers(0, 10, n)
    level = np.where(position < 5, 0.05, 0.15)
    clicks = (rng.random(n) < level * (1.0 + position) ** -0.5).astype(np.int64)
    train = Examples({"position": position, "row": np.where(position < 5, "a", "b"), "label_click": clicks,
                      "explored": np.ones(n, np.int64)})
    seen = evaluate.examination(train, 9)
    np.testing.assert_allclose(seen, (1.0 + np.arange(10)) ** -0.5, rtol=0.08)
