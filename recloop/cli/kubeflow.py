"""``recloop compile``, ``submit`` and ``schedule``: recloop's pipelines onto Kubeflow Pipelines (KFP v2).

compile writes a pipeline's IR YAML; submit starts one run; schedule creates the recurring run a spec file
(``manifests/recurring-run.yaml``) describes. Each compiles with recloop's image (--image or $RECLOOP_IMAGE,
required), each task's CPU and memory (defaults, or a --resources file) and the Secret and ConfigMap each step's
pod takes the object store's settings from (--credentials-secret, --config-map). Parameters are checked and typed
against the pipeline's declared inputs, and crons against KFP's scheduler, before anything reaches the cluster.
This module parses and prints; compiling is ``pipelines.compile``, the checks ``pipelines.kfp_spec``, the API
calls ``pipelines.remote``.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from recloop.cli.console import console
from recloop.pipelines import kfp_spec, remote
from recloop.pipelines.compile import CompileError, compile_pipeline, images, task_order
from recloop.pipelines.env import DEFAULT_ENV, ClusterEnv
from recloop.pipelines.resources import DEFAULTS, load_resources


def _bad(hint: str, error: Exception) -> typer.BadParameter:
    return typer.BadParameter(str(error), param_hint=hint)


def _pipeline_option(value: str) -> str:
    """The pipeline a --pipeline option names, or the usage error that names the option."""
    try:
        return kfp_spec.pipeline_name(value)
    except ValueError as e:
        raise _bad("--pipeline", e) from None


def _compile(pipeline: str, out: str, image: str | None, resources: str | None, secret: str,
             config_map: str) -> dict[str, Any]:
    try:
        table = load_resources(resources) if resources is not None else DEFAULTS
    except ValueError as e:
        raise _bad("--resources", e) from None
    env = ClusterEnv(credentials_secret=secret or None, config_map=config_map or None)
    try:
        return compile_pipeline(pipeline, out, image, table, env)
    except CompileError as e:
        console.print(f"[red]compile failed:[/red] {e}", soft_wrap=True)
        raise typer.Exit(1) from None
    except ValueError as e:
        raise _bad("--out" if str(e).startswith("out:") else "--image", e) from None


PipelineOpt = Annotated[str, typer.Option(help="weekly | daily (or recloop-weekly, recloop-daily-skew)")]
ImageOpt = Annotated[str | None, typer.Option(
    help="recloop's container image for every step, built from the Dockerfile (default: $RECLOOP_IMAGE; one of "
         "them is required)")]
ResourcesOpt = Annotated[str | None, typer.Option(
    help="a YAML file of CPU and memory per task, overriding the defaults: TASK: {cpu_request, cpu_limit, "
         "memory_request, memory_limit}")]
SecretOpt = Annotated[str, typer.Option(
    help="the Secret every step takes the object store's credentials from (keys accesskey, secretkey -> "
         "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); '' for none (gs:// with Workload Identity)")]
ConfigMapOpt = Annotated[str, typer.Option(
    help="the ConfigMap every step takes AWS_ENDPOINT_URL and AWS_DEFAULT_REGION from (manifests/recloop.env's); "
         "'' for none")]
HostOpt = Annotated[str, typer.Option(help="the KFP API endpoint, e.g. http://localhost:8080 (port-forward of "
                                           "ml-pipeline-ui) or https://kubeflow.example.com/pipeline")]
NamespaceOpt = Annotated[str | None, typer.Option(help="the Kubeflow profile namespace (multi-user KFP)")]


def compile(
    out: Annotated[str, typer.Option(help="where to write the IR YAML")] = "pipeline.yaml",
    pipeline: PipelineOpt = "recloop-weekly",
    image: ImageOpt = None,
    resources: ResourcesOpt = None,
    credentials_secret: SecretOpt = DEFAULT_ENV.credentials_secret or "",
    config_map: ConfigMapOpt = DEFAULT_ENV.config_map or "",
) -> None:
    """Compile a pipeline to KFP IR YAML (a compiler warning fails it), to upload in the Kubeflow UI."""
    name = _pipeline_option(pipeline)
    ir = _compile(name, out, image, resources, credentials_secret, config_map)
    console.print(f"wrote {name} to {out}: {' -> '.join(task_order(ir))}; image {', '.join(images(ir))}",
                  soft_wrap=True)


# -- submit ---------------------------------------------------------------------------------------------------
def _date(key: str, value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a date YYYY-MM-DD, got {value!r}") from None


def _option(key: str, options: Mapping[str, Any] | None = None) -> str:
    return f"--{key.replace('_', '-')}" if options is None or key in options else f"--param {key}=..."


def run_arguments(pipeline: str, options: Mapping[str, Any], params: list[str]) -> dict[str, Any]:
    """A one-off run's arguments from the named options (None: not given) and ``KEY=VALUE`` strings, typed.

    Raises:
      typer.BadParameter: naming the option: unknown, twice, mistyped, missing, or no span (start/end, day).
    """
    name, arguments = kfp_spec.pipeline_name(pipeline), {}
    pairs = [(k, v, _option(k)) for k, v in options.items() if v is not None]
    for pair in params:
        key, sep, value = pair.partition("=")
        if not sep or key in {k for k, _, _ in pairs}:
            raise typer.BadParameter(f"{'given twice' if sep else 'expected KEY=VALUE'}, got {pair!r}",
                                     param_hint="--param")
        pairs.append((key, value, "--param"))
    for key, value, hint in pairs:
        try:
            arguments.update(kfp_spec.typed_arguments(name, {key: value}))
        except ValueError as e:
            raise _bad(hint, e) from None
    if missing := kfp_spec.missing_parameters(name, arguments):
        raise typer.BadParameter(f"{name} needs {', '.join(missing)}",
                                 param_hint=", ".join(_option(k, options) for k in missing))
    span = kfp_spec.SPAN[name]
    if any(not arguments.get(k) for k in span):
        raise typer.BadParameter(f"a one-off run of {name} needs {' and '.join(span)} (YYYY-MM-DD): only a recurring "
                                 f"run (recloop schedule) takes its span from its scheduled time",
                                 param_hint=", ".join(_option(k, options) for k in span))
    try:
        dates = [_date(k, arguments[k]) for k in span]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if dates != sorted(dates):
        raise typer.BadParameter(f"start {dates[0]} is after end {dates[-1]}", param_hint="--start, --end")
    return arguments


def submit(
    host: HostOpt,
    logs: Annotated[str | None, typer.Option(help="the logs root URI (requests/, events/ by dt=)")] = None,
    registry: Annotated[str | None, typer.Option(help="the model registry URI")] = None,
    run_state: Annotated[str | None, typer.Option(help="the run-state URI (previous statistics, alerts)")] = None,
    start: Annotated[str | None, typer.Option(help="first day of the span (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, typer.Option(help="last day of the span, included (YYYY-MM-DD)")] = None,
    catalog: Annotated[str | None, typer.Option(help="the served item feed root")] = None,
    alertmanager_url: Annotated[str | None, typer.Option(help="where blocking anomalies are posted")] = None,
    epochs: Annotated[int | None, typer.Option(help="both models' epochs (0: the config's)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, any other pipeline parameter (repeatable)")
                     ] = None,
    pipeline: PipelineOpt = "weekly",
    experiment: Annotated[str, typer.Option(help="the KFP experiment (created if missing)")] = "recloop",
    run_name: Annotated[str | None, typer.Option(help="the run's name (default: pipeline and span)")] = None,
    namespace: NamespaceOpt = None,
    service_account: Annotated[str | None, typer.Option(help="the Kubernetes service account of the run")] = None,
    image: ImageOpt = None,
    resources: ResourcesOpt = None,
    credentials_secret: SecretOpt = DEFAULT_ENV.credentials_secret or "",
    config_map: ConfigMapOpt = DEFAULT_ENV.config_map or "",
) -> None:
    """Start one run of a pipeline on Kubeflow Pipelines (compiled here, parameters checked first)."""
    name = _pipeline_option(pipeline)
    options = {"logs": logs, "registry": registry, "run_state": run_state, "start": start, "end": end,
               "catalog": catalog, "alertmanager_url": alertmanager_url, "epochs": epochs}
    arguments = run_arguments(name, options, param or [])
    run_name = run_name or f"{name} {'..'.join(str(arguments[k]) for k in kfp_spec.SPAN[name])}"
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp, f"{name}.yaml"))
        _compile(name, package, image, resources, credentials_secret, config_map)
        try:
            run_id = remote.start_run(host, namespace, package, arguments, run_name, experiment, service_account)
        except Exception as e:  # noqa: BLE001 - no endpoint, auth, an API error: nothing started
            console.print(f"[red]submit failed:[/red] {' '.join(str(e).split())}", soft_wrap=True)
            raise typer.Exit(1) from None
    console.print(f"started run {run_id} ({run_name!r}) in experiment {experiment}: "
                  f"{host.rstrip('/')}/#/runs/details/{run_id}", soft_wrap=True)


# -- schedule -------------------------------------------------------------------------------------------------
def schedule(
    host: HostOpt,
    spec: Annotated[str, typer.Option(help="the recurring run: name, experiment, cron, parameters, ...")
                    ] = "manifests/recurring-run.yaml",
    values: Annotated[str, typer.Option(help="KEY=VALUE file filling the spec's ${KEY} placeholders: the site "
                                             "values kustomize gives the server (read only if the spec has any)")
                      ] = kfp_spec.VALUES,
    cron: Annotated[str | None, typer.Option(help="instead of the spec's cron: 5 fields, UTC (or 6, second first)")
                    ] = None,
    namespace: NamespaceOpt = None,
    image: ImageOpt = None,
    resources: ResourcesOpt = None,
    credentials_secret: SecretOpt = DEFAULT_ENV.credentials_secret or "",
    config_map: ConfigMapOpt = DEFAULT_ENV.config_map or "",
    replace: Annotated[bool, typer.Option(help="replace the experiment's recurring run of the same name")] = False,
) -> None:
    """Create the recurring run a spec describes (the weekly run: Mondays 03:00 UTC, each on the week before)."""
    try:
        run = kfp_spec.load_spec(spec, values)
    except ValueError as e:
        raise _bad("--values" if str(e).startswith(f"{values}:") else "--spec", e) from None
    try:
        expression = kfp_spec.kfp_cron(cron if cron is not None else run.cron)
    except kfp_spec.CronError as e:
        raise _bad("--cron", e) from None
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp, f"{run.pipeline}.yaml"))
        _compile(run.pipeline, package, image, resources, credentials_secret, config_map)
        try:
            done = remote.schedule(host, namespace, run, expression, package, replace)
        except Exception as e:  # noqa: BLE001 - no endpoint, auth, an API error, a duplicate
            console.print(f"[red]schedule failed:[/red] {' '.join(str(e).split())}", soft_wrap=True)
            raise typer.Exit(1) from None
    replaced = f" (replacing {', '.join(done.replaced)})" if done.replaced else ""
    console.print(f"recurring run {run.name!r} {done.recurring_run_id}{replaced} in experiment {run.experiment}"
                  f"{' (created)' if done.experiment_created else ''}: cron '{expression}' (UTC), max concurrency "
                  f"{run.max_concurrency}, catchup {'on' if run.catchup else 'off'}, service account "
                  f"{run.service_account or '(KFP default)'}; parameters {json.dumps(run.parameters)}", soft_wrap=True)
