"""A benchmark stopped with SIGTERM (`kill`, `timeout`, a CI job cancelled) stops the chain node and the processes it
started: before, Python's default SIGTERM ended the benchmark alone, and its Anvil went on running and growing (to
14 GB in one case), which slowed and then broke the test runs that followed on the same machine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from partledger.artifacts import REPO_ROOT

pytestmark = [pytest.mark.chain]


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""


def test_a_sigtermed_benchmark_leaves_no_node_or_service_behind() -> None:
    bench = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.relay_bench", "--quick"], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    children: list[psutil.Process] = []
    try:
        parent = psutil.Process(bench.pid)
        while bench.poll() is None:  # until the node and the services run under it
            children = parent.children(recursive=True)
            names = " ".join(map(command_line, children))
            if all(command in names for command in ("anvil", "partledger_cli serve", "partledger_cli relay", "partledger_cli index")):
                break
            time.sleep(0.2)
        assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
        children = parent.children(recursive=True)
        bench.send_signal(signal.SIGTERM)
        code = bench.wait(timeout=120)
        stderr = bench.stderr.read() if bench.stderr else ""
        assert code == 128 + signal.SIGTERM, stderr
        assert "SIGTERM, stopping its node and processes" in stderr
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [command_line(process) for process in alive]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for process in children:  # what a failing run left behind
            try:
                process.kill()
            except psutil.Error:
                pass
