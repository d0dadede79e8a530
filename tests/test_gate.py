"""The evaluation gate: check logic on hand-made metric sets, replay of logged pages, and `recloop evaluate`
end to end on the session's tiny model (first run, a worse candidate, push refusing it)."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_version
from typer.testing import CliRunner

from recloop.cli.app import app
from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.serving.funnel import MEMBER_FIELDS, Query, load_version, recommend
from recloop.serving.registry import Registry
from recloop.serving.replay import ReplayError, target_probabilities
from recloop.serving.rows import RowsConfig, RowSpec
from recloop.trainer import metrics
from recloop.trainer.data import DataError
from recloop.trainer.gate import flat_metrics, judge, paired_errors, run
from recloop.trainer.gate_config import (
    DEFAULT_THRESHOLDS,
    INTERACTION_THRESHOLDS,
    GateConfig,
    OffPolicyConfig,
    Threshold,
    thresholds_for,
)

# ------------------------------------------------------------------------------ judge, on hand-made metrics


def _metrics(auc: float = 0.70, recall: float = 0.10, auc_new: float = 0.65, support: int = 5000) -> dict:
    return {"overall": {"auc_click": auc, "auc_click:support": support,
                        "recall@100_explored": recall, "recall@100_explored:support": 400},
            "member=new": {"auc_click": auc_new, "auc_click:support": support // 4}}


CONFIG = GateConfig(thresholds=(
    Threshold(metric="auc_click", min=0.55, max_drop=0.01, min_support=1000),
    Threshold(metric="recall@100_explored", min_vs_popularity=1.0, max_drop=0.01, min_support=200),
    Threshold(metric="auc_click", slice="member=new", max_drop=0.02, min_support=1000),
), offpolicy=OffPolicyConfig(min_ess=500))
POPULARITY = {"overall": {"recall@100_explored": 0.08, "recall@100_explored:support": 400}}


def _verdicts(checks: list[dict]) -> dict[str, str]:
    return {f"{c['kind']}:{c['metric']}[{c['slice']}]": c["verdict"] for c in checks}


def test_first_run_uses_absolute_checks_only():
    blessed, checks = judge(CONFIG, _metrics(), None, POPULARITY)
    v = _verdicts(checks)
    assert blessed
    assert v["min:auc_click[overall]"] == v["min_vs_popularity:recall@100_explored[overall]"] == "pass"
    assert {k for k, verdict in v.items() if k.startswith("max_drop")} == {
        "max_drop:auc_click[overall]", "max_drop:recall@100_explored[overall]", "max_drop:auc_click[member=new]"}
    assert all(c["verdict"] == "skipped" and "first run" in c["note"] for c in checks if c["kind"] == "max_drop")
    below = judge(CONFIG, _metrics(auc=0.52), None, POPULARITY)
    assert not below[0] and _verdicts(below[1])["min:auc_click[overall]"] == "fail"


def test_better_candidate_is_blessed_and_every_check_records_value_threshold_verdict():
    blessed, checks = judge(CONFIG, _metrics(auc=0.72), _metrics(auc=0.70), POPULARITY)
    assert blessed
    drop = next(c for c in checks if c["kind"] == "max_drop" and c["slice"] == "overall" and c["metric"] == "auc_click")
    assert drop["value"] == 0.72 and drop["reference"] == 0.70 and drop["threshold"] == pytest.approx(0.69)
    assert drop["verdict"] == "pass" and drop["support"] == 5000
    assert all({"value", "threshold", "verdict", "reference", "rule", "note"} <= c.keys() for c in checks)


def test_worse_overall_is_rejected():
    blessed, checks = judge(CONFIG, _metrics(auc=0.66), _metrics(auc=0.70), POPULARITY)
    assert not blessed
    assert _verdicts(checks)["max_drop:auc_click[overall]"] == "fail"
    assert _verdicts(checks)["min:auc_click[overall]"] == "pass"  # still above the floor: the drop alone rejects


def test_worse_only_on_a_slice_is_rejected():
    blessed, checks = judge(CONFIG, _metrics(auc=0.71, auc_new=0.60), _metrics(auc=0.70, auc_new=0.65), POPULARITY)
    v = _verdicts(checks)
    assert not blessed
    assert v["max_drop:auc_click[overall]"] == "pass" and v["max_drop:auc_click[member=new]"] == "fail"


def test_small_slices_skip_and_a_gate_that_checked_nothing_does_not_bless():
    blessed, checks = judge(CONFIG, _metrics(auc_new=0.10, support=2000), _metrics(support=2000), POPULARITY)
    assert _verdicts(checks)["max_drop:auc_click[member=new]"] == "skipped"  # 500 impressions < 1000
    assert blessed
    tiny = _metrics(support=10) | {"overall": {"auc_click": 0.9, "auc_click:support": 10}}
    blessed, checks = judge(CONFIG, tiny, None, POPULARITY)
    assert not blessed
    assert _verdicts(checks)["min:auc_click[overall]"] == "skipped"


def test_a_metric_not_measured_fails_its_check():
    config = GateConfig(thresholds=(Threshold(metric="auc_click", min=0.5),
                                    Threshold(metric="recall@200", min=0.1)))
    blessed, checks = judge(config, _metrics(), None, POPULARITY)
    assert not blessed
    failed = next(c for c in checks if c["metric"] == "recall@200")
    assert failed["verdict"] == "fail" and "not measured" in failed["note"]
    undefined = judge(config, _metrics(auc=float("nan")), None, POPULARITY)[1]
    assert _verdicts(undefined)["min:auc_click[overall]"] == "fail"


def test_recent_popularity_is_a_floor_like_popularity_and_interaction_logs_get_their_own_checks():
    config = GateConfig(thresholds=(Threshold(metric="recall@100_explored", min_vs_recent_popularity=1.0),),
                        offpolicy=OffPolicyConfig(enabled=False))
    recent = {"overall": {"recall@100_explored": 0.09, "recall@100_explored:se": 0.002}}
    blessed, checks = judge(config, _metrics(recall=0.10), None, POPULARITY, None, recent)
    assert blessed and _verdicts(checks)["min_vs_recent_popularity:recall@100_explored[overall]"] == "pass"
    assert checks[0]["reference"] == 0.09 and checks[0]["rule"] == ">= 1 x recent popularity"
    assert not judge(config, _metrics(recall=0.085), None, POPULARITY, None, recent)[0]
    unmeasured = judge(config, _metrics(), None, POPULARITY, None, None)[1][0]
    assert unmeasured["verdict"] == "fail" and "baseline's value" in unmeasured["note"]
    # the defaults follow the logs: pages are judged on AUC and debiased NDCG, interactions on recall
    assert thresholds_for(GateConfig(), False) == DEFAULT_THRESHOLDS
    assert thresholds_for(GateConfig(), True) == INTERACTION_THRESHOLDS
    assert thresholds_for(CONFIG, True) == CONFIG.thresholds
    assert {t.metric for t in INTERACTION_THRESHOLDS} == {"recall@100", "recall@10"}


def test_a_drop_inside_each_figures_noise_fails_when_the_difference_is_paired_by_request():
    config = GateConfig(thresholds=(Threshold(metric="auc_click_explored", max_drop=0.0),),
                        offpolicy=OffPolicyConfig(enabled=False))
    candidate = {"overall": {"auc_click_explored": 0.68, "auc_click_explored:se": 0.02}}
    production = {"overall": {"auc_click_explored": 0.70, "auc_click_explored:se": 0.02}}
    unpaired = judge(config, candidate, production, None)[1][0]
    assert unpaired["verdict"] == "pass" and not unpaired["paired"]  # -0.02 ± 0.055: noise
    assert unpaired["difference_se"] == pytest.approx(0.02 * 2 ** 0.5)  # the SE the bound used
    unknown = judge(config, {"overall": {"auc_click_explored": 0.68}}, production, None)[1][0]
    assert unknown["difference_se"] is None and "no standard error for the candidate" in unknown["note"]
    paired = judge(config, candidate, production, None, paired={("overall", "auc_click_explored"): 0.005})[1][0]
    assert paired["verdict"] == "fail" and paired["bound"] == pytest.approx(0.68 + 1.96 * 0.005, abs=1e-4)
    assert paired["difference_se"] == 0.005 and paired["paired"] and "paired by request" in paired["note"]


def test_paired_errors_pair_each_change_check_with_its_figure_and_slice():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=400)  # what the requests share: most of each figure's noise
    requests = np.arange(400)
    candidate = {"ranking_auc_click_explored": metrics.mean_estimate(shared + 0.1 * rng.normal(size=400), requests),
                 "retrieval_recall@10_logged[member=new]": metrics.mean_estimate(shared[:100], requests[:100]),
                 "retrieval_recall@100_explored": metrics.mean_estimate(shared, requests)}
    production = {k: metrics.mean_estimate(shared[:len(e.influence)] + 0.1 * rng.normal(size=len(e.influence)),
                                           requests[:len(e.influence)]) for k, e in candidate.items()}
    thresholds = (Threshold(metric="auc_click_explored", max_drop=0.0),
                  Threshold(metric="recall@10", slice="member=new", max_drop=0.01),
                  Threshold(metric="recall@100_explored", min=0.1),  # no change check: no entry
                  Threshold(metric="ndcg@10", max_drop=0.01))  # not measured: no entry
    got = paired_errors(thresholds, candidate, production)
    assert set(got) == {("overall", "auc_click_explored"), ("member=new", "recall@10")}
    c, p = candidate["ranking_auc_click_explored"], production["ranking_auc_click_explored"]
    assert got[("overall", "auc_click_explored")] < 0.2 * math.hypot(c.se, p.se)
    assert paired_errors(thresholds, candidate, None) == {}


def test_offpolicy_check_needs_enough_effective_samples_and_a_sane_mean_weight():
    est = {"snips": 0.085, "logged_rate": 0.10, "ess": 2000.0, "mean_weight": 1.02}
    v = _verdicts(judge(CONFIG, _metrics(), None, POPULARITY, est)[1])
    assert v["offpolicy:snips_click_rate[overall]"] == "fail"  # 0.085 < 0.10 x 0.95
    assert judge(CONFIG, _metrics(), None, POPULARITY, est | {"snips": 0.097})[0]
    for weak in ({"ess": 100.0}, {"mean_weight": 0.3}):
        checks = judge(CONFIG, _metrics(), None, POPULARITY, est | weak)[1]
        assert _verdicts(checks)["offpolicy:snips_click_rate[overall]"] == "skipped"
    assert _verdicts(judge(CONFIG, _metrics(), None, POPULARITY, None)[1])[
        "offpolicy:snips_click_rate[overall]"] == "skipped"


def test_flat_metrics_reads_the_trainer_evaluation(tiny_model):
    measured = json.loads(Path(tiny_model, "metrics.json").read_text())["scorers"]["model"]
    flat = flat_metrics(measured)
    assert {"overall", "member=new", "member=active", "item=new", "item=established"} <= flat.keys()
    overall = flat["overall"]
    ranking = measured["ranking"]["overall"]
    assert overall["auc_click"] == ranking["auc_click"]
    assert overall["auc_click:support"] == ranking["impressions"]
    assert overall["auc_click_explored:support"] == ranking["explored_impressions"]
    assert overall["ndcg@10_debiased:support"] == ranking["requests_with_click"]
    explored = measured["retrieval"]["explored"]["overall"]
    assert overall["recall@100_explored"] == explored["recall@100"]
    assert overall["recall@100_explored:support"] == explored["positives"]


# ------------------------------------------------------------------------------ replay

DAY = dt.date(2026, 1, 19)


def _pages_as_impressions(pages: list) -> dict[str, np.ndarray]:
    """Pages served by the funnel, flattened as ingest flattens the request log (one row per impression)."""
    cols: dict[str, list] = {c: [] for c in ("request_id", "ts", "member_id", *MEMBER_FIELDS, "hour_of_day",
                                             "day_of_week", "platform", "item_id", "position", "row", "propensity", "explored")}
    ts = int(dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC).timestamp())
    for page in pages:
        q = page.query
        for imp in reversed(page.impressions):  # any order: replay sorts by request and position
            cols["request_id"].append(q.request_id)
            cols["ts"].append(ts)
            cols["member_id"].append(q.member_id)
            for f in MEMBER_FIELDS:
                cols[f].append(q.member[f])
            for f in ("hour_of_day", "day_of_week", "platform"):
                cols[f].append(q.context[f])
            cols["item_id"].append(page.pool.item_id[imp.index])
            cols["position"].append(imp.position)
            cols["explored"].append(int(imp.explored))
            cols["row"].append(imp.row)
            cols["propensity"].append(imp.propensity)
    return {k: np.array(v) for k, v in cols.items()}


def test_replaying_the_serving_version_reproduces_every_logged_propensity(tiny_model, clean_world):
    # loaded days before the requests, as a server that started with the week: item ages are the request day's
    version = load_version(tiny_model, item_columns(read_items(snapshot(clean_world.root, DAY))),
                           DAY - dt.timedelta(days=5))
    members = [*list(version.profiles)[:40], "m-unknown-1"]
    queries = [Query(request_id=f"r-{i}", member_id=m,
                     member={"tenure_days": 30 + i, "country": "US", "preferred_category": "yoga"},
                     context={"hour_of_day": i % 24, "day_of_week": 0, "platform": ("ios", "web", "android")[i % 3]},
                     day=DAY.toordinal(), k=3 + i % 2, rows=None if i % 4 else ["popular_now", "quick"])
               for i, m in enumerate(members)]
    logged = _pages_as_impressions(recommend(version, queries, RowsConfig()))
    replay = target_probabilities(tiny_model, logged, clean_world.root, RowsConfig())
    # only the catalog-wide share shows items the funnel did not retrieve
    assert replay.requests == len(queries) and replay.outside_pool <= int(logged["explored"].sum())
    np.testing.assert_allclose(replay.probability, logged["propensity"], rtol=0, atol=1e-12)
    # a larger catalog share is another policy: every logged item keeps its support, and the items only the
    # catalog-wide share shows (not retrieved) gain in proportion
    other = target_probabilities(tiny_model, logged, clean_world.root, RowsConfig(catalog_share=0.3)).probability
    assert (other > 0).all()
    tail = (logged["explored"] == 1) & (logged["propensity"] < 0.01)
    assert tail.any()
    np.testing.assert_allclose(other[tail] / logged["propensity"][tail], 0.3 / 0.05, rtol=1e-9)


def test_replay_refuses_a_row_the_serving_config_lacks(tiny_model, clean_world):
    config = RowsConfig(rows=(RowSpec(name="popular_now", filter="popular"),))
    logged = {"row": np.array(["popular_now", "for_your_usual"]), "request_id": np.array(["r", "r"])}
    with pytest.raises(ReplayError, match="'for_your_usual' is not a configured row"):
        target_probabilities(tiny_model, logged, clean_world.root, config)


# ------------------------------------------------------------------------------ recloop evaluate, end to end


@pytest.fixture(scope="module")
def weak_model(tiny_ingest, tmp_path_factory) -> str:
    """A worse candidate on the same data: one epoch, another seed."""
    out = str(tmp_path_factory.mktemp("weak") / "export")
    args = ["train", "--data", tiny_ingest, "--out", out, "--epochs", "1", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _evaluate(candidate: str, data: str, registry: Path, out: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["evaluate", "--candidate", candidate, "--data", data, "--registry",
                                      str(registry), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "blessing.json").read_text())


def test_first_run_is_blessed_with_an_offpolicy_estimate(tiny_model, tiny_ingest, clean_world, tmp_path):
    blessing = _evaluate(tiny_model, tiny_ingest, tmp_path / "empty-registry", tmp_path / "gate",
                         "--catalog", clean_world.root)
    assert blessing["blessed"] and blessing["first_run"] and blessing["baseline_version"] is None
    assert blessing["candidate_version"] == json.loads(Path(tiny_model, "model_card.json").read_text())["version"]
    assert {c["verdict"] for c in blessing["checks"] if c["kind"] == "max_drop"} == {"skipped"}
    assert set(blessing["metrics"]) == {"candidate", "popularity", "recent_popularity"}
    assert blessing["logs"] == "pages"
    recent = next(c for c in blessing["checks"] if c["kind"] == "min_vs_recent_popularity")
    assert recent["metric"] == "recall@100_explored" and recent["verdict"] in ("pass", "skipped")
    card = json.loads(Path(tiny_model, "model_card.json").read_text())
    assert recent["reference"] == pytest.approx(  # recent popularity in the trainer's window, refitted the same way
        json.loads(Path(tiny_model, "metrics.json").read_text())["scorers"]["recent_popularity"]["retrieval"][
            "explored"]["overall"]["recall@100"])
    assert card["metrics"]["recent_popularity"]["window_days"] is None or card["metrics"]["recent_popularity"][
        "window_days"] > 0
    est = blessing["offpolicy"]["estimate"]
    assert est["impressions"] == blessing["data"]["eval_examples"] and 0 < est["snips"] < 1
    assert 0 < est["ess"] <= est["impressions"] and est["logged_rate"] > 0
    assert blessing["offpolicy"]["replay"]["requests"] == blessing["data"]["eval_requests"]
    summary = (tmp_path / "gate" / "summary.md").read_text()
    assert summary.startswith("# Evaluation gate: **BLESSED**") and "first run" in summary
    assert "| ✅ pass | auc_click >= 0.55 | overall |" in summary and "SNIPS" in summary


def test_a_worse_candidate_is_rejected_and_push_refuses_it(tiny_model, weak_model, tiny_ingest, tmp_path):
    registry = tmp_path / "registry"
    production = copy_version(tiny_model, str(registry))
    Registry(str(registry)).switch(production, None, "push", dt.datetime(2026, 1, 19, tzinfo=dt.UTC))
    blessing = _evaluate(weak_model, tiny_ingest, registry, tmp_path / "gate")
    assert not blessing["blessed"] and blessing["baseline_version"] == production
    assert blessing["production_version"] == production
    assert "max_drop:auc_click[overall]" in blessing["failed"]
    drop = next(c for c in blessing["checks"] if c["kind"] == "max_drop" and c["metric"] == "auc_click"
                and c["slice"] == "overall")
    assert drop["difference_se"] > 0 and "paired by request" in drop["note"]
    assert set(blessing["metrics"]) == {"candidate", "production", "popularity", "recent_popularity"}
    assert "**NOT BLESSED**" in blessing["summary_markdown"]
    infra = tmp_path / "infra_blessing.json"
    infra.write_text(json.dumps({"passed": True}))
    pushed = CliRunner().invoke(app, ["push", "--model", weak_model, "--registry", str(registry), "--blessing",
                                      str(tmp_path / "gate" / "blessing.json"), "--infra-blessing", str(infra)])
    assert pushed.exit_code == 1 and "not blessed" in pushed.output
    assert Registry(str(registry)).pointer().version == production


OTHER_DECLARATION = "features:\n  - {name: genre, group: item, kind: categorical, dtype: str, towers: [candidate]}\n"


def test_a_production_model_of_another_declaration_gets_no_change_checks(tiny_model, weak_model, tiny_ingest,
                                                                         tmp_path):
    # the weak candidate would fail max_drop against tiny_model; made under another declaration, production
    # cannot be scored on this data, so only the floors judge (as on a first run) and the note says why
    production = tmp_path / "production"
    shutil.copytree(tiny_model, production)
    (production / "features.yaml").write_text(OTHER_DECLARATION)
    run(weak_model, str(production), [tiny_ingest], str(tmp_path / "gate"), GateConfig())
    blessing = json.loads((tmp_path / "gate" / "blessing.json").read_text())
    assert blessing["production_version"] and not blessing["production_compared"] and not blessing["first_run"]
    assert "production" not in blessing["metrics"]
    drops = [c for c in blessing["checks"] if c["kind"] == "max_drop"]
    assert drops and {c["verdict"] for c in drops} == {"skipped"}
    assert all("made under another feature declaration (features only there: ['genre']" in c["note"]
               for c in drops)
    assert "made under another feature declaration (absolute checks only)" in blessing["summary_markdown"]


def test_the_gate_refuses_a_candidate_of_another_declaration(tiny_model, tiny_ingest, tmp_path):
    candidate = tmp_path / "candidate"
    shutil.copytree(tiny_model, candidate)
    (candidate / "features.yaml").write_text(OTHER_DECLARATION)
    result = CliRunner().invoke(app, ["evaluate", "--candidate", str(candidate), "--data", tiny_ingest,
                                      "--registry", str(tmp_path / "registry"), "--out", str(tmp_path / "gate")])
    assert result.exit_code == 2, result.output
    assert "candidate model" in result.output and "another feature declaration" in result.output


def test_the_gate_refuses_data_the_candidate_was_not_held_out_on(tiny_model, tiny_ingest, tmp_path):
    moved = tmp_path / "candidate"
    shutil.copytree(tiny_model, moved)
    card = json.loads((moved / "model_card.json").read_text())
    card["data"]["span"]["eval_start"] = "2026-01-17T00:00:00+00:00"
    (moved / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="pass the same --data as to train"):
        run(str(moved), None, [tiny_ingest], str(tmp_path / "out"), GateConfig())


def _interaction_logs(world: str, out: Path, start: dt.date, end: dt.date) -> int:
    """The clicks of a simulated span as interaction logs, as data brought from elsewhere usually is: one
    request per click holding only the clicked item (position 0, propensity 1), and the click."""
    from recloop.features import logs

    clicks: dict[str, list[dict]] = {}
    for path in logs.partition_files(world, "events", start, end + dt.timedelta(days=1)):
        for line in logs.read_lines(path):
            event = json.loads(line)
            if event["event"] == "click":
                clicks.setdefault(event["request_id"], []).append(event)
    requests: dict[str, list[str]] = {}
    events: dict[str, list[str]] = {}
    for path in logs.partition_files(world, "requests", start, end):
        for line in logs.read_lines(path):
            request = json.loads(line)
            shown = {imp["item_id"]: imp for imp in request["impressions"]}
            for i, click in enumerate(clicks.get(request["request_id"], [])):
                rid = f"{request['request_id']}-{i}"
                imp = shown[click["item_id"]] | {"position": 0, "propensity": 1.0}
                requests.setdefault(request["ts"][:10], []).append(
                    json.dumps(request | {"request_id": rid, "impressions": [imp]}))
                events.setdefault(click["ts"][:10], []).append(json.dumps(click | {"request_id": rid}))
    for stream, by_day in (("requests", requests), ("events", events)):
        for day, lines in by_day.items():
            logs.write_lines(f"{logs.partition_dir(str(out), stream, dt.date.fromisoformat(day))}/part-0.jsonl.gz",
                             lines)
    return sum(map(len, requests.values()))


def test_on_interaction_logs_the_gate_judges_recall_against_both_heuristics(clean_world, tmp_path):
    from recloop.ingest import IngestConfig
    from recloop.ingest import run as ingest

    start, end = clean_world.week_start(1), clean_world.week_start(1) + dt.timedelta(days=6)
    assert _interaction_logs(clean_world.root, tmp_path / "logs", start, end) > 1000
    data = str(tmp_path / "ingest")
    ingest(IngestConfig(logs=str(tmp_path / "logs"), start=start, end=end, out=data))
    trained = CliRunner().invoke(app, ["train", "--data", data, "--out", str(tmp_path / "model"),
                                       "--epochs", "2", "--seed", "0"])
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    blessing = _evaluate(str(tmp_path / "model"), data, tmp_path / "empty-registry", tmp_path / "gate")
    assert blessing["logs"].startswith("interactions")
    judged = [c for c in blessing["checks"] if c["kind"] != "offpolicy"]
    assert {c["metric"] for c in judged} == {"recall@100", "recall@10"}  # AUC is undefined without negatives
    floors = {c["kind"]: c for c in judged if c["slice"] == "overall" and c["metric"] == "recall@100"}
    assert floors.keys() == {"min_vs_popularity", "min_vs_recent_popularity", "max_drop"}
    recent = floors["min_vs_recent_popularity"]
    assert recent["verdict"] in ("pass", "fail") and recent["reference"] > 0 and recent["reference_se"] > 0
    assert recent["support"] >= 200 and recent["bound"] == pytest.approx(recent["value"] - blessing["z"] * recent["se"])
    assert blessing["blessed"] == all(c["verdict"] != "fail" for c in blessing["checks"])
    assert "x recent popularity" in blessing["summary_markdown"] and "recent_popularity" in blessing["summary_markdown"]
