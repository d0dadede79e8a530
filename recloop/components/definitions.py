"""The weekly run's KFP v2 components: each turns artifacts into paths, calls one step, and publishes what the
Kubeflow UI shows (Metrics, Markdown, HTML).

Lightweight Python components are hermetic: imports live in the body, which runs
in recloop's own image on a cluster (built from the repository's Dockerfile) and
in the current environment under ``kfp.local``. The logic is in ``steps``.

Each task that reads or writes data runs in a process of its own, so it takes the
feature declaration as a parameter (``features``: a URI, "" for the default one)
and puts it into ``RECLOOP_FEATURES`` before importing recloop, which reads it
once at import (``features.spec``).
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

# There is no published image: the decorator needs one at import time, so the components name this placeholder,
# which kfp.local never pulls and compile refuses to leave in a spec (it writes --image or $RECLOOP_IMAGE instead)
IMAGE_UNSET = "recloop-image-unset"
component = dsl.component(base_image=IMAGE_UNSET, install_kfp_package=False)  # the image has kfp, from uv.lock


@component
def ingest(logs: str, start: str, end: str, scheduled_time: str, span_clock: str, sample_users: float,
           sample_data: float, max_dead_letter_share: float, beam_args: list, examples: Output[Dataset],
           metrics: Output[Metrics], summary: Output[Markdown], features: str = ""):
    """Beam: one span of request logs and events -> labelled examples, dead letters, reconciled counts."""
    import datetime as dt
    import os
    import time

    os.environ["RECLOOP_FEATURES"] = features  # before recloop is imported: read once per process

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    first, last = steps.span(start, end, scheduled_time, span_clock=span_clock, now=dt.datetime.now(dt.UTC))
    out = steps.ingest_target(examples.path, examples.uri, beam_args)
    if out != examples.path:  # a remote runner writes the artifact's URI itself; the launcher uploads a note
        os.makedirs(examples.path, exist_ok=True)
        with open(os.path.join(examples.path, "_written_by_the_runner.txt"), "w") as f:
            f.write(f"the examples were written to {out} by the Beam runner\n")
    s = steps.ingest(logs, first, last, out, sample_users, sample_data, max_dead_letter_share, beam_args)
    publish.ingest(s, examples, metrics, summary, time.perf_counter() - t0)


@component
def validate(examples: Input[Dataset], run_state: str, registry: str, alertmanager_url: str, config: str,
             validation: Output[Artifact], statistics: Output[HTML], anomalies: Output[HTML],
             anomaly_table: Output[Markdown], metrics: Output[Metrics], features: str = ""):
    """TFDV: statistics, schema, skew vs production, drift vs the previous span, alerts. Always succeeds."""
    import os
    import time

    os.environ["RECLOOP_FEATURES"] = features

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    verdict = steps.validate(examples.path, validation.path, run_state, registry, alertmanager_url, config)
    publish.validation(verdict, validation, statistics, anomalies, anomaly_table, metrics, time.perf_counter() - t0)


@component
def check(validation: Input[Artifact]) -> str:
    """Fails the run on a blocking anomaly (after validate published it and alerted); else says OK."""
    from recloop.components import steps

    verdict = steps.check(validation.path)
    return f"no blocking anomaly in {verdict['spans']['current']} ({len(verdict['anomalies'])} non-blocking)"


@component
def train(examples: Input[Dataset], validation: Input[Artifact], config: str, epochs: int, seed: int,
          model: Output[Model], metrics: Output[Metrics], card: Output[Markdown], features: str = "",
          workers: int = 1, job: str = ""):
    """TFRS two-tower retrieval + DCN ranking, exported with the serving tables and the skew reference; with
    ``workers`` > 1, a Kubeflow TFJob of that many workers (``job``: their resources and object-store settings)."""
    import os

    os.environ["RECLOOP_FEATURES"] = features

    from recloop.components import publish, steps

    if workers > 1:
        model_card = steps.train_on_workers(examples.uri, validation.uri, model.uri, model.path, workers, job,
                                            config, epochs, seed, features)
    else:
        model_card = steps.train(examples.path, validation.path, model.path, config, epochs, seed)
    publish.training(model_card, model, metrics, card)


@component
def evaluate(model: Input[Model], examples: Input[Dataset], registry: str, config: str, catalog: str,
             blessing: Output[Artifact], summary: Output[Markdown], plots: Output[HTML], metrics: Output[Metrics],
             features: str = ""):
    """The gate: candidate vs production vs popularity on the held-out day; writes the blessing (data)."""
    import os
    import time

    os.environ["RECLOOP_FEATURES"] = features

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    result = steps.evaluate(model.path, [examples.path], registry, blessing.path, config, catalog)
    publish.blessing(result, blessing, summary, plots, metrics, time.perf_counter() - t0)


@component
def infra_validate(model: Input[Model], blessing: Input[Artifact], examples: Input[Dataset], catalog: str,
                   requests: int, p99_ms: float, infra_blessing: Output[Artifact], metrics: Output[Metrics],
                   features: str = ""):
    """The real server loads the candidate on 127.0.0.1 and answers canned requests (skipped if not blessed)."""
    import os
    import time

    os.environ["RECLOOP_FEATURES"] = features  # the server it starts inherits it

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    result = steps.infra_validate(model.path, blessing.path, examples.path, infra_blessing.path, catalog, requests,
                                  p99_ms)
    publish.infra(result, infra_blessing, metrics, time.perf_counter() - t0)


@component
def push(model: Input[Model], blessing: Input[Artifact], infra_blessing: Input[Artifact], registry: str,
         pushed: Output[Artifact], summary: Output[Markdown], metrics: Output[Metrics]) -> str:
    """Pushes a blessed, infra-validated candidate; records pushed 0/1. Returns the version now in production."""
    import time

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    record = steps.push(model.path, blessing.path, infra_blessing.path, registry, pushed.path)
    publish.push(record, pushed, summary, metrics, time.perf_counter() - t0)
    return record.get("production_after") or record["production_before"] or ""


@component
def monitor(logs: str, day: str, scheduled_time: str, span_clock: str, registry: str, run_state: str,
            alertmanager_url: str, config: str, validation: Output[Artifact], statistics: Output[HTML],
            anomalies: Output[HTML], anomaly_table: Output[Markdown], metrics: Output[Metrics], features: str = ""):
    """The daily skew check: one day of serving logs vs the production model's training statistics."""
    import datetime as dt
    import os
    import time

    os.environ["RECLOOP_FEATURES"] = features

    from recloop.components import publish, steps

    t0 = time.perf_counter()
    _, last = steps.span(day, day, scheduled_time, days=1, span_clock=span_clock, now=dt.datetime.now(dt.UTC))
    verdict = steps.monitor(logs, last, validation.path, registry, run_state, alertmanager_url, config)
    publish.validation(verdict, validation, statistics, anomalies, anomaly_table, metrics, time.perf_counter() - t0)
