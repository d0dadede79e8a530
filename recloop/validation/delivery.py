"""How the logs arrived: repeated events, events past the attribution window, events of unknown requests,
repeated requests and impressions, events per impression.

Ingest accounts for every line it reads (``summary.json``), so a client or collector bug shows in those
counts before it shows anywhere else: a retrying client doubles events (ingest drops the copies, but
they say the client is broken), a client clock ahead pushes events past the attribution window (they
are lost as labels). Each measure here is a share of what ingest read, compared with the previous
span's; the model-independent ones block, events per impression (which a new model legitimately
moves with its click rate) only warns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from recloop.features import logs
from recloop.validation.anomaly import Anomaly

Summary = Mapping[str, Any]
RATES = ("events.per_impression",)  # moves with the serving model's click rate: compared by ratio, warns only


def measures(summary: Summary) -> dict[str, float]:
    """Every delivery measure of an ingest summary: shares of the lines, requests or impressions ingest read,
    and events per impression."""
    events, requests, impressions = summary["lines"]["events"], summary["lines"]["requests"], summary["impressions"]
    unknown = summary["dead_letters"]["events"]["by_reason"].get("unknown_request", 0)
    shown = impressions["in_used_requests"]
    return {
        "events.duplicate_share": _share(events.get("duplicate_event", 0), events["read"]),
        "events.late_share": _share(events.get("outside_window", 0), events["read"]),
        "events.unknown_request_share": _share(unknown, events["read"]),
        "requests.duplicate_share": _share(requests.get("duplicate_request", 0), requests["read"]),
        "impressions.duplicate_share": _share(impressions.get("duplicate_impression", 0), shown),
        "events.per_impression": _share(events["used"], shown),
    }


def day_measures(logs_root: str, day: dt.date) -> dict[str, float]:
    """The repeated-line shares of one day of request and event logs, for the daily monitor: a line whose
    exact text came earlier that day is a retried write (ingest's ``duplicate_request`` and, for events,
    a subset of its ``duplicate_event``), measured without an ingest run."""
    out = {}
    for source in ("requests", "events"):
        seen: set[str] = set()
        read = repeated = 0
        for path in logs.partition_files(logs_root, source, day, day):
            for line in logs.read_lines(path):
                read += 1
                repeated += line in seen
                seen.add(line)
        out[f"{source}.duplicate_share"] = _share(repeated, read)
    return out


def _share(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


def check(now: Mapping[str, float], was: Mapping[str, float] | None, share_change: float, rate_change: float,
          spans: str) -> tuple[list[Anomaly], list[dict[str, Any]]]:
    """``now`` against ``was`` (the previous span's ``measures``; None on a first run: nothing compared).

    A share (of lines, requests or impressions) moved by more than ``share_change`` (absolute) blocks;
    events per impression moved by more than ``rate_change`` (relative) warns. Returns the anomalies and
    every distance measured.
    """
    anomalies, measured = [], []
    for name in now:
        if was is None or name not in was:
            continue
        rate = name in RATES
        distance = (abs(now[name] / was[name] - 1.0) if was[name] else float(now[name] > 0)) if rate else \
            abs(now[name] - was[name])
        threshold = rate_change if rate else share_change
        row = {"feature": name, "check": "drift", "measure": "RATE_CHANGE" if rate else "SHARE_CHANGE",
               "distance": round(distance, 6), "threshold": threshold}
        measured.append(row)
        if distance > threshold:
            anomalies.append(Anomaly(**row, blocking=not rate, spans=spans,
                                     description=f"{name} {now[name]:.4f}, was {was[name]:.4f}",
                                     top_changed_values=[{"value": name, "now": now[name], "was": was[name]}]))
    return anomalies, measured
