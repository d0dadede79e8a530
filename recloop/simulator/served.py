"""The served model as the logging policy: every simulated request goes to a running ``recloop serve``.

In the closed loop the members of the simulator are shown what the real server
answers: ``ServedPolicy.recommend`` sends each request of a week (one HTTP request
each, the simulated time in the ``x-recloop-time`` header) and turns the answers
back into ``Slates``. The server logs the request records itself, under the
request ids the simulator sent (seeded, so the same seed serves the same pages),
which the slates carry so the simulator's events join that log (``logs_requests``). It speaks plain HTTP: the simulator never imports the server.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from recloop.simulator.logwriter import rfc3339
from recloop.simulator.policy import Feedback, Requests, Slates
from recloop.simulator.world import World

TIME_HEADER = "x-recloop-time"
# the server's model_version of pages not from a model (serving.settings; a test keeps the copies equal)
FALLBACK_VERSION = "heuristic-fallback"  # no model loaded, or it failed
HOLDOUT_VERSION = "heuristic-holdout"  # the online holdout: members always served by the heuristic
SERVER_ROWS = 4  # the server's default page: for_your_usual, quick, something_new, popular_now


class ServedPolicyError(RuntimeError):
    """The server refused a request, could not be reached, or answered something that is not a full page."""


@dataclass
class ClientStats:
    """What the policy sent and got back (client side), summed over ``recommend`` calls."""

    requests: int = 0
    seconds: float = 0.0  # wall time of the recommend calls
    fallbacks: Counter[str] = field(default_factory=Counter)  # pages served by a fallback, by reason

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3),
                "fallbacks": dict(sorted(self.fallbacks.items()))}


class ServedPolicy:
    """A logging policy that asks a ``recloop serve`` model server (simulated clock) for every page.

    Args:
      url: the predict endpoint, ``http://HOST:PORT/v1/models/recommender:predict``.
      k: items per row.
      concurrency: requests in flight at once (the server batches concurrent ones).
      timeout_s: per-request HTTP timeout, seconds.
      rows: rows on the server's page, so a page must have ``rows * k`` items.

    Raises:
      ValueError: when ``k``, ``concurrency``, ``timeout_s`` or ``rows`` is not positive.
    """

    logs_requests = True  # the server logs the request records; the simulator writes events only

    def __init__(self, url: str, k: int = 3, concurrency: int = 8, timeout_s: float = 30.0,
                 rows: int = SERVER_ROWS):
        for name, value in (("k", k), ("concurrency", concurrency), ("timeout_s", timeout_s), ("rows", rows)):
            if value <= 0:
                raise ValueError(f"ServedPolicy {name} must be > 0, got {value!r}")
        self.url, self.k, self.concurrency, self.timeout_s, self.rows = url, k, concurrency, timeout_s, rows
        self.stats = ClientStats()
        self.week_stats: dict[int, ClientStats] = {}

    def observe(self, feedback: Feedback) -> None:
        """Nothing: the served model learns through the weekly retraining, not online."""

    def recommend(self, requests: Requests, world: World, week: int, rng: np.random.Generator) -> Slates:
        """Sends every request to the server, in simulated-time order, and returns what it showed.

        Args:
          requests: the week's requests (time order), as the server receives them.
          world: the world, to map the served item ids back to item indices.
          week: the simulated week (for the stats).
          rng: unused: the server draws its own exploration.

        Returns:
          ``Slates`` of shape ``(len(requests), rows * k)`` with the server's request ids.

        Raises:
          ServedPolicyError: naming the request and what came back, on a transport error, a non-200
            answer, an unknown item or a page without exactly ``rows * k`` items.
        """
        t0 = time.perf_counter()
        n, slots = len(requests), self.rows * self.k
        index = {item: i for i, item in enumerate(world.item_ids())}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        with httpx.Client(timeout=self.timeout_s, limits=limits) as client, \
                concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="served-policy") as pool:
            # submitted in time order: the pool starts them in that order, so the server's clock
            # (the latest time it saw) moves forward with at most ``concurrency`` requests out of order
            futures = [pool.submit(self._ask, client, requests, r) for r in range(n)]
            try:
                answers = [f.result() for f in futures]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        item = np.zeros((n, slots), dtype=np.int64)
        row = np.empty((n, slots), dtype=object)
        score = np.zeros((n, slots))
        propensity = np.zeros((n, slots))
        explored = np.zeros((n, slots), dtype=bool)
        request_id, version, fallback = [], [], []
        for r, answer in enumerate(answers):
            shown = [(name, it) for name, items in answer["rows"] for it in items]
            if len(shown) != slots:
                raise ServedPolicyError(f"request {self._describe(requests, r)}: expected a page of {self.rows} rows "
                                        f"x {self.k} = {slots} items, got {len(shown)} "
                                        f"({[(name, len(items)) for name, items in answer['rows']]})")
            for s, (name, it) in enumerate(shown):
                if it["item_id"] not in index:
                    raise ServedPolicyError(f"request {self._describe(requests, r)}: served item "
                                            f"{it['item_id']!r} is not in the simulated catalog")
                item[r, s], row[r, s] = index[it["item_id"]], name
                score[r, s], propensity[r, s], explored[r, s] = it["score"], it["propensity"], it["explored"]
            request_id.append(answer["request_id"])
            version.append(answer["model_version"])
            fallback.append(answer["fallback"])
        stats = ClientStats(n, time.perf_counter() - t0, Counter(f for f in fallback if f is not None))
        self.week_stats[week] = stats
        self.stats.requests += stats.requests
        self.stats.seconds += stats.seconds
        self.stats.fallbacks.update(stats.fallbacks)
        return Slates(item=item, row=row, score=score, propensity=propensity,
                      explored=explored, model_version=version, request_id=request_id,
                      fallback=fallback)

    def _ask(self, client: httpx.Client, requests: Requests, r: int) -> dict[str, Any]:
        """One request's answer as ``{request_id, model_version, fallback, rows: [(name, items)]}``."""
        body = {"instances": [{
            "request_id": requests.request_id[r],  # the simulator's own (seeded) ids: a rerun serves the same pages
            "member_id": requests.member_id[r],
            "member": {"tenure_days": int(requests.tenure_days[r]), "country": requests.country[r],
                       "preferred_category": requests.preferred_category[r]},
            "context": {"hour_of_day": int(requests.hour[r]), "day_of_week": int(requests.dow[r]),
                        "platform": requests.platform[r]},
            "k": self.k}]}
        try:
            response = client.post(self.url, content=json.dumps(body), headers={
                TIME_HEADER: rfc3339(int(requests.ts[r])), "content-type": "application/json"})
        except httpx.HTTPError as e:
            raise ServedPolicyError(f"request {self._describe(requests, r)}: {self.url} did not answer: "
                                    f"{type(e).__name__}: {e}") from e
        if response.status_code != 200:
            raise ServedPolicyError(f"request {self._describe(requests, r)}: {self.url} answered HTTP "
                                    f"{response.status_code}: {response.text[:500]}")
        try:
            (prediction,) = response.json()["predictions"]
            return {"request_id": prediction["request_id"], "model_version": prediction["model_version"],
                    "fallback": prediction["fallback"],
                    "rows": [(row["name"], row["items"]) for row in prediction["rows"]]}
        except (ValueError, KeyError, TypeError) as e:
            raise ServedPolicyError(f"request {self._describe(requests, r)}: not a predict answer with one "
                                    f"prediction ({type(e).__name__}: {e}): {response.text[:500]}") from None

    @staticmethod
    def _describe(requests: Requests, r: int) -> str:
        return f"{requests.request_id[r]} (member {requests.member_id[r]} at {rfc3339(int(requests.ts[r]))})"
