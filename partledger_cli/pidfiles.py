"""The embedded stack's background processes (Anvil, the chain keeper, the indexer, the service), found by the pid
files in the devnet's run directory.

A pid file can outlive its process (a power cut, a SIGKILL) and its number can be reused by another program, so a
recorded pid counts as running only when that process is alive (not a zombie) and its command line is the one this
stack started. Linux's /proc tells both; elsewhere only whether the pid exists.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recorded:
    name: str
    path: Path
    pid: int | None  # None: no pid file, or an unreadable one
    alive: bool  # that pid runs the command this stack started

    @property
    def stale(self) -> bool:
        return self.path.exists() and not self.alive


def command_line(pid: int) -> list[str] | None:
    """The process's arguments, or None when it is gone or a zombie."""
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # no /proc: the signal test is all there is
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return []
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":  # the state after the command name: a zombie is not running
            return None
        return [part.decode(errors="replace") for part in (proc / "cmdline").read_bytes().split(b"\0") if part]
    except (OSError, ValueError, IndexError):
        return None


def recorded(path: Path, *markers: str) -> Recorded:
    """The process named in a pid file, alive only if its command line has every one of `markers` among its
    arguments (or ending one: the program's path)."""
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return Recorded(path.stem, path, None, False)
    arguments = command_line(pid)
    alive = arguments is not None and (not arguments or all(any(a == m or a.endswith("/" + m) for a in arguments) for m in markers))
    return Recorded(path.stem, path, pid, alive)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on the port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
