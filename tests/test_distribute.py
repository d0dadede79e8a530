"""Training on two workers: two ``recloop train`` processes on loopback, joined by ``TF_CONFIG`` as a Kubeflow
TFJob joins its pods, train one model (MultiWorkerMirroredStrategy) that matches the single-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_TRAIN

from recloop.serving.infra import free_port
from recloop.trainer import distribute


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_workers_on_loopback_train_the_model_one_process_trains(tiny_ingest, tiny_model, tmp_path):
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    out = tmp_path / "export"
    procs = []
    for index in range(2):
        env = os.environ | {"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}})}
        log = (tmp_path / f"worker{index}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "recloop.cli", "train", "--data", tiny_ingest,
                                       "--out", str(out), *TINY_TRAIN], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert "training on 2 workers (2 replicas), this one the chief" in logs[0]
    assert "a worker: its export is discarded" in logs[1] and "worker done" in logs[1]
    assert not list(tmp_path.glob("export.*")), "a worker left a staging or failed export"

    two, one = _json(out / "model_card.json"), _json(Path(tiny_model) / "model_card.json")
    assert two["training"]["workers"] == 2 and one["training"]["workers"] == 1
    assert two["data"]["train_examples"] == one["data"]["train_examples"]
    for model in ("retrieval", "ranking"):  # every example once per epoch over both workers, the same stopping
        assert two["training"][model]["examples"] == one["training"][model]["examples"]
        assert two["training"][model]["best_epoch"] == one["training"][model]["best_epoch"]
        # what Keras reports is the global figure, not a sum over workers
        for a, b in zip(two["training"][model]["history"], one["training"][model]["history"], strict=True):
            for key in ("loss", "val_loss", "click_auc"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=0.01, abs=1e-3), (model, key, a, b)
    # the same global batches, the same mean gradients: the same model, up to the order of float sums
    m2 = _json(out / "metrics.json")["scorers"]["model"]
    m1 = _json(Path(tiny_model) / "metrics.json")["scorers"]["model"]
    for figure in ("auc_click", "auc_click_explored", "ndcg@10_debiased"):
        a, b = m2["ranking"]["overall"][figure], m1["ranking"]["overall"][figure]
        assert abs(a - b) <= max(0.01, m1["ranking"]["overall"][f"{figure}_se"]), (figure, a, b)
    a, b = m2["retrieval"]["explored"]["overall"], m1["retrieval"]["explored"]["overall"]
    assert abs(a["recall@100"] - b["recall@100"]) <= 2 * b["recall@100_se"], (a, b)


def test_tf_config_names_the_chief_and_the_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.workers() == 1 and distribute.is_chief()
    cluster = {"worker": ["a:1", "b:2", "c:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribute.workers() == 3 and not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief()
    with_chief = {"chief": ["m:0"], "worker": ["a:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert distribute.workers() == 2 and not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        distribute.workers()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster}))
    with pytest.raises(ValueError, match="TF_CONFIG must be"):
        distribute.workers()
