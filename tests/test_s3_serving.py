"""The real server with its registry and item feed on a real S3 API server (moto on loopback): it serves the
version production points at, hot-swaps to the next push, and serves a version KServe's own storage
initializer code downloaded."""

from __future__ import annotations

import pytest
from conftest import SERVE_DAY
from test_server import instance

from recloop import storage
from recloop.serving import replicas
from recloop.serving.registry import Registry


@pytest.fixture
def s3_world(bucket, tiny_model, clean_world) -> tuple[str, str, str]:
    """The session's tiny model pushed to a registry on S3 (as version ``v`` and ``v-b``), and the item feed."""
    version = storage.read_json(f"{tiny_model}/model_card.json")["version"]
    registry = f"{bucket}/registry"
    for name in (version, f"{version}-b"):
        storage.upload(tiny_model, f"{registry}/versions/{name}")
        card = storage.read_json(f"{tiny_model}/model_card.json") | {"version": name}
        storage.write_json(f"{registry}/versions/{name}/model_card.json", card)
    storage.upload(f"{clean_world.root}/catalog", f"{bucket}/feed/catalog")
    return registry, version, f"{bucket}/feed"


def _served_version(server) -> str:
    r = server.predict([instance()])
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["model_version"]


def test_a_server_follows_the_registry_pointer_on_s3(start_server, s3_world):
    registry, version, feed = s3_world
    reg = Registry(registry)
    reg.switch(version, None, "push", SERVE_DAY)
    server = start_server("--registry", registry, catalog=feed)
    assert _served_version(server) == version
    reg.switch(f"{version}-b", version, "push", SERVE_DAY)
    server.wait_for(lambda: _served_version(server) == f"{version}-b", "the hot swap to the next push")
    reg.rollback(SERVE_DAY)
    server.wait_for(lambda: _served_version(server) == version, "the rollback")
    # the replica tells the registry what it serves, and takes its report away when it stops
    server.wait_for(lambda: [(r.version, r.pointer) for r in replicas.read(registry)] == [(version, version)],
                    "the replica's report of the rollback")
    assert server.stop() == 0 and replicas.read(registry) == []


def test_kserves_storage_initializer_downloads_a_pushed_version_that_serve_model_serves(
        start_server, s3_world, tmp_path):
    from kserve.storage import Storage

    registry, version, feed = s3_world
    # what the InferenceService's storage-initializer container runs with storageUri = the version's URI
    # (a trailing slash: kserve matches the prefix, and versions/v1 would also match versions/v10)
    local = Storage.download(f"{registry}/versions/{version}-b/", str(tmp_path / "mnt-models"))
    assert sorted(p.name for p in (tmp_path / "mnt-models").iterdir()) == sorted(
        storage.listdir(f"{registry}/versions/{version}-b"))
    server = start_server("--model", local, catalog=feed)
    assert _served_version(server) == f"{version}-b"
