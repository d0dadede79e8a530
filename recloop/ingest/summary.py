"""The ingest summary: Beam counters -> counts per stage, the reconciliation, the dead-letter limit.

Every line read ends in exactly one outcome, and every impression of a used
request is an example or a counted rule drop. The equations are checked on the
counters of what was *written*, so an element lost between steps (as seen with
the multi-threaded DirectRunner, docs/stack.md) fails the run instead of shrinking
the training set silently.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from recloop.features.records import CLICK_DELAYS, EVENT_TYPES


class IngestError(RuntimeError):
    """An ingest run whose output must not be used."""


# RecordError.reason -> the dead-letter reason of a line that breaks the contract
PARSE_REASONS = {"json": "invalid_json", "missing": "missing_field", "type": "wrong_type",
                 "value": "invalid_value", "unexpected": "unexpected_field"}

# source -> the outcomes every one of its units ends in (counter suffixes; "dead." is a prefix)
OUTCOMES = {
    "requests": ("used", "duplicate_request"),
    "events": ("used", "duplicate_event", "outside_window", "after_split", "out_of_span"),
    "impressions": ("duplicate_impression", "stale", "inactive_member", "sampled_out_train", "sampled_out_eval"),
}


def _by_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def reconcile(counters: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The reconciliation equations, each with both sides and whether it holds."""
    c = Counter(counters)
    out: dict[str, dict[str, Any]] = {}
    for source in ("requests", "events"):
        terms = {name: c[f"{source}.{name}"] for name in OUTCOMES[source]}
        terms["dead_letters"] = sum(_by_prefix(counters, f"{source}.dead.").values())
        out[source] = _equation(f"{source} lines read", c[f"{source}.lines"], terms)
    terms = {"examples_train": c["written.train"], "examples_eval": c["written.eval"]}
    terms |= {name: c[f"impressions.{name}"] for name in OUTCOMES["impressions"]}
    out["impressions"] = _equation("impressions in used requests", c["impressions.total"], terms)
    dead = sum(_by_prefix(counters, "requests.dead.").values()) + sum(_by_prefix(counters, "events.dead.").values())
    out["dead_letters"] = _equation("dead letters counted", dead, {"written": c["written.dead_letters"]})
    for split in ("train", "eval"):  # encoded == written: nothing lost on the way to the files
        out[f"written_{split}"] = _equation(f"{split} examples encoded", c[f"examples.{split}"],
                                            {"written": c[f"written.{split}"]})
    return out


def _equation(left: str, total: int, terms: dict[str, int]) -> dict[str, Any]:
    accounted = sum(terms.values())
    return {"equation": f"{left} = " + " + ".join(terms), "left": total, "right": accounted, "terms": terms,
            "holds": total == accounted}


# Events of a request that is itself a dead letter: listed, but that request is the one
# fault, so they do not count again toward the limit.
CASCADE = "request_dead_letter"


def dead_letter_shares(counters: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per source: dead letters, lines read, share (without cascades), and counts by reason."""
    out = {}
    for source in ("requests", "events"):
        reasons = _by_prefix(counters, f"{source}.dead.")
        lines = counters.get(f"{source}.lines", 0)
        own = sum(n for reason, n in reasons.items() if reason != CASCADE)
        out[source] = {"dead_letters": sum(reasons.values()), "lines": lines, "counted": own,
                       "share": own / lines if lines else 0.0,
                       "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}
    return out


def check(summary: dict[str, Any], max_share: float, where: str) -> None:
    """Raises ``IngestError`` when a reconciliation fails or a source has too many dead letters.

    Args:
      summary: from ``summarize``.
      max_share: the dead-letter limit, as a share of a source's lines.
      where: the folder holding this run's outputs and dead letters, named in the message.
    """
    broken = [f"{name}: {eq['equation']} -> {eq['left']:,} != {eq['right']:,} ({eq['terms']})"
              for name, eq in summary["reconciliation"].items() if not eq["holds"]]
    if broken:
        raise IngestError("ingest lost or double-counted records, so its output is not used:\n  "
                          + "\n  ".join(broken) + f"\nCounters and outputs are in {where}.")
    for source, d in summary["dead_letters"].items():
        if d["share"] > max_share:
            top = ", ".join(f"{reason} {n:,}" for reason, n in list(d["by_reason"].items())[:3])
            raise IngestError(
                f"{d['share']:.2%} of {source} lines ({d['counted']:,} of {d['lines']:,}) are dead letters, "
                f"above the limit of {max_share:.2%} (--max-dead-letter-share); top reasons: {top}. "
                f"The dead letters are in {where}/dead_letters/{source}.jsonl.")


def summarize(counters: dict[str, int], distinct: dict[str, int], context: dict[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` document.

    Args:
      counters: Beam counters of the run (namespace ``recloop.ingest``).
      distinct: distinct members and items per split.
      context: span, parameters, inputs and timings, copied in as they are.
    """
    c = Counter(counters)
    splits = ("train", "eval")
    positives = {s: {e: c[f"positives.{s}.{e}"] for e in EVENT_TYPES} for s in splits}
    ratio = {s: {e: (n / (c[f"examples.{s}"] - n) if c[f"examples.{s}"] > n else None) for e, n in p.items()}
             for s, p in positives.items()}
    return {
        **context,
        "lines": {source: {"read": c[f"{source}.lines"], "blank": c[f"{source}.blank_lines"],
                           "parsed": c[f"{source}.lines"] - sum(c[f"{source}.dead.{r}"] for r in PARSE_REASONS.values()),
                           **{name: c[f"{source}.{name}"] for name in OUTCOMES[source]}}
                  for source in ("requests", "events")} | {"requests_outside_span_read_for_ids":
                                                          c["requests.context_lines"]},
        "impressions": {"in_used_requests": c["impressions.total"],
                        **{name: c[f"impressions.{name}"] for name in OUTCOMES["impressions"]}},
        "dead_letters": dead_letter_shares(counters),
        "examples": {s: c[f"written.{s}"] for s in splits}
        | {f"retrieval_{s}": c[f"written.retrieval_{s}"] for s in splits},
        "positives": positives,
        "positive_negative_ratio": ratio,
        "click_delay": {bucket: c[f"click_delay.{bucket}"] for bucket in CLICK_DELAYS},  # used clicks
        "members": {s: distinct.get(f"members.{s}", 0) for s in splits},
        "items": {s: distinct.get(f"items.{s}", 0) for s in splits} | {"served": c["written.items"]},
        "reconciliation": reconcile(counters),
        "beam_counters": dict(sorted(counters.items())),
    }
