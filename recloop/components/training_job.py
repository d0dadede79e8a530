"""The training step on several workers: a Kubeflow ``TFJob`` (Training Operator v1.9, ``kubeflow.org/v1``).

The weekly pipeline's train task, given ``train_workers`` > 1, creates a TFJob whose workers each run
``recloop train`` on the examples' object-store URIs, waits for it, and copies the chief's export into its
model artifact. The operator starts one pod per worker and sets ``TF_CONFIG`` in each (its
``genTFConfigJSONStr``: ``{"cluster": {"worker": ["<job>-worker-<i>.<ns>.svc:2222", ...]}, "task": {"type":
"worker", "index": i}}``, pkg/controller.v1/tensorflow/tensorflow.go at v1.9.0), which ``trainer.distribute``
reads. Worker 0 is the chief; the job succeeds when it does (the default ``successPolicy``). The operator finds
the TensorFlow container by its name, ``tensorflow``, and its port by ``tfjob-port`` (2222 by default,
pkg/apis/kubeflow.org/v1/tensorflow_types.go). The manifest is validated against the v1.9.0 CRD in the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recloop import storage

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
PORT = 2222
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"  # a pod's own namespace


class TrainingJobError(RuntimeError):
    """A TFJob that failed, or did not finish in time; the message names the job and its last condition."""


def manifest(name: str, namespace: str, image: str, workers: int, args: Sequence[str],
             settings: Mapping[str, Any], extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A TFJob of ``workers`` workers, each running ``recloop train ARGS`` on ``image``.

    Args:
      settings: what the pipeline gives the train task (``pipelines.definitions``): ``resources``, each worker's
        ``cpu_request``, ``cpu_limit``, ``memory_request`` and ``memory_limit`` (the train task's own);
        ``credentials_secret`` and ``config_map``, where the pods take the object store's settings from (None:
        not set).
      extra_env: more environment variables of every worker (the feature declaration's name).
    """
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted((extra_env or {}).items())]
    if settings.get("credentials_secret"):
        variables += [{"name": var, "valueFrom": {"secretKeyRef": {"name": settings["credentials_secret"], "key": key}}}
                      for key, var in storage.S3_SECRET_ENV.items()]
    if settings.get("config_map"):
        variables += [{"name": var, "valueFrom": {"configMapKeyRef": {"name": settings["config_map"], "key": var}}}
                      for var in storage.S3_CONFIG_ENV]
    r = settings.get("resources", {})
    container: dict[str, Any] = {
        "name": "tensorflow", "image": image, "command": ["recloop", "train", *args],
        "ports": [{"name": "tfjob-port", "containerPort": PORT}], "env": variables}
    if r:
        container["resources"] = {"requests": {"cpu": r["cpu_request"], "memory": r["memory_request"]},
                                  "limits": {"cpu": r["cpu_limit"], "memory": r["memory_limit"]}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "recloop", "app.kubernetes.io/component": "train"}},
        "spec": {
            # a failed pod is not restarted by the job: the pipeline task's own retries start a new job
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0, "ttlSecondsAfterFinished": 86_400},
            "tfReplicaSpecs": {"Worker": {"replicas": workers, "restartPolicy": "Never",
                                          "template": {"spec": {"containers": [container]}}}}}}


def own_namespace(default: str = "kubeflow") -> str:
    """The namespace of the pod this runs in (its service account's), else ``default``."""
    try:
        with open(NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or default
    except OSError:
        return default


def condition(job: Mapping[str, Any]) -> tuple[str | None, str]:
    """The job's newest true condition (``Created``, ``Running``, ``Restarting``, ``Succeeded``, ``Failed``) and
    its message; ``(None, "")`` before the operator has seen it."""
    found = [c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"]
    if not found:
        return None, ""
    last = found[-1]
    return last.get("type"), last.get("message", "")


def run(api: Any, job: Mapping[str, Any], *, timeout_s: float, poll_s: float = 5.0,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Creates ``job`` through ``api`` (a ``kubernetes.client.CustomObjectsApi``) and waits until it succeeds.

    Returns:
      The job as the API server last returned it.

    Raises:
      TrainingJobError: when it fails, or is not done within ``timeout_s`` (then it is deleted).
    """
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    replicas = job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    progress(f"TFJob {namespace}/{name} created: {replicas} workers")
    deadline, seen = time.monotonic() + timeout_s, None
    while True:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, message = condition(current)
        if state != seen:
            progress(f"TFJob {name}: {state or 'waiting for the operator'}{f' ({message})' if message else ''}")
            seen = state
        if state == "Succeeded":
            return current
        if state == "Failed":
            raise TrainingJobError(f"TFJob {namespace}/{name} failed: {message or 'no message'}; its pods' logs say "
                                   f"why (kubectl logs -n {namespace} -l training.kubeflow.org/job-name={name})")
        if time.monotonic() > deadline:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise TrainingJobError(f"TFJob {namespace}/{name} not done after {timeout_s:.0f} s (last condition: "
                                   f"{state}); deleted")
        time.sleep(poll_s)
