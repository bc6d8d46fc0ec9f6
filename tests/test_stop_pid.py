"""Stopping a detached process by pid (`partledger down`, `devnet down`): a process that has exited is stopped, even
while its pid lingers as a zombie that only its parent may reap."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from partledger.anvil import running, stop_pid

# A parent that starts a child, prints the child's pid, and never reaps it: the child's exit leaves a zombie, as a
# detached stack process leaves one until the machine's init gets to it.
PARENT = """
import signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
signal.pause()
"""


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


Start = Callable[[str], "tuple[subprocess.Popen[str], int]"]


@pytest.fixture
def parent() -> Iterator[Start]:
    """Starts a parent running `child_code` in its child; the parent and the child's pid."""
    processes: list[subprocess.Popen[str]] = []

    def start(child_code: str) -> tuple[subprocess.Popen[str], int]:
        process = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        return process, int(process.stdout.readline())

    yield start
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.timeout(120)
def test_a_process_that_exited_counts_as_stopped_while_its_zombie_waits_for_its_parent(parent: Start) -> None:
    owner, pid = parent("import signal; signal.pause()")
    assert running(pid)

    # Its SIGTERM ends it at once; its parent never reaps it. A wait for the pid to vanish would last until the
    # SIGKILL at the timeout (and then still find the zombie): the test's own timeout is shorter than that one.
    assert stop_pid(pid, timeout=600) is True
    assert _state(pid) == "Z" and owner.poll() is None
    assert not running(pid)
    assert stop_pid(pid, timeout=600) is True  # a zombie takes signals without complaint: stopped already
    owner.kill()
    owner.wait()
    assert not running(pid)  # reaped with its parent's end (adopted by init), or gone


@pytest.mark.timeout(120)
def test_a_process_that_ignores_sigterm_is_killed_at_the_timeout(parent: Start) -> None:
    _, pid = parent("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)")
    # the child ignores SIGTERM only once it has run its first line; wait for it to get past the interpreter's start
    wait_for_handler(pid, signal.SIGTERM)
    assert stop_pid(pid, timeout=0.5) is True
    assert not running(pid)


def wait_for_handler(pid: int, number: int) -> None:
    """Until the process ignores signal `number` (its SigIgn mask in /proc)."""
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        if ignored & (1 << (number - 1)):
            return
        time.sleep(0.01)


def test_a_pid_that_runs_nothing_is_not_running() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert not running(finished.pid)
    assert stop_pid(finished.pid) is False
