"""The closed loop on one machine: simulated members, the real server, the real weekly pipeline, week after week.

Week 0 is served by the simulator's heuristic (the bootstrap). Then, every week:
the weekly pipeline (``kfp.local``) runs on the week before, the real ``recloop serve``
(127.0.0.1, simulated clock, watching the registry) hot-reloads what it pushed,
and the simulated members are served by it; the server's request log and the
members' events are the next run's input. A share of members stays on the
heuristic (the server's online holdout), so model vs heuristic is measured in
the same weeks, and the simulator's oracle gives the ceiling. ``demo_page``
turns the result into the weekly table and ``report.html``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from recloop.pipelines import local

Event = Callable[[str], None]
_MODEL_INFO = re.compile(r'^recloop_model_info\{version="([^"]+)"\} 1\.0$', re.MULTILINE)


@dataclass
class DemoConfig:
    """What ``recloop demo`` runs: sizes, the injected incident, the training budget."""

    work: str = "runs/demo"
    weeks: int = 5
    scale: str = "small"
    drifts: list[str] = field(default_factory=lambda: ["unit-bug@2:1"])
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 5)
    holdout: float = 0.2  # sized so a +10% weekly lift has a 95% interval excluding 0 (small scale)
    epochs: int = 4  # both models: the budget that keeps the default demo under 15 minutes on 2 cores
    alertmanager_url: str = ""
    gate_config: str = ""  # the weekly runs' gate config (empty: the defaults)

    def week_start(self, week: int) -> dt.date:
        return self.start + dt.timedelta(weeks=week)


def run(cfg: DemoConfig, say: Event = print) -> dict[str, Any]:
    """Runs the loop for ``cfg.weeks`` weeks; returns (and writes to ``WORK/demo.json``) every week's figures.

    Raises:
      ValueError: fewer than 2 weeks (nothing would be served by a model).
      RuntimeError: the server did not start or the simulator could not be served.
    """
    from recloop.pipelines.definitions import weekly
    from recloop.simulator import Simulation, parse_drift
    from recloop.simulator.policy import HeuristicPolicy
    from recloop.simulator.served import ServedPolicy

    if cfg.weeks < 2:
        raise ValueError(f"--weeks must be at least 2 (week 0 bootstraps, week 1 is the first served), got {cfg.weeks}")
    work = Path(cfg.work).absolute()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    sim_dir, registry, state = work / "sim", work / "registry", work / "state"
    sim = Simulation(out=str(sim_dir), start=cfg.start, scale=cfg.scale, seed=cfg.seed,
                     drifts=[parse_drift(d) for d in cfg.drifts])
    t0 = time.perf_counter()
    say(f"week 0 ({cfg.start}): the simulator's heuristic serves (bootstrap)")
    weeks: list[dict[str, Any]] = [{"week": 0, "served": _timed(lambda: sim.run_week(0, HeuristicPolicy()))}]
    pipeline = weekly("")
    server: _Server | None = None
    try:
        for w in range(1, cfg.weeks):
            first, last = cfg.week_start(w - 1), cfg.week_start(w) - dt.timedelta(days=1)
            say(f"weekly pipeline on week {w - 1} ({first}..{last})")
            result = local.run(pipeline, {
                "logs": str(sim_dir), "registry": str(registry), "run_state": str(state), "start": str(first),
                "end": str(last), "catalog": str(sim_dir), "epochs": cfg.epochs, "seed": cfg.seed,
                "alertmanager_url": cfg.alertmanager_url, "gate_config": cfg.gate_config}, str(work / "runs"),
                on_task=lambda task, st, s: say(f"  {task}: {st.lower()}" + (f" in {s:.0f} s" if s else "")))
            weeks[-1]["run"] = _run_facts(result)
            if server is None:
                server = _Server(work, sim_dir, registry, cfg.week_start(w), cfg.holdout, say)
            version = server.wait_for(_production(str(registry)))
            say(f"week {w} ({cfg.week_start(w)}): served by {version or 'the heuristic fallback'}"
                f" (holdout {cfg.holdout:.0%} on the heuristic)")
            served = _timed(functools.partial(sim.run_week, w, ServedPolicy(server.url)))
            weeks.append({"week": w, "served": served, "version": version})
    finally:
        if server is not None:
            server.stop()
    sim.write_world()
    out = {"config": {**vars(cfg), "start": str(cfg.start)}, "weeks": weeks,
           "server": {"url": server.url, "log": str(server.output)} if server else None,
           "seconds": round(time.perf_counter() - t0, 1), "work": str(work)}
    from recloop.features.logs import write_json

    write_json(str(work / "demo.json"), out)
    return out


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = fn()
    return {**summary, "wall_seconds": round(time.perf_counter() - t0, 1)}


def _production(registry: str) -> str | None:
    from recloop.serving.registry import Registry

    pointer = Registry(registry).pointer()
    return pointer.version if pointer else None


def _run_facts(result: local.LocalRun) -> dict[str, Any]:
    """What the weekly table needs from one pipeline run (artifact metadata, blessing, push record)."""
    import json

    facts: dict[str, Any] = {"run_dir": result.run_dir, "state": result.state, "error": result.error,
                             "seconds": result.seconds, "tasks": result.tasks}
    for task, name in (("ingest", "metrics"), ("validate", "metrics"), ("train", "metrics"), ("push", "metrics")):
        out = result.outputs(task).get("artifacts", {}).get(name)
        facts[task] = out["artifacts"][0]["metadata"] if out else None
    blessing = Path(result.artifact("evaluate", "blessing"), "blessing.json")
    facts["blessing"] = json.loads(blessing.read_text()) if blessing.exists() else None
    pushed = Path(result.artifact("push", "pushed"), "pushed.json")
    facts["pushed"] = json.loads(pushed.read_text()) if pushed.exists() else None
    anomalies = Path(result.artifact("validate", "validation"), "anomalies.json")
    if anomalies.exists():
        verdict = json.loads(anomalies.read_text())
        facts["anomalies"] = [{k: a[k] for k in ("feature", "check", "measure", "distance", "threshold", "blocking")}
                              for a in verdict["anomalies"]]
        facts["alerts"] = verdict.get("alerts")
    return facts


class _Server:
    """``recloop serve`` on a free 127.0.0.1 port: simulated clock, watching the registry, logging into the
    simulation's logs root, with the online holdout."""

    def __init__(self, work: Path, sim_dir: Path, registry: Path, start: dt.date, holdout: float, say: Event):
        from recloop.serving.infra import free_port

        self.port, self.output = free_port(), work / "server.log"
        self.url = f"http://127.0.0.1:{self.port}/v1/models/recommender:predict"
        with open(self.output, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recloop.cli", "serve", "--registry", str(registry), "--catalog",
                 str(sim_dir), "--logs", str(sim_dir), "--port", str(self.port), "--simulated-clock",
                 "--start-time", f"{start}T00:00:00Z", "--holdout", str(holdout), "--poll-s", "0.5"],
                stdout=f, stderr=subprocess.STDOUT)
        say(f"server started on 127.0.0.1:{self.port} (log {self.output})")

    def wait_for(self, version: str | None, timeout_s: float = 180.0) -> str | None:
        """Waits until the server serves ``version`` (its ``recloop_model_info`` gauge); returns it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self._tail()}")
            try:
                found = _MODEL_INFO.findall(httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text)
                if version is None or version in found:
                    return version
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not serve {version} within {timeout_s:.0f} s:\n{self._tail()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # flushes the request log
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _tail(self) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-30:])

