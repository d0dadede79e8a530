"""What KFP will accept, checked before anything reaches it: pipeline parameters typed against a pipeline's
declared inputs, crons as KFP's scheduler reads them, and the recurring-run spec (``manifests/recurring-run.yaml``),
its ``${NAME}`` placeholders filled from the site values kustomize also reads (``manifests/recloop.env``).

``recloop submit`` and ``recloop schedule`` (``cli.kubeflow``) use these; each error names the key and the value.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

VALUES = "manifests/recloop.env"  # the site values: kustomize's configMapGenerator reads the same file
SHORT = {"weekly": "recloop-weekly", "daily": "recloop-daily-skew"}
# the parameters that set a run's span: a one-off run needs them; a recurring run takes it from its scheduled time
SPAN = {"recloop-weekly": ("start", "end"), "recloop-daily-skew": ("day",)}
_TYPES = {"STRING": (str, "a string"), "NUMBER_INTEGER": (int, "an integer"), "NUMBER_DOUBLE": (float, "a number"),
          "BOOLEAN": (bool, "true or false"), "LIST": (list, "a JSON list"), "STRUCT": (dict, "a JSON object")}


class CronError(ValueError):
    """A cron expression KFP's scheduler would refuse or misread; the message names the field and value."""


def pipeline_name(name: str) -> str:
    """The full pipeline name for ``weekly``/``daily`` or a full name; ValueError names the known ones."""
    from recloop.pipelines.definitions import PIPELINES

    full = SHORT.get(name, name)
    if full not in PIPELINES:
        raise ValueError(f"expected one of {', '.join([*SHORT, *PIPELINES])}, got {name!r}")
    return full


# -- cron -----------------------------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS = (("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _DAYS))
_DESCRIPTORS = {"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
                "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
                "@hourly": "0 0 * * * *"}


def kfp_cron(expression: str) -> str:
    """The 6-field cron (second first) that KFP's scheduler reads, from the usual 5-field form or a 6-field one.

    KFP parses crons with robfig/cron v1, in UTC. It takes 5 fields too, but as *second* minute hour
    day-of-month month: the usual ``0 3 * * 1`` would run at minute 3 of every hour in January. So 5 fields
    are read the usual way (minute first) and get a leading ``0``; 6 fields are taken as they are. Fields are
    checked as robfig checks them: numbers in range, names (JAN-DEC, SUN-SAT, any case), ``*``, ``?`` (same
    as ``*``), ``a-b``, lists, steps (``*/n``, ``a-b/n``, ``a/n``). Descriptors (``@weekly``, ``@daily``, ...)
    become their 6-field equivalent, so the Kubeflow UI shows the schedule; ``@every`` is refused (an interval
    from whenever the scheduler started, not a time of day).

    Raises:
      CronError: naming the field, the value and the expression.
    """
    text = " ".join(expression.split())
    if text in _DESCRIPTORS:
        return _DESCRIPTORS[text]
    if text.startswith("@"):
        raise CronError(f"cron: {expression!r} is not a schedule KFP runs at fixed times; write 5 fields "
                        f"(e.g. '0 3 * * 1', Mondays 03:00 UTC) or one of {', '.join(_DESCRIPTORS)}")
    fields = text.split()
    if len(fields) not in (5, 6):
        raise CronError(f"cron: expected 5 fields (minute hour day-of-month month day-of-week, UTC) or 6 "
                        f"(second first), got {len(fields)} in {expression!r}")
    fields = ["0", *fields] if len(fields) == 5 else fields
    for value, field in zip(fields, _FIELDS, strict=True):
        for item in value.split(","):
            _check_cron_item(item, field, expression)
    return " ".join(fields)


def _check_cron_item(item: str, field: tuple[str, int, int, dict[str, int]], expression: str) -> None:
    name, low, high, names = field
    allowed = f"{low}-{high}" + (f" or {min(names, key=names.get)}-{max(names, key=names.get)}" if names else "")

    def fail(why: str) -> CronError:
        return CronError(f"cron field {name}: {why} in {expression!r}")

    def number(text: str) -> int:
        if text.upper() in names:
            return names[text.upper()]
        if not (text.isascii() and text.isdigit()):
            raise fail(f"{text!r} is not a number" + (" or a name" if names else "") + f" ({allowed})")
        if not low <= int(text) <= high:
            raise fail(f"{int(text)} is outside {allowed}")
        return int(text)

    if not item:
        raise fail("an empty list item")
    base, *step = item.split("/")
    if len(step) > 1:
        raise fail(f"{item!r} has more than one '/'")
    if step and not (step[0].isascii() and step[0].isdigit() and int(step[0]) > 0):
        raise fail(f"the step of {item!r} is not a positive number")
    if base in ("*", "?"):
        return
    ends = base.split("-")
    if len(ends) > 2:
        raise fail(f"{item!r} has more than one '-'")
    if number(ends[0]) > number(ends[-1]):
        raise fail(f"the range {base!r} runs backwards")


# -- parameters -----------------------------------------------------------------------------------------------
@functools.cache
def declared_parameters(pipeline: str) -> dict[str, dict[str, Any]]:
    """The pipeline's inputs as its IR declares them: {name: {parameterType, defaultValue?, isOptional?}}."""
    from google.protobuf import json_format

    from recloop.pipelines.definitions import PIPELINES

    spec = PIPELINES[pipeline_name(pipeline)]().pipeline_spec
    return json_format.MessageToDict(spec.root.input_definitions).get("parameters", {})


def typed_arguments(pipeline: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline arguments checked against the pipeline's declared inputs and converted to their types.

    Values may be strings (the command line's ``KEY=VALUE``; INT, DOUBLE, BOOLEAN, LIST and STRUCT parse as
    JSON) or already typed (YAML). An integer is a number, a boolean is not.

    Raises:
      ValueError: naming the parameter: an unknown one (with the known ones) or a value of the wrong type.
    """
    declared, out = declared_parameters(pipeline), {}
    for key, value in raw.items():
        if key not in declared:
            raise ValueError(f"{key!r} is not a parameter of {pipeline_name(pipeline)}; its parameters: "
                             f"{', '.join(sorted(declared))}")
        want, words = _TYPES[declared[key]["parameterType"]]
        if isinstance(value, str) and want is not str:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if want is float and type(value) is int:
            value = float(value)
        if type(value) is not want:
            raise ValueError(f"parameter {key}: expected {words}, got {value!r} ({type(value).__name__})")
        out[key] = value
    return out


def missing_parameters(pipeline: str, arguments: Mapping[str, Any]) -> list[str]:
    """The pipeline's required parameters (no default) that ``arguments`` lacks."""
    return [k for k, v in declared_parameters(pipeline).items() if not v.get("isOptional") and k not in arguments]


# -- the recurring-run spec -----------------------------------------------------------------------------------
class RecurringRunSpec(BaseModel):
    """``manifests/recurring-run.yaml``: a recurring run's schedule (UTC) and parameters."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1)
    experiment: str = Field(min_length=1)
    cron: str
    max_concurrency: int = Field(1, ge=1, le=10)  # the KFP API server's range
    catchup: bool = False
    service_account: str | None = None
    pipeline: str = "recloop-weekly"
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        kfp_cron(value)
        return value

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, value: str) -> str:
        return pipeline_name(value)

    @model_validator(mode="after")
    def _parameters(self) -> RecurringRunSpec:
        if span := [k for k in SPAN[self.pipeline] if self.parameters.get(k) not in (None, "")]:
            raise ValueError(f"parameters: {', '.join(span)} must be absent or empty in a recurring run: each run "
                             f"takes its span from its scheduled time")
        try:
            self.parameters = typed_arguments(self.pipeline, self.parameters)
        except ValueError as e:
            raise ValueError(f"parameters: {e}") from None
        if missing := missing_parameters(self.pipeline, self.parameters):
            raise ValueError(f"parameters: {self.pipeline} needs {', '.join(missing)}")
        from recloop.components.steps import SPAN_CLOCKS  # the steps' own check, at schedule time

        if self.parameters.get("span_clock", SPAN_CLOCKS[0]) not in SPAN_CLOCKS:
            raise ValueError(f"parameters: span_clock: expected one of {', '.join(SPAN_CLOCKS)}, got "
                             f"{self.parameters['span_clock']!r}")
        return self


# -- site values and placeholders -----------------------------------------------------------------------------
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEY = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # Kubernetes' env var name check, as kustomize applies it


def read_values(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as kustomize's configMapGenerator reads an env file, so both see the same values.

    Leading whitespace, blank lines and ``#`` lines are skipped; the value is everything after the first ``=``,
    taken as is (no quotes removed). Stricter than kustomize: a line without ``=`` (kustomize would take the value
    from its own environment) and a key given twice are refused.

    Raises:
      ValueError: naming the file and line.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key) or key in values:
            why = "expected KEY=VALUE" if not sep else "a key given twice" if key in values else "not a variable name"
            raise ValueError(f"{path}:{number}: {why}, got {line!r}")
        values[key] = value
    return values


def fill_placeholders(data: Any, values_path: str | None, where: str) -> Any:
    """``data`` with every ``${NAME}`` in its strings replaced by NAME's value in the values file.

    The file is read only when there is a placeholder to fill.

    Raises:
      ValueError: naming every placeholder the file does not fill (or no file), and ``where``.
    """
    names: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, str):
            names.update(PLACEHOLDER.findall(node))
        elif isinstance(node, dict | list):
            for child in node.values() if isinstance(node, dict) else node:
                collect(child)

    collect(data)
    if not names:
        return data
    values = read_values(values_path) if values_path is not None else {}
    if missing := sorted(names - set(values)):
        source = f"not in {values_path}" if values_path is not None else "no values file given"
        raise ValueError(f"{where}: unfilled placeholder{'s' * (len(missing) > 1)} "
                         f"{', '.join('${' + n + '}' for n in missing)}: {source}")

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return PLACEHOLDER.sub(lambda m: values[m[1]], node)
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return [fill(v) for v in node] if isinstance(node, list) else node

    return fill(data)


def load_spec(path: str, values: str | None = None) -> RecurringRunSpec:
    """Reads and validates a recurring-run spec, its ``${NAME}`` placeholders filled from ``values`` (a
    ``KEY=VALUE`` file, ``manifests/recloop.env``); ValueError names the file and the key or placeholder at fault."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    data = fill_placeholders(data, values, path)
    try:
        return RecurringRunSpec.model_validate(data)
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        where, message = ".".join(map(str, error["loc"])), error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {where!r}; the keys are {', '.join(RecurringRunSpec.model_fields)}"
        elif where and not message.startswith(where):
            message = f"{where}: {message}"
        raise ValueError(f"{path}: {message}") from None


