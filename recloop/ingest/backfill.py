"""Backfill: many weeks of logs ingested in one process, one ingest output per week.

Bringing months of history means one ingest output per week (the trainer's
``--data`` folders, the validation reference of each week). Run as separate
``recloop ingest`` commands, every week pays for starting Python and importing
Beam, TensorFlow and TFDV again; here they are paid once and each week is an
ordinary ``ingest.run`` with the same parameters, written to
``OUT/week=YYYY-MM-DD`` (the week's Monday, or whatever day the span starts on).
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from recloop.ingest.pipeline import IngestConfig, run


def weeks(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The 7-day spans from ``start`` through ``end``.

    Raises:
      ValueError: when the span is not a whole number of weeks (naming the days left over).
    """
    days = (end - start).days + 1
    if days < 7 or days % 7:
        raise ValueError(f"a backfill span is whole weeks: {start}..{end} is {days} days "
                         f"({days % 7} left over); end on {start + dt.timedelta(days=7 * max(1, days // 7) - 1)}")
    return [(start + dt.timedelta(days=7 * i), start + dt.timedelta(days=7 * i + 6)) for i in range(days // 7)]


def week_folder(out: str, start: dt.date) -> str:
    return posixpath.join(out.rstrip("/"), f"week={start.isoformat()}")


def backfill(config: IngestConfig, beam_args: Sequence[str] = (),
             on_week: Callable[[int, int, dt.date, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Ingests every week of ``config``'s span into ``week_folder(config.out, week start)``; returns the summaries.

    Each week takes ``config``'s parameters (``eval_days`` are the last days of each week). A week that
    fails stops the backfill with the weeks before it written and reported.

    Args:
      on_week: called after each week with ``(index, weeks, week start, summary)``.
    """
    spans = weeks(config.start, config.end)
    summaries = []
    for i, (start, end) in enumerate(spans):
        week = config.model_copy(update={"start": start, "end": end, "out": week_folder(config.out, start)})
        summaries.append(run(IngestConfig.model_validate(week.model_dump()), beam_args=beam_args))
        if on_week:
            on_week(i, len(spans), start, summaries[-1])
    return summaries
