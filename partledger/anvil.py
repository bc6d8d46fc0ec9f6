"""Starting and stopping an Anvil node: the devnet's chain and the integration tests' chain. Never production."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from partledger.artifacts import REPO_ROOT
from partledger.errors import DevnetError


@dataclass(frozen=True)
class AnvilConfig:
    """How to run Anvil. Defaults mimic a permissioned network: free gas, a high block gas limit."""

    host: str = "127.0.0.1"
    port: int = 8545
    chain_id: int = 31337
    block_time: float | None = None  # None: a block per transaction (automine)
    gas_limit: int = 1_000_000_000
    gas_price: int = 0
    hardfork: str = "prague"
    accounts: int = 10
    state_path: Path | None = None  # --state: loaded at start when it exists, dumped on exit (SIGTERM)
    load_state: Path | None = None  # --load-state: the chain a former node saved (save_chain_state, unpacked)
    prune_history: int | None = None  # keep the state of only this many recent blocks in memory (a long-running node)
    # Automine that also mines a block every sweep_seconds with whatever ready transactions are left (--mixed-mining).
    # Anvil's automine can miss a transaction that becomes ready while several of one sender's arrive at once
    # (foundry-rs/foundry#10122, still in 1.7.1): a SIGKILL test found nonce 147 "already imported" and unmined for
    # 300 s while the service sent it again every 5 s. Not with block_time, whose interval mining drains the pool.
    sweep_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def arguments(self) -> list[str]:
        arguments = [
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--gas-limit", str(self.gas_limit),
            "--gas-price", str(self.gas_price),
            "--base-fee", str(self.gas_price),
            "--hardfork", self.hardfork,
            "--accounts", str(self.accounts),
        ]  # fmt: skip
        if self.gas_price == 0:
            arguments.append("--disable-min-priority-fee")
        if self.block_time is not None:
            arguments += ["--block-time", str(self.block_time)]
        elif self.sweep_seconds is not None:
            arguments += ["--mixed-mining", "--block-time", str(self.sweep_seconds)]
        if self.state_path is not None:
            arguments += ["--state", str(self.state_path)]
        if self.load_state is not None:
            arguments += ["--load-state", str(self.load_state)]
        if self.prune_history is not None:
            arguments += ["--prune-history", str(self.prune_history)]
        return arguments


def anvil_binary() -> str:
    """The Anvil binary from node_modules (npm @foundry-rs/anvil ships it in a package per platform), else one on
    PATH. The binary itself, not the package's Node.js launcher: the launcher costs a Node.js process per node, and
    its pid is not the pid of the process that serves the port."""
    system = {"linux": "linux", "darwin": "darwin"}.get(platform.system().lower(), platform.system().lower())
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "")
    packaged = REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{machine}" / "bin" / "anvil"
    if packaged.exists():
        return str(packaged)
    local = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise DevnetError("anvil not found: run `npm ci` (it installs @foundry-rs/anvil)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, *, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DevnetError(f"anvil exited with code {process.returncode} before answering at {url}")
        try:
            reply = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
            if reply.ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise DevnetError(f"anvil did not answer at {url} within {timeout:.0f}s")


class AnvilNode:
    """A running Anvil process."""

    def __init__(self, config: AnvilConfig, process: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.process = process

    @property
    def url(self) -> str:
        return self.config.url

    @classmethod
    def start(cls, config: AnvilConfig, *, log_path: Path | None = None, detach: bool = False) -> AnvilNode:
        """Starts Anvil and waits until it answers; `detach` lets it outlive this process (the devnet)."""
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                [anvil_binary(), *config.arguments()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        node = cls(config, process)
        try:
            wait_until_ready(config.url, process=process)
        except DevnetError:
            node.stop()
            raise
        return node

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """Stops a detached process by pid (SIGTERM, then SIGKILL after `timeout`); False when no such process was
    running. It has stopped once it is a zombie: a detached process is not ours to reap, and its pid stays until
    whoever adopted it does (this machine's init reaped orphans about every 2 s, so that `partledger down`, waiting
    for each pid to vanish, took 8 s for four processes that had exited in under one)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    if running(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_GRACE_SECONDS  # cannot be refused; the kernel takes a moment to deliver it
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    return True


KILL_GRACE_SECONDS = 5.0


def running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie has); without /proc, whether the pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] not in "ZX"  # the state after the command name


# --- the devnet's chain on disk -------------------------------------------------------------------------------------
#
# Anvil keeps its chain in memory. Its own --state-interval rewrites the dump file in place, so a node killed while
# writing leaves half a file. The devnet saves instead through anvil_dumpState (a consistent snapshot, gzipped JSON):
# written to a temporary file, flushed to disk, then renamed over the last one, so the file on disk is always a whole
# chain, at most one save interval old.


@dataclass(frozen=True)
class SavedChain:
    path: Path
    block: int  # the head block the save holds


def devnet_rpc(url: str, method: str, params: list | None = None, *, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """One JSON-RPC call to a devnet node (anvil_* and evm_* calls included); its error as DevnetError."""
    body = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=timeout).json()
    if "error" in body:
        raise DevnetError(f"the node refused {method}: {body['error'].get('message', body['error'])}")
    return body["result"]


def save_chain_state(url: str, path: Path, *, timeout: float = 60.0) -> int:
    """Saves the node's whole chain to `path` (gzipped JSON) atomically; returns the size written.

    anvil_dumpState reads the accounts and the blocks one after the other, so a block mined in between can leave a
    dump whose state has a transaction that its blocks lack. Automine is paused for the dump (what arrives meanwhile
    waits in the pool and is mined when it resumes), and the dump is checked: every account without code has sent
    exactly as many transactions as its nonce says. A dump that fails the check is not written (the last one stays)."""
    automine = bool(devnet_rpc(url, "anvil_getAutomine", timeout=timeout))
    if automine:
        devnet_rpc(url, "evm_setAutomine", [False], timeout=timeout)
    try:
        packed = bytes.fromhex(devnet_rpc(url, "anvil_dumpState", timeout=timeout).removeprefix("0x"))
    finally:
        if automine:
            devnet_rpc(url, "evm_setAutomine", [True], timeout=timeout)
    _check_dump(packed)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(packed)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
    return len(packed)


def _check_dump(packed: bytes) -> None:
    import gzip
    import json
    from collections import Counter

    state = json.loads(gzip.decompress(packed))
    in_blocks = sum(len(block.get("transactions", [])) for block in state.get("blocks", []))
    if in_blocks != len(state.get("transactions", [])):  # a transaction whose block the dump lacks
        raise DevnetError(f"the node's dump is not consistent ({in_blocks} transactions in its blocks, {len(state.get('transactions', []))} mined): not saved")
    sent = Counter(entry["info"]["from"].lower() for entry in state.get("transactions", []))
    for address, account in state["accounts"].items():
        nonce = int(account["nonce"], 0) if isinstance(account["nonce"], str) else int(account["nonce"])
        if account.get("code") in (None, "0x", "") and nonce != sent[address.lower()]:
            raise DevnetError(f"the node's dump is not consistent ({address} has nonce {nonce} and {sent[address.lower()]} transactions): not saved")


def read_chain_state(path: Path) -> tuple[SavedChain, bytes]:
    """The saved chain and its JSON, checked whole; DevnetError in one line when the file is damaged."""
    import gzip
    import json
    import zlib

    try:
        unpacked = gzip.decompress(path.read_bytes())
        state = json.loads(unpacked)
        block = int(state["best_block_number"], 0) if isinstance(state["best_block_number"], str) else int(state["best_block_number"])
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, KeyError, TypeError) as exc:
        raise DevnetError(f"the devnet's saved chain {path} is damaged ({type(exc).__name__}: {exc})") from None
    return SavedChain(path, block), unpacked
