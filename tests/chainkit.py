"""Test kit for the contracts on a live Anvil: a deployed consortium whose site keys are Anvil's unlocked dev
accounts, and helpers to act as a key and to expect an exact custom error."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
from eth_abi import decode
from eth_account import Account
from eth_utils import get_abi_output_types
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3._utils.method_formatters import receipt_formatter
from web3.logs import DISCARD
from web3.types import TxReceipt

from partledger.artifacts import load_artifact
from partledger.chain import decode_revert, revert_of
from partledger.deploy import DEV_MNEMONIC, deploy_contracts
from partledger.errors import ContractRevert
from partledger.ids import ascii32, part_id
from partledger.model import Role

ANVIL_ACCOUNTS = 40
GTIN_A = "04012345000016"  # valid GTIN-14 (check digit 6)
GTIN_B = "09506000134352"


def dev_account(index: int) -> Any:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


@dataclass
class Org:
    name: str
    id: int
    roles: Role
    keys: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.keys[0]


# name, roles, number of site keys
CONSORTIUM = [
    ("maker", Role.MANUFACTURER, 2),
    ("maker2", Role.MANUFACTURER, 1),
    ("warehouse", Role.LOGISTICS, 1),
    ("distributor", Role.DISTRIBUTOR, 1),
    ("workshop", Role.WORKSHOP, 1),
    ("workshop2", Role.WORKSHOP, 1),
    ("recycler", Role.RECYCLER, 1),
    ("auditor", Role.AUDITOR, 1),
    ("regulator", Role.REGULATOR, 1),
]


class Ledger:
    """The deployed contracts and the consortium, with helpers to act as a site key."""

    def __init__(self, w3: Web3, manifest: Any, operator: str) -> None:
        self.w3 = w3
        self.manifest = manifest
        self.operator = operator
        self.registry = self._contract("ConsortiumRegistry")
        self.parts = self._contract("PartLedger")
        self.evidence = self._contract("EvidenceLedger")
        self.orgs: dict[str, Org] = {}
        self.spare_keys: list[str] = []
        self.relay: Any = None  # a tests.relaykit.Relay: site keys' calls to the ledgers go through the forwarder

    def _contract(self, name: str) -> Contract:
        return self.w3.eth.contract(address=self.manifest.address(name), abi=load_artifact(name).abi)

    def act(self, sender: str, call: Any) -> TxReceipt:
        """Sends `call` from the unlocked account `sender`; raises ContractRevert with the decoded custom error.

        Three bare JSON-RPC requests (estimate, send, receipt) rather than `call.transact`: web3's middlewares add an
        eth_chainId, an eth_getBlockByNumber and their formatting to every transaction, which made `transact` 2.4
        times slower than this in the stateful tests (measured side by side), where thousands of calls are sent.
        With `relay` set, a call to PartLedger or EvidenceLedger is signed by `sender` and relayed instead."""
        if self.relay is not None and call.address in self.relay.targets:
            return self.relay.act(sender, call)
        tx = {"from": sender, "to": call.address, "data": call._encode_transaction_data(), "gasPrice": "0x0"}
        provider = self.w3.provider
        estimate = provider.make_request("eth_estimateGas", [tx])
        if "error" in estimate:
            error = estimate["error"]
            revert = decode_revert(error.get("data")) if isinstance(error, dict) else None
            if revert is None:
                raise AssertionError(f"eth_estimateGas failed without a revert: {error}")
            raise revert
        gas = int(estimate["result"], 16)
        sent = provider.make_request("eth_sendTransaction", [tx | {"gas": hex(gas + min(100_000, gas // 5))}])
        assert "result" in sent, sent
        tx_hash = sent["result"]
        while (raw := provider.make_request("eth_getTransactionReceipt", [tx_hash]).get("result")) is None:
            time.sleep(0.002)  # Anvil mines the transaction right after answering: the wait is a few ms
        receipt = receipt_formatter(raw)
        assert receipt["status"] == 1, receipt
        return receipt

    def view(self, call: Any) -> Any:
        """Runs a view call; a revert raises ContractRevert with the decoded custom error."""
        try:
            return call.call()
        except ContractLogicError as exc:
            raise revert_of(exc) from None

    def register(self, org: Org, serials: list[str], *, gtin: str = GTIN_A, lot: str = "LOT-1", key: str | None = None) -> list[bytes]:
        self.act(key or org.key, self.parts.functions.registerParts(int(gtin), ascii32(lot), [ascii32(s) for s in serials]))
        return [part_id(gtin, serial) for serial in serials]

    def status(self, pid: bytes) -> tuple[int, int, int, int, bytes, bool]:
        return tuple(self.parts.functions.part(pid).call())  # type: ignore[return-value]

    def events(self, receipt: TxReceipt, contract: Contract, name: str) -> list[Any]:
        return list(getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD))

    def lot_number(self, org: Org, lot: str) -> int:
        return self.parts.functions.lotNumber(org.id, ascii32(lot)).call()


def build_ledger(w3: Web3) -> Ledger:
    """Deploys the contracts with dev account 0 as admin and operator and registers CONSORTIUM with dev keys."""
    operator = dev_account(0)
    manifest = deploy_contracts(w3, operator, rpc_url="", admin=operator.address, operator=operator.address)
    ledger = Ledger(w3, manifest, operator.address)
    accounts = w3.eth.accounts
    next_key = 1
    for name, roles, key_count in CONSORTIUM:
        receipt = ledger.act(operator.address, ledger.registry.functions.registerOrganisation(int(roles), name))
        org_id = ledger.events(receipt, ledger.registry, "OrganisationRegistered")[0]["args"]["orgId"]
        org = Org(name, org_id, roles)
        for index in range(key_count):
            key = accounts[next_key]
            next_key += 1
            ledger.act(operator.address, ledger.registry.functions.addSiteKey(org_id, key, ascii32(f"{name}-site-{index}")))
            org.keys.append(key)
        ledger.orgs[name] = org
    ledger.spare_keys = list(accounts[next_key:])
    return ledger


@contextmanager
def reverts(name: str, *args: Any) -> Iterator[dict[str, Any]]:
    """Expects a ContractRevert with exactly this custom error name and, when given, these arguments."""
    caught: dict[str, Any] = {}
    with pytest.raises(ContractRevert) as info:
        yield caught
    error = info.value
    caught["error"] = error
    assert error.name == name, f"expected {name}{args}, got {error}"
    if args:
        assert tuple(error.args_) == tuple(args), f"expected {name}{args}, got {error}"


def snapshot(w3: Web3) -> str:
    return w3.provider.make_request("evm_snapshot", [])["result"]


def revert_to(w3: Web3, snapshot_id: str) -> None:
    assert w3.provider.make_request("evm_revert", [snapshot_id])["result"] is True


class ViewBatch:
    """eth_calls of the ledger's views sent as one JSON-RPC batch (a web3 `.call()` costs ~5 ms; 4,000 steps times
    a dozen views would dominate the run). Calldata and return types come from the contract ABI."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.types = {
            entry["name"]: get_abi_output_types(entry)
            for entry in ledger.parts.abi
            if entry.get("type") == "function" and entry["name"] in ("part", "lot", "lotNumber")
        }
        self._calldata: dict[tuple[str, tuple[Any, ...]], str] = {}

    def calldata(self, name: str, *args: Any) -> str:
        key = (name, args)
        if key not in self._calldata:
            self._calldata[key] = self.ledger.parts.encode_abi(name, list(args))
        return self._calldata[key]

    def run(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        address = self.ledger.parts.address
        requests = [
            ("eth_call", [{"to": address, "data": self.calldata(name, *args)}, "latest"]) for name, args in calls
        ]
        responses = self.ledger.w3.provider.make_batch_request(requests)  # sorted by id, i.e. in request order
        assert isinstance(responses, list) and len(responses) == len(calls), responses
        results = []
        for (name, _args), response in zip(calls, responses, strict=True):
            assert "result" in response, response
            results.append(decode(self.types[name], bytes.fromhex(response["result"][2:])))
        return results
