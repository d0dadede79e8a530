"""The weekly and daily pipelines under kfp.local with every location on a real S3 API server (moto on
loopback): logs, item feed, registry, run state and configs are ``s3://`` URIs, as on a cluster whose
object store is MinIO. Each component runs in its own subprocess and reaches the store through the
environment only (``AWS_ENDPOINT_URL`` and keys), like a pipeline pod."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)
from recloop import storage
from recloop.pipelines import local
from recloop.pipelines.definitions import TASKS, daily, weekly
from recloop.serving.registry import Registry

SEED = 32


@pytest.mark.slow
def test_a_week_and_a_day_with_every_location_on_s3(make_world, bucket, tmp_path):
    world = make_world(SEED, 2)
    storage.upload(world.root, f"{bucket}/logs")  # requests/, events/ and catalog/, as the server and feed wrote
    for name, text in (("validation.yaml", "max_null_share: 0.5\n"), ("gate.yaml", "{}\n"),
                       ("train.yaml", "ranking:\n  epochs: 2\n")):
        storage.write_text(f"{bucket}/config/{name}", text)
    uris = {"logs": f"{bucket}/logs", "registry": f"{bucket}/registry", "run_state": f"{bucket}/run-state"}
    week = local.run(weekly(""), {
        **uris, "start": str(world.week_start(0)), "end": str(world.week_start(1) - dt.timedelta(1)),
        "catalog": f"{bucket}/logs", "validation_config": f"{bucket}/config/validation.yaml",
        "gate_config": f"{bucket}/config/gate.yaml", "train_config": f"{bucket}/config/train.yaml",
        "epochs": 2, "infra_requests": 50}, str(tmp_path / "runs"))
    assert week.state == "SUCCEEDED", week.error
    assert list(week.tasks) == list(TASKS)
    pushed = json.loads(Path(week.artifact("push", "pushed"), "pushed.json").read_text())
    assert pushed["pushed"] and Registry(uris["registry"]).pointer().version == pushed["version"]
    assert storage.exists(f"{uris['registry']}/versions/{pushed['version']}/model_card.json")
    assert storage.listdir(uris["run_state"]) == ["previous", "previous.json", "schemas"]
    assert storage.read_json(f"{uris['run_state']}/previous.json")["span"] == (
        f"train {world.week_start(0)}..{world.week_start(1) - dt.timedelta(1)}")

    day = local.run(daily(""), {**uris, "day": str(world.week_start(1) + dt.timedelta(days=2))}, str(tmp_path / "runs"))
    assert day.state == "SUCCEEDED", day.error
    verdict = json.loads(Path(day.artifact("monitor", "validation"), "anomalies.json").read_text())
    assert not verdict["blocking"] and verdict["spans"]["reference"].startswith("train")
