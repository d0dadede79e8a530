"""The server's online holdout: a fixed share of members served by the heuristic, beside the model.

In-process on the session's tiny model (``Service.serve``, no HTTP); the served
simulation test (``test_served_policy.py``) runs it through ``recloop serve --holdout``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from conftest import Lines
from prometheus_client import REGISTRY
from pydantic import ValidationError
from typer.testing import CliRunner

from recloop.features.records import parse_request
from recloop.serving.clock import Clock
from recloop.serving.funnel import Query, heuristic_pages
from recloop.serving.holdout import holdout_draw, in_holdout
from recloop.serving.page import response
from recloop.serving.service import Service
from recloop.serving.settings import FALLBACK_VERSION, HOLDOUT_VERSION, ServeSettings

NOW = dt.datetime(2026, 1, 19, 8, tzinfo=dt.UTC)
SHARE = 0.3
IDS = [f"m{i:07d}" for i in range(10_000)]


def queries(members: list[str], prefix: str = "r") -> list[Query]:
    return [Query(request_id=f"{prefix}{i}", member_id=m, member={"country": "US"},
                  context={"hour_of_day": 8, "day_of_week": 0, "platform": "ios"}, day=NOW.date().toordinal(), k=4)
            for i, m in enumerate(members)]


def instances(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# a batch where held-out and model members alternate irregularly (the server batches concurrent requests)
MIXED = IDS[:40]


@pytest.fixture(scope="module")
def held() -> list[bool]:
    flags = [in_holdout(m, SHARE) for m in MIXED]
    assert 5 < sum(flags) < 35, "the batch must mix both groups"
    return flags


def make(tiny_model: str, catalog: str, holdout: float, **kw) -> Service:
    s = Service(ServeSettings(model=tiny_model, catalog=catalog, holdout=holdout, **kw),
                Clock(simulated=True, start=NOW), Lines())
    s.refresh()
    return s


@pytest.fixture(scope="module")
def with_holdout(tiny_model, clean_world) -> Service:
    return make(tiny_model, clean_world.root, SHARE)


@pytest.fixture(scope="module")
def without_holdout(tiny_model, clean_world) -> Service:
    return make(tiny_model, clean_world.root, 0.0)


# ---------------------------------------------------------------- who is held out


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_the_share_of_held_out_members_is_the_holdout(share: float) -> None:
    held = sum(in_holdout(m, share) for m in IDS)
    sd = (share * (1 - share) * len(IDS)) ** 0.5
    assert abs(held - share * len(IDS)) < 4 * sd, (held, share)
    assert not any(in_holdout(m, 0.0) for m in IDS)


def test_a_member_is_always_in_or_always_out_across_processes_and_shares() -> None:
    draws = [holdout_draw(m) for m in IDS[:50]]
    assert draws == [holdout_draw(m) for m in IDS[:50]] and all(0 <= d < 1 for d in draws)
    # another interpreter (another PYTHONHASHSEED): a restart or another worker holds out the same members
    code = ("import json; from recloop.serving.holdout import holdout_draw; "
            "print(json.dumps([holdout_draw(f'm{i:07d}') for i in range(50)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == draws
    # a larger share only adds members: raising 5% to 10% keeps the 5% held out
    assert all(in_holdout(m, 0.1) for m in IDS if in_holdout(m, 0.05))


def test_the_holdout_share_is_validated() -> None:
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValidationError, match="holdout"):
            ServeSettings(catalog="x", model="y", holdout=bad)
    from recloop.cli.app import app

    result = CliRunner().invoke(app, ["serve", "--catalog", "x", "--logs", "y", "--model", "z", "--holdout", "1"])
    assert result.exit_code == 2 and "--holdout" in result.output and "below 1" in result.output, result.output


# ---------------------------------------------------------------- what the holdout is served


def test_holdout_pages_are_the_fallback_pages_labelled_and_logged_as_holdout(with_holdout: Service, held,
                                                                            monkeypatch) -> None:
    s = with_holdout
    name = s.served.name
    before = {k: instances("recloop_instances_total", served_by=k) for k in ("holdout", "model")}
    fallbacks_before = instances("recloop_fallbacks_total", reason="holdout")
    s.log.lines.clear()
    answers = s.serve(queries(MIXED), [NOW] * len(MIXED))
    assert [a["request_id"] for a in answers] == [f"r{i}" for i in range(len(MIXED))], "answers out of order"
    records = [parse_request(line) for line in s.log.lines]
    assert [r["request_id"] for r in records] == [a["request_id"] for a in answers]
    # the fallback path for the same requests: the model fails, everyone gets the heuristic
    monkeypatch.setattr(s.served.version, "ranker", lambda **_: (_ for _ in ()).throw(RuntimeError("down")))
    fallback = Service(s.settings.model_copy(update={"holdout": 0.0}), s.clock)
    fallback.served = s.served
    fell_back = fallback.serve(queries(MIXED), [NOW] * len(MIXED))
    for h, answer, record, member, fb in zip(held, answers, records, MIXED, fell_back, strict=True):
        assert record["member"]["member_id"] == member
        if h:
            assert (answer["model_version"], answer["fallback"]) == (HOLDOUT_VERSION, "holdout")
            assert record["model_version"] == HOLDOUT_VERSION
            assert fb["fallback"] == "model_error"
            assert answer["rows"] == fb["rows"], "the holdout's page is not the fallback's"
            assert all(item["heads"] is None for row in answer["rows"] for item in row["items"])
        else:
            assert answer["model_version"] == record["model_version"] == name != FALLBACK_VERSION
            assert answer["fallback"] in (None, "unknown_member")
            assert all(item["heads"] is not None for row in answer["rows"] for item in row["items"])
    n_held = sum(held)
    assert instances("recloop_instances_total", served_by="holdout") == before["holdout"] + n_held
    assert instances("recloop_instances_total", served_by="model") == before["model"] + len(MIXED) - n_held
    assert instances("recloop_fallbacks_total", reason="holdout") == fallbacks_before  # not a failure


def test_holdout_pages_equal_heuristic_pages(with_holdout: Service, held) -> None:
    s = with_holdout
    members = [m for m, h in zip(MIXED, held, strict=True) if h][:5]
    answers = s.serve(queries(members, "h"), [NOW] * len(members))
    pages = heuristic_pages(s.served.tables, queries(members, "h"), s.settings.rows, s.settings.fallback_pool)
    assert answers == [response(p, HOLDOUT_VERSION, "holdout") for p in pages]


def test_model_members_get_the_same_pages_as_without_a_holdout(with_holdout: Service, without_holdout: Service,
                                                              held) -> None:
    mixed = with_holdout.serve(queries(MIXED), [NOW] * len(MIXED))
    plain = without_holdout.serve(queries(MIXED), [NOW] * len(MIXED))
    assert all(a["fallback"] != "holdout" and a["model_version"] == without_holdout.served.name for a in plain)
    for h, a, b in zip(held, mixed, plain, strict=True):
        if not h:
            items = lambda answer: [(r["name"], i["item_id"], i["propensity"]) for r in answer["rows"]
                                    for i in r["items"]]
            assert items(a) == items(b)
            scores = [i["score"] for r in a["rows"] for i in r["items"]]
            assert scores == pytest.approx([i["score"] for r in b["rows"] for i in r["items"]], abs=1e-5)


def test_without_a_model_holdout_members_are_still_labelled_holdout(clean_world, tmp_path, held) -> None:
    (tmp_path / "registry").mkdir()
    s = Service(ServeSettings(registry=str(tmp_path / "registry"), catalog=clean_world.root, holdout=SHARE),
                Clock(simulated=True, start=NOW), Lines())
    s.refresh()
    assert s.served.version is None and s.served.reason == "no_model"
    answers = s.serve(queries(MIXED), [NOW] * len(MIXED))
    assert [(a["model_version"], a["fallback"]) for a in answers] == \
        [(HOLDOUT_VERSION, "holdout") if h else (FALLBACK_VERSION, "no_model") for h in held]
    assert [parse_request(line)["model_version"] for line in s.log.lines] == [a["model_version"] for a in answers]
