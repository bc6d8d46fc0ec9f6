"""A fork server for the `partledger` processes that the crash and recovery tests start dozens of times.

A fresh `python -m partledger_cli serve` spends one to three seconds of CPU importing web3, FastAPI and SQLAlchemy
before it does anything; the write-path crash test starts the service some 200 times. The fork server is one Python
process that imports all that once and then forks a child per run: the child sets the run's environment, working
directory and output files, reloads the failpoints (armed from the environment at import), and runs the same
`partledger` entry point with the run's arguments. Each child is a real process of its own, killed with a real
SIGKILL, with nothing shared with the next run but the imported code; the first start of the service in each test
still goes through a fresh interpreter (see the tests), so the plain start-up path stays covered.

Protocol, one JSON object per line: the test writes {"argv", "env", "cwd", "stdin", "stdout", "stderr"} to the server's
stdin and reads {"pid"} back; the server reports every child's end as {"exited": pid, "code": returncode}, with
the code negative for a signal as subprocess does.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from partledger.artifacts import REPO_ROOT

# What the forked commands (serve, index, backup and restore, wallet) import inside their functions: loaded once by
# the server so that no child pays for it.
PRELOAD = (
    "partledger_cli.main", "partledger_cli.stack", "partledger_cli.index", "partledger_cli.backup", "partledger_cli.wallet", "partledger_cli.users",
    "ledger_service.accounts", "argon2",
    "ledger_service.app", "ledger_service.settings", "ledger_service.migrate", "ledger_service.audit_tables", "ledger_service.scan_tables",
    "indexer.runner", "indexer.sink", "indexer.source", "indexer.migrate", "partledger.migrations", "wallets.rotation", "wallets.signer",
    "ledger_service.console", "ledger_service.console.web", "ledger_service.console.admin", "ledger_service.console.audit",
    "ledger_service.console.commands", "ledger_service.console.custody", "ledger_service.console.documents",
    "ledger_service.console.home", "ledger_service.console.maker", "ledger_service.console.scan", "ledger_service.console.signin",
    "ledger_service.console.notifications", "ledger_service.console.operations",
    "web3", "uvicorn",
)  # fmt: skip


class ForkedProcess:
    """A child of the fork server, with the parts of subprocess.Popen's interface that the tests use."""

    def __init__(self, server: ForkServer, pid: int, stdout: Path | None, stderr: Path | None) -> None:
        self.server = server
        self.pid = pid
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.returncode_of(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.server.returncode_of(self.pid, timeout=timeout)
            if code is None:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout or 0)
            self.returncode = code
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server process and a reader thread that collects its children's ends."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._lock = threading.Condition()
        self._codes: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._request_lock = threading.Lock()
        assert self._next_reply(timeout=300).get("ready"), "the fork server did not start"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            with self._lock:
                if "exited" in message:
                    self._codes[message["exited"]] = message["code"]
                else:
                    self._replies.append(message)
                self._lock.notify_all()
        with self._lock:
            self._replies.append({"closed": True})
            self._lock.notify_all()

    def _next_reply(self, timeout: float) -> dict[str, Any]:
        with self._lock:
            if not self._lock.wait_for(lambda: self._replies, timeout=timeout):
                raise RuntimeError("the fork server did not answer")
            reply = self._replies.pop(0)
        if reply.get("closed"):
            raise RuntimeError("the fork server ended")
        return reply

    def returncode_of(self, pid: int, *, timeout: float | None) -> int | None:
        with self._lock:
            self._lock.wait_for(lambda: pid in self._codes, timeout=timeout)
            return self._codes.get(pid)

    def spawn(
        self,
        arguments: list[str],
        *,
        env: dict[str, str],
        cwd: Path = REPO_ROOT,
        stdout: Path | None = None,
        stderr: Path | None = None,
        stdin: Path | None = None,
    ) -> ForkedProcess:
        """Forks a child that runs `partledger ARGUMENTS`; its output is appended to the given files (else dropped),
        its input read from `stdin` (else empty)."""
        request = {
            "argv": ["partledger", *arguments], "env": env, "cwd": str(cwd), "stdin": str(stdin or os.devnull),
            "stdout": str(stdout or os.devnull), "stderr": str(stderr or stdout or os.devnull),
        }  # fmt: skip
        with self._request_lock:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self._next_reply(timeout=60)["pid"]
        return ForkedProcess(self, pid, stdout, stderr)

    def run(
        self, arguments: list[str], *, env: dict[str, str], workdir: Path, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs `partledger ARGUMENTS` to its end, like subprocess.run(capture_output=True, text=True, input=input)."""
        workdir.mkdir(parents=True, exist_ok=True)
        run = f"run-{len(self._codes)}-{os.getpid()}"
        out, err, given = workdir / f"{run}.out", workdir / f"{run}.err", workdir / f"{run}.in"
        out.write_text(""), err.write_text(""), given.write_text(input or "")
        child = self.spawn(arguments, env=env, stdout=out, stderr=err, stdin=given)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
        return subprocess.CompletedProcess(["partledger", *arguments], code, out.read_text(), err.read_text())

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the server side ----------------------------------------------------------------------------------------------


def _run_child(request: dict[str, Any]) -> None:
    """In the forked child: the run's environment, directory and files, then the `partledger` entry point."""
    import importlib

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    stdin = os.open(request.get("stdin", os.devnull), os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own descriptors
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    import partledger.failpoints

    importlib.reload(partledger.failpoints)  # armed from this run's environment
    sys.argv = list(request["argv"])
    code = 0
    try:
        from partledger_cli.__main__ import run

        run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception in a fresh interpreter
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    from partledger.deploy import dev_key_addresses

    dev_key_addresses()  # cached: derived from the dev mnemonic once here, not in each child (a fifth of a second)
    # What the server holds is out of the collector's reach in every child (the service's gc.collect at start would
    # otherwise walk all of it again: another quarter of a second per start).
    gc.collect()
    gc.freeze()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    requests = sys.stdin.buffer.raw  # unbuffered: select() must see every line that is waiting
    pending = b""

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say({"ready": True})
    while True:
        readable, _, _ = select.select([requests, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
        while True:  # every child that ended, whatever woke us
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
        if requests in readable:
            chunk = os.read(requests.fileno(), 65536)
            if not chunk:
                return  # the test closed our stdin: its children are its own to stop
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.close(wake_read)
                    os.close(wake_write)
                    _run_child(request)
                say({"pid": pid})


if __name__ == "__main__":
    serve()
