"""The KServe model server: the ``recommender`` model on kserve's ``ModelServer`` (V1 and V2 REST).

``Recommender.predict`` validates the request, then hands its instances to a
``Batcher``: one funnel call at a time runs on a worker thread, over every
instance that arrived meanwhile, so concurrent requests share one query-tower
and one ranker call (TensorFlow calls cost about the same for 1 or 30 rows)
and the event loop stays free to accept and parse. Bad requests are HTTP 400
(kserve's ``InvalidInput``); a model's fault is a fallback, never a 5xx.

kserve 0.15 binds 0.0.0.0 and parses ``sys.argv`` at import (docs/stack.md): the
server here sets the host itself (127.0.0.1 unless told), runs without gRPC,
and imports kserve only when it starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import gc
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from recloop.serving import metrics
from recloop.serving.funnel import Query
from recloop.serving.request import MAX_INSTANCES, InvalidRequest, parse
from recloop.serving.service import Service

logger = logging.getLogger(__name__)

MODEL_NAME = "recommender"
MAX_BODY_BYTES = 256 * 1024  # 64 instances of a generous size fit in a few kB each

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Batcher:
    """Runs ``compute`` on one worker thread over the queries of every request that is waiting.

    A request never waits for more than the batch running when it arrived: there is
    no timer, batches form only from what queued up behind a running one.
    """

    def __init__(self, compute: Callable[[list[Query], list[dt.datetime]], list[dict[str, Any]]],
                 max_instances: int = 4 * MAX_INSTANCES):
        self.compute = compute
        self.max_instances = max_instances
        self._pending: list[tuple[list[Query], dt.datetime, asyncio.Future]] = []
        self._running = False
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="recloop-funnel")

    async def submit(self, queries: list[Query], now: dt.datetime) -> list[dict[str, Any]]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((queries, now, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, size = [], 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_instances):
                    batch.append(self._pending.pop(0))
                    size += len(batch[-1][0])
                queries = [q for qs, _, _ in batch for q in qs]
                times = [now for qs, now, _ in batch for _ in qs]
                try:
                    out = await loop.run_in_executor(self._pool, self.compute, queries, times)
                except Exception as e:  # noqa: BLE001 - handed to every waiting request
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                start = 0
                for qs, _, future in batch:
                    if not future.done():
                        future.set_result(out[start : start + len(qs)])
                    start += len(qs)
        finally:
            self._running = False

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 400 before anything reads it."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._refuse(send, f"body of {length.decode('latin-1')} bytes")
            return await self.app(scope, receive, send)
        body, more = b"", True  # chunked: read up to the limit here, then replay it
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send, "chunked body")
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        text = f'{{"error":"request body too large: {what}; expected at most {self.max_bytes} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})


def make_model(service: Service) -> Any:
    """The kserve model named ``recommender`` over ``service``."""
    import kserve
    from kserve.errors import InvalidInput

    class Recommender(kserve.Model):
        def __init__(self) -> None:
            super().__init__(MODEL_NAME)
            self.service = service
            self.batcher = Batcher(service.serve)
            self.rows = [r.name for r in service.settings.rows.rows]
            self.ready = True

        def load(self) -> bool:
            self.ready = True  # the fallback serves even when no model loads
            return True

        async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                now = service.clock.request_time(headers)
                if isinstance(payload, bytes | str):  # kserve decodes JSON only when the content type says so
                    try:
                        payload = orjson.loads(payload)
                    except orjson.JSONDecodeError as e:
                        raise InvalidRequest(f"the body is not valid JSON: {e}") from None
                instances = payload.get("instances") if isinstance(payload, dict) else None
                n = min(len(instances), MAX_INSTANCES) if isinstance(instances, list) else 0
                queries = parse(payload, [uuid.uuid4().hex for _ in range(n)], now, self.rows)
            except InvalidRequest as e:
                metrics.REQUESTS.labels(outcome="bad_request").inc()
                raise InvalidInput(str(e)) from None
            try:
                out = await self.batcher.submit(queries, now)
            except Exception:
                metrics.REQUESTS.labels(outcome="error").inc()
                raise
            fell_back = any(r["fallback"] not in (None, "holdout") for r in out)  # the holdout is no failure
            metrics.REQUESTS.labels(outcome="fallback" if fell_back else "ok").inc()
            metrics.LATENCY.observe(time.perf_counter() - started)
            return {"predictions": out}

    return Recommender()


async def _invalid_input(_request: Any, exc: Exception) -> Any:
    """kserve's 400, with its JSON decoding message made plain."""
    from fastapi.responses import ORJSONResponse

    message = str(getattr(exc, "reason", exc))
    if message.startswith("Unrecognized request format: "):
        message = "the body is not valid JSON: " + message.removeprefix("Unrecognized request format: ")
    return ORJSONResponse(status_code=400, content={"error": message})


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets several worker processes share one port (the kernel
    spreads connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and with Nagle on, a response written in two parts waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def freeze_heap() -> None:
    """Takes what is alive now (the loaded models, catalog and tables: a large heap of TensorFlow and numpy
    objects) out of the garbage collector's sight, after collecting once so that a version swapped out is freed
    rather than kept. A full collection then walks only what requests allocated since, so it no longer stops
    every request for ~200 ms several times a minute under load (bench/README.md, "Serving")."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def serve(service: Service, host: str = "127.0.0.1", port: int = 8080, reuse_port: bool = False,
          gc_freeze: bool = True) -> None:
    """Starts the service (first load, reload watch) and runs kserve's ModelServer until SIGTERM/SIGINT;
    ``gc_freeze``: ``freeze_heap`` after every swap."""
    sock = bind(host, port, reuse_port)
    if gc_freeze:
        service.after_swap = freeze_heap
    service.start()
    model = make_model(service)
    metrics.watch_log(lambda: service.log)
    metrics.watch_gc()
    try:
        run([model], sock, host, port, before_serving=freeze_heap if gc_freeze else None)
    finally:
        service.stop()
        model.batcher.close()
        if service.log is not None:
            service.log.close()
        logger.info("server stopped")


def run(models: list[Any], sock: socket.socket, host: str, port: int,
        before_serving: Callable[[], None] | None = None) -> None:
    """kserve's ModelServer over ``models``, REST only, on ``sock`` (bound to ``host``), until SIGTERM/SIGINT;
    ``before_serving`` is called once the application is built (kserve's and FastAPI's objects included)."""
    from kserve import ModelServer
    from kserve.errors import InvalidInput
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer

    class LoopbackModelServer(ModelServer):
        """kserve's ModelServer, REST only, on the host asked for (kserve 0.15 hardcodes 0.0.0.0)."""

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer("kserve.model_server:app", self.dataplane,
                                           self.model_repository_extension, self.http_port,
                                           access_log_format=self.access_log_format, grace_period=self.grace_period)
            self._rest_server.config.host = host
            self._rest_server.config.access_log = False
            rest = self._rest_server

            async def serve_rest() -> None:
                rest.create_application()
                app.add_exception_handler(InvalidInput, _invalid_input)  # after kserve's own, to replace it
                if before_serving is not None:
                    before_serving()
                await rest._server.serve(sockets=[sock])

            self.servers.append(serve_rest())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    app.add_middleware(BodyLimit)
    server = LoopbackModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False, grace_period=10)
    # after kserve configured logging: it logs two timing lines and uvicorn an access line per request
    # (~0.1 ms each at INFO); the same figures are on /metrics
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start(models)
