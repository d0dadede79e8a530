"""Each task's CPU and memory on a cluster (Kubernetes requests and limits), and the YAML file that overrides them
(``recloop compile|submit|schedule --resources FILE``).

The defaults come from bench/README.md ("Pipeline scaling"; raw figures in bench/results/scaling.json, 2-core
AMD EPYC, 2026-12-06): the peak RSS of ingest and validate at 1x/2x/4x default-scale weeks, and of train on 1
and 8 default weeks ("Training windows", bench/results/window.json). Memory request: the stage's 1x peak + 25%,
limit: its 4x (train: 8 weeks) peak + 25%, each rounded up to a whole GiB; a weekly run (one week) is within 1x.
check, evaluate, infra-validate, push and monitor are not in the benchmark: each is sized from a measured stage
it cannot exceed, shown by one run of both pipelines at `small` scale under kfp.local
(peak RSS of each task's process, 2026-12-06, not in bench/): ingest 866, validate 1,176, check 428, train
1,298, evaluate 1,135, infra-validate 829 (the larger of the task and its server), push 428, monitor 710 MiB.
CPU: every stage was measured on 2 cores; one-process stages request 1 core with a limit of 2, train 2 and 4.
kfp.local ignores these settings (without a warning), so local runs are unaffected.

The file maps a task to the fields it changes; the others keep their defaults::

    train:
      memory_request: 8Gi
      memory_limit: 24Gi
    ingest:
      cpu_limit: "4"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator, model_validator

# KFP's own checks (PipelineTask.set_cpu_* / set_memory_*), so a bad value fails here, naming the task and field
_CPU = re.compile(r"([0-9]*[.])?[0-9]+m?")
_MEMORY = re.compile(r"([0-9]+)(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _cores(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _bytes(memory: str) -> int:
    number, unit = _MEMORY.fullmatch(memory).groups()  # type: ignore[union-attr]  # validated first
    return int(number) * _UNITS[unit or ""]


class Resources(BaseModel):
    """One task's Kubernetes CPU (cores, or millicores with ``m``) and memory (bytes, or with K/Ki...E/Ei)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    @field_validator("cpu_request", "cpu_limit", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = format(value, "g")  # YAML's `cpu_limit: 2` or `0.5`
        if not isinstance(value, str) or not _CPU.fullmatch(value) or _cores(value) <= 0:
            raise ValueError(f"expected cores above 0 such as 2, 0.5 or 500m, got {value!r}")
        return value

    @field_validator("memory_request", "memory_limit", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # bytes
        if not isinstance(value, str) or not _MEMORY.fullmatch(value) or _bytes(value) <= 0:
            raise ValueError(f"expected a size above 0 such as 4Gi or 512Mi, got {value!r}")
        return value

    @model_validator(mode="after")
    def _request_within_limit(self) -> Resources:
        # Kubernetes refuses a pod whose request is above its limit: say so at compile time instead
        if _cores(self.cpu_request) > _cores(self.cpu_limit):
            raise ValueError(f"cpu_request: {self.cpu_request} is more than cpu_limit {self.cpu_limit}")
        if _bytes(self.memory_request) > _bytes(self.memory_limit):
            raise ValueError(f"memory_request: {self.memory_request} is more than memory_limit {self.memory_limit}")
        return self


# task (the IR's task name, both pipelines) -> defaults; "1x/4x": bench/results/scaling.json's peak_rss_mib
DEFAULTS: dict[str, Resources] = {
    # Beam DirectRunner in_memory, one worker; 1x (2 weeks) 2,245 MiB -> 3Gi, 4x (8 weeks) 5,461 MiB -> 7Gi
    "ingest": Resources(cpu_request="1", cpu_limit="2", memory_request="3Gi", memory_limit="7Gi"),
    # TFDV in memory, flat with the data: 1x 1,266 MiB -> 2Gi, 4x 1,278 MiB -> 2Gi
    "validate": Resources(cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="2Gi"),
    # reads one anomalies.json (0.2 s): the interpreter and recloop's imports, 428 MiB -> 1Gi
    "check": Resources(cpu_request="250m", cpu_limit="1", memory_request="1Gi", memory_limit="1Gi"),
    # TF/Keras on every core (the bench's 2; more only speeds it up); streams its examples, so its peak follows
    # the window slowly (bench/results/window.json, 2026-12-07): 1 week 1,398 MiB -> 2Gi, 8 weeks 2,121 -> 3Gi
    "train": Resources(cpu_request="2", cpu_limit="4", memory_request="2Gi", memory_limit="3Gi"),
    # below train on the same span (1,135 vs 1,298 MiB at small scale); sized when train held its examples (its
    # 1x peak then, 3,399 MiB -> 5Gi) and kept: the weekly run's evaluate task peaked at 1,292 MiB on one default
    # week (bench/results/weekly.json; 1,910 beside the trainer that held its examples), and its 4x is not measured
    "evaluate": Resources(cpu_request="1", cpu_limit="2", memory_request="5Gi", memory_limit="5Gi"),
    # the real server (bench/README.md "Serving": 924 MiB peak, 10k items) beside the task (at most 829 MiB at
    # small scale): 1,753 MiB -> 3Gi
    "infra-validate": Resources(cpu_request="1", cpu_limit="2", memory_request="3Gi", memory_limit="3Gi"),
    # reads two blessings, moves the registry pointer, patches the InferenceService: like check, 428 MiB -> 1Gi
    "push": Resources(cpu_request="250m", cpu_limit="1", memory_request="1Gi", memory_limit="1Gi"),
    # validate's TFDV work on one day of serving logs (710 vs validate's 1,176 MiB at small scale): validate's
    "monitor": Resources(cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="2Gi"),
}


_FILE = TypeAdapter(dict[str, dict[str, Any]])  # task -> {field: value}


def load_resources(path: str) -> dict[str, Resources]:
    """The resources table: DEFAULTS with the file's overrides (``task: {field: value}``; an empty file: none).

    Raises:
      ValueError: naming the file, the task and the field: an unknown task or field, a malformed value, a
        request above its limit.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    table = dict(DEFAULTS)
    try:
        for task, given in _FILE.validate_python({} if data is None else data).items():
            if task not in DEFAULTS:
                raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(DEFAULTS)}")
            try:
                table[task] = Resources.model_validate({**DEFAULTS[task].model_dump(), **given})
            except ValidationError as e:
                raise ValueError(f"{task}: {_message(e)}") from None
    except ValidationError as e:
        raise ValueError(f"{path}: {_message(e)}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return table


def _message(e: ValidationError) -> str:
    error = e.errors(include_url=False)[0]
    where, message = ".".join(map(str, error["loc"])), error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown field {where!r}; the fields are {', '.join(Resources.model_fields)}"
    return f"{where}: {message}" if where else message
