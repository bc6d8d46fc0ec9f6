"""partledger.merkle: OpenZeppelin's StandardMerkleTree form, checked by hand, against @openzeppelin/merkle-tree run
with node, and against OpenZeppelin's MerkleProof on chain (EvidenceLedger.verifyBatchRecord)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from partledger.artifacts import REPO_ROOT
from partledger.errors import ValidationError
from partledger.ids import ascii32
from partledger.merkle import build_tree, leaf_hash, node_hash, process_proof, verify_proof
from tests.chainkit import Ledger

SCAN = ["bytes32", "uint64", "address"]

# Builds each tree with the real library and returns its node array, root, and proofs by index and by value.
OPENZEPPELIN_JS = """
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk)).on("end", () => {
  const out = JSON.parse(input).map(({ types, values }) => {
    const tree = StandardMerkleTree.of(values, types);
    return {
      root: tree.root,
      nodes: tree.dump().tree,
      proofsByIndex: values.map((_, i) => tree.getProof(i)),
      proofsByValue: values.map((value) => tree.getProof(value)),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def random_value(rng: random.Random, abi_type: str) -> Any:
    if abi_type == "bytes32":
        return rng.randbytes(32)
    if abi_type.startswith("uint"):
        bits = int(abi_type[4:])
        return rng.choice([0, 1, 2**bits - 1, rng.getrandbits(bits)])
    if abi_type == "address":
        return to_checksum_address(rng.randbytes(20))
    if abi_type == "string":
        return "".join(rng.choice("AZaz09-/ 汽配") for _ in range(rng.randrange(0, 40)))
    raise AssertionError(abi_type)


def as_json(value: Any) -> Any:
    """A value as the JS library takes it: hex for bytes, decimal strings for integers (no JS number limits)."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int):
        return str(value)
    return value


def hex_list(nodes: list[bytes] | tuple[bytes, ...]) -> list[str]:
    return ["0x" + node.hex() for node in nodes]


def scan_records(count: int, seed: int) -> list[tuple[bytes, int, str]]:
    rng = random.Random(seed)
    return [(rng.randbytes(32), rng.getrandbits(64), to_checksum_address(rng.randbytes(20))) for _ in range(count)]


# --- the form, by hand ---------------------------------------------------------------------------------------------


def test_leaf_is_double_keccak_of_abi_encoding() -> None:
    value = (b"\x11" * 32, 7, "0x000000000000000000000000000000000000dEaD")
    assert leaf_hash(SCAN, value) == keccak(keccak(encode(SCAN, list(value))))


def test_node_hash_hashes_the_pair_in_ascending_order() -> None:
    low, high = b"\x01" * 32, b"\xf0" * 32
    assert node_hash(low, high) == node_hash(high, low) == keccak(low + high)


def test_tree_of_one_value_is_its_leaf_with_empty_proof() -> None:
    tree = build_tree([(b"\x42" * 32,)], types=["bytes32"])
    assert tree.root == leaf_hash(["bytes32"], (b"\x42" * 32,))
    assert tree.proof((b"\x42" * 32,)) == []


def test_tree_sorts_leaves_and_lays_them_out_as_a_complete_binary_tree() -> None:
    values = [(bytes([byte]) * 32,) for byte in (3, 1, 2)]
    tree = build_tree(values, types=["bytes32"])
    low, mid, high = sorted(leaf_hash(["bytes32"], value) for value in values)
    # Five nodes: the leaves in reverse at the end, the two smallest paired under node 1.
    assert tree.nodes[2:] == (high, mid, low)
    assert tree.nodes[1] == node_hash(mid, low)
    assert tree.root == node_hash(tree.nodes[1], high)
    high_value = next(value for value in values if leaf_hash(["bytes32"], value) == high)
    low_value = next(value for value in values if leaf_hash(["bytes32"], value) == low)
    assert tree.proof(high_value) == [tree.nodes[1]]
    assert tree.proof(low_value) == [mid, high]


def test_proof_of_a_value_given_twice_is_the_proof_at_its_last_position() -> None:
    values = [(b"\x01" * 32,), (b"\x02" * 32,), (b"\x01" * 32,)]
    tree = build_tree(values, types=["bytes32"])
    assert tree.proof(values[0]) == tree.proof_at(2) != tree.proof_at(0)


def test_proof_fails_when_value_not_in_tree() -> None:
    tree = build_tree(scan_records(5, seed=1), types=SCAN)
    with pytest.raises(ValidationError) as info:
        tree.proof(scan_records(1, seed=2)[0])
    assert info.value.code == "not_in_tree"


def test_build_tree_fails_when_no_values() -> None:
    with pytest.raises(ValidationError) as info:
        build_tree([], types=SCAN)
    assert info.value.code == "empty_merkle_tree"


def test_verify_proof_rejects_tampered_value_proof_and_root() -> None:
    records = scan_records(9, seed=3)
    tree = build_tree(records, types=SCAN)
    proof = tree.proof(records[4])
    assert verify_proof(root=tree.root, types=SCAN, value=records[4], proof=proof)
    digest, count, site = records[4]
    assert not verify_proof(root=tree.root, types=SCAN, value=(digest, count + 1, site), proof=proof)
    assert not verify_proof(root=tree.root, types=SCAN, value=records[5], proof=proof)
    assert not verify_proof(root=tree.root, types=SCAN, value=records[4], proof=proof[:-1])
    tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert not verify_proof(root=tree.root, types=SCAN, value=records[4], proof=tampered)
    assert not verify_proof(root=keccak(tree.root), types=SCAN, value=records[4], proof=proof)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_every_value_proves_to_the_root_whatever_the_order(hashes: list[bytes], rng: random.Random) -> None:
    values = [(value,) for value in hashes]
    tree = build_tree(values, types=["bytes32"])
    for index, value in enumerate(values):
        assert process_proof(tree.leaf(index), tree.proof_at(index)) == tree.root
        assert verify_proof(root=tree.root, types=["bytes32"], value=value, proof=tree.proof(value))
    shuffled = list(values)
    rng.shuffle(shuffled)
    assert build_tree(shuffled, types=["bytes32"]).root == tree.root


# --- against the JavaScript library --------------------------------------------------------------------------------


def test_trees_and_proofs_match_openzeppelin_merkle_tree_js() -> None:
    node = shutil.which("node")
    assert node, "node is needed for the cross-check (npm ci installs @openzeppelin/merkle-tree)"
    rng = random.Random(20240611)
    cases: list[tuple[list[str], list[tuple[Any, ...]]]] = []
    for types in (["bytes32"], SCAN, ["address", "uint256"], ["string", "uint16"]):
        for size in (1, 2, 3, 4, 5, 7, 8, 13, 64, 101):
            cases.append((types, [tuple(random_value(rng, t) for t in types) for _ in range(size)]))
    duplicated = [tuple(random_value(rng, t) for t in SCAN) for _ in range(6)]
    cases.append((SCAN, [*duplicated, duplicated[2], duplicated[0]]))

    request = [
        {"types": types, "values": [[as_json(item) for item in value] for value in values]} for types, values in cases
    ]
    result = subprocess.run(
        [node, "-e", OPENZEPPELIN_JS],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    expected = json.loads(result.stdout)

    assert len(expected) == len(cases)
    for (types, values), js in zip(cases, expected, strict=True):
        tree = build_tree(values, types=types)
        assert "0x" + tree.root.hex() == js["root"], (types, len(values))
        assert hex_list(tree.nodes) == js["nodes"]
        assert [hex_list(tree.proof_at(index)) for index in range(len(values))] == js["proofsByIndex"]
        assert [hex_list(tree.proof(value)) for value in values] == js["proofsByValue"]


# --- against OpenZeppelin's MerkleProof on chain -------------------------------------------------------------------


@pytest.mark.chain
def test_evidence_ledger_accepts_our_proof_of_every_record_of_an_anchored_batch(ledger: Ledger) -> None:
    records = scan_records(13, seed=4)
    tree = build_tree(records, types=SCAN)
    ledger.act(
        ledger.orgs["maker"].key, ledger.evidence.functions.anchorBatch(tree.root, len(records), ascii32("scan"))
    )
    verify = ledger.evidence.functions.verifyBatchRecord
    for index, record in enumerate(records):
        assert verify(tree.root, tree.proof(record), leaf_hash(SCAN, record)).call() is True
        assert verify(tree.root, tree.proof_at(index), tree.leaf(index)).call() is True


@pytest.mark.chain
def test_evidence_ledger_accepts_empty_proof_of_a_single_record_batch(ledger: Ledger) -> None:
    tree = build_tree(scan_records(1, seed=5), types=SCAN)
    ledger.act(ledger.orgs["maker"].key, ledger.evidence.functions.anchorBatch(tree.root, 1, ascii32("scan")))
    assert ledger.evidence.functions.verifyBatchRecord(tree.root, [], tree.leaf(0)).call() is True


@pytest.mark.chain
def test_evidence_ledger_rejects_tampered_proofs_and_records(ledger: Ledger) -> None:
    records = scan_records(13, seed=6)
    tree = build_tree(records, types=SCAN)
    ledger.act(
        ledger.orgs["maker"].key, ledger.evidence.functions.anchorBatch(tree.root, len(records), ascii32("scan"))
    )
    verify = ledger.evidence.functions.verifyBatchRecord
    proof, leaf = tree.proof_at(7), tree.leaf(7)
    digest, count, site = records[7]
    assert verify(tree.root, proof, leaf).call() is True

    flipped = [proof[0], proof[1][:-1] + bytes([proof[1][-1] ^ 1]), *proof[2:]]
    assert verify(tree.root, flipped, leaf).call() is False
    assert verify(tree.root, proof[:-1], leaf).call() is False
    assert verify(tree.root, tree.proof_at(8), leaf).call() is False
    assert verify(tree.root, proof, leaf_hash(SCAN, (digest, count ^ 1, site))).call() is False
    # The single-hashed encoding is no leaf: the double hash keeps an inner node from passing for a record.
    assert verify(tree.root, proof, keccak(encode(SCAN, [digest, count, site]))).call() is False
    # A correct proof against a root nobody anchored proves nothing.
    other = build_tree(scan_records(13, seed=7), types=SCAN)
    assert verify(other.root, other.proof_at(0), other.leaf(0)).call() is False
