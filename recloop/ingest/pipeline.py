"""Running the ingest of one span: options, the staging folder, the summary and publishing.

The Beam graph itself is in ``transforms``. Outputs are written to
``<out>.staging-<id>`` and moved to ``<out>`` only when the run finished,
reconciles and is under the dead-letter limit; a failed run's outputs go to
``<out>.failed`` for inspection, never where a later step looks.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import apache_beam as beam
import fsspec
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recloop import storage
from recloop.features import logs, recorded
from recloop.ingest import progress
from recloop.ingest.read import NAMESPACE, Span, bucket_count, plan_inputs
from recloop.ingest.summary import IngestError, check, summarize
from recloop.ingest.transforms import build

Share = Annotated[float, Field(gt=0.0, le=1.0)]


class IngestConfig(BaseModel):
    """Parameters of one ingest run (``recloop ingest --help`` describes each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    logs: str
    start: dt.date
    end: dt.date
    out: str
    eval_days: Annotated[int, Field(ge=0)] = 1
    attribution_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 24
    min_member_events: Annotated[int, Field(ge=0)] = 1
    freshness_days: Annotated[int, Field(ge=1)] | None = None
    sample_users: Share = 1.0
    sample_data: Share = 1.0
    max_dead_letter_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    join_buckets: Annotated[int, Field(ge=1, le=65536)] | None = None
    overwrite: bool = False

    @model_validator(mode="after")
    def _span_is_consistent(self) -> IngestConfig:
        days = (self.end - self.start).days + 1
        if days < 1:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.eval_days >= days:
            raise ValueError(f"eval_days={self.eval_days} leaves no training day in a {days}-day span")
        return self

    @property
    def span(self) -> Span:
        return Span(self.start, self.end, self.eval_days, self.attribution_hours, self.freshness_days)


OUTPUT_DIRS = ("train", "eval", "retrieval/train", "retrieval/eval", "items", "dead_letters")


def run(config: IngestConfig, beam_args: Sequence[str] = (),
        on_progress: Callable[[str, int], None] | None = None,
        on_plan: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Runs the ingest of one span and publishes its outputs to ``config.out``.

    Args:
      config: the span and parameters.
      beam_args: Beam pipeline options (``--runner``, ...); on the DirectRunner
        ``--direct_running_mode=in_memory`` is the default.
      on_progress: called with ``(stage, amount)`` as files are read (bytes),
        buckets joined and shards written (local runners only).
      on_plan: called once with the inputs (files, bytes, buckets) before the run.

    Returns:
      The summary (also written to ``<out>/summary.json``).

    Raises:
      IngestError: when ``out`` exists (without overwrite), nothing is there to
        read, a reconciliation fails or the dead-letter share is over the limit.
    """
    t0 = time.perf_counter()
    fs, out = storage.filesystem(config.out)
    if fs.exists(out) and fs.ls(out) and not config.overwrite:
        raise IngestError(f"{config.out} already holds an ingest output; pass --overwrite to replace it")
    files = plan_inputs(config.logs, config.span)
    if not any(f.role == "requests" for f in files):
        raise IngestError(f"no request logs under {config.logs}/requests for {config.start}..{config.end}")
    buckets = config.join_buckets or bucket_count(files)
    plan = {"files": {role: sum(f.role == role for f in files) for role in ("requests", "keys", "events")},
            "bytes": sum(f.size for f in files), "join_buckets": buckets}
    if on_plan:
        on_plan(plan)
    run_id = uuid.uuid4().hex[:12]
    staging = f"{out}.staging-{run_id}"

    def url(path: str) -> str:  # what Beam, TensorFlow and logs.* open: with the scheme, for object stores
        return fs.unstrip_protocol(path) if "://" in config.out else path

    args, runner = _beam_args(beam_args)
    if on_progress:
        progress.register(run_id, on_progress)
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(args))
        build(pipeline, config, files, buckets, url(staging), run_id)
        result = pipeline.run()
        result.wait_until_finish()
    except Exception:
        if fs.exists(staging):  # a crashed pipeline's partial outputs are of no use to anyone
            fs.rm(staging, recursive=True)
        raise
    finally:
        progress.unregister(run_id)
    counters = _counters(result)
    distinct = logs.read_json(url(f"{staging}/_distinct.json")) if fs.exists(f"{staging}/_distinct.json") else {}
    for scratch in ("_distinct.json", "_spill"):
        if fs.exists(f"{staging}/{scratch}"):
            fs.rm(f"{staging}/{scratch}", recursive=True)
    for folder in OUTPUT_DIRS:  # present even when empty, so readers need no special case
        fs.makedirs(f"{staging}/{folder}", exist_ok=True)
    recorded.write(url(staging))  # the feature declaration the examples follow: the trainer checks it
    wall = time.perf_counter() - t0
    summary = summarize(counters, distinct, {
        "status": "ok", "span": _span_facts(config), "parameters": config.model_dump(mode="json"),
        "runner": runner, "beam_args": args, "inputs": plan, "wall_seconds": round(wall, 3),
        "impressions_per_second": round(counters.get("impressions.total", 0) / wall, 1),
    })
    try:
        check(summary, config.max_dead_letter_share, where=f"{config.out}.failed")
    except IngestError as e:
        summary |= {"status": "failed", "error": str(e)}
        logs.write_json(url(f"{staging}/summary.json"), summary)
        _move(fs, staging, f"{out}.failed")
        raise
    logs.write_json(url(f"{staging}/summary.json"), summary)
    _move(fs, staging, out)
    return summary


def _beam_args(beam_args: Sequence[str]) -> tuple[list[str], str]:
    """The pipeline options, with in_memory as the DirectRunner's default mode, and the runner's name."""
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner or "DirectRunner"
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")  # multi_threading loses elements here (docs/stack.md)
    return args, runner


def _span_facts(config: IngestConfig) -> dict[str, Any]:
    span = config.span
    return {"start": config.start.isoformat(), "end": config.end.isoformat(),
            "eval_start": span.eval_start.isoformat(),
            "fresh_start": span.fresh_start.isoformat() if span.fresh_start else None,
            "request_partitions": [config.start.isoformat(), config.end.isoformat()],
            "event_partitions": [config.start.isoformat(),
                                 (config.end + dt.timedelta(days=span.margin_days)).isoformat()]}


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    out: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value)
    return out


def _move(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Replaces ``target`` with ``source`` (a rename on local disks)."""
    if fs.exists(target):
        fs.rm(target, recursive=True)
    fs.mv(source, target, recursive=True)
