"""Test kit for Besu QBFT: headers sealed by eth_account validator keys, and a JSON-RPC wrapper that shows Anvil's
chain as a QBFT chain. Built with plain RLP from the rules in ../shared/vectors/qbft/SOURCES.md, never with
partledger.proofs.qbft, which the tests check against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from partledger.proofs import verifier as v

BFT_MIX_HASH = b"ctical byzantine fault tolerance"  # Besu's BftHelpers.EXPECTED_MIX_HASH
EMPTY_TRIE = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
EMPTY_OMMERS = bytes.fromhex("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347")
NAMES = [name for name, _ in v.HEADER_FIELDS]
EXTRA = NAMES.index("extraData")


def address(key: LocalAccount) -> bytes:
    return bytes.fromhex(key.address[2:])


def quorum(n: int) -> int:
    return (2 * n + 2) // 3


def extra_data(validators: Sequence[bytes], *, vote: tuple[bytes, bool] | None = None, round_number: int = 0, seals: Sequence[bytes] = ()) -> bytes:
    """RLP([vanity, [validators], vote, round, [seals]]): no vote is [], add [addr, 0xff], drop [addr, ""]."""
    vote_item = [] if vote is None else [vote[0], b"\xff" if vote[1] else b""]
    return rlp.encode([bytes(32), list(validators), vote_item, round_number, list(seals)])


def with_extra(raw_header: bytes, extra: bytes) -> bytes:
    items = rlp.decode(raw_header)
    items[EXTRA] = extra
    return rlp.encode(items)


def _fields(raw_header: bytes) -> tuple[list[Any], list[Any]]:
    items = rlp.decode(raw_header)
    return items, rlp.decode(items[EXTRA])


def seal_digest(raw_header: bytes) -> bytes:
    """keccak256 of the header with its round kept and the seal list emptied."""
    items, (vanity, validators, vote, round_bytes, _seals) = _fields(raw_header)
    items[EXTRA] = rlp.encode([vanity, validators, vote, round_bytes, []])
    return keccak(rlp.encode(items))


def besu_hash(raw_header: bytes) -> bytes:
    """keccak256 of the header with round 0 (0x80) and the seal list emptied: the block hash."""
    items, (vanity, validators, vote, _round, _seals) = _fields(raw_header)
    items[EXTRA] = rlp.encode([vanity, validators, vote, b"", []])
    return keccak(rlp.encode(items))


def seal(digest: bytes, key: LocalAccount) -> bytes:
    """A commit seal: r || s || recovery id (0/1), over the digest itself (no prefix)."""
    signed = Account.unsafe_sign_hash(digest, key.key)
    return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])


def unsealed_header(*, number: int, parent_hash: bytes, proposer: bytes, validators: Sequence[bytes], vote: tuple[bytes, bool] | None = None,
                    round_number: int = 0, state_root: bytes = b"\x22" * 32, timestamp: int = 1_760_000_000) -> bytes:  # fmt: skip
    """A London-layout QBFT header without seals: its extraData lists `validators` sorted, as Besu writes them."""
    values = {
        "parentHash": parent_hash, "sha3Uncles": EMPTY_OMMERS, "miner": proposer, "stateRoot": state_root,
        "transactionsRoot": EMPTY_TRIE, "receiptsRoot": EMPTY_TRIE, "logsBloom": bytes(256), "difficulty": 1, "number": number,
        "gasLimit": 0x1FFFFFFFFFFFFF, "gasUsed": 0, "timestamp": timestamp + 5 * number,
        "extraData": extra_data(sorted(validators), vote=vote, round_number=round_number), "mixHash": BFT_MIX_HASH, "nonce": bytes(8),
        "baseFeePerGas": 0,
    }  # fmt: skip
    return rlp.encode([values[name] for name in NAMES[:16]])


def sealed(raw_header: bytes, seals: Sequence[bytes]) -> bytes:
    """The header with `seals` put in its extraData."""
    items, (vanity, validators, vote, round_bytes, _seals) = _fields(raw_header)
    return with_extra(raw_header, rlp.encode([vanity, validators, vote, round_bytes, list(seals)]))


def seal_by(raw_header: bytes, signers: Sequence[LocalAccount]) -> bytes:
    digest = seal_digest(raw_header)
    return sealed(raw_header, [seal(digest, key) for key in signers])


@dataclass
class Chain:
    """A QBFT chain built block by block: blocks 1, 2, ... after a genesis of `keys`, each sealed as the test says."""

    keys: list[LocalAccount]
    epoch_length: int = 30_000
    headers: list[bytes] = field(default_factory=list)

    def genesis(self, *, chain_id: int = 1337) -> dict[str, Any]:
        """A Besu genesis file (block-header validator selection) naming the keys as validators, unsorted."""
        listed = [address(key) for key in self.keys]
        return {
            "config": {"chainId": chain_id, "qbft": {"epochlength": self.epoch_length, "blockperiodseconds": 5}},
            "extraData": "0x" + extra_data(listed).hex(), "gasLimit": "0x1fffffffffffff", "difficulty": "0x1",
            "mixHash": "0x" + BFT_MIX_HASH.hex(), "alloc": {},
        }  # fmt: skip

    def copy(self) -> Chain:
        return Chain(self.keys, self.epoch_length, list(self.headers))

    @property
    def parent_hash(self) -> bytes:
        return besu_hash(self.headers[-1]) if self.headers else b"\x99" * 32

    def next(self, *, validators: Sequence[LocalAccount], signers: Sequence[LocalAccount], proposer: LocalAccount | None = None,
             vote: tuple[LocalAccount, bool] | None = None, round_number: int = 0, listed: Sequence[bytes] | None = None) -> bytes:  # fmt: skip
        """Appends the next block: proposed by `proposer` (the first validator by default), listing `validators`
        (or `listed`), carrying `vote` (key, add?), sealed by `signers` for its round."""
        header = unsealed_header(
            number=len(self.headers) + 1, parent_hash=self.parent_hash, proposer=address(proposer or validators[0]),
            validators=listed if listed is not None else [address(k) for k in validators],
            vote=None if vote is None else (address(vote[0]), vote[1]), round_number=round_number,
        )  # fmt: skip
        self.headers.append(seal_by(header, signers))
        return self.headers[-1]


class QbftRpc:
    """Anvil's chain shown as a Besu QBFT chain: eth_getBlockByNumber answers each block with QBFT extraData (the
    validators, a vote when the schedule has one, the seals of a quorum), the BFT mixHash and difficulty, its
    proposer as coinbase, the parent hashes relinked and the hash as Besu computes it. Transactions, receipts and
    state are Anvil's, so every proof under the header's roots still holds. Other calls go to the node as they are."""

    def __init__(self, inner: Any, keys: list[LocalAccount], *, genesis: int, votes: dict[int, tuple[int, int, bool]]) -> None:
        self.inner = inner
        self.keys = keys
        self.genesis = genesis  # how many of the keys are the genesis validators
        self.votes = votes  # block -> (proposer key index, subject key index, add?)
        self._headers: dict[int, dict[str, str]] = {}

    def call(self, method: str, params: list[Any]) -> Any:
        answer = self.inner.call(method, params)
        if method == "eth_getBlockByNumber" and answer is not None:
            return answer | self._rewritten(int(answer["number"], 16))
        return answer

    def validators_after(self, number: int) -> list[LocalAccount]:
        """The schedule's validators after block `number` (a vote counts at once: the tests vote with a majority)."""
        members = list(self.keys[: self.genesis])
        for block in sorted(b for b in self.votes if b <= number):
            _, subject, add = self.votes[block]
            tally = [b for b in self.votes if b <= block and self.votes[b][1] == subject and self.votes[b][2] == add]
            if len(tally) >= len(members) // 2 + 1:
                members = [*members, self.keys[subject]] if add else [k for k in members if k is not self.keys[subject]]
        return members

    def _rewritten(self, number: int) -> dict[str, str]:
        if number in self._headers:
            return self._headers[number]
        block = self.inner.call("eth_getBlockByNumber", [hex(number), False])
        fields = {name: block[name] for name in NAMES if name in block}
        if number == 0:
            fields |= {"extraData": "0x" + extra_data([address(k) for k in self.keys[: self.genesis]]).hex(), "miner": "0x" + "00" * 20}
        else:
            validators = self.validators_after(number - 1)
            proposer_index, subject, add = self.votes.get(number, (None, None, False))
            proposer = self.keys[proposer_index] if proposer_index is not None else validators[number % len(validators)]
            vote = None if subject is None else (address(self.keys[subject]), add)
            extra = extra_data(sorted(address(k) for k in validators), vote=vote)
            fields |= {"parentHash": self._rewritten(number - 1)["hash"], "miner": proposer.address.lower(), "extraData": "0x" + extra.hex()}
        fields |= {"mixHash": "0x" + BFT_MIX_HASH.hex(), "difficulty": "0x1"}
        names = [name for name in NAMES if name in fields]
        raw = rlp.encode([int(fields[n], 16) if kind == "q" else bytes.fromhex(fields[n][2:]) for n, kind in v.HEADER_FIELDS if n in names])
        if number > 0:
            raw = seal_by(raw, sorted(self.validators_after(number - 1), key=lambda k: k.address)[: quorum(len(self.validators_after(number - 1)))])
            fields["extraData"] = "0x" + rlp.decode(raw)[EXTRA].hex()
        fields["hash"] = "0x" + besu_hash(raw).hex()
        self._headers[number] = fields
        return fields
