"""recloop compile, submit and schedule: the IR KFP's compiler writes, and the exact calls to a stand-in KFP API."""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import kfp
import kfp_server_api as api
import pytest
import typer
import yaml
from google.protobuf import json_format
from kfp import compiler, components, dsl
from kfp.client.client import RunPipelineResult, _extract_pipeline_yaml
from typer.testing import CliRunner

from recloop.cli import kubeflow
from recloop.components import definitions as kfp_tasks
from recloop.pipelines import definitions as pipelines
from recloop.pipelines import kfp_spec, remote
from recloop.pipelines import resources as task_resources
from recloop.pipelines.compile import compile_pipeline, images, read_ir, task_order
from recloop.pipelines.env import ClusterEnv

HOST = "http://kfp.example:8080"
PARAMETERS = {"logs": "gs://b/logs", "registry": "gs://b/registry", "run_state": "gs://b/run-state",
              "alertmanager_url": "http://alertmanager.monitoring:9093"}
SPEC = {"name": "recloop-weekly", "experiment": "recloop", "cron": "0 3 * * 1", "max_concurrency": 1,
        "catchup": False, "service_account": "recloop-pipeline", "parameters": PARAMETERS}
MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "recurring-run.yaml"
VALUES = MANIFEST.parent / "recloop.env"  # the site values kustomize reads: tests/test_manifests.py
IMAGE = "registry.example/recloop:0.9"  # $RECLOOP_IMAGE in every test (the autouse fixture) unless removed


@pytest.fixture(autouse=True)
def recloop_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLOOP_IMAGE", IMAGE)


class MockKfpClient:
    """Stands in for ``kfp.Client`` and the KFP API server behind it, which cannot run here.

    The methods recloop calls, with kfp.Client's parameter names and defaults (checked against kfp below). It
    reads a package as kfp.Client does (kfp's own ``_extract_pipeline_yaml``: YAML into the PipelineSpec proto,
    which refuses a malformed IR), refuses what the API server refuses (unknown or missing parameters, a
    concurrency outside 1-10, anything but one trigger), keeps experiments and recurring runs, and records every
    call with all its arguments and the IR as sent (the package is a temporary file, gone after the command).
    """

    def __init__(self, *experiments: str, fail: Exception | None = None):
        self.experiments = {name: api.V2beta1Experiment(experiment_id=f"exp-{name}", display_name=name)
                            for name in experiments}
        self.recurring: dict[str, api.V2beta1RecurringRun] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.connected: list[tuple[str, str | None]] = []
        self.fail = fail

    def connect(self, host: str, namespace: str | None) -> MockKfpClient:
        self.connected.append((host, namespace))
        return self

    def _call(self, method: str, arguments: dict[str, Any], package: str | None = None) -> None:
        arguments = {k: v for k, v in arguments.items() if k != "self"}
        if package is not None:
            ir = json_format.MessageToDict(_extract_pipeline_yaml(package).pipeline_spec)
            declared = ir["root"]["inputDefinitions"]["parameters"]
            given = set(arguments.get("arguments") or arguments.get("params") or {})
            assert given <= set(declared), given - set(declared)
            assert {k for k, v in declared.items() if not v.get("isOptional")} <= given
            arguments["ir"] = ir
            arguments["platform"] = json_format.MessageToDict(_extract_pipeline_yaml(package).platform_spec)
        self.calls.append((method, arguments))
        if self.fail is not None:
            raise self.fail

    def get_experiment(self, experiment_id=None, experiment_name=None, namespace=None):
        self._call("get_experiment", locals())
        if experiment_name not in self.experiments:
            raise ValueError(f"No experiment is found with name {experiment_name}.")  # as kfp.Client says it
        return self.experiments[experiment_name]

    def create_experiment(self, name, description=None, namespace=None):
        self._call("create_experiment", locals())
        self.experiments[name] = api.V2beta1Experiment(experiment_id=f"exp-{name}", display_name=name,
                                                       namespace=namespace)
        return self.experiments[name]

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_name=None,
                                         namespace=None, pipeline_root=None, enable_caching=None, cache_key=None,
                                         service_account=None, experiment_id=None):
        self._call("create_run_from_pipeline_package", locals(), pipeline_file)
        name = experiment_name or "Default"  # kfp.Client gets or creates the experiment by name
        experiment = self.experiments.setdefault(name, api.V2beta1Experiment(experiment_id=f"exp-{name}"))
        run = api.V2beta1Run(run_id=f"run-{len(self.calls)}", display_name=run_name,
                             experiment_id=experiment.experiment_id)
        return RunPipelineResult(self, run)

    def create_recurring_run(self, experiment_id, job_name, description=None, start_time=None, end_time=None,
                             interval_second=None, cron_expression=None, max_concurrency=1, no_catchup=None,
                             params=None, pipeline_package_path=None, pipeline_id=None, version_id=None,
                             enabled=True, pipeline_root=None, enable_caching=None, cache_key=None,
                             service_account=None):
        self._call("create_recurring_run", locals(), pipeline_package_path)
        assert (interval_second is None) != (cron_expression is None) and 1 <= max_concurrency <= 10
        run = api.V2beta1RecurringRun(recurring_run_id=f"rr-{len(self.calls)}", display_name=job_name,
                                      experiment_id=experiment_id)
        self.recurring[run.recurring_run_id] = run
        return run

    def list_recurring_runs(self, page_token="", page_size=10, sort_by="", experiment_id=None, namespace=None,
                            filter=None):
        self._call("list_recurring_runs", locals())
        (predicate,) = json.loads(filter)["predicates"]
        assert (predicate["operation"], predicate["key"]) == ("EQUALS", "display_name")
        found = [r for r in self.recurring.values()
                 if r.experiment_id == experiment_id and r.display_name == predicate["stringValue"]]
        return api.V2beta1ListRecurringRunsResponse(recurring_runs=found or None, total_size=len(found))

    def delete_recurring_run(self, recurring_run_id):
        self._call("delete_recurring_run", locals())
        del self.recurring[recurring_run_id]
        return {}

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


@pytest.mark.parametrize("method", ["get_experiment", "create_experiment", "create_run_from_pipeline_package",
                                    "create_recurring_run", "list_recurring_runs", "delete_recurring_run"])
def test_the_mock_takes_exactly_the_parameters_kfp_client_takes(method):
    ours, theirs = (inspect.signature(getattr(c, method)).parameters.values() for c in (MockKfpClient, kfp.Client))
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs]


def test_kfp_client_connects_to_the_host_and_namespace_without_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = remote.kfp_client("http://127.0.0.1:9", "team-a")  # a namespace: no request at construction
    assert isinstance(client, kfp.Client) and client.get_user_namespace() == "team-a"
    assert client._existing_config.host == "http://127.0.0.1:9" and caught == []


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    def serve(mock: MockKfpClient) -> MockKfpClient:
        monkeypatch.setattr(remote, "kfp_client", mock.connect)
        return mock
    return serve


def invoke(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    for command in (kubeflow.compile, kubeflow.submit, kubeflow.schedule):
        app.command()(command)
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000"})  # no wrapping inside rich's error box
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output)).strip()


# -- cron -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cron", "kfp_form"), [
    ("0 3 * * 1", "0 0 3 * * 1"), ("  0  3 * *   1 ", "0 0 3 * * 1"), ("0 0 3 * * 1", "0 0 3 * * 1"),
    ("*/15 * * * *", "0 */15 * * * *"), ("0 3 * * MON", "0 0 3 * * MON"), ("0 3 ? * mon-fri", "0 0 3 ? * mon-fri"),
    ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"), ("0 3 1,15 * *", "0 0 3 1,15 * *"),
    ("0 3 * JAN-MAR,oct 0", "0 0 3 * JAN-MAR,oct 0"),
    ("30 2 * * 1-5/2", "0 30 2 * * 1-5/2"), ("5/10 * * * *", "0 5/10 * * * *"), ("59 23 31 12 6", "0 59 23 31 12 6"),
    ("@weekly", "0 0 0 * * 0"), ("@daily", "0 0 0 * * *"), ("@midnight", "0 0 0 * * *"), ("@hourly", "0 0 * * * *"),
    ("@monthly", "0 0 0 1 * *"), ("@yearly", "0 0 0 1 1 *"), ("@annually", "0 0 0 1 1 *"),
])
def test_a_cron_becomes_the_6_field_form_kfp_reads(cron, kfp_form):
    assert kfp_spec.kfp_cron(cron) == kfp_form


@pytest.mark.parametrize(("cron", "message"), [
    ("0 24 * * 1", "cron field hour: 24 is outside 0-23 in '0 24 * * 1'"),
    ("60 3 * * 1", "cron field minute: 60 is outside 0-59"),
    ("60 0 3 * * 1", "cron field second: 60 is outside 0-59"),
    ("0 3 0 * *", "cron field day-of-month: 0 is outside 1-31"),
    ("0 3 32 * *", "cron field day-of-month: 32 is outside 1-31"),
    ("0 3 * 13 *", "cron field month: 13 is outside 1-12 or JAN-DEC"),
    ("0 3 * * 7", "cron field day-of-week: 7 is outside 0-6 or SUN-SAT"),
    ("0 3 * * FOO", "cron field day-of-week: 'FOO' is not a number or a name (0-6 or SUN-SAT)"),
    ("0 3 * MON *", "cron field month: 'MON' is not a number or a name (1-12 or JAN-DEC)"),
    ("0 three * * 1", "cron field hour: 'three' is not a number (0-23)"),
    ("0 3 * * 5-1", "cron field day-of-week: the range '5-1' runs backwards"),
    ("*/0 * * * *", "cron field minute: the step of '*/0' is not a positive number"),
    ("0 3 * * 1/2/3", "more than one '/'"), ("0 3 1-2-3 * *", "'1-2-3' has more than one '-'"),
    ("0 3 ,1 * *", "cron field day-of-month: an empty list item"), ("-1 3 * * *", "'' is not a number"),
    ("0 3 * * 1-", "cron field day-of-week: '' is not a number"), ("0 3 * * ١", "'١' is not a number"),
    ("0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week, UTC) or 6 (second first), got 4"),
    ("0 0 0 3 * * 1", "got 7 in '0 0 0 3 * * 1'"), ("", "got 0 in ''"),
    ("@every 1h", "'@every 1h' is not a schedule KFP runs at fixed times"), ("@WEEKLY", "is not a schedule"),
])
def test_a_cron_kfp_would_refuse_or_misread_is_refused_naming_the_field(cron, message):
    with pytest.raises(kfp_spec.CronError, match=re.escape(message)):
        kfp_spec.kfp_cron(cron)


# -- parameters -----------------------------------------------------------------------------------------------
def test_arguments_are_typed_as_the_pipeline_declares_them():
    typed = kfp_spec.typed_arguments("weekly", {"epochs": "3", "sample_data": 1, "infra_p99_ms": "99.5", "seed": 7,
                                                "beam_args": '["--runner", "DataflowRunner"]', "logs": "gs://l"})
    assert typed == {"epochs": 3, "sample_data": 1.0, "infra_p99_ms": 99.5, "seed": 7,
                     "beam_args": ["--runner", "DataflowRunner"], "logs": "gs://l"}
    assert type(typed["sample_data"]) is float
    for raw, message in (({"seed": 2.5}, "parameter seed: expected an integer, got 2.5 (float)"),
                         ({"sample_data": True}, "parameter sample_data: expected a number, got True (bool)"),
                         ({"beam_args": "[1"}, "parameter beam_args: expected a JSON list, got '[1' (str)"),
                         ({"logs": 5}, "parameter logs: expected a string, got 5 (int)"),
                         ({"day": "2026-01-05"}, ("'day' is not a parameter of recloop-weekly; its parameters: "
                                                  "alertmanager_url, beam_args, catalog, end, epochs,"))):
        with pytest.raises(ValueError, match=re.escape(message)):
            kfp_spec.typed_arguments("weekly", raw)


# -- compile --------------------------------------------------------------------------------------------------
def test_the_weekly_ir_wires_seven_tasks_in_order_on_recloops_image(tmp_path):
    code, out = invoke("compile", "--out", str(tmp_path / "weekly.yaml"))
    ir = read_ir(tmp_path / "weekly.yaml")
    assert code == 0, out
    assert out == (f"wrote recloop-weekly to {tmp_path / 'weekly.yaml'}: ingest -> validate -> check -> train -> "
                   f"evaluate -> infra-validate -> push; image {IMAGE}")
    tasks = ir["root"]["dag"]["tasks"]
    assert {t: s.get("dependentTasks", []) for t, s in tasks.items()} == {
        "ingest": [], "validate": ["ingest"], "check": ["validate"], "train": ["check", "ingest", "validate"],
        "evaluate": ["ingest", "train"], "infra-validate": ["evaluate", "ingest", "train"],
        "push": ["evaluate", "infra-validate", "train"]}
    assert task_order(ir) == list(pipelines.TASKS)
    assert images(ir) == [IMAGE] and len(ir["deploymentSpec"]["executors"]) == 7
    assert tasks["ingest"]["inputs"]["parameters"]["scheduled_time"] == {
        "runtimeValue": {"constant": dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER}}


def test_image_replaces_every_executors_image_and_nothing_else(tmp_path):
    plain, other = tmp_path / "plain.yaml", tmp_path / "deep" / "other.yaml"  # the folder is created
    compiler.Compiler().compile(pipelines.weekly(), str(plain))  # KFP's own, on the components' placeholder
    image = "registry.example/recloop@sha256:ab12"
    code, out = invoke("compile", "--out", str(other), "--image", image)
    assert code == 0 and out.endswith(f"image {image}"), out  # --image over the env
    replaced = tmp_path / "replaced.yaml"
    replaced.write_text(plain.read_text().replace(kfp_tasks.IMAGE_UNSET, image))
    compiled, expected = read_ir(other), read_ir(replaced)
    for executor in compiled["deploymentSpec"]["executors"].values():  # each task knows its image (train's TFJob)
        assert executor["container"].pop("env") == [{"name": "RECLOOP_IMAGE", "value": image}]
    assert compiled == expected
    assert plain.read_text().count(kfp_tasks.IMAGE_UNSET) == 7
    loaded = components.load_component_from_file(str(other))  # KFP loads it back as a component
    assert loaded.name == "recloop-weekly" and loaded.component_spec.inputs == pipelines.weekly().component_spec.inputs
    for image, message in (("", "image: expected a container image such as ghcr.io/org/recloop:1.2, got ''"),
                           ("two words", "image: expected a container image"),
                           ("recloop-image-unset", ("image: 'recloop-image-unset' is the components' placeholder, "
                                                    "not an image a cluster can pull"))):
        code, out = invoke("compile", "--out", str(other), "--image", image)
        assert code == 2 and f"Invalid value for --image: {message}" in out, out


def test_compile_refuses_to_write_a_spec_without_recloops_image(tmp_path, monkeypatch, kfp_api):
    out_path = tmp_path / "p.yaml"
    for env in (None, ""):
        if env is None:
            monkeypatch.delenv("RECLOOP_IMAGE")
        else:
            monkeypatch.setenv("RECLOOP_IMAGE", env)
        with pytest.raises(ValueError, match=re.escape("image: no container image: pass --image or set "
                                                       "$RECLOOP_IMAGE to recloop's image")):
            compile_pipeline("weekly", str(out_path))
        code, out = invoke("compile", "--out", str(out_path))
        assert code == 2 and "Invalid value for --image: image: no container image: pass --image or set " \
                             "$RECLOOP_IMAGE to recloop's image (built from the Dockerfile" in out, out
        assert not out_path.exists()
    server = kfp_api(MockKfpClient())
    for command in (["submit", "--host", HOST, *WEEK], ["schedule", "--host", HOST, "--spec", write_spec(tmp_path)]):
        code, out = invoke(*command)
        assert code == 2 and "Invalid value for --image: image: no container image" in out, out
    assert server.connected == [] and server.calls == []
    placeholder = "$RECLOOP_IMAGE: 'recloop-image-unset' is the components' placeholder"
    malformed = "$RECLOOP_IMAGE: expected a container image such as ghcr.io/org/recloop:1.2, got 'a b'"
    for env, message in (("recloop-image-unset", placeholder), ("a b", malformed)):
        monkeypatch.setenv("RECLOOP_IMAGE", env)
        code, out = invoke("compile", "--out", str(out_path))
        assert code == 2 and f"Invalid value for --image: {message}" in out, out
    ir = compile_pipeline("daily", str(out_path), "reg/r:1")  # an image given is used as it is: no env read
    assert images(ir) == ["reg/r:1"] and kfp_tasks.IMAGE_UNSET not in out_path.read_text()


# -- what a cluster reads of each task: caching, retries, CPU and memory ----------------------------------------
RETRY = {"maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0, "backoffMaxDuration": "3600s"}
CACHED = {"enableCache": True}  # caching off compiles to {}
# task: (cachingOptions, retryPolicy; None: no retries), in both pipelines
CLUSTER = {"ingest": ({}, RETRY), "validate": ({}, None), "check": (CACHED, None), "train": (CACHED, RETRY),
           "evaluate": ({}, RETRY), "infra-validate": ({}, RETRY), "push": ({}, None), "monitor": ({}, None)}
# task: CPU request, limit, memory request, limit as written, then the float forms KFP adds (cores, GB)
RESOURCES = {
    "ingest": ("1", "2", "3Gi", "7Gi", 1.0, 2.0, 3.221225472, 7.516192768),
    "validate": ("1", "2", "2Gi", "2Gi", 1.0, 2.0, 2.147483648, 2.147483648),
    "check": ("250m", "1", "1Gi", "1Gi", 0.25, 1.0, 1.073741824, 1.073741824),
    "train": ("2", "4", "2Gi", "3Gi", 2.0, 4.0, 2.147483648, 3.221225472),
    "evaluate": ("1", "2", "5Gi", "5Gi", 1.0, 2.0, 5.36870912, 5.36870912),
    "infra-validate": ("1", "2", "3Gi", "3Gi", 1.0, 2.0, 3.221225472, 3.221225472),
    "push": ("250m", "1", "1Gi", "1Gi", 0.25, 1.0, 1.073741824, 1.073741824),
    "monitor": ("1", "2", "2Gi", "2Gi", 1.0, 2.0, 2.147483648, 2.147483648),
}


def ir_resources(cpu_request: str, cpu_limit: str, memory_request: str, memory_limit: str,
                 *floats: float) -> dict[str, Any]:
    return {"resourceCpuRequest": cpu_request, "resourceCpuLimit": cpu_limit,
            "resourceMemoryRequest": memory_request, "resourceMemoryLimit": memory_limit,
            **dict(zip(("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"), floats, strict=True))}


@pytest.mark.parametrize(("pipeline", "tasks"), [("weekly", pipelines.TASKS), ("daily", ("monitor", "check"))])
def test_each_task_has_its_caching_retries_cpu_and_memory(tmp_path, pipeline, tasks):
    ir = compile_pipeline(pipeline, str(tmp_path / "p.yaml"))
    dag, executors = ir["root"]["dag"]["tasks"], ir["deploymentSpec"]["executors"]
    assert sorted(dag) == sorted(tasks) and sorted(executors) == sorted(f"exec-{t}" for t in tasks)
    for task in tasks:
        caching, retry = CLUSTER[task]
        assert dag[task]["cachingOptions"] == caching, task
        assert dag[task].get("retryPolicy") == retry, task
        assert executors[f"exec-{task}"]["container"]["resources"] == ir_resources(*RESOURCES[task]), task
    assert set(task_resources.DEFAULTS) == set(pipelines.TASKS) | {"monitor"} == set(CLUSTER) == set(RESOURCES)


def test_a_resources_file_overrides_the_defaults_field_by_field(tmp_path, kfp_api):
    path = tmp_path / "resources.yaml"
    path.write_text("train:\n  memory_request: 8Gi\n  memory_limit: 24Gi\n  cpu_limit: 8\n"
                    "monitor:\n  cpu_request: 0.5\n  memory_limit: 3221225472\n")
    code, out = invoke("compile", "--out", str(tmp_path / "w.yaml"), "--resources", str(path))
    assert code == 0, out
    executors = read_ir(tmp_path / "w.yaml")["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["resources"] == ir_resources(
        "2", "8", "8Gi", "24Gi", 2.0, 8.0, 8.589934592, 25.769803776)
    for task in pipelines.TASKS[:3] + pipelines.TASKS[4:]:
        assert executors[f"exec-{task}"]["container"]["resources"] == ir_resources(*RESOURCES[task]), task
    code, out = invoke("compile", "--pipeline", "daily", "--out", str(tmp_path / "d.yaml"), "--resources", str(path))
    executors = read_ir(tmp_path / "d.yaml")["deploymentSpec"]["executors"]
    assert code == 0 and executors["exec-monitor"]["container"]["resources"] == ir_resources(
        "0.5", "2", "2Gi", "3221225472", 0.5, 2.0, 2.147483648, 3.221225472)
    assert executors["exec-check"]["container"]["resources"] == ir_resources(*RESOURCES["check"])
    server = kfp_api(MockKfpClient())
    assert invoke("submit", "--host", HOST, *WEEK, "--resources", str(path))[0] == 0
    assert invoke("schedule", "--host", HOST, "--spec", write_spec(tmp_path), "--resources", str(path))[0] == 0
    for _, call in (server.calls[0], server.calls[-1]):
        resources = call["ir"]["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
        assert resources == ir_resources("2", "8", "8Gi", "24Gi", 2.0, 8.0, 8.589934592, 25.769803776)
    path.write_text("")  # an empty file: the defaults
    assert task_resources.load_resources(str(path)) == task_resources.DEFAULTS


@pytest.mark.parametrize(("text", "message"), [
    ("trian:\n  cpu_limit: 2\n", ("unknown task 'trian'; the tasks are ingest, validate, check, train, evaluate, "
                                   "infra-validate, push, monitor")),
    ("train:\n  cpu: 2\n", ("train: unknown field 'cpu'; the fields are cpu_request, cpu_limit, memory_request, "
                             "memory_limit")),
    ("train:\n  memory_limit: 24GB\n", "train: memory_limit: expected a size above 0 such as 4Gi or 512Mi, got '24GB'"),
    ("train:\n  memory_limit: true\n", "train: memory_limit: expected a size above 0 such as 4Gi or 512Mi, got True"),
    ("ingest:\n  cpu_request: two\n", "ingest: cpu_request: expected cores above 0 such as 2, 0.5 or 500m, got 'two'"),
    ("push:\n  cpu_limit: 0\n", "push: cpu_limit: expected cores above 0 such as 2, 0.5 or 500m, got '0'"),
    ("push:\n  memory_request: 0Mi\n", "push: memory_request: expected a size above 0 such as 4Gi or 512Mi, got '0Mi'"),
    ("evaluate:\n  memory_request: 6Gi\n", "evaluate: memory_request: 6Gi is more than memory_limit 5Gi"),
    ("check:\n  cpu_request: 2\n", "check: cpu_request: 2 is more than cpu_limit 1"),
    ("validate: 2Gi\n", "validate: Input should be a valid dictionary"),
    ("- train\n", "Input should be a valid dictionary"),
    ("train: [\n", "while parsing a flow node expected the node content"),
])
def test_a_bad_resources_file_is_refused_naming_the_task_and_field(tmp_path, kfp_api, text, message):
    path = tmp_path / "resources.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        task_resources.load_resources(str(path))
    server = kfp_api(MockKfpClient())
    for command in (["compile", "--out", str(tmp_path / "p.yaml")], ["submit", "--host", HOST, *WEEK],
                    ["schedule", "--host", HOST, "--spec", write_spec(tmp_path)]):
        code, out = invoke(*command, "--resources", str(path))
        assert code == 2 and f"Invalid value for --resources: {path}: {message}" in out, out
    assert not (tmp_path / "p.yaml").exists() and server.calls == []
    code, out = invoke("compile", "--out", str(tmp_path / "p.yaml"), "--resources", str(tmp_path / "nope.yaml"))
    assert code == 2 and "Invalid value for --resources: " in out and "No such file or directory" in out, out


# -- what each task's pod gets from Kubernetes: the object store's credentials and endpoint (kfp-kubernetes) ------
S3_ENV = {"secretAsEnv": [{"secretName": "mlpipeline-minio-artifact",
                           "secretNameParameter": {"runtimeValue": {"constant": "mlpipeline-minio-artifact"}},
                           "keyToEnv": [{"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
                                        {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]}],
          "configMapAsEnv": [{"configMapName": "recloop-config",
                              "configMapNameParameter": {"runtimeValue": {"constant": "recloop-config"}},
                              "keyToEnv": [{"configMapKey": "AWS_ENDPOINT_URL", "envVar": "AWS_ENDPOINT_URL"},
                                           {"configMapKey": "AWS_DEFAULT_REGION", "envVar": "AWS_DEFAULT_REGION"}]}]}


@pytest.mark.parametrize(("pipeline", "tasks"), [("weekly", pipelines.TASKS), ("daily", ("monitor", "check"))])
def test_every_task_takes_the_object_stores_settings_from_the_secret_and_config_map(tmp_path, pipeline, tasks):
    ir = compile_pipeline(pipeline, str(tmp_path / "p.yaml"))
    platform = ir["platforms"]["kubernetes"]["deploymentSpec"]["executors"]  # the IR's second document
    assert platform == {f"exec-{task}": S3_ENV for task in tasks}
    package = _extract_pipeline_yaml(str(tmp_path / "p.yaml"))  # kfp.Client's loader reads it back as sent
    assert json_format.MessageToDict(package.platform_spec)["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"] == platform
    bare = compile_pipeline(pipeline, str(tmp_path / "bare.yaml"), env=ClusterEnv(None, None))  # gs://, WI
    assert "platforms" not in bare and len((tmp_path / "bare.yaml").read_text().split("\n---\n")) == 1
    if pipeline == "weekly":  # a TFJob's workers take the same settings (train's job parameter)
        jobs = [json.loads(p["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"].pop("job")["runtimeValue"][
            "constant"]) for p in (ir, bare)]
        assert [(j["credentials_secret"], j["config_map"]) for j in jobs] == [
            ("mlpipeline-minio-artifact", "recloop-config"), (None, None)]
    assert {k: v for k, v in bare.items()} == {k: v for k, v in ir.items() if k != "platforms"}


def test_the_secret_and_config_map_are_compile_options(tmp_path, kfp_api):
    code, out = invoke("compile", "--out", str(tmp_path / "w.yaml"), "--credentials-secret", "s3-creds",
                       "--config-map", "")
    executors = read_ir(tmp_path / "w.yaml")["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert code == 0 and executors["exec-push"] == {"secretAsEnv": [{
        **S3_ENV["secretAsEnv"][0], "secretName": "s3-creds",
        "secretNameParameter": {"runtimeValue": {"constant": "s3-creds"}}}]}, out
    code, out = invoke("compile", "--out", str(tmp_path / "d.yaml"), "--credentials-secret", "", "--config-map", "")
    assert code == 0 and "platforms" not in read_ir(tmp_path / "d.yaml"), out
    server = kfp_api(MockKfpClient())
    assert invoke("submit", "--host", HOST, *WEEK)[0] == 0
    assert invoke("schedule", "--host", HOST, "--spec", write_spec(tmp_path), "--config-map", "site")[0] == 0
    sent = [call["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-ingest"]
            for _, call in (server.calls[0], server.calls[-1])]
    assert sent[0] == S3_ENV and sent[1]["configMapAsEnv"][0]["configMapName"] == "site"


def test_the_package_declares_the_pipeline_functions_parameters(tmp_path):
    compile_pipeline("weekly", str(tmp_path / "p.yaml"))
    package = _extract_pipeline_yaml(str(tmp_path / "p.yaml"))  # kfp.Client's loader, into the PipelineSpec proto
    spec = json_format.MessageToDict(package.pipeline_spec)
    declared = spec["root"]["inputDefinitions"]["parameters"]
    signature = inspect.signature(pipelines.weekly().pipeline_func).parameters
    assert sorted(declared) == sorted(signature) and declared == kfp_spec.declared_parameters("weekly")
    for name, parameter in signature.items():
        if parameter.default is inspect.Parameter.empty:
            assert "defaultValue" not in declared[name] and not declared[name].get("isOptional"), name
        else:
            assert declared[name]["defaultValue"] == parameter.default and declared[name]["isOptional"], name


def test_the_daily_pipeline_compiles_too(tmp_path):
    code, out = invoke("compile", "--pipeline", "daily", "--out", str(tmp_path / "daily.yaml"))
    ir = read_ir(tmp_path / "daily.yaml")
    assert code == 0 and "wrote recloop-daily-skew" in out and "monitor -> check" in out, out
    assert ir["pipelineInfo"]["name"] == "recloop-daily-skew" and images(ir) == [IMAGE]
    assert ir["root"]["dag"]["tasks"]["check"]["dependentTasks"] == ["monitor"]
    for args, message in ((["--pipeline", "hourly"], ("Invalid value for --pipeline: expected one of weekly, daily, "
                                                     "recloop-weekly, recloop-daily-skew, got 'hourly'")),
                          (["--out", str(tmp_path / "p.json")], "Invalid value for --out: out: expected a .yaml")):
        code, out = invoke("compile", *args)
        assert code == 2 and message in out, out


def test_a_compiler_warning_fails_compile(tmp_path, monkeypatch):
    def warns(**_: Any) -> Any:  # a real KFP deprecation, raised while the pipeline is built
        def pipeline(logs):
            kfp_tasks.monitor(logs=logs, day="", scheduled_time="", span_clock="", registry="", run_state="",
                              alertmanager_url="", config="").set_gpu_limit("1")
        pipeline.__annotations__ = {"logs": str}  # a type, not the string this module's annotations would give
        return dsl.pipeline(name="recloop-weekly")(pipeline)

    monkeypatch.setitem(pipelines.PIPELINES, "recloop-weekly", warns)
    code, out = invoke("compile", "--out", str(tmp_path / "p.yaml"))
    assert code == 1 and "compile failed: compiling recloop-weekly warned (treated as an error): " in out, out
    assert "DeprecationWarning: 'set_gpu_limit' is deprecated" in out and not (tmp_path / "p.yaml").exists()


# -- submit ---------------------------------------------------------------------------------------------------
WEEK = ["--logs", "gs://b/logs", "--registry", "gs://b/registry", "--run-state", "gs://b/run-state",
        "--start", "2026-01-05", "--end", "2026-01-11"]


def test_submit_compiles_and_starts_one_run_with_typed_parameters(kfp_api):
    server = kfp_api(MockKfpClient())
    code, out = invoke("submit", "--host", HOST, *WEEK, "--epochs", "2", "--param", "sample_data=0.5",
                       "--param", 'beam_args=["--runner", "DataflowRunner", "--region", "europe-west4"]',
                       "--param", "seed=7", "--namespace", "team-a", "--service-account", "recloop-pipeline",
                       "--image", "registry.example/recloop:1.2")
    assert code == 0, out
    assert out == (f"started run run-1 ('recloop-weekly 2026-01-05..2026-01-11') in experiment recloop: "
                   f"{HOST}/#/runs/details/run-1")
    assert server.connected == [(HOST, "team-a")] and server.methods() == ["create_run_from_pipeline_package"]
    call = server.calls[0][1]
    ir, package, platform = call.pop("ir"), call.pop("pipeline_file"), call.pop("platform")
    assert call == {"arguments": {"logs": "gs://b/logs", "registry": "gs://b/registry", "run_state": "gs://b/run-state",
                                  "start": "2026-01-05", "end": "2026-01-11", "epochs": 2, "sample_data": 0.5,
                                  "beam_args": ["--runner", "DataflowRunner", "--region", "europe-west4"], "seed": 7},
                    "run_name": "recloop-weekly 2026-01-05..2026-01-11", "experiment_name": "recloop",
                    "namespace": "team-a", "pipeline_root": None, "enable_caching": None, "cache_key": None,
                    "service_account": "recloop-pipeline", "experiment_id": None}
    assert ir["pipelineInfo"]["name"] == "recloop-weekly" and task_order(ir) == list(pipelines.TASKS)
    assert images(ir) == ["registry.example/recloop:1.2"]
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"] == S3_ENV
    assert package.endswith("recloop-weekly.yaml") and not Path(package).exists()  # a temporary package


def test_submit_the_daily_check_for_one_day(kfp_api):
    server = kfp_api(MockKfpClient())
    code, out = invoke("submit", "--host", HOST, "--pipeline", "daily", *WEEK[:6], "--param", "day=2026-01-10")
    assert code == 0 and "('recloop-daily-skew 2026-01-10')" in out, out
    call = server.calls[0][1]
    assert call["ir"]["pipelineInfo"]["name"] == "recloop-daily-skew" and call["namespace"] is None
    assert call["arguments"] == {"logs": "gs://b/logs", "registry": "gs://b/registry",
                                 "run_state": "gs://b/run-state", "day": "2026-01-10"}


@pytest.mark.parametrize(("args", "message"), [
    ([*WEEK, "--param", "nope=1"], ("Invalid value for --param: 'nope' is not a parameter of recloop-weekly; its "
                                   "parameters: alertmanager_url, beam_args, catalog, end, epochs, features, gate_config,")),
    ([*WEEK, "--param", "seed=abc"], "--param: parameter seed: expected an integer, got 'abc' (str)"),
    ([*WEEK, "--param", "sample_data=true"], "parameter sample_data: expected a number, got True (bool)"),
    ([*WEEK, "--param", "seed"], "Invalid value for --param: expected KEY=VALUE, got 'seed'"),
    ([*WEEK, "--param", "logs=gs://other"], "Invalid value for --param: given twice, got 'logs=gs://other'"),
    ([*WEEK, "--param", "seed=1", "--param", "seed=2"], "given twice, got 'seed=2'"),
    (WEEK[:6], ("Invalid value for --start, --end: a one-off run of recloop-weekly needs start and end (YYYY-MM-DD): "
               "only a recurring run (recloop schedule) takes its span from its scheduled time")),
    ([*WEEK[:6], "--start", "2026-01-05"], "needs start and end"),
    ([*WEEK[:6], "--start", "2026-01-12", "--end", "2026-01-11"], "start 2026-01-12 is after end 2026-01-11"),
    ([*WEEK[:6], "--start", "2026-1-5", "--end", "2026-01-11"], "start: expected a date YYYY-MM-DD, got '2026-1-5'"),
    (WEEK[2:], "Invalid value for --logs: recloop-weekly needs logs"),
    ([*WEEK[:6], "--pipeline", "daily", "--epochs", "2"],
     "Invalid value for --epochs: 'epochs' is not a parameter of recloop-daily-skew"),
    ([*WEEK[:6], "--pipeline", "daily"],
     "Invalid value for --param day=...: a one-off run of recloop-daily-skew needs day (YYYY-MM-DD)"),
    ([*WEEK, "--pipeline", "hourly"], "Invalid value for --pipeline: expected one of weekly, daily"),
])
def test_submit_refuses_bad_parameters_before_connecting(kfp_api, args, message):
    server = kfp_api(MockKfpClient())
    code, out = invoke("submit", "--host", HOST, *args)
    assert code == 2 and message in out, out
    assert server.connected == [] and server.calls == []


def test_submit_says_when_the_api_refuses(kfp_api):
    kfp_api(MockKfpClient(fail=api.ApiException(status=403, reason="Forbidden")))
    code, out = invoke("submit", "--host", HOST, *WEEK)
    assert code == 1 and out.startswith("submit failed: (403) Reason: Forbidden"), out


# -- schedule -------------------------------------------------------------------------------------------------
DROP = object()


def write_spec(tmp_path: Path, parameters: dict[str, Any] | None = None, **changes: Any) -> str:
    data = {**SPEC, "parameters": {**PARAMETERS, **(parameters or {})}, **changes}
    data = {k: v for k, v in data.items() if v is not DROP}
    data["parameters"] = {k: v for k, v in data["parameters"].items() if v is not DROP}
    path = tmp_path / "recurring-run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_schedule_creates_the_experiment_and_a_weekly_recurring_run(kfp_api, tmp_path):
    server = kfp_api(MockKfpClient())
    code, out = invoke("schedule", "--host", HOST, "--spec", write_spec(tmp_path, {"epochs": 2}),
                       "--namespace", "team-a")
    assert code == 0, out
    assert out == ("recurring run 'recloop-weekly' rr-4 in experiment recloop (created): cron '0 0 3 * * 1' (UTC), "
                   "max concurrency 1, catchup off, service account recloop-pipeline; parameters "
                   f"{json.dumps({**PARAMETERS, 'epochs': 2})}")
    assert server.connected == [(HOST, "team-a")]
    assert server.methods() == ["get_experiment", "create_experiment", "list_recurring_runs", "create_recurring_run"]
    assert server.calls[1][1] == {"name": "recloop", "description": None, "namespace": "team-a"}
    assert server.calls[2][1]["experiment_id"] == "exp-recloop"
    call = server.calls[3][1]
    ir, package, platform = call.pop("ir"), call.pop("pipeline_package_path"), call.pop("platform")
    assert call == {"experiment_id": "exp-recloop", "job_name": "recloop-weekly", "description": None,
                    "start_time": None, "end_time": None, "interval_second": None, "cron_expression": "0 0 3 * * 1",
                    "max_concurrency": 1, "no_catchup": True, "params": {**PARAMETERS, "epochs": 2},
                    "pipeline_id": None, "version_id": None, "enabled": True, "pipeline_root": None,
                    "enable_caching": None, "cache_key": None, "service_account": "recloop-pipeline"}
    assert ir["pipelineInfo"]["name"] == "recloop-weekly" and images(ir) == [IMAGE]
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-push"] == S3_ENV
    assert not Path(package).exists() and list(server.recurring) == ["rr-4"]


def test_schedule_reuses_the_experiment_and_takes_cron_and_catchup_from_the_options(kfp_api, tmp_path):
    server = kfp_api(MockKfpClient("recloop"))
    spec = write_spec(tmp_path, catchup=True, max_concurrency=2, service_account=DROP)
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--cron", "30 4 * * TUE", "--image", "reg/r:2")
    assert code == 0 and "in experiment recloop: cron '0 30 4 * * TUE'" in out, out
    assert "catchup on" in out and "service account (KFP default)" in out
    assert server.methods() == ["get_experiment", "list_recurring_runs", "create_recurring_run"]
    call = server.calls[2][1]
    assert call["experiment_id"] == "exp-recloop" and call["cron_expression"] == "0 30 4 * * TUE"
    assert (call["no_catchup"], call["max_concurrency"], call["service_account"]) == (False, 2, None)
    assert images(call["ir"]) == ["reg/r:2"]
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--cron", "0 3 * * 8")
    assert code == 2 and "Invalid value for --cron: cron field day-of-week: 8 is outside 0-6 or SUN-SAT" in out, out


def test_schedule_refuses_a_second_recurring_run_of_the_same_name_unless_replacing(kfp_api, tmp_path):
    server = kfp_api(MockKfpClient("recloop"))
    spec = write_spec(tmp_path)
    assert invoke("schedule", "--host", HOST, "--spec", spec)[0] == 0
    (first,) = server.recurring
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--cron", "0 4 * * 1")
    assert code == 1, out
    assert out == (f"schedule failed: experiment recloop already has a recurring run named 'recloop-weekly' "
                   f"({first}); --replace replaces it")
    assert server.methods()[-1] == "list_recurring_runs" and list(server.recurring) == [first]
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--cron", "0 4 * * 1", "--replace")
    assert code == 0 and f"(replacing {first})" in out, out
    assert server.methods()[-3:] == ["list_recurring_runs", "create_recurring_run", "delete_recurring_run"]
    assert server.calls[-1][1] == {"recurring_run_id": first}  # deleted once the new one exists
    (second,) = server.recurring
    assert second != first and server.calls[-2][1]["cron_expression"] == "0 0 4 * * 1"


def test_schedule_the_daily_skew_check(kfp_api, tmp_path):
    server = kfp_api(MockKfpClient())
    spec = write_spec(tmp_path, {"alertmanager_url": DROP, "day": ""}, name="recloop-daily", pipeline="daily",
                      cron="@daily")
    code, out = invoke("schedule", "--host", HOST, "--spec", spec)
    assert code == 0 and "cron '0 0 0 * * *'" in out, out
    call = server.calls[-1][1]
    assert call["ir"]["pipelineInfo"]["name"] == "recloop-daily-skew" and call["job_name"] == "recloop-daily"
    assert call["params"] == {"logs": "gs://b/logs", "registry": "gs://b/registry", "run_state": "gs://b/run-state",
                              "day": ""}


@pytest.mark.parametrize(("changes", "message"), [
    ({"timezone": "UTC"}, ("unknown key 'timezone'; the keys are name, experiment, cron, max_concurrency, catchup, "
                          "service_account, pipeline, parameters")),
    ({"cron": "0 24 * * 1"}, "recurring-run.yaml: cron field hour: 24 is outside 0-23 in '0 24 * * 1'"),
    ({"cron": "0 3 * *"}, "recurring-run.yaml: cron: expected 5 fields"),
    ({"parameters": {"epoch": 3}}, ("recurring-run.yaml: parameters: 'epoch' is not a parameter of recloop-weekly; "
                                   "its parameters: alertmanager_url, beam_args,")),
    ({"parameters": {"epochs": "three"}}, "parameters: parameter epochs: expected an integer, got 'three' (str)"),
    ({"parameters": {"start": "2026-01-05"}}, ("recurring-run.yaml: parameters: start must be absent or empty in a "
                                              "recurring run: each run takes its span from its scheduled time")),
    ({"parameters": {"start": "2026-01-05", "end": "2026-01-11"}}, "parameters: start, end must be absent"),
    ({"parameters": {"logs": DROP}}, "recurring-run.yaml: parameters: recloop-weekly needs logs"),
    ({"max_concurrency": 11}, "recurring-run.yaml: max_concurrency: Input should be less than or equal to 10"),
    ({"max_concurrency": 0}, "max_concurrency: Input should be greater than or equal to 1"),
    ({"catchup": "yes"}, "recurring-run.yaml: catchup: Input should be a valid boolean"),
    ({"name": DROP}, "recurring-run.yaml: name: Field required"),
    ({"pipeline": "hourly"}, "recurring-run.yaml: pipeline: expected one of weekly, daily"),
    ({"pipeline": "daily", "parameters": {"epochs": 2}}, "'epochs' is not a parameter of recloop-daily-skew"),
    ({"pipeline": "daily", "parameters": {"day": "2026-01-10"}}, "parameters: day must be absent or empty"),
])
def test_schedule_refuses_a_bad_spec_naming_the_problem(kfp_api, tmp_path, changes, message):
    server = kfp_api(MockKfpClient())
    code, out = invoke("schedule", "--host", HOST, "--spec", write_spec(tmp_path, changes.pop("parameters", None),
                                                                        **changes))
    assert code == 2 and "Invalid value for --spec: " in out and message in out, out
    assert server.connected == [] and server.calls == []


def test_schedule_refuses_a_missing_or_malformed_spec_file(kfp_api, tmp_path):
    kfp_api(MockKfpClient())
    code, out = invoke("schedule", "--host", HOST, "--spec", str(tmp_path / "nope.yaml"))
    assert code == 2 and "No such file or directory" in out and "nope.yaml" in out, out
    (tmp_path / "list.yaml").write_text("- name: recloop-weekly\n")
    code, out = invoke("schedule", "--host", HOST, "--spec", str(tmp_path / "list.yaml"))
    assert code == 2 and "list.yaml: Input should be a valid dictionary" in out, out


def test_the_repositorys_recurring_run_spec_is_valid_with_the_repositorys_values():
    spec = kfp_spec.load_spec(str(MANIFEST), str(VALUES))
    assert spec.pipeline == "recloop-weekly" and kfp_spec.kfp_cron(spec.cron).split()[0] == "0"
    assert not kfp_spec.missing_parameters(spec.pipeline, spec.parameters)
    values = kfp_spec.read_values(str(VALUES))
    assert {k: spec.parameters[k] for k in ("logs", "registry", "run_state", "catalog", "alertmanager_url")} == {
        "logs": values["LOGS_URI"], "registry": values["REGISTRY_URI"], "run_state": values["RUN_STATE_URI"],
        "catalog": values["CATALOG_URI"], "alertmanager_url": values["ALERTMANAGER_URL"]}
    assert spec.parameters["span_clock"] == "scheduled"  # KFP >= 2.17.0 (docs/deploy.md)
    with pytest.raises(ValueError, match=re.escape(
            "recurring-run.yaml: unfilled placeholders ${ALERTMANAGER_URL}, ${CATALOG_URI}, ${LOGS_URI}, "
            "${REGISTRY_URI}, ${RUN_STATE_URI}: no values file given")):
        kfp_spec.load_spec(str(MANIFEST))


def test_schedule_fills_the_specs_placeholders_from_the_values_file(kfp_api, tmp_path, monkeypatch):
    server = kfp_api(MockKfpClient())
    spec = write_spec(tmp_path, {"logs": "${BUCKET}/logs", "registry": "${BUCKET}/registry", "epochs": "${EPOCHS}"},
                      name="weekly-${SITE}")
    values = tmp_path / "site.env"
    values.write_text("\ufeff# site values\n\n  BUCKET=s3://b=1\nEPOCHS=3\nSITE=eu \nUNUSED=\n")
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--values", str(values))
    assert code == 0 and "recurring run 'weekly-eu '" in out, out  # values are taken as is, like kustomize
    params = server.calls[-1][1]["params"]
    assert (params["logs"], params["registry"], params["epochs"]) == ("s3://b=1/logs", "s3://b=1/registry", 3)
    values.write_text("BUCKET=s3://b\n")
    code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--values", str(values))
    assert code == 2 and ("Invalid value for --spec: " + spec + ": unfilled placeholders ${EPOCHS}, ${SITE}: not in "
                          + str(values)) in out, out
    for text, message in (("BUCKET\n", ":1: expected KEY=VALUE, got 'BUCKET'"),
                          ("A=1\nA=2\n", ":2: a key given twice, got 'A=2'"),
                          ("MY KEY=1\n", ":1: not a variable name, got 'MY KEY=1'")):
        values.write_text(text)
        code, out = invoke("schedule", "--host", HOST, "--spec", spec, "--values", str(values))
        assert code == 2 and f"Invalid value for --values: {values}{message}" in out, out
    monkeypatch.chdir(tmp_path)  # the default, manifests/recloop.env, is not here: only a spec without any needs none
    code, out = invoke("schedule", "--host", HOST, "--spec", spec)
    assert code == 2 and "Invalid value for --values: manifests/recloop.env: [Errno 2] No such file" in out, out
    assert invoke("schedule", "--host", HOST, "--spec", write_spec(tmp_path), "--replace")[0] == 0


def test_a_span_clock_the_steps_do_not_know_is_refused_at_schedule_time():
    with pytest.raises(ValueError, match="parameters: span_clock: expected one of scheduled, run-start, got 'now'"):
        kfp_spec.RecurringRunSpec.model_validate({**SPEC, "parameters": {**PARAMETERS, "span_clock": "now"}})
