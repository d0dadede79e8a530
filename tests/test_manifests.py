"""The kustomize base in manifests/, rendered by the real kubectl: core kinds validated against Kubernetes' own
schemas and the custom resources against their CRDs' (KServe 0.15.2, the Prometheus Operator), no namespace but the
kustomization's, one set of site values (manifests/recloop.env) for the server and the pipeline, the autoscaling
target recomputed from the benchmark, the PodMonitor checked against what the alerts group by, the RBAC exercised
by recloop's push and promote through the real KServe SDK against a stand-in API server that enforces it, the alert
rules checked and unit-tested by promtool."""

from __future__ import annotations

import ast
import copy
import functools
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from conftest import free_port, require_binary
from kserve import KServeClient
from kubernetes import client as k8s

from recloop import storage
from recloop.cli.app import app
from recloop.pipelines.kfp_spec import VALUES, load_spec, read_values
from recloop.serving import cluster
from recloop.serving.metrics import BUCKETS

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
CRDS = Path(__file__).resolve().parent / "data" / "crds"  # README.md there names each schema's source and commit
NAMESPACE, SA, SERVER_SA = "recloop", "recloop-pipeline", "recloop-server"
SECRET, CONFIG_MAP = "mlpipeline-minio-artifact", "recloop-config"
CRD_KINDS = {"InferenceService", "ServingRuntime", "PrometheusRule", "PodMonitor"}  # not in kubernetes-validate's
K8S_VERSIONS = ("1.29", "1.37")  # Kubernetes releases the schemas are checked at: a recent-cluster range
V1, V2 = "gs://recloop-models/registry/versions/v1", "gs://recloop-models/registry/versions/v2"
# kubectl binaries besides the one on the PATH whose rendering must be the same (os.pathsep-separated), e.g.
# Debian 12's kubectl 1.20 (kustomize v2.0.3) next to a recent one (kustomize v5)
EXTRA_KUBECTL = "RECLOOP_EXTRA_KUBECTL"


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


def kustomize(directory: Path, kubectl: str | None = None) -> list[dict[str, Any]]:
    kubectl = kubectl or require_binary("kubectl",
                                        "kubectl kustomize renders the manifests (Debian: kubernetes-client)")
    proc = run([kubectl, "kustomize", str(directory)])
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS)


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def predictor(objects: list[dict]) -> dict[str, Any]:
    [isvc] = find(objects, "InferenceService")
    return isvc["spec"]["predictor"]


def test_the_base_renders_what_it_lists(rendered):
    got = sorted((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered)
    assert got == sorted([
        ("InferenceService", NAMESPACE, "recloop"), ("ServiceAccount", NAMESPACE, SERVER_SA),
        ("PodMonitor", NAMESPACE, "recloop-serving"), ("PrometheusRule", NAMESPACE, "recloop-serving"),
        ("ConfigMap", NAMESPACE, CONFIG_MAP), ("ServiceAccount", NAMESPACE, SA),
        *[(kind, NAMESPACE, f"{SA}-kfp-runtime") for kind in ("Role", "RoleBinding")]])


def test_other_kubectl_versions_render_the_same(rendered):
    extra = [p for p in os.environ.get(EXTRA_KUBECTL, "").split(os.pathsep) if p]
    if not extra:
        message = f"${EXTRA_KUBECTL} names no other kubectl (e.g. Debian 12's 1.20, kustomize v2.0.3); .ci/run sets it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for kubectl in extra:
        assert kustomize(MANIFESTS, kubectl) == rendered, kubectl


def test_no_file_names_a_namespace_the_kustomization_sets_it(rendered, tmp_path):
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    for file in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / file).read_text()):
            assert "namespace" not in doc["metadata"], f"{file}: {doc['kind']} {doc['metadata']['name']}"
            assert all("namespace" not in s for s in doc.get("subjects", [])), f"{file}: {doc['metadata']['name']}"
    copy_dir = tmp_path / "manifests"  # a profile namespace of one's own: one line to change
    shutil.copytree(MANIFESTS, copy_dir)
    (copy_dir / "kustomization.yaml").write_text(
        (MANIFESTS / "kustomization.yaml").read_text().replace(f"namespace: {NAMESPACE}\n", "namespace: team-a\n"))
    moved = kustomize(copy_dir)
    assert {o["metadata"]["namespace"] for o in moved} == {"team-a"}
    assert [s["namespace"] for b in find(moved, "RoleBinding") for s in b["subjects"]] == ["team-a"]


def test_core_resources_validate_against_kubernetes_schemas(rendered):
    for obj in rendered:
        if obj["kind"] in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # strict: an unknown field is an error
    role = copy.deepcopy(find(rendered, "Role", f"{SA}-kfp-runtime")[0])
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")  # a typo the schemas must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, K8S_VERSIONS[-1], strict=True)


# ---------------------------------------------------------------- custom resources against their CRDs


def strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema with unknown fields refused (additionalProperties: false wherever it lists
    properties and does not preserve unknown fields): the API server would silently prune them, and kubectl's
    strict field validation refuses them. Recurses through the schema keywords only, not through field names."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(s) for name, s in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(s) for s in out[key]]
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) -> a validator of the vendored CRD version's schema (OpenAPI v3.0: draft 4 semantics)."""
    validators = {}
    for path in sorted(CRDS.glob("*.json.gz")):
        crd = json.loads(gzip.decompress(path.read_bytes()))
        schema = strict(crd["openAPIV3Schema"])  # no check_schema: its patterns are Go's (RE2), e.g. ^(?i)(a|b)?$
        validators[f"{crd['group']}/{crd['version']}", crd["kind"]] = jsonschema.Draft4Validator(schema)
    return validators


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validators()[obj["apiVersion"], obj["kind"]]
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def pinned_version() -> list[dict[str, Any]]:
    """manifests/pinned-version/: not kustomized (kubectl apply -n NS -f): its files as written."""
    return [yaml.safe_load(p.read_text()) for p in sorted((MANIFESTS / "pinned-version").glob("*.yaml"))]


def test_custom_resources_validate_against_their_crds(rendered, record_property):
    sources = {json.loads(gzip.decompress(p.read_bytes()))["tag"] for p in CRDS.glob("*.json.gz")}
    # kserve==0.15.2 (pyproject.toml), prometheus-operator, the Training Operator (the TFJob: test at the end)
    assert sources == {"v0.15.2", "v0.93.0", "v1.9.0"}
    checked = [o for o in rendered + pinned_version() if o["kind"] in CRD_KINDS]
    assert sorted(o["kind"] for o in checked) == sorted(
        ["InferenceService", "InferenceService", "PodMonitor", "PrometheusRule", "ServingRuntime"])
    for obj in checked:
        assert crd_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"
    record_property("crd_validated", ", ".join(f"{o['kind']} {o['apiVersion']}" for o in checked))


@pytest.mark.parametrize(("kind", "path", "value", "message"), [
    ("InferenceService", ("spec", "predictor", "scaleMetrics"), "rps", "'scaleMetrics' was unexpected"),
    ("InferenceService", ("spec", "predictor", "scaleMetric"), "qps", "'qps' is not one of"),
    ("InferenceService", ("spec", "predictor", "scaleTarget"), "185", "'185' is not of type 'integer'"),
    ("InferenceService", ("spec", "predictor", "containers", 0, "envFrom", 0, "configMapRef", "nam"), "x",
     "'nam' was unexpected"),
    ("PodMonitor", ("spec", "podMetricsEndpoints", 0, "paths"), "/metrics", "'paths' was unexpected"),
    ("PodMonitor", ("spec", "selector"), None, "'selector' is a required property"),
    ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "alerts"), "x", "'alerts' was unexpected"),
])
def test_the_crd_schemas_catch_typos_and_wrong_values(rendered, kind, path, value, message):
    obj = copy.deepcopy(find(rendered, kind)[0])
    *parents, last = path
    node = functools.reduce(lambda n, k: n[k], parents, obj)
    node.pop(last) if value is None else node.__setitem__(last, value)
    assert any(message in e for e in crd_errors(obj)), crd_errors(obj)


# ---------------------------------------------------------------- the server: pointer, site values, autoscaling


def test_the_config_map_is_the_values_file_schedule_reads(rendered):
    [config_map] = find(rendered, "ConfigMap", CONFIG_MAP)
    values = read_values(str(ROOT / VALUES))  # what `recloop schedule --values` fills the recurring run from
    assert config_map["data"] == values
    assert {"REGISTRY_URI", "LOGS_URI", "CATALOG_URI", "RUN_STATE_URI", "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION"} <= set(values)
    assert set(storage.S3_CONFIG_ENV) <= set(values)  # what every pipeline task takes from this ConfigMap
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(values)  # credentials: the Secret only


def test_the_server_follows_the_registry_pointer_with_the_site_values(rendered):
    spec = predictor(rendered)
    [container] = spec["containers"]
    assert container["name"] == "kserve-container" and "model" not in spec  # no storageUri: no storage initializer
    assert container["image"] == "IMAGE_REGISTRY/recloop:TAG"  # kustomization.yaml's images:
    assert container["command"] == ["recloop"] and container["args"] == [
        "serve", "--registry", "$(REGISTRY_URI)", "--catalog", "$(CATALOG_URI)", "--logs", "$(LOGS_URI)",
        "--host", "0.0.0.0", "--port", "8080"]
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_MAP}}]
    assert container["env"] == [{"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}
                                for key, var in storage.S3_SECRET_ENV.items()]
    # Kubernetes expands $(VAR) in args from the container's environment: each is a key of the ConfigMap
    values = find(rendered, "ConfigMap", CONFIG_MAP)[0]["data"]
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: values[m[1]], a) for a in container["args"]]
    assert "$(" not in " ".join(expanded)
    # recloop's own command line takes them (parsed as `recloop serve` would, not run)
    serve = typer.main.get_command(app).commands["serve"]
    params = serve.make_context("serve", expanded[1:]).params
    assert (params["registry"], params["logs"], params["port"]) == (values["REGISTRY_URI"], values["LOGS_URI"], 8080)
    # the pipeline's parameters name the same keys: the server logs where the next run reads
    run_spec = yaml.safe_load((MANIFESTS / "recurring-run.yaml").read_text())["parameters"]
    assert (run_spec["logs"], run_spec["registry"], run_spec["catalog"]) == (
        "${LOGS_URI}", "${REGISTRY_URI}", "${CATALOG_URI}")
    assert [p["containerPort"] for p in container["ports"]] == [cluster.PORT]
    [account] = find(rendered, "ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False  # the server calls no Kubernetes API


def test_the_pinned_version_runtime_takes_the_same_values(rendered):
    [runtime] = [o for o in pinned_version() if o["kind"] == "ServingRuntime"]
    [container] = runtime["spec"]["containers"]
    assert (container["envFrom"], container["env"]) == (predictor(rendered)["containers"][0]["envFrom"],
                                                        predictor(rendered)["containers"][0]["env"])
    serve = typer.main.get_command(app).commands["serve"]
    assert serve.make_context("serve", container["args"][1:]).params["model"] == "/mnt/models"


FRACTION = 0.6  # of a pod's measured throughput within the latency alert: manifests/inferenceservice.yaml says why


def test_the_autoscaling_target_is_a_fraction_of_the_measured_throughput_within_the_latency_alert(rendered):
    runs = json.loads((ROOT / "bench/results/serving.json").read_text())["figures"]["runs"]["numpy"]  # the default
    [rule] = [r for g in find(rendered, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]
              if r["alert"] == "RecloopLatencyP99High"]
    budget_ms = float(re.search(r">\s*([\d.]+)\s*$", rule["expr"].strip())[1]) * 1000
    within = [r for r in runs if r["ms"]["p99"] <= budget_ms and r["errors"] == 0]
    assert [r["clients"] for r in within] == [1, 8, 32] and budget_ms == 250  # 32 clients: p99 115 ms
    measured = max(r["throughput_rps"] for r in within)
    spec = predictor(rendered)
    assert (spec["scaleMetric"], spec["scaleTarget"]) == ("rps", math.floor(FRACTION * measured)) == ("rps", 185)
    # Knative aims at target x utilization: 100% so that the target is the number aimed at
    assert spec["annotations"]["autoscaling.knative.dev/target-utilization-percentage"] == "100"
    isvc = find(rendered, "InferenceService")[0]
    assert isvc["metadata"]["annotations"][cluster.MODE_ANNOTATION] == "Serverless"  # KPA: rps (HPA: cpu, memory)
    assert spec["minReplicas"] >= 2 and spec["maxReplicas"] * spec["scaleTarget"] > max(
        r["throughput_rps"] for r in runs)


# ---------------------------------------------------------------- scraping: the PodMonitor and the alerts

# the labels a PodMonitor's targets carry (prometheus-operator): job is <namespace>/<PodMonitor name>
POD_TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}


def test_the_podmonitor_scrapes_the_server_pods(rendered):
    [monitor] = find(rendered, "PodMonitor")
    isvc = find(rendered, "InferenceService")[0]
    # the labels KServe puts on every predictor pod of the InferenceService
    labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor"}
    assert monitor["spec"]["selector"] == {"matchLabels": labels}
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace: the InferenceService's
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["targetPort"] == predictor(rendered)["containers"][0]["ports"][0]["containerPort"]
    assert endpoint["path"] == "/metrics" and "/metrics" in string_literals()  # the server's route
    # instance = the pod's name: the name each replica reports under in REGISTRY/serving/<name>.json
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "instance"}]


def test_the_alerts_group_by_labels_the_podmonitor_gives(rules_spec, rendered):
    metric_labels = {label for _, labels in metric_families().values() for label in labels} | {"le"}
    [monitor] = find(rendered, "PodMonitor")
    for alert in (r for g in rules_spec["groups"] for r in g["rules"]):
        text = alert["expr"] + " ".join(alert["annotations"].values())
        used = {label.strip() for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text)
                for label in group.split(",") if label.strip()}
        used |= set(re.findall(r"\$labels\.(\w+)", text))
        assert used - metric_labels <= POD_TARGET_LABELS, f"{alert['alert']}: {used - metric_labels}"
        for job in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', text):  # none today; if one appears, it is the PodMonitor's
            assert job == f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}", alert["alert"]


# ---------------------------------------------------------------- RBAC


def allowed(objects: list[dict], sa: tuple[str, str], verb: str, group: str, resource: str, namespace: str,
            name: str | None) -> bool:
    """Kubernetes' RBAC decision for a service account (namespace, name), from Roles and RoleBindings only."""
    for binding in find(objects, "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        if ns != namespace or not any(s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) == sa
                                      for s in binding["subjects"]):
            continue
        assert binding["roleRef"]["kind"] == "Role", binding
        for role in find(objects, "Role", binding["roleRef"]["name"]):
            for rule in role["rules"] if role["metadata"]["namespace"] == ns else ():
                names = rule.get("resourceNames")
                if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"] \
                        and (not names or name in names):  # a create has no name: resourceNames cannot match it
                    return True
    return False


def test_rbac_is_namespaced_named_and_without_wildcards(rendered, record_property):
    kinds = {o["kind"] for o in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for obj in find(rendered, "Role") + find(rendered, "RoleBinding"):
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
    for role in find(rendered, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"Role {role['metadata']['name']}: a wildcard in {key}"
            assert "pods/exec" not in rule["resources"] and "serving.kserve.io" not in rule["apiGroups"]
            if "secrets" in rule["resources"]:  # the KFP launcher reads the artifact store's credentials
                assert (rule["resources"], rule["resourceNames"], rule["verbs"]) == (["secrets"], [SECRET], ["get"])
    for binding in find(rendered, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}]
    run_spec = yaml.safe_load((MANIFESTS / "recurring-run.yaml").read_text())
    assert run_spec["service_account"] == SA and find(rendered, "ServiceAccount", SA)
    sa = (NAMESPACE, SA)
    assert allowed(rendered, sa, "get", "", "secrets", NAMESPACE, SECRET)
    assert allowed(rendered, sa, "get", "", "configmaps", NAMESPACE, "kfp-launcher")
    for verb, resource, name in (("get", "secrets", "other"), ("list", "secrets", None), ("get", "configmaps",
                                                                                         CONFIG_MAP)):
        assert not allowed(rendered, sa, verb, "", resource, NAMESPACE, name), (verb, resource, name)
    for namespace in (NAMESPACE, "kserve", "kubeflow"):  # the pipeline never touches an InferenceService
        for verb in ("get", "create", "patch"):
            assert not allowed(rendered, sa, verb, "serving.kserve.io", "inferenceservices", namespace, "recloop")
    assert not allowed(rendered, sa, "get", "", "configmaps", "kserve", "inferenceservice-config")
    record_property("cluster_roles", sum(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in rendered))
    record_property("roles", len(find(rendered, "Role")))
    record_property("wildcards", 0)


class MockApiServer(ThreadingHTTPServer):
    """Stands in for the Kubernetes API server, which cannot run here: serves the few object paths the KServe SDK
    calls, keeps objects in a dict, applies merge patches (RFC 7386), and authorizes every request with
    ``allowed`` over the rendered Roles (403 otherwise). The bearer token is the caller's "namespace:name"."""

    def __init__(self, rbac: list[dict]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rbac, self.objects, self.requests = rbac, {}, []

    def kubeconfig(self, namespace: str, name: str) -> dict[str, Any]:
        server = f"http://127.0.0.1:{self.server_address[1]}"
        return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": f"{namespace}:{name}"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        out.pop(key, None) if value is None else out.__setitem__(key, merge_patch(out.get(key), value))
    return out


class _Handler(BaseHTTPRequestHandler):
    server: MockApiServer
    VERBS: ClassVar[dict[str, str]] = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update",
                                       "DELETE": "delete"}
    PATH = re.compile(r"/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)"
                      r"(?:/(?P<name>[^/?]+))?")

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        m = self.PATH.fullmatch(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        group, ns, res, name = m["group"] or "", m["ns"], m["res"], m["name"]
        verb = self.VERBS[self.command] if name or self.command == "POST" else "list"
        name = name or (body["metadata"]["name"] if verb == "create" else None)
        self.server.requests.append((verb, group, res, ns, name))
        sa = tuple(self.headers["Authorization"].removeprefix("Bearer ").split(":"))
        if not allowed(self.server.rbac, sa, verb, group, res, ns, None if verb == "create" else name):
            return self._answer(403, {"kind": "Status", "code": 403, "reason": "Forbidden",
                                      "message": f"{verb} {res} {ns}/{name} forbidden for {sa}"})
        key = (group, res, ns, name)
        if verb == "create":
            self.server.objects[key] = body
            return self._answer(201, body)
        if key not in self.server.objects:
            return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        if verb == "patch":
            assert self.headers["Content-Type"] == "application/merge-patch+json", self.headers["Content-Type"]
            self.server.objects[key] = merge_patch(self.server.objects[key], body)
        assert verb in ("get", "patch"), verb  # nothing else is served: a new call needs a look here
        return self._answer(200, self.server.objects[key])

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server(rendered):
    """The stand-in API server with KServe's ConfigMap (cluster default RawDeployment), and a KServeClient
    authenticated as the pipeline's service account; the kubernetes client's global configuration restored."""
    server = MockApiServer(rendered)
    config = {"deploy": json.dumps({"defaultDeploymentMode": "RawDeployment"})}
    server.objects["", "configmaps", "kserve", "inferenceservice-config"] = {"kind": "ConfigMap", "data": config}
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    before = k8s.Configuration.get_default_copy()
    try:
        yield server, KServeClient(config_dict=server.kubeconfig(NAMESPACE, SA))
    finally:
        server.shutdown()
        k8s.Configuration.set_default(before)


# The pinned-version path (manifests/pinned-version/, `recloop push --inference-service`): what the person or job
# running it needs, as docs/deploy.md states it. Not shipped: whoever runs it brings their own identity.
PINNED_PUSH = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "pinned-push", "namespace": NAMESPACE},
     "rules": [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                "verbs": ["get", "create", "patch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "pinned-push", "namespace": NAMESPACE},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pinned-push"},
     "subjects": [{"kind": "ServiceAccount", "name": "pusher", "namespace": NAMESPACE}]}]


def test_the_pipelines_account_cannot_touch_an_inference_service(api_server, record_property):
    server, client = api_server  # authenticated as the pipeline's service account
    with pytest.raises(RuntimeError, match="403"):
        cluster.deploy(client, "recloop", NAMESPACE, V1)
    with pytest.raises(RuntimeError, match="403"):
        cluster.promote(client, "recloop", NAMESPACE)
    with pytest.raises(k8s.ApiException, match="403"):
        client.core_api.read_namespaced_config_map("inferenceservice-config", "kserve")
    assert server.objects.keys() == {("", "configmaps", "kserve", "inferenceservice-config")}  # nothing created
    record_property("refused_403", "deploy, promote, read KServe's ConfigMap as the pipeline's account")


def test_the_pinned_version_push_needs_exactly_get_create_and_patch(api_server, rendered):
    server, _ = api_server
    server.rbac = rendered + PINNED_PUSH
    client = KServeClient(config_dict=server.kubeconfig(NAMESPACE, "pusher"))
    assert cluster.deploy(client, "recloop", NAMESPACE, V1).action == "create"
    rollout = cluster.deploy(client, "recloop", NAMESPACE, V2, canary_percent=10)
    assert rollout.action == "patch" and rollout.mode.name == "Serverless"  # read off its annotation
    assert cluster.promote(client, "recloop", NAMESPACE).action == "patch"
    spec = server.objects["serving.kserve.io", "inferenceservices", NAMESPACE, "recloop"]["spec"]["predictor"]
    assert spec["model"]["storageUri"] == V2 and "canaryTrafficPercent" not in spec
    # without the annotation the mode would be the cluster default, in KServe's namespace (kserve upstream, kubeflow
    # in Kubeflow's manifests): unreadable here, so push assumes KServe 0.15's default and says so
    legacy = cluster.serialize(cluster.inference_service("legacy", NAMESPACE, V1))
    del legacy["metadata"]["annotations"][cluster.MODE_ANNOTATION]
    server.objects["serving.kserve.io", "inferenceservices", NAMESPACE, "legacy"] = legacy
    rollout = cluster.deploy(client, "legacy", NAMESPACE, V2, canary_percent=10)
    assert "unreadable (HTTP 403 Forbidden)" in rollout.mode.source
    with pytest.raises(RuntimeError, match="403"):
        cluster.deploy(client, "recloop", "default", V1)
    used = {r[:3] for r in server.requests if r[3] == NAMESPACE}
    granted = {(verb, group, resource) for rule in PINNED_PUSH[0]["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert used == granted, f"granted but never used: {granted - used}; used but not granted: {used - granted}"


# ---------------------------------------------------------------- alert rules


@functools.cache
def metric_families() -> dict[str, tuple[str, list[str]]]:
    """name -> (type, label names) of every metric recloop/serving/metrics.py defines, read from its source."""
    kinds = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram",
             "CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}
    families = {}
    for node in ast.walk(ast.parse((ROOT / "recloop/serving/metrics.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in kinds and node.args:
            labels = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg in ("labelnames", "labels")), None)
            families[node.args[0].value] = (kinds[node.func.id], [e.value for e in getattr(labels, "elts", [])])
    return families


def series_names() -> dict[str, list[str]]:
    """Every series name the server exposes -> its label names (histograms get le)."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + s: labels + (["le"] if s == "_bucket" else []) for name, (kind, labels) in metric_families().items()
            for s in suffixes[kind]}


@functools.cache
def string_literals() -> frozenset[str]:
    """The string constants of recloop/serving: every label value the server can emit is one of them."""
    trees = [ast.parse(f.read_text()) for f in (ROOT / "recloop/serving").glob("*.py")]
    return frozenset(n.value for tree in trees for n in ast.walk(tree)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str))


SELECTOR = re.compile(r"\b(recloop_\w+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def check_selectors(text: str, where: str, target_labels: tuple[str, ...] = (), free_values: tuple[str, ...] = (),
                    prose: bool = False) -> int:
    """Asserts every recloop_* series in ``text`` exists with the labels it is matched on; returns their number.

    Args:
      target_labels: labels Prometheus adds when scraping (not checked).
      free_values: labels whose values are data (a version name): the label is checked, not its value.
      prose: text for people, which may also name a metric family (recloop_stage_seconds).
    """
    names, values = series_names(), string_literals()
    if prose:
        names |= {name: labels for name, (_, labels) in metric_families().items()}
    found = SELECTOR.findall(text)
    for name, matchers in found:
        assert name in names, f"{where}: {name} is no metric of recloop/serving/metrics.py ({sorted(names)})"
        for label, op, value in MATCHER.findall(matchers):
            if label in target_labels:
                continue
            assert label in names[name], f"{where}: {name} has no label {label} (it has {names[name]})"
            if label == "le":  # a latency bucket's upper bound: one the server's histograms have
                assert value == "+Inf" or float(value) in BUCKETS, f"{where}: {name} has no bucket le={value}"
                continue
            assert op not in ("=", "!=") or label in free_values or value in values, \
                f"{where}: the server never sets {label}={value!r}"
    return len(found)


@pytest.fixture(scope="module")
def rules_spec(rendered) -> dict:
    rule = find(rendered, "PrometheusRule")[0]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return rule["spec"]


def test_every_alert_has_severity_summary_description_and_runbook(rules_spec):
    alerts = [r for g in rules_spec["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {"RecloopServingErrors", "RecloopLatencyP99High", "RecloopFallbackShareHigh",
                                            "RecloopModelNotLoaded", "RecloopModelStale"}
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, alert  # the CRD's
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}, alert["alert"]
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert (ROOT / page).is_file() and anchor == alert["alert"].lower(), alert["annotations"]["runbook_url"]


def test_the_alerts_use_the_servers_real_metrics_and_labels(rules_spec):
    for alert in (r for g in rules_spec["groups"] for r in g["rules"]):
        assert check_selectors(alert["expr"], alert["alert"]) > 0, f"{alert['alert']} reads no recloop metric"
        check_selectors(" ".join(alert["annotations"].values()), f"{alert['alert']} annotations", prose=True)
    cases = [case for f in (MANIFESTS / "tests").glob("prometheusrule*-test.yaml")
             for case in yaml.safe_load(f.read_text())["tests"]]
    assert len(cases) >= 9
    for case in cases:
        for series in case["input_series"]:
            check_selectors(series["series"], case["name"], ("namespace", "instance"), free_values=("version",))


def test_the_label_check_catches_a_renamed_metric_or_label():
    with pytest.raises(AssertionError, match="no metric"):
        check_selectors('rate(recloop_request_total{outcome="error"}[5m])', "renamed")
    with pytest.raises(AssertionError, match="no label"):
        check_selectors('rate(recloop_requests_total{result="error"}[5m])', "renamed")
    with pytest.raises(AssertionError, match="never sets"):
        check_selectors('rate(recloop_requests_total{outcome="server_error"}[5m])', "renamed")


def test_promtool_checks_and_unit_tests_the_rules(rules_spec, tmp_path):
    promtool = require_binary("promtool", "the alert rules are checked by Prometheus' own tool (Debian: prometheus)")
    (tmp_path / "recloop-serving.rules.yaml").write_text(yaml.safe_dump(rules_spec, sort_keys=False))
    proc = run([promtool, "check", "rules", "recloop-serving.rules.yaml"], cwd=tmp_path)
    assert proc.returncode == 0 and "SUCCESS: 8 rules found" in proc.stdout, proc.stdout + proc.stderr
    tests = sorted(p.name for p in (MANIFESTS / "tests").glob("prometheusrule*-test.yaml"))
    assert len(tests) == 2, tests
    for name in tests:
        shutil.copy(MANIFESTS / "tests" / name, tmp_path)
    proc = run([promtool, "test", "rules", *tests], cwd=tmp_path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


# ---------------------------------------------------------------- the recurring run


def test_the_recurring_run_is_scheduled_not_applied_and_reads_the_site_values(rendered):
    assert not find(rendered, "ConfigMap", "recloop-recurring-run")  # nothing on the cluster read it
    spec = load_spec(str(MANIFESTS / "recurring-run.yaml"), str(ROOT / VALUES))  # what `recloop schedule` sends
    assert spec.max_concurrency == 1 and spec.catchup is False  # one run at a time, no backfill storm
    assert find(rendered, "ServiceAccount", spec.service_account), spec.service_account  # the RBAC above
    values = find(rendered, "ConfigMap", CONFIG_MAP)[0]["data"]
    assert (spec.parameters["logs"], spec.parameters["registry"]) == (values["LOGS_URI"], values["REGISTRY_URI"])


# ---------------------------------------------------------------- training on several workers: a Kubeflow TFJob


class StandInOperator(threading.Thread):
    """Stands in for the Training Operator, which cannot run here: watches the stand-in API server for a TFJob,
    starts one ``recloop`` process per worker (the container's command) with the environment the kubelet would
    give it (values, and the Secret's and ConfigMap's keys from ``secrets``) and the ``TF_CONFIG`` the operator
    writes (genTFConfigJSONStr, pkg/controller.v1/tensorflow/tensorflow.go at v1.9.0; loopback ports for the
    headless services' names), and reports its conditions as the operator does: Created, Running, then Succeeded
    when every worker exits 0, else Failed."""

    def __init__(self, server: MockApiServer, secrets: dict[str, dict[str, str]], logs: Path):
        super().__init__(daemon=True)
        self.server, self.secrets, self.logs, self.jobs, self.errors = server, secrets, logs, [], []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for key, job in list(self.server.objects.items()):
                if key[1] == "tfjobs" and "status" not in job:
                    self.jobs.append(copy.deepcopy(job))
                    self.errors += crd_errors(job)
                    self._run(job)
            time.sleep(0.2)

    def _condition(self, job: dict, kind: str, message: str = "") -> None:
        conditions = job.setdefault("status", {}).setdefault("conditions", [])
        conditions.append({"type": kind, "status": "True", "reason": f"TFJob{kind}", "message": message})

    def _run(self, job: dict) -> None:
        import sys

        self._condition(job, "Created")
        spec = job["spec"]["tfReplicaSpecs"]["Worker"]
        [container] = spec["template"]["spec"]["containers"]
        hosts = [f"127.0.0.1:{free_port()}" for _ in range(spec["replicas"])]
        env = {}
        for var in container["env"]:
            ref = var.get("valueFrom", {})
            source = ref.get("secretKeyRef") or ref.get("configMapKeyRef")
            env[var["name"]] = var["value"] if "value" in var else self.secrets[source["name"]][source["key"]]
        command = container["command"]
        assert command[0] == "recloop", command
        procs = []
        for index in range(spec["replicas"]):
            tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index},
                         "environment": "cloud"}
            out = (self.logs / f"{job['metadata']['name']}-worker-{index}.log").open("w")
            procs.append(subprocess.Popen([sys.executable, "-m", "recloop.cli", *command[1:]],
                                          env=os.environ | env | {"TF_CONFIG": json.dumps(tf_config)},
                                          stdout=out, stderr=subprocess.STDOUT))
        self._condition(job, "Running")
        codes = [p.wait(timeout=900) for p in procs]
        if codes == [0] * len(procs):
            self._condition(job, "Succeeded", f"TFJob {job['metadata']['name']} successfully completed.")
        else:
            self._condition(job, "Failed", f"exit codes {codes}")


@pytest.mark.slow
def test_train_on_two_workers_runs_a_tfjob_through_the_pipelines_account(api_server, tiny_ingest, tiny_model,
                                                                          bucket, tmp_path, record_property):
    """The train step with train_workers=2: a TFJob created and watched through the kubernetes SDK as the
    pipeline's service account, valid against the Training Operator's CRD, two workers reading the examples from
    the object store and training one model (the single-process one), the chief's export copied into the task's
    artifact."""
    from kubernetes import config as kube_config

    from recloop.components import steps
    from recloop.pipelines.definitions import _job
    from recloop.pipelines.env import DEFAULT_ENV
    from recloop.pipelines.resources import DEFAULTS

    server, _ = api_server
    storage.upload(tiny_ingest, f"{bucket}/artifacts/ingest/examples")
    reference = tmp_path / "validation"  # what the trainer copies of a validate output: the schema as written
    reference.mkdir()
    (reference / "schema.pbtxt").write_text('feature { name: "item_id" type: BYTES }\n')
    storage.upload(str(reference), f"{bucket}/artifacts/validate/validation")
    secrets = {SECRET: {"accesskey": os.environ["AWS_ACCESS_KEY_ID"], "secretkey": os.environ["AWS_SECRET_ACCESS_KEY"]},
               CONFIG_MAP: {k: os.environ[k] for k in storage.S3_CONFIG_ENV}}
    operator = StandInOperator(server, secrets, tmp_path)
    operator.start()
    api = k8s.CustomObjectsApi(kube_config.new_client_from_config_dict(server.kubeconfig(NAMESPACE, SA)))
    model = f"{bucket.replace('s3://', 'minio://')}/artifacts/train/model"  # KFP's URI for a MinIO pipeline root
    try:
        card = steps.train_on_workers(f"{bucket}/artifacts/ingest/examples", f"{bucket}/artifacts/validate/validation",
                                      model, str(tmp_path / "model"), 2, _job(DEFAULTS, DEFAULT_ENV), "", 3, 0,
                                      api=api, image="registry.example/recloop:1", namespace=NAMESPACE, poll_s=1,
                                      timeout_s=900)
    finally:
        operator.done.set()
    [job] = operator.jobs
    assert operator.errors == [], operator.errors  # the Training Operator v1.9.0 CRD accepts it
    [container] = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"], container["ports"]) == (
        "tensorflow", "registry.example/recloop:1", [{"name": "tfjob-port", "containerPort": 2222}])
    assert container["resources"]["limits"]["memory"] == DEFAULTS["train"].memory_limit
    assert {r[:3] for r in server.requests if r[2] == "tfjobs"} == {("create", "kubeflow.org", "tfjobs"),
                                                                   ("get", "kubeflow.org", "tfjobs")}
    assert card["training"]["workers"] == 2 and Path(tmp_path, "model", "validation", "schema.pbtxt").exists()
    assert not storage.exists(f"{bucket}/artifacts/train/model-workers"), "the chief's export was left behind"
    one = json.loads(Path(tiny_model, "model_card.json").read_text())
    for name in ("retrieval", "ranking"):  # the same examples, epochs and stopping as one process
        assert card["training"][name]["examples"] == one["training"][name]["examples"]
        assert card["training"][name]["best_epoch"] == one["training"][name]["best_epoch"]
        # the same global batches and mean gradients; Keras reports the global figures, not sums over workers
        for a, b in zip(card["training"][name]["history"], one["training"][name]["history"], strict=True):
            for key in ("loss", "val_loss", "click_auc"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=0.01, abs=1e-3), (name, key, a, b)
    two_m = json.loads(Path(tmp_path, "model", "metrics.json").read_text())["scorers"]["model"]["ranking"]["overall"]
    one_m = json.loads(Path(tiny_model, "metrics.json").read_text())["scorers"]["model"]["ranking"]["overall"]
    assert abs(two_m["auc_click"] - one_m["auc_click"]) <= 0.01, (two_m["auc_click"], one_m["auc_click"])
    for typo, value, message in ((("spec", "tfReplicaSpecs", "Worker", "replica"), 2, "'replica' was unexpected"),
                                 (("spec", "runPolicy", "backoffLimit"), "0", "'0' is not of type 'integer'")):
        bad = copy.deepcopy(job)
        *parents, last = typo
        functools.reduce(lambda n, k: n[k], parents, bad)[last] = value
        assert any(message in e for e in crd_errors(bad)), crd_errors(bad)
    record_property("tfjob_workers", 2)
    record_property("auc_click_two_workers_vs_one", f"{two_m['auc_click']} vs {one_m['auc_click']}")
