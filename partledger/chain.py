"""The chain boundary: connecting to a JSON-RPC node, sending signed transactions, and decoding reverts.

Only standard eth_* calls are used here, so the same code drives Anvil on a laptop and Besu/QBFT in production.
Transactions are legacy (EIP-155) with an explicit gas price, which may be zero on a free-gas permissioned network.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import requests
from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, keccak
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import TxReceipt

from partledger.artifacts import FORWARDER, abi_type, all_artifacts, load_artifact
from partledger.errors import ChainError, ChainMismatch, ChainUnavailable, ContractRevert
from partledger.rpc import rpc_session

DEV_CLIENT_PREFIXES = ("anvil/", "hardhat", "ganache")
DEV_CHAIN_IDS = frozenset({31337, 1337})


class TransactionSigner(Protocol):
    """What sending needs of a key: eth-account's LocalAccount fits, and so does the wallets' remote signer."""

    @property
    def address(self) -> str: ...

    def sign_transaction(self, transaction_dict: dict[str, Any]) -> Any: ...


def web3_for(rpc_url: str, *, timeout: float = 10.0) -> Web3:
    """A Web3 over HTTP JSON-RPC to `rpc_url` (one rpc_session for all its threads), not yet checked to answer."""
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, session=rpc_session(rpc_url)))


def connect(rpc_url: str, *, timeout: float = 10.0) -> Web3:
    """A Web3 for `rpc_url`, checked to answer; ChainUnavailable (one line) when it does not."""
    w3 = web3_for(rpc_url, timeout=timeout)
    try:
        w3.eth.chain_id  # noqa: B018 - the first request proves the node answers
    except (requests.RequestException, OSError, Web3RPCError) as exc:
        raise ChainUnavailable(f"cannot reach the JSON-RPC node at {rpc_url}: {type(exc).__name__}") from None
    return w3


def is_dev_chain(w3: Web3) -> bool:
    """Whether the node is a development chain (Anvil and friends), where well-known dev keys are acceptable."""
    try:
        client = w3.client_version.lower()
    except (Web3RPCError, ValueError):
        client = ""
    return client.startswith(DEV_CLIENT_PREFIXES) or w3.eth.chain_id in DEV_CHAIN_IDS


@functools.cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {
        function_signature_to_4byte_selector("Error(string)"): ("Error", ["string"]),
        function_signature_to_4byte_selector("Panic(uint256)"): ("Panic", ["uint256"]),
    }
    for artifact in [*all_artifacts().values(), load_artifact(FORWARDER)]:
        for entry in artifact.errors:
            types = [abi_type(item) for item in entry["inputs"]]
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            table[selector] = (entry["name"], types)
    return table


def decode_revert(data: bytes | str | None) -> ContractRevert:
    """The custom error in revert data, by the committed ABIs (name "Unknown" when nothing matches)."""
    raw = _as_bytes(data)
    if len(raw) >= 4 and raw[:4] in _error_table():
        name, types = _error_table()[raw[:4]]
        try:
            values = decode(types, raw[4:])
            values = tuple(Web3.to_checksum_address(v) if t == "address" else v for t, v in zip(types, values))
            return ContractRevert(name, values, raw)
        except Exception:  # noqa: BLE001 - malformed revert data is reported as such, not raised
            pass
    return ContractRevert("Unknown", (), raw)


def revert_of(exc: BaseException) -> ContractRevert | None:
    """The decoded revert inside a web3 exception, or None when the exception is no revert."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):
            data = data.get("data")
        return decode_revert(data)
    return None


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    text = data.removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def send_call(
    w3: Web3,
    signer: TransactionSigner,
    call: Any,
    *,
    gas_price: int = 0,
    gas: int | None = None,
    timeout: float = 60.0,
) -> TxReceipt:
    """Signs `call` (a bound contract function) with `signer`, sends it and waits for its receipt.

    A call that would revert raises ContractRevert before anything is sent (gas estimation replays it); one that
    reverts once mined raises ContractRevert too, decoded by replaying it against the block before.
    """
    params: dict[str, Any] = {
        "from": signer.address,
        "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
        "gasPrice": gas_price,
        "chainId": w3.eth.chain_id,
    }
    if gas is not None:
        params["gas"] = gas
    try:
        transaction = call.build_transaction(params)
    except ContractLogicError as exc:
        raise revert_of(exc) from None
    return send_transaction(w3, signer, transaction, timeout=timeout)


def send_transaction(w3: Web3, signer: TransactionSigner, transaction: dict[str, Any], *, timeout: float = 60.0) -> TxReceipt:
    """Signs and sends a complete transaction dict and waits for its receipt; ContractRevert if it failed."""
    signed = signer.sign_transaction(transaction)
    try:
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except (requests.RequestException, OSError) as exc:
        raise ChainUnavailable(f"lost the JSON-RPC node while sending: {type(exc).__name__}") from None
    except Web3RPCError as exc:
        raise ChainError(f"the node refused the transaction: {rpc_error_message(exc)}") from None
    except TimeExhausted:
        raise ChainUnavailable(f"transaction {signed.hash.hex()} not mined within {timeout:.0f}s") from None
    if receipt["status"] != 1:
        raise replay_revert(w3, transaction, receipt["blockNumber"])
    return receipt


def rpc_error_message(exc: Web3RPCError) -> str:
    """The node's own words in a JSON-RPC error ("nonce too low", "already known", ...)."""
    error = (exc.rpc_response or {}).get("error")
    return str(error.get("message")) if isinstance(error, dict) and "message" in error else str(exc)


def replay_revert(w3: Web3, transaction: dict[str, Any], block_number: int) -> ContractRevert:
    """Why a mined transaction reverted: the same call replayed on the state before its block."""
    call = {key: transaction[key] for key in ("from", "to", "data", "value", "gas") if key in transaction}
    try:
        w3.eth.call(call, block_number - 1)
    except ContractLogicError as exc:
        return revert_of(exc) or ContractRevert("Unknown")
    return ContractRevert("Unknown")


def require_chain(w3: Web3, *, chain_id: int, code: dict[str, tuple[str, str]]) -> None:
    """ChainMismatch unless the node has `chain_id` and each named address holds code with the given keccak hash.

    `code` maps a contract name to (address, code hash).
    """
    actual = w3.eth.chain_id
    if actual != chain_id:
        raise ChainMismatch(f"the node's chain id is {actual}, the deployment manifest says {chain_id}")
    for name, (address, code_hash) in code.items():
        deployed = bytes(w3.eth.get_code(Web3.to_checksum_address(address)))
        if not deployed:
            raise ChainMismatch(f"no contract code at {address} ({name}) on this chain")
        if "0x" + keccak(deployed).hex() != code_hash:
            raise ChainMismatch(f"the code at {address} is not the {name} the deployment manifest recorded")


# --- sizing a transaction's gas -----------------------------------------------------------------------------------

ESTIMATE_HEADROOM = (1.2, 10_000)  # on eth_estimateGas: the state may change before the transaction is mined
RUN_HEADROOM = (1.35, 25_000)  # on a single run's gasUsed, which can be below the limit the call needs: refunds are
# at most a fifth of the gas before them (EIP-3529: x1.25), calls keep 1/64 back (x1.016), and a legacy
# transaction pays cold access where the run's access list paid less (x1.05): 1.33 at most, and the margin above
_UNSUPPORTED = (-32601, -32004)  # method not found; method not supported (Hardhat)


class GasSizer:
    """The gas limit to sign each call with, from ONE run of the call: eth_createAccessList's gasUsed. Its simulation
    is what eth_estimateGas gives too (a revert answers with the same error and data), but eth_estimateGas searches
    for the lowest limit by running the call again and again: 21.8 ms against 3.1 ms per 200-part shipment on Anvil,
    measured side by side (eth_call alone: 1.2 ms), and the node's time is what the write path is short of.

    A call the run refuses is asked again with eth_estimateGas, whose error answer every caller already reads (a
    geth-style node answers a failed access-list run with a bare message and no revert data). A node without
    eth_createAccessList (Hardhat's) gets eth_estimateGas from then on. Both are standard eth_* calls (Besu has both).
    """

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.access_lists: bool | None = None  # None: not known yet whether the node has eth_createAccessList

    def limits(self, calls: list[dict[str, Any]], block: str = "pending") -> list[dict[str, Any]]:
        """One answer per call, in order: {"result": gas limit before any cap} or the node's {"error": ...} from
        eth_estimateGas. Runs in one JSON-RPC batch (two when some calls revert)."""
        if not calls:
            return []
        answers: list[dict[str, Any] | None] = [None] * len(calls)
        if self.access_lists is not False:
            for index, answer in enumerate(self._batch("eth_createAccessList", calls, block)):
                error = answer.get("error")
                if isinstance(error, dict) and (error.get("code") in _UNSUPPORTED or "not supported" in str(error.get("message", "")).lower()):
                    self.access_lists = False
                    answers = [None] * len(calls)
                    break
                result = answer.get("result")
                if error is None and isinstance(result, dict) and not result.get("error") and "gasUsed" in result:
                    self.access_lists = True
                    answers[index] = {"result": _with_headroom(int(result["gasUsed"], 16), RUN_HEADROOM)}
        again = [index for index, answer in enumerate(answers) if answer is None]
        for index, answer in zip(again, self._batch("eth_estimateGas", [calls[index] for index in again], block)):
            answers[index] = {"result": _with_headroom(int(answer["result"], 16), ESTIMATE_HEADROOM)} if "error" not in answer else dict(answer)
        return answers  # type: ignore[return-value]

    def _batch(self, method: str, calls: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
        if not calls:
            return []
        answers = self.w3.provider.make_batch_request([(method, [{**call, "value": "0x0"}, block]) for call in calls])  # type: ignore[attr-defined]
        if not isinstance(answers, list) or len(answers) != len(calls):
            error = answers.get("error") if isinstance(answers, dict) else answers
            raise Web3RPCError(f"the node refused a batch of {len(calls)} {method} requests: {error}")
        return [dict(answer) for answer in answers]


def _with_headroom(gas: int, headroom: tuple[float, int]) -> int:
    factor, extra = headroom
    return int(gas * factor) + extra


def free_nonces(start: int, taken: set[int], count: int) -> list[int]:
    """The `count` lowest nonces from `start` on that `taken` does not hold (a sender's transactions, or a site's
    forwarder requests, recorded and still live)."""
    nonces: list[int] = []
    nonce = start
    while len(nonces) < count:
        if nonce not in taken:
            nonces.append(nonce)
        nonce += 1
    return nonces


# "nonce too low" for a transaction of ours with no receipt: another transaction took its nonce, or a lagging node
# behind a load-balanced RPC has not got the block with ours yet. It is void once the answer has held a while and 2
# more blocks came (the lagging node has caught up with ours by then), or, on a chain that makes no block (an
# automining devnet with nothing else to mine, waiting on the very items this transaction holds), once it has held
# this many times as long: with no new block a lagging node catches up within seconds, and waiting for blocks
# that only these items would bring is a hang.
STALLED_CHAIN_FACTOR = 3
