"""A small Web3Signer-compatible signing server: the keystores of a directory behind JSON-RPC.

    python -m wallets.remote_server --keys DIR --port 9000 [--host 127.0.0.1] [--chain-id N]

It answers `eth_accounts`, `eth_signTransaction` (one transaction object with hex quantities; the RLP-encoded signed
transaction back) and `eth_signTypedData` ([address, typed data]; the 65-byte signature back), plus `GET /upcheck`
like Web3Signer. It is what `wallets.signer.RemoteSigner` talks to in the tests, and a software stand-in for an HSM
or KMS on a deployment: keys are decrypted once at start (passphrase from PARTLEDGER_KEYSTORE_PASSPHRASE_FILE or
PARTLEDGER_KEYSTORE_PASSPHRASE) and live only in this process. It has no authentication of its own: bind it to
loopback or put it behind mutual TLS. The log names every signature given (method, account, nonce, hash) and
never a key or passphrase.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from partledger.errors import ConfigError, PartLedgerError
from wallets.keystore import load_keystore, read_passphrase
from wallets.rotation import list_keystores

log = logging.getLogger("wallets.remote_server")

MAX_REQUEST_BYTES = 1 << 20
# JSON-RPC 2.0 error codes; -32000 is the server-defined one for "this signer holds no such key".
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
UNKNOWN_ACCOUNT = -32000
QUANTITY_FIELDS = ("gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce", "value")


class RpcError(Exception):
    """A JSON-RPC error answer; its message goes to the client, so it never holds a secret."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load_key_ring(directory: Path, passphrase: str) -> dict[str, LocalAccount]:
    """Every v3 keystore under `directory`, decrypted, by checksum address; ConfigError when one does not open."""
    keys: dict[str, LocalAccount] = {}
    for keystore in list_keystores(directory):
        account = load_keystore(keystore.path, passphrase)
        keys[account.address] = account
    if not keys:
        raise ConfigError(f"no v3 keystores under {directory}")
    return keys


class Signing:
    """The JSON-RPC methods over a key ring; no sockets, so it can be exercised directly."""

    def __init__(self, keys: Mapping[str, LocalAccount], *, chain_id: int | None = None) -> None:
        self._keys = dict(keys)
        self._chain_id = chain_id

    def answer(self, request: Any) -> dict[str, Any]:
        """The JSON-RPC response to one request object."""
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
                raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request")
            params = request.get("params", [])
            if not isinstance(params, list):
                raise RpcError(INVALID_PARAMS, "params must be a list")
            method = {
                "eth_accounts": self.accounts,
                "eth_signTransaction": self.sign_transaction,
                "eth_signTypedData": self.sign_typed_data,
                "eth_signTypedData_v4": self.sign_typed_data,
            }.get(request["method"])
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"method {request['method'][:64]!r} not supported")
            return {"jsonrpc": "2.0", "id": request_id, "result": method(params)}
        except RpcError as exc:
            log.info("refused %s: %s", (request.get("method") if isinstance(request, dict) else None) or "?", exc.message)
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": exc.message}}

    def accounts(self, _params: list[Any]) -> list[str]:
        return sorted(self._keys)

    def sign_transaction(self, params: list[Any]) -> str:
        if len(params) != 1 or not isinstance(params[0], dict):
            raise RpcError(INVALID_PARAMS, "eth_signTransaction takes one transaction object")
        request = params[0]
        account = self._account(request.get("from"))
        transaction = self._transaction(request)
        try:
            signed = account.sign_transaction(transaction)
        except (TypeError, ValueError) as exc:
            raise RpcError(INVALID_PARAMS, f"invalid transaction: {' '.join(str(exc).split())[:200]}") from None
        log.info(
            "eth_signTransaction %s nonce %d chain %d to %s: %s",
            account.address, transaction["nonce"], transaction["chainId"], transaction.get("to", "(create)"), signed.hash.to_0x_hex(),
        )  # fmt: skip
        return signed.raw_transaction.to_0x_hex()

    def sign_typed_data(self, params: list[Any]) -> str:
        if len(params) != 2:
            raise RpcError(INVALID_PARAMS, "eth_signTypedData takes [address, typed data]")
        account = self._account(params[0])
        typed_data = params[1]
        if isinstance(typed_data, str):  # eth_signTypedData_v4 clients send the typed data as a JSON string
            try:
                typed_data = json.loads(typed_data)
            except ValueError:
                raise RpcError(INVALID_PARAMS, "typed data is not JSON") from None
        if not isinstance(typed_data, dict):
            raise RpcError(INVALID_PARAMS, "typed data must be an object")
        try:
            signed = account.sign_typed_data(full_message=typed_data)
        except Exception as exc:  # noqa: BLE001 - eth-account raises many types on malformed typed data
            raise RpcError(INVALID_PARAMS, f"invalid typed data: {type(exc).__name__}") from None
        log.info("eth_signTypedData %s %s: %s", account.address, typed_data.get("primaryType"), signed.message_hash.to_0x_hex())
        return signed.signature.to_0x_hex()

    def _account(self, address: Any) -> LocalAccount:
        if not isinstance(address, str) or not is_address(address):
            raise RpcError(INVALID_PARAMS, "the signing account must be a 20-byte hex address")
        account = self._keys.get(to_checksum_address(address))
        if account is None:
            raise RpcError(UNKNOWN_ACCOUNT, f"account {to_checksum_address(address)} is not held by this signer")
        return account

    def _transaction(self, request: dict[str, Any]) -> dict[str, Any]:
        transaction: dict[str, Any] = {"from": to_checksum_address(request["from"])}
        for name in QUANTITY_FIELDS:
            if name in request:
                transaction[name] = _quantity(name, request[name])
        for name in ("nonce", "gas"):
            if name not in transaction:
                raise RpcError(INVALID_PARAMS, f"the transaction has no {name}")  # this signer knows no chain to ask
        if "gasPrice" not in transaction and "maxFeePerGas" not in transaction:
            raise RpcError(INVALID_PARAMS, "the transaction has neither gasPrice nor maxFeePerGas")
        transaction.setdefault("value", 0)
        transaction["chainId"] = self._chain(request.get("chainId"))
        if request.get("to"):
            if not isinstance(request["to"], str) or not is_address(request["to"]):
                raise RpcError(INVALID_PARAMS, "to must be a 20-byte hex address")
            transaction["to"] = to_checksum_address(request["to"])
        data = request.get("data", request.get("input")) or "0x"
        if not isinstance(data, str) or not _is_hex(data):
            raise RpcError(INVALID_PARAMS, "data must be 0x-prefixed hex")
        transaction["data"] = data
        return transaction

    def _chain(self, requested: Any) -> int:
        chain_id = None if requested is None else _quantity("chainId", requested)
        if self._chain_id is not None and chain_id not in (None, self._chain_id):
            raise RpcError(INVALID_PARAMS, f"chainId {chain_id}: this signer signs for chain {self._chain_id} only")
        chain_id = chain_id if chain_id is not None else self._chain_id
        if chain_id is None:
            raise RpcError(INVALID_PARAMS, "the transaction has no chainId (replay protection is required)")
        return chain_id


def _quantity(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.startswith("0x") and _is_hex(value) and len(value) > 2:
        return int(value, 16)
    raise RpcError(INVALID_PARAMS, f"{name} must be a hex quantity")


def _is_hex(text: str) -> bool:
    if not text.startswith("0x"):
        return False
    try:
        int(text[2:] or "0", 16)
    except ValueError:
        return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: _SigningServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/upcheck":
            self._reply(200, b"OK", "text/plain")
        else:
            self._reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self._reply(413, b"request too large", "text/plain")
            self.close_connection = True
            return
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            response: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "invalid JSON"}}
        else:
            signing = self.server.signing
            response = [signing.answer(item) for item in request] if isinstance(request, list) else signing.answer(request)
        self._reply(200, json.dumps(response).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.client_address[0], format % args)


class _SigningServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], signing: Signing) -> None:
        super().__init__(address, _Handler)
        self.signing = signing


def start_server(keys: Mapping[str, LocalAccount], *, host: str = "127.0.0.1", port: int = 9000, chain_id: int | None = None) -> ThreadingHTTPServer:
    """A bound signing server (port 0: any free port); run it with serve_forever(), stop it with shutdown()."""
    try:
        return _SigningServer((host, port), Signing(keys, chain_id=chain_id))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wallets.remote_server", description="A Web3Signer-compatible signing server for v3 keystores.")
    parser.add_argument("--keys", type=Path, required=True, help="directory of v3 keystores (searched recursively)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=9000, help="port (0: any free port)")
    parser.add_argument("--chain-id", type=int, default=None, help="sign for this chain only")
    parser.add_argument("--passphrase-file", type=Path, default=None, help="secret file with the keystores' passphrase")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s remote-signer %(levelname)s %(message)s", stream=sys.stderr)
    try:
        keys = load_key_ring(arguments.keys, read_passphrase(arguments.passphrase_file))
        server = start_server(keys, host=arguments.host, port=arguments.port, chain_id=arguments.chain_id)
    except PartLedgerError as exc:
        print(f"remote-signer: error: {exc}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    log.info("serving %d accounts at http://%s:%d: %s", len(keys), host, port, ", ".join(sorted(keys)))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
