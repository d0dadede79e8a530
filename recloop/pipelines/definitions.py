"""The weekly pipeline and the daily skew check, as KFP v2 pipelines (docs/architecture.md, "The weekly pipeline").

ingest -> validate -> check -> train -> evaluate -> infra-validate -> push. Validate always
succeeds, so its statistics and anomaly table reach the UI in a bad week; check fails the run
on a blocking anomaly. An unblessed candidate is data, not an error: infra-validate skips it,
push records ``pushed: false`` and the run succeeds (TFX-style, no ``dsl.Condition``, so the
same pipeline runs under ``kfp.local``).
"""

from typing import Any

from kfp import dsl

from recloop.components import definitions as c

WEEKLY = "recloop-weekly"
DAILY = "recloop-daily-skew"
TASKS = ("ingest", "validate", "check", "train", "evaluate", "infra-validate", "push")


def weekly(scheduled_time: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER) -> Any:
    """The weekly pipeline. ``scheduled_time`` is KFP's placeholder on a cluster; kfp.local cannot resolve it,
    so local runs build it with ``""`` and pass start and end."""

    @dsl.pipeline(name=WEEKLY, description="recloop: one week of serving logs -> a validated, gated, pushed model")
    def weekly_pipeline(
        logs: str,
        registry: str,
        run_state: str,
        start: str = "",
        end: str = "",
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
    ):
        """Args (pipeline parameters):
          logs: the logs root (requests/, events/ by dt=; catalog/ feeds), any fsspec URI.
          registry: model registry URI; run_state: run-state folder (previous span's statistics, alerts, schemas).
          start, end: the span (YYYY-MM-DD, end included); empty on a schedule: the 7 days before the scheduled time.
          catalog: the served item feed root for replay and infra validation (default: the logs root's catalog/).
          alertmanager_url: where blocking anomalies are posted (empty: kept in the run state).
          validation_config, gate_config, train_config: thresholds and training config files (empty: defaults).
          epochs: both models' epochs (0: the config's); seed: training seed.
          sample_users, sample_data: eval members / training examples kept (quick iteration).
          beam_args: Beam pipeline options for ingest (e.g. --runner DataflowRunner --project P --region R).
          infra_requests, infra_p99_ms: infra validation's canned requests and latency budget.
        """
        ingest = c.ingest(logs=logs, start=start, end=end, scheduled_time=scheduled_time,
                          sample_users=sample_users, sample_data=sample_data,
                          max_dead_letter_share=max_dead_letter_share, beam_args=beam_args)
        validate = c.validate(examples=ingest.outputs["examples"], run_state=run_state, registry=registry,
                              alertmanager_url=alertmanager_url, config=validation_config)
        check = c.check(validation=validate.outputs["validation"])
        train = c.train(examples=ingest.outputs["examples"], validation=validate.outputs["validation"],
                        config=train_config, epochs=epochs, seed=seed).after(check)
        evaluate = c.evaluate(model=train.outputs["model"], examples=ingest.outputs["examples"], registry=registry,
                              config=gate_config, catalog=catalog)
        infra = c.infra_validate(model=train.outputs["model"], blessing=evaluate.outputs["blessing"],
                                 examples=ingest.outputs["examples"], catalog=catalog, requests=infra_requests,
                                 p99_ms=infra_p99_ms)
        c.push(model=train.outputs["model"], blessing=evaluate.outputs["blessing"],
               infra_blessing=infra.outputs["infra_blessing"], registry=registry)

    return weekly_pipeline


def daily(scheduled_time: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER) -> Any:
    """The daily skew check (``recloop monitor``): fails on a blocking anomaly, after alerting."""

    @dsl.pipeline(name=DAILY, description="recloop: yesterday's serving logs vs production's training statistics")
    def daily_pipeline(logs: str, registry: str, run_state: str, day: str = "", alertmanager_url: str = "",
                       validation_config: str = ""):
        """day: the day checked (YYYY-MM-DD); empty on a schedule: the day before the scheduled time."""
        monitor = c.monitor(logs=logs, day=day, scheduled_time=scheduled_time, registry=registry,
                            run_state=run_state, alertmanager_url=alertmanager_url, config=validation_config)
        c.check(validation=monitor.outputs["validation"])

    return daily_pipeline


PIPELINES = {WEEKLY: weekly, DAILY: daily}
