"""The weekly run's steps as plain functions over paths: what each KFP component (and CLI command) calls.

A step joins the library packages for one pipeline task (TFX's executor, without
KFP): it reads the run state (the previous span's statistics, undelivered alerts,
the schema versions) and the registry (the production version: skew reference and
gate baseline), calls the library, and writes one output folder. Nothing here
imports KFP, so every step runs and is tested without it; ``weekly`` wraps them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recloop import storage

REFERENCE_STATS = "validation/stats/train.pb"  # in a registry version: its training statistics (skew reference)
logger = logging.getLogger(__name__)
UNRESOLVED = "{{$"  # a KFP placeholder the local runner left as text


class StepError(RuntimeError):
    """A step cannot run with what it was given (the message names the input and what was expected)."""


class BlockingAnomalies(StepError):
    """Validation found blocking anomalies: the run must stop before training.

    See docs/architecture.md, "The weekly pipeline".
    """


SPAN_CLOCKS = ("scheduled", "run-start")


def span(start: str, end: str, scheduled_time: str = "", days: int = 7, span_clock: str = "scheduled",
         now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """The span to ingest: ``start``..``end`` when given, else the ``days`` days before the scheduled time.

    A recurring run passes KFP's scheduled time (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``), so a
    run scheduled on Monday 03:00 ingests Monday..Sunday of the week before. KFP backends fill it in from
    2.17.0; 2.16 passes an empty string and earlier ones the placeholder's text (docs/deploy.md). On those,
    ``span_clock="run-start"`` takes the span from ``now``, the time the run's step started, instead.

    Raises:
      StepError: naming the parameter, when a date does not parse or nothing says which span.
    """
    def date(name: str, value: str) -> dt.date:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise StepError(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from None

    if span_clock not in SPAN_CLOCKS:
        raise StepError(f"span_clock: expected one of {', '.join(SPAN_CLOCKS)}, got {span_clock!r}")
    if start or end:
        if not (start and end):
            raise StepError(f"start and end go together, got start={start!r} end={end!r}")
        return date("start", start), date("end", end)
    if not scheduled_time or scheduled_time.startswith(UNRESOLVED):
        if span_clock == "run-start" and now is not None:
            when = now
        else:
            raise StepError(
                f"no span: the scheduled time is {scheduled_time!r}, which KFP backends before 2.17.0 leave unfilled "
                "(2.16: empty, earlier: the placeholder itself). Pass start and end (YYYY-MM-DD) for a one-off run; "
                "on a recurring run with such a backend set span_clock=run-start to take the span from the time "
                "the run starts")
    else:
        try:
            when = dt.datetime.fromisoformat(scheduled_time)
        except ValueError:
            raise StepError(f"scheduled_time: expected an RFC 3339 time, got {scheduled_time!r}") from None
    last = when.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    return last - dt.timedelta(days=days - 1), last


def ingest(logs: str, first: dt.date, last: dt.date, out: str, sample_users: float = 1.0,
           sample_data: float = 1.0, max_dead_letter_share: float = 0.01, beam_args: Sequence[str] = ()
           ) -> dict[str, Any]:
    """Runs the Beam ingest of one span into ``out``; returns its summary (``summary.json``)."""
    from recloop.ingest import IngestConfig, run

    config = IngestConfig(logs=logs, start=first, end=last, out=out, sample_users=sample_users,
                          sample_data=sample_data, max_dead_letter_share=max_dead_letter_share, overwrite=True)
    return run(config, beam_args=list(beam_args) or ["--runner", "DirectRunner"])


def ingest_target(path: str, uri: str, beam_args: Sequence[str]) -> str:
    """Where ingest writes its examples artifact: the pod-local ``path`` on the DirectRunner (KFP's launcher
    uploads it), else the artifact's own ``uri`` on the object store, which a remote runner's workers reach
    (KFP's ``minio://`` is S3's API: fsspec's ``s3://`` with the endpoint from the environment).

    Raises:
      StepError: a remote runner and an artifact URI that is not on an object store (kfp.local's are paths).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"
    if runner in ("DirectRunner", "direct"):
        return path
    return object_uri(uri, f"beam_args: the {runner} writes the examples where its workers can reach them")


def object_uri(uri: str, why: str) -> str:
    """An artifact's URI as recloop's storage names it (KFP's ``minio://`` is S3's API: fsspec's ``s3://`` with the
    endpoint from the environment), for other pods to reach it.

    Raises:
      StepError: for a URI not on an object store (kfp.local's are paths), with ``why`` it is needed.
    """
    for prefix, scheme in (("minio://", "s3://"), ("s3://", "s3://"), ("gs://", "gs://")):
        if uri.startswith(prefix):
            return scheme + uri[len(prefix):]
    raise StepError(f"{why}, an object store; this run's artifact URI is {uri!r} (a pipeline root on S3, MinIO or "
                    "GCS is needed)")


def production(registry: str, now: dt.datetime | None = None) -> tuple[str | None, str | None]:
    """The name and directory URI of the version that actually serves (Nones before the first push).

    That is the registry pointer's version unless the servers' reports (``serving.replicas``) say they serve
    another one (a version they rejected, or one not loaded yet); then the one most replicas serve, logged.
    """
    from recloop.serving import replicas
    from recloop.serving.registry import Registry

    reg = Registry(registry)
    pointer = reg.pointer()
    reports = replicas.fresh(replicas.read(registry), now or dt.datetime.now(dt.UTC))
    version, why = replicas.serving_version(pointer.version if pointer else None, reports)
    level = logging.INFO if pointer is None or version == pointer.version else logging.WARNING
    logger.log(level, "production in %s: %s (%s)", registry, version or "nothing yet", why)
    if version is None:
        return None, None
    if pointer is not None and version == pointer.version:
        return version, reg.pointed_dir(pointer)
    return version, reg.version_dir(version)


def validate(data: str, out: str, run_state: str, registry: str, alertmanager: str = "",
             config: str = "") -> dict[str, Any]:
    """Validates an ingested span against the run state's previous span (drift) and the production
    model's training statistics (skew); returns the verdict (``anomalies.json``).

    The run state (any URI) keeps the newest span that was not blocked: a bad week is never the drift
    reference of the next one, so the week after an incident is compared with the last good week. The
    state is locked while this step reads and writes it: a second run at the same time is refused.
    """
    from recloop.validation import state
    from recloop.validation.run import validate as run

    _, version_dir = production(registry)
    with state.locked(run_state, holder=f"validate {data}"), \
            tempfile.TemporaryDirectory(prefix="recloop-validate-") as tmp:
        previous = state.previous_stats(run_state)
        reference = _fetch(storage.join(version_dir, REFERENCE_STATS), f"{tmp}/reference.pb") if version_dir else None
        verdict = run(data, out, previous_stats=_fetch(previous, f"{tmp}/previous.pb") if previous else None,
                      reference_stats=reference, config_path=config or None, alertmanager=alertmanager or None,
                      state_dir=run_state, previous_measures=state.previous_measures(run_state),
                      infra_logged=_infra_figures(registry))
        if not verdict["blocking"]:
            state.accept(run_state, f"{out}/stats/train.pb", verdict["spans"]["current"], data,
                         {"delivery": verdict["delivery"]["now"], "logged": verdict["logged"]["now"]})
    return verdict


def monitor(logs: str, day: dt.date, out: str, registry: str, run_state: str, alertmanager: str = "",
            config: str = "") -> dict[str, Any]:
    """The daily skew check of one day of serving logs against the production model's training statistics.

    Raises:
      StepError: nothing is in production yet, or its version has no training statistics.
    """
    from recloop.validation import state
    from recloop.validation.run import monitor as run

    version, version_dir = production(registry)
    if version_dir is None:
        raise StepError(f"{registry}: nothing in production yet, so no training statistics to compare with")
    with state.locked(run_state, holder=f"monitor {day}"), \
            tempfile.TemporaryDirectory(prefix="recloop-monitor-") as tmp:
        reference = _fetch(storage.join(version_dir, REFERENCE_STATS), f"{tmp}/reference.pb")
        if reference is None:
            raise StepError(f"production version {version} has no {REFERENCE_STATS} (trained without validation?)")
        return run(logs, day, reference, out, config_path=config or None, alertmanager=alertmanager or None,
                   state_dir=run_state, infra_logged=_infra_figures(registry))


def _infra_figures(registry: str) -> Callable[[str], dict[str, Any] | None]:
    """What a version logged for infra validation's canned requests, as the registry keeps it with the version
    (``infra_blessing.json``): None for a name the registry does not hold (the bootstrap recommender, the
    holdout's heuristic; a version name read from logs is never a path) or a version pushed before the
    figures were recorded."""
    from recloop.serving.registry import Registry

    reg = Registry(registry)
    known = set(reg.versions())

    def figures(version: str) -> dict[str, Any] | None:
        uri = storage.join(reg.version_dir(version), "infra_blessing.json")
        if version not in known or not storage.exists(uri):
            return None
        return (storage.read_json(uri).get("logged") or {}).get(version)

    return figures


def _fetch(uri: str, target: str) -> str | None:
    """Copies the file at ``uri`` to the local path ``target``; None when there is none."""
    return storage.download(uri, target) if storage.exists(uri) else None


def check(validation: str) -> dict[str, Any]:
    """Reads a validation folder's verdict; raises ``BlockingAnomalies`` naming each blocking anomaly."""
    path = Path(validation, "anomalies.json")
    if not path.exists():
        raise StepError(f"{path}: missing; is {validation} a validate output?")
    verdict = json.loads(path.read_text())
    blocking = [a for a in verdict["anomalies"] if a["blocking"]]
    if blocking:
        named = "; ".join(f"{a['feature']} ({a['check']}: {a['description'][:160]})" for a in blocking)
        raise BlockingAnomalies(f"{len(blocking)} blocking anomalies in {verdict['spans']['current']}: {named}. "
                                f"Not training on this data; alerts: {verdict['alerts']}. See docs/oncall.md")
    return verdict


def train(data: str, validation: str, out: str, config: str = "", epochs: int = 0, seed: int | None = None,
          progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains and exports both models on one ingested span; returns the model card."""
    from recloop.trainer.config import load_config
    from recloop.trainer.train import run

    cfg = load_config(config or None, seed=seed, retrieval__epochs=epochs or None, ranking__epochs=epochs or None)
    return run(cfg, [data], out, validation_dir=validation, overwrite=True, progress=progress)


def train_on_workers(examples: str, validation: str, model: str, out: str, workers: int, job: str = "",
                     config: str = "", epochs: int = 0, seed: int | None = None, features: str = "", *,
                     api: Any = None, image: str | None = None, namespace: str | None = None,
                     timeout_s: float = 12 * 3600, poll_s: float = 10.0,
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains as a Kubeflow TFJob of ``workers`` workers (``pipelines.training_job``) and copies the chief's
    export into ``out``; returns the model card.

    Args:
      examples, validation, model: the artifacts' URIs (the workers read the first two and the chief writes the
        export beside the third).
      job: the train task's CPU, memory and object-store settings, JSON (``training_job.manifest``'s
        ``settings``), which each worker gets too.
      api: a ``kubernetes.client.CustomObjectsApi`` (default: the pod's in-cluster one).
      image: the workers' image (default: $RECLOOP_IMAGE, which recloop's compile sets on every task).
    """
    import uuid

    from recloop.components.training_job import manifest, own_namespace, run

    why = f"train_workers={workers}: the TFJob's workers read the examples and write the export"
    data, reference, export = (object_uri(examples, why), object_uri(validation, why),
                               object_uri(model, why) + "-workers")
    image = image or os.environ.get("RECLOOP_IMAGE")
    if not image:
        raise StepError(f"train_workers={workers}: no image for the TFJob's workers ($RECLOOP_IMAGE is unset: compile "
                        "the pipeline with `recloop compile --image`)")
    args = ["--data", data, "--validation", reference, "--out", export, "--overwrite"]
    args += [*(["--config", config] if config else []), *(["--epochs", str(epochs)] if epochs else []),
             *(["--seed", str(seed)] if seed is not None else [])]
    name = f"recloop-train-{uuid.uuid4().hex[:8]}"
    if api is None:
        from kubernetes import client
        from kubernetes import config as kube_config

        kube_config.load_incluster_config()
        api = client.CustomObjectsApi()
    run(api, manifest(name, namespace or own_namespace(), image, workers, args, json.loads(job) if job else {},
                      {"RECLOOP_FEATURES": features} if features else None),
        timeout_s=timeout_s, poll_s=poll_s, progress=progress)
    storage.download(export, out)
    storage.remove(export)  # the artifact holds it now
    return json.loads(Path(out, "model_card.json").read_text())


def evaluate(candidate: str, data: Sequence[str], registry: str, out: str, config: str = "",
             catalog: str = "", progress: Callable[[str], None] = print,
             on_replay: Callable[[int, int], None] | None = None, eval_data: Sequence[str] = ()) -> dict[str, Any]:
    """Gates ``candidate`` against the registry's production version; returns the blessing (``blessing.json``).

    The production pointer is read once: the version evaluated is the ``baseline_version`` push compares
    against. ``catalog`` is the served item feed (a root with ``catalog/dt=...``) for the off-policy replay;
    without it the newest data's item summaries approximate the pool. ``eval_data``: the separate eval
    ingests the candidate was trained with (``recloop train --eval-data``).
    """
    from recloop.serving.replay import target_probabilities
    from recloop.serving.rows import RowsConfig
    from recloop.trainer.data import read_summary
    from recloop.trainer.gate import run
    from recloop.trainer.gate_config import load_gate_config

    cfg = load_gate_config(config or None)
    newest = max([*data, *eval_data], key=lambda folder: read_summary(folder)["span"]["start"])
    feed = catalog or posixpath.join(newest, "items", "items.jsonl.gz")
    version, version_dir = production(registry)

    def replay(version_dir: str, impressions: Any) -> tuple[Any, dict[str, Any]]:
        r = target_probabilities(version_dir, impressions, feed, RowsConfig(temperature=cfg.offpolicy.temperature,
                                                                          catalog_share=cfg.offpolicy.catalog_share),
                                 progress=on_replay or (lambda done, total: None))
        return r.probability, {"requests": r.requests, "outside_pool": r.outside_pool, "feeds": list(r.feeds),
                               "catalog_is_served_feed": bool(catalog)}

    if version_dir is None:
        return run(candidate, None, data, out, cfg, replay=replay, baseline_version=version, progress=progress,
                   eval_dirs=eval_data)
    with storage.local_view(version_dir) as local:  # TensorFlow loads SavedModels from local paths
        return run(candidate, local, data, out, cfg, replay=replay, baseline_version=version, progress=progress,
                   eval_dirs=eval_data)


def infra_validate(model: str, blessing: str, data: str, out: str, catalog: str = "", requests: int = 200,
                   p99_ms: float = 250.0, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Starts the real server with the candidate and sends canned requests; skipped for an unblessed
    candidate (nothing would be pushed). Returns the infra blessing (``infra_blessing.json``)."""
    from recloop.serving.infra import validate

    gate = json.loads(Path(blessing, "blessing.json").read_text())
    if not gate["blessed"]:
        Path(out).mkdir(parents=True, exist_ok=True)
        result = {"passed": False, "skipped": True, "reason": "skipped: the candidate is not blessed",
                  "model": model, "version": gate["candidate_version"]}
        Path(out, "infra_blessing.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    feed = _feed(catalog, data)
    return validate(model, out, data=data, catalog=feed, requests=requests, p99_ms=p99_ms, progress=progress)


def _feed(catalog: str, data: str) -> str | None:
    """The item feed of the span's last day under ``catalog`` (a feed root), or None for the data's items."""
    if not catalog:
        return None
    from recloop.features.catalog import snapshot
    from recloop.trainer.data import read_summary

    end = dt.date.fromisoformat(read_summary(data)["span"]["end"])
    return snapshot(catalog, end) or catalog


def push(model: str, blessing: str, infra_blessing: str, registry: str, out: str, note: str = "",
         progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Pushes a blessed, infra-validated candidate (compare-and-swap); records ``pushed`` 0/1 and why in
    ``out/pushed.json`` and returns it. Not blessed is a normal outcome: nothing moves, the run succeeds."""
    from recloop.serving.registry import Registry, RegistryError

    gate = json.loads(Path(blessing, "blessing.json").read_text())
    infra = json.loads(Path(infra_blessing, "infra_blessing.json").read_text())
    record: dict[str, Any] = {"pushed": False, "version": gate["candidate_version"], "registry": registry,
                              "production_before": gate["baseline_version"], "reason": None}
    if not gate["blessed"]:
        record["reason"] = f"not blessed: failed {', '.join(gate['failed']) or 'no passing threshold'}"
    elif not infra["passed"]:
        record["reason"] = f"infra validation failed: {infra['reason']}"
    else:
        try:
            pointer = Registry(registry).push(model, dt.datetime.now(dt.UTC), f"{blessing}/blessing.json",
                                              f"{infra_blessing}/infra_blessing.json", note=note, progress=progress)
            record.update(pushed=True, reason=pointer.reason, production_after=pointer.version)
        except RegistryError as e:  # production moved since the gate, or a broken registry: say so, stop
            raise StepError(f"push of {gate['candidate_version']} refused: {e}") from e
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "pushed.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
