"""Loopback ports for the servers the tests start (Anvil, PostgreSQL, uvicorn, the CLI's devnet).

The suite runs on several pytest-xdist workers at once. Asking the kernel for a free port (bind to port 0, close,
hand the number on) races: two workers can be handed the same number before either server binds it. Here each
worker takes ports from a range of its own instead, below the kernel's ephemeral range (32768 and up, where client
connections get their ports), and walks it in order from a point chosen by its process id, so no two workers of a
run ever pick the same port, no port is handed out twice in a run, and two runs on one machine (two developers, or
a developer and CI) start far apart.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST_PORT = 20_000
PORTS_PER_WORKER = 1_500  # 8 workers fit below 32,768


def worker_index() -> int:
    """0 for the main process or pytest-xdist's gw0, 1 for gw1, ..."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def _worker_ports() -> itertools.islice[int]:
    start = FIRST_PORT + worker_index() * PORTS_PER_WORKER
    ports = itertools.cycle(range(start, start + PORTS_PER_WORKER))
    return itertools.islice(ports, os.getpid() * 7919 % PORTS_PER_WORKER, None)


_ports = _worker_ports()


def free_port() -> int:
    """The next port of this worker's range that nothing listens on or holds."""
    for _ in range(PORTS_PER_WORKER):
        port = next(_ports)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port left in this worker's range (worker {worker_index()})")
