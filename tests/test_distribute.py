"""Which process trains as what under ``TF_CONFIG``. Two workers training one model, launched as a Kubeflow TFJob
through a stand-in operator, are tested in test_manifests.py (test_train_on_two_workers_...)."""

from __future__ import annotations

import json

import pytest

from recloop.trainer import distribute


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
