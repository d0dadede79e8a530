"""The serving benchmark: the real server on 127.0.0.1 over a 10k-item catalog, driven by ``hey``.

A model is trained on a `small` simulated week (2,000 items; 2 epochs: latency
does not depend on quality), then served over the item feed of a `default`
world (10,000 items: the 8,000 the model never saw are embedded from their
metadata by the candidate tower, as new releases are). The same request (a
member with history, 4 rows x 10 items) is timed in-process (``Service.serve``:
retrieval over 10k items, ranking of the pool, rows, the response) and end to
end through kserve at concurrency 1, 8 and 32, each run bounded in requests
and time; the server's /metrics give log drops, batch sizes and stage times.

In the one run: the code of ``BEFORE`` in-process (a git worktree, same model,
feed and request); today's in-process with the models in numpy (``serving.plain``,
the default) and with the SavedModels; four servers (numpy; numpy with the heap
left to the garbage collector; the SavedModels likewise; the floor, a do-nothing
kserve model on the same server code answering every request with the same ~7 kB
answer); and a 1M-item feed: the ScaNN index against exact search, and the whole
request in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import plots
from common import START, run_timed, table

CONCURRENCY = ((1, 1000), (8, 4000), (32, 4000))  # (clients, requests)
IN_PROCESS = 500
WARM_UP = 300  # requests before the measured runs
MILLION = 1_000_000
BEFORE = "d359e0a"  # the last commit before the serving work of issue #25: its in-process p50 is "before"
RUNTIMES = ("numpy", "tensorflow")  # serving.plain, and the SavedModels
# the servers driven, by label: their runtime and flags ("before": the SavedModels, the heap left to the collector)
SERVERS = {"numpy": ("numpy", []), "numpy, gc not frozen": ("numpy", ["--no-gc-freeze"]),
           "tensorflow, gc not frozen": ("tensorflow", ["--no-gc-freeze"]), "floor": (None, [])}
NOTES = ("Request: one instance, a member with history, k=10 in each of the 4 rows (40 items, ~7 kB of "
         "JSON). hey keeps each client's connection open. In-process = `Service.serve` in the benchmark "
         "process before the server starts (same model, feed and request). The server batches the "
         "instances of concurrent requests into one funnel call; `instances per batch` is its mean.")


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {f"p{p}": round(float(np.percentile(ms, p)), 2) for p in (50, 95, 99)}


def _metrics(port: int) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    r = httpx.get(f"http://127.0.0.1:{port}/metrics")
    if r.status_code != 200:  # the floor server exports none of recloop's
        return out
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name.startswith("recloop_"):
                key = s.name + "".join(f"[{v}]" for v in s.labels.values())
                out[key] = s.value
    return out


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _feed_10k(out: str) -> str:
    """The item feed of a default-scale world's first week (10,000 items)."""
    from recloop.simulator.run import Simulation

    sim = Simulation(out=out, start=START, scale="default", seed=1)
    sim.world.advance(0, new_category=False)
    sim._write_catalog(0)  # the feed only: no traffic needed
    return out


def _feed(out: str, items: int) -> str:
    """The item feed of a world like the default one with ``items`` items (and a creator per 50 of them)."""
    from dataclasses import replace

    from recloop.simulator.run import Simulation
    from recloop.simulator.world import SCALES, World

    sim = Simulation(out=out, start=START, scale="default", seed=1)
    sim.world = World.create(1, replace(SCALES["default"], items=items, creators=items // 50), START)
    sim._write_catalog(0)
    return out


def _body(model: str, logs: str) -> dict[str, Any]:
    """A request of the small world: a member the model knows, with its logged context."""
    from recloop.features.logs import read_json, read_lines

    profiles = read_json(f"{model}/tables/profiles.json.gz")["members"]
    for path in sorted(Path(logs, "requests").rglob("*.jsonl.gz")):
        for line in read_lines(str(path)):
            r = json.loads(line)
            if r["member"]["member_id"] in profiles:
                member = {k: v for k, v in r["member"].items() if k != "member_id"}
                return {"instances": [{"member_id": r["member"]["member_id"], "member": member,
                                       "context": r["context"], "k": 10}]}
    raise RuntimeError("no request of a known member in the logs")


def _in_process(model: str, feed: str, body: dict[str, Any], runtime: str) -> dict[str, Any]:
    """``Service.serve`` for the benchmark request, one at a time, in this process."""
    from recloop.serving.clock import Clock
    from recloop.serving.request import parse
    from recloop.serving.service import Service
    from recloop.serving.settings import ServeSettings

    class Discard:  # the log line is still built, as in the server; only the write is left out
        def put(self, line: str, ts: dt.datetime) -> bool:
            return True

    service = Service(ServeSettings(model=model, catalog=feed, runtime=runtime), Clock(), Discard())
    service.refresh()
    assert service.served.version.runtime == runtime, service.served.version.runtime
    now = dt.datetime.now(dt.UTC)
    rows = [r.name for r in service.settings.rows.rows]
    times, stages = [], {"retrieval": [], "ranking": [], "rows": []}
    from recloop.serving import funnel

    for i in range(IN_PROCESS + 50):
        queries = parse(body, [f"bench-{i}"], now, rows)
        t0 = time.perf_counter()
        out = service.serve(queries, [now])
        t = time.perf_counter() - t0
        if i >= 50:  # the first calls trace TensorFlow functions
            times.append(t * 1000)
        assert out[0]["fallback"] is None, out[0]["fallback"]
    # stage split of one more batch of the same request
    timer = lambda stage, s: stages[stage].append(s * 1000)
    pools = [len(page.pool.item_id) for i in range(200) for page in funnel.recommend(
        service.served.version, parse(body, [f"s-{i}"], now, rows), service.settings.rows, timer)]
    return {"requests": IN_PROCESS, "ms": _percentiles(np.array(times)),
            "stages_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
            "catalog_items": len(service.served.tables.catalog["item_id"]),
            "pool_size": round(float(np.mean(pools)), 1), "answer": {"predictions": out}}


def _in_process_before(model: str, feed: str, body_path: str, where: str) -> dict[str, Any]:
    """``_in_process`` of the code at ``BEFORE`` (a git worktree, its own bench module), same model, feed and
    request, in this run."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", where, BEFORE], check=True,
                   capture_output=True)
    script = ("import json, sys; sys.path.insert(0, 'bench'); import serving; "
              f"r = serving._in_process({model!r}, {feed!r}, json.load(open({body_path!r}))); "
              "print(json.dumps({k: r[k] for k in ('requests', 'ms', 'stages_p50_ms')}))")
    try:
        out = subprocess.run([sys.executable, "-c", script], cwd=where, env={**os.environ, "PYTHONPATH": where},
                             check=True, capture_output=True, text=True, timeout=600).stdout
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", where], check=True)
    return {"commit": BEFORE, **json.loads(out.strip().splitlines()[-1])}


def _hey(url: str, body: str, clients: int, requests: int) -> dict[str, Any]:
    hey = shutil.which("hey")
    if hey is None:
        raise RuntimeError("hey is not installed (apt-get install hey)")
    # bounded in requests (-n) and time (10 s per request, 300 s per run; hey's -z would override -n)
    cmd = [hey, "-n", str(requests), "-c", str(clients), "-t", "10", "-m", "POST", "-T", "application/json",
           "-D", body, "-o", "csv", url]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    wall = time.perf_counter() - t0
    rows = [line.split(",") for line in out.splitlines()[1:] if line]
    ms = np.array([float(r[0]) * 1000 for r in rows])
    status = [r[6] for r in rows]
    return {"clients": clients, "requests": len(rows), "errors": sum(s != "200" for s in status),
            "wall_s": round(wall, 2), "throughput_rps": round(len(rows) / wall, 1), "ms": _percentiles(ms)}


def bench_serving() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        logs, ingest, model = f"{tmp}/sim", f"{tmp}/ingest", f"{tmp}/model"
        run_timed(["recloop", "simulate", "--out", logs, "--scale", "small", "--weeks", "2", "--seed", "1"])
        week1 = START + dt.timedelta(days=7)
        run_timed(["recloop", "ingest", "--logs", logs, "--start", str(week1), "--end",
                   str(week1 + dt.timedelta(days=6)), "--out", ingest])
        run_timed(["recloop", "train", "--data", ingest, "--out", model, "--epochs", "2", "--seed", "0"])
        feed = _feed_10k(f"{tmp}/feed")
        body = _body(model, logs)
        body_path = f"{tmp}/body.json"
        Path(body_path).write_text(json.dumps(body))
        in_process, runs, rss, sent = {}, {}, {}, 0
        print(f"  in-process, {BEFORE}", file=sys.stderr)
        before = _in_process_before(model, feed, body_path, f"{tmp}/before")
        for runtime in RUNTIMES:
            print(f"  in-process, {runtime}", file=sys.stderr)
            in_process[runtime] = _in_process(model, feed, body, runtime)
        print("  a million items", file=sys.stderr)
        million = _million(model, body, f"{tmp}/feed-1m")
        answer = f"{tmp}/answer.json"
        Path(answer).write_text(json.dumps(in_process["numpy"].pop("answer")))
        in_process["tensorflow"].pop("answer")
        for i, (label, (runtime, flags)) in enumerate(SERVERS.items()):
            cmd = [sys.executable, str(Path(__file__).resolve()), "floor", answer] if runtime is None else [
                sys.executable, "-m", "recloop.cli", "serve", "--model", model, "--catalog", feed, "--logs",
                f"{tmp}/served-{i}", "--runtime", runtime, *flags]
            runs[label], rss[label] = _load_runs(cmd, body, body_path, in_process[runtime or "numpy"],
                                                 f"{tmp}/server-{i}.txt", label)
            if runtime is not None:
                sent += sum(r["requests"] for r in runs[label]) + WARM_UP + 1
        written = sum(1 for f in Path(tmp).glob("served-*/**/*.jsonl") for _ in open(f))  # noqa: SIM115
    return {"in_process": in_process, "before": before, "runs": runs, "server_peak_rss_mib": rss, "million": million,
            "log_lines_on_disk": written, "requests_answered": sent, "cores": os.cpu_count()}


def _million(model: str, body: dict[str, Any], out: str) -> dict[str, Any]:
    """Retrieval over a 1M-item feed: the ScaNN index against exact search (recall@200, latency, build time,
    memory) on the model's own item vectors and on two harder sets, and the whole request in-process."""
    import scann  # noqa: F401  (imported before timing anything)
    import tensorflow as tf

    from recloop.features.catalog import candidate_inputs, embed, item_columns, read_items, snapshot
    from recloop.serving import ann

    _feed(out, MILLION)
    catalog = item_columns(read_items(snapshot(out, dt.date.max)))
    tower = tf.saved_model.load(f"{model}/candidate_tower").signatures["serving_default"]
    started = time.perf_counter()
    vectors = embed(tower, candidate_inputs(catalog, dt.date.today().toordinal()))
    embed_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    sets = {"the model's item vectors": vectors,
            # a trained id embedding spreads items that share metadata: the served model knows 2k of the ids
            "with per-item noise (0.25 sd)": vectors + rng.normal(0, 0.25 * vectors.std(axis=0).mean(),
                                                                    vectors.shape).astype(np.float32),
            "gaussian (no structure)": rng.normal(size=vectors.shape).astype(np.float32)}
    rows, k, n = np.arange(len(vectors)), 200, 200
    searches = []
    for name, v in sets.items():
        queries = v[rng.choice(len(v), n, replace=False)] + rng.normal(0, 0.1 * v.std(), (n, v.shape[1])).astype(
            np.float32)
        before = _rss_mib()
        index = ann.build(rows, v, k, min_items=1)
        index_mib = _rss_mib() - before
        exact = ann.build(rows, v, k, min_items=len(v) + 1)
        found, recall = index.top(queries, k), []
        for i in range(n):  # the 200th best score: an item tied with it counts as found
            scores = v @ queries[i]
            kth = np.partition(scores, len(v) - k)[len(v) - k]
            recall.append((scores[found[i]] >= kth - 1e-5).mean())
        recall = np.array(recall)
        searches.append({"vectors": name, "recall_at_200": round(float(recall.mean()), 4),
                         "recall_min": round(float(recall.min()), 4), "build_s": round(index.build_s, 1),
                         "scann_ms": _percentiles(_each(index.top, queries, k)),
                         "exact_ms": _percentiles(_each(exact.top, queries[:50], k)),
                         "index_mib": round(index_mib), "vectors_mib": round(v.nbytes / 2**20)})
        del index
        print(f"    {name}: recall {searches[-1]['recall_at_200']}", file=sys.stderr)
    params = ann.parameters(len(vectors), k)
    whole = _in_process(model, out, body, "numpy")
    whole.pop("answer")
    return {"items": len(vectors), "embed_s": round(embed_s, 1), "parameters": params, "searches": searches,
            "in_process": whole}


def _rss_mib() -> float:
    import gc

    gc.collect()
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _each(search: Any, queries: np.ndarray, k: int) -> np.ndarray:
    """Milliseconds of one search per query, one query at a time (as a request makes them)."""
    search(queries[:1], k)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(q[None, :], k)
        times.append(1000 * (time.perf_counter() - t0))
    return np.array(times)


def _load_runs(cmd: list[str], body: dict[str, Any], body_path: str, in_process: dict[str, Any], out: str,
               label: str) -> tuple[list[dict[str, Any]], float]:
    """Starts a server (``cmd`` + ``--port``), drives it with hey at each concurrency, stops it; its runs
    and peak RSS."""
    from recloop.serving.infra import free_port

    port = free_port()
    server_out = open(out, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=server_out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/models/recommender:predict"
    runs = []
    try:
        _wait(url, body, proc)
        _hey(url, body_path, 4, WARM_UP)  # warm the HTTP path
        for clients, requests in CONCURRENCY:
            before = _metrics(port)
            run = _hey(url, body_path, clients, requests)
            time.sleep(0.5)  # let the log writer drain before reading its counters
            after = _metrics(port)
            batches = _delta(after, before, "recloop_batch_instances_count")
            run |= {
                "log_dropped": _delta(after, before, "recloop_log_dropped_total"),
                "log_written": _delta(after, before, "recloop_log_written_total"),
                "fallbacks": sum(_delta(after, before, k) for k in after if k.startswith("recloop_fallbacks_total")),
                "mean_batch": round(_delta(after, before, "recloop_batch_instances_sum") / max(batches, 1), 2),
                "server_ms_mean": round(1000 * _delta(after, before, "recloop_request_seconds_sum")
                                        / max(_delta(after, before, "recloop_request_seconds_count"), 1), 2),
                "ratio_p50_to_in_process": round(run["ms"]["p50"] / in_process["ms"]["p50"], 2),
                "gc_full_collections": _delta(after, before, "recloop_gc_pause_seconds_count[2]"),
                "gc_pause_ms": round(1000 * sum(_delta(after, before, f"recloop_gc_pause_seconds_sum[{g}]")
                                                for g in range(3)), 1)}
            runs.append(run)
            print(f"  {label} c={clients}: p50 {run['ms']['p50']} ms, p95 {run['ms']['p95']} ms, p99 "
                  f"{run['ms']['p99']} ms, {run['throughput_rps']} rps, gc {run['gc_pause_ms']} ms "
                  f"({run['gc_full_collections']} full)", file=sys.stderr)
        return runs, _peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        server_out.close()


def floor_server(answer_path: str, port: int) -> None:
    """The floor: a kserve model that does nothing but answer every request with ``answer_path``'s JSON, on
    the same server code (``serving.server.run``: REST only, 127.0.0.1) as ``recloop serve``."""
    import kserve

    from recloop.serving.server import bind, run

    answer = json.loads(Path(answer_path).read_text())

    class Floor(kserve.Model):
        def __init__(self) -> None:
            super().__init__("recommender")
            self.ready = True

        async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> dict[str, Any]:
            return answer

    run([Floor()], bind("127.0.0.1", port), "127.0.0.1", port)


def _wait(url: str, body: dict[str, Any], proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            r = httpx.post(url, json=body, timeout=30)
            if r.status_code == 200:
                assert r.json()["predictions"][0]["fallback"] is None
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not answer within 180 s")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _plot(f: dict[str, Any], path: Path) -> None:
    with plots.figure(path) as ax:
        for label, runs in f["runs"].items():
            clients = [run["clients"] for run in runs]
            for q, style in (("p50", "-"), ("p99", ":")):
                ax.plot(clients, [run["ms"][q] for run in runs], marker="o", linestyle=style, label=f"{label} {q}")
        ax.axhline(f["in_process"]["numpy"]["ms"]["p50"], color="grey", linestyle="--", label="in-process p50, numpy")
        ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms",
               title="serving latency under load (hey, loopback)")
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.legend(fontsize=7, loc="upper left")


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a serving result (and its plot, ``results/serving.png``)."""
    f = r["figures"]
    ip, fast, slow = f["in_process"], f["in_process"]["numpy"], f["in_process"]["tensorflow"]
    _plot(f, results / "serving.png")
    before = f["before"]
    compute = [[name, x["ms"]["p50"], x["ms"]["p95"], x["ms"]["p99"],
                *(x["stages_p50_ms"][k] for k in ("retrieval", "ranking", "rows"))]
               for name, x in ((f"before ({before['commit']})", before), *ip.items())]
    rows = [[label, run["clients"], f"{run['requests']:,}", run["errors"], run["throughput_rps"], run["ms"]["p50"],
             run["ms"]["p95"], run["ms"]["p99"], round(run["ms"]["p99"] / run["ms"]["p95"], 2),
             run["ratio_p50_to_in_process"] if label != "floor" else "",
             run["mean_batch"] if label != "floor" else "", int(run["log_dropped"])]
            for label, runs in f["runs"].items() for run in runs]
    c1 = {label: runs[0] for label, runs in f["runs"].items()}
    return "\n".join([
        "## Serving: the real server under load (10k-item catalog, loopback)",
        "",
        (f"One request: retrieval over {fast['catalog_items']:,} items, ranking of a pool of {fast['pool_size']} "
         "items (200 retrieved, the context's popular and the catalog-wide draws), 4 rows x 10, the response. "
         "`numpy`: the query tower and the ranker evaluated from their plain form (`serving.plain`, checked "
         "against the SavedModels at load); `tensorflow`: the SavedModels, as served before. Both in this one "
         f"run, {ip['numpy']['requests']} requests each."),
        "",
        table(["in-process", "p50 ms", "p95 ms", "p99 ms", "retrieval p50", "ranking p50", "rows p50"], compute),
        "",
        (f"In-process p50 now / before: **{round(fast['ms']['p50'] / before['ms']['p50'], 2)}x** (numpy), "
         f"{round(slow['ms']['p50'] / before['ms']['p50'], 2)}x (tensorflow: the same rows and exploration, the "
         "SavedModels). `before` is the code of that commit (a git worktree), on the same model, feed and request "
         "in this run."),
        "",
        table(["server", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "p99 / p95",
               "p50 / in-process", "instances per batch", "log drops"], rows),
        "",
        "![latency per concurrency](results/serving.png)",
        "",
        (f"Tail at 32 clients, p99 / p95: {_tail(f, 'numpy')} with the loaded heap frozen (`gc.freeze()` after "
         f"each load, the default), {_tail(f, 'numpy, gc not frozen')} without; full garbage collections during "
         f"that run: {_gc(f, 'numpy')} and {_gc(f, 'numpy, gc not frozen')} (`recloop_gc_pause_seconds`)."),
        "",
        (f"At one client the end-to-end p50 is {c1['numpy']['ms']['p50']} ms with numpy "
         f"({c1['numpy']['ratio_p50_to_in_process']}x its in-process p50), {c1['tensorflow, gc not frozen']['ms']['p50']} ms with "
         f"tensorflow, and {c1['floor']['ms']['p50']} ms for the floor (a kserve model that does nothing but "
         "return the same answer, on the same server code): the HTTP, kserve and JSON cost every request pays. "
         "Beyond one client the extra latency is queueing (p50 follows clients / throughput, Little's law), "
         "as the server batches concurrent instances into one funnel call on 2 cores shared with the load tool."),
        "",
        (f"Log lines on disk after the servers stopped: {f['log_lines_on_disk']:,} for "
         f"{f['requests_answered']:,} answered requests. Server peak RSS (MiB): "
         + ", ".join(f"{k} {v}" for k, v in f["server_peak_rss_mib"].items())
         + f". {f['cores']} cores: the load tool and the server share them."),
        "",
        _million_section(f["million"], fast),
        "",
        r["notes"],
    ])


def _tail(f: dict[str, Any], label: str) -> str:
    run = f["runs"][label][-1]
    return f"{round(run['ms']['p99'] / run['ms']['p95'], 2)}x ({run['ms']['p95']} / {run['ms']['p99']} ms)"


def _gc(f: dict[str, Any], label: str) -> str:
    run = f["runs"][label][-1]
    return f"{int(run['gc_full_collections'])} ({run['gc_pause_ms']} ms of pauses in all)"


def _million_section(m: dict[str, Any], small: dict[str, Any]) -> str:
    p = m["parameters"]
    rows = [[s["vectors"], s["recall_at_200"], s["recall_min"], s["scann_ms"]["p50"], s["scann_ms"]["p99"],
             s["exact_ms"]["p50"], s["build_s"], s["index_mib"], s["vectors_mib"]] for s in m["searches"]]
    whole = m["in_process"]
    return "\n".join([
        f"### A million items: retrieval through a ScaNN index ({m['items']:,} items)",
        "",
        (f"The same model over a {m['items']:,}-item feed (embedded by its candidate tower in {m['embed_s']} s). "
         f"Index: {p['num_leaves']} leaves, {p['num_leaves_to_search']} searched, the best {p['reorder']} "
         "re-scored exactly (`serving/ann.py`); recall@200 = the share of the index's 200 items scoring at least "
         "the exact 200th score, over 200 queries (item vectors plus noise), one query per search as a request "
         "makes it. The served model knows 2,000 item ids, so most of its 1M vectors come from metadata alone "
         "and many tie; the two other sets are harder: per-item noise on them, and gaussian vectors with no "
         "structure at all."),
        "",
        table(["vectors", "recall@200", "worst query", "index p50 ms", "index p99 ms", "exact p50 ms",
               "build s", "index MiB", "vectors MiB"], rows),
        "",
        (f"The whole request in-process over the 1M feed: p50 **{whole['ms']['p50']} ms** = "
         f"{round(whole['ms']['p50'] / small['ms']['p50'], 2)}x the 10k-item p50 of the same run "
         f"({small['ms']['p50']} ms); stage p50s "
         + ", ".join(f"{k} {v} ms" for k, v in whole["stages_p50_ms"].items())
         + ". Retrieval's stage holds the index search and the catalog-wide exploration, whose admitted sets stay "
           "lazy (`rows.Parts`: parts of the released catalog grouped by category and creator)."),
    ])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a serving result's figures: in-process, then each concurrency."""
    ip, before = f["in_process"], f["before"]
    return (f"**Serving** (10k items, loopback, hey): in-process p50 {ip['numpy']['ms']['p50']} ms "
            f"({round(ip['numpy']['ms']['p50'] / before['ms']['p50'], 2)}x {before['commit']}'s "
            f"{before['ms']['p50']} ms, same run); 1M items {f['million']['in_process']['ms']['p50']} ms; "
            + "; ".join(f"{x['clients']} clients {x['throughput_rps']} req/s, p50 {x['ms']['p50']} ms, "
                        f"p99 {x['ms']['p99']} ms, {x['errors']} errors" for x in f["runs"]["numpy"])
            + f"; {f['log_lines_on_disk']:,} log lines for {f['requests_answered']:,} answers.")


if __name__ == "__main__":  # the floor server: serving.py floor ANSWER_JSON --port PORT
    floor_server(sys.argv[2], int(sys.argv[4]))
