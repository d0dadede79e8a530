"""Typed log records: what the server logs per request and what clients log per event.

The request record carries the exact features the server used, so training
reads them instead of re-deriving them (docs/architecture.md, "Data contract"). Parsing is
strict on structure and types (a string where a number belongs is an error) and
lenient on domains (an unseen platform is valid: validation reports it). The
member, context and item objects hold the declared features (``spec``), so their
types are built from the declaration at import.

Records are plain dicts checked against ``TypedDict`` schemas by pydantic: a
request holds ~20 nested objects, and building model instances for them made
parsing 3x slower, which matters on ingest's path (a million impressions a week).
The server's writer (``format_request``) sits beside the reader for the same
reason in the other direction: one line per answer, dumped without validation.
"""


import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple, NotRequired

import orjson
import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, TypeAdapter, with_config
from typing_extensions import TypedDict

from recloop.features.spec import Feature, feature, features_for

EVENT_TYPES = ("click", "start", "complete", "like")
# a click's delay after its request, by bucket (upper bound in seconds; None: the rest). Clicks only: when a
# member clicks is the client's and the member's, while later events wait on the item the model chose (a
# long class is completed later). A client clock or batching bug moves this mix long before it pushes
# events past the attribution window (ingest counts it, validation.delivery compares it).
CLICK_DELAYS = {"under_10s": 10, "10s_to_1m": 60, "1m_to_10m": 600, "over_10m": None}


def click_delay_bucket(seconds: float) -> str:
    """The ``CLICK_DELAYS`` bucket of a delay in seconds."""
    return next(name for name, bound in CLICK_DELAYS.items() if bound is None or seconds < bound)

# RFC 3339 date-time with an explicit offset; pydantic alone would also take unix
# seconds and naive times, which would make "bad timestamp" lines parse.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # built in Python, not parsed
        if value.tzinfo is None:
            raise ValueError("expected a timezone-aware datetime (UTC)")
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 timestamp such as 2026-01-05T07:30:00Z")
    try:
        return dt.datetime.fromisoformat(value.replace("z", "Z")).astimezone(dt.UTC)
    except (ValueError, OverflowError) as e:  # an impossible date, or one outside UTC's range
        raise ValueError(f"expected an RFC 3339 timestamp with a valid date and time ({e})") from None


Timestamp = Annotated[
    dt.datetime, BeforeValidator(_rfc3339), PlainSerializer(lambda t: format_ts(t), when_used="json")
]
NonEmpty = Annotated[str, Field(min_length=1)]
_STRICT = with_config(ConfigDict(strict=True, extra="forbid"))


def contract_type(f: Feature) -> Any:
    """The type a record field of a declared feature has: strict on structure and type, lenient on domain.

    A string is non-empty unless the feature is nullable; a number is >= 0 (the models read -1 as missing),
    > 0 when ``strictly_positive``, and inside ``value_range`` when a slot per value encodes it (an hour of 25
    has no slot); a list feature (``max_length``) is a list of up to that many non-empty strings, empty
    when there is nothing to list; a nullable feature may be null or absent.
    """
    if f.is_list:
        base: Any = Annotated[list[NonEmpty], Field(max_length=f.max_length)]
    elif f.kind == "categorical":
        base = str if f.nullable else NonEmpty
    elif f.buckets == "per_value" and f.value_range:
        base = Annotated[f.dtype, Field(ge=f.value_range[0], le=f.value_range[1])]
    else:
        base = Annotated[f.dtype, Field(gt=0) if f.strictly_positive else Field(ge=0)]
    return NotRequired[base | None] if f.nullable else base


def _record(name: str, doc: str, fields: dict[str, Any]) -> Any:
    """A strict ``TypedDict`` built from the declaration (the features are known only at import)."""
    record = TypedDict(name, fields)  # type: ignore[operator]
    record.__doc__ = doc
    return _STRICT(record)


MemberFeatures = _record(
    "MemberFeatures", "Static member features, as the server received them (nullable ones may be null or absent).",
    {f.name: contract_type(f) for f in features_for(group="member")})
Context = _record(
    "Context", "Request context: the reason inference is online.",
    {f.name: contract_type(f) for f in features_for(group="context")})
# the item id is on the impression; release_date is the item's fixed metadata that age_days is measured from
ItemFeatures = _record(
    "ItemFeatures", "Item metadata as served with an impression (the item id is on the impression).",
    {**{f.name: contract_type(f) for f in features_for(group="item") if f.name not in ("item_id", "age_days")},
     "release_date": NotRequired[dt.date | None], "age_days": contract_type(feature("age_days"))})


@_STRICT
class Impression(TypedDict):
    """One shown item. ``propensity`` is the probability that the logging policy
    put this item in this slot, given the slots before it (for off-policy evaluation);
    ``explored`` says the slot was drawn uniformly from every item its row admits (the
    catalog-wide exploration the unbiased offline views read); logs written before it
    existed leave it out, and it is then read as ``propensity < 0.5`` (the epsilon-greedy
    rule those servers logged with: ``examples.explored``)."""

    item_id: NonEmpty
    position: Annotated[int, Field(ge=0)]
    row: NonEmpty
    score: Annotated[float, Field(ge=0, le=1)]  # what ranked the item: a model's combined heads, a popularity share
    propensity: Annotated[float, Field(gt=0, le=1)]
    explored: NotRequired[bool]
    item: ItemFeatures


@_STRICT
class RequestRecord(TypedDict):
    """One served request, logged by the server with the features it used."""

    request_id: NonEmpty
    ts: Timestamp
    model_version: NonEmpty
    member: MemberFeatures
    context: Context
    impressions: Annotated[list[Impression], Field(min_length=1)]


@_STRICT
class EventRecord(TypedDict):
    """One client event on an impression; it arrives after its request."""

    request_id: NonEmpty
    item_id: NonEmpty
    event: Literal["click", "start", "complete", "like"]
    ts: Timestamp


_REQUEST: TypeAdapter[RequestRecord] = TypeAdapter(RequestRecord)
_EVENT: TypeAdapter[EventRecord] = TypeAdapter(EventRecord)


class RecordError(ValueError):
    """A log line that does not follow the contract.

    Attributes:
      kind: ``request`` or ``event``.
      field: dotted path of the first offending field (``context.hour_of_day``),
        or ``<line>`` when the line is not a JSON object.
      reason: stable short reason for dead-letter counters (``missing``, ``type``,
        ``value``, ``json``, ``unexpected``).
    """

    def __init__(self, kind: str, field: str, reason: str, message: str):
        super().__init__(message)
        self.kind, self.field, self.reason = kind, field, reason


_REASONS = {"missing": "missing", "extra_forbidden": "unexpected", "json_invalid": "json"}


def _record_error(kind: str, error: pydantic.ValidationError, source: str | None) -> RecordError:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "<line>"
    etype = first["type"]
    reason = _REASONS.get(etype) or ("type" if etype.endswith("_type") else "value")
    where = f" ({source})" if source else ""
    if reason == "json":
        message = f"{kind} record{where}: not valid JSON: {first['msg']}"
        field = "<line>"
    elif reason == "missing":
        message = f"{kind} record{where}: required field '{field}' is missing"
    elif reason == "unexpected":
        message = f"{kind} record{where}: unexpected field '{field}' (not in the log contract)"
    else:
        received = first.get("input")
        shown = f"{received!r} ({type(received).__name__})"
        msg = first["msg"].removeprefix("Value error, ")
        message = f"{kind} record{where}: field '{field}': {msg}, got {shown}"
    extra = f" and {error.error_count() - 1} more error(s)" if error.error_count() > 1 else ""
    return RecordError(kind, field, reason, message + extra)


def parse_request(line: str | bytes, source: str | None = None) -> RequestRecord:
    """Parses one JSON line of the request log.

    Args:
      line: the JSON text.
      source: where it came from (``path:line``), put into the error message.

    Raises:
      RecordError: naming the field, what was expected and what was received.
    """
    return _checked("request", _REQUEST.validate_json, line, source)


def parse_event(line: str | bytes, source: str | None = None) -> EventRecord:
    """Parses one JSON line of the event log; see ``parse_request``."""
    return _checked("event", _EVENT.validate_json, line, source)


def request_record(value: dict[str, Any]) -> RequestRecord:
    """Checks a request record built in Python (datetimes and dates as objects).

    Raises:
      RecordError: as ``parse_request``.
    """
    return _checked("request", _REQUEST.validate_python, value, None)


def event_record(value: dict[str, Any]) -> EventRecord:
    """Checks an event record built in Python; see ``request_record``."""
    return _checked("event", _EVENT.validate_python, value, None)


def _checked(kind: str, validate: Any, value: Any, source: str | None) -> Any:
    try:
        return validate(value)
    except pydantic.ValidationError as e:
        raise _record_error(kind, e, source) from None


def to_json_line(record: RequestRecord | EventRecord) -> str:
    """Serialises a record to one JSON line (timestamps as RFC 3339 UTC, ``Z``)."""
    adapter = _REQUEST if "impressions" in record else _EVENT
    return adapter.dump_json(record).decode("utf-8")  # type: ignore[arg-type]


class ImpressionColumns(NamedTuple):
    """The impressions of one request as plain Python values, one list per field of the contract, in page order."""

    item_id: list[str]
    position: list[int]
    row: list[str]
    score: list[float]
    propensity: list[float]
    explored: list[bool]
    item: Mapping[str, list[Any]]  # every declared item feature by name (None: missing)
    release_date: list[str | None]  # ISO date
    age_days: list[int | None]


def format_request(request_id: str, ts: dt.datetime, model_version: str, member_id: str, member: Mapping[str, Any],
                   context: Mapping[str, Any], shown: ImpressionColumns) -> str:
    """The request record of a served page as one JSON line, what ``parse_request`` reads back.

    ``member`` and ``context`` are the declared features exactly as received. The server writes one line per
    answer, so the record is built as plain dicts and dumped by orjson, without validation.
    """
    names = list(shown.item)
    metadata = zip(*(shown.item[n] for n in names)) if names else [()] * len(shown.item_id)
    impressions = [
        {"item_id": item_id, "position": position, "row": row, "score": score, "propensity": propensity,
         "explored": explored, "item": {**dict(zip(names, values)), "release_date": release, "age_days": age}}
        for item_id, position, row, score, propensity, explored, values, release, age
        in zip(shown.item_id, shown.position, shown.row, shown.score, shown.propensity, shown.explored, metadata,
               shown.release_date, shown.age_days, strict=True)]
    record = {"request_id": request_id, "ts": format_ts(ts), "model_version": model_version,
              "member": {"member_id": member_id, **member}, "context": dict(context), "impressions": impressions}
    return orjson.dumps(record).decode("utf-8")


def format_ts(ts: dt.datetime) -> str:
    """Formats an aware datetime as the contract's RFC 3339 UTC string (second resolution)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts!r} has no time zone; the log contract needs UTC")
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: Any) -> dt.datetime:
    """Parses the contract's RFC 3339 timestamp (with an explicit offset) to an aware UTC datetime.

    Raises:
      ValueError: saying what was expected.
    """
    return _rfc3339(value).astimezone(dt.UTC)
