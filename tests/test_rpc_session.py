"""partledger.rpc.rpc_session: the environment's settings for the node's URL (proxies, no_proxy, CA bundle) are
read once, when the session is made, not on every JSON-RPC call; one session serves many threads at once (the API's),
each answer its own; and its plain path (posts to an http:// node over its own sockets) reads every kind of HTTP/1.x
answer, keeps and replaces connections as it may, and fails with requests' errors."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from partledger.chain import web3_for
from partledger.rpc import rpc_session


def test_the_environment_is_read_once_when_the_session_is_made(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = rpc_session("http://node.example:8545")
    assert session.proxies.get("http") == "http://proxy.example:3128"
    assert session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert session.trust_env is False  # requests reads nothing from the environment per request

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", scanned)
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", scanned)
    settings = session.merge_environment_settings("http://node.example:8545", {}, None, None, None)
    assert settings["proxies"].get("http") == "http://proxy.example:3128"


def test_a_node_named_in_no_proxy_is_reached_directly(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert rpc_session("http://127.0.0.1:8545").proxies == {}


def scanned(*args, **kwargs):
    raise AssertionError("the environment was read for a request")


def test_one_session_serves_many_threads_each_its_own_answer_reading_no_environment(anvil, monkeypatch):
    w3 = web3_for(anvil.url)
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", scanned)  # from here on, a request that reads it fails
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", scanned)
    head = w3.eth.block_number
    answers: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    def ask(index: int) -> None:
        try:
            for _ in range(20):
                block = w3.eth.get_block(head - index % (head + 1))
                answers[index] = (block["number"], head - index % (head + 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(answers) == 40 and all(got == wanted for got, wanted in answers.values())


# --- the plain path: posts to an http:// node over the session's own sockets ----------------------------------------


class ScriptedNode:
    """A real TCP server that reads HTTP requests and answers each with the bytes `answer(request)` gives (None:
    close the connection without answering; an HTTP/1.0 or `connection: close` answer closes it after). It counts
    connections and keeps every request it read."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/rpc"
        self.connections = 0
        self.requests: list[bytes] = []
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                request = head + reader.read(length)
                self.requests.append(request)
                answer = self.answer(request)
                if answer is None:
                    return
                sock.sendall(answer)
                if answer.startswith(b"HTTP/1.0") or b"connection: close" in answer.lower():
                    return  # the answer said the connection ends with it
        except OSError:
            return
        finally:
            reader.close()
            sock.close()

    def drop_idle(self) -> None:
        """Closes every connection from the node's side, as a node does with idle keep-alive connections."""
        for sock in self.open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.drop_idle()


RESULT = b'{"jsonrpc":"2.0","id":1,"result":"0x2a"}'
CALL = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'


def sized(body: bytes = RESULT, *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body) + extra + b"\r\n" + body


@pytest.fixture
def scripted():
    nodes: list[ScriptedNode] = []

    def start(answer: Callable[[bytes], bytes | None]) -> ScriptedNode:
        nodes.append(ScriptedNode(answer))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


def post(session: requests.Session, url: str, **kwargs: Any) -> requests.Response:
    return session.post(url, data=CALL, headers={"Content-Type": "application/json", "User-Agent": "test"}, timeout=kwargs.pop("timeout", 10), **kwargs)


def test_answers_sized_chunked_interim_and_close_delimited_are_read_and_connections_kept_when_they_may_be(scripted):
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\n" + RESULT[:5] + b"\r\n" + b"%x\r\n" % len(RESULT[5:]) + RESULT[5:] + b"\r\n0\r\ntrailer: x\r\n\r\n"
    answers = iter([
        sized(),
        chunked,
        b"HTTP/1.1 100 Continue\r\n\r\n" + sized(),
        sized(extra=b"connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + RESULT,
        sized(),
    ])  # fmt: skip
    node = scripted(lambda request: next(answers))
    session = rpc_session(node.url)
    assert session.direct is not None
    for expected_connections in (1, 1, 1, 1, 2, 3):
        answer = post(session, node.url)
        assert answer.status_code == 200 and answer.json() == {"jsonrpc": "2.0", "id": 1, "result": "0x2a"}
        assert node.connections == expected_connections
    first = node.requests[0]
    assert first.startswith(b"POST /rpc HTTP/1.1\r\n") and first.endswith(b"\r\n\r\n" + CALL)
    head = first.split(b"\r\n\r\n")[0].lower()
    assert b"host: 127.0.0.1:" in head and b"content-type: application/json" in head and b"user-agent: test" in head
    assert b"content-length: %d" % len(CALL) in head


def test_a_connection_the_node_closed_while_idle_is_replaced_and_one_closed_with_a_request_in_it_is_an_error(scripted):
    node = scripted(lambda request: sized() if b'"id":1' in request else None)
    session = rpc_session(node.url)
    assert post(session, node.url).ok
    node.drop_idle()
    assert post(session, node.url).ok and node.connections == 2  # noticed before use: a new connection, no error

    with pytest.raises(requests.ConnectionError):  # sent, then the connection closed: not sent again
        session.post(node.url, data=CALL.replace(b'"id":1', b'"id":2'), headers={"Content-Type": "application/json"}, timeout=10)
    assert sum(b'"id":2' in request for request in node.requests) == 1
    assert post(session, node.url).ok


def test_a_node_that_does_not_answer_in_time_refuses_or_speaks_no_http_gives_requests_errors(scripted):
    quiet = scripted(lambda request: b"")
    with pytest.raises(requests.Timeout):
        post(rpc_session(quiet.url), quiet.url, timeout=0.2)
    garbled = scripted(lambda request: b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(requests.ConnectionError):
        post(rpc_session(garbled.url), garbled.url)
    short = scripted(lambda request: sized()[:-5])
    short_session = rpc_session(short.url)
    with pytest.raises(requests.Timeout):  # fewer bytes than announced, and the connection stays open
        post(short_session, short.url, timeout=0.2)
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    with pytest.raises(requests.ConnectionError):
        post(rpc_session(url), url)


def test_an_http_error_status_is_an_answer_for_the_caller_to_judge(scripted):
    node = scripted(lambda request: sized(b"overloaded", status=b"503 Service Unavailable", extra=b"retry-after: 1\r\n"))
    answer = post(rpc_session(node.url), node.url)
    assert answer.status_code == 503 and answer.reason == "Service Unavailable" and answer.content == b"overloaded"
    assert answer.headers["Retry-After"] == "1"
    with pytest.raises(requests.HTTPError):
        answer.raise_for_status()


def test_https_a_proxy_credentials_and_other_urls_go_through_requests(scripted, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert rpc_session("https://node.example:8545").direct is None
    assert rpc_session("http://user:secret@node.example:8545").direct is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert rpc_session("http://node.example:8545").direct is None
    monkeypatch.delenv("HTTP_PROXY")
    node = scripted(lambda request: sized())
    session = rpc_session(node.url)
    other = node.url.replace("/rpc", "/other")
    assert session.post(other, data=CALL, timeout=10).ok  # another URL: through requests, which names itself
    assert b"python-requests" in node.requests[-1]
    assert session.post(node.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=10).json()["result"] == "0x2a"
    assert node.requests[-1].endswith(b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}') and b"python-requests" not in node.requests[-1]
