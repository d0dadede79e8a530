"""Predict requests: the V1 ``instances`` payload checked against the log contract, or a clear 400.

An instance is ``{"member_id", "member": {the declared member features}, "context":
{the declared context features}, "rows": [...], "k": 10}`` (by default member
``tenure_days, country, preferred_category`` and context ``hour_of_day, day_of_week,
platform``); member and context use the contract's own field types, so what the
server accepts is exactly what it can log. A nullable feature may be left out, and
``member`` too when all of its features are. Only structurally invalid requests are
refused: an unseen platform or category is served as out-of-vocabulary
(docs/architecture.md, "Serving"). An instance may carry its own ``request_id``
(the client's trace or idempotency key, unique per request: events join on it);
the server draws one otherwise. The id seeds the page's exploration, so the same
request with the same id gets the same page from the same model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from recloop.features.records import Context, NonEmpty, contract_type
from recloop.features.spec import features_for
from recloop.serving.funnel import Query

MAX_INSTANCES = 64
MAX_K = 20
REQUEST_ID = r"^[A-Za-z0-9._:-]+$"  # a client's own id: logged as is, and what seeds the page's random stream


class InvalidRequest(ValueError):
    """A request the server refuses (HTTP 400); the message names the field and what was expected."""


_STRICT = with_config(ConfigDict(strict=True, extra="forbid"))
_MEMBER = [f for f in features_for(group="member") if f.name != "member_id"]  # the id is the instance's own
# the declared member features (a nullable one may be left out or null); the object may be left out when all are
Member = _STRICT(TypedDict("Member", {f.name: contract_type(f) for f in _MEMBER}))  # type: ignore[operator]
_MEMBER_FIELD = Member if any(not f.nullable for f in _MEMBER) else NotRequired[Member]
Instance = _STRICT(TypedDict("Instance", {  # type: ignore[operator]
    "member_id": NonEmpty, "member": _MEMBER_FIELD, "context": Context,
    "request_id": NotRequired[Annotated[str, Field(min_length=1, max_length=128, pattern=REQUEST_ID)]],
    "rows": NotRequired[Annotated[list[NonEmpty], Field(min_length=1)]],
    "k": NotRequired[Annotated[int, Field(ge=1, le=MAX_K)]]}))


_INSTANCES = TypeAdapter(Annotated[list[Instance], Field(min_length=1, max_length=MAX_INSTANCES)])


def parse(payload: Any, request_ids: Sequence[str], now: dt.datetime, rows: Sequence[str]) -> list[Query]:
    """The queries of a V1 predict payload.

    Args:
      payload: the decoded JSON body.
      request_ids: one fresh id per instance (the caller's: server-unique), for instances without their own.
      now: the request time (the server's clock), for the request day.
      rows: the configured row names (a request may ask for a subset).

    Raises:
      InvalidRequest: naming the first wrong field, what was expected and what was received.
    """
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidRequest('expected a JSON object {"instances": [...]}, got '
                             f"{type(payload).__name__}{'' if not isinstance(payload, dict) else ' without instances'}")
    try:
        instances = _INSTANCES.validate_python(payload["instances"])
    except ValidationError as e:
        first = e.errors()[0]
        where = "instances" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        got = f", got {first['input']!r}" if first["type"] != "missing" else ""
        raise InvalidRequest(f"{where}: {first['msg']}{got}") from None
    if len(request_ids) < len(instances):
        raise ValueError(f"{len(instances)} instances but only {len(request_ids)} request ids")
    queries = []
    for i, (instance, request_id) in enumerate(zip(instances, request_ids[: len(instances)], strict=True)):
        unknown = [r for r in instance.get("rows", []) if r not in rows]
        if unknown:
            raise InvalidRequest(f"instances[{i}].rows: unknown row {unknown[0]!r}; expected some of {list(rows)}")
        queries.append(Query(request_id=instance.get("request_id", request_id), member_id=instance["member_id"],
                             member=dict(instance.get("member", {})), context=dict(instance["context"]),
                             day=now.date().toordinal(), k=instance.get("k", 10), rows=instance.get("rows")))
    return queries
