"""Infra validation: the real server in a subprocess, canned requests from the eval split."""

from __future__ import annotations

import shutil

import pytest

from recloop.features.logs import read_json
from recloop.serving.infra import validate
from recloop.serving.rows import RowsConfig


def _shifted_ranker(src: str, dst: str) -> None:
    """Saves a ranker that answers every head + 2: it loads fine and returns invalid scores."""
    import tensorflow as tf

    loaded = tf.saved_model.load(src)
    signature = loaded.signatures["serving_default"]

    @tf.function
    def serve(**inputs):
        return {name: value + 2.0 for name, value in signature(**inputs).items()}

    concrete = serve.get_concrete_function(**signature.structured_input_signature[1])
    module = tf.Module()
    module.inner, module.serve = loaded, serve
    tf.saved_model.save(module, dst, signatures={"serving_default": concrete})


@pytest.fixture(scope="module")
def passed(tiny_model, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("infra-ok"))
    return out, validate(tiny_model, out, requests=60, p99_ms=1000.0)


def test_a_good_model_passes_and_the_blessing_says_what_was_checked(passed, tiny_model):
    out, blessing = passed
    assert blessing["passed"], blessing["reason"] + "\n" + "\n".join(blessing["server_output_tail"])
    assert blessing == read_json(f"{out}/infra_blessing.json")
    assert blessing["version"] == read_json(f"{tiny_model}/model_card.json")["version"]
    assert blessing["requests"] == blessing["answers_valid"] == 60
    assert blessing["logged_records"] == 1 + 10 + 60  # the first answer, the warm-up, the canned requests
    # what the candidate logged, kept so its first span in production is compared with it (validation.logged)
    (figures,) = blessing["logged"].values()
    assert list(blessing["logged"]) == [blessing["version"]] and figures["impressions"] >= 71
    assert set(figures["rows"]) <= {r.name for r in RowsConfig().rows}
    assert sum(figures["rows"].values()) == pytest.approx(1.0, abs=1e-4)
    assert 0 < figures["propensity_mean"] <= 1 and 0 <= figures["explored_share"] < 0.5
    assert 0 < blessing["latency_ms"]["p50"] <= blessing["latency_ms"]["p99"] <= 1000.0


def test_a_model_that_fails_to_load_is_rejected(tiny_model, tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(tiny_model, bad)
    (bad / "query_tower" / "saved_model.pb").write_bytes(b"truncated")
    blessing = validate(str(bad), str(tmp_path / "out"), requests=20)
    assert not blessing["passed"]
    assert "served by 'heuristic-fallback'" in blessing["reason"] and "model_load_failed" in blessing["reason"]
    assert read_json(f"{tmp_path}/out/infra_blessing.json")["passed"] is False


def test_a_model_with_invalid_output_is_rejected(tiny_model, tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(tiny_model, bad)
    shutil.rmtree(bad / "ranking")
    _shifted_ranker(f"{tiny_model}/ranking", str(bad / "ranking"))
    blessing = validate(str(bad), str(tmp_path / "out"), requests=20)
    assert not blessing["passed"]
    assert "model_load_failed" in blessing["reason"]  # its warm-up answers fail the server's own checks
    assert any("outside [0, 1]" in line for line in blessing["server_output_tail"]), blessing["server_output_tail"]


def test_a_threshold_it_cannot_meet_fails_with_the_figure(tiny_model, tmp_path):
    blessing = validate(tiny_model, str(tmp_path), requests=20, p99_ms=0.001)
    assert not blessing["passed"] and "p99 latency" in blessing["reason"] and "budget of 0.001 ms" in blessing["reason"]
