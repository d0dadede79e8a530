"""Runs and recurring runs on a Kubeflow Pipelines API server, through the KFP SDK's client.

The API server is reached only through ``kfp_client``: no KFP backend runs here, so tests replace that one
function with a mock whose method signatures are checked against ``kfp.Client``'s.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recloop.pipelines.kfp_spec import RecurringRunSpec


def kfp_client(host: str, namespace: str | None) -> Any:
    """The KFP API client for ``host`` (tests replace this function: the API server cannot run here)."""
    import kfp

    with warnings.catch_warnings():  # kfp.Client warns on every construction that it needs a v2 backend
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def start_run(host: str, namespace: str | None, package: str, arguments: Mapping[str, Any], run_name: str,
              experiment: str, service_account: str | None) -> str:
    """Starts one run of a compiled pipeline ``package``; returns the run's id."""
    result = kfp_client(host, namespace).create_run_from_pipeline_package(
        pipeline_file=package, arguments=dict(arguments), run_name=run_name, experiment_name=experiment,
        namespace=namespace, service_account=service_account)
    return result.run_id


def experiment_id(client: Any, name: str, namespace: str | None) -> tuple[str, bool]:
    """The experiment's id, and whether it had to be created."""
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id, False
    except ValueError as e:  # kfp.Client's way of saying there is none
        if not str(e).startswith("No experiment is found with name"):
            raise
    return client.create_experiment(name=name, namespace=namespace).experiment_id, True


@dataclass(frozen=True)
class Scheduled:
    """What ``schedule`` did: the new recurring run, the ones it replaced, whether the experiment is new."""

    recurring_run_id: str
    replaced: list[str]
    experiment_created: bool


def schedule(host: str, namespace: str | None, run: RecurringRunSpec, cron: str, package: str,
             replace: bool) -> Scheduled:
    """Creates the recurring run ``run`` describes on ``cron`` (KFP's 6-field form), replacing one of the
    same name in its experiment only when ``replace``.

    Raises:
      RuntimeError: the experiment already has a recurring run of that name and ``replace`` is off; and
        whatever the API raises.
    """
    by_name = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": run.name}]})
    client = kfp_client(host, namespace)
    exp, created = experiment_id(client, run.experiment, namespace)
    old = client.list_recurring_runs(experiment_id=exp, filter=by_name, page_size=100).recurring_runs or []
    if old and not replace:
        ids = ", ".join(r.recurring_run_id for r in old)
        raise RuntimeError(f"experiment {run.experiment} already has a recurring run named {run.name!r} "
                           f"({ids}); --replace replaces it")
    new = client.create_recurring_run(
        experiment_id=exp, job_name=run.name, cron_expression=cron, max_concurrency=run.max_concurrency,
        no_catchup=not run.catchup, params=run.parameters, pipeline_package_path=package,
        service_account=run.service_account, enabled=True)
    for r in old:  # after the new one exists: no week without a schedule if creating it failed
        client.delete_recurring_run(r.recurring_run_id)
    return Scheduled(new.recurring_run_id, [r.recurring_run_id for r in old], created)
