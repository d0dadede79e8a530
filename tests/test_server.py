"""The real server: ``recloop serve`` (kserve ModelServer) on 127.0.0.1 with the session's tiny model."""

from __future__ import annotations

import datetime as dt
import http.client
import inspect
import json
import os
import socket
import subprocess
import time
from collections import Counter

import httpx
import pytest
from conftest import SERVE_DAY, copy_version, require_binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recloop.cli import serve as serve_cli
from recloop.features.catalog import read_items, snapshot
from recloop.features.logs import read_json, read_lines, write_lines
from recloop.features.records import parse_request
from recloop.serving.registry import Registry
from recloop.serving.request import MAX_INSTANCES, MAX_K
from recloop.serving.server import MAX_BODY_BYTES

ROWS = ["for_your_usual", "quick", "something_new", "popular_now"]
FUZZ_EXAMPLES = int(os.environ.get("RECLOOP_FUZZ_EXAMPLES", "150"))  # bench/faults.py runs 10,000


def instance(member_id: str = "m0000001", platform: str = "ios", k: int = 5, **member) -> dict:
    return {"member_id": member_id, "member": {"tenure_days": 40, "country": "US", "preferred_category": "yoga"}
            | member, "context": {"hour_of_day": 8, "day_of_week": 0, "platform": platform}, "k": k}


@pytest.fixture(scope="module")
def registry(tiny_model, tmp_path_factory) -> tuple[str, str]:
    root = str(tmp_path_factory.mktemp("registry"))
    version = copy_version(tiny_model, root)
    Registry(root).switch(version, None, "push", SERVE_DAY)
    return root, version


@pytest.fixture(scope="module")
def server(start_server, registry, clean_world):
    return start_server("--registry", registry[0], catalog=clean_world.root)


@pytest.fixture(scope="module")
def catalog(clean_world) -> dict[str, dict]:
    items = read_items(snapshot(clean_world.root, SERVE_DAY.date()))
    return {item["item_id"]: item for item in items}


@pytest.fixture(scope="module")
def profiles(tiny_model) -> dict[str, dict]:
    return read_json(f"{tiny_model}/tables/profiles.json.gz")["members"]


def test_a_known_member_gets_rows_that_obey_their_filters(server, registry, catalog, profiles):
    member = min(profiles)
    profile = profiles[member]
    r = server.predict([instance(member, k=5), instance(member, k=3, platform="web")])
    assert r.status_code == 200, r.text
    pages = r.json()["predictions"]
    assert len(pages) == 2 and pages[0]["request_id"] != pages[1]["request_id"]
    for page, k in zip(pages, (5, 3), strict=True):
        assert page["model_version"] == registry[1] and page["fallback"] is None
        assert [row["name"] for row in page["rows"]] == ROWS
        shown = [item["item_id"] for row in page["rows"] for item in row["items"]]
        assert len(shown) == 4 * k == len(set(shown))
        for row in page["rows"]:
            assert len(row["items"]) == k
            for item in row["items"]:
                assert 0 <= item["score"] <= 1 and 0 < item["propensity"] <= 1
                assert set(item["heads"]) == {"click", "complete", "like"}
                assert all(0 <= p <= 1 for p in item["heads"].values())
                meta = catalog[item["item_id"]]
                assert dt.date.fromisoformat(meta["release_date"]) <= SERVE_DAY.date()
                if item["propensity"] < 0.5:  # explored: any candidate
                    continue
                if row["name"] == "quick":
                    assert meta["duration_min"] <= 20
                if row["name"] == "for_your_usual":
                    assert meta["category"] == profile["usual_category"] or meta["creator"] == profile["usual_creator"]
                if row["name"] == "something_new":
                    new = (SERVE_DAY.date() - dt.date.fromisoformat(meta["release_date"])).days <= 7
                    assert new or meta["category"] not in profile["categories_tried"]


def test_every_answer_is_logged_as_a_contract_record_that_matches_it(server, registry, catalog):
    before = server.metric("recloop_log_written_total")
    sent = [instance("m0000002"), instance("someone-new", platform="smart-fridge", country=None),
            instance("m0000003", tenure_days=None)]
    sent[2]["member"].pop("preferred_category")
    oov = server.metric("recloop_oov_values_total", field="platform")
    pages = server.predict(sent).json()["predictions"]
    server.wait_for(lambda: server.metric("recloop_log_written_total") >= before + 3, "the log writer")
    assert server.metric("recloop_oov_values_total", field="platform") == oov + 1
    files = [str(p) for p in __import__("pathlib").Path(server.logs).rglob("*.jsonl")]
    assert all("/requests/dt=2026-01-19/" in f and f.endswith("-08.jsonl") for f in files), files
    records = {r["request_id"]: r for f in files for r in map(parse_request, read_lines(f))}
    for inst, page in zip(sent, pages, strict=True):
        record = records[page["request_id"]]
        assert record["model_version"] == page["model_version"] == registry[1]
        assert record["ts"] == SERVE_DAY
        assert record["member"] == {"member_id": inst["member_id"], **inst["member"]}  # exactly as sent
        assert record["context"] == inst["context"]
        flat = [(row["name"], item) for row in page["rows"] for item in row["items"]]
        assert [i["position"] for i in record["impressions"]] == list(range(len(flat)))
        for imp, (row, item) in zip(record["impressions"], flat, strict=True):
            assert (imp["item_id"], imp["row"], imp["score"], imp["propensity"]) == \
                (item["item_id"], row, item["score"], item["propensity"])
            meta = catalog[imp["item_id"]]
            assert imp["item"]["category"] == meta["category"] and imp["item"]["duration_min"] == meta["duration_min"]
            assert imp["item"]["age_days"] == (SERVE_DAY.date() - dt.date.fromisoformat(meta["release_date"])).days
    assert pages[1]["fallback"] == "unknown_member"  # no history: served from context and declared features


def test_unknown_members_and_oov_values_are_served_by_the_model_and_counted(server, registry):
    before = server.metric("recloop_fallbacks_total", reason="unknown_member")
    r = server.predict([instance("never-seen-before", platform="a-new-platform", country="ZZ")])
    assert r.status_code == 200
    [page] = r.json()["predictions"]
    assert page["model_version"] == registry[1] and page["fallback"] == "unknown_member"
    assert all(item["heads"] is not None for row in page["rows"] for item in row["items"])
    assert server.metric("recloop_fallbacks_total", reason="unknown_member") == before + 1
    assert server.metric("recloop_oov_values_total", field="country") >= 1


BAD = [
    (b'{"instances": [', "not valid JSON"),
    (b"[1, 2]", 'expected a JSON object {"instances": [...]}'),
    (b'{"inputs": []}', "without instances"),
    (b'{"instances": []}', "instances: List should have at least 1 item"),
    (json.dumps({"instances": [{"context": instance()["context"]}]}).encode(), "instances[0].member_id: Field required"),
    (json.dumps({"instances": [instance() | {"member_id": 7}]}).encode(), "instances[0].member_id: Input should be"),
    (json.dumps({"instances": [instance() | {"context": {"hour_of_day": 24, "day_of_week": 0, "platform": "ios"}}]}
                ).encode(), "instances[0].context.hour_of_day: Input should be less than or equal to 23, got 24"),
    (json.dumps({"instances": [instance() | {"context": {"hour_of_day": "8", "day_of_week": 0, "platform": "ios"}}]}
                ).encode(), "instances[0].context.hour_of_day: Input should be a valid integer"),
    (json.dumps({"instances": [instance(k=0)]}).encode(), "instances[0].k: Input should be greater than or equal to 1"),
    (json.dumps({"instances": [instance(k=MAX_K + 1)]}).encode(), f"less than or equal to {MAX_K}"),
    (json.dumps({"instances": [instance()] * (MAX_INSTANCES + 1)}).encode(), f"at most {MAX_INSTANCES} items"),
    (json.dumps({"instances": [instance() | {"rows": ["top_picks"]}]}).encode(), "unknown row 'top_picks'"),
    (json.dumps({"instances": [instance() | {"colour": "red"}]}).encode(), "instances[0].colour: Extra inputs"),
    (b'{"instances": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}', "request body too large"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_requests_get_400_naming_the_field(server, body, message):
    r = httpx.post(server.url, content=body, headers={"x-recloop-time": "2026-01-19T08:00:00Z"}, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()["error"]


def test_an_oversized_chunked_body_and_a_missing_clock_header_are_400(server, record_property):
    def chunks():
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    r = httpx.post(server.url, content=chunks(), headers={"x-recloop-time": "2026-01-19T08:00:00Z"}, timeout=30)
    assert r.status_code == 400 and "request body too large: chunked body" in r.json()["error"]
    record_property("chunked_status", r.status_code)
    record_property("chunked_error", r.json()["error"])
    r = httpx.post(server.url, json={"instances": [instance()]}, timeout=30)
    assert r.status_code == 400 and "x-recloop-time" in r.json()["error"]


def _raw_post(port: int, length: str, body: bytes) -> tuple[int, str, float]:
    """Sends a POST whose Content-Length says ``length`` but only ``body`` follows; (status, body, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("POST /v1/models/recommender:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nx-recloop-time: 2026-01-19T08:00:00Z\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()  # a server waiting for the announced body would time out here
        return response.status, response.read().decode(), time.monotonic() - started


def test_a_content_length_over_the_limit_is_refused_without_reading_the_body(server, record_property):
    for length in (str(MAX_BODY_BYTES + 1), str(10**12)):
        status, text, seconds = _raw_post(server.port, length, b'{"instances": [')  # the rest never comes
        assert status == 400, (status, text)
        assert json.loads(text)["error"] == (f"request body too large: body of {length} bytes; "
                                             f"expected at most {MAX_BODY_BYTES} bytes")
        record_property(f"status_at_{length}_bytes", status)
        record_property(f"seconds_at_{length}_bytes", round(seconds, 3))
    record_property("max_body_bytes", MAX_BODY_BYTES)
    assert server.predict([instance()]).status_code == 200  # and it goes on serving


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                     | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                                 max_size=3),
                     max_leaves=8)
_field = st.sampled_from(["member_id", "member", "context", "rows", "k", "hour_of_day", "platform", "instances"])


@st.composite
def fuzzed(draw) -> bytes:
    """Near-valid requests with one part replaced, or arbitrary JSON, or arbitrary bytes."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return json.dumps(draw(_json)).encode()
    inst = instance(k=draw(st.integers(1, 4)))
    target = draw(_field)
    value = draw(_json)
    if target in ("hour_of_day", "platform"):
        inst["context"][target] = value
    elif target == "instances":
        return json.dumps({"instances": value}).encode()
    else:
        inst[target] = value
    return json.dumps({"instances": [inst]}).encode()


def test_fuzzed_requests_never_get_a_5xx(server, record_property):
    """``RECLOOP_FUZZ_EXAMPLES`` fuzzed requests (150 by default) on one connection; counts what was sent."""
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    with httpx.Client(headers={"x-recloop-time": "2026-01-19T08:00:00Z"}, timeout=30) as client:

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=fuzzed())
        def one(body: bytes) -> None:
            r = client.post(server.url, content=body)
            statuses[r.status_code] += 1
            assert r.status_code in (200, 400), (body, r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()["error"]

        try:
            one()
        finally:
            record_property("examples_asked", FUZZ_EXAMPLES)
            record_property("requests_sent", sum(statuses.values()))
            record_property("status_histogram", json.dumps(dict(sorted(statuses.items()))))
            record_property("responses_5xx", sum(n for code, n in statuses.items() if code >= 500))
            record_property("seconds", round(time.monotonic() - started, 1))
    assert sum(statuses.values()) >= FUZZ_EXAMPLES


def test_metrics_cover_outcomes_latency_stages_model_and_log_queue(server, registry):
    server.predict([instance()])
    for name, labels in [("recloop_requests_total", {"outcome": "ok"}), ("recloop_requests_total", {"outcome":
                         "bad_request"}), ("recloop_request_seconds_count", {}), ("recloop_log_written_total", {}),
                         ("recloop_model_info", {"version": registry[1]}), ("recloop_catalog_items", {})]:
        assert server.metric(name, **labels) > 0, name
    for stage in ("retrieval", "ranking", "rows"):
        assert server.metric("recloop_stage_seconds_count", stage=stage) > 0
    assert server.metric("recloop_log_dropped_total") == 0
    assert server.metric("recloop_request_seconds_bucket", le="+Inf") == server.metric("recloop_request_seconds_count")


def test_it_listens_on_loopback_only(server, record_property):
    # the server fixture passes no --host: the CLI's default
    assert inspect.signature(serve_cli.serve).parameters["host"].default == "127.0.0.1"
    mine = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            listening = [line.split()[1] for line in f.readlines()[1:] if line.split()[3] == "0A"]
        mine += [addr for addr in listening if int(addr.split(":")[1], 16) == server.port]
    assert mine == ["0100007F:" + f"{server.port:04X}"]  # 127.0.0.1 only: not 0.0.0.0, nothing on IPv6
    record_property("listening", "127.0.0.1")
    record_property("sockets_on_port", len(mine))


# --- the registry lifecycle: nothing pushed -> a broken version -> a good one under load -> a broken one ---


def test_hot_reload_fallbacks_and_rejection(start_server, tiny_model, clean_world, tmp_path, record_property):
    hey = require_binary("hey", "the hot swap runs under a bounded load from a real load tool")
    root = str(tmp_path / "registry")
    registry = Registry(root)
    server = start_server("--registry", root, catalog=clean_world.root)

    [page] = server.predict([instance()]).json()["predictions"]
    assert (page["model_version"], page["fallback"]) == ("heuristic-fallback", "no_model")
    assert [row["name"] for row in page["rows"]] == ROWS and all(len(row["items"]) == 5 for row in page["rows"])

    broken = copy_version(tiny_model, root, "-broken", break_part="ranking")
    registry.switch(broken, None, "push", SERVE_DAY)
    server.wait_for(lambda: server.metric("recloop_model_loads_total", outcome="rejected") == 1, "the rejection")
    [page] = server.predict([instance()]).json()["predictions"]
    assert (page["model_version"], page["fallback"]) == ("heuristic-fallback", "model_load_failed")
    record_property("corrupt_model_served_by", page["model_version"])

    good = copy_version(tiny_model, root)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"instances": [instance()]}))
    load = subprocess.Popen([hey, "-n", "600", "-c", "4", "-t", "20", "-m", "POST", "-T", "application/json",
                             "-H", "x-recloop-time: 2026-01-19T08:00:00Z", "-D", str(body), "-o", "csv", server.url],
                            stdout=subprocess.PIPE, text=True)
    registry.switch(good, broken, "push", SERVE_DAY)
    out, _ = load.communicate(timeout=120)
    statuses = [line.split(",")[6] for line in out.splitlines()[1:]]
    record_property("swap_requests_sent", 600)
    record_property("swap_requests_answered_200", statuses.count("200"))
    record_property("swap_requests_failed", 600 - statuses.count("200"))
    assert len(statuses) == 600 and set(statuses) == {"200"}, set(statuses)
    server.wait_for(lambda: server.predict([instance()]).json()["predictions"][0]["model_version"] == good,
                    "the swap")
    assert server.metric("recloop_model_info", version=good) == 1

    worse = copy_version(tiny_model, root, "-worse", break_part="query_tower")
    registry.switch(worse, good, "push", SERVE_DAY)
    server.wait_for(lambda: server.metric("recloop_model_loads_total", outcome="rejected") == 2, "the rejection")
    [page] = server.predict([instance()]).json()["predictions"]
    assert (page["model_version"], page["fallback"]) == (good, None)  # the old one keeps serving
    assert server.metric("recloop_log_dropped_total") == 0
    record_property("corrupt_models_rejected", int(server.metric("recloop_model_loads_total", outcome="rejected")))
    record_property("served_after_second_rejection", page["model_version"])
    record_property("log_records_dropped", int(server.metric("recloop_log_dropped_total")))
    assert server.stop() == 0


def test_a_new_catalog_snapshot_is_indexed_without_retraining(start_server, registry, clean_world, tmp_path):
    feed = tmp_path / "feed"
    items = read_items(snapshot(clean_world.root, SERVE_DAY.date()))[:11]
    write_lines(f"{feed}/catalog/dt=2026-01-12/items.jsonl.gz", map(json.dumps, items))
    server = start_server("--registry", registry[0], catalog=str(feed))
    page = server.predict([instance(k=3)]).json()["predictions"][0]
    assert [len(row["items"]) for row in page["rows"]] == [3, 3, 3, 2]  # 11 items: the last row comes up short
    new = {"item_id": "i999999", "category": "yoga", "creator": "c00001", "duration_min": 8.0, "language": "en",
           "release_date": "2026-01-19"}
    write_lines(f"{feed}/catalog/dt=2026-01-19/items.jsonl.gz", map(json.dumps, [*items, new]))
    server.wait_for(lambda: server.metric("recloop_catalog_items") == 12, "the new catalog")
    page = server.predict([instance(k=3)]).json()["predictions"][0]
    assert page["model_version"] == registry[1] and page["fallback"] is None
    shown = {item["item_id"] for row in page["rows"] for item in row["items"]}
    assert shown == {*(i["item_id"] for i in items), "i999999"}  # the new item, scored by the same model
