"""The indexer's source port: the few chain reads it needs, over plain JSON-RPC (eth_* only).

Raw JSON is kept raw (no web3 formatting) so that catching up is bound by the node and the decoder, not by
middleware. Transport failures raise ChainUnavailable (retryable); a node refusing a log range as too large raises
RangeTooLarge, and the loop asks again for a smaller range.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import requests

from partledger.errors import ChainError, ChainUnavailable
from partledger.rpc import rpc_session

# What nodes say when a log query spans too much: Besu, Geth, Erigon, Nethermind, Anvil, hosted providers.
_RANGE_MESSAGES = ("range", "too many", "limit exceeded", "more than", "query returned", "too large", "response size")


class RangeTooLarge(ChainError):
    """The node refused an eth_getLogs range as too large."""


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int


class ChainSource(Protocol):
    def chain_id(self) -> int: ...

    def head_number(self) -> int: ...

    def head(self) -> BlockHeader: ...

    def headers(self, numbers: list[int]) -> list[BlockHeader | None]: ...

    def logs(self, from_block: int, to_block: int, addresses: list[str]) -> list[dict[str, Any]]: ...


class JsonRpcSource:
    """ChainSource over HTTP JSON-RPC, with batch requests for block headers."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._timeout = timeout
        self._session = rpc_session(url)
        self._ids = itertools.count(1)

    def _post(self, payload: Any) -> Any:
        try:
            reply = self._session.post(
                self.url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise ChainUnavailable(f"cannot reach the JSON-RPC node at {self.url}: {type(exc).__name__}") from None
        if reply.status_code != 200:
            raise ChainUnavailable(f"the JSON-RPC node at {self.url} answered HTTP {reply.status_code}")
        return orjson.loads(reply.content)

    def _call(self, method: str, params: list[Any]) -> Any:
        answer = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        if "error" in answer:
            message = str(answer["error"].get("message", answer["error"]))
            if method == "eth_getLogs" and (answer["error"].get("code") == -32005 or any(m in message.lower() for m in _RANGE_MESSAGES)):
                raise RangeTooLarge(message)
            raise ChainError(f"{method} failed: {message}")
        return answer["result"]

    def chain_id(self) -> int:
        return int(self._call("eth_chainId", []), 16)

    def head_number(self) -> int:
        return int(self._call("eth_blockNumber", []), 16)

    def head(self) -> BlockHeader:
        """The header of the node's latest block: its number and, in the same answer, its hash."""
        block = self._call("eth_getBlockByNumber", ["latest", False])
        if block is None:
            raise ChainError("eth_getBlockByNumber found no latest block")
        return _header(block)

    def headers(self, numbers: list[int]) -> list[BlockHeader | None]:
        """Headers of the given blocks in one batch request; None for a block the node does not have."""
        if not numbers:
            return []
        batch = [
            {"jsonrpc": "2.0", "id": index, "method": "eth_getBlockByNumber", "params": [hex(number), False]}
            for index, number in enumerate(numbers)
        ]
        answers = self._post(batch)
        if not isinstance(answers, list):
            raise ChainError(f"eth_getBlockByNumber batch failed: {answers.get('error')}")
        by_id = {answer["id"]: answer for answer in answers}
        headers: list[BlockHeader | None] = []
        for index in range(len(numbers)):
            answer = by_id.get(index, {})
            if "error" in answer:
                raise ChainError(f"eth_getBlockByNumber failed: {answer['error'].get('message')}")
            block = answer.get("result")
            headers.append(None if block is None else _header(block))
        return headers

    def logs(self, from_block: int, to_block: int, addresses: list[str]) -> list[dict[str, Any]]:
        return self._call("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": addresses}])


def _header(block: dict[str, Any]) -> BlockHeader:
    return BlockHeader(
        number=int(block["number"], 16),
        hash=bytes.fromhex(block["hash"][2:]),
        parent_hash=bytes.fromhex(block["parentHash"][2:]),
        timestamp=int(block["timestamp"], 16),
    )
