"""partledger.rpc.rpc_session: the environment's settings for the node's URL (proxies, no_proxy, CA bundle) are
read once, when the session is made, not on every JSON-RPC call; and one session serves many threads at once (the
API's), each answer its own."""

from __future__ import annotations

import threading

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
