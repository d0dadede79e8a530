"""``recloop serve`` and ``recloop infra-validate``: the model server and its pre-push check."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Annotated

import typer

from recloop.cli.console import console


def serve(
    catalog: Annotated[str, typer.Option(help="the item feed: a folder with catalog/dt=YYYY-MM-DD/ (the "
                                              "simulator's output), or one items .jsonl[.gz] file")],
    logs: Annotated[str, typer.Option(help="where served requests are logged (any fsspec URI): "
                                           "<logs>/requests/dt=YYYY-MM-DD/<host>-w<worker>-HH.jsonl, appended "
                                           "on a disk; on an object store one object per upload, -HH-1.jsonl, "
                                           "-HH-2.jsonl...")],
    registry: Annotated[str | None, typer.Option(help="model registry URI: serve its CURRENT version and "
                                                      "hot-reload when the pointer moves")] = None,
    model: Annotated[str | None, typer.Option(help="serve this one version folder instead (KServe: "
                                                   "/mnt/models)")] = None,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the server to the network")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="server processes sharing the port (each loads the "
                                                     "model, logs to its own files, has its own /metrics)")] = 1,
    simulated_clock: Annotated[bool, typer.Option(
        help="take each request's time from its x-recloop-time header (the simulator drives the clock)")] = False,
    start_time: Annotated[str | None, typer.Option(
        help="with --simulated-clock: the time before the first request (RFC 3339; default: midnight of "
             "the newest catalog snapshot)")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="softmax temperature over the ranking score "
                                                                    "(default 0: the best item)")] = None,
    catalog_share: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="share of slots drawn uniformly "
                                                                               "from every item the row admits "
                                                                               "(default 0.05)")] = None,
    holdout: Annotated[float, typer.Option(min=0.0, help="share of members (0 <= h < 1, fixed by a hash of the "
                                                          "member id) always served by the heuristic, as an "
                                                          "online control group (model_version heuristic-holdout)")
                       ] = 0.0,
    poll_s: Annotated[float, typer.Option(min=0.1, help="seconds between registry/catalog checks")] = 2.0,
    log_queue: Annotated[int, typer.Option(min=1, help="request log queue bound (records)")] = 10_000,
    log_upload_s: Annotated[float, typer.Option(min=0.1, help="remote --logs: upload the records at least this "
                                                              "often (seconds), the most a lost pod loses")] = 60.0,
    log_upload_bytes: Annotated[int, typer.Option(min=1, help="remote --logs: upload as soon as this many bytes "
                                                              "wait")] = 16 << 20,
    log_spool: Annotated[str | None, typer.Option(help="remote --logs: local folder of the records until upload "
                                                       "(one <host>-w<worker> folder each; default: "
                                                       "<temp dir>/recloop-spool). Put it on a volume that outlives "
                                                       "the container (an emptyDir): a restart uploads what a "
                                                       "killed server left there")] = None,
    runtime: Annotated[str, typer.Option(help="numpy: the query tower and the ranker in numpy, where the "
                                               "export has their plain form and it agrees with the SavedModel "
                                               "(checked at load); tensorflow: always the SavedModels")
                       ] = "numpy",
    gc_freeze: Annotated[bool, typer.Option(help="after each model load, move the loaded heap out of the "
                                                  "garbage collector's sight (full collections then stop "
                                                  "requests for ~1 ms, not ~200 ms)")] = True,
    worker_index: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Serve recommendations with kserve's ModelServer (V1: POST /v1/models/recommender:predict)."""
    if (registry is None) == (model is None):
        raise typer.BadParameter("give exactly one of --registry (hot reload) or --model (one version)",
                                 param_hint="--registry/--model")
    if workers > 1:
        _run_workers(workers)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recloop.features.records import parse_ts
    from recloop.serving.clock import Clock
    from recloop.serving.logspool import default_spool
    from recloop.serving.requestlog import RequestLog
    from recloop.serving.rows import RowsConfig
    from recloop.serving.server import serve as run
    from recloop.serving.service import CatalogMissing, Service
    from recloop.serving.settings import ServeSettings

    if runtime not in ("numpy", "tensorflow"):
        raise typer.BadParameter(f"expected numpy or tensorflow, got {runtime!r}", param_hint="--runtime")
    if holdout >= 1.0:
        raise typer.BadParameter(f"the holdout is a share of members below 1, got {holdout}", param_hint="--holdout")
    rows = RowsConfig(**{k: v for k, v in (("temperature", temperature), ("catalog_share", catalog_share))
                         if v is not None})
    name = os.environ.get("POD_NAME") or socket.gethostname()
    settings = ServeSettings(registry=registry, model=model, catalog=catalog, rows=rows, poll_s=poll_s,
                             holdout=holdout, replica=f"{name}-w{worker_index}", runtime=runtime)
    start = None
    if simulated_clock:
        try:
            start = parse_ts(start_time) if start_time else _newest_snapshot(catalog)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--start-time") from None
    clock = Clock(simulated=simulated_clock, start=start)
    log = RequestLog(logs, name, worker=worker_index, max_queue=log_queue, upload_s=log_upload_s,
                     upload_bytes=log_upload_bytes, spool_dir=default_spool(name, worker_index, log_spool))
    console.print(f"serving on http://{host}:{port}/v1/models/recommender:predict (metrics on /metrics), "
                  f"logging to {logs}")
    try:
        run(Service(settings, clock, log), host=host, port=port, reuse_port=worker_index > 0, gc_freeze=gc_freeze)
    except (CatalogMissing, OSError, ValueError) as e:  # before serving: no feed, port taken, bad feed
        console.print(f"[red]cannot serve:[/red] {e}")
        raise typer.Exit(2) from None


def _newest_snapshot(catalog: str) -> dt.datetime:
    from recloop.features.catalog import snapshot

    path = snapshot(catalog, dt.date.max)
    if path is None:
        raise ValueError(f"no catalog/dt=YYYY-MM-DD/ snapshot under {catalog}")
    day = dt.date.fromisoformat(path.split("dt=")[-1].split("/")[0])
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _run_workers(workers: int) -> None:
    """Starts ``workers`` copies of this command on one SO_REUSEPORT port and forwards SIGTERM/SIGINT."""
    args = sys.argv[1:]
    children = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "recloop.cli", *args, "--workers", "1", "--worker-index", str(i + 1)]
        children.append(subprocess.Popen(cmd))

    def forward(sig: int, _frame: object) -> None:
        for child in children:
            child.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise typer.Exit(max(codes))


def infra_validate(
    model: Annotated[str, typer.Option(help="the candidate version folder (a trainer export)")],
    out: Annotated[str, typer.Option(help="folder for infra_blessing.json")],
    data: Annotated[str | None, typer.Option(help="ingest output with the eval split the canned requests "
                                                  "come from (default: the model's newest training source)")
                    ] = None,
    catalog: Annotated[str | None, typer.Option(help="item feed (default: the ingest output's item summaries)")
                       ] = None,
    requests: Annotated[int, typer.Option(min=1, help="canned requests to send")] = 200,
    p99_ms: Annotated[float, typer.Option(help="latency budget: p99 of the canned requests")] = 250.0,
    startup_s: Annotated[float, typer.Option(help="time allowed to start, load and warm")] = 120.0,
) -> None:
    """Start the real server with a candidate on 127.0.0.1, send canned requests, write infra_blessing.json."""
    from recloop.serving.infra import validate

    blessing = validate(model, out, data=data, catalog=catalog, requests=requests, p99_ms=p99_ms,
                        startup_s=startup_s, progress=lambda s: console.print(s))
    verdict = "[green]passed[/green]" if blessing["passed"] else "[red]failed[/red]"
    console.print(f"infra validation {verdict}: {blessing['reason'] or 'every answer valid'}")
    console.print(json.dumps(blessing["latency_ms"]))
    if not blessing["passed"]:
        raise typer.Exit(1)
