"""Corrupt log lines, of the kinds real pipelines meet, at a chosen rate.

Each line is picked with probability ``rate``; a picked line is replaced by a
broken version of itself (or, for ``duplicate_event``, followed by a copy).
Every corruption is recorded under ``truth/`` so ingest's reconciliation can be
checked exactly.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

REQUEST_KINDS = ("truncated_json", "wrong_type", "missing_field", "bad_timestamp")
EVENT_KINDS = (*REQUEST_KINDS, "unknown_event_type", "unknown_request", "duplicate_event")


def _break(line: str, kind: str, stream: str, u: float) -> list[str]:
    if kind == "truncated_json":
        return [line[: max(1, int(len(line) * (0.2 + 0.6 * u)))]]
    if kind == "duplicate_event":
        return [line, line]
    record = json.loads(line)
    if kind == "wrong_type":
        if stream == "requests":
            record["context"]["hour_of_day"] = str(record["context"]["hour_of_day"])
        else:
            record["item_id"] = int(record["item_id"].lstrip("i"))
    elif kind == "missing_field":
        del record["context" if stream == "requests" else "item_id"]
    elif kind == "bad_timestamp":
        ts = record["ts"]  # 2026-01-05T07:30:00Z -> 05/01/2026 07:30:00
        record["ts"] = f"{ts[8:10]}/{ts[5:7]}/{ts[0:4]} {ts[11:19]}"
    elif kind == "unknown_event_type":
        record["event"] = "share"
    elif kind == "unknown_request":
        record["request_id"] = f"r-unknown-{int(u * 1e9):09d}"
    return [json.dumps(record, separators=(",", ":"))]


def corrupt(lines: list[str], stream: str, rate: float, rng: np.random.Generator
            ) -> tuple[list[str], list[dict[str, str]]]:
    """Corrupts a share ``rate`` of ``lines`` of one stream (``requests`` or ``events``).

    Returns:
      ``(lines, corruptions)``: the lines to write, and one record per corrupt
      line written: ``{kind, request_id, item_id}`` of the original line.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"corrupt rate must be in [0, 1], got {rate}")
    kinds = REQUEST_KINDS if stream == "requests" else EVENT_KINDS
    picked = rng.random(len(lines)) < rate
    which = rng.integers(0, len(kinds), len(lines))
    u = rng.random(len(lines))
    out: list[str] = []
    log: list[dict[str, str]] = []
    for i, line in enumerate(lines):
        if not picked[i]:
            out.append(line)
            continue
        kind = kinds[which[i]]
        original = json.loads(line)
        out += _break(line, kind, stream, float(u[i]))
        log.append({"kind": kind, "request_id": original["request_id"], "item_id": original.get("item_id", "")})
    return out, log


def count_kinds(corruptions: list[dict[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(c["kind"] for c in corruptions).items()))
