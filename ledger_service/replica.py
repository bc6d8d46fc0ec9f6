"""The verify tier's read replica: a PostgreSQL streaming replica (hot standby) of the indexer's mirror that the
public verification reads (the resolver, /v1/scan, product and lot pages, recall notices) go to instead of the
primary, when PARTLEDGER_INDEX_REPLICA_URL names one.

Read side of the flow, beside the mirror's primary (settings.index_db_url): the indexer writes the primary, and the
replica follows it by WAL streaming. Every other read (members' queries, pre-checks, the scan keeper) stays on the
primary. A verdict must never be wrong because the replica is behind or gone, so a read goes to the replica only
while it is usable, and otherwise to the primary:

- A monitor thread (started and stopped with the verify tier, ledger_service.routes.resolver.ScanDesk) checks the
  replica every `index_replica_check_interval` seconds, on a connection of its own: reachable, still a standby, and
  how far behind. Requests never ping it.
- Its lag is an upper bound on how old what it shows may be: the primary's WAL position is read first; a replica
  that has replayed up to it at the check is caught up as of that moment. Otherwise the lag is the smaller of the
  time since it was last caught up and the time since the last transaction it replayed was committed
  (pg_last_xact_replay_timestamp()). At a request, the time since the check is added: a replica whose replay
  stopped right after the check is that much further behind.
- Usable: checked recently, reachable, in recovery (a promoted replica has left the primary's history), its lag
  within `index_replica_max_lag`, and the circuit closed.
- A read that fails on the replica (connection refused or dropped, a query cancelled by recovery, anything the
  driver raises) runs again on the primary at once, and opens the circuit: reads go to the primary for
  BREAKER_SECONDS, and after that as soon as a check finds the replica usable again. A failure on the primary too
  is the resolver's 503 with Retry-After, as without a replica.

/v1/health reports the replica (ReadReplica.health) and the metrics carry its lag and the reads that went to the
primary instead (ledger_service.metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ledger_service import metrics
from ledger_service.settings import ServiceSettings
from partledger.db import make_engine
from partledger.errors import ConfigError

log = logging.getLogger("partledger.service.replica")
T = TypeVar("T")

BREAKER_SECONDS = 5.0  # reads stay on the primary this long after a read failed on the replica
CONNECT_TIMEOUT_SECONDS = 2  # a replica host that does not answer at all (refused connections fail at once)
APPLICATION_NAME = "partledger-verify"  # pg_stat_activity on the replica: the verify tier's connections
MONITOR_APPLICATION_NAME = "partledger-verify-monitor"

_REPLICA_POSITION = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= CAST(:primary AS pg_lsn), "
    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
)


@dataclass(frozen=True)
class ReplicaCheck:
    """What the last check found."""

    at: float  # time.monotonic() when it started
    wall: float  # time.time() then
    reachable: bool
    lag: Optional[float]  # seconds; None: unknown (not a standby, or never caught up and nothing replayed)
    message: str  # why it is not usable; "" when it is


NOT_CHECKED = ReplicaCheck(at=float("-inf"), wall=0.0, reachable=False, lag=None, message="not checked yet")


class ReadReplica:
    """The mirror's read replica, its monitor and its circuit breaker (see the module's docstring)."""

    def __init__(self, url: str, *, primary: Engine, max_lag: float, check_interval: float) -> None:
        self.primary = primary
        self.max_lag = max_lag
        self.check_interval = check_interval
        connect = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        # No ping at checkout: a pooled connection the replica dropped fails its read, which then runs on the primary.
        self.engine = make_engine(url, pool_pre_ping=False, connect_args={**connect, "application_name": APPLICATION_NAME})
        self._monitor_engine = make_engine(url, pool_size=1, max_overflow=0, connect_args={**connect, "application_name": MONITOR_APPLICATION_NAME})
        self._check = NOT_CHECKED
        self._caught_up_at: Optional[float] = None  # monotonic time the replica last had all the primary had
        self._open_until = float("-inf")  # the circuit: open (reads on the primary) until then
        self._failure = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- reads ---------------------------------------------------------------------------------------------

    def read(self, function: Callable[[Engine], T]) -> T:
        """function(engine) on the replica when it is usable, else on the primary; on the primary again when it
        fails on the replica."""
        reason = self._unusable(time.monotonic())
        if reason is None:
            try:
                return function(self.engine)
            except DBAPIError as exc:
                self._trip(exc)
                reason = "failed"
        metrics.count_replica_fallback(reason)
        return function(self.primary)

    def _unusable(self, now: float) -> Optional[str]:
        """None when reads may go to the replica now; else the reason they go to the primary (a metric's label)."""
        check = self._check
        if now < self._open_until:
            return "circuit_open"
        if not check.reachable or check.lag is None or now - check.at > 3 * self.check_interval + CONNECT_TIMEOUT_SECONDS:
            return "unavailable"
        if check.lag + (now - check.at) > self.max_lag:
            return "lagging"
        return None

    def _trip(self, exc: DBAPIError) -> None:
        self._open_until = time.monotonic() + BREAKER_SECONDS
        self._failure = _first_line(exc.orig if exc.orig is not None else exc)
        self.engine.dispose()  # its other pooled connections are likely as dead (a restart): the next reads connect anew
        log.warning("a read failed on the mirror's replica; reads go to the primary for %.0f s: %s", BREAKER_SECONDS, self._failure)

    # --- the monitor ---------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="replica-monitor", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.engine.dispose()
        self._monitor_engine.dispose()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.check_interval)

    def check(self) -> ReplicaCheck:
        """Checks the replica now (see the module's docstring), and keeps what it found for the reads."""
        started, wall = time.monotonic(), time.time()
        try:
            with self.primary.connect() as conn:
                primary_lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar()
        except DBAPIError as exc:  # the replica may still serve; its lag grows from when it was last caught up
            log.warning("cannot read the primary's WAL position for the replica's lag: %s", _first_line(exc.orig or exc))
            primary_lsn = None
        try:
            with self._monitor_engine.connect() as conn:
                in_recovery, caught_up, since_replay = conn.execute(_REPLICA_POSITION, {"primary": primary_lsn}).one()
        except DBAPIError as exc:
            found = ReplicaCheck(started, wall, reachable=False, lag=None, message=f"unreachable: {_first_line(exc.orig or exc)}")
            if self._check.reachable:
                log.warning("the mirror's replica is down; the verify tier reads the primary: %s", found.message)
                self.engine.dispose()  # its pooled connections died with it: reads after its return connect anew
            self._check = found
            return found
        if not in_recovery:
            found = ReplicaCheck(started, wall, reachable=True, lag=None, message="not a standby (promoted, or not a replica): not used")
        else:
            if caught_up:
                self._caught_up_at = started
            now = time.monotonic()
            bounds = [now - self._caught_up_at] if self._caught_up_at is not None else []
            if since_replay is not None:
                bounds.append(max(float(since_replay), 0.0))
            lag = round(min(bounds), 3) if bounds else None
            if lag is None:
                message = "lag unknown: nothing replayed yet"
            elif lag > self.max_lag:
                message = f"{lag:.1f} s behind the primary, more than the {self.max_lag:g} s allowed"
            else:
                message = ""
            found = ReplicaCheck(started, wall, reachable=True, lag=lag, message=message)
        if not self._check.reachable and found.reachable:
            log.info("the mirror's replica answers again (lag %s s)", found.lag)
        self._check = found
        return found

    # --- health --------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """/v1/health's `replica`: configured, reachable, serving (the verify tier reads it now), lag."""
        now = time.monotonic()
        check = self._check
        reason = self._unusable(now)
        if reason is None:
            message = ""
        elif reason == "circuit_open":
            message = f"reads on the primary for {self._open_until - now:.1f} s more, after a read failed on the replica: {self._failure}"
        elif check.message:
            message = check.message
        elif check.reachable and check.lag is not None and reason == "lagging":
            message = f"{check.lag + now - check.at:.1f} s behind the primary, more than the {self.max_lag:g} s allowed"
        else:
            message = "no recent check"
        return {
            "configured": True,
            "reachable": None if check is NOT_CHECKED else check.reachable,
            "serving": reason is None,
            "lag_seconds": check.lag,
            "max_lag_seconds": self.max_lag,
            "checked_at": None if check is NOT_CHECKED else check.wall,
            "message": message,
        }


NOT_CONFIGURED: dict[str, Any] = {
    "configured": False, "reachable": None, "serving": False, "lag_seconds": None, "max_lag_seconds": None, "checked_at": None, "message": "",
}  # fmt: skip


def read_replica(settings: ServiceSettings, primary: Engine) -> Optional[ReadReplica]:
    """The replica the settings name (ServiceSettings.index_replica_url), or None."""
    url = settings.index_replica_url
    if url is None:
        return None
    if primary.dialect.name != "postgresql" or not url.startswith("postgresql"):
        raise ConfigError("PARTLEDGER_INDEX_REPLICA_URL needs the mirror on PostgreSQL and a PostgreSQL streaming replica of it")
    return ReadReplica(url, primary=primary, max_lag=settings.index_replica_max_lag, check_interval=settings.index_replica_check_interval)


def read_mirror(replica: Optional[ReadReplica], primary: Engine, function: Callable[[Engine], T]) -> T:
    """function(engine) on the replica when there is one and it is usable, else on the primary."""
    return function(primary) if replica is None else replica.read(function)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
