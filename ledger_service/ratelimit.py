"""Per-client rate limits of the public endpoints (the resolver, /v1/scan): token buckets in process memory.

A limit "N/minute" lets a client make N requests at once and then one every minute/N. Each worker process keeps its
own buckets, so behind several workers or replicas a client gets up to N per worker: put the same limit on the edge
proxy when that matters. Clients are told apart by their address (uvicorn's --forwarded-allow-ips makes that the
X-Forwarded-For address behind a trusted proxy).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from partledger.errors import ConfigError

_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
MAX_CLIENTS = 100_000  # buckets kept; the least recently seen are dropped (a full bucket is the same as none)


@dataclass(frozen=True)
class Rate:
    burst: int
    per_second: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _LIMIT.match(text)
        if match is None or int(match[1]) < 1:
            raise ConfigError(f"a rate limit reads like '60/minute' (N/second|minute|hour), got {text!r}")
        count = int(match[1])
        return cls(burst=count, per_second=count / _PERIODS[match[2]])


class RateLimiter:
    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: str, cost: float = 1.0) -> float:
        """Takes `cost` tokens from the client's bucket: 0.0 when allowed, else the seconds to wait (Retry-After)."""
        now = self._clock()
        cost = min(cost, float(self.rate.burst))
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.rate.burst), now))
            tokens = min(float(self.rate.burst), tokens + (now - at) * self.rate.per_second)
            if tokens >= cost:
                self._buckets[client] = (tokens - cost, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (cost - tokens) / self.rate.per_second
            if len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
