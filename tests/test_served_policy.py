"""Tests of recloop.simulator.served: the simulator shown what a real ``recloop serve`` answers.

One server (empty registry: its heuristic fallback serves, so it starts fast; with
an online holdout of ``HOLDOUT`` of the members) and one simulated week, shared by
the module. The arrangement:

  * The simulation starts on 2026-01-19, the server's start time: its clock only
    moves forward, and the requests carry their own times from there.
  * The server needs the week's item feed before it starts, but ``run_week`` writes
    it (after advancing the world). A twin simulation (same seed, start, scale)
    runs that week first under the bootstrap heuristic; its feed is byte-identical
    (the simulator is deterministic), so it is copied into the served simulation's
    folder and the server starts over it (``--catalog``). The twin's request log
    is also what the simulated requests were: the same members, contexts and times.
  * The server logs into the served simulation's folder (``--logs``, which overrides
    the fixture's), so its ``requests/`` and the simulator's ``events/`` share a
    root, as ingest reads them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ServerProcess, free_port, read_catalog, read_events, read_requests

from recloop.features.logs import read_lines
from recloop.features.records import parse_request
from recloop.serving import settings
from recloop.serving.holdout import in_holdout
from recloop.simulator import Simulation, SimulationConfigError, parse_drift, served, simulate
from recloop.simulator.policy import HeuristicPolicy, Requests, Slates
from recloop.simulator.served import ServedPolicy, ServedPolicyError
from recloop.simulator.world import World

SERVED_START = dt.date(2026, 1, 19)  # a Monday, the start time start_server gives the server
SEED = 5
K = 3
ROWS = 4
HOLDOUT = 0.2


@dataclass
class ServedWeek:
    sim: Simulation
    summary: dict[str, Any]
    policy: ServedPolicy
    server: ServerProcess
    twin: str  # the same week under the bootstrap heuristic

    @property
    def root(self) -> str:
        return self.sim.out


def server_lines(root: str) -> list[tuple[str, str]]:
    """``(path, line)`` of every request line under ``root/requests`` (the server's hourly files)."""
    return [(str(p), line) for p in sorted(Path(root, "requests").glob("dt=*/*.jsonl*")) for line in read_lines(str(p))]


@pytest.fixture(scope="module")
def served_week(start_server, tmp_path_factory: pytest.TempPathFactory) -> ServedWeek:
    base = tmp_path_factory.mktemp("served")
    twin, out, registry = base / "twin", base / "sim", base / "registry"
    simulate(str(twin), weeks=1, start=SERVED_START, scale="tiny", seed=SEED)
    shutil.copytree(twin / "catalog", out / "catalog")
    registry.mkdir()
    server = start_server("--registry", str(registry), "--logs", str(out), "--holdout", str(HOLDOUT),
                          catalog=str(out))
    sim = Simulation(out=str(out), start=SERVED_START, scale="tiny", seed=SEED)
    policy = ServedPolicy(server.url, k=K)
    summary = sim.run_week(0, policy)
    n = summary["requests"]
    server.wait_for(lambda: len(server_lines(str(out))) >= n, f"the server to log {n} requests")
    return ServedWeek(sim, summary, policy, server, str(twin))


def truth(root: str) -> dict[str, list[tuple[str, int, bool]]]:
    """``{request_id: [(item_id, position, explored)]}`` of the week's truth parquet, in request order."""
    table = pq.read_table(f"{root}/truth/impressions/week-00000.parquet").to_pylist()
    out: dict[str, list[tuple[str, int, bool]]] = {}
    for row in table:
        out.setdefault(row["request_id"], []).append((row["item_id"], row["position"], row["explored"]))
    return out


# ---------------------------------------------------------------- the closed loop, one week


def test_the_server_logged_each_simulated_request_once_as_sent(served_week: ServedWeek) -> None:
    lines = server_lines(served_week.root)
    records = [parse_request(line, source=path) for path, line in lines]
    n = served_week.summary["requests"]
    assert len(records) == n == served_week.sim.world.scale.requests_per_week
    logged = {r["request_id"]: json.loads(line) for r, (_, line) in zip(records, lines, strict=True)}
    assert len(logged) == n
    shown = truth(served_week.root)
    assert list(shown) and set(shown) == set(logged), "truth is kept under the server's request ids"
    # the simulator's own seeded ids: what seeds each page's exploration, so a rerun serves the same pages
    assert all(request_id.startswith(f"r{SEED}-000-") for request_id in logged)
    # the twin logged the same requests, in time order, as truth lists them: member, context and time as sent
    sent = [json.loads(line) for p in sorted(Path(served_week.twin, "requests").glob("dt=*/*.jsonl.gz"))
            for line in read_lines(str(p))]
    assert len(sent) == n
    for request_id, simulated in zip(shown, sent, strict=True):
        record = logged[request_id]
        assert (record["ts"], record["member"], record["context"]) == \
            (simulated["ts"], simulated["member"], simulated["context"]), request_id
        held = in_holdout(record["member"]["member_id"], HOLDOUT)
        assert record["model_version"] == ("heuristic-holdout" if held else "heuristic-fallback")
        # the slates are the page the server logged, slot by slot
        assert [(im["item_id"], im["position"], im["explored"]) for im in record["impressions"]] == \
            shown[request_id]
        assert [im["row"] for im in record["impressions"]] == \
            [row for row in ("for_your_usual", "quick", "something_new", "popular_now") for _ in range(K)]


def test_the_simulator_wrote_events_only_and_they_join_the_server_log(served_week: ServedWeek) -> None:
    root = Path(served_week.root)
    assert not list(root.glob("requests/**/part-*")), "the simulator wrote request lines of its own"
    requests = {r["request_id"]: r for r in read_requests(served_week.root)}  # the server's files, via the contract
    events = read_events(served_week.root)
    assert events
    for e in events:
        r = requests.get(e["request_id"])
        assert r is not None, f"event of a request the server did not log: {e}"
        assert e["item_id"] in {im["item_id"] for im in r["impressions"]}, f"event on an item not shown: {e}"
        assert e["ts"] >= r["ts"], e


def test_the_week_summary_reconciles(served_week: ServedWeek) -> None:
    s, n = served_week.summary, served_week.summary["requests"]
    assert s["impressions"] == n * ROWS * K
    assert s["events"] == {kind: sum(e["event"] == kind for e in read_events(served_week.root)) for kind in s["events"]}
    held = held_requests(served_week)
    assert s["policy"] == ["heuristic-fallback", "heuristic-holdout"]
    assert s["fallbacks"] == {"holdout": held, "no_model": n - held}
    assert s["corrupt_lines"] == 0 and s["corrupt_share"] == 0.0
    assert served_week.policy.stats.as_dict()["requests"] == n
    assert served_week.policy.stats.fallbacks == s["fallbacks"] and served_week.policy.week_stats[0].seconds > 0
    assert 0 < s["explored_share"] < 0.5


def held_requests(week: ServedWeek) -> int:
    """Requests of the week whose member the server holds out (by the server's own rule)."""
    return sum(in_holdout(r["member"]["member_id"], HOLDOUT) for r in read_requests(week.root))


def test_the_holdout_is_its_own_group_with_its_share_of_members(served_week: ServedWeek) -> None:
    s, n = served_week.summary, served_week.summary["requests"]
    groups = s["by_policy"]
    assert list(groups) == ["fallback", "holdout"]  # no model pushed: the fallback serves the rest
    held = held_requests(served_week)
    assert groups["holdout"]["requests"] == held and groups["fallback"]["requests"] == n - held
    assert sum(g["impressions"] for g in groups.values()) == s["impressions"]
    assert sum(g["clicks"] for g in groups.values()) == s["events"]["click"]
    members = {r["member"]["member_id"] for r in read_requests(served_week.root)}
    member_share = sum(in_holdout(m, HOLDOUT) for m in members) / len(members)
    # ~200 active members: 3 binomial standard errors (0.085) around the holdout; requests follow activity
    assert abs(member_share - HOLDOUT) < 0.085, member_share
    assert 0.5 * HOLDOUT < held / n < 1.5 * HOLDOUT, held / n
    for g in groups.values():
        low, high = g["click_rate_ci95"]
        assert low <= g["click_rate"] <= high and 0 < g["expected_click_rate"] < s["oracle_click_rate"]


def test_the_simulator_knows_the_server_versions_by_the_same_strings() -> None:
    assert (served.HOLDOUT_VERSION, served.FALLBACK_VERSION) == (settings.HOLDOUT_VERSION, settings.FALLBACK_VERSION)


def test_ingest_reads_the_server_requests_with_the_simulator_events(served_week: ServedWeek,
                                                                     tmp_path: Path) -> None:
    from recloop.ingest import IngestConfig, run

    summary = run(IngestConfig(logs=served_week.root, start=SERVED_START, end=SERVED_START + dt.timedelta(days=6),
                               out=str(tmp_path / "ingest")))
    assert all(eq["holds"] for eq in summary["reconciliation"].values()), summary["reconciliation"]
    assert {source: d["dead_letters"] for source, d in summary["dead_letters"].items()} == {"requests": 0,
                                                                                           "events": 0}
    assert summary["lines"]["requests"]["read"] == served_week.summary["requests"]
    assert summary["examples"]["train"] + summary["examples"]["eval"] > 0
    assert sum(summary["positives"]["train"].values()) > 0


# ---------------------------------------------------------------- what the policy refuses


def one_request(ts: dt.datetime) -> Requests:
    """A single request, at ``ts``, of a member the world has."""
    return Requests(request_id=["r-test"], ts=np.array([int(ts.timestamp())]), day=np.array([ts.date().toordinal()]),
                    member_id=["m0000001"], tenure_days=np.array([30]), country=[None], preferred_category=["yoga"],
                    hour=np.array([ts.hour]), dow=np.array([ts.weekday()]), platform=["ios"])


LATER = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # outside the simulated week: its logs stay as they were


def test_a_refused_request_names_the_request_and_the_answer(served_week: ServedWeek) -> None:
    policy = ServedPolicy(served_week.server.url, k=21)  # above the server's MAX_K: HTTP 400
    with pytest.raises(ServedPolicyError, match=r"r-test \(member m0000001 at 2026-03-02T09:00:00Z\).*HTTP 400.*k"):
        policy.recommend(one_request(LATER), served_week.sim.world, 1, np.random.default_rng(0))


def test_the_same_request_with_the_same_id_gets_the_same_page(served_week: ServedWeek) -> None:
    policy = ServedPolicy(served_week.server.url, k=K)
    first, again = (policy.recommend(one_request(LATER), served_week.sim.world, 1, np.random.default_rng(s))
                    for s in (0, 1))
    assert first.request_id == again.request_id == ["r-test"]
    np.testing.assert_array_equal(first.item, again.item)
    np.testing.assert_array_equal(first.propensity, again.propensity)
    np.testing.assert_array_equal(first.explored, again.explored)


def test_a_page_of_another_size_is_an_error_not_padded(served_week: ServedWeek) -> None:
    policy = ServedPolicy(served_week.server.url, k=K, rows=ROWS + 1)
    with pytest.raises(ServedPolicyError, match=rf"r-test .*expected a page of 5 rows x 3 = 15 items, got {ROWS * K}"):
        policy.recommend(one_request(LATER), served_week.sim.world, 1, np.random.default_rng(0))


def test_a_server_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    sim = Simulation(out=str(tmp_path), start=SERVED_START)
    policy = ServedPolicy(f"http://127.0.0.1:{free_port()}/v1/models/recommender:predict", timeout_s=2)
    with pytest.raises(ServedPolicyError, match=r"r-test .*did not answer: ConnectError"):
        policy.recommend(one_request(LATER), sim.world, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k must be > 0, got 0"):
        ServedPolicy("http://127.0.0.1:1/", k=0)


# ---------------------------------------------------------------- run_week with a policy that logs requests


class ServerLikeHeuristic(HeuristicPolicy):
    """The heuristic posing as a server: it "logs" the requests itself, under ids of its own."""

    logs_requests = True

    def recommend(self, requests: Requests, world: World, week: int, rng: np.random.Generator) -> Slates:
        slates = super().recommend(requests, world, week, rng)
        slates.request_id = [f"srv-{week}-{r}" for r in range(len(requests))]
        return slates


def test_with_a_policy_that_logs_requests_the_unit_bug_is_in_the_feed_and_corruption_in_events(
        tmp_path: Path) -> None:
    baseline = Simulation(out=str(tmp_path / "base"), start=SERVED_START, seed=SEED)
    baseline.run_week(0, HeuristicPolicy())
    sim = Simulation(out=str(tmp_path / "sim"), start=SERVED_START, seed=SEED, drifts=[parse_drift("unit-bug@0")],
                     corrupt_rate=0.05)
    summary = sim.run_week(0, ServerLikeHeuristic())
    feed, base_feed = (read_catalog(str(tmp_path / name), SERVED_START) for name in ("sim", "base"))
    assert feed.keys() == base_feed.keys()
    for item, meta in feed.items():
        assert meta == {**base_feed[item], "duration_min": base_feed[item]["duration_min"] * 60}, item
    assert not Path(tmp_path, "sim", "requests").exists()
    corruptions = json.loads(Path(tmp_path, "sim", "truth", "corruption", "week-00000.json").read_text())
    assert corruptions and {c["stream"] for c in corruptions} == {"events"}
    assert all(c["request_id"].startswith("srv-0-") for c in corruptions)
    events = sum(summary["events"].values())
    duplicates = summary["corrupt_by_kind"].get("duplicate_event", 0)
    assert summary["corrupt_share"] == summary["corrupt_lines"] / (events + duplicates)
    assert set(pq.read_table(f"{tmp_path}/sim/truth/impressions/week-00000.parquet")["request_id"].to_pylist()) == \
        {f"srv-0-{r}" for r in range(summary["requests"])}


def test_a_policy_that_logs_requests_must_return_their_ids(tmp_path: Path) -> None:
    class NoIds(HeuristicPolicy):
        logs_requests = True

    with pytest.raises(SimulationConfigError, match="NoIds logs its requests but returned None request ids for 2000"):
        Simulation(out=str(tmp_path), start=SERVED_START).run_week(0, NoIds())
