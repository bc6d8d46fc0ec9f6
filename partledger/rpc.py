"""HTTP sessions for JSON-RPC to the node, shared by every stage (light: requests only, no web3).

A JSON-RPC call through requests costs its caller about 0.6 ms of CPU on these machines (an `eth_blockNumber` to a
local Anvil: requests 575 us, urllib3 alone 242 us, http.client 128 us, a plain socket 22 us): the session's
preparation and hooks, urllib3's pool and http.client's header parsing. The node itself answers in less. Every
stage talks to the node all the time (the indexer's polling and logs, the submitter's and the relayer's sends and
receipts, the tests' contract calls), so the session posts to a plain `http://` node over its own persistent
sockets, and leaves everything else to requests: https, a proxy, credentials, other URLs, streamed or form bodies.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import urllib.parse
from typing import Any

import requests
import requests.adapters
import requests.utils
from requests.structures import CaseInsensitiveDict

RPC_POOL = 32  # connections a JSON-RPC session keeps to its node: the API's threads share one
MAX_HEADER_LINE = 65_536
MAX_HEADERS = 100


def rpc_session(rpc_url: str) -> RpcSession:
    """An HTTP session for JSON-RPC to `rpc_url` that reads the environment's settings for it (proxies, CA bundle,
    .netrc) once, here. requests otherwise reads them for every request: it scans os.environ for proxy variables each
    time, 0.2-0.4 ms of CPU a JSON-RPC call on these machines (with 35 variables), more than Anvil takes to answer a
    small call, in every process that talks to the node. Safe to share between threads."""
    return RpcSession(rpc_url)


class RpcSession(requests.Session):
    """requests.Session whose posts to its node's URL go over plain persistent sockets when the node is reached
    over http:// with no proxy and no credentials; answers are requests.Response objects all the same, and failures
    requests' exceptions (ConnectionError, ConnectTimeout, ReadTimeout)."""

    def __init__(self, rpc_url: str) -> None:
        super().__init__()
        settings = self.merge_environment_settings(rpc_url, {}, None, None, None)
        self.proxies.update(settings["proxies"])
        self.verify = settings["verify"]
        self.auth = requests.utils.get_netrc_auth(rpc_url)
        self.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=RPC_POOL)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        parts = urllib.parse.urlsplit(rpc_url)
        plain = parts.scheme == "http" and parts.hostname is not None and "@" not in parts.netloc and parts.fragment == ""
        proxied = any(self.proxies.get(key) for key in ("http", "all", f"http://{parts.hostname}", f"all://{parts.hostname}"))
        self.direct = DirectHttp(rpc_url, parts) if plain and not proxied and self.auth is None else None

    def post(self, url: Any, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:  # noqa: A002 - requests' name
        direct = self.direct
        if direct is not None and url == direct.url and set(kwargs) <= {"headers", "timeout", "stream"} and not kwargs.get("stream"):
            body = _body(data, json)
            if body is not None:
                return direct.post(body[0], content_type=body[1], headers=kwargs.get("headers"), timeout=kwargs.get("timeout"))
        return super().post(url, data=data, json=json, **kwargs)

    def close(self) -> None:
        if self.direct is not None:
            self.direct.close()
        super().close()


def _body(data: Any, document: Any) -> tuple[bytes, str | None] | None:
    """The bytes a post sends and its content type, as requests would; None for what the plain path leaves to it."""
    if document is not None and data is None:
        return json.dumps(document, allow_nan=False).encode(), "application/json"
    if document is None and isinstance(data, bytes):
        return data, None
    if document is None and isinstance(data, str):
        return data.encode(), None
    return None


class ProtocolError(Exception):
    """An answer that is no HTTP/1.x the plain path reads."""


class _Connection:
    __slots__ = ("sock", "reader")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=65_536)

    def dropped(self) -> bool:
        """Whether an idle connection was closed by the node (or has bytes nobody asked for): readable at rest."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class DirectHttp:
    """HTTP/1.1 POSTs to one URL over a pool of persistent sockets: Content-Length and chunked answers, 1xx skipped,
    `Connection: close` honoured. A pooled connection the node has closed is noticed before use (as urllib3 does) and
    replaced; a request that fails once sent is not retried (requests' default: the node may have acted on it)."""

    def __init__(self, url: str, parts: urllib.parse.SplitResult) -> None:
        self.url = url
        self._address = (parts.hostname or "", parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: */*\r\n".encode("latin-1")
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def post(self, body: bytes, *, content_type: str | None, headers: Any, timeout: Any) -> requests.Response:
        connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        lines = [self._head]
        given = {str(name).lower(): value for name, value in (headers or {}).items()}
        if content_type is not None and "content-type" not in given:
            given["content-type"] = content_type
        given.pop("content-length", None)
        given.pop("host", None)
        given.pop("transfer-encoding", None)
        for name, value in given.items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        request = b"".join(lines)
        connection = self._checkout(connect_timeout)
        try:
            connection.sock.settimeout(read_timeout)
            connection.sock.sendall(request)
            status, reason, answer_headers, content, keep = _read_answer(connection.reader)
        except TimeoutError:
            connection.close()
            raise requests.exceptions.ReadTimeout(f"the JSON-RPC node at {self.url} did not answer within {read_timeout} s") from None
        except (OSError, ProtocolError, ValueError) as exc:
            connection.close()
            raise requests.exceptions.ConnectionError(f"the JSON-RPC node at {self.url}: {type(exc).__name__}: {exc}") from None
        if keep:
            self._checkin(connection)
        else:
            connection.close()
        response = requests.Response()
        response.status_code = status
        response.reason = reason
        response.headers = CaseInsensitiveDict(answer_headers)
        response._content = content
        response._content_consumed = True  # nothing left to read: closing it (web3 answers in a with block) has no stream to close
        response.url = self.url
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return response

    def _checkout(self, connect_timeout: float | None) -> _Connection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                break
            if not connection.dropped():
                return connection
            connection.close()
        try:
            sock = socket.create_connection(self._address, timeout=connect_timeout)
        except TimeoutError:
            raise requests.exceptions.ConnectTimeout(f"cannot reach the JSON-RPC node at {self.url}: no connection within {connect_timeout} s") from None
        except OSError as exc:
            raise requests.exceptions.ConnectionError(f"cannot reach the JSON-RPC node at {self.url}: {type(exc).__name__}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock)

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < RPC_POOL:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _read_answer(reader: Any) -> tuple[int, str, dict[str, str], bytes, bool]:
    """Status, reason, headers (names lower-cased), body, and whether the connection may be used again."""
    while True:
        line = reader.readline(MAX_HEADER_LINE)
        if not line:
            raise ProtocolError("the node closed the connection before answering")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code_text, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code_text.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        headers = _read_headers(reader)
        status = int(code_text)
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        break
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        body = reader.read(length) if length else b""
        if len(body) != length:
            raise ProtocolError(f"the answer ended after {len(body)} of {length} bytes")
    elif status in (204, 304):
        body = b""
    else:
        body, keep = reader.read(), False  # delimited by the end of the connection
    return status, reason, headers, body, keep


def _read_headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = reader.readline(MAX_HEADER_LINE)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ProtocolError("the node closed the connection in the headers")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise ProtocolError(f"more than {MAX_HEADERS} headers")


def _read_chunked(reader: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        line = reader.readline(MAX_HEADER_LINE)
        if not line:
            raise ProtocolError("the node closed the connection in a chunked answer")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            _read_headers(reader)  # trailers, up to the blank line
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) != size or reader.read(2) != b"\r\n":
            raise ProtocolError("a chunk ended early")
        parts.append(chunk)
