"""Labelling one request: its impressions and the events that point at them -> examples.

The Beam job groups request and event lines by ``request_id`` and calls
``label_request`` once per group, so the rules live here, testable without Beam:

- one example per impression; a repeated item in a request is a duplicate impression;
- an event counts for an impression when it names the same (request_id, item_id)
  and happened in ``[request ts, request ts + window]`` (the same second is valid:
  some clients log at one-second resolution);
- an identical event line seen twice is a duplicate, counted once;
- an event before its request, or for an item the request did not show, is a
  dead letter with that reason; one after the window is counted, not used;
- with a ``cutoff`` (the start of the eval period, for a training request), an
  event at or after it is counted as ``after_split`` and not used, so nothing
  from eval time reaches a training label.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from recloop.features.examples import ExampleColumns
from recloop.features.records import EVENT_TYPES, EventRecord, RequestRecord, click_delay_bucket

LABELS_OF = {event: f"label_{event}" for event in EVENT_TYPES}


@dataclass
class Labelled:
    """What one request group produced, every input accounted for once."""

    request: RequestRecord
    kept: list[int] = field(default_factory=list)  # impression indices, first showing of each item
    labels: dict[str, list[int]] = field(default_factory=dict)  # label column -> 0/1 per kept impression
    # per-source drops that are rules, not errors: duplicate_impression, duplicate_event, ...
    drops: Counter[str] = field(default_factory=Counter)
    # (reason, event) for events that cannot be used and must be looked at
    dead_events: list[tuple[str, EventRecord]] = field(default_factory=list)
    events_used: int = 0
    click_delays: Counter[str] = field(default_factory=Counter)  # used clicks per CLICK_DELAYS bucket

    def add_to(self, columns: ExampleColumns) -> None:
        """Appends this request's examples to ``columns``."""
        columns.add(self.request, self.kept, self.labels)

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The examples as dicts (for tests and tools)."""
        columns = ExampleColumns()
        self.add_to(columns)
        return columns.rows()


def label_request(request: RequestRecord, events: list[EventRecord], window_seconds: int,
                  cutoff: dt.datetime | None = None) -> Labelled:
    """Labels the impressions of one request, with a 0/1 label per event type.

    Args:
      request: the parsed request record.
      events: every parsed event whose ``request_id`` is this request's.
      window_seconds: the attribution window after the request.
      cutoff: events at or after this instant are not used (``after_split``).

    Returns:
      ``Labelled``: the kept impressions and their ``label_<event>`` values, and
      for the events: how many were used, dropped by rule (``duplicate_event``,
      ``outside_window``, ``after_split``) or dead (``before_request``,
      ``no_impression``). Impressions:
      ``len(kept) + drops["duplicate_impression"] == len(request["impressions"])``.
    """
    out = Labelled(request)
    shown: dict[str, int] = {}
    for i, imp in enumerate(request["impressions"]):
        if imp["item_id"] in shown:
            out.drops["duplicate_impression"] += 1
        else:
            shown[imp["item_id"]] = i
    outcomes: dict[str, set[str]] = {item: set() for item in shown}
    start = request["ts"]
    seen: set[tuple[str, str, Any]] = set()
    for ev in events:
        item, when = ev["item_id"], ev["ts"]
        key = (item, ev["event"], when)
        if key in seen:
            out.drops["duplicate_event"] += 1
            continue
        seen.add(key)
        if item not in shown:
            out.dead_events.append(("no_impression", ev))
        elif when < start:
            out.dead_events.append(("before_request", ev))
        elif (when - start).total_seconds() > window_seconds:
            out.drops["outside_window"] += 1
        elif cutoff is not None and when >= cutoff:
            out.drops["after_split"] += 1
        else:
            outcomes[item].add(ev["event"])
            out.events_used += 1
            if ev["event"] == "click":
                out.click_delays[click_delay_bucket((when - start).total_seconds())] += 1
    out.kept = list(shown.values())
    out.labels = {column: [int(event in outcomes[item]) for item in shown] for event, column in LABELS_OF.items()}
    return out
