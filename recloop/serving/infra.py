"""Infra validation: does a candidate load and answer in the real server? (TFX's InfraValidator idea.)

``validate`` starts ``recloop serve --model CANDIDATE`` as a subprocess on a free
127.0.0.1 port, on a simulated clock set to the eval data's request times (so
item ages and the catalog day are the data's), waits for it to load and warm,
sends canned requests built from the eval split, checks every answer (HTTP 200,
served by the candidate and not by a fallback, the configured rows, k distinct
catalog items per row, scores and heads in [0, 1], propensities in (0, 1]), that
the request log holds one valid record per answer, and the p99 latency against a
budget; then writes ``infra_blessing.json``. A failure is a verdict, not an
exception: push reads ``passed``.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recloop.features import logs
from recloop.features.catalog import item_columns, read_items
from recloop.features.logged import Logged
from recloop.features.records import RecordError, format_ts, parse_request
from recloop.serving.clock import TIME_HEADER
from recloop.serving.funnel import CONTEXT_FIELDS, MEMBER_FIELDS
from recloop.serving.registry import read_card
from recloop.serving.rows import RowsConfig

BLESSING = "infra_blessing.json"
ACCEPTED_FALLBACKS = (None, "unknown_member")  # a member the model has no history of is still the model


def canned_requests(data: str, n: int) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """Up to ``n`` distinct requests of an ingest output's eval split: (request time, V1 instance)."""
    import tensorflow as tf

    from recloop.features.examples import from_tf_example

    files = sorted(tf.io.gfile.glob(posixpath.join(data, "eval", "*.tfrecord.gz")))
    if not files:
        raise FileNotFoundError(f"{data}/eval/ holds no *.tfrecord.gz: expected an ingest output")
    seen: dict[str, tuple[dt.datetime, dict[str, Any]]] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = from_tf_example(record.numpy())
        if ex["request_id"] in seen:
            continue
        member = {k: ex[k] for k in MEMBER_FIELDS if ex.get(k) is not None}  # a missing one is left out
        context = {k: ex[k] for k in CONTEXT_FIELDS if ex.get(k) is not None}
        seen[ex["request_id"]] = (dt.datetime.fromtimestamp(ex["ts"], dt.UTC), {
            "member_id": ex["member_id"], "member": member, "context": context, "k": 10})
        if len(seen) >= n:
            break
    return sorted(seen.values(), key=lambda r: r[0])


def check_answer(answer: dict[str, Any], instance: dict[str, Any], version: str, rows: list[str],
                 items: set[str]) -> str | None:
    """What is wrong with one instance's answer, or None."""
    if answer.get("model_version") != version:
        return f"served by {answer.get('model_version')!r}, not the candidate {version!r} " \
               f"(fallback {answer.get('fallback')!r})"
    if answer.get("fallback") not in ACCEPTED_FALLBACKS:
        return f"fallback {answer['fallback']!r}"
    got = [r["name"] for r in answer["rows"]]
    if got != rows:
        return f"rows {got}, expected {rows}"
    shown = [i["item_id"] for r in answer["rows"] for i in r["items"]]
    if len(set(shown)) != len(shown):
        return "an item appears twice on the page"
    for row in answer["rows"]:
        if len(row["items"]) != instance["k"]:
            return f"row {row['name']} has {len(row['items'])} items, expected {instance['k']}"
        for item in row["items"]:
            values = [item["score"], *(item["heads"] or {}).values()]
            if item["item_id"] not in items:
                return f"item {item['item_id']!r} is not in the catalog"
            if not all(np.isfinite(v) and 0 <= v <= 1 for v in values):
                return f"item {item['item_id']}: score or head outside [0, 1]: {values}"
            if not 0 < item["propensity"] <= 1:
                return f"item {item['item_id']}: propensity {item['propensity']} outside (0, 1]"
    return None


def validate(model: str, out: str, data: str | None = None, catalog: str | None = None, requests: int = 200,
             p99_ms: float = 250.0, startup_s: float = 120.0, progress: Callable[[str], None] = lambda s: None
             ) -> dict[str, Any]:
    """Runs infra validation of ``model`` and writes ``<out>/infra_blessing.json``.

    Args:
      data: ingest output whose eval split gives the canned requests (default: the model card's
        newest training source).
      catalog: item feed to serve (default: that ingest output's item summaries).
      p99_ms: latency budget for the p99 of the canned requests (one at a time).

    Returns:
      The blessing: ``passed``, ``reason`` (None when passed), counts, latency, and the server's output tail.
    """
    import httpx

    started = time.perf_counter()
    blessing: dict[str, Any] = {"passed": False, "reason": None, "model": model, "version": None,
                                "checked_at": format_ts(dt.datetime.now(dt.UTC)), "requests": 0, "answers_valid": 0,
                                "latency_ms": {}, "budget": {"p99_ms": p99_ms, "startup_s": startup_s}}
    work = tempfile.mkdtemp(prefix="recloop-infra-")
    server_log = os.path.join(work, "server.log")
    proc: subprocess.Popen | None = None
    try:
        card = read_card(model)
        blessing["version"] = version = card["version"]
        data = data or card["data"]["sources"][-1]
        catalog = catalog or posixpath.join(data, "items", "items.jsonl.gz")
        items = set(item_columns(read_items(catalog))["item_id"].tolist())
        canned = canned_requests(data, requests)
        rows = [r.name for r in RowsConfig().rows]
        port = free_port()
        cmd = [sys.executable, "-m", "recloop.cli", "serve", "--model", model, "--catalog", catalog,
               "--logs", os.path.join(work, "logs"), "--port", str(port), "--simulated-clock",
               "--start-time", format_ts(canned[0][0]), "--poll-s", "3600"]
        progress(f"starting the server on 127.0.0.1:{port} with {version}")
        with open(server_log, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/v1/models/recommender:predict"
        with httpx.Client(timeout=30.0) as client:
            first = _wait_ready(client, url, canned[0], proc, startup_s)
            blessing["startup_s"] = round(time.perf_counter() - started, 2)
            problem = check_answer(first, canned[0][1], version, rows, items)
            if problem:
                raise _Failed(f"the first answer is invalid: {problem}")
            for ts, instance in canned[:10]:  # warm the HTTP path; not timed
                _post(client, url, ts, instance)
            progress(f"sending {len(canned)} canned requests")
            latencies = []
            for ts, instance in canned:
                t0 = time.perf_counter()
                status, body = _post(client, url, ts, instance)
                latencies.append((time.perf_counter() - t0) * 1000)
                blessing["requests"] += 1
                if status != 200:
                    raise _Failed(f"HTTP {status} for member {instance['member_id']}: {body}")
                problem = check_answer(body["predictions"][0], instance, version, rows, items)
                if problem:
                    raise _Failed(f"invalid answer for member {instance['member_id']}: {problem}")
                blessing["answers_valid"] += 1
        lat = np.array(latencies)
        blessing["latency_ms"] = {q: round(float(np.percentile(lat, p)), 3) for q, p in
                                  (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}
        _stop(proc)
        logged, blessing["logged"] = _logged(os.path.join(work, "logs"))
        expected = 1 + len(canned[:10]) + len(canned)  # the first answer, the warm-up, the timed ones
        blessing["logged_records"] = logged
        if logged != expected:
            raise _Failed(f"the request log holds {logged} valid records for {expected} answers")
        if blessing["latency_ms"]["p99"] > p99_ms:
            raise _Failed(f"p99 latency {blessing['latency_ms']['p99']:.1f} ms over the budget of {p99_ms} ms")
        blessing["passed"] = True
    except (_Failed, OSError, ValueError, KeyError, RecordError) as e:
        blessing["reason"] = str(e)
    finally:
        if proc is not None:
            _stop(proc)
        blessing["seconds"] = round(time.perf_counter() - started, 2)
        blessing["server_output_tail"] = _tail(server_log)
        logs.write_json(posixpath.join(out, BLESSING), blessing)
    return blessing


class _Failed(Exception):
    pass


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(client: Any, url: str, ts: dt.datetime, instance: dict[str, Any]) -> tuple[int, Any]:
    r = client.post(url, json={"instances": [instance]}, headers={TIME_HEADER: format_ts(ts)})
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def _wait_ready(client: Any, url: str, canned: tuple[dt.datetime, dict[str, Any]], proc: subprocess.Popen,
                startup_s: float) -> dict[str, Any]:
    """Sends the first canned request until the server answers it (it loads and warms first)."""
    import httpx

    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _Failed(f"the server exited with code {proc.returncode} before answering")
        try:
            status, body = _post(client, url, *canned)
        except httpx.TransportError:
            time.sleep(0.25)
            continue
        if status != 200:
            raise _Failed(f"HTTP {status} for the first request: {body}")
        return body["predictions"][0]
    raise _Failed(f"the server did not answer within {startup_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _logged(root: str) -> tuple[int, dict[str, Any]]:
    """The valid request records the server logged, and what it logged per version (``features.logged``)."""
    from recloop.features.examples import ExampleColumns  # TensorFlow: only once the server has answered

    n, columns, figures = 0, ExampleColumns(), Logged()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            for line in logs.read_lines(os.path.join(dirpath, name)):
                columns.add(parse_request(line, name))
                n += 1
    if n:
        figures.add(columns.to_record_batch())
    return n, figures.result()


def _tail(path: str, lines: int = 40) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []
