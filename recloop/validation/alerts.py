"""Alerts for blocking anomalies: kept locally first, then posted to Alertmanager (v2 API).

Every alert is appended to ``alerts.jsonl`` in the run folder before delivery is
tried, so an unreachable Alertmanager never loses one. Delivery is retried with
backoff; what still fails is written to ``undelivered.jsonl`` in the run-state
folder, and the next run sends it first. Delivery problems are reported, never
raised: a validation run must finish and publish its verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from recloop import storage

log = logging.getLogger(__name__)


def alert_of(anomaly: dict[str, Any], run: str, now: dt.datetime) -> dict[str, Any]:
    """The Alertmanager v2 alert for one blocking anomaly."""
    distance = "" if anomaly["distance"] is None else f" {anomaly['distance']:.4f} > {anomaly['threshold']}"
    return {
        "labels": {"alertname": "RecloopDataAnomaly", "feature": anomaly["feature"], "check": anomaly["check"],
                   "severity": "critical" if anomaly["blocking"] else "warning", "run": run},
        "annotations": {"summary": f"{anomaly['check']} anomaly on {anomaly['feature']}:{distance} "
                                   f"({anomaly['measure']})",
                        "description": f"{anomaly['description']} [{anomaly['spans']}]",
                        "runbook": "docs/oncall.md"},
        "startsAt": now.isoformat(),
    }


def post(url: str, alerts: list[dict[str, Any]], attempts: int = 3, backoff_s: float = 0.5,
         timeout_s: float = 5.0) -> str | None:
    """Posts ``alerts`` to ``<url>/api/v2/alerts``; returns None on success, else the last error."""
    body = json.dumps(alerts).encode("utf-8")
    error = None
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(f"{url.rstrip('/')}/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return None
                error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as e:
            error = str(getattr(e, "reason", e))
        log.warning("alert delivery to %s failed (attempt %d of %d): %s", url, attempt, attempts, error)
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return error


def raise_alerts(anomalies: list[dict[str, Any]], run_dir: str, run: str, url: str | None = None,
                 state_dir: str | None = None, now: dt.datetime | None = None, **post_options: Any
                 ) -> dict[str, Any]:
    """Records the alerts of a run's blocking anomalies and delivers them with any left from earlier runs.

    Args:
      anomalies: the verdict's anomalies; the blocking ones become alerts.
      run_dir: the run folder; ``alerts.jsonl`` there gets one line per alert.
      run: the run's name, an alert label.
      url: the Alertmanager base URL; without it alerts are only recorded.
      state_dir: the run-state folder holding ``undelivered.jsonl`` between runs.

    Returns:
      ``{"raised", "resent", "delivered", "error"}``.
    """
    now = now or dt.datetime.now(dt.UTC)
    alerts = [alert_of(a, run, now) for a in anomalies if a["blocking"]]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir, "alerts.jsonl"), "a", encoding="utf-8") as f:
        f.writelines(json.dumps(a, sort_keys=True) + "\n" for a in alerts)
    pending = storage.join(state_dir, "undelivered.jsonl") if state_dir else None
    earlier = []
    if pending and storage.exists(pending):
        earlier = [json.loads(line) for line in storage.read_text(pending).splitlines()]
    outcome = {"raised": len(alerts), "resent": len(earlier), "delivered": False, "error": None}
    to_send = earlier + alerts
    if not to_send:
        return outcome | {"delivered": True}
    if url is None:
        outcome["error"] = "no Alertmanager URL given: alerts are recorded only"
    else:
        outcome["error"] = post(url, to_send, **post_options)
        outcome["delivered"] = outcome["error"] is None
    if outcome["delivered"] and pending:
        storage.remove(pending)
    elif not outcome["delivered"] and pending:
        storage.write_text(pending, "".join(json.dumps(a, sort_keys=True) + "\n" for a in to_send))
    if not outcome["delivered"]:
        log.warning("%d alert(s) not delivered (%s); kept in %s%s", len(to_send), outcome["error"],
                    Path(run_dir, "alerts.jsonl"), f" and {pending} for the next run" if pending else "")
    return outcome
