"""Starting and stopping Hardhat's node (npm `hardhat`, its chain run by EDR): the second node implementation the core
flow is tested on (tests/test_hardhat_node.py), beside Anvil (partledger/anvil.py). Tests only: `make run` and
production never start it.

The node reads tests/hardhat/hardhat.config.js: chain id, gas price 0 with a zero base fee, a high block gas limit,
automine, and the dev mnemonic's accounts (unlocked, as Anvil's), as AnvilConfig sets Anvil up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import coincurve
import requests

from partledger.anvil import wait_until_ready
from partledger.artifacts import REPO_ROOT
from partledger.deploy import DEV_MNEMONIC
from partledger.errors import DevnetError

CONFIG = REPO_ROOT / "tests" / "hardhat" / "hardhat.config.js"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def dev_private_keys(count: int) -> list[bytes]:
    """The first `count` private keys of the dev mnemonic (m/44'/60'/0'/0/i, BIP-32 over BIP-39's seed), in
    milliseconds: eth-account's HD wallet takes a quarter of a second a key."""
    seed = hashlib.pbkdf2_hmac("sha512", DEV_MNEMONIC.encode(), b"mnemonic", 2048)
    digest = hmac.digest(b"Bitcoin seed", seed, "sha512")
    key, chain = digest[:32], digest[32:]

    def child(key: bytes, chain: bytes, index: int) -> tuple[bytes, bytes]:
        hardened = index >= 2**31
        data = (b"\0" + key if hardened else coincurve.PrivateKey(key).public_key.format(compressed=True)) + index.to_bytes(4, "big")
        digest = hmac.digest(chain, data, "sha512")
        return ((int.from_bytes(digest[:32], "big") + int.from_bytes(key, "big")) % SECP256K1_ORDER).to_bytes(32, "big"), digest[32:]

    for index in (44 + 2**31, 60 + 2**31, 2**31, 0):
        key, chain = child(key, chain, index)
    return [child(key, chain, index)[0] for index in range(count)]


@dataclass(frozen=True)
class HardhatConfig:
    host: str = "127.0.0.1"
    port: int = 8545
    chain_id: int = 31337
    accounts: int = 20

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def hardhat_cli() -> Path:
    """Hardhat's CLI script in node_modules (what `npx hardhat` runs), run by `node` itself rather than through npx,
    so that the process started is the one that serves the port."""
    cli = REPO_ROOT / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"
    if not cli.exists():
        raise DevnetError("hardhat not found: run `npm ci` (package.json pins it)")
    return cli


class HardhatNode:
    """A running `hardhat node`."""

    def __init__(self, config: HardhatConfig, process: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.process = process

    @property
    def url(self) -> str:
        return self.config.url

    @classmethod
    def start(cls, config: HardhatConfig, *, log_path: Path | None = None) -> HardhatNode:
        """Starts the node and waits until it answers. It logs every JSON-RPC call: to `log_path`, else nowhere."""
        environment = {
            **os.environ,
            "PARTLEDGER_HARDHAT_CHAIN_ID": str(config.chain_id),
            "PARTLEDGER_HARDHAT_KEYS": json.dumps(["0x" + key.hex() for key in dev_private_keys(config.accounts)]),
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
        }
        command = ["node", str(hardhat_cli()), "--config", str(CONFIG), "node", "--hostname", config.host, "--port", str(config.port)]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=CONFIG.parent)
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        node = cls(config, process)
        try:
            wait_until_ready(config.url, timeout=60, process=process)
        except DevnetError:
            node.stop()
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else "(no log: pass log_path)"
            raise DevnetError(f"hardhat node did not answer at {config.url} (exit code {process.returncode}):\n{tail}") from None
        return node

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RpcRecorder:
    """A JSON-RPC hop in front of a node that records the method of every call passing through it (batches
    included): the production code is pointed at it, the test harness at the node itself, so that what it records
    is what PartLedger's own code asked the node for."""

    def __init__(self, upstream: str) -> None:
        self.methods: Counter[str] = Counter()
        recorder, local = self, threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as web3's and requests' sessions expect

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls = json.loads(body)
                with recorder._lock:
                    recorder.methods.update(call.get("method", "") for call in (calls if isinstance(calls, list) else [calls]))
                session = getattr(local, "session", None)
                if session is None:
                    session = local.session = requests.Session()
                answer = session.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=60)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *_args: object) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RpcRecorder:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
