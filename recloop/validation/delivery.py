"""How the logs arrived: repeated events, events past the attribution window, events of unknown requests,
repeated requests and impressions, events per impression, and how long after its request a click came.

Ingest accounts for every line it reads (``summary.json``), so a client or collector bug shows in those
counts before it shows anywhere else: a retrying client doubles events (ingest drops the copies, but
they say the client is broken), a client clock ahead pushes events past the attribution window (they
are lost as labels), a client that batches its posts and stamps them when sent makes clicks come
later (the mix of click delays moves before any event leaves the window). Each measure here is a share
of what ingest read, compared with the previous span's; the model-independent ones block, events per
impression (which a new model legitimately moves with its click rate) only warns; the click delays are
compared as a mix (L-infinity over ``CLICK_DELAYS``' buckets) and block.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from recloop.features import logs
from recloop.features.records import CLICK_DELAYS, click_delay_bucket
from recloop.validation.anomaly import Anomaly, moved_shares

Summary = Mapping[str, Any]
RATES = ("events.per_impression",)  # moves with the serving model's click rate: compared by ratio, warns only
MIN_CLICKS = 500  # fewer used clicks than this: no click-delay mix (a bucket's share would be noise, SE > 0.02)
DEFAULT_WINDOW_S = 24 * 3600  # ingest's default attribution window, for the daily monitor's click delays
MIXES = ("events.click_delay",)  # a share per bucket: compared by the largest change of a share


def measures(summary: Summary) -> dict[str, Any]:
    """Every delivery measure of an ingest summary: shares of the lines, requests or impressions ingest read,
    events per impression, and the share of used clicks in each delay bucket (none under ``MIN_CLICKS``
    clicks, or for a summary from before they were counted)."""
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
    } | _mix(summary.get("click_delay", {}), MIN_CLICKS)


def _mix(delays: Mapping[str, int], min_clicks: int) -> dict[str, Any]:
    clicks = sum(delays.values())
    if clicks < max(min_clicks, 1):
        return {}
    return {"events.click_delay": {b: _share(delays.get(b, 0), clicks) for b in CLICK_DELAYS}}


def day_measures(logs_root: str, day: dt.date, min_clicks: int = MIN_CLICKS) -> dict[str, Any]:
    """What the daily monitor can measure of one day of logs without an ingest run: the repeated-line shares
    of its request and event logs (a line whose exact text came earlier that day is a retried write:
    ingest's ``duplicate_request`` and, for events, a subset of its ``duplicate_event``), and the mix of
    its clicks' delays after their requests (those logged that day or the day before, within ingest's
    default attribution window; none under ``min_clicks`` clicks)."""
    out: dict[str, Any] = {}
    issued: dict[str, dt.datetime] = {}
    delays: Counter[str] = Counter()
    for source, first in (("requests", day - dt.timedelta(days=1)), ("events", day)):
        seen: set[str] = set()
        read = repeated = 0
        for path in logs.partition_files(logs_root, source, first, day):
            today = logs.partition_date(path) == day
            for line in logs.read_lines(path):
                if today:
                    read += 1
                    repeated += line in seen
                    seen.add(line)
                _note(line, source, issued, delays)
        out[f"{source}.duplicate_share"] = _share(repeated, read)
    return out | _mix(delays, min_clicks)


def _note(line: str, source: str, issued: dict[str, dt.datetime], delays: Counter[str]) -> None:
    """Keeps a request's time, or counts a click's delay after its request; a line that does not parse is
    left to ingest's dead letters."""
    try:
        record = json.loads(line)
        ts = dt.datetime.fromisoformat(record["ts"])
        if source == "requests":
            issued[record["request_id"]] = ts
        elif record["event"] == "click" and record["request_id"] in issued:
            delay = (ts - issued[record["request_id"]]).total_seconds()
            if 0 <= delay <= DEFAULT_WINDOW_S:
                delays[click_delay_bucket(delay)] += 1
    except (ValueError, KeyError, TypeError):
        return


def _share(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


def check(now: Mapping[str, Any], was: Mapping[str, Any] | None, share_change: float, rate_change: float,
          mix_change: float, spans: str) -> tuple[list[Anomaly], list[dict[str, Any]]]:
    """``now`` against ``was`` (the previous span's ``measures``; None on a first run: nothing compared).

    A share (of lines, requests or impressions) moved by more than ``share_change`` (absolute) blocks;
    events per impression moved by more than ``rate_change`` (relative) warns; a bucket of the click delays
    whose share moved by more than ``mix_change`` blocks. Returns the anomalies and every distance measured.
    """
    anomalies, measured = [], []
    for name in now:
        if was is None or name not in was:
            continue
        a, b = now[name], was[name]
        if name in MIXES:
            moved = moved_shares(a, b)
            distance, threshold, measure = abs(moved[0][1] - moved[0][2]), mix_change, "L_INFTY"
            evidence = [{"value": f"{name} {k}", "now": x, "was": y} for k, x, y in moved[:4]]
            described = f"{name} {dict(a)}, was {dict(b)}"
        else:
            rate = name in RATES
            distance = (abs(a / b - 1.0) if b else float(a > 0)) if rate else abs(a - b)
            threshold, measure = (rate_change, "RATE_CHANGE") if rate else (share_change, "SHARE_CHANGE")
            evidence, described = [{"value": name, "now": a, "was": b}], f"{name} {a:.4f}, was {b:.4f}"
        row = {"feature": name, "check": "drift", "measure": measure, "distance": round(distance, 6),
               "threshold": threshold}
        measured.append(row | {"blocks": name not in RATES})
        if distance > threshold:
            anomalies.append(Anomaly(**row, blocking=name not in RATES, spans=spans, description=described,
                                     top_changed_values=evidence))
    return anomalies, measured
