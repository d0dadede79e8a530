"""What more than one benchmark uses: the simulated calendar, running and measuring the CLI, the reference join, tables.

Every ``bench/*.py`` imports these from here (bench/ is on sys.path when bench/run.py runs), never
another benchmark's module.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

START = dt.date(2026, 1, 5)
"""The simulator's first day (a Monday): week N of a simulated world starts ``7 * N`` days after it."""

WINDOW_S = 24 * 3600
"""Ingest's default attribution window: an event counts for an impression at most this many seconds after it."""

MEASURED = ("import resource, sys\n"
            "from recloop.cli.app import app\n"
            "try:\n    app(sys.argv[2:], prog_name='recloop')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
            "sys.exit(code)\n")
"""``python -c MEASURED RSS_FILE ARGS...`` runs ``recloop ARGS`` and writes its own peak RSS (KiB) to RSS_FILE."""


def run_timed(argv: list[str], ok: tuple[int, ...] = (0,)) -> float:
    """Runs ``argv`` (output discarded); its wall seconds, or RuntimeError where it exits with a code not in ``ok``."""
    t0 = time.perf_counter()
    code = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    if code not in ok:
        raise RuntimeError(f"exit {code}: {' '.join(argv[:3])} ... {' '.join(argv[-6:])}")
    return time.perf_counter() - t0


def ingest_week(logs: str, out: str, week: int, eval_days: int) -> float:
    """``recloop ingest`` of simulated week ``week`` (its last ``eval_days`` as eval) into ``out``; wall seconds."""
    start = START + dt.timedelta(days=7 * week)
    return run_timed(["recloop", "ingest", "--logs", logs, "--start", start.isoformat(),
                      "--end", (start + dt.timedelta(days=6)).isoformat(), "--eval-days", str(eval_days),
                      "--out", out])


def reference_join(logs: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Plain single-process join of one span: the single-core ceiling ingest is compared with (kept fixed).

    It reads the same files with ``json.loads``, joins events to impressions by (request_id, item_id)
    inside the window and counts labels, with no validation, dead letters, split, hygiene or encoding.
    """
    t0 = time.perf_counter()
    shown: dict[tuple[str, str], int] = {}  # (request, item) -> request ts
    labels: dict[tuple[str, str], set[str]] = {}
    for day in _days(start, end):
        for path in sorted(Path(logs, "requests", f"dt={day}").glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as lines:
                for line in lines:
                    try:
                        r = json.loads(line)
                        ts = dt.datetime.fromisoformat(r["ts"]).timestamp()
                        for imp in r["impressions"]:
                            shown[(r["request_id"], imp["item_id"])] = ts
                    except (ValueError, KeyError, TypeError):
                        continue
    for day in _days(start, end + dt.timedelta(days=1)):
        for path in sorted(Path(logs, "events", f"dt={day}").glob("*.jsonl.gz")):
            with gzip.open(path, "rt") as lines:
                for line in lines:
                    try:
                        e = json.loads(line)
                        key = (e["request_id"], e["item_id"])
                        delay = dt.datetime.fromisoformat(e["ts"]).timestamp() - shown.get(key, -1e18)
                        if 0 <= delay <= WINDOW_S:
                            labels.setdefault(key, set()).add(e["event"])
                    except (ValueError, KeyError, TypeError):
                        continue
    seconds = time.perf_counter() - t0
    return {"impressions": len(shown), "labelled": len(labels), "seconds": round(seconds, 2),
            "impressions_per_s": round(len(shown) / seconds)}


def _days(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table of ``rows`` under ``headers``, each cell as ``str`` writes it."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "python": platform.python_version(), "os": platform.platform()}
