"""Merkle trees in OpenZeppelin's StandardMerkleTree form, so that the chain and the JavaScript library agree.

Shared core: evidence anchoring builds the roots it anchors (batches of records, the parts a trade document covers)
with it, and the proof path (indexer, verify API, an auditor's offline check) later answers proofs from it. A proof
made here verifies unchanged in OpenZeppelin's `MerkleProof` on chain (EvidenceLedger.verifyBatchRecord) and in
`StandardMerkleTree.verify` of @openzeppelin/merkle-tree.

The form, as @openzeppelin/merkle-tree's `StandardMerkleTree.of(values, types)` builds it:
- a leaf is ``keccak256(keccak256(abi.encode(types, value)))`` (the double hash keeps a leaf from passing for a node);
- an inner node is ``keccak256(min(a, b) || max(a, b))`` (sorted pairs: a proof needs no left/right flags);
- leaves are sorted by hash (stable), then laid out as a complete binary tree in one array: root at 0, the children of
  node i at 2i+1 and 2i+2, the leaves at the end of the array in reverse order;
- a proof lists the siblings from the leaf up to the root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sha3 import keccak_256

from partledger.abi import encode as abi_encode
from partledger.errors import ValidationError


def keccak(data: bytes) -> bytes:
    return keccak_256(data).digest()


def leaf_hash(types: Sequence[str], value: Sequence[Any]) -> bytes:
    """The leaf of one record: keccak256(keccak256(abi.encode(types, value)))."""
    return keccak(keccak(abi_encode(types, value)))


def node_hash(a: bytes, b: bytes) -> bytes:
    """The parent of two nodes: keccak256 of the pair in ascending order."""
    return keccak(a + b) if a <= b else keccak(b + a)


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """The root that `proof` leads to from `leaf` (what MerkleProof.processProof computes on chain)."""
    node = leaf
    for sibling in proof:
        node = node_hash(node, sibling)
    return node


def verify_proof(*, root: bytes, types: Sequence[str], value: Sequence[Any], proof: Iterable[bytes]) -> bool:
    """Whether `value`, encoded with `types`, is a leaf of the tree with `root` by `proof`."""
    return process_proof(leaf_hash(types, value), proof) == bytes(root)


@dataclass(frozen=True)
class StandardMerkleTree:
    """A built tree: the node array (root first) and, for each value in the caller's order, its node index."""

    types: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    nodes: tuple[bytes, ...]
    value_nodes: tuple[int, ...]

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def leaf(self, index: int) -> bytes:
        """The leaf of the value at `index` (in the order given to build_tree)."""
        return self.nodes[self.value_nodes[index]]

    def proof(self, value: Sequence[Any]) -> list[bytes]:
        """The proof of `value`; ValidationError when it is not in the tree."""
        wanted = leaf_hash(self.types, value)
        # Like the JS library's hash lookup, a value given twice is proved at its last position.
        for index in reversed(range(len(self.values))):
            if self.leaf(index) == wanted:
                return self.proof_at(index)
        raise ValidationError("not_in_tree", "the value is not a leaf of this Merkle tree")

    def proof_at(self, index: int) -> list[bytes]:
        """The proof of the value at `index` (in the order given to build_tree): siblings from leaf to root."""
        node = self.value_nodes[index]
        proof = []
        while node > 0:
            sibling = node - 1 if node % 2 == 0 else node + 1
            proof.append(self.nodes[sibling])
            node = (node - 1) // 2
        return proof


def build_tree(values: Iterable[Sequence[Any]], *, types: Sequence[str]) -> StandardMerkleTree:
    """The tree of `values`, each encoded with `types`; ValidationError when there is no value.

    `values` are what eth-abi encodes: bytes for bytesN, int for uintN, a 0x address string for address.
    """
    rows = tuple(tuple(value) for value in values)
    if not rows:
        raise ValidationError("empty_merkle_tree", "a Merkle tree needs at least one value")
    leaves = [leaf_hash(types, row) for row in rows]
    order = sorted(range(len(rows)), key=leaves.__getitem__)  # stable, as the JS library's sort
    size = 2 * len(rows) - 1
    nodes: list[bytes] = [b""] * size
    value_nodes = [0] * len(rows)
    for position, index in enumerate(order):
        value_nodes[index] = size - 1 - position
        nodes[size - 1 - position] = leaves[index]
    for node in reversed(range(size - len(rows))):
        nodes[node] = node_hash(nodes[2 * node + 1], nodes[2 * node + 2])
    return StandardMerkleTree(types=tuple(types), values=rows, nodes=tuple(nodes), value_nodes=tuple(value_nodes))
