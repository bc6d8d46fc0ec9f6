"""Test kit for the relayed path: site keys signing ERC-2771 ForwardRequests, and a relayer (a key with no role
anywhere) sending them through the consortium's forwarder, alone (`execute`) or in batches (`executeBatch`).

`on_both_paths` is a drop-in `ledger` fixture for a test module: each test runs once with every `ledger.act` on
PartLedger or EvidenceLedger sent directly by the site key, and once signed by that key and relayed by the forwarder,
so that every allowed transition and every refusal with its exact custom error is shown to hold on both paths.
`Site` is a site that keeps its own key and signs its requests in nonce order, for the tests that post them to the
service (tests/test_relay_crash.py, tests/test_relay_process.py).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3._utils.method_formatters import receipt_formatter
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from partledger.artifacts import FORWARDER, load_artifact
from partledger.chain import decode_revert
from partledger.eip712 import ForwardRequest, forward_request_typed_data, read_domain
from partledger.errors import ContractRevert
from partledger.ids import ascii32, part_id
from tests.chainkit import ANVIL_ACCOUNTS, GTIN_B, Ledger, dev_account

DEFAULT_GAS = 1_000_000  # what a request offers its call when the call would revert (nothing to estimate)
HOUR = 3_600
SITE_REQUEST_GAS = 300_000  # what a Site's request offers its call: signed ahead, it cannot be estimated
NO_DOC = bytes(32)


@functools.cache
def dev_keys() -> dict[str, LocalAccount]:
    """Anvil's dev accounts (every site key of tests.chainkit's consortium), by address."""
    return {account.address: account for account in (dev_account(index) for index in range(ANVIL_ACCOUNTS))}


@dataclass(frozen=True)
class Signed:
    """A ForwardRequest and its signature, as a relayer holds it."""

    request: ForwardRequest
    signature: bytes

    def as_call_data(self) -> tuple[Any, ...]:
        return self.request.as_call_data(self.signature)

    def as_json(self) -> dict[str, Any]:
        """The request as POST /v1/relay takes it."""
        request = self.request
        return {
            "from": request.sender, "to": request.to, "value": request.value, "gas": request.gas, "nonce": request.nonce,
            "deadline": request.deadline, "data": "0x" + request.data.hex(), "signature": "0x" + self.signature.hex(),
        }  # fmt: skip


class Relay:
    """The forwarder of a deployed ledger, and a relayer key that holds no role: what it sends acts only through
    the signatures it carries."""

    def __init__(self, ledger: Ledger, relayer: LocalAccount | None = None) -> None:
        self.ledger = ledger
        self.w3 = ledger.w3
        self.forwarder: Contract = self.w3.eth.contract(address=ledger.manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        self.domain = read_domain(self.forwarder)
        self.relayer = relayer or Account.create()
        self.targets = {ledger.parts.address, ledger.evidence.address}

    # --- signing --------------------------------------------------------------------------------------------

    def nonce(self, sender: str) -> int:
        return self.forwarder.functions.nonces(sender).call()

    def sign(
        self, sender: str, call: Any, *, gas: int | None = None, nonce: int | None = None, deadline: int | None = None,
        signer: LocalAccount | None = None, to: str | None = None,
    ) -> Signed:
        """`call` (a bound contract function) as a request from `sender`, signed by `signer` (default: `sender`'s own
        dev key), for the forwarder's current nonce of `sender` unless given; gas estimated for the call as the
        forwarder will make it, or DEFAULT_GAS when it would revert."""
        data = bytes.fromhex(call._encode_transaction_data()[2:])
        target = to or call.address
        if gas is None:
            gas = self.estimate_call(sender, target, data) or DEFAULT_GAS
        request = ForwardRequest(
            sender=sender, to=target, value=0, gas=gas, nonce=self.nonce(sender) if nonce is None else nonce,
            deadline=int(time.time()) + HOUR if deadline is None else deadline, data=data,
        )  # fmt: skip
        key = signer or dev_keys()[sender]
        signature = key.sign_message(encode_typed_data(full_message=forward_request_typed_data(self.domain, request))).signature
        return Signed(request, bytes(signature))

    def estimate_call(self, sender: str, target: str, data: bytes) -> int | None:
        """Gas for the call as the forwarder makes it (its sender appended, ERC-2771), with room to spare; None when
        it would revert."""
        answer = self.w3.provider.make_request("eth_estimateGas", [self._forwarded(sender, target, data)])
        return None if "error" in answer else int(int(answer["result"], 16) * 1.3) + 10_000

    def forwarded_revert(self, sender: str, target: str, data: bytes, block: int | str = "latest") -> ContractRevert | None:
        """The error the target raises for the call the forwarder makes for `sender` (its sender appended), on the
        state of `block`: why a relayed call failed, which the forwarder itself does not pass on."""
        answer = self.w3.provider.make_request("eth_call", [self._forwarded(sender, target, data), block if isinstance(block, str) else hex(block)])
        if "error" not in answer:
            return None
        error = answer["error"]
        return decode_revert(error.get("data") if isinstance(error, dict) else None)

    def _forwarded(self, sender: str, target: str, data: bytes) -> dict[str, str]:
        return {"from": self.forwarder.address, "to": target, "data": "0x" + (data + bytes.fromhex(sender[2:])).hex(), "gasPrice": "0x0"}

    # --- relaying -------------------------------------------------------------------------------------------

    def execute(self, signed: Signed) -> TxReceipt:
        """Relays one request with `execute`: the forwarder's own error when it refuses the request, the target's
        error (replayed) when the forwarded call reverts (the forwarder answers only FailedCall)."""
        try:
            return self.send(self.forwarder.functions.execute(signed.as_call_data()))
        except ContractRevert as error:
            if error.name != "FailedCall":
                raise
            request = signed.request
            raise self.forwarded_revert(request.sender, request.to, request.data) or error from None

    def execute_batch(self, batch: Sequence[Signed], *, atomic: bool = False, gas: int | None = None) -> TxReceipt:
        """Relays requests in one transaction. Atomic (refund receiver 0): any invalid request reverts it all with
        the forwarder's error. Otherwise invalid requests are skipped and failed calls reported, each in its
        ExecutedForwardRequest event, as the service relays them."""
        refund = "0x0000000000000000000000000000000000000000" if atomic else self.relayer.address
        return self.send(self.forwarder.functions.executeBatch([signed.as_call_data() for signed in batch], refund), gas=gas)

    def send(self, call: Any, *, gas: int | None = None) -> TxReceipt:
        """Signs `call` with the relayer's key and sends it; ContractRevert (decoded) when the node's estimate says it
        would revert, or when it reverted once mined (given `gas`, it is mined whatever happens)."""
        provider = self.w3.provider
        tx: dict[str, Any] = {"from": self.relayer.address, "to": call.address, "data": call._encode_transaction_data(), "gasPrice": "0x0"}
        if gas is None:
            estimate = provider.make_request("eth_estimateGas", [tx])
            if "error" in estimate:
                error = estimate["error"]
                raise decode_revert(error.get("data") if isinstance(error, dict) else None)
            gas = int(estimate["result"], 16) * 5 // 4 + 20_000
        nonce = int(provider.make_request("eth_getTransactionCount", [self.relayer.address, "pending"])["result"], 16)
        signed = self.relayer.sign_transaction({
            "to": call.address, "data": tx["data"], "gas": gas, "gasPrice": 0, "nonce": nonce, "chainId": self.ledger.manifest.chain_id, "value": 0,
        })  # fmt: skip
        sent = provider.make_request("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
        assert "result" in sent, sent
        while (raw := provider.make_request("eth_getTransactionReceipt", [sent["result"]]).get("result")) is None:
            time.sleep(0.002)
        receipt = receipt_formatter(raw)
        if receipt["status"] != 1:
            replay = provider.make_request("eth_call", [{k: tx[k] for k in ("from", "to", "data")} | {"gas": hex(gas)}, hex(receipt["blockNumber"] - 1)])
            error = replay.get("error")
            raise decode_revert(error.get("data") if isinstance(error, dict) else None)
        return receipt

    def outcomes(self, receipt: TxReceipt) -> list[tuple[str, int, bool]]:
        """(signer, nonce, success) of each request the forwarder executed in the transaction, in order."""
        events = self.forwarder.events.ExecutedForwardRequest().process_receipt(receipt, errors=DISCARD)
        return [(event["args"]["signer"], event["args"]["nonce"], event["args"]["success"]) for event in events]

    def act(self, sender: str, call: Any) -> TxReceipt:
        """What `Ledger.act` does on the relayed path: `sender` signs, the relayer executes; the receipt holds the
        target's events and the forwarder's record that `sender`'s request succeeded."""
        signed = self.sign(sender, call)
        receipt = self.execute(signed)
        assert self.outcomes(receipt) == [(sender, signed.request.nonce, True)], receipt
        return receipt


# --- sites that keep their own keys, for the tests that post to the service ------------------------------------------


@dataclass
class Site:
    """A site that keeps its own key (its dev key): receives two parts, then acts on the first of them, and again,
    each request signed for the next forwarder nonce (from 0: a chain of the test's own); what each request must do
    on chain, per part. Warehouses ship to the recycler, distributors sell, any other site installs."""

    name: str
    relay: Relay
    parts: list[bytes]
    signed: list[Signed] = field(default_factory=list)
    effects: Counter[tuple[str, bytes, str]] = field(default_factory=Counter)  # (event, part, site key)

    @property
    def key(self) -> str:
        return self.relay.ledger.orgs[self.name].key

    def next_request(self) -> Signed:
        nonce = len(self.signed)
        pair = nonce // 2
        assert 2 * pair + 1 < len(self.parts), f"{self.name} used its {len(self.parts)} parts: ship it more"
        first, second = self.parts[2 * pair], self.parts[2 * pair + 1]
        return self._sign(nonce, *(self._receive([first, second]) if nonce % 2 == 0 else self._act(first)))

    def _sign(self, nonce: int, call: Any, effects: list[tuple[str, bytes]]) -> Signed:
        signed = self.relay.sign(self.key, call, nonce=nonce, gas=SITE_REQUEST_GAS)
        self.signed.append(signed)
        self.effects.update((event, pid, self.key) for event, pid in effects)
        return signed

    def _receive(self, pids: list[bytes]) -> tuple[Any, list[tuple[str, bytes]]]:
        return self.relay.ledger.parts.functions.receiveParts(pids, NO_DOC), [("PartsReceived", pid) for pid in pids]

    def _act(self, pid: bytes) -> tuple[Any, list[tuple[str, bytes]]]:
        ledger = self.relay.ledger
        functions = ledger.parts.functions
        if self.name == "warehouse":
            return functions.shipParts([pid], ledger.orgs["recycler"].id, NO_DOC), [("PartsShipped", pid)]
        if self.name == "distributor":
            return functions.sellParts([pid], NO_DOC), [("PartsSold", pid)]
        return functions.installParts([pid], [pid[::-1]], NO_DOC), [("PartsInstalled", pid)]


def shipped_to_sites(ledger: Ledger, sites: Sequence[str], parts_per_site: int) -> dict[str, list[bytes]]:
    """`parts_per_site` parts per site, registered and shipped to it by the maker's own key, directly."""
    maker = ledger.orgs["maker"]
    parts = {}
    for name in sites:
        serials = [f"RC-{name}-{index:04d}" for index in range(parts_per_site)]
        for start in range(0, parts_per_site, 100):
            chunk = serials[start : start + 100]
            ledger.act(maker.key, ledger.parts.functions.registerParts(int(GTIN_B), ascii32(f"RC-{name}"), [ascii32(s) for s in chunk]))
            ids = [part_id(GTIN_B, serial) for serial in chunk]
            ledger.act(maker.key, ledger.parts.functions.shipParts(ids, ledger.orgs[name].id, NO_DOC))
        parts[name] = [part_id(GTIN_B, serial) for serial in serials]
    return parts


PATHS = ("direct", "relayed")


@pytest.fixture(name="ledger", params=PATHS)
def on_both_paths(request: pytest.FixtureRequest, ledger: Ledger) -> Iterator[Ledger]:
    """The `ledger` fixture, once as it is and once relaying every site key's call through the forwarder: import it
    into a test module to run each of its tests on both paths."""
    if request.param == "relayed":
        ledger.relay = Relay(ledger)
    try:
        yield ledger
    finally:
        ledger.relay = None
