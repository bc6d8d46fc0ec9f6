"""The offline verifier's parts, without a chain: Merkle-Patricia proofs, ABI and EIP-712 encodings checked against
the reference libraries, the event table and registry storage layout against the compiled artifacts, header
layouts, and the verifier's own footprint (no web3, no SQL)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
import rlp
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak
from trie import HexaryTrie

from partledger.artifacts import REPO_ROOT, load_artifact
from partledger.eip712 import Attestation, Eip712Domain, attestation_typed_data
from partledger.merkle import build_tree, leaf_hash as merkle_leaf_hash
from partledger.proofs import verifier as v
from partledger.proofs.builder import NotProvable, encode_header, encode_transaction, trie_proof
from partledger.proofs.checkpoints import checkpoint_typed_data, deployment_typed_data

VERIFIER = REPO_ROOT / "partledger" / "proofs" / "verifier.py"


def test_trie_proofs_prove_every_value_and_nothing_else():
    rng = random.Random(7)
    for size in (1, 2, 3, 17, 130):
        values = [rng.randbytes(rng.choice((1, 5, 40, 300))) for _ in range(size)]
        for index in {0, size // 2, size - 1}:
            root, proof = trie_proof(values, index)
            assert v.mpt_get(root, rlp.encode(index), proof) == values[index]
            trie = HexaryTrie(db={})
            for position, value in enumerate(values):
                trie.set(rlp.encode(position), value)
            assert root == trie.root_hash
            assert HexaryTrie.get_from_proof(root, rlp.encode(index), [rlp.decode(node) for node in proof]) == values[index]
        root, proof = trie_proof(values, 0)
        with pytest.raises(v.CheckFailed, match="does not use"):
            v.mpt_get(root, rlp.encode(0), [*proof, proof[0]])  # an extra node would go unchecked
        with pytest.raises(v.CheckFailed):
            v.mpt_get(root, rlp.encode(0), proof[:-1] if len(proof) > 1 else [])


def test_abi_encoding_and_batch_leaves_match_eth_abi_and_the_merkle_module():
    kinds = ["uint64", "uint32", "string", "address", "bytes32", "bool", "bytes", "int16", "bytes16"]  # bytes16: scan records
    value = [2**63, 7, "scan @ 上海", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", b"\x11" * 32, True, b"\x01\x02\x03", -5, b"\x22" * 16]
    assert v.abi_encode(kinds, value) == encode(kinds, value)
    as_json = [*value[:4], "0x" + "11" * 32, True, "0x010203", -5, "0x" + "22" * 16]
    assert v.leaf_hash(kinds, as_json) == merkle_leaf_hash(kinds, value)
    tree = build_tree([(i, f"record {i}") for i in range(9)], types=["uint64", "string"])
    assert v.process_merkle_proof(v.leaf_hash(["uint64", "string"], [4, "record 4"]), tree.proof_at(4)) == tree.root
    data = encode(["bytes32", "bytes32[]", "bytes"], [b"\x01" * 32, [b"\x02" * 32, b"\x03" * 32], b"xyz"])
    assert v.abi_decode(["bytes32", "bytes32[]", "bytes"], data) == [b"\x01" * 32, [b"\x02" * 32, b"\x03" * 32], b"xyz"]
    with pytest.raises(v.CheckFailed, match="canonical"):
        v.abi_decode(["uint32"], (2**40).to_bytes(32, "big"))  # dirty high bits of a uint32


def test_eip712_digests_match_eth_account():
    key = Account.create()
    domain = Eip712Domain(name="PartLedger EvidenceLedger", version="1", chainId=31337, verifyingContract="0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0")
    attestation = Attestation(b"\x01" * 32, 2, 1, 4, bytes(32), b"\x05" * 32, b"\x06" * 32, 1_900_000_000)
    typed = attestation_typed_data(domain, attestation)
    signature = key.sign_typed_data(full_message=typed)
    message = {name: "0x" + value.hex() if isinstance(value, bytes) else value for name, value in attestation.__dict__.items()}
    digest = v.eip712_digest(v.EIP712_DOMAIN_FIELDS, domain.__dict__, "Attestation", v.ATTESTATION_FIELDS, message)
    assert digest == bytes(signature.message_hash)
    assert v.recover_signer(digest, bytes(signature.signature)) == key.address
    assert typed["types"] == v.TYPED_DATA_TYPES
    checkpoint = checkpoint_typed_data(31337, 100, "0x" + "ab" * 32)
    signed = key.sign_typed_data(full_message=checkpoint)
    assert v.recover_signer(v.checkpoint_digest(31337, 100, b"\xab" * 32), bytes(signed.signature)) == key.address
    contracts = {"ConsortiumRegistry": key.address, "PartLedger": key.address, "EvidenceLedger": key.address}
    signed = key.sign_typed_data(full_message=deployment_typed_data(31337, contracts))
    assert v.recover_signer(v.deployment_digest(31337, contracts), bytes(signed.signature)) == key.address


def test_high_s_signatures_are_refused():
    key = Account.create()
    digest = b"\x42" * 32
    signature = bytes(Account.unsafe_sign_hash(digest, key.key).signature)
    r, s, recovery = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    high = r + (v.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - recovery])
    assert v.recover_signer(digest, signature) == key.address
    with pytest.raises(v.CheckFailed, match="lower half"):
        v.recover_signer(digest, high)


def test_typed_transactions_are_decoded_and_their_sender_recovered():
    key = Account.create()
    for fields in (
        {"nonce": 3, "gasPrice": 0, "gas": 90_000, "to": key.address, "value": 1, "data": b"\x01", "chainId": 31337},
        {"nonce": 4, "maxFeePerGas": 7, "maxPriorityFeePerGas": 1, "gas": 90_000, "to": key.address, "value": 0, "data": b"", "chainId": 31337, "type": 2, "accessList": [{"address": key.address, "storageKeys": ["0x" + "00" * 31 + "01"]}]},
    ):
        signed = key.sign_transaction(fields)
        tx = v.decode_transaction(bytes(signed.raw_transaction))
        assert (tx.sender, tx.chain_id, tx.nonce, tx.to) == (key.address, 31337, fields["nonce"], bytes.fromhex(key.address[2:]))


def test_the_event_table_is_the_contracts_abi():
    for contract in ("PartLedger", "EvidenceLedger"):
        for event in load_artifact(contract).events:
            if event["name"] == "EIP712DomainChanged":
                continue  # ERC-5267's, never emitted (the domain is fixed at construction)
            spec = v.EVENTS[event["name"]]
            kinds = [("(" + ",".join(c["type"] for c in i["components"]) + ")") if i["type"] == "tuple" else i["type"] for i in event["inputs"]]
            assert spec.contract == contract
            assert [(i["name"], k, i["indexed"]) for i, k in zip(event["inputs"], kinds)] == list(spec.inputs)
    attestation = next(i for i in load_artifact("EvidenceLedger").events if i["name"] == "DocumentAnchored")["inputs"][3]
    assert [(c["name"], c["type"]) for c in attestation["components"]] == list(v.ATTESTATION_FIELDS)


def test_the_registry_storage_layout_is_the_compiled_one():
    data = json.loads((REPO_ROOT / "contracts" / "artifacts" / "ConsortiumRegistry.json").read_text())["storageLayout"]
    slots = {entry["label"]: int(entry["slot"]) for entry in data["storage"]}
    assert (slots["_organisations"], slots["_keys"], slots["_keySites"]) == (v.ORGANISATIONS_SLOT, v.KEYS_SLOT, v.KEY_SITES_SLOT)
    members = {t["label"]: [(m["label"], int(m["slot"]), m["offset"], m["type"]) for m in t["members"]] for t in data["types"].values() if "members" in t}
    assert members["struct ConsortiumRegistry.KeyRecord"] == [("orgId", 0, 0, "t_uint32"), ("addedBlock", 0, 4, "t_uint64"), ("revokedBlock", 0, 12, "t_uint64")]
    assert members["struct ConsortiumRegistry.Organisation"] == [("roles", 0, 0, "t_uint16"), ("suspended", 0, 2, "t_bool")]


PRAGUE_BLOCK = {
    "hash": None, "parentHash": "0x" + "11" * 32, "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
    "miner": "0x" + "00" * 20, "stateRoot": "0x" + "22" * 32, "transactionsRoot": "0x" + "33" * 32, "receiptsRoot": "0x" + "44" * 32,
    "logsBloom": "0x" + "00" * 256, "difficulty": "0x0", "number": "0x2a", "gasLimit": "0x3b9aca00", "gasUsed": "0x5208",
    "timestamp": "0x6b0b4f3a", "extraData": "0x", "mixHash": "0x" + "55" * 32, "nonce": "0x0000000000000000", "baseFeePerGas": "0x0",
    "withdrawalsRoot": "0x" + "66" * 32, "blobGasUsed": "0x0", "excessBlobGas": "0x0", "parentBeaconBlockRoot": "0x" + "00" * 32,
    "requestsHash": "0x" + "77" * 32, "totalDifficulty": "0x0", "size": "0x2ca", "uncles": [], "transactions": [], "withdrawals": [],
}  # fmt: skip


def _with_hash(block: dict) -> dict:
    names = [name for name, _ in v.HEADER_FIELDS if name in block]
    raw = rlp.encode([int(block[n], 16) if kind == "q" else bytes.fromhex(block[n][2:]) for n, kind in v.HEADER_FIELDS if n in names])
    return block | {"hash": "0x" + keccak(raw).hex()}


def test_headers_are_rebuilt_per_hardfork_and_unknown_fields_stop_the_builder():
    prague = _with_hash(PRAGUE_BLOCK)
    assert v.decode_header(encode_header(prague))["requestsHash"] == b"\x77" * 32
    cancun = _with_hash({k: val for k, val in PRAGUE_BLOCK.items() if k != "requestsHash"})
    assert len(v.decode_header(encode_header(cancun))) == 20
    with pytest.raises(NotProvable, match=r"'blockAccessListHash'.*does not know") as info:
        encode_header(prague | {"blockAccessListHash": "0x" + "88" * 32})
    assert info.value.code == "unknown_header_field"
    with pytest.raises(NotProvable) as info:
        encode_header(prague | {"gasUsed": "0x5209"})
    assert info.value.code == "header_hash_mismatch"
    with pytest.raises(v.CheckFailed, match="matches no hardfork"):
        v.decode_header(rlp.encode([b"\x01"] * 18))


def test_legacy_transaction_json_is_re_encoded_to_its_hash():
    key = Account.create()
    signed = key.sign_transaction({"nonce": 0, "gasPrice": 0, "gas": 21_000, "to": key.address, "value": 5, "data": b"", "chainId": 31337})
    decoded = rlp.decode(bytes(signed.raw_transaction))
    as_json = {
        "type": "0x0", "nonce": "0x0", "gasPrice": "0x0", "gas": hex(21_000), "to": key.address.lower(), "value": "0x5", "input": "0x",
        "v": hex(int.from_bytes(decoded[6], "big")), "r": "0x" + decoded[7].hex(), "s": "0x" + decoded[8].hex(),
    }  # fmt: skip
    assert encode_transaction(as_json) == bytes(signed.raw_transaction)


def test_the_verifier_needs_neither_web3_nor_a_database():
    probe = "import sys, partledger.proofs.verifier; print(sorted(m for m in ('web3', 'sqlalchemy', 'sqlmodel', 'fastapi', 'eth_account', 'trie', 'requests') if m in sys.modules))"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    assert out.strip() == "[]", out
    assert time.perf_counter() - started < 30
    imports = {m.group(1).split(".")[0] for m in re.finditer(r"^(?:from|import) ([\w.]+)", VERIFIER.read_text(), re.M)}
    third_party = imports - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"rlp", "eth_hash", "coincurve"}


def test_the_readme_states_the_verifier_size_and_dependencies():
    readme = (REPO_ROOT / "README.md").read_text()
    lines = len(VERIFIER.read_text().splitlines())
    stated = re.search(r"verifier\.py`[^\n]*?([\d,]+) lines", readme)
    assert stated, "the README's proofs section states the verifier's size"
    assert abs(int(stated.group(1).replace(",", "")) - lines) <= 50, f"README says {stated.group(1)} lines, verifier.py has {lines}"
    assert "rlp" in readme and "eth-hash" in readme and "coincurve" in readme
