"""Tests of recloop.simulator: the log contract, determinism, scales, hidden behaviour, corruption."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import (
    CLEAN_SEED,
    CORRUPT_RATE,
    START,
    SimWorld,
    all_log_files,
    file_week,
    raw_lines,
    read_catalog,
    read_events,
    read_requests,
    read_truth_json,
    week_files,
)

from recloop.features.logs import partition_date
from recloop.features.records import EVENT_TYPES, RecordError, parse_event, parse_request
from recloop.features.spec import PLATFORMS
from recloop.simulator import SCALES, Simulation, SimulationConfigError, parse_drift, simulate
from recloop.simulator.clock import SimClock
from recloop.simulator.corrupt import EVENT_KINDS, REQUEST_KINDS, corrupt
from recloop.simulator.world import World

SLOTS = 10
EPSILON = 0.1  # simulate()'s default exploration share


def _requests_by_id(world: SimWorld) -> dict:
    return {r["request_id"]: r for r in read_requests(world.root)}


def _events_by_impression(world: SimWorld) -> dict[tuple[str, str], dict[str, dt.datetime]]:
    """``{(request_id, item_id): {event type: ts}}``; fails on an event logged twice."""
    out: dict[tuple[str, str], dict[str, dt.datetime]] = defaultdict(dict)
    for e in read_events(world.root):
        key = (e["request_id"], e["item_id"])
        assert e["event"] not in out[key], f"{e['event']} logged twice for {key}"
        out[key][e["event"]] = e["ts"]
    return out


# ---------------------------------------------------------------- the log contract


def test_every_line_of_a_clean_world_parses(clean_world: SimWorld) -> None:
    requests, events = read_requests(clean_world.root), read_events(clean_world.root)
    assert len(requests) == 2 * SCALES["tiny"].requests_per_week
    assert {e["event"] for e in events} == set(EVENT_TYPES)
    assert not Path(clean_world.root, "truth", "corruption").exists()


def test_context_matches_the_request_timestamp(clean_world: SimWorld) -> None:
    for r in read_requests(clean_world.root):
        assert r["ts"].tzinfo is not None and r["ts"].utcoffset() == dt.timedelta(0)
        assert r["context"]["hour_of_day"] == r["ts"].hour, r["request_id"]
        assert r["context"]["day_of_week"] == r["ts"].weekday(), r["request_id"]
        assert r["context"]["platform"] in PLATFORMS


def test_every_line_is_in_the_partition_of_its_date(clean_world: SimWorld) -> None:
    for stream, parse in (("requests", parse_request), ("events", parse_event)):
        lines = raw_lines(clean_world.root, stream)
        assert lines
        for path, line in lines:
            assert partition_date(path) == parse(line)["ts"].date(), (stream, path, line)


def test_requests_fall_in_their_week_and_events_after_them(clean_world: SimWorld) -> None:
    for path, line in raw_lines(clean_world.root, "requests"):
        week = file_week(path)
        first = START + dt.timedelta(days=7 * week)
        assert first <= parse_request(line)["ts"].date() <= first + dt.timedelta(days=6)
    requests = _requests_by_id(clean_world)
    for path, line in raw_lines(clean_world.root, "events"):
        e = parse_event(line)
        r = requests.get(e["request_id"])
        assert r is not None, f"event of an unlogged request: {line}"
        assert e["item_id"] in {im["item_id"] for im in r["impressions"]}, f"event on an item not shown: {line}"
        assert e["ts"] >= r["ts"], line
        assert file_week(path) == int(e["request_id"].split("-")[1]), "events are written by their request's week"


def test_funnel_events_follow_a_click_in_order(clean_world: SimWorld) -> None:
    funnel = _events_by_impression(clean_world)
    seen: Counter[str] = Counter()
    for key, ev in funnel.items():
        seen.update(ev.keys())
        assert "click" in ev, f"{sorted(ev)} without a click on {key}"
        if "start" in ev:
            assert ev["click"] < ev["start"], key
        assert "complete" not in ev or "start" in ev, key
        assert "like" not in ev or "start" in ev, key
        if "complete" in ev:
            assert ev["click"] <= ev["start"] <= ev["complete"], key
        if "like" in ev:
            assert ev["like"] > ev["start"] and ev["like"] > ev.get("complete", ev["start"]), key
    # every step of the funnel happens, and each narrows it
    assert seen["click"] > seen["start"] > seen["complete"] > 0
    assert seen["start"] > seen["like"] > 0


def test_slates_have_ten_distinct_items_in_positions_0_to_9(clean_world: SimWorld) -> None:
    for r in read_requests(clean_world.root):
        assert [im["position"] for im in r["impressions"]] == list(range(SLOTS)), r["request_id"]
        assert len({im["item_id"] for im in r["impressions"]}) == SLOTS, r["request_id"]
        assert [im["row"] for im in r["impressions"]] == ["popular_now"] * 5 + ["for_your_usual"] * 5
        assert r["model_version"] == "heuristic-v1"


def test_log_files_are_in_time_order(clean_world: SimWorld) -> None:
    for stream, parse in (("requests", parse_request), ("events", parse_event)):
        by_file: dict[str, list[dt.datetime]] = defaultdict(list)
        for path, line in raw_lines(clean_world.root, stream):
            by_file[path].append(parse(line)["ts"])
        for path, ts in by_file.items():
            assert ts == sorted(ts), path


def test_week_0_popular_row_shows_the_newest_releases(clean_world: SimWorld) -> None:
    """With no clicks yet every item ties, and ties keep the newest-release-first order."""
    truth = _truth_impressions(clean_world)
    greedy = 0
    catalog = read_catalog(clean_world.root, START)
    for r in read_requests(clean_world.root):
        day = r["ts"].date()
        if day >= clean_world.week_start(1):
            continue
        released = {i: dt.date.fromisoformat(it["release_date"]) for i, it in catalog.items()}
        pool = sorted((i for i, d in released.items() if d <= day), key=lambda i: (-released[i].toordinal(), i))
        for im in r["impressions"]:
            if im["row"] == "popular_now" and not truth[(r["request_id"], im["position"])][1]:
                greedy += 1
                assert im["item_id"] in pool[: im["position"] + 1], (r["request_id"], im["position"])
    assert greedy > 4 * 1000


def _truth_impressions(world: SimWorld) -> dict[tuple[str, int], tuple[str, bool]]:
    out = {}
    for week in range(world.weeks):
        table = pq.read_table(f"{world.root}/truth/impressions/week-{week:05d}.parquet").to_pydict()
        for rid, item, pos, explored in zip(table["request_id"], table["item_id"], table["position"],
                                            table["explored"], strict=True):
            out[(rid, pos)] = (item, explored)
    return out


def test_propensities_are_the_exact_epsilon_greedy_probabilities(clean_world: SimWorld) -> None:
    """p = 0.9 + 0.1/left for the greedy item, 0.1/left for an explored one (left = pool - position)."""
    truth = _truth_impressions(clean_world)
    assert len(truth) == 2 * SCALES["tiny"].requests_per_week * SLOTS
    explored_lucky = explored = 0
    max_explored = 0.0
    min_greedy = 1.0
    for r in read_requests(clean_world.root):
        day = r["ts"].date()
        catalog = read_catalog(clean_world.root, day - dt.timedelta(days=day.weekday()))
        pool = sum(dt.date.fromisoformat(it["release_date"]) <= day for it in catalog.values())
        for im in r["impressions"]:
            item, was_explored = truth[(r["request_id"], im["position"])]
            assert item == im["item_id"]
            assert 0.0 < im["propensity"] <= 1.0
            left = pool - im["position"]
            greedy_p, explore_p = (1 - EPSILON) + EPSILON / left, EPSILON / left
            if not was_explored:
                assert im["propensity"] == pytest.approx(greedy_p, rel=1e-12), (r["request_id"], im["position"])
                min_greedy = min(min_greedy, im["propensity"])
                continue
            explored += 1
            if im["propensity"] == pytest.approx(greedy_p, rel=1e-12):  # exploring drew the greedy item
                explored_lucky += 1
            else:
                assert im["propensity"] == pytest.approx(explore_p, rel=1e-12), (r["request_id"], im["position"])
                max_explored = max(max_explored, im["propensity"])
    n = len(truth)
    assert 0.08 < explored / n < 0.12
    assert explored_lucky < 0.05 * explored
    assert max_explored < min_greedy


def test_served_item_metadata_is_the_catalog_of_the_week(clean_world: SimWorld) -> None:
    fields = ("category", "creator", "duration_min", "language")
    for r in read_requests(clean_world.root):
        day = r["ts"].date()
        catalog = read_catalog(clean_world.root, day - dt.timedelta(days=day.weekday()))
        for im in r["impressions"]:
            item = catalog[im["item_id"]]
            assert {f: im["item"][f] for f in fields} == {f: item[f] for f in fields}
            assert im["item"]["release_date"].isoformat() == item["release_date"]
            assert im["item"]["release_date"] <= day, f"{im['item_id']} shown before its release"
            assert im["item"]["age_days"] == (day - im["item"]["release_date"]).days


def test_new_items_are_released_every_week(clean_world: SimWorld) -> None:
    scale = SCALES["tiny"]
    previous: dict = {}
    for week in range(clean_world.weeks):
        first = clean_world.week_start(week)
        catalog = read_catalog(clean_world.root, first)
        new = {i for i, it in catalog.items() if dt.date.fromisoformat(it["release_date"]) >= first}
        assert len(new) == scale.new_items_per_week
        assert all(dt.date.fromisoformat(catalog[i]["release_date"]) <= first + dt.timedelta(days=6) for i in new)
        old = {i: it for i, it in catalog.items() if i not in new}
        if week == 0:
            assert len(old) == scale.items
        else:
            assert old == previous, "the catalog lost an item or an item's metadata changed"
        assert len(catalog) == scale.items + (week + 1) * scale.new_items_per_week
        assert len(catalog) == clean_world.manifest["weeks"][week]["items"]
        previous = catalog
    shown_new = {im["item_id"] for r in read_requests(clean_world.root) for im in r["impressions"]
                 if im["item"]["release_date"] >= START}
    assert shown_new, "no new release was ever shown"


def test_new_members_join_every_week(clean_world: SimWorld) -> None:
    joined: dict[str, dt.date] = {}
    weeks_seen: dict[str, set[int]] = defaultdict(set)
    for r in read_requests(clean_world.root):
        m = r["member"]
        assert m["tenure_days"] is not None and m["tenure_days"] >= 0
        when = r["ts"].date() - dt.timedelta(days=m["tenure_days"])
        assert joined.setdefault(m["member_id"], when) == when, f"{m['member_id']}: inconsistent tenure"
        weeks_seen[m["member_id"]].add((r["ts"].date() - START).days // 7)
    for week in range(clean_world.weeks):
        first = clean_world.week_start(week)
        new = {m for m, d in joined.items() if first <= d <= first + dt.timedelta(days=6)}
        assert 1 <= len(new) <= SCALES["tiny"].new_members_per_week
        assert all(min(weeks_seen[m]) == week for m in new)
    week0 = {m for m, w in weeks_seen.items() if 0 in w}
    week1 = {m for m, w in weeks_seen.items() if 1 in w}
    assert any(joined[m] >= clean_world.week_start(1) for m in week1 - week0)


def test_simulation_json_counts_equal_the_logs(clean_world: SimWorld) -> None:
    manifest = json.loads(Path(clean_world.root, "simulation.json").read_text())
    assert manifest == clean_world.manifest
    assert manifest["params"]["seed"] == 7 and manifest["params"]["scale"] == "tiny"
    per_week: dict[int, Counter] = defaultdict(Counter)
    members: dict[int, set[str]] = defaultdict(set)
    for r in read_requests(clean_world.root):
        week = int(r["request_id"].split("-")[1])
        per_week[week]["requests"] += 1
        per_week[week]["impressions"] += len(r["impressions"])
        members[week].add(r["member"]["member_id"])
    for e in read_events(clean_world.root):
        per_week[int(e["request_id"].split("-")[1])][e["event"]] += 1
    assert sorted(per_week) == [0, 1]
    for w in manifest["weeks"]:
        counts = per_week[w["week"]]
        assert w["requests"] == counts["requests"]
        assert w["impressions"] == counts["impressions"]
        assert w["events"] == {e: counts[e] for e in EVENT_TYPES}
        assert w["click_rate"] == pytest.approx(counts["click"] / counts["impressions"])
        assert w["active_members"] == len(members[w["week"]])
        assert w["corrupt_lines"] == 0 and w["corrupt_by_kind"] == {}
        assert w["start"] == str(clean_world.week_start(w["week"]))
    totals = manifest["totals"]
    assert totals["requests"] == sum(c["requests"] for c in per_week.values())
    assert totals["impressions"] == sum(c["impressions"] for c in per_week.values())
    assert totals["events"] == {e: sum(c[e] for c in per_week.values()) for e in EVENT_TYPES}
    assert Path(clean_world.root, "truth", "world.npz").is_file()


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_logs(clean_world: SimWorld, make_world) -> None:
    again = make_world(clean_world.seed, clean_world.weeks, copy=1)
    assert again.root != clean_world.root
    first, second = all_log_files(clean_world.root), all_log_files(again.root)
    assert sorted(first) == sorted(second)
    assert any(p.startswith("catalog/") for p in first) and any(p.startswith("events/") for p in first)
    for path in first:
        assert first[path] == second[path], path


def test_same_seed_in_another_process_gives_the_same_logs(clean_world: SimWorld, tmp_path: Path) -> None:
    """No dependence on the process: another interpreter with another hash seed, through the CLI."""
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-m", "recloop.cli", "simulate", "--out", str(out),
                             "--weeks", str(clean_world.weeks), "--seed", str(clean_world.seed),
                             "--start", START.isoformat(), "--scale", "tiny"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all_log_files(str(out)) == all_log_files(clean_world.root)


def test_another_seed_gives_other_logs(clean_world: SimWorld, base_world: SimWorld) -> None:
    assert clean_world.seed != base_world.seed
    a, b = week_files(clean_world.root, 0), week_files(base_world.root, 0)
    common = set(a) & set(b)
    assert any(p.startswith("requests/") for p in common)
    assert all(a[p] != b[p] for p in common)


def test_simulating_into_a_used_folder_does_not_mix_runs(corrupt_world: SimWorld, tmp_path: Path) -> None:
    out = tmp_path / "reused"
    shutil.copytree(corrupt_world.root, out)  # a 2-week corrupt run of another seed was here before
    with pytest.raises(SimulationConfigError, match="already holds a simulation.*--overwrite"):
        simulate(str(out), weeks=1, start=START, scale="tiny", seed=CLEAN_SEED)
    assert (out / "truth" / "corruption").exists(), "a refused run must not touch the folder"
    manifest = simulate(str(out), weeks=1, start=START, scale="tiny", seed=CLEAN_SEED, overwrite=True)
    lines = [line for _, line in raw_lines(str(out), "requests")]
    assert len(lines) == manifest["totals"]["requests"], "requests of the earlier run are still there"
    assert all(line.startswith(f'{{"request_id":"r{CLEAN_SEED}-') for line in lines)
    assert not (out / "truth" / "corruption").exists(), "the earlier run's corruption truth is still there"


def test_a_drift_after_the_last_week_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimulationConfigError, match="unit-bug@5 starts in week 5, but only weeks 0-1"):
        simulate(str(tmp_path / "x"), weeks=2, start=START, drifts=[parse_drift("unit-bug@5")])
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- scales


def test_scales_are_the_documented_sizes() -> None:
    sizes = {name: (s.members, s.items, s.requests_per_week, s.slots) for name, s in SCALES.items()}
    assert sizes == {
        "tiny": (200, 300, 2_000, 10),
        "small": (2_000, 2_000, 20_000, 10),
        "default": (20_000, 10_000, 100_000, 10),
    }
    for s in SCALES.values():
        assert 0 < s.new_members_per_week < s.members and 0 < s.new_items_per_week < s.items
        assert 0 < s.creators < s.items


def test_tiny_world_has_tiny_sizes(clean_world: SimWorld) -> None:
    scale = SCALES["tiny"]
    assert clean_world.manifest["params"]["scale_sizes"] == vars(scale)
    for w in clean_world.manifest["weeks"]:
        k = w["week"] + 1
        assert w["requests"] == scale.requests_per_week
        assert w["impressions"] == scale.requests_per_week * scale.slots
        assert w["members"] == scale.members + k * scale.new_members_per_week
        assert w["items"] == scale.items + k * scale.new_items_per_week
        assert w["new_items"] == scale.new_items_per_week
        assert 0 < w["active_members"] <= w["members"]


def test_bad_parameters_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Monday"):
        simulate(str(tmp_path), weeks=1, start=dt.date(2026, 1, 6))
    with pytest.raises(ValueError, match="weeks"):
        simulate(str(tmp_path), weeks=0, start=START)
    with pytest.raises(ValueError, match="tiny"):
        Simulation(out=str(tmp_path), start=START, scale="huge")
    with pytest.raises(ValueError, match="Monday"):
        World.create(0, SCALES["tiny"], dt.date(2026, 1, 4))
    world = World.create(0, SCALES["tiny"], START)
    with pytest.raises(ValueError, match="order"):
        world.advance(1)
    assert not any(tmp_path.iterdir())


def test_sim_clock_only_moves_forward() -> None:
    t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    clock = SimClock(t0)
    clock.advance_to(t0 + dt.timedelta(days=7))
    assert clock.now() == t0 + dt.timedelta(days=7)
    with pytest.raises(ValueError, match="forward"):
        clock.advance_to(t0)
    with pytest.raises(ValueError, match="timezone"):
        SimClock(dt.datetime(2026, 1, 5))


# ---------------------------------------------------------------- hidden behaviour, seen in the logs


def _impressions_with_clicks(world: SimWorld) -> dict[str, np.ndarray]:
    clicks = {(e["request_id"], e["item_id"]) for e in read_events(world.root) if e["event"] == "click"}
    rows = [(r["context"]["hour_of_day"], r["context"]["platform"], im["item"]["duration_min"], im["position"],
             (r["request_id"], im["item_id"]) in clicks) for r in read_requests(world.root) for im in r["impressions"]]
    hour, platform, duration, position, click = zip(*rows, strict=True)
    return {"hour": np.array(hour), "platform": np.array(platform), "duration": np.array(duration),
            "position": np.array(position), "click": np.array(click, dtype=float)}


def _short_over_long(x: dict[str, np.ndarray], where: np.ndarray) -> float:
    short, long_ = where & (x["duration"] <= 15), where & (x["duration"] >= 45)
    assert short.sum() > 1000 and long_.sum() > 1000
    return x["click"][short].mean() / x["click"][long_].mean()


# Observed on 4 tiny weeks over seeds 0-19: morning/evening 1.93-4.16, phone/tv 1.71-4.34,
# CTR@0 / CTR@9 2.9-7.7. The thresholds leave a margin for other seeds.
CONTEXT_RATIO_MIN = 1.4
POSITION_RATIO_MIN = 2.0


def test_short_items_win_in_the_morning_and_long_ones_in_the_evening(base_world: SimWorld) -> None:
    x = _impressions_with_clicks(base_world)
    morning = (x["hour"] >= 5) & (x["hour"] <= 10)
    evening = (x["hour"] >= 18) & (x["hour"] <= 22)
    ratio = _short_over_long(x, morning) / _short_over_long(x, evening)
    assert ratio > CONTEXT_RATIO_MIN, f"short/long CTR morning vs evening: {ratio:.2f}"


def test_short_items_win_on_phones_and_long_ones_on_tv(base_world: SimWorld) -> None:
    x = _impressions_with_clicks(base_world)
    phone = np.isin(x["platform"], ["ios", "android"])
    tv = x["platform"] == "tv"
    ratio = _short_over_long(x, phone) / _short_over_long(x, tv)
    assert ratio > CONTEXT_RATIO_MIN, f"short/long CTR phone vs tv: {ratio:.2f}"


def test_position_bias(base_world: SimWorld) -> None:
    x = _impressions_with_clicks(base_world)
    ctr = [x["click"][x["position"] == k].mean() for k in range(SLOTS)]
    assert ctr[0] > POSITION_RATIO_MIN * ctr[9], f"CTR by position: {np.round(ctr, 3)}"
    assert ctr[0] == max(ctr)


# ---------------------------------------------------------------- corruption

# how each corruption kind shows up when the line is parsed: (RecordError.reason, RecordError.field)
_FAILURES = {
    "requests": {("json", "<line>"): "truncated_json", ("type", "context.hour_of_day"): "wrong_type",
                 ("missing", "context"): "missing_field", ("value", "ts"): "bad_timestamp"},
    "events": {("json", "<line>"): "truncated_json", ("type", "item_id"): "wrong_type",
               ("missing", "item_id"): "missing_field", ("value", "ts"): "bad_timestamp",
               ("value", "event"): "unknown_event_type"},
}


def _observed_corruption(world: SimWorld) -> dict[tuple[int, str], Counter[str]]:
    """Per (week, stream): the corruption kinds found by parsing the logs back."""
    found: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    known_ids: set[str] = set()
    for path, line in raw_lines(world.root, "requests"):
        try:
            known_ids.add(parse_request(line)["request_id"])
        except RecordError as e:
            found[(file_week(path), "requests")][_FAILURES["requests"][(e.reason, e.field)]] += 1
    # a request whose line was broken is still a real request: its events are not orphans
    for week in range(world.weeks):
        truth = read_truth_json(world.root, f"truth/corruption/week-{week:05d}.json")
        known_ids |= {c["request_id"] for c in truth if c["stream"] == "requests"}
    seen_lines: set[str] = set()
    for path, line in raw_lines(world.root, "events"):
        key = (file_week(path), "events")
        if line in seen_lines:
            found[key]["duplicate_event"] += 1
            continue
        seen_lines.add(line)
        try:
            e = parse_event(line)
        except RecordError as err:
            found[key][_FAILURES["events"][(err.reason, err.field)]] += 1
            continue
        if e["request_id"] not in known_ids:
            found[key]["unknown_request"] += 1
    return found


def test_corruptions_on_disk_match_the_truth_exactly(corrupt_world: SimWorld) -> None:
    found = _observed_corruption(corrupt_world)
    for week in range(corrupt_world.weeks):
        truth = read_truth_json(corrupt_world.root, f"truth/corruption/week-{week:05d}.json")
        for stream in ("requests", "events"):
            expected = Counter(c["kind"] for c in truth if c["stream"] == stream)
            assert found[(week, stream)] == expected, (week, stream)
            assert set(expected) <= set(REQUEST_KINDS if stream == "requests" else EVENT_KINDS)


def test_corrupted_requests_are_gone_and_duplicates_are_of_the_recorded_event(corrupt_world: SimWorld) -> None:
    truth = [c for w in range(corrupt_world.weeks)
             for c in read_truth_json(corrupt_world.root, f"truth/corruption/week-{w:05d}.json")]
    parsed = set()
    for _, line in raw_lines(corrupt_world.root, "requests"):
        try:
            parsed.add(parse_request(line)["request_id"])
        except RecordError:
            pass
    broken = {c["request_id"] for c in truth if c["stream"] == "requests"}
    assert broken and not broken & parsed
    lines = [line for _, line in raw_lines(corrupt_world.root, "events")]
    duplicated = {line for line, n in Counter(lines).items() if n > 1}
    assert {(json.loads(x)["request_id"], json.loads(x)["item_id"]) for x in duplicated} == {
        (c["request_id"], c["item_id"]) for c in truth if c["kind"] == "duplicate_event"}
    assert all(Counter(lines)[x] == 2 for x in duplicated)


def test_corrupt_share_follows_the_rate(corrupt_world: SimWorld) -> None:
    lines_per_week: Counter[int] = Counter(file_week(p) for s in ("requests", "events")
                                           for p, _ in raw_lines(corrupt_world.root, s))
    for w in corrupt_world.manifest["weeks"]:
        share = w["corrupt_lines"] / lines_per_week[w["week"]]
        assert 0.5 * CORRUPT_RATE <= share <= 1.5 * CORRUPT_RATE, w
        assert w["corrupt_share"] == pytest.approx(share)


def test_every_corruption_kind_appears_and_the_manifest_agrees(corrupt_world: SimWorld) -> None:
    manifest = corrupt_world.manifest
    assert manifest["params"]["corrupt"] == CORRUPT_RATE
    total: Counter[str] = Counter()
    for w in manifest["weeks"]:
        truth = read_truth_json(corrupt_world.root, f"truth/corruption/week-{w['week']:05d}.json")
        kinds = Counter(c["kind"] for c in truth)
        assert w["corrupt_by_kind"] == dict(kinds)
        assert w["corrupt_lines"] == len(truth)
        first = dt.date.fromisoformat(w["start"])
        assert all(0 <= (dt.date.fromisoformat(c["dt"]) - first).days < 14 for c in truth)
        total.update(kinds)
    assert set(total) == set(EVENT_KINDS) and len(EVENT_KINDS) == 7
    assert manifest["totals"]["corrupt_by_kind"] == dict(total)
    assert manifest["totals"]["corrupt_lines"] == sum(total.values())


def test_clean_lines_of_a_corrupt_world_equal_the_clean_world_of_its_seed(corrupt_world: SimWorld,
                                                                         make_world) -> None:
    """Corruption only breaks lines: every intact line is a line the clean run wrote."""
    clean = make_world(corrupt_world.seed, 1)
    for stream in ("requests", "events"):
        original = {line for path, line in raw_lines(clean.root, stream) if file_week(path) == 0}
        written = [line for path, line in raw_lines(corrupt_world.root, stream) if file_week(path) == 0]
        intact = [line for line in written if line in original]
        truth = read_truth_json(corrupt_world.root, "truth/corruption/week-00000.json")
        n = sum(c["stream"] == stream for c in truth)
        dups = sum(c["stream"] == stream and c["kind"] == "duplicate_event" for c in truth)
        assert len(written) == len(original) + dups
        assert len(set(intact)) == len(original) - n + dups


def test_corrupt_rejects_a_rate_outside_0_1() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="rate"):
        corrupt(["{}"], "events", 1.5, rng)
    lines = ['{"request_id":"r","item_id":"i000001","event":"click","ts":"2026-01-05T07:30:00Z"}'] * 3
    assert corrupt(lines, "events", 0.0, rng) == (lines, [])
