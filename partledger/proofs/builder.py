"""Builds proof bundles (docs/proof-bundle.md) from any standard JSON-RPC node.

Shared core: the service's /v1/proofs endpoints and `partledger proof get` call it; the offline verifier
(`partledger.proofs.verifier`) checks what it builds, and so does the builder itself before it hands a bundle out.
Only standard eth_* calls: eth_getTransactionReceipt, eth_getBlockByNumber, eth_getBlockReceipts (or one receipt per
transaction), eth_getProof, eth_call, eth_getLogs. The header is rebuilt from eth_getBlockByNumber's fields and must
hash to the block hash (as the chain hashes it: a Besu QBFT header without its commit seals); a field this module
does not know (a later hardfork) stops it with a clear error. A block of a Besu QBFT chain (told by its extraData)
gets the headers that lead to it from the validators an auditor trusts (the `qbft` section).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
import rlp
from eth_abi import decode
from eth_utils import keccak, to_checksum_address
from trie import HexaryTrie

from partledger.errors import ChainUnavailable, PartLedgerError
from partledger.manifest import Manifest
from partledger.proofs import qbft
from partledger.proofs import verifier as v
from partledger.rpc import rpc_session

# eth_getBlockByNumber fields that are not part of the header.
NON_HEADER_FIELDS = frozenset({"hash", "size", "totalDifficulty", "transactions", "uncles", "withdrawals", "sealFields", "author", "blockTimestamp"})
EIP712_DOMAIN_SELECTOR = "0x84b0196e"  # eip712Domain() (ERC-5267)


class NotProvable(PartLedgerError):
    """No bundle can be built for what was asked; `code` says why (unknown_document, not_final, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BatchRecord:
    """One record of an anchored batch: its ABI types, its values as JSON (hex bytes, EIP-55 addresses), its proof."""

    types: list[str]
    value: list[Any]
    proof: list[bytes]


class JsonRpc:
    """A plain JSON-RPC client (raw hex answers, no formatting layer between the node and the proof)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._local = threading.local()  # one HTTP session per thread (the service builds bundles in a thread pool)

    def call(self, method: str, params: list[Any]) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = rpc_session(self.url)
        try:
            reply = session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=self.timeout)
            answer = reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise ChainUnavailable(f"the JSON-RPC node at {self.url} failed on {method}: {type(exc).__name__}") from None
        if "error" in answer:
            raise NotProvable("node_refused", f"the node refused {method}: {answer['error'].get('message', answer['error'])}")
        return answer.get("result")


def _b(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def _q(text: str) -> int:
    return int(text, 16)


# --- headers, transactions, receipts as consensus bytes ---------------------------------------------------------


def encode_header(block: dict[str, Any]) -> bytes:
    """The RLP of a block header from eth_getBlockByNumber's fields, checked to hash to the block's hash."""
    names = [name for name, _ in v.HEADER_FIELDS]
    unknown = sorted(set(block) - set(names) - NON_HEADER_FIELDS)
    if unknown:
        raise NotProvable(
            "unknown_header_field",
            f"block {block.get('number')} has field(s) {unknown} that this builder does not know (a later hardfork?): "
            "its header cannot be rebuilt; teach partledger.proofs.verifier.HEADER_FIELDS the new layout",
        )
    present = [name for name in names if name in block]
    if present != names[: len(present)] or len(present) not in v.HEADER_LAYOUTS:
        raise NotProvable("unknown_header_layout", f"block {block.get('number')} has header fields {present}, which match no known hardfork layout")
    values = [_q(block[name]) if kind == "q" else _b(block[name]) for name, kind in v.HEADER_FIELDS[: len(present)]]
    raw = rlp.encode(values)
    if v.header_hash(raw) != _b(block["hash"]):
        raise NotProvable(
            "header_hash_mismatch",
            f"the rebuilt header of block {_q(block['number'])} does not hash to {block['hash']} (neither keccak256(rlp(header)) "
            "nor, for a Besu QBFT header, keccak256 of it without commit seals and round: another consensus' header hash?)",
        )
    return raw


def _access_list(tx: dict[str, Any]) -> list[Any]:
    return [[_b(entry["address"]), [_b(key) for key in entry["storageKeys"]]] for entry in tx.get("accessList", [])]


def encode_transaction(tx: dict[str, Any]) -> bytes | None:
    """A signed transaction's consensus bytes from its JSON fields (types 0 to 4); None for a type it cannot rebuild."""
    kind = _q(tx.get("type", "0x0"))
    to = _b(tx["to"]) if tx.get("to") else b""
    common = [_q(tx["gas"]), to, _q(tx["value"]), _b(tx["input"])]
    signature = [_q(tx.get("yParity", tx["v"])), _q(tx["r"]), _q(tx["s"])]
    fees = [_q(tx["maxPriorityFeePerGas"]), _q(tx["maxFeePerGas"])] if kind >= 2 else []
    if kind == 0:
        return rlp.encode([_q(tx["nonce"]), _q(tx["gasPrice"]), *common, _q(tx["v"]), _q(tx["r"]), _q(tx["s"])])
    head = [_q(tx["chainId"]), _q(tx["nonce"])]
    if kind == 1:
        body = [*head, _q(tx["gasPrice"]), *common, _access_list(tx)]
    elif kind == 2:
        body = [*head, *fees, *common, _access_list(tx)]
    elif kind == 3:
        body = [*head, *fees, *common, _access_list(tx), _q(tx["maxFeePerBlobGas"]), [_b(h) for h in tx["blobVersionedHashes"]]]
    elif kind == 4:
        authorizations = [
            [_q(a["chainId"]), _b(a["address"]), _q(a["nonce"]), _q(a["yParity"]), _q(a["r"]), _q(a["s"])] for a in tx["authorizationList"]
        ]
        body = [*head, *fees, *common, _access_list(tx), authorizations]
    else:
        return None
    return bytes([kind]) + rlp.encode(body + signature)


def encode_receipt(receipt: dict[str, Any]) -> bytes:
    """A receipt's consensus encoding (EIP-2718: type byte, then rlp([status, cumulativeGasUsed, logsBloom, logs]))."""
    logs = [[_b(log["address"]), [_b(t) for t in log["topics"]], _b(log["data"])] for log in receipt["logs"]]
    payload = rlp.encode([_q(receipt["status"]), _q(receipt["cumulativeGasUsed"]), _b(receipt["logsBloom"]), logs])
    kind = _q(receipt.get("type", "0x0"))
    return payload if kind == 0 else bytes([kind]) + payload


def trie_proof(values: Sequence[bytes], index: int) -> tuple[bytes, list[bytes]]:
    """The root of the trie of `values` keyed by rlp(index), and the proof of value `index`: the RLP of each node
    from the root down, nodes embedded in their parent left out (what eth_getProof returns)."""
    trie = HexaryTrie(db={})
    for position, value in enumerate(values):
        trie.set(rlp.encode(position), value)
    db = trie.db
    proof: list[bytes] = []
    path = v._nibbles(rlp.encode(index))
    reference: Any = trie.root_hash
    while True:
        if isinstance(reference, bytes):
            raw = db[reference]
            proof.append(raw)
            node = rlp.decode(raw)
        else:
            node = reference
        if len(node) == 17:
            if not path:
                break
            reference, path = node[path[0]], path[1:]
        else:
            nibbles, is_leaf = v._compact_path(node[0])
            if is_leaf:
                break
            reference, path = node[1], path[len(nibbles) :]
        if reference == b"":
            break
    return trie.root_hash, proof


# --- the builder ------------------------------------------------------------------------------------------------


class ProofBuilder:
    """Bundles for one deployment (its manifest), from a node at `rpc_url`."""

    def __init__(self, *, rpc_url: str, manifest: Manifest, qbft_from: int | None = None, qbft_epoch_length: int = qbft.DEFAULT_EPOCH_LENGTH) -> None:
        """`qbft_from`: on a Besu QBFT chain, the block after which the auditor's trusted validators hold (0: the
        genesis validators); by default the newest epoch block before the bundle's block (0 on a chain younger than
        one epoch), where no vote is open."""
        self.rpc = JsonRpc(rpc_url)
        self.manifest = manifest
        self.qbft_from = qbft_from
        self.qbft_epoch_length = qbft_epoch_length
        self.contracts = {name: to_checksum_address(manifest.address(name)) for name in ("ConsortiumRegistry", "PartLedger", "EvidenceLedger")}
        self.forwarder = to_checksum_address(manifest.forwarder) if manifest.forwarder else None

    def final_block(self) -> int:
        """The newest block that the manifest's confirmation count makes final."""
        return _q(self.rpc.call("eth_blockNumber", [])) - self.manifest.confirmations

    # -- finding the anchoring log ------------------------------------------------------------------------------

    def find_log(self, contract: str, event: str, topic1: bytes) -> tuple[bytes, int]:
        """(tx hash, log index) of the `event` of `contract` whose first indexed argument is `topic1`."""
        topic0 = "0x" + keccak(v.EVENTS[event].signature.encode()).hex()
        deployed = self.manifest.contracts[contract].block
        logs = self.rpc.call("eth_getLogs", [{"address": self.contracts[contract], "fromBlock": hex(deployed), "toBlock": "latest", "topics": [topic0, "0x" + topic1.hex()]}])
        if not logs:
            raise NotProvable(f"unknown_{'document' if event == 'DocumentAnchored' else 'batch'}", f"no {event} for 0x{topic1.hex()} on chain {self.manifest.chain_id}")
        return _b(logs[0]["transactionHash"]), _q(logs[0]["logIndex"])

    def document(self, doc_hash: bytes, *, chain_to: int | None = None, located: tuple[bytes, int] | None = None) -> dict[str, Any]:
        """The bundle of an anchored trade document (without its salt: see attach_document)."""
        tx_hash, log_index = located or self.find_log("EvidenceLedger", "DocumentAnchored", doc_hash)
        return self.build(tx_hash, log_index, chain_to=chain_to, expect="document")

    def batch(self, root: bytes, *, record: BatchRecord | None = None, chain_to: int | None = None, located: tuple[bytes, int] | None = None) -> dict[str, Any]:
        """The bundle of an anchored batch root, and of one record in it when `record` is given."""
        tx_hash, log_index = located or self.find_log("EvidenceLedger", "BatchAnchored", root)
        return self.build(tx_hash, log_index, chain_to=chain_to, expect="batch", record=record)

    def event(self, tx_hash: bytes, log_index: int, *, chain_to: int | None = None) -> dict[str, Any]:
        """The bundle of any PartLedger event, by its transaction and (block-wide) log index."""
        return self.build(tx_hash, log_index, chain_to=chain_to)

    # -- building -----------------------------------------------------------------------------------------------

    def build(self, tx_hash: bytes, log_index: int, *, chain_to: int | None = None, expect: str | None = None, record: BatchRecord | None = None) -> dict[str, Any]:
        receipt = self.rpc.call("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        if receipt is None or receipt.get("blockNumber") is None:
            raise NotProvable("unknown_transaction", f"no mined transaction 0x{tx_hash.hex()}")
        number = _q(receipt["blockNumber"])
        final = self.final_block()
        if number > final:
            raise NotProvable("not_final", f"block {number} is not final yet ({self.manifest.confirmations} confirmation(s) needed)")
        block = self.rpc.call("eth_getBlockByNumber", [hex(number), True])
        header = encode_header(block)
        index = _q(receipt["transactionIndex"])
        transactions = [self._raw_transaction(tx) for tx in block["transactions"]]
        receipts = [encode_receipt(r) for r in self._receipts(block)]
        tx_root, tx_proof = trie_proof(transactions, index)
        receipts_root, receipt_proof = trie_proof(receipts, index)
        if tx_root != _b(block["transactionsRoot"]) or receipts_root != _b(block["receiptsRoot"]):
            raise NotProvable("roots_mismatch", f"the node's transactions or receipts of block {number} do not rebuild its header's roots")
        position = next((i for i, log in enumerate(receipt["logs"]) if _q(log["logIndex"]) == log_index), None)
        if position is None:
            raise NotProvable("unknown_log", f"transaction 0x{tx_hash.hex()} has no log {log_index}")
        log = receipt["logs"][position]
        topics, data = [_b(t) for t in log["topics"]], _b(log["data"])
        try:
            spec, args = v.decode_event(topics, data)
        except v.CheckFailed as exc:
            raise NotProvable("not_a_partledger_event", f"log {log_index} of 0x{tx_hash.hex()}: {exc}") from None
        if to_checksum_address(log["address"]) != self.contracts[spec.contract]:
            raise NotProvable("not_a_partledger_event", f"log {log_index} was not emitted by this deployment's {spec.contract}")
        subject = "batch-record" if record is not None else v.SUBJECTS.get(spec.name, ("event",))[0]
        if expect is not None and not subject.startswith(expect):
            raise NotProvable("wrong_subject", f"log {log_index} of 0x{tx_hash.hex()} is a {spec.name}, not a {expect}")
        tx = v.decode_transaction(transactions[index])
        forwarded = self._forwarded(receipt, position) if v.checksum(tx.to) == self.forwarder else None
        bundle: dict[str, Any] = {
            "format": v.FORMAT,
            "subject": subject,
            "chainId": self.manifest.chain_id,
            "contracts": self.contracts,
            "block": {"number": number, "hash": block["hash"], "header": v.to_hex(header), "fields": v.render_header(v.decode_header(header))},
            "headerChain": self._header_chain(number, chain_to, final),
            "transaction": {
                "index": index, "hash": "0x" + tx_hash.hex(), "type": tx.type, "from": tx.sender, "to": v.checksum(tx.to),
                "nonce": tx.nonce, "raw": v.to_hex(transactions[index]), "proof": [v.to_hex(n) for n in tx_proof],
            },
            "receipt": {"status": _q(receipt["status"]), "logCount": len(receipt["logs"]), "raw": v.to_hex(receipts[index]), "proof": [v.to_hex(n) for n in receipt_proof]},
            "event": {
                "logIndexInReceipt": position, "address": to_checksum_address(log["address"]), "name": spec.name,
                "signature": spec.signature, "topics": [v.to_hex(t) for t in topics], "data": v.to_hex(data), "args": args,
            },
            "registry": self._registry_facts(number, v.acting_keys(spec, args, forwarded["signer"] if forwarded else tx.sender)),
        }  # fmt: skip
        if forwarded is not None:
            bundle["forwarded"] = forwarded
        if qbft.header_extra_data(header) is not None:
            bundle["qbft"] = {"headers": self._qbft_headers(number)}
        if spec.name == "DocumentAnchored":
            bundle |= self._typed_data(number, args)
        if record is not None:
            bundle["batchRecord"] = {
                "types": list(record.types), "value": list(record.value),
                "leaf": v.to_hex(v.leaf_hash(record.types, record.value)), "proof": [v.to_hex(p) for p in record.proof],
            }  # fmt: skip
        self_check(bundle)
        return bundle

    def _forwarded(self, receipt: dict[str, Any], position: int) -> dict[str, Any]:
        """For a relayed transaction: the forwarder's ExecutedForwardRequest that ended the request whose call emitted
        the log at `position` (the first one after it), and who signed that request."""
        for index in range(position + 1, len(receipt["logs"])):
            log = receipt["logs"][index]
            if to_checksum_address(log["address"]) == self.forwarder and _b(log["topics"][0]) == v.EXECUTED_FORWARD_REQUEST:
                data = _b(log["data"])
                signer = to_checksum_address(_b(log["topics"][1])[12:])
                return {"forwarder": self.forwarder, "logIndexInReceipt": index, "signer": signer, "nonce": int.from_bytes(data[:32], "big")}
        raise NotProvable("not_a_partledger_event", f"the transaction {receipt['transactionHash']} went to the forwarder, which logged no request after log {position}")

    def _raw_transaction(self, tx: dict[str, Any]) -> bytes:
        raw = encode_transaction(tx)
        if raw is None or keccak(raw) != _b(tx["hash"]):
            fetched = self.rpc.call("eth_getRawTransactionByHash", [tx["hash"]])
            raw = _b(fetched) if fetched else b""
        if keccak(raw) != _b(tx["hash"]):
            raise NotProvable("unknown_transaction_type", f"transaction {tx['hash']} (type {tx.get('type')}) cannot be re-encoded to its hash")
        return raw

    def _receipts(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            receipts = self.rpc.call("eth_getBlockReceipts", [block["number"]])
        except NotProvable:
            receipts = None
        if receipts is None:
            receipts = [self.rpc.call("eth_getTransactionReceipt", [tx["hash"]]) for tx in block["transactions"]]
        return sorted(receipts, key=lambda r: _q(r["transactionIndex"]))

    def _header_chain(self, number: int, chain_to: int | None, final: int) -> list[str]:
        if chain_to is None or chain_to <= number:
            return []
        if chain_to > final:
            raise NotProvable("not_final", f"block {chain_to} is not final yet")
        return [v.to_hex(encode_header(self.rpc.call("eth_getBlockByNumber", [hex(n), False]))) for n in range(number + 1, chain_to + 1)]

    def _qbft_headers(self, number: int) -> list[str]:
        """The QBFT headers after the block from which the auditor's validators hold, up to the one before `number`."""
        start = self.qbft_from if self.qbft_from is not None else (number - 1) // self.qbft_epoch_length * self.qbft_epoch_length
        if not 0 <= start < number:
            raise NotProvable("qbft_from_after_block", f"the trusted QBFT validators after block {start} cannot prove block {number}")
        return [v.to_hex(encode_header(self.rpc.call("eth_getBlockByNumber", [hex(n), False]))) for n in range(start + 1, number)]

    def _registry_facts(self, number: int, actors: list[tuple[str, str, tuple[int, ...], int]]) -> dict[str, Any]:
        """The registry's records of the acting keys and their organisations, with storage proofs at `number`."""
        registry = self.contracts["ConsortiumRegistry"]
        keys = sorted({key for _, key, _, _ in actors})
        slots = []
        for key in keys:
            raw = bytes(12) + bytes.fromhex(key[2:])
            slots += [keccak(raw + v.KEYS_SLOT.to_bytes(32, "big")), keccak(raw + v.KEY_SITES_SLOT.to_bytes(32, "big"))]
        proof = self._get_proof(registry, slots, number)
        entries, org_ids = [], set()
        for position, key in enumerate(keys):
            record, site = proof["storageProof"][2 * position], proof["storageProof"][2 * position + 1]
            value = _q(record["value"])
            org_ids.add(value & 0xFFFFFFFF)
            entries.append({
                "key": key, "orgId": value & 0xFFFFFFFF, "site": "0x" + _q(site["value"]).to_bytes(32, "big").hex(),
                "addedBlock": (value >> 32) & (2**64 - 1), "revokedBlock": (value >> 96) & (2**64 - 1),
                "recordProof": [n.lower() for n in record["proof"]], "siteProof": [n.lower() for n in site["proof"]],
            })  # fmt: skip
        org_ids_sorted = sorted(org_ids)
        org_proof = self._get_proof(registry, [keccak(o.to_bytes(32, "big") + v.ORGANISATIONS_SLOT.to_bytes(32, "big")) for o in org_ids_sorted], number)
        organisations = []
        for org_id, entry in zip(org_ids_sorted, org_proof["storageProof"]):
            value = _q(entry["value"])
            organisations.append({"orgId": org_id, "roles": value & 0xFFFF, "suspended": bool(value >> 16 & 0xFF), "proof": [n.lower() for n in entry["proof"]]})
        return {"address": registry, "accountProof": [n.lower() for n in proof["accountProof"]], "keys": entries, "organisations": organisations}

    def _get_proof(self, address: str, slots: list[bytes], number: int) -> dict[str, Any]:
        return self.rpc.call("eth_getProof", [address, ["0x" + slot.hex() for slot in slots], hex(number)])

    def _typed_data(self, number: int, args: dict[str, Any]) -> dict[str, Any]:
        """The EIP-712 typed data both parties signed, with the domain the EvidenceLedger reports (ERC-5267) at that block."""
        answer = self.rpc.call("eth_call", [{"to": self.contracts["EvidenceLedger"], "data": EIP712_DOMAIN_SELECTOR}, hex(number)])
        _fields, name, version, chain_id, verifying, _salt, _extensions = decode(["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"], _b(answer))
        domain = {"name": name, "version": version, "chainId": chain_id, "verifyingContract": to_checksum_address(verifying)}
        message = args["attestation"]
        digest = v.eip712_digest(v.EIP712_DOMAIN_FIELDS, domain, "Attestation", v.ATTESTATION_FIELDS, message)
        return {
            "typedData": {"types": v.TYPED_DATA_TYPES, "primaryType": "Attestation", "domain": domain, "message": message, "digest": v.to_hex(digest)},
            "signatures": [
                {"party": "issuer", "orgId": args["issuer"], "signer": args["issuerSigner"], "signature": args["issuerSignature"]},
                {"party": "counterparty", "orgId": args["counterparty"], "signer": args["counterpartySigner"], "signature": args["counterpartySignature"]},
            ],
        }


def self_check(bundle: dict[str, Any]) -> None:
    """Runs the offline verifier on a fresh bundle, trusting its own block: every check but `signers` must pass
    (a bundle whose signer was not valid is still the truth of the chain; the verifier will reject it)."""
    anchors = v.TrustAnchors(blocks={bundle["block"]["number"]: bytes.fromhex(bundle["block"]["hash"][2:])})
    verdict = v.verify_bundle(bundle, anchors=anchors)
    broken = [c for c in verdict.checks if not c.ok and c.name != "signers"]
    if broken:
        raise NotProvable("self_check_failed", "; ".join(f"{c.name}: {c.detail}" for c in broken))


def attach_document(bundle: dict[str, Any], *, salt: bytes, content: bytes | None = None, content_hash: bytes | None = None) -> dict[str, Any]:
    """The bundle with the salt and content hash of its document, so that the holder of the file can check it;
    NotProvable("document_mismatch") when they do not give the anchored docHash."""
    if bundle["subject"] != "document":
        raise NotProvable("not_a_document", "only a document bundle carries a salt")
    if len(salt) != 32:
        raise NotProvable("invalid_salt", "a document salt is 32 bytes")
    digest = keccak(content) if content is not None else content_hash
    if digest is None or keccak(salt + digest) != bytes.fromhex(bundle["event"]["args"]["docHash"][2:]):
        raise NotProvable("document_mismatch", "this document and salt do not hash to the anchored docHash")
    return bundle | {"document": {"salt": v.to_hex(salt), "contentHash": v.to_hex(digest)}}


def record_json(types: Sequence[str], value: Sequence[Any]) -> list[Any]:
    """A batch record's values (as partledger.merkle takes them) in their bundle form: hex bytes, EIP-55 addresses."""
    out = []
    for kind, item in zip(types, value, strict=True):
        if isinstance(item, (bytes, bytearray)):
            out.append("0x" + bytes(item).hex())
        elif kind == "address":
            out.append(to_checksum_address(item))
        else:
            out.append(item)
    return out


def dump_bundle(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"

