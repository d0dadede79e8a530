"""Labelling one request: its impressions and the events that point at them -> examples.

The Beam job groups request and event lines by ``request_id`` and calls
``label_request`` once per group, so the rules live here, testable without Beam:

- one example per impression; a repeated item in a request is a duplicate impression;
- an event counts for an impression when it names the same (request_id, item_id)
  and happened in ``[request ts, request ts + window]`` (the same second is valid:
  some clients log at one-second resolution);
- an identical event line seen twice is a duplicate, counted once;
- an event before its request, or for an item the request did not show, is a
  dead letter with that reason; one after the window is counted, not used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from recloop.features.examples import flatten
from recloop.features.records import EventRecord, RequestRecord
from recloop.features.spec import LABELS

# event type -> the head it labels; "start" is logged and matched but labels no head
HEAD_OF_EVENT = {"click": "click", "complete": "complete", "like": "like"}


@dataclass
class Labelled:
    """What one request group produced, every input accounted for once."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    # per-source drops that are rules, not errors: duplicate_impression, duplicate_event, ...
    drops: Counter[str] = field(default_factory=Counter)
    # (reason, event) for events that cannot be used and must be looked at
    dead_events: list[tuple[str, EventRecord]] = field(default_factory=list)
    events_used: int = 0


def label_request(request: RequestRecord, events: list[EventRecord], window_seconds: int) -> Labelled:
    """Examples of one request, with a 0/1 label per head.

    Args:
      request: the parsed request record.
      events: every parsed event whose ``request_id`` is this request's.
      window_seconds: the attribution window after the request.

    Returns:
      ``Labelled``: examples (``flatten`` + ``label_<head>`` columns), and for the
      events: how many were used, dropped by rule (``duplicate_event``,
      ``outside_window``) or dead (``before_request``, ``no_impression``); a
      matched ``start`` is used but labels no head. Impressions:
      ``len(examples) + drops["duplicate_impression"] == len(request.impressions)``.
    """
    out = Labelled()
    shown: dict[str, int] = {}
    for i, imp in enumerate(request.impressions):
        if imp.item_id in shown:
            out.drops["duplicate_impression"] += 1
        else:
            shown[imp.item_id] = i
    heads: dict[str, set[str]] = {item: set() for item in shown}
    start = request.ts
    seen: set[tuple[str, str, Any]] = set()
    for ev in events:
        key = (ev.item_id, ev.event, ev.ts)
        if key in seen:
            out.drops["duplicate_event"] += 1
            continue
        seen.add(key)
        if ev.item_id not in shown:
            out.dead_events.append(("no_impression", ev))
        elif ev.ts < start:
            out.dead_events.append(("before_request", ev))
        elif (ev.ts - start).total_seconds() > window_seconds:
            out.drops["outside_window"] += 1
        else:  # matched inside the window: used, whether or not its type labels a head
            if ev.event in HEAD_OF_EVENT:
                heads[ev.item_id].add(HEAD_OF_EVENT[ev.event])
            out.events_used += 1
    for item, i in shown.items():
        example = flatten(request, request.impressions[i])
        for head in LABELS:
            example[f"label_{head}"] = int(head in heads[item])
        out.examples.append(example)
    return out
