"""The weekly pipeline and the daily skew check, as KFP v2 pipelines (docs/architecture.md, "The weekly pipeline").

ingest -> validate -> check -> train -> evaluate -> infra-validate -> push. Validate always
succeeds, so its statistics and anomaly table reach the UI in a bad week; check fails the run
on a blocking anomaly. An unblessed candidate is data, not an error: infra-validate skips it,
push records ``pushed: false`` and the run succeeds (TFX-style, no ``dsl.Condition``, so the
same pipeline runs under ``kfp.local``).
"""

import json
from collections.abc import Mapping
from typing import Any

from kfp import dsl, kubernetes

from recloop import storage
from recloop.components import definitions as c
from recloop.pipelines.env import DEFAULT_ENV, ClusterEnv
from recloop.pipelines.resources import DEFAULTS, Resources

WEEKLY = "recloop-weekly"
DAILY = "recloop-daily-skew"
TASKS = ("ingest", "validate", "check", "train", "evaluate", "infra-validate", "push")

# KFP caches every task by default: a task run again with the same component, inputs and parameters gets the
# earlier outputs without running. Only a pure function of its input artifacts and parameters may be replayed:
# check (reads the verdict artifact) and train (examples, verdict, config, epochs, seed). Never cached: ingest
# (the logs at the URI change: late events land in past days), validate and monitor (send alerts, move the
# run state), evaluate (reads production, which moves), infra-validate (a live server's latency), push (writes
# the registry: a replayed "pushed" would claim a push that did not happen).
CACHED = frozenset({"check", "train"})
# Retried (pod evicted, node lost, a store's 5xx) only where a second attempt cannot harm: ingest overwrites
# its output, train, evaluate and infra-validate only write their own. Not validate or monitor: they hold the
# run state's lock (validation/state.py) and a retry after a crash would find its own lock; not push: a
# compare-and-swap of the registry pointer, so a retry after a success would be refused and fail the run; not
# check: it fails on purpose, on a blocking anomaly, and would only fail again minutes later.
RETRIED = frozenset({"ingest", "train", "evaluate", "infra-validate"})
RETRY = {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2.0}  # after 60 s, then 120 s


def _on_cluster(task: dsl.PipelineTask, resources: Mapping[str, Resources], env: ClusterEnv) -> dsl.PipelineTask:
    """Caching, CPU and memory, retries, the object store's environment: what a cluster reads of a task
    (kfp.local ignores them)."""
    name = task.component_spec.name
    task.set_caching_options(name in CACHED)
    r = resources[name]
    task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
    task.set_memory_request(r.memory_request).set_memory_limit(r.memory_limit)
    if name in RETRIED:
        task.set_retry(**RETRY)
    if env.credentials_secret:
        kubernetes.use_secret_as_env(task, env.credentials_secret, storage.S3_SECRET_ENV)
    if env.config_map:
        kubernetes.use_config_map_as_env(task, env.config_map, {k: k for k in storage.S3_CONFIG_ENV})
    return task


def _job(resources: Mapping[str, Resources], env: ClusterEnv) -> str:
    """What a TFJob's workers get of the train task (``components.training_job.manifest``'s settings), as JSON."""
    return json.dumps({"resources": resources["train"].model_dump(), "credentials_secret": env.credentials_secret,
                       "config_map": env.config_map}, sort_keys=True)


def weekly(scheduled_time: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
           resources: Mapping[str, Resources] = DEFAULTS, env: ClusterEnv = DEFAULT_ENV) -> Any:
    """The weekly pipeline. ``scheduled_time`` is KFP's placeholder on a cluster; kfp.local cannot resolve it,
    so local runs build it with ``""`` and pass start and end. ``resources``: each task's CPU and memory; ``env``:
    the Secret and ConfigMap its pods take the object store's settings from."""

    @dsl.pipeline(name=WEEKLY, description="recloop: one week of serving logs -> a validated, gated, pushed model")
    def weekly_pipeline(
        logs: str,
        registry: str,
        run_state: str,
        start: str = "",
        end: str = "",
        span_clock: str = "scheduled",
        catalog: str = "",
        alertmanager_url: str = "",
        validation_config: str = "",
        gate_config: str = "",
        train_config: str = "",
        epochs: int = 0,
        seed: int = 0,
        sample_users: float = 1.0,
        sample_data: float = 1.0,
        max_dead_letter_share: float = 0.01,
        beam_args: list = ["--runner", "DirectRunner"],  # noqa: B006 - a KFP parameter default, never mutated
        infra_requests: int = 200,
        infra_p99_ms: float = 250.0,
        features: str = "",
        train_workers: int = 1,
    ):
        """Args (pipeline parameters):
          logs: the logs root (requests/, events/ by dt=; catalog/ feeds), any fsspec URI.
          registry: model registry URI; run_state: run-state folder (previous span's statistics, alerts, schemas).
          start, end: the span (YYYY-MM-DD, end included); empty on a schedule: the 7 days before the scheduled time.
          span_clock: ``scheduled`` (KFP >= 2.17 fills in the scheduled time) or ``run-start`` (older backends
            leave it unfilled: the span is the 7 days before the run's start instead); docs/deploy.md.
          catalog: the served item feed root for replay and infra validation (default: the logs root's catalog/).
          alertmanager_url: where blocking anomalies are posted (empty: kept in the run state).
          validation_config, gate_config, train_config: thresholds and training config files (empty: defaults).
          epochs: both models' epochs (0: the config's); seed: training seed.
          sample_users, sample_data: eval members / training examples kept (quick iteration).
          beam_args: Beam pipeline options for ingest (e.g. --runner DataflowRunner --project P --region R).
          infra_requests, infra_p99_ms: infra validation's canned requests and latency budget.
          features: the feature declaration (a YAML URI; empty: recloop's default), set as RECLOOP_FEATURES in
            every task that reads or writes data (docs/architecture.md, "Declaring your own features").
          train_workers: 1 trains in the train task; N > 1 in a Kubeflow TFJob of N workers, each with the train
            task's resources (the Training Operator must be installed; docs/deploy.md).
        """
        ingest = _on_cluster(c.ingest(logs=logs, start=start, end=end, scheduled_time=scheduled_time,
                                      span_clock=span_clock, sample_users=sample_users, sample_data=sample_data,
                                      max_dead_letter_share=max_dead_letter_share, beam_args=beam_args,
                                      features=features), resources, env)
        validate = _on_cluster(c.validate(examples=ingest.outputs["examples"], run_state=run_state,
                                          registry=registry, alertmanager_url=alertmanager_url,
                                          config=validation_config, features=features), resources, env)
        check = _on_cluster(c.check(validation=validate.outputs["validation"]), resources, env)
        train = _on_cluster(c.train(examples=ingest.outputs["examples"], validation=validate.outputs["validation"],
                                    config=train_config, epochs=epochs, seed=seed, features=features,
                                    workers=train_workers, job=_job(resources, env)).after(check), resources, env)
        evaluate = _on_cluster(c.evaluate(model=train.outputs["model"], examples=ingest.outputs["examples"],
                                          registry=registry, config=gate_config, catalog=catalog, features=features),
                               resources, env)
        infra = _on_cluster(c.infra_validate(model=train.outputs["model"], blessing=evaluate.outputs["blessing"],
                                             examples=ingest.outputs["examples"], catalog=catalog,
                                             requests=infra_requests, p99_ms=infra_p99_ms, features=features),
                            resources, env)
        _on_cluster(c.push(model=train.outputs["model"], blessing=evaluate.outputs["blessing"],
                           infra_blessing=infra.outputs["infra_blessing"], registry=registry), resources, env)

    return weekly_pipeline


def daily(scheduled_time: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
          resources: Mapping[str, Resources] = DEFAULTS, env: ClusterEnv = DEFAULT_ENV) -> Any:
    """The daily skew check (``recloop monitor``): fails on a blocking anomaly, after alerting."""

    @dsl.pipeline(name=DAILY, description="recloop: yesterday's serving logs vs production's training statistics")
    def daily_pipeline(logs: str, registry: str, run_state: str, day: str = "", span_clock: str = "scheduled",
                       alertmanager_url: str = "", validation_config: str = "", features: str = ""):
        """day: the day checked (YYYY-MM-DD); empty on a schedule: the day before the scheduled time (or the
        run's start, with span_clock ``run-start``: see the weekly pipeline); features: as the weekly's."""
        monitor = _on_cluster(c.monitor(logs=logs, day=day, scheduled_time=scheduled_time, span_clock=span_clock,
                                        registry=registry,
                                        run_state=run_state, alertmanager_url=alertmanager_url,
                                        config=validation_config, features=features), resources, env)
        _on_cluster(c.check(validation=monitor.outputs["validation"]), resources, env)

    return daily_pipeline


PIPELINES = {WEEKLY: weekly, DAILY: daily}
