"""Prometheus metrics (prometheus-client) and the request id: GET /metrics in Prometheus's text format, on the service
(create_app) and on the public verification tier (create_public_app).

Counted where it happens, in the process where it happens:
- partledger_http_request_duration_seconds{method, route, status}: every HTTP answer and its time, by route template
  (the router's path with its {parameters}; the resolver's addresses by their key qualifiers, `/01/{gtin}/21/{serial}`;
  `<unmatched>` for a path no route has), never by raw path: a client cannot make new series. Its `_count` is the
  requests by route and status.
- partledger_commands_accepted_total{kind}; partledger_command_latency_seconds{kind, stage}: from a command's
  acceptance to its first transaction sent (stage submitted), to all of it confirmed (confirmed), to its block in the
  indexer's mirror (mirrored), or to its rejection (rejected); each observed once per command, by the process that
  moved it (ledger_service.command_stages). Relayed requests under kind "relay.<function>", at their verdict
  (confirmed or failed), observed by the relayer once it recorded it.
- partledger_scans_total{source, verdict} (every recorded verification of a label), partledger_clone_flags_total{kind}.
- partledger_index_replica_fallbacks_total{reason}: verify-tier reads sent to the mirror's primary although a read
  replica is configured (ledger_service.replica); and, from the replica's last check, partledger_index_replica_up,
  partledger_index_replica_serving and partledger_index_replica_lag_seconds.
Read from SQL at each scrape (ledger_service.key_figures), so that every worker answers the same, and the submitter
and the indexer may run as processes of their own: partledger_outbox_items{state},
partledger_outbox_oldest_open_seconds, partledger_submitter_in_flight_transactions{signer}, partledger_chain_head_block,
partledger_indexer_block, partledger_indexer_lag_blocks, partledger_indexer_lag_seconds, partledger_indexer_healthy,
partledger_indexer_reorgs_total, partledger_indexer_reorged_blocks_total (the indexer counts them in its state row),
partledger_audit_log_unanchored_entries, partledger_audit_log_anchoring_lag_seconds.

Several worker processes (`partledger serve --workers N`, or any server running N copies of the app): with
PROMETHEUS_MULTIPROC_DIR set, each process writes its counts into files in that directory, and a scrape answered by
any of them adds them all up (prometheus_client's multiprocess mode). The directory must be empty when the processes
start; `partledger serve --workers N` makes a fresh one when none is set.

Who may scrape: operators, not the internet. With settings.metrics_token, a scrape must send `Authorization: Bearer
<token>` (else 401 metrics_unauthorized); without it, only a client on this host: a loopback address and no
X-Forwarded-For or Forwarded header (a proxy in front would add one), else 403 metrics_local_only.
settings.metrics = False takes the route away.

The request id: every HTTP answer carries X-Request-ID, the client's own (1 to 128 characters of letters, digits
and `._:/+=-`) or a new one; the request's log lines carry it (partledger.jsonlog.REQUEST_ID), and so does every
command it sends into the outbox, and the submitter's lines about that command's transactions.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger_service import key_figures
from ledger_service.errors import Forbidden, Unauthorized
from partledger.jsonlog import REQUEST_ID

if TYPE_CHECKING:  # deps imports the outbox, which counts its commands here
    from ledger_service.deps import Services

log = logging.getLogger("partledger.http")
METRICS_PATH = "/metrics"
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
ROUTE_KEY = "partledger.route"  # a route template put in the scope by what answers in front of the router (the resolver)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_ID_HEADER = b"x-request-id"
_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=\-]{1,128}")
_RESOLVER_TEMPLATES = (  # the resolver's addresses (ledger_service.routes.resolver), by their key qualifiers
    (re.compile(r"/01/[^/]+/21/[^/]+/?"), "/01/{gtin}/21/{serial}"),
    (re.compile(r"/01/[^/]+/10/[^/]+/?"), "/01/{gtin}/10/{lot}"),
    (re.compile(r"/01/[^/]+/?"), "/01/{gtin}"),
)
RESOLVER_OTHER = "/{gs1 digital link}"

HTTP_SECONDS = Histogram(
    "partledger_http_request_duration_seconds", "HTTP requests answered, by route template and status, and their time (request to last byte)",
    ("method", "route", "status"), buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)  # fmt: skip
COMMANDS_ACCEPTED = Counter("partledger_commands_accepted", "Commands accepted into the outbox (answered 202)", ("kind",))
COMMAND_SECONDS = Histogram(
    "partledger_command_latency_seconds", "Seconds from a command's acceptance to a stage: submitted (first transaction sent), confirmed, "
    "mirrored (its block in the indexer's mirror) or rejected", ("kind", "stage"),
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)  # fmt: skip
SCANS = Counter("partledger_scans", "Verifications of a label recorded as scans, by source and verdict", ("source", "verdict"))
CLONE_FLAGS = Counter("partledger_clone_flags", "Clone-detection flags raised on scans, by kind", ("kind",))
REPLICA_FALLBACKS = Counter(
    "partledger_index_replica_fallbacks", "Verify-tier reads that went to the mirror's primary instead of its replica, by why: failed (on the "
    "replica, then run on the primary), circuit_open (a read failed there moments ago), unavailable (down or not checked), lagging", ("reason",),
)  # fmt: skip
_HTTP_CHILDREN: dict[tuple[str, str, int], Any] = {}  # labels() costs as much as the observation: the series, once looked up


def resolver_template(path: str) -> str:
    """The route template a resolver address is counted under: its key qualifiers, never their values."""
    for pattern, template in _RESOLVER_TEMPLATES:
        if pattern.fullmatch(path):
            return template
    return RESOLVER_OTHER


def route_template(scope: Scope) -> str:
    """The template of the route that answered (see the module's docstring)."""
    marked = scope.get(ROUTE_KEY)
    if marked is not None:
        return str(marked)
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is not None:
        return f"{path}/{{path}}" if isinstance(route, Mount) else str(path)
    mounted = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]  # a Mount (static files) adds its prefix
    return f"{mounted}/{{path}}" if mounted else UNMATCHED


def count_replica_fallback(reason: str) -> None:
    REPLICA_FALLBACKS.labels(reason).inc()


def count_scan(*, source: str, verdict: str, flags: list[str]) -> None:
    SCANS.labels(source, verdict).inc()
    for kind in flags:
        CLONE_FLAGS.labels(kind).inc()


# --- the request: its id, its metrics, its log line ------------------------------------------------------------


class RequestMetrics:
    """Pure ASGI, outermost: the request id (X-Request-ID, echoed), the request's histogram observation and its log
    line (logger partledger.http, `request_log` on). An exception that escapes the app is counted as the 500 that
    the server answers for it."""

    def __init__(self, app: ASGIApp, *, request_log: bool = True) -> None:
        self.app = app
        self.request_log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = route_template(scope)
            key = (method, route, status)
            child = _HTTP_CHILDREN.get(key)
            if child is None:
                child = _HTTP_CHILDREN[key] = HTTP_SECONDS.labels(method, route, str(status))
            child.observe(seconds)
            if self.request_log and log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %d", method, scope.get("path", ""), status,
                    extra={"event": "http_request", "method": method, "route": route, "path": scope.get("path", ""), "status": status,
                           "duration_ms": round(seconds * 1000, 3)},
                )  # fmt: skip
            REQUEST_ID.reset(token)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _CLIENT_REQUEST_ID.fullmatch(value) else None
    return None


# --- the scrape -----------------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or os.environ.get(MULTIPROC_VARIABLE.lower()) or None


def follow_multiprocess_mode() -> None:
    """prometheus_client picks in-memory or file-backed values once, when it is imported; a process forked from one
    that imported it before PROMETHEUS_MULTIPROC_DIR was set (a preloading server) would keep counting in memory,
    unseen by the scrape. Called when an app is built, before anything is counted (every metric here has labels,
    and a labelled child gets its value object on first use)."""
    wanted = multiprocess_dir() is not None
    if wanted != (values.ValueClass.__name__ == "MmapedValue"):
        values.ValueClass = values.get_value_class()


class _ThisProcess:
    """The default registry's metrics (this process's counts, its CPU and memory) inside a scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class Figures:
    """The figures read from SQL at each scrape (ledger_service.key_figures), as metric families."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services
        now = time.time()
        with services.service_engine.connect() as conn:
            outbox = key_figures.outbox_figures(conn, now=now)
            audit = key_figures.audit_figures(conn, now=now)
        with services.index_engine.connect() as conn:
            indexer = key_figures.indexer_figures(conn, chain_id=services.manifest.chain_id, head=services.head, block_time=services.block_time, now=now)
        items = GaugeMetricFamily("partledger_outbox_items", "Outbox items not final (the outbox's depth), by state", labels=["state"])
        for state, count in outbox.items.items():
            items.add_metric([state], count)
        yield items
        yield GaugeMetricFamily("partledger_outbox_oldest_open_seconds", "Age of the oldest outbox item not final (0: none)", value=outbox.oldest_open_age)
        in_flight = GaugeMetricFamily("partledger_submitter_in_flight_transactions", "Transactions signed and not yet mined, per signer key", labels=["signer"])
        for signer, count in outbox.in_flight.items():
            in_flight.add_metric([signer], count)
        yield in_flight
        if indexer.head is not None:
            yield GaugeMetricFamily("partledger_chain_head_block", "The chain's head block (the node's; else the head the indexer saw last)", value=indexer.head)
        if indexer.block is not None:
            yield GaugeMetricFamily("partledger_indexer_block", "The last block in the indexer's mirror", value=indexer.block)
        if indexer.lag_blocks is not None:
            yield GaugeMetricFamily("partledger_indexer_lag_blocks", "Blocks the mirror is behind the chain's head", value=indexer.lag_blocks)
        if indexer.lag_seconds is not None:
            yield GaugeMetricFamily("partledger_indexer_lag_seconds", "How long the oldest block not in the mirror has existed (0: caught up)", value=indexer.lag_seconds)
        yield GaugeMetricFamily("partledger_indexer_healthy", "1 when the indexer reports itself healthy", value=1 if indexer.healthy else 0)
        yield CounterMetricFamily("partledger_indexer_reorgs", "Chain reorganisations the indexer rolled back", value=indexer.reorgs)
        yield CounterMetricFamily("partledger_indexer_reorged_blocks", "Blocks those reorganisations took away", value=indexer.reorged_blocks)
        yield GaugeMetricFamily("partledger_audit_log_unanchored_entries", "Audit log entries whose batch is not confirmed on chain", value=audit.unanchored)
        yield GaugeMetricFamily("partledger_audit_log_anchoring_lag_seconds", "Age of the oldest audit log entry not anchored on chain (0: none)", value=audit.lag_seconds)
        if services.replica is not None:  # the verify tier's read replica of the mirror (ledger_service.replica), as this process sees it
            replica = services.replica.health()
            yield GaugeMetricFamily("partledger_index_replica_up", "1 when the mirror's read replica answered its last check", value=1 if replica["reachable"] else 0)
            yield GaugeMetricFamily("partledger_index_replica_serving", "1 while the verify tier reads the replica (up, within its lag bound)", value=1 if replica["serving"] else 0)
            if replica["lag_seconds"] is not None:
                yield GaugeMetricFamily("partledger_index_replica_lag_seconds", "How far the mirror's replica was behind its primary at its last check", value=replica["lag_seconds"])


def scrape(services: Services) -> bytes:
    """The text a scrape answers: every process's counts (multiprocess mode) or this process's, and the SQL figures."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory is not None:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ThisProcess())  # type: ignore[arg-type]
    registry.register(Figures(services))  # type: ignore[arg-type]
    return generate_latest(registry)


def check_scraper(request: Request, token: str | None) -> None:
    """Who may scrape (see the module's docstring)."""
    if token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise Unauthorized("/metrics needs the operators' metrics token (Authorization: Bearer ...)", code="metrics_unauthorized")
        return
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers or not _is_loopback(request.client.host if request.client else ""):
        raise Forbidden("/metrics answers clients on this host only; set PARTLEDGER_METRICS_TOKEN to scrape from elsewhere", code="metrics_local_only")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install_metrics(app: FastAPI, services: Services) -> None:
    """GET /metrics (unless settings.metrics is off) and the RequestMetrics middleware, added last so that it sees
    every request first and every answer last."""
    settings = services.settings
    follow_multiprocess_mode()
    if settings.metrics:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None

        @app.get(METRICS_PATH, include_in_schema=False)
        def metrics(request: Request) -> Response:
            check_scraper(request, token)
            return Response(scrape(services), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    app.add_middleware(RequestMetrics, request_log=settings.request_log)


def observe_latency(kind: str, stage: str, seconds: float) -> None:
    COMMAND_SECONDS.labels(kind, stage).observe(max(seconds, 0.0))


def count_accepted(kind: str) -> None:
    COMMANDS_ACCEPTED.labels(kind).inc()

