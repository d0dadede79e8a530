"""The server's Prometheus metrics (``/metrics``, served by kserve from the default registry).

Latency buckets are fine below 50 ms, where the serving budget lies, so p50/p95/p99
can be read with ``histogram_quantile`` without a coarse bucket hiding them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.05, 0.075, 0.1,
           0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("recloop_requests", "Predict requests by outcome (ok, fallback, bad_request, error)",
                   ["outcome"])
INSTANCES = Counter("recloop_instances", "Instances (pages) served, by the model, a fallback or the holdout "
                    "(members always served by the heuristic)", ["served_by"])
LATENCY = Histogram("recloop_request_seconds", "Predict request latency inside the server (parse to response)",
                    buckets=BUCKETS)
STAGE = Histogram("recloop_stage_seconds", "Latency of one funnel stage for one batch", ["stage"], buckets=BUCKETS)
BATCH = Histogram("recloop_batch_instances", "Instances per funnel batch (concurrent requests are batched)",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128))
FALLBACKS = Counter("recloop_fallbacks", "Instances served by a fallback, by reason", ["reason"])
OOV = Counter("recloop_oov_values", "Categorical request values outside the contract's vocabulary (served as OOV)",
              ["field"])
MODEL = Gauge("recloop_model_info", "1 for the model version being served (0 for earlier ones)", ["version"])
SWAPS = Counter("recloop_model_loads", "Attempts to load a version or catalog, by outcome (loaded, rejected)",
                ["outcome"])
CATALOG_ITEMS = Gauge("recloop_catalog_items", "Items in the catalog the served version indexes")
GC_PAUSE = Histogram("recloop_gc_pause_seconds", "Python garbage collections, by generation: every thread "
                     "stops while one runs", ["generation"], buckets=BUCKETS)


class LogCollector(Collector):
    """Queue depth, drops, writes and uploads of the current request log, read when scraped."""

    def __init__(self, source: Callable[[], object | None]):
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        log = self.source()
        depth = GaugeMetricFamily("recloop_log_queue_depth", "Request log records waiting for the writer")
        dropped = CounterMetricFamily("recloop_log_dropped", "Request log records lost: queue full, write error, "
                                      "upload given up, or a torn last line a killed server left")
        written = CounterMetricFamily("recloop_log_written", "Request log records written (remote --logs: to the "
                                      "local spool)")
        uploaded = CounterMetricFamily("recloop_log_uploaded", "Request log records uploaded to a remote --logs "
                                       "(with those a killed server left in the spool)")
        unsent = GaugeMetricFamily("recloop_log_unsent", "Request log records in the local spool, not uploaded yet")
        depth.add_metric([], getattr(log, "depth", 0))
        dropped.add_metric([], getattr(log, "dropped", 0))
        written.add_metric([], getattr(log, "written", 0))
        uploaded.add_metric([], getattr(log, "uploaded", 0))
        unsent.add_metric([], getattr(log, "unsent", 0))
        yield from (depth, dropped, written, uploaded, unsent)


_LOG_SOURCE: list[Callable[[], object | None]] = []


def watch_log(source: Callable[[], object | None]) -> None:
    """Reports the request log ``source()`` returns (the latest call wins; registered once per process)."""
    _LOG_SOURCE.append(source)
    if len(_LOG_SOURCE) == 1:
        REGISTRY.register(LogCollector(lambda: _LOG_SOURCE[-1]()))


_GC_STARTED: list[float] = []


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _GC_STARTED[:] = [time.perf_counter()]
    elif _GC_STARTED:
        GC_PAUSE.labels(generation=str(info["generation"])).observe(time.perf_counter() - _GC_STARTED[0])


def watch_gc() -> None:
    """Times every garbage collection into ``GC_PAUSE`` (a full one over a large heap stalls every request)."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)


def set_model(version: str | None, previous: str | None) -> None:
    """Marks ``version`` as the one served."""
    if previous:
        MODEL.labels(version=previous).set(0)
    if version:
        MODEL.labels(version=version).set(1)
