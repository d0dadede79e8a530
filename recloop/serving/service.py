"""What the server serves, and how it changes: the production version, fallbacks, hot reload, answering.

``Service`` holds one immutable ``Served`` (a loaded version, or the heuristic
fallback and why) over one catalog. A background thread watches the registry
pointer and the item feed; a new version (or a new catalog snapshot) is loaded
and warmed beside the one serving, checked, and swapped in by one reference
assignment, so a batch in flight finishes on the object it started with. A
version that fails to load or warm is rejected (and not retried until the
pointer moves) and the old one keeps serving; with nothing to keep, the
heuristic serves and ``fallback`` says why. ``serve`` never raises for a
model's fault: a model error at request time falls back for that batch. A fixed
share of members (``holdout``) is always served by the heuristic, as an online
control group measured in the same weeks as the model. Each answer is written
to the request log (``page.log_line``).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop.baselines import PopularInContext
from recloop.features.catalog import NO_RELEASE, item_columns, read_items, snapshot
from recloop.features.spec import features_for, missing_value, role
from recloop.serving import metrics
from recloop.serving.clock import Clock
from recloop.serving.funnel import (
    Heuristic,
    Page,
    Query,
    Version,
    heuristic_pages,
    load_tables,
    load_version,
    recommend,
)
from recloop.serving.holdout import in_holdout
from recloop.serving.page import check_page, log_line, response
from recloop.serving.registry import Registry, RegistryError
from recloop.serving.replicas import Reporter
from recloop.serving.settings import FALLBACK_VERSION, HOLDOUT_VERSION, ServeSettings

logger = logging.getLogger(__name__)

# the request features with an expected vocabulary: a value outside it is served, and counted (metrics.OOV)
_KNOWN = {f.name: (f.group, frozenset(f.vocabulary)) for f in features_for()
          if f.group in ("member", "context") and f.vocabulary}


@dataclass(frozen=True)
class Served:
    """What answers requests right now. ``version`` None: the heuristic serves, ``reason`` says why."""

    version: Version | None
    tables: Heuristic
    catalog_path: str
    version_dir: str | None
    reason: str | None
    release_date: np.ndarray  # ISO date of every catalog item (None: unknown), for the log

    @property
    def name(self) -> str:
        return self.version.version if self.version else FALLBACK_VERSION


class CatalogMissing(RuntimeError):
    """No item feed for the server's day."""


class Service:
    """The serving state and the request path, without HTTP (the kserve model wraps it)."""

    def __init__(self, settings: ServeSettings, clock: Clock | None = None, log: Any = None):
        self.settings = settings
        self.clock = clock or Clock()
        self.log = log  # a RequestLog, or None to log nothing
        self.registry = Registry(settings.registry) if settings.registry else None
        self.reporter = (Reporter(settings.registry, settings.replica or socket.gethostname(), settings.report_s)
                         if settings.registry else None)
        self.pointer: str | None = None  # the version the registry pointer named at the last poll
        self.rejected: dict[tuple[str | None, str], str] = {}
        self.served: Served | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._catch_up_lock = threading.Lock()
        self._day_checked = dt.date.min  # simulated clock: the newest request day whose feed was looked for
        self.after_swap: Callable[[], None] | None = None  # called on the swapping thread (the server: gc)

    # --- what to serve -------------------------------------------------------------------------------

    def wanted(self) -> tuple[str | None, str]:
        """The version directory (None: nothing pushed yet) and catalog file the server should serve.

        Raises:
          CatalogMissing: when there is no item feed for the current day.
        """
        day = self.clock.now().date()
        path = self.settings.catalog
        if not path.endswith((".jsonl", ".jsonl.gz")):
            found = snapshot(path, day)
            if found is None:
                raise CatalogMissing(f"no item feed under {path}/catalog/ on or before {day} "
                                     "(expected catalog/dt=YYYY-MM-DD/items.jsonl.gz)")
            path = found
        if self.settings.model:
            return self.settings.model, path
        assert self.registry is not None
        try:
            pointer = self.registry.pointer()
        except RegistryError as e:  # keep serving what serves; with nothing yet, the fallback
            logger.error("%s; still serving %s", e, self.served.name if self.served else FALLBACK_VERSION)
            return (self.served.version_dir if self.served else None), path
        self.pointer = pointer.version if pointer else None
        return (self.registry.version_dir(pointer.version) if pointer else None), path

    def refresh(self) -> bool:
        """Loads and swaps in what ``wanted`` names if it changed; True when something new now serves.

        A candidate that fails to load or to warm is remembered as rejected and the current one keeps
        serving (the fallback, if nothing was ever loaded).
        """
        with self._load_lock:
            version_dir, catalog_path = self.wanted()
            current = self.served
            if current is not None and (current.version_dir, current.catalog_path) == (version_dir, catalog_path) \
                    and (current.version is not None or version_dir is None):
                return False
            if (version_dir, catalog_path) in self.rejected:
                return False
            started = time.perf_counter()
            catalog = item_columns(read_items(catalog_path))
            release = np.array([None if d == NO_RELEASE else dt.date.fromordinal(int(d)).isoformat()
                                for d in catalog["release_day"]], dtype=object)
            if version_dir is None:
                served = Served(None, Heuristic(catalog, PopularInContext({}), {}), catalog_path, None, "no_model",
                                release)
            else:
                try:
                    version = load_version(version_dir, catalog, self.clock.now().date(), self.settings.runtime,
                                           self.settings.ann_min_items)
                    self._warm(version)
                    served = Served(version, version.tables, catalog_path, version_dir, None, release)
                except Exception as e:  # noqa: BLE001 - a broken version of any kind is rejected, never served
                    self.rejected[(version_dir, catalog_path)] = f"{type(e).__name__}: {e}"
                    metrics.SWAPS.labels(outcome="rejected").inc()
                    logger.error("rejected %s with catalog %s: %s", version_dir, catalog_path, e)
                    if current is not None and current.version is not None:
                        return False
                    served = Served(None, self._fallback_tables(version_dir, catalog, current), catalog_path,
                                    version_dir, "model_load_failed", release)
            self._swap(served, time.perf_counter() - started)
            return True

    def _fallback_tables(self, version_dir: str, catalog: dict[str, np.ndarray], current: Served | None
                         ) -> Heuristic:
        try:  # a version whose model is broken may still have good tables
            return load_tables(version_dir, catalog)
        except Exception:  # noqa: BLE001 - then the tables of what served before
            if current is not None:
                return Heuristic(catalog, current.tables.popularity, current.tables.profiles)
            return Heuristic(catalog, PopularInContext({}), {})

    def _warm(self, version: Version) -> None:
        """Runs the funnel once on a canned batch (traces the TF functions) and checks what comes out.

        Raises:
          ValueError: when a page is not a valid answer (scores outside [0, 1], an item twice, ...).
        """
        day, hour = self.clock.now(), role("hour")  # a morning and an evening request; other context missing
        queries = [Query(request_id=f"warm-{i}", member_id="warm-unknown", member={}, day=day.date().toordinal(),
                         context={f.name: h if f.name == hour else missing_value(f.dtype)
                                  for f in features_for(group="context")}) for i, h in enumerate((8, 20))]
        for page in recommend(version, queries, self.settings.rows):
            check_page(page)

    def _swap(self, served: Served, seconds: float) -> None:
        previous = self.served
        self.served = served  # one reference assignment: in-flight batches keep the object they started with
        metrics.SWAPS.labels(outcome="loaded").inc()
        metrics.set_model(served.name, previous.name if previous and previous.name != served.name else None)
        metrics.CATALOG_ITEMS.set(len(served.tables.catalog["item_id"]))
        how = (f"{served.version.runtime}, {served.version.search(self.clock.now().date().toordinal()).kind} search"
               if served.version else served.reason)
        logger.info("serving %s (%s) over %s, %d items, loaded in %.1f s", served.name, how, served.catalog_path,
                    len(served.tables.catalog["item_id"]), seconds)
        if self.after_swap is not None:
            self.after_swap()

    def start(self) -> None:
        """Loads what to serve now, then watches for changes every ``poll_s`` seconds in the background."""
        self.refresh()
        self._report()
        self._watcher = threading.Thread(target=self._watch, name="recloop-reload", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_s):
            try:
                self.refresh()
                self.prepare_ahead()
            except Exception:  # a registry or feed that cannot be read now may be readable at the next poll
                logger.exception("reload check failed; still serving %s", self.served.name if self.served else None)
            self._report()

    def prepare_ahead(self) -> None:
        """Embeds and indexes the catalog for tomorrow (item age changes with the day) on this thread, so the
        first request after midnight does not wait for it. Only on a real clock: a simulated one jumps, and its
        first request of a day waits for that day's feed anyway (``_catch_up``)."""
        served = self.served
        if served is None or served.version is None or self.clock.simulated:
            return
        tomorrow = (self.clock.now() + dt.timedelta(days=1)).date().toordinal()
        served.version.search(tomorrow)
        served.tables.released(tomorrow)

    def _report(self) -> None:
        """Tells the registry what this replica serves (``replicas``), so the pipeline knows what is in production."""
        served = self.served
        if self.reporter is None or served is None:
            return
        rejected = [posixpath.basename(d) for d, _ in self.rejected if d]
        try:
            self.reporter.update(served.version.version if served.version else None, served.reason, self.pointer,
                                 rejected, time.monotonic())
        except Exception:  # a report that cannot be written now is written at the next poll
            logger.exception("could not write this replica's serving report to %s", self.settings.registry)

    def _catch_up(self, now: Sequence[dt.datetime]) -> None:
        """On a simulated clock time jumps: the first batch of a new day waits until that day's feed (and
        pointer) is loaded, rather than being answered from the day before's until the next poll."""
        day = max(now).date()
        if day <= self._day_checked:
            return
        with self._catch_up_lock:
            if day > self._day_checked:
                try:
                    self.refresh()
                except Exception:
                    logger.exception("reload for %s failed; still serving %s", day, self.served and self.served.name)
                self._day_checked = day

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        if self.reporter is not None:
            try:
                self.reporter.close()
            except Exception:  # a report left behind goes stale by itself
                logger.exception("could not remove this replica's serving report")

    # --- the request path ----------------------------------------------------------------------------

    def serve(self, queries: Sequence[Query], now: Sequence[dt.datetime]) -> list[dict[str, Any]]:
        """The response of each query (one per instance), logged as request records.

        ``now`` is the request time of each query. Never raises for a model's fault: a model error
        serves the batch from the fallback, with ``fallback: "model_error"``. Members of the holdout get
        the fallback's pages, labelled ``fallback: "holdout"`` and ``HOLDOUT_VERSION``, with or without a model.
        """
        if self.clock.simulated and now:
            self._catch_up(now)
        served = self.served
        if served is None:
            raise RuntimeError("the service was not started")
        for q in queries:
            for name, (group, known) in _KNOWN.items():
                value = (q.member if group == "member" else q.context).get(name)
                if value is not None and value not in known:
                    metrics.OOV.labels(field=name).inc()
        metrics.BATCH.observe(len(queries))
        held = [in_holdout(q.member_id, self.settings.holdout) for q in queries]
        rest = [q for q, h in zip(queries, held, strict=True) if not h]
        reason: str | None = served.reason
        pages: list[Page] | None = None
        if served.version is not None and rest:
            try:
                pages = recommend(served.version, rest, self.settings.rows,
                                  lambda stage, s: metrics.STAGE.labels(stage=stage).observe(s))
                for page in pages:
                    check_page(page)
            except Exception:
                logger.exception("model %s failed on a batch of %d; serving the fallback", served.name, len(rest))
                pages, reason = None, "model_error"
        if pages is None:
            pages = heuristic_pages(served.tables, rest, self.settings.rows, self.settings.fallback_pool)
        # the holdout gets exactly the fallback's pages, whatever the model does
        control = iter(heuristic_pages(served.tables, [q for q, h in zip(queries, held, strict=True) if h],
                                       self.settings.rows, self.settings.fallback_pool))
        treated = iter(pages)
        version = served.name if reason is None else FALLBACK_VERSION
        out = []
        for h, ts in zip(held, now, strict=True):  # answers in the order of the queries
            page, page_version, page_reason = (next(control), HOLDOUT_VERSION, "holdout") if h else \
                (next(treated), version, reason)
            if page_reason is None and page.query.member_id not in served.tables.profiles:
                page_reason = "unknown_member"  # served by the model from context and declared features only
            served_by = "holdout" if h else "model" if reason is None else "fallback"
            metrics.INSTANCES.labels(served_by=served_by).inc()
            if page_reason is not None and not h:  # the holdout is a choice, not a failure: INSTANCES counts it
                metrics.FALLBACKS.labels(reason=page_reason).inc()
            out.append(response(page, page_version, page_reason))
            if self.log is not None:
                self.log.put(log_line(page, page_version, ts, served.tables.catalog, served.release_date), ts)
        return out

