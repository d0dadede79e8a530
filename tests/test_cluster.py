"""Push to KServe without a cluster: the exact objects and merge patches the SDK sends, to a mock API server."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kserve import KServeClient
from kubernetes import client as k8s
from test_cli import _flat
from test_push import _export
from typer.testing import CliRunner

from recloop.cli import registry as registry_cli
from recloop.cli.app import app
from recloop.serving import cluster
from recloop.serving.registry import Registry

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
PINNED = MANIFESTS / "pinned-version"  # the storageUri alternative this module builds; the base follows the pointer
V1 = "gs://recloop-models/registry/versions/v20260118-abcd1234"
V2 = "gs://recloop-models/registry/versions/v20260125-ef567890"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _api_error(status: int, reason: str, call: str) -> RuntimeError:
    """What KServeClient raises: a RuntimeError raised while handling the ApiException."""
    try:
        raise k8s.ApiException(status=status, reason=reason)
    except k8s.ApiException as e:
        try:
            raise RuntimeError(f"Exception when calling CustomObjectsApi->{call}: {e}\n")
        except RuntimeError as wrapped:
            return wrapped


class MockCoreApi:
    """The mock API server's ConfigMap read: ``kserve/inferenceservice-config``, or 403 when ``mode`` is None."""

    def __init__(self, mode: str | None):
        self.mode = mode

    def read_namespaced_config_map(self, name: str, namespace: str, **kwargs: Any) -> k8s.V1ConfigMap:
        assert (namespace, name) == ("kserve", "inferenceservice-config")
        if self.mode is None:
            raise k8s.ApiException(status=403, reason="Forbidden")
        return k8s.V1ConfigMap(data={"deploy": json.dumps({"defaultDeploymentMode": self.mode})})


class MockKServeClient:
    """Stands in for ``kserve.KServeClient`` and the Kubernetes API server behind it, which cannot run here.

    Same methods and parameters as KServeClient. It serializes bodies with the kubernetes ApiClient as
    CustomObjectsApi does, records every call with the body as sent, keeps InferenceServices as the API
    server would (merge patches applied per RFC 7386), and fails as KServeClient does (RuntimeError over
    the ApiException): 404 for a missing object, 500 for a method named in ``failing``.
    """

    def __init__(self, *objects: dict[str, Any], cluster_default: str | None = "Serverless",
                 failing: tuple[str, ...] = ()):
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []
        self.core_api = MockCoreApi(cluster_default)
        self.failing = failing

    def get(self, name=None, namespace=None, watch=False, timeout_seconds=600, version="v1beta1"):
        self.calls.append(("get", name, None))
        if (namespace, name) not in self.objects:
            raise _api_error(404, "Not Found", "get_namespaced_custom_object")
        return copy.deepcopy(self.objects[namespace, name])

    def create(self, inferenceservice, namespace=None, watch=False, timeout_seconds=600):
        body = self._sent("create", inferenceservice)
        if "create" in self.failing:
            raise _api_error(500, "Internal Server Error", "create_namespaced_custom_object")
        self.objects[namespace, body["metadata"]["name"]] = body
        return copy.deepcopy(body)

    def patch(self, name, inferenceservice, namespace=None, watch=False, timeout_seconds=600):
        body = self._sent("patch", inferenceservice)
        if "patch" in self.failing or (namespace, name) not in self.objects:
            raise _api_error(500 if "patch" in self.failing else 404, "refused", "patch_namespaced_custom_object")
        self.objects[namespace, name] = merge_patch(self.objects[namespace, name], body)
        return copy.deepcopy(self.objects[namespace, name])

    def _sent(self, method: str, obj: Any) -> dict[str, Any]:
        assert obj.api_version.split("/")[1] == "v1beta1"  # KServeClient reads the version off the object
        body = k8s.ApiClient().sanitize_for_serialization(obj)
        self.calls.append((method, obj.metadata.name, body))
        return body

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [body for m, _, body in self.calls if m == method]


def live(mode: str | None = "Serverless", uri: str = V1, **predictor: Any) -> dict[str, Any]:
    """A live recloop InferenceService as the API server returns it (annotation ``mode``, None: none)."""
    body = cluster.serialize(cluster.inference_service("rec", "ml", uri))
    if mode is None:
        del body["metadata"]["annotations"][cluster.MODE_ANNOTATION]
    else:
        body["metadata"]["annotations"][cluster.MODE_ANNOTATION] = mode
    body["spec"]["predictor"].update(predictor)
    body["status"] = {"url": "http://rec.ml.example.com"}
    return body


def test_the_mock_takes_the_parameters_kserve_client_takes():
    for method in ("get", "create", "patch"):
        ours, theirs = (inspect.signature(getattr(c, method)).parameters for c in (MockKServeClient, KServeClient))
        assert list(ours) == list(theirs), method
    assert list(inspect.signature(MockCoreApi.read_namespaced_config_map).parameters)[:3] == list(
        inspect.signature(k8s.CoreV1Api.read_namespaced_config_map).parameters)[:3]


def test_the_inference_service_as_the_sdk_sends_it():
    assert cluster.serialize(cluster.inference_service("rec", "ml", V1)) == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "rec", "namespace": "ml",
                     "annotations": {"serving.kserve.io/deploymentMode": "Serverless",
                                     "serving.kserve.io/enable-prometheus-scraping": "true"}},
        "spec": {"predictor": {
            "minReplicas": 1, "maxReplicas": 4,
            "model": {"modelFormat": {"name": "recloop"}, "runtime": "recloop", "storageUri": V1,
                      "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                    "limits": {"cpu": "2", "memory": "4Gi"}}}}}}
    runtime = cluster.serialize(cluster.serving_runtime("ml", "img:1", "gs://b/catalog", "gs://b/logs"))
    assert runtime["spec"]["supportedModelFormats"] == [{"name": "recloop", "version": "1", "autoSelect": True}]
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container" and container["command"] == ["recloop"]
    assert container["args"] == ["serve", "--model", "/mnt/models", "--catalog", "gs://b/catalog", "--logs",
                                 "gs://b/logs", "--host", "0.0.0.0", "--port", "8080"]
    assert container["readinessProbe"] == {"httpGet": {"path": "/v1/models/recommender", "port": 8080}}


def test_the_pinned_version_manifests_are_the_built_objects():
    """manifests/pinned-version/, with its placeholders as arguments, is exactly what the builders produce; its
    runtime reads the base's ConfigMap and Secret, as the base's pointer-following server does."""
    isvc = yaml.safe_load((PINNED / "inferenceservice.yaml").read_text())
    assert isvc == cluster.serialize(cluster.inference_service("recloop", None,
                                                               "s3://recloop/registry/versions/VERSION"))
    runtime = yaml.safe_load((PINNED / "servingruntime.yaml").read_text())
    assert runtime == cluster.serialize(cluster.serving_runtime(
        None, "IMAGE_REGISTRY/recloop:TAG", "$(CATALOG_URI)", "$(LOGS_URI)", "recloop-config",
        "mlpipeline-minio-artifact"))
    base = next(d for d in yaml.safe_load_all((MANIFESTS / "inferenceservice.yaml").read_text())
                if d["kind"] == "InferenceService")["spec"]["predictor"]["containers"][0]
    assert (runtime["spec"]["containers"][0]["envFrom"], runtime["spec"]["containers"][0]["env"]) == (
        base["envFrom"], base["env"])
    assert "namespace" not in isvc["metadata"] and "namespace" not in runtime["metadata"]  # kubectl apply -n
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]  # the ISVC uses it
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]}


def test_the_patch_bodies_are_json_merge_patches_with_explicit_nulls():
    head = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "rec", "namespace": "ml"}}
    canary = cluster.serialize(cluster.update_patch("rec", "ml", V2, 10))
    assert canary == {**head, "spec": {"predictor": {"model": {"storageUri": V2}, "canaryTrafficPercent": 10}}}
    full = cluster.serialize(cluster.update_patch("rec", "ml", V2))
    assert full == {**head, "spec": {"predictor": {"model": {"storageUri": V2}, "canaryTrafficPercent": None}}}
    assert '"canaryTrafficPercent": null' in json.dumps(full)  # a merge patch removes a field with null
    promote = cluster.serialize(cluster.promote_patch("rec", "ml"))
    assert promote == {**head, "spec": {"predictor": {"canaryTrafficPercent": None}}}
    after = merge_patch(live(canaryTrafficPercent=10), promote)
    assert "canaryTrafficPercent" not in after["spec"]["predictor"]
    assert after["spec"]["predictor"]["model"]["modelFormat"] == {"name": "recloop"}  # the rest is kept


@pytest.mark.parametrize("percent", [0, 100, -5, 150, 12.5, True, "10"])
def test_a_canary_percent_must_be_an_integer_strictly_between_0_and_100(percent):
    client = MockKServeClient(live())
    with pytest.raises(cluster.InvalidRollout, match=rf"0 < P < 100, got {percent!r}"):
        cluster.deploy(client, "rec", "ml", V2, percent)
    assert client.calls == []  # refused before asking the cluster anything


def test_a_storage_uri_the_storage_initializer_cannot_download_is_refused():
    for uri in ("/srv/registry/versions/v1", "file:///srv/registry/versions/v1", "memory://reg/versions/v1"):
        with pytest.raises(cluster.InvalidRollout, match="not a local path"):
            cluster.deploy(MockKServeClient(), "rec", "ml", uri)
    for uri in (V1, "s3://b/registry/versions/v1", "pvc://models/registry/versions/v1"):
        assert cluster.check_storage_uri(uri) == uri


def test_deploy_creates_the_inference_service_then_patches_it():
    client = MockKServeClient()
    rollout = cluster.deploy(client, "rec", "ml", V1, canary_percent=10)
    assert [c[0] for c in client.calls] == ["get", "create"]
    assert rollout.action == "create" and "first revision takes all traffic" in rollout.note
    assert client.sent("create") == [rollout.body] == [cluster.serialize(cluster.inference_service("rec", "ml", V1))]
    assert "canaryTrafficPercent" not in rollout.body["spec"]["predictor"]  # nothing to split with yet

    rollout = cluster.deploy(client, "rec", "ml", V2, canary_percent=10)
    assert [c[0] for c in client.calls[2:]] == ["get", "patch"] and rollout.action == "patch"
    assert client.sent("patch") == [rollout.body] == [cluster.serialize(cluster.update_patch("rec", "ml", V2, 10))]
    assert rollout.mode == cluster.DeploymentMode("Serverless", f"its {cluster.MODE_ANNOTATION} annotation")
    predictor = client.objects["ml", "rec"]["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10 and predictor["model"]["storageUri"] == V2
    assert predictor["model"]["runtime"] == "recloop" and predictor["minReplicas"] == 1

    cluster.deploy(client, "rec", "ml", V1)  # no canary: the new version takes all traffic
    predictor = client.objects["ml", "rec"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and predictor["model"]["storageUri"] == V1


@pytest.mark.parametrize(("annotation", "status", "cluster_default", "source"), [
    ("RawDeployment", None, "Serverless", "its serving.kserve.io/deploymentMode annotation"),
    ("Standard", None, "Serverless", "its serving.kserve.io/deploymentMode annotation"),
    (None, "RawDeployment", "Serverless", "its status.deploymentMode"),
    (None, None, "RawDeployment", "the cluster default, ConfigMap kserve/inferenceservice-config key deploy"),
])
def test_a_canary_is_refused_where_kserve_cannot_split_traffic(annotation, status, cluster_default, source):
    obj = live(annotation)
    if status:
        obj["status"]["deploymentMode"] = status
    client = MockKServeClient(obj, cluster_default=cluster_default)
    with pytest.raises(cluster.CanaryRefused) as refused:
        cluster.deploy(client, "rec", "ml", V2, canary_percent=10)
    message = str(refused.value)
    assert "needs KServe's Serverless deployment mode" in message and "Knative" in message
    assert f"runs in {annotation or status or cluster_default} mode ({source})" in message
    assert client.sent("patch") == []
    rollout = cluster.deploy(client, "rec", "ml", V2)  # a full rollout works in any mode
    assert rollout.action == "patch" and client.objects["ml", "rec"]["spec"]["predictor"]["model"]["storageUri"] == V2


def test_the_mode_falls_back_to_kserves_default_when_the_config_map_is_unreadable():
    client = MockKServeClient(live(None), cluster_default=None)  # RBAC: 403 on kserve/inferenceservice-config
    rollout = cluster.deploy(client, "rec", "ml", V2, canary_percent=25)
    assert rollout.mode.name == "Serverless" and "unreadable (HTTP 403 Forbidden)" in rollout.mode.source
    assert client.objects["ml", "rec"]["spec"]["predictor"]["canaryTrafficPercent"] == 25


def test_deploy_leaves_an_inference_service_of_another_model_format_alone():
    other = live()
    other["spec"]["predictor"]["model"]["modelFormat"] = {"name": "sklearn"}
    client = MockKServeClient(other)
    with pytest.raises(cluster.ClusterError, match="modelFormat.name is 'sklearn', expected 'recloop'"):
        cluster.deploy(client, "rec", "ml", V2)
    assert client.sent("patch") == []


def test_promote_removes_the_canary_percent():
    client = MockKServeClient(live(uri=V2, canaryTrafficPercent=10))
    rollout = cluster.promote(client, "rec", "ml")
    assert rollout.action == "patch" and "from 10% to 100%" in rollout.note
    assert client.sent("patch") == [rollout.body] == [cluster.serialize(cluster.promote_patch("rec", "ml"))]
    predictor = client.objects["ml", "rec"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and predictor["model"]["storageUri"] == V2
    again = cluster.promote(client, "rec", "ml")
    assert again.action == "none" and again.body is None and len(client.sent("patch")) == 1
    with pytest.raises(cluster.NotFound, match="ml/nope does not exist"):
        cluster.promote(client, "nope", "ml")


def test_cli_push_to_the_registry_and_the_inference_service_then_promote(bucket, tmp_path, monkeypatch):
    client = MockKServeClient()
    monkeypatch.setattr(registry_cli, "kserve_client", lambda: client)
    reg, runner = f"{bucket}/registry", CliRunner()
    target = ["--inference-service", "rec", "--namespace", "ml"]

    r = runner.invoke(app, ["push", "--model", _export(tmp_path / "a", "va"), "--registry", reg, *target])
    out = _flat(r.output)
    assert r.exit_code == 0, r.output
    assert "production is now va" in out and "InferenceService ml/rec created" in out
    assert client.sent("create")[0]["spec"]["predictor"]["model"]["storageUri"] == (
        f"{bucket}/registry/versions/va") == Registry(reg).version_dir("va")

    r = runner.invoke(app, ["push", "--model", _export(tmp_path / "b", "vb", baseline="va"), "--registry", reg,
                            *target, "--canary-percent", "10"])
    out = _flat(r.output)
    assert r.exit_code == 0, r.output
    assert "takes 10% of traffic (a canary)" in out and '"canaryTrafficPercent": 10' in out
    assert client.sent("patch") == [cluster.serialize(cluster.update_patch("rec", "ml", f"{reg}/versions/vb", 10))]

    r = runner.invoke(app, ["promote", *target])
    out = _flat(r.output)
    assert r.exit_code == 0, r.output
    assert "ml/rec patched" in out and "from 10% to 100%" in out and '"canaryTrafficPercent": null' in out
    predictor = client.objects["ml", "rec"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and predictor["model"]["storageUri"] == f"{reg}/versions/vb"
    assert [p.version for p in Registry(reg).history()] == ["va", "vb"]


def test_cli_push_refuses_before_pushing_what_the_cluster_cannot_do(bucket, tmp_path, monkeypatch):
    client = MockKServeClient(live("RawDeployment"))
    monkeypatch.setattr(registry_cli, "kserve_client", lambda: client)
    reg, model = f"{bucket}/registry", _export(tmp_path / "a", "va")
    target = ["--inference-service", "rec", "--namespace", "ml"]
    for args, code, message in (
            ([*target, "--canary-percent", "10"], 1, "needs KServe's Serverless deployment mode"),
            ([*target, "--canary-percent", "100"], 2, "0 < P < 100, got 100"),
            (["--canary-percent", "10"], 2, "go with --inference-service"),
            (["--inference-service", "rec"], 2, "needs --namespace")):
        r = CliRunner().invoke(app, ["push", "--model", model, "--registry", reg, *args])
        assert r.exit_code == code and message in _flat(r.output), r.output
        assert code == 2 or "(nothing was pushed)" in _flat(r.output)
    r = CliRunner().invoke(app, ["push", "--model", model, "--registry", str(tmp_path / "local"), *target])
    assert r.exit_code == 2 and "not a local path" in _flat(r.output), r.output
    assert Registry(reg).pointer() is None and client.sent("patch") == []


def test_cli_push_says_when_the_pointer_moved_but_the_inference_service_did_not(bucket, tmp_path, monkeypatch):
    client = MockKServeClient(live(), failing=("patch",))
    monkeypatch.setattr(registry_cli, "kserve_client", lambda: client)
    reg = f"{bucket}/registry"
    r = CliRunner().invoke(app, ["push", "--model", _export(tmp_path / "a", "va"), "--registry", reg,
                                 "--inference-service", "rec", "--namespace", "ml"])
    out = _flat(r.output)
    assert r.exit_code == 1, r.output
    assert "registry pointer moved, but InferenceService ml/rec was NOT updated" in out and "(500)" in out
    assert "kubectl patch inferenceservice rec -n ml --type merge" in out and "recloop rollback" in out
    assert Registry(reg).pointer().version == "va"
    assert client.objects["ml", "rec"]["spec"]["predictor"]["model"]["storageUri"] == V1  # unchanged
