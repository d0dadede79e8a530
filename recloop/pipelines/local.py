"""Runs a recloop pipeline on this machine with ``kfp.local`` and leaves a run folder the report can read.

``kfp.local``'s SubprocessRunner runs each lightweight component in a subprocess
of the current environment and writes ``<root>/<pipeline>-<timestamp>/<task>/<output>``.
Its log (every component's output) goes to ``<run>/kfp-local.log``; ``run.json``
adds what the folder alone does not say (parameters, each task's state and wall
time, the error of a failed task) and ``pipeline.yaml`` is the compiled IR, which
names every output's artifact type (what the Kubeflow UI renders).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Anomalies|Refused)): (.+)$")


@dataclass
class LocalRun:
    """What one local run did: its folder, state, tasks (state, seconds) and the first error."""

    run_dir: str
    pipeline: str
    state: str  # SUCCEEDED | FAILED
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def outputs(self, task: str) -> dict[str, Any]:
        """A task's ``executor_output.json`` (output parameters and artifact metadata), or {}."""
        path = Path(self.run_dir, task, "executor_output.json")
        return json.loads(path.read_text()) if path.exists() else {}

    def artifact(self, task: str, name: str) -> str:
        """The path of a task's output artifact."""
        return str(Path(self.run_dir, task, name))


class _Tee(io.TextIOBase):
    """Writes kfp.local's output to the run log and tells ``on_task`` when a task starts or ends."""

    def __init__(self, log: io.TextIOBase, on_line: Callable[[str], None]):
        self.log, self.on_line, self.buffer = log, on_line, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.on_line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def run(pipeline_func: Any, arguments: Mapping[str, Any], pipeline_root: str,
        on_task: Callable[[str, str, float | None], None] = lambda task, state, seconds: None) -> LocalRun:
    """Runs ``pipeline_func`` with ``arguments`` under kfp.local; never raises for a failed task.

    Args:
      pipeline_root: where kfp.local makes the run folder (created).
      on_task: called with ``(task, "RUNNING", None)`` when a task starts and ``(task, state, seconds)``
        when it ends, for progress.

    Returns:
      The run; ``state`` FAILED names the failed task in ``tasks`` and its exception in ``error``.
    """
    from kfp import compiler, local

    root = Path(pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    tasks: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    started: dict[str, float] = {}

    real_stdout = sys.stdout  # progress goes to the terminal, kfp.local's output to the run log

    def tell(task: str, state: str, seconds: float | None) -> None:
        with contextlib.redirect_stdout(real_stdout):
            on_task(task, state, seconds)

    def on_line(line: str) -> None:
        if m := _STARTED.search(line):
            started[m[1]] = time.perf_counter()
            tasks[m[1]] = {"state": "RUNNING", "seconds": None}
            tell(m[1], "RUNNING", None)
        elif m := _FINISHED.search(line):
            state = "SUCCEEDED" if m[2] == "SUCCESS" else "FAILED"
            seconds = round(time.perf_counter() - started.get(m[1], time.perf_counter()), 2)
            tasks[m[1]] = {"state": state, "seconds": seconds}
            tell(m[1], state, seconds)
        elif m := _ERROR.match(line.strip()):
            errors.append(f"{m[1]}: {m[2]}")

    t0 = time.perf_counter()
    log_path = root / f".kfp-local-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S%f}.log"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    failure = None
    with log_path.open("w") as log, contextlib.redirect_stdout(_Tee(log, on_line)), warnings.catch_warnings():
        # kfp.local warns that the components name an image it does not use: expected, they run here instead
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        try:
            pipeline_func(**arguments)
        except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            failure = _ANSI.sub("", str(e))
    new = sorted(set(root.iterdir()) - before - {log_path}, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"kfp.local made no run folder under {root}; see {log_path}")
    run_dir = new[-1]
    log_path.rename(run_dir / "kfp-local.log")
    name = pipeline_func.pipeline_spec.pipeline_info.name
    result = LocalRun(str(run_dir), name, "FAILED" if failure else "SUCCEEDED", tasks,
                      (errors[-1] if errors else failure) if failure else None, round(time.perf_counter() - t0, 2))
    compiler.Compiler().compile(pipeline_func, str(run_dir / "pipeline.yaml"))
    for task in pipeline_func.pipeline_spec.root.dag.tasks:
        tasks.setdefault(task, {"state": "NOT_RUN", "seconds": None})
    (run_dir / "run.json").write_text(json.dumps({
        "pipeline": name, "parameters": dict(arguments), "state": result.state, "error": result.error,
        "seconds": result.seconds, "tasks": tasks, "log": "kfp-local.log"}, indent=2, default=str) + "\n")
    return result
