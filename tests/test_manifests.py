"""The kustomize base in manifests/, rendered by the real kubectl: core kinds validated against Kubernetes' own
schemas, the RBAC exercised by recloop's push and promote through the real KServe SDK against a stand-in API
server that enforces it, the alert rules checked and unit-tested by promtool, the recurring run shipped as is."""

from __future__ import annotations

import ast
import copy
import functools
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import kubernetes_validate
import pytest
import yaml
from conftest import require_binary
from kserve import KServeClient
from kubernetes import client as k8s

from recloop.pipelines.kfp_spec import load_spec
from recloop.serving import cluster
from recloop.serving.metrics import BUCKETS

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
NAMESPACE, SA = "recloop", "recloop-pipeline"
CRD_KINDS = {"InferenceService", "ServingRuntime", "PrometheusRule"}  # not in kubernetes-validate's schemas
K8S_VERSIONS = ("1.29", "1.37")  # Kubernetes releases the schemas are checked at: a recent-cluster range
V1, V2 = "gs://recloop-models/registry/versions/v1", "gs://recloop-models/registry/versions/v2"


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl", "kubectl kustomize renders the manifests (Debian: kubernetes-client)")
    proc = run([kubectl, "kustomize", str(MANIFESTS)])
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def test_the_base_renders_what_it_lists(rendered):
    got = sorted((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered)
    assert got == sorted([
        ("ServingRuntime", NAMESPACE, "recloop"), ("InferenceService", NAMESPACE, "recloop"),
        ("PrometheusRule", NAMESPACE, "recloop-serving"), ("ConfigMap", NAMESPACE, "recloop-recurring-run"),
        ("ServiceAccount", NAMESPACE, SA),
        *[(kind, NAMESPACE, f"{SA}-{role}") for kind in ("Role", "RoleBinding") for role in ("push", "kfp-runtime")],
        *[(kind, "kserve", f"{SA}-read-kserve-config") for kind in ("Role", "RoleBinding")]])
    # kustomize leaves the InferenceService and the runtime as written (test_cluster checks them against the builders)
    for kind, file in (("InferenceService", "inferenceservice.yaml"), ("ServingRuntime", "servingruntime.yaml")):
        assert find(rendered, kind) == [yaml.safe_load((MANIFESTS / file).read_text())]


def test_core_resources_validate_against_kubernetes_schemas(rendered):
    for obj in rendered:
        if obj["kind"] in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # strict: an unknown field is an error
    role = copy.deepcopy(find(rendered, "Role", f"{SA}-push")[0])
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")  # a typo the schemas must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, K8S_VERSIONS[-1], strict=True)


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
        assert obj["metadata"].get("namespace") in (NAMESPACE, "kserve"), obj["metadata"]
    for role in find(rendered, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"Role {role['metadata']['name']}: a wildcard in {key}"
            assert not {"secrets", "pods/exec"} & set(rule["resources"])
    for binding in find(rendered, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}]
    isvc = find(rendered, "InferenceService")[0]["metadata"]["namespace"]
    run_spec = yaml.safe_load((MANIFESTS / "recurring-run.yaml").read_text())
    assert (find(rendered, "ServiceAccount")[0]["metadata"]["namespace"], run_spec["service_account"]) == (isvc, SA)
    sa = (NAMESPACE, SA)
    assert allowed(rendered, sa, "patch", "serving.kserve.io", "inferenceservices", NAMESPACE, "recloop")
    for namespace in ("kserve", "default", "kubeflow"):
        assert not allowed(rendered, sa, "patch", "serving.kserve.io", "inferenceservices", namespace, "recloop")
    assert allowed(rendered, sa, "get", "", "configmaps", "kserve", "inferenceservice-config")
    assert not allowed(rendered, sa, "get", "", "configmaps", "kserve", "another-config")
    assert not allowed(rendered, sa, "delete", "serving.kserve.io", "inferenceservices", NAMESPACE, "recloop")
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


def test_push_and_promote_need_exactly_what_the_pipeline_role_grants(api_server, rendered):
    server, client = api_server
    assert cluster.deploy(client, "recloop", NAMESPACE, V1).action == "create"
    rollout = cluster.deploy(client, "recloop", NAMESPACE, V2, canary_percent=10)
    assert rollout.action == "patch" and rollout.mode.name == "Serverless"  # read off its annotation
    assert cluster.promote(client, "recloop", NAMESPACE).action == "patch"
    predictor = server.objects["serving.kserve.io", "inferenceservices", NAMESPACE, "recloop"]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == V2 and "canaryTrafficPercent" not in predictor
    # an InferenceService without the annotation: the mode is the cluster default, read from KServe's namespace
    legacy = cluster.serialize(cluster.inference_service("legacy", NAMESPACE, V1))
    del legacy["metadata"]["annotations"][cluster.MODE_ANNOTATION]
    server.objects["serving.kserve.io", "inferenceservices", NAMESPACE, "legacy"] = legacy
    with pytest.raises(cluster.CanaryRefused, match="RawDeployment mode \\(the cluster default, ConfigMap kserve"):
        cluster.deploy(client, "legacy", NAMESPACE, V2, canary_percent=10)
    used = {r[:3] for r in server.requests}
    push_roles = [r for r in find(rendered, "Role") if "kfp-runtime" not in r["metadata"]["name"]]  # KFP's own
    granted = {(verb, group, resource) for role in push_roles for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert used == granted, f"granted but never used: {granted - used}; used but not granted: {used - granted}"


def test_the_service_account_is_confined_to_its_namespace_and_objects(api_server, rendered, record_property):
    server, client = api_server
    with pytest.raises(RuntimeError, match="403"):
        cluster.deploy(client, "recloop", "default", V1)
    with pytest.raises(k8s.ApiException, match="403"):
        client.core_api.read_namespaced_config_map("other", "kserve")
    server.rbac = [o for o in rendered if "kserve-config" not in o["metadata"]["name"]]  # without the kserve Role
    legacy = cluster.serialize(cluster.inference_service("legacy", NAMESPACE, V1))
    del legacy["metadata"]["annotations"][cluster.MODE_ANNOTATION]
    server.objects["serving.kserve.io", "inferenceservices", NAMESPACE, "legacy"] = legacy
    rollout = cluster.deploy(client, "legacy", NAMESPACE, V2, canary_percent=10)  # blind: assumes Serverless
    assert "unreadable (HTTP 403 Forbidden)" in rollout.mode.source
    record_property("refused_403", "deploy to namespace default; read ConfigMap kserve/other; read the kserve "
                                   "ConfigMap without its Role")


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


def test_the_recurring_run_ships_as_written(rendered):
    text = (MANIFESTS / "recurring-run.yaml").read_text()
    [config_map] = find(rendered, "ConfigMap", "recloop-recurring-run")
    assert config_map["data"] == {"recurring-run.yaml": text}  # no hash suffix, byte for byte
    spec = load_spec(str(MANIFESTS / "recurring-run.yaml"))  # what `recloop schedule --spec` reads, typed
    assert spec.max_concurrency == 1 and spec.catchup is False  # one run at a time, no backfill storm
    assert find(rendered, "ServiceAccount", spec.service_account), spec.service_account  # the RBAC above
