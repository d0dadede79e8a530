"""The simulated weeks: traffic -> serving (with injected bugs) -> policy -> behaviour -> logs.

``Simulation.run_week`` is one week of the platform; ``simulate`` runs several with
the bootstrap policy and is what ``recloop simulate`` calls. The closed loop
calls ``run_week`` with a served model as the policy (``ServedPolicy``), which
logs the request records itself: the simulator then writes no ``requests/`` and
its events carry the server's request ids. Output layout:

    <out>/requests/dt=YYYY-MM-DD/part-WWWWW.jsonl.gz   what the server logged (bootstrap policy only)
    <out>/events/dt=YYYY-MM-DD/part-WWWWW.jsonl.gz     what clients logged
    <out>/catalog/dt=<week start>/items.jsonl.gz       the item feed for that week
    <out>/truth/...                                    hidden relevance, corruptions: never for training
    <out>/simulation.json                              parameters, per-week counts and click rates
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow_hotfix  # noqa: F401  CVE-2023-47248: pyarrow 10 is pinned (tfx-bsl); refuse its unsafe type

from recloop import storage
from recloop.features import logs, spec
from recloop.features.records import EVENT_TYPES
from recloop.features.spec import CATEGORIES, COUNTRIES, LANGUAGES, PLATFORMS
from recloop.simulator import behaviour, corrupt, outcomes
from recloop.simulator.clock import SimClock
from recloop.simulator.drift import (
    DEFAULT_TENURE_SHARE,
    HOUR_AHEAD,
    NULL_SURGE_SHARE,
    RENAMED_PLATFORM,
    SECONDS_PER_MINUTE,
    Drift,
    active,
    as_logged,
    as_named,
    deliver,
    ship_requests,
)
from recloop.simulator.logwriter import ItemJson, event_lines, request_lines
from recloop.simulator.policy import Feedback, HeuristicPolicy, Policy, Requests, Slates
from recloop.simulator.traffic import Visits, visits
from recloop.simulator.world import (
    ALL_CATEGORIES,
    BEHAVIOUR,
    CORRUPT,
    DELIVERY,
    DRIFT,
    LOGGING,
    POLICY,
    SCALES,
    SimulationConfigError,
    World,
    creator_id,
    item_id,
    stream,
)


@dataclass
class Simulation:
    """A simulated platform writing its logs under ``out``, one week per ``run_week``."""

    out: str
    start: dt.date
    scale: str = "tiny"
    seed: int = 0
    drifts: list[Drift] = field(default_factory=list)
    corrupt_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise SimulationConfigError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        self.world = World.create(self.seed, SCALES[self.scale], self.start)
        self.clock = SimClock(dt.datetime.combine(self.start, dt.time(), dt.UTC))
        self.weeks: list[dict[str, Any]] = []

    def serve(self, v: Visits, week: int) -> Requests:
        """The requests as the server receives them: true values plus any active serving bug."""
        m = self.world.members
        n = len(v)
        platform = [PLATFORMS[p] for p in v.platform]
        if active(self.drifts, "platform-rename", week):
            platform = [RENAMED_PLATFORM[1] if p == RENAMED_PLATFORM[0] else p for p in platform]
        rng = stream(self.seed, DRIFT, week)  # drawn in every week, so a drift leaves the others' draws alone
        null, timeout = rng.random(n) < NULL_SURGE_SHARE, rng.random(n) < DEFAULT_TENURE_SHARE
        surge = active(self.drifts, "null-surge", week)
        country = [None if surge and null[r] else COUNTRIES[c] for r, c in enumerate(m.country[v.member])]
        preferred = [None if c < 0 else CATEGORIES[c] for c in m.preferred[v.member]]
        tenure = v.day - m.joined[v.member]
        if active(self.drifts, "tenure-default", week):
            tenure = np.where(timeout, 0, tenure)
        hour = (v.hour + HOUR_AHEAD) % 24 if active(self.drifts, "hour-tz", week) else v.hour
        return Requests(
            request_id=[f"r{self.seed}-{week:03d}-{r:07d}" for r in range(n)], ts=v.ts, day=v.day,
            member_id=self.world.member_ids(v.member), tenure_days=tenure,
            country=country, preferred_category=preferred, hour=hour, dow=v.dow, platform=platform)

    def run_week(self, week: int, policy: Policy, progress: Callable[[str], None] = lambda s: None
                 ) -> dict[str, Any]:
        """Simulates week ``week`` (weeks run in order from 0) under ``policy``; returns its counts.

        With a policy that logs its requests (``policy.logs_requests``, a model server), the request
        records are the server's: the simulator writes only events (and truth) under the server's
        request ids, corruption hits event lines only, and the ``unit-bug`` goes into the week's item
        feed, which the server serves and logs.

        Raises:
          SimulationConfigError: when such a policy's slates lack one server request id per request.
        """
        t0 = time.perf_counter()
        world = self.world
        world.advance(week, new_category=active(self.drifts, "new-category", week))
        first = world.week_start(week)
        self.clock.advance_to(dt.datetime.combine(first, dt.time(), dt.UTC))
        unit = SECONDS_PER_MINUTE if active(self.drifts, "unit-bug", week) else 1.0
        served = policy.logs_requests
        self._write_catalog(week, unit if served else 1.0)  # before recommend: the server reads this feed
        progress("traffic")
        v = visits(world, week)
        requests = self.serve(v, week)
        progress("policy")
        slates = policy.recommend(requests, world, week, stream(self.seed, POLICY, week))
        if served:
            if slates.request_id is None or len(slates.request_id) != len(requests):
                got = None if slates.request_id is None else len(slates.request_id)
                raise SimulationConfigError(f"policy {type(policy).__name__} logs its requests but returned "
                                            f"{got} request ids for {len(requests)} requests")
            # events and truth under the server's ids, so they join the request log it wrote
            requests = dataclasses.replace(requests, request_id=list(slates.request_id))
        progress("behaviour")
        n, k = slates.item.shape
        position = np.tile(np.arange(k), n)
        item = slates.item.ravel()
        rep = lambda a: np.repeat(a, k)
        shift = active(self.drifts, "taste-shift", week)
        parts = behaviour.relevance(world, rep(v.member), item, rep(v.hour), rep(v.dow), rep(v.platform),
                                    rep(v.day), taste_shift=shift)
        u = stream(self.seed, BEHAVIOUR, week).random((n * k, behaviour.N_UNIFORMS))
        outcome = behaviour.respond(parts, position, world.items.duration[item], u)
        progress("logs")
        propensity, explored = as_logged(slates.propensity, slates.explored, self.drifts, week)
        logged = replace(slates, propensity=propensity, explored=explored, row=as_named(slates.row, self.drifts, week))
        req_lines = {} if served else ship_requests(
            request_lines(requests, logged, ItemJson(world, stale=active(self.drifts, "stale-category", week)),
                          np.full(n, unit)), self.drifts, week, stream(self.seed, LOGGING, week))
        ev_lines = deliver(event_lines(requests, slates, outcome), self.drifts, week,
                           stream(self.seed, DELIVERY, week))
        corrupted = self._write_logs(week, req_lines, ev_lines)
        self._write_truth(week, requests, slates, parts, outcome)
        policy.observe(self._feedback(requests, slates, outcome))
        last = dt.datetime.combine(first + dt.timedelta(days=7), dt.time(), dt.UTC)
        self.clock.advance_to(last)
        oracle = outcomes.oracle_click_rate(world, v, k, stream(self.seed, outcomes.ORACLE_STREAM, week), shift)
        summary = self._summary(week, requests, slates, outcome, corrupted, time.perf_counter() - t0,
                                logged_requests=not served, oracle_click_rate=oracle)
        self.weeks.append(summary)
        self._write_manifest()
        return summary

    def _write_catalog(self, week: int, unit: float = 1.0) -> None:
        """Writes the week's item feed; ``unit`` scales its durations (the unit bug, as a server would see it)."""
        it = self.world.items
        last = self.world.week_start(week).toordinal() + 6
        idx = np.flatnonzero(it.release <= last)
        lines = (
            f'{{"item_id":"{item_id(i)}","category":"{ALL_CATEGORIES[it.category[i]]}",'
            f'"creator":"{creator_id(it.creator[i])}","duration_min":{float(it.duration[i]) * unit!r},'
            f'"language":"{LANGUAGES[it.language[i]]}","release_date":"{dt.date.fromordinal(int(it.release[i]))}"}}'
            for i in idx)
        logs.write_lines(f"{self.out}/catalog/dt={self.world.week_start(week)}/items.jsonl.gz", lines)

    def _write_logs(self, week: int, req_lines: dict[int, list[str]], ev_lines: dict[int, list[str]]
                    ) -> list[dict[str, str]]:
        rng = stream(self.seed, CORRUPT, week)
        corruptions: list[dict[str, str]] = []
        for name, by_day in (("requests", req_lines), ("events", ev_lines)):
            for day in sorted(by_day):
                lines = by_day[day]
                date = dt.date.fromordinal(day)
                if self.corrupt_rate:
                    lines, log = corrupt.corrupt(lines, name, self.corrupt_rate, rng)
                    corruptions += [{"stream": name, "dt": str(date), **c} for c in log]
                path = f"{logs.partition_dir(self.out, name, date)}/part-{week:05d}.jsonl.gz"
                logs.write_lines(path, lines, compresslevel=1)
        if self.corrupt_rate:
            logs.write_json(f"{self.out}/truth/corruption/week-{week:05d}.json", corruptions)
        return corruptions

    def _write_truth(self, week: int, requests: Requests, slates: Slates, parts: behaviour.Parts,
                     outcome: behaviour.Outcome) -> None:
        n, k = slates.item.shape
        table = pa.table({
            "request_id": np.repeat(np.array(requests.request_id), k),
            "item_id": self.world.item_ids(slates.item.ravel()),
            "position": np.tile(np.arange(k), n),
            "relevance": parts.relevance,
            "p_click": outcome.p_click,
            "explored": slates.explored.ravel(),
        })
        path = f"{self.out}/truth/impressions/week-{week:05d}.parquet"
        fs, local = storage.filesystem(path)
        fs.makedirs(posixpath.dirname(local), exist_ok=True)
        with fs.open(local, "wb") as f:
            pq.write_table(table, f)

    def _feedback(self, requests: Requests, slates: Slates, outcome: behaviour.Outcome) -> Feedback:
        _n, k = slates.item.shape
        it = self.world.items
        item = slates.item.ravel()
        return Feedback(
            member_id=[m for m in requests.member_id for _ in range(k)],
            item_id=self.world.item_ids(item),
            category=[ALL_CATEGORIES[c] for c in it.category[item]],
            creator=self.world.creator_ids(it.creator[item]),
            hour=np.repeat(requests.hour, k).tolist(),
            platform=[p for p in requests.platform for _ in range(k)],
            ts=np.repeat(requests.ts, k).tolist(),
            click=outcome.click.astype(int).tolist())

    def _summary(self, week: int, requests: Requests, slates: Slates, outcome: behaviour.Outcome,
                 corrupted: list[dict[str, str]], seconds: float, logged_requests: bool = True,
                 oracle_click_rate: float | None = None) -> dict[str, Any]:
        """The week's counts. ``corrupt_share`` is corrupt lines over the lines the simulator wrote:
        requests and events, or events only when the policy logged the requests. ``by_policy``: click
        rates per group of pages (model, holdout, fallback, heuristic; ``outcomes.by_policy``), beside
        ``oracle_click_rate``, the best expected rate on this week's requests."""
        w = self.world
        first = w.week_start(week)
        day0 = first.toordinal()
        n_imp = slates.item.size
        events = {e: int(getattr(outcome, e).sum()) for e in EVENT_TYPES}
        written_lines = len(requests) * logged_requests + sum(events.values())
        kinds = corrupt.count_kinds(corrupted)
        summary: dict[str, Any] = {
            "week": week,
            "start": str(first),
            "end": str(first + dt.timedelta(days=6)),
            "members": int((w.members.joined <= day0 + 6).sum()),
            "active_members": len(set(requests.member_id)),
            "items": int((w.items.release <= day0 + 6).sum()),
            "new_items": int(((w.items.release >= day0) & (w.items.release <= day0 + 6)).sum()),
            "requests": len(requests),
            "impressions": n_imp,
            "explored_share": float(slates.explored.mean()),
            "events": events,
            "click_rate": events["click"] / n_imp,
            "by_policy": outcomes.by_policy(slates.model_version, outcome.click.reshape(slates.item.shape),
                                            outcome.p_click.reshape(slates.item.shape), list(requests.member_id)),
            "oracle_click_rate": oracle_click_rate,
            "corrupt_lines": sum(kinds.values()),
            "corrupt_by_kind": kinds,
            "corrupt_share": sum(kinds.values()) / max(1, written_lines + kinds.get("duplicate_event", 0)),
            "drifts": [str(d) for d in self.drifts if d.active(week)],
            "policy": sorted(set(slates.model_version)),
            "seconds": round(seconds, 3),
        }
        if slates.fallback is not None:  # a served policy: pages the server's fallback answered, by reason
            summary["fallbacks"] = dict(sorted(Counter(f for f in slates.fallback if f is not None).items()))
        return summary

    def write_world(self) -> None:
        """Writes every hidden parameter to ``truth/world.npz``, for oracle metrics only."""
        w = self.world
        arrays = {f"{group}.{name}": value for group, obj in
                  (("items", w.items), ("members", w.members), ("creators", w.creators))
                  for name, value in vars(obj).items()}
        fs, local = storage.filesystem(f"{self.out}/truth/world.npz")
        fs.makedirs(posixpath.dirname(local), exist_ok=True)
        with fs.open(local, "wb") as f:
            np.savez_compressed(f, **arrays)

    def _write_manifest(self) -> None:
        logs.write_json(f"{self.out}/simulation.json", {
            "params": {"start": str(self.start), "scale": self.scale, "scale_sizes": vars(SCALES[self.scale]),
                       "seed": self.seed, "drifts": [str(d) for d in self.drifts],
                       "corrupt": self.corrupt_rate},
            "weeks": self.weeks,
            "totals": totals(self.weeks),
        })


def totals(weeks: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums of the per-week counts."""
    out: dict[str, Any] = {"weeks": len(weeks)}
    for key in ("requests", "impressions", "corrupt_lines"):
        out[key] = sum(w[key] for w in weeks)
    out["events"] = {e: sum(w["events"][e] for w in weeks) for e in EVENT_TYPES}
    kinds: Counter[str] = Counter()
    for w in weeks:
        kinds.update(w["corrupt_by_kind"])
    out["corrupt_by_kind"] = dict(sorted(kinds.items()))
    return out


OUTPUTS = ("requests", "events", "catalog", "truth", "simulation.json")


def check_declaration() -> None:
    """The simulator plays the default declaration's platform only: its members, items and logs hold those
    features. Raises SimulationConfigError, naming ``RECLOOP_FEATURES``, when another one is active."""
    if not spec.is_default():
        raise SimulationConfigError(
            f"the simulator generates the default features only (recloop/features/features.yaml), but "
            f"{spec.ENV}={spec.SOURCE} declares others; unset {spec.ENV} to simulate or run the demo")


def simulate(out: str, weeks: int, start: dt.date, scale: str = "tiny", seed: int = 0,
             drifts: list[Drift] | None = None, corrupt_rate: float = 0.0, epsilon: float = 0.1,
             overwrite: bool = False, progress: Callable[[int, str], None] = lambda w, s: None) -> dict[str, Any]:
    """Runs ``weeks`` weeks under the bootstrap heuristic policy.

    Args:
      overwrite: replace an earlier simulation in ``out``; without it such a folder
        is refused, so two runs never mix in one set of logs.

    Returns:
      The contents of ``simulation.json``: parameters, per-week counts, totals.

    Raises:
      SimulationConfigError: for parameters it cannot run with, or a feature declaration other than the
        default one, before writing anything.
    """
    check_declaration()
    if weeks < 1:
        raise SimulationConfigError(f"weeks must be >= 1, got {weeks}")
    for d in drifts or []:
        if d.week >= weeks:
            raise SimulationConfigError(f"drift {d} starts in week {d.week}, but only weeks 0-{weeks - 1} "
                                        f"are simulated: it would never happen")
    if not 0.0 <= corrupt_rate <= 1.0:
        raise SimulationConfigError(f"corrupt rate must be in [0, 1], got {corrupt_rate}")
    fs, root = storage.filesystem(out)
    used = [name for name in OUTPUTS if fs.exists(f"{root}/{name}")]
    if used and not overwrite:
        raise SimulationConfigError(f"{out} already holds a simulation ({', '.join(used)}); "
                                    "choose another folder or pass overwrite (--overwrite) to replace it")
    for name in used:
        fs.rm(f"{root}/{name}", recursive=True)
    sim = Simulation(out=out, start=start, scale=scale, seed=seed, drifts=list(drifts or []),
                     corrupt_rate=corrupt_rate)
    policy = HeuristicPolicy(epsilon=epsilon)
    for week in range(weeks):
        sim.run_week(week, policy, progress=lambda stage, w=week: progress(w, stage))
    sim.write_world()
    return logs.read_json(f"{out}/simulation.json")
