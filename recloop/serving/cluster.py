"""The KServe side of a push: the InferenceService that serves a registry version, and its rollout.

The shipped manifests (manifests/) serve by the registry pointer: the servers run ``recloop serve
--registry`` and hot-swap to whatever the pointer names, so a push is the pointer write alone and nothing
here is used. This module is the pinned-version alternative (``recloop push --inference-service``,
manifests/pinned-version/): an InferenceService on the ``recloop`` ServingRuntime (``recloop serve --model
/mnt/models``); KServe's storage initializer downloads its ``spec.predictor.model.storageUri`` (a
registry version) to /mnt/models. A push patches that field (and ``canaryTrafficPercent`` for a
canary); ``promote`` removes ``canaryTrafficPercent``.

Why a ServingRuntime and not a custom container (``spec.predictor.containers``), both documented for
a custom Python model server ("Deploy Custom Python Serving Runtime with InferenceService", "Serving
Runtimes"): with a runtime the version is ``predictor.model.storageUri``, the field the storage
initializer reads and KServe's canary example updates, so a rollout is a one-field JSON merge patch.
A custom container takes it as the ``STORAGE_URI`` env var in ``containers[0]``, and a merge patch
replaces lists whole (RFC 7386): every push would resend the container. Image, catalog and log URIs
live in the runtime, installed once per namespace.

Deployment modes, KServe 0.15: ``Serverless`` (Knative, the default in its ``inferenceservice-config``,
key ``deploy``), ``RawDeployment``, ``ModelMesh``; later releases say ``Knative`` and ``Standard``. The
``serving.kserve.io/deploymentMode`` annotation overrides the default. Canaries need Serverless mode:
Knative splits the traffic between revisions.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import kserve
from kserve import constants
from kubernetes import client as k8s

from recloop import storage

RUNTIME = "recloop"  # the ServingRuntime's name and the model format it serves
MODEL_NAME = "recommender"  # the kserve model inside: POST /v1/models/recommender:predict
PORT = 8080
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEFAULT_MODE = "Serverless"  # deploy.defaultDeploymentMode in KServe 0.15's inferenceservice-config
SPLITTING_MODES = ("serverless", "knative")  # 0.15's name and the later one, compared lower-case
# what KServe's default storage initializer downloads (pvc:// is mounted; Azure blobs are https://)
STORAGE_PREFIXES = ("gs://", "s3://", "pvc://", "hdfs://", "webhdfs://", "https://", "http://")


class ClusterError(RuntimeError):
    """An InferenceService update recloop will not send; the message says why and what to do."""


class InvalidRollout(ClusterError, ValueError):
    """An argument no update can carry: a canary percent outside 0 < P < 100, a storage URI KServe cannot read."""


class CanaryRefused(ClusterError):
    """A canary asked of an InferenceService whose deployment mode cannot split traffic."""


class NotFound(ClusterError):
    """The InferenceService does not exist (promote needs one)."""


@dataclasses.dataclass(frozen=True)
class DeploymentMode:
    """An InferenceService's deployment mode and where it was read."""

    name: str
    source: str

    @property
    def splits_traffic(self) -> bool:
        return self.name.lower() in SPLITTING_MODES


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What ``deploy`` or ``promote`` did, with the request body exactly as the client serialized it."""

    action: str  # create, patch, or none
    name: str
    namespace: str
    body: dict[str, Any] | None  # the InferenceService (create) or the JSON merge patch (patch)
    mode: DeploymentMode | None
    note: str


def check_canary_percent(percent: Any) -> int:
    """``percent`` if it is an integer with 0 < P < 100; else raises InvalidRollout naming the value."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 < percent < 100:
        raise InvalidRollout(f"canary percent must be an integer with 0 < P < 100, got {percent!r}: 0 gives the "
                             "new version no traffic and 100 is a full rollout (leave the canary out for that)")
    return percent


def check_storage_uri(uri: str) -> str:
    """``uri`` if KServe's storage initializer can download it into /mnt/models; else raises InvalidRollout."""
    if not uri.startswith(STORAGE_PREFIXES):
        raise InvalidRollout(f"storage URI {uri!r}: KServe's storage initializer reads {', '.join(STORAGE_PREFIXES)}"
                             " URIs, not a local path: use a registry on object storage or a PVC")
    return uri


def serving_runtime(namespace: str | None, image: str, catalog: str, logs: str, config_map: str | None = None,
                    credentials_secret: str | None = None) -> kserve.V1alpha1ServingRuntime:
    """The ``recloop`` ServingRuntime: ``recloop serve`` over whatever version KServe placed in /mnt/models.

    Args:
      namespace: None leaves it to ``kubectl apply -n``.
      image: a container image with recloop installed (``recloop`` on the PATH).
      catalog, logs: ``recloop serve``'s ``--catalog`` (the item feed) and ``--logs`` (request logs) URIs, or
        ``$(CATALOG_URI)``-style references to the config map's keys (Kubernetes expands them in args).
      config_map: a ConfigMap the container takes whole as its environment (manifests/recloop.env's).
      credentials_secret: a Secret with ``accesskey`` and ``secretkey`` (Kubeflow's MinIO artifact Secret),
        given to s3fs and boto3 as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    """
    env_from = [k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=config_map))] if config_map else None
    env = [k8s.V1EnvVar(name=var, value_from=k8s.V1EnvVarSource(
        secret_key_ref=k8s.V1SecretKeySelector(name=credentials_secret, key=key)))
        for key, var in storage.S3_SECRET_ENV.items()] if credentials_secret else None
    container = k8s.V1Container(
        name="kserve-container", image=image, command=["recloop"],
        args=["serve", "--model", "/mnt/models", "--catalog", catalog, "--logs", logs,
              "--host", "0.0.0.0", "--port", str(PORT)],
        env_from=env_from, env=env,
        ports=[k8s.V1ContainerPort(container_port=PORT, protocol="TCP")],
        # the server binds its port before loading the version: ready once kserve answers for the model
        readiness_probe=k8s.V1Probe(http_get=k8s.V1HTTPGetAction(path=f"/v1/models/{MODEL_NAME}", port=PORT)))
    spec = kserve.V1alpha1ServingRuntimeSpec(
        supported_model_formats=[kserve.V1alpha1SupportedModelFormat(name=RUNTIME, version="1", auto_select=True)],
        protocol_versions=["v1"], containers=[container],
        # KServe's Prometheus docs: a runtime names its metrics port and path in these annotations
        annotations={"prometheus.kserve.io/port": str(PORT), "prometheus.kserve.io/path": "/metrics"})
    return kserve.V1alpha1ServingRuntime(api_version=constants.KSERVE_V1ALPHA1, kind="ServingRuntime",
                                         metadata=k8s.V1ObjectMeta(name=RUNTIME, namespace=namespace), spec=spec)


def inference_service(name: str, namespace: str | None, storage_uri: str, mode: str = DEFAULT_MODE, cpu: str = "2",
                      memory: str = "4Gi", min_replicas: int = 1, max_replicas: int = 4
                      ) -> kserve.V1beta1InferenceService:
    """The InferenceService serving the version at ``storage_uri`` on the ``recloop`` runtime.

    Args:
      mode: the ``serving.kserve.io/deploymentMode`` annotation (Serverless: canaries possible).
      cpu, memory: requests and limits of the server container (Kubernetes quantities).
      min_replicas: 1, not 0: a cold start loads TensorFlow and the version, too slow for a request.

    Raises:
      InvalidRollout: a storage URI KServe cannot download.
    """
    size = {"cpu": cpu, "memory": memory}
    resources = k8s.V1ResourceRequirements(requests=size, limits=dict(size))
    # name=None: the SDK's default, "", would send an empty container name
    model = kserve.V1beta1ModelSpec(name=None, model_format=kserve.V1beta1ModelFormat(name=RUNTIME), runtime=RUNTIME,
                                    storage_uri=check_storage_uri(storage_uri), resources=resources)
    scrape = "serving.kserve.io/enable-prometheus-scraping"  # KServe's Prometheus docs
    metadata = k8s.V1ObjectMeta(name=name, namespace=namespace, annotations={MODE_ANNOTATION: mode, scrape: "true"})
    return kserve.V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1, kind=constants.KSERVE_KIND_INFERENCESERVICE, metadata=metadata,
        spec=kserve.V1beta1InferenceServiceSpec(predictor=kserve.V1beta1PredictorSpec(
            min_replicas=min_replicas, max_replicas=max_replicas, model=model)))


def update_patch(name: str, namespace: str, storage_uri: str, canary_percent: int | None = None
                 ) -> kserve.V1beta1InferenceService:
    """The merge patch rolling out a new version: its storageUri and the canary share.

    Without ``canary_percent`` it sets ``canaryTrafficPercent`` to null: the new version takes all
    traffic, also when an earlier canary was never promoted.

    Raises:
      InvalidRollout: a canary percent outside 0 < P < 100, a storage URI KServe cannot download.
    """
    if canary_percent is not None:
        check_canary_percent(canary_percent)
    return _patch(name, namespace, {"model": {"storageUri": check_storage_uri(storage_uri)},
                                    "canaryTrafficPercent": canary_percent})


def promote_patch(name: str, namespace: str) -> kserve.V1beta1InferenceService:
    """The merge patch promoting a canary: ``canaryTrafficPercent`` removed, as KServe's canary docs promote."""
    return _patch(name, namespace, {"canaryTrafficPercent": None})


def _patch(name: str, namespace: str, predictor: dict[str, Any]) -> kserve.V1beta1InferenceService:
    # KServeClient.patch sends a JSON merge patch (CustomObjectsApi: application/merge-patch+json), where a
    # field is removed by an explicit null. The SDK's model classes leave None attributes out when serialized,
    # so the spec is a plain dict (sanitize_for_serialization keeps a dict's nulls); api_version is read off it.
    return kserve.V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1, kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace), spec={"predictor": predictor})


def serialize(obj: Any) -> Any:
    """``obj`` as the kubernetes client puts it on the wire: camelCase keys, None attributes left out."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


def deployment_mode(client: Any, live: dict[str, Any]) -> DeploymentMode:
    """A live InferenceService's mode: its annotation, else its status, else the cluster default.

    The cluster default is ``deploy.defaultDeploymentMode`` in the ``inferenceservice-config``
    ConfigMap (namespace ``kserve``); when that cannot be read, KServe 0.15's own default, Serverless.
    """
    annotation = _at(live, "metadata", "annotations", MODE_ANNOTATION)
    if annotation:
        return DeploymentMode(annotation, f"its {MODE_ANNOTATION} annotation")
    status = _at(live, "status", "deploymentMode")
    if status:
        return DeploymentMode(status, "its status.deploymentMode")
    where = f"ConfigMap {constants.INFERENCESERVICE_SYSTEM_NAMESPACE}/{constants.INFERENCESERVICE_CONFIG_MAP_NAME}"
    try:
        config = client.core_api.read_namespaced_config_map(constants.INFERENCESERVICE_CONFIG_MAP_NAME,
                                                            constants.INFERENCESERVICE_SYSTEM_NAMESPACE)
        default = json.loads((config.data or {})["deploy"])["defaultDeploymentMode"]
    except (k8s.ApiException, KeyError, TypeError, ValueError) as e:
        reason = f"HTTP {e.status} {e.reason}" if isinstance(e, k8s.ApiException) else f"{type(e).__name__}: {e}"
        return DeploymentMode(DEFAULT_MODE, f"KServe 0.15's default; {where} unreadable ({reason})")
    return DeploymentMode(default, f"the cluster default, {where} key deploy")


def preflight(client: Any, name: str, namespace: str, canary_percent: int | None = None
              ) -> tuple[dict[str, Any] | None, DeploymentMode | None]:
    """The live InferenceService (None: absent) and its mode; sends nothing (the CLI checks before a push).

    Raises:
      InvalidRollout: a canary percent outside 0 < P < 100.
      ClusterError: the InferenceService exists but does not serve the ``recloop`` model format.
      CanaryRefused: a canary asked of an InferenceService not in Serverless mode.
      RuntimeError: the API server failed (KServeClient wraps its errors so).
    """
    if canary_percent is not None:
        check_canary_percent(canary_percent)
    live = _get(client, name, namespace)
    if live is None:
        return None, None
    found = _at(live, "spec", "predictor", "model", "modelFormat", "name")
    if found != RUNTIME:
        raise ClusterError(f"InferenceService {namespace}/{name} is not recloop's: spec.predictor.model.modelFormat"
                           f".name is {found!r}, expected {RUNTIME!r}; choose another name or recreate it")
    mode = deployment_mode(client, live)
    if canary_percent is not None and not mode.splits_traffic:
        raise CanaryRefused(f"a canary needs KServe's Serverless deployment mode (Knative splits the traffic between "
                            f"revisions); InferenceService {namespace}/{name} runs in {mode.name} mode ({mode.source})."
                            " Roll out without a canary, or recreate it with "
                            f"{MODE_ANNOTATION}: Serverless on a cluster with Knative")
    return live, mode


def deploy(client: Any, name: str, namespace: str, storage_uri: str, canary_percent: int | None = None) -> Rollout:
    """Points the InferenceService at the version in ``storage_uri``: created if absent, else patched.

    Args:
      client: a ``kserve.KServeClient`` (or an object with its ``get``, ``create``, ``patch``, ``core_api``).
      canary_percent: the new version's share of traffic (0 < P < 100); None: all of it. A created
        InferenceService gets no canary: KServe gives the first revision all traffic.

    Returns:
      The Rollout, with the body sent.

    Raises:
      InvalidRollout, ClusterError, CanaryRefused: as ``preflight``, before anything is sent.
      RuntimeError: the API server refused (KServeClient wraps its errors so).
    """
    check_storage_uri(storage_uri)
    live, mode = preflight(client, name, namespace, canary_percent)
    if live is None:
        isvc = inference_service(name, namespace, storage_uri)
        client.create(isvc, namespace=namespace)
        later = f" (nothing to split it with: a {canary_percent}% canary applies from the next push)"
        note = "created: the first revision takes all traffic" + (later if canary_percent is not None else "")
        mode = DeploymentMode(DEFAULT_MODE, f"the {MODE_ANNOTATION} annotation sent")
        return Rollout("create", name, namespace, serialize(isvc), mode, note)
    patch = update_patch(name, namespace, storage_uri, canary_percent)
    client.patch(name, patch, namespace=namespace)
    before = _at(live, "spec", "predictor", "model", "storageUri")
    share = f"{canary_percent}% of traffic (a canary)" if canary_percent is not None else "all traffic"
    return Rollout("patch", name, namespace, serialize(patch), mode,
                   f"storageUri {storage_uri} (was {before}) takes {share}")


def promote(client: Any, name: str, namespace: str) -> Rollout:
    """Moves a canary to 100%: removes ``canaryTrafficPercent`` (KServe's documented promotion).

    Raises:
      NotFound: no such InferenceService.
      RuntimeError: the API server refused (KServeClient wraps its errors so).
    """
    live = _get(client, name, namespace)
    if live is None:
        raise NotFound(f"InferenceService {namespace}/{name} does not exist: nothing to promote")
    percent = _at(live, "spec", "predictor", "canaryTrafficPercent")
    if percent is None:
        return Rollout("none", name, namespace, None, None, "no canary in progress (spec.predictor."
                       "canaryTrafficPercent is not set): the latest revision already takes all traffic")
    patch = promote_patch(name, namespace)
    client.patch(name, patch, namespace=namespace)
    return Rollout("patch", name, namespace, serialize(patch), None,
                   f"canary promoted from {percent}% to 100%: canaryTrafficPercent removed")


def _get(client: Any, name: str, namespace: str) -> dict[str, Any] | None:
    """The live InferenceService, or None when the API server answers 404."""
    try:
        return client.get(name, namespace=namespace)
    except RuntimeError as e:  # KServeClient raises RuntimeError while handling the ApiException
        cause = e.__cause__ or e.__context__
        if isinstance(cause, k8s.ApiException) and cause.status == 404:
            return None
        raise


def _at(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a level is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj
