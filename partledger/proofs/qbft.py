"""Besu QBFT finality for proof bundles: a block is final when validators the auditor trusts sealed it.

Where it sits: the offline verifier (`partledger.proofs.verifier`, check `finality`, trust anchor `--validators`)
imports it on demand, and the builder uses it to hash QBFT headers and to decide whether a bundle needs the `qbft`
section (docs/proof-bundle.md). Like the verifier it depends on `rlp`, `eth-hash` and `coincurve` only.

The rules, as Hyperledger Besu applies them (QbftExtraDataCodec, BftBlockHashing, QbftValidatorsValidationRule,
BftCoinbaseValidationRule, BftCommitSealsValidationRule, VoteTally, VoteTallyCache):

- A QBFT header's extraData is RLP([vanity (32 bytes), [validators], vote, round, [commit seals]]). No vote is an
  empty list; a vote is [address, 0xff] to add it or [address, ""] to drop it; the round is a minimal scalar; a seal
  is 65 bytes, r || s || recovery id (0 or 1).
- The block hash is keccak256 of the header whose extraData is re-encoded with round 0 and no seals, so the seals
  (and the round that produced them) are not part of it. A commit seal signs keccak256 of the header with the real
  round kept and no seals (no prefix).
- Block N needs seals from ceil(2n/3) distinct members of the n validators after block N-1, and no seal from anyone
  else; its proposer (coinbase) is one of them, and its extraData lists them, sorted.
- The proposer of a block may vote to add or drop an address. Once more than half of the validators voted the same
  way about one address, the change applies from the next block. An epoch block (number a multiple of the epoch
  length, block 0 included) casts no vote and discards the votes still open.

Every hex value these rules were checked against is in ../shared/vectors/qbft (tests/test_qbft.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import coincurve
import rlp
from eth_hash.auto import keccak

from partledger.proofs.verifier import HEADER_FIELDS, SECP256K1_N, CheckFailed, checksum, decode_header, from_hex

VANITY_LENGTH = 32
SEAL_LENGTH = 65
ADD = b"\xff"  # Besu's Vote.ADD_BYTE_VALUE; a drop is written as the empty string
MAX_ROUND = 2**31 - 1  # Besu reads the round as a Java int
DEFAULT_EPOCH_LENGTH = 30_000  # Besu's default qbft.epochlength
EXTRA_DATA = [name for name, _ in HEADER_FIELDS].index("extraData")


@dataclass(frozen=True)
class Vote:
    recipient: bytes
    add: bool


@dataclass(frozen=True)
class ExtraData:
    vanity: bytes
    validators: tuple[bytes, ...]
    vote: Vote | None
    round: int
    seals: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The extraData as it stands in the header."""
        return self._encode(self.round, self.seals)

    def encode_for_commit_seal(self) -> bytes:
        """What a commit seal signs: the real round kept, the seals an empty list."""
        return self._encode(self.round, ())

    def encode_on_chain(self) -> bytes:
        """What the block hash covers: round 0 (0x80) and the seals an empty list (0xc0)."""
        return self._encode(0, ())

    def _encode(self, round_number: int, seals: tuple[bytes, ...]) -> bytes:
        vote = [] if self.vote is None else [self.vote.recipient, ADD if self.vote.add else b""]
        return rlp.encode([self.vanity, list(self.validators), vote, round_number, list(seals)])


def decode_extra_data(raw: bytes) -> ExtraData:
    """A QBFT extraData; CheckFailed unless `raw` is exactly Besu's encoding of its five fields. An IBFT 2.0
    extraData (a 4-byte round, 0x80 for no vote, 0x00 for a drop) is refused."""
    try:
        items = rlp.decode(raw)
    except rlp.exceptions.DecodingError:
        raise CheckFailed("extraData is not RLP") from None
    if not isinstance(items, list) or len(items) != 5:
        raise CheckFailed("extraData is not a QBFT list of five items (vanity, validators, vote, round, seals)")
    vanity, validators, vote, round_bytes, seals = items
    if not isinstance(vanity, bytes) or len(vanity) != VANITY_LENGTH:
        raise CheckFailed(f"the QBFT vanity is not {VANITY_LENGTH} bytes")
    if not isinstance(validators, list) or any(not isinstance(a, bytes) or len(a) != 20 for a in validators):
        raise CheckFailed("the QBFT validators are not a list of 20-byte addresses")
    if not isinstance(vote, list) or len(vote) not in (0, 2) or (vote and (not isinstance(vote[0], bytes) or len(vote[0]) != 20 or vote[1] not in (ADD, b""))):
        raise CheckFailed("the QBFT vote is neither an empty list nor [address, 0xff (add) or empty (drop)]")
    if not isinstance(round_bytes, bytes) or round_bytes[:1] == b"\x00" or len(round_bytes) > 4:
        raise CheckFailed("the QBFT round is not a minimal scalar (an IBFT 2.0 extraData writes it in 4 bytes)")
    if int.from_bytes(round_bytes, "big") > MAX_ROUND:
        raise CheckFailed("the QBFT round is beyond a 32-bit integer")
    if not isinstance(seals, list) or any(not isinstance(s, bytes) or len(s) != SEAL_LENGTH for s in seals):
        raise CheckFailed(f"the QBFT commit seals are not a list of {SEAL_LENGTH}-byte signatures")
    extra = ExtraData(vanity, tuple(validators), Vote(vote[0], vote[1] == ADD) if vote else None, int.from_bytes(round_bytes, "big"), tuple(seals))
    if extra.encode() != raw:
        raise CheckFailed("extraData is not in Besu's canonical QBFT encoding")
    return extra


def header_extra_data(raw_header: bytes) -> ExtraData | None:
    """The QBFT extraData of a header (RLP), or None when the header is not a QBFT one (an Anvil or Ethereum header,
    whose extraData is empty or free bytes)."""
    items = rlp.decode(raw_header)
    if not isinstance(items, list) or len(items) <= EXTRA_DATA or not isinstance(items[EXTRA_DATA], bytes):
        return None
    try:
        return decode_extra_data(items[EXTRA_DATA])
    except CheckFailed:
        return None


def _hash_with(raw_header: bytes, extra_data: bytes) -> bytes:
    items = rlp.decode(raw_header)
    items[EXTRA_DATA] = extra_data
    return keccak(rlp.encode(items))


def block_hash(raw_header: bytes) -> bytes:
    """The block hash as the chain computes it: for a QBFT header keccak256 of the header with round 0 and no seals
    in its extraData (BftBlockHashing.calculateHashOfBftBlockOnchain); for any other header keccak256 of its RLP."""
    extra = header_extra_data(raw_header)
    return keccak(raw_header) if extra is None else _hash_with(raw_header, extra.encode_on_chain())


def commit_seal_hash(raw_header: bytes) -> bytes:
    """What each commit seal of a QBFT header signs: keccak256 of the header with its round and without seals."""
    extra = header_extra_data(raw_header)
    if extra is None:
        raise CheckFailed("not a QBFT header")
    return _hash_with(raw_header, extra.encode_for_commit_seal())


def recover_seal(digest: bytes, seal: bytes) -> bytes:
    """The address whose key made a commit seal (r || s || recovery id) of `digest`. Besu takes any r and s from 1
    to the curve order and recovery id 0 or 1 (a high s is the same key's signature; it does not change a block)."""
    if len(seal) != SEAL_LENGTH:
        raise CheckFailed(f"a commit seal is {SEAL_LENGTH} bytes, this one {len(seal)}")
    r, s, recovery = int.from_bytes(seal[:32], "big"), int.from_bytes(seal[32:64], "big"), seal[64]
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N) or recovery not in (0, 1):
        raise CheckFailed("a commit seal is not r || s || recovery id within the curve's range")
    try:
        key = coincurve.PublicKey.from_signature_and_message(seal, digest, hasher=None)
    except Exception:  # noqa: BLE001 - coincurve raises ValueError or its own errors for unrecoverable signatures
        raise CheckFailed("a commit seal recovers to no key") from None
    return keccak(key.format(compressed=False)[1:])[-20:]


def quorum(validators: int) -> int:
    """BftHelpers.calculateRequiredValidatorQuorum: ceil(2n/3)."""
    return -(-2 * validators // 3)


def committers(raw_header: bytes) -> list[bytes]:
    """The addresses that sealed a QBFT header, in the order of its seals."""
    digest = commit_seal_hash(raw_header)
    extra = header_extra_data(raw_header)
    assert extra is not None  # commit_seal_hash refused a header that is not QBFT
    return [recover_seal(digest, seal) for seal in extra.seals]


def _names(addresses: Any) -> str:
    return "[" + ", ".join(checksum(a) for a in sorted(addresses)) + "]"


def check_seals(raw_header: bytes, validators: set[bytes]) -> list[bytes]:
    """The committers of a QBFT header, after checking the header against the validators after its parent: its
    extraData lists exactly them (sorted), its proposer is one of them, and its seals come from ceil(2n/3)
    distinct members and nobody else."""
    fields = decode_header(raw_header)
    extra = decode_extra_data(fields["extraData"])
    if not validators:
        raise CheckFailed("no validators: a QBFT block needs at least one")
    if list(extra.validators) != sorted(validators):
        raise CheckFailed(f"its extraData lists the validators {_names(extra.validators)}, the votes since the trusted set give {_names(validators)}")
    if fields["miner"] not in validators:
        raise CheckFailed(f"its proposer (coinbase) {checksum(fields['miner'])} is not a validator")
    sealed_by = committers(raw_header)
    check_committers(sealed_by, validators)
    return sealed_by


def check_committers(sealed_by: list[bytes], validators: set[bytes]) -> None:
    """BftCommitSealsValidationRule: every committer a validator, none twice, at least ceil(2n/3) of them."""
    outsiders = [a for a in sealed_by if a not in validators]
    if outsiders:
        raise CheckFailed(f"a commit seal recovers to {checksum(outsiders[0])}, not a validator (a seal over another block or round recovers to an unrelated key)")
    if len(set(sealed_by)) != len(sealed_by):
        raise CheckFailed("two commit seals are by the same validator (duplicate committers)")
    need = quorum(len(validators))
    if len(sealed_by) < need:
        raise CheckFailed(f"{len(sealed_by)} commit seal(s), the quorum of {len(validators)} validators is {need}")


@dataclass
class ValidatorTally:
    """Besu's VoteTally for block-header validator selection: the validators after a block and the open votes."""

    validators: set[bytes]
    add_votes: dict[bytes, set[bytes]] = field(default_factory=dict)  # subject -> proposers voting to add it
    drop_votes: dict[bytes, set[bytes]] = field(default_factory=dict)

    def apply(self, *, number: int, proposer: bytes, vote: Vote | None, epoch_length: int) -> str | None:
        """The tally after block `number`; a description of the change when its vote changed the validators."""
        if number % epoch_length == 0:
            # VoteTallyCache starts afresh from the validators an epoch block lists (its own vote is ignored)
            self.add_votes.clear()
            self.drop_votes.clear()
            return None
        if vote is None:
            return None
        subject = vote.recipient
        adds = self.add_votes.setdefault(subject, set())
        drops = self.drop_votes.setdefault(subject, set())
        (adds if vote.add else drops).add(proposer)
        (drops if vote.add else adds).discard(proposer)
        limit = len(self.validators) // 2 + 1
        change = None
        if len(adds) >= limit:
            self.validators.add(subject)
            self._discard_votes_for(subject)
            change = f"{checksum(subject)} added in block {number}"
        if len(drops) >= limit:
            self.validators.discard(subject)
            self._discard_votes_for(subject)
            for votes in (*self.add_votes.values(), *self.drop_votes.values()):
                votes.discard(subject)  # a dropped validator's own open votes no longer count
            change = f"{checksum(subject)} dropped in block {number}"
        return change

    def _discard_votes_for(self, subject: bytes) -> None:
        self.add_votes.pop(subject, None)
        self.drop_votes.pop(subject, None)


# --- the trust anchor: the validators the auditor trusts ---------------------------------------------------------


@dataclass(frozen=True)
class TrustedValidators:
    """The validator set an auditor trusts, and after which block it holds (0 for a genesis file; None for a plain
    list: the block before the bundle's first QBFT header)."""

    validators: frozenset[bytes]
    after_block: int | None
    epoch_length: int
    chain_id: int | None
    source: str


def _address(text: Any) -> bytes:
    if not isinstance(text, str) or len(text) != 42 or not text.startswith("0x"):
        raise CheckFailed(f"not an address: {str(text)[:44]!r}")
    try:
        raw = bytes.fromhex(text[2:])
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise CheckFailed(f"not an address: {text!r}")
    if text[2:] not in (text[2:].lower(), text[2:].upper()) and checksum(raw) != text:
        raise CheckFailed(f"address with a wrong EIP-55 checksum: {text}")
    return raw


def trusted_validators(data: Any) -> TrustedValidators:
    """The validators of a `--validators` file: a Besu genesis file (the validators its extraData lists, after block
    0; its config's chain id and qbft.epochlength) or a JSON list of addresses."""
    if isinstance(data, list):
        addresses = [_address(item) for item in data]
        if not addresses or len(set(addresses)) != len(addresses):
            raise CheckFailed("the validator list is empty or names an address twice")
        return TrustedValidators(frozenset(addresses), None, DEFAULT_EPOCH_LENGTH, None, "the validator list")
    if not isinstance(data, dict) or not isinstance(data.get("extraData"), str):
        raise CheckFailed("a validators file is a Besu genesis file (with extraData) or a JSON list of addresses")
    config = data.get("config") or {}
    options = config.get("qbft") if isinstance(config, dict) else None
    if options is None and isinstance(config, dict) and not {"ibft2", "clique", "ethash"} & set(config):
        options = {}  # a genesis without a consensus section: Besu's QBFT defaults
    if not isinstance(options, dict):
        raise CheckFailed("the genesis file is not of a QBFT network (its config has no qbft section)")
    if "validatorcontractaddress" in options:
        raise CheckFailed("the genesis file selects validators by contract: a contract's validator set cannot be checked from headers")
    transitions = config.get("transitions")
    transitions = transitions.get("qbft") if isinstance(transitions, dict) else None
    if isinstance(transitions, list) and any(isinstance(t, dict) and {"validators", "validatorcontractaddress", "validatorselectionmode"} & set(t) for t in transitions):
        raise CheckFailed("the genesis file's transitions change the validators: not supported by this verifier")
    extra = decode_extra_data(from_hex(data["extraData"].lower()))
    if not extra.validators:
        raise CheckFailed("the genesis extraData lists no validators")
    epoch_length, chain_id = options.get("epochlength", DEFAULT_EPOCH_LENGTH), config.get("chainId", config.get("chainid"))
    if not isinstance(epoch_length, int) or isinstance(epoch_length, bool) or epoch_length < 1 or not (chain_id is None or isinstance(chain_id, int)):
        raise CheckFailed("the genesis config's qbft.epochlength or chain id is not a positive integer")
    return TrustedValidators(frozenset(extra.validators), 0, epoch_length, chain_id, "the genesis file")


# --- a chain of headers from the trusted validators to the bundle's block -----------------------------------------


@dataclass(frozen=True)
class Finality:
    """How a block was found final: by whom, under which validators, followed from where."""

    number: int
    signers: int
    validators: int
    round: int
    first: int  # the first header checked (the trusted validators are those after the block before it)
    changes: tuple[str, ...]

    @property
    def detail(self) -> str:
        votes = f"; validator changes: {', '.join(self.changes)}" if self.changes else ""
        return (f"block {self.number} sealed by {self.signers} of its {self.validators} validators (quorum {quorum(self.validators)}, "
                f"round {self.round}), the validator set followed over blocks {self.first}..{self.number}{votes}")  # fmt: skip


def link_headers(headers: list[bytes]) -> int:
    """Checks that `headers` are consecutive QBFT headers, each naming the one before as its parent (by Besu's block
    hash); the number of the first."""
    previous: tuple[int, bytes] | None = None
    for raw in headers:
        fields = decode_header(raw)
        number = fields["number"]
        try:
            decode_extra_data(fields["extraData"])
        except CheckFailed as exc:
            raise CheckFailed(f"block {number} is not a QBFT block: {exc}") from None
        if previous is not None and (number != previous[0] + 1 or fields["parentHash"] != previous[1]):
            raise CheckFailed(f"the QBFT header after block {previous[0]} does not name it as its parent")
        previous = (number, block_hash(raw))
    return decode_header(headers[0])["number"]


def verify_finality(headers: list[bytes], trusted: TrustedValidators, *, chain_id: int) -> Finality:
    """Checks `headers` (consecutive QBFT headers, the last one the bundle's block) from the trusted validators on:
    each is sealed by a quorum of the validators after its parent, and the votes are followed from block to block."""
    if trusted.chain_id is not None and trusted.chain_id != chain_id:
        raise CheckFailed(f"the genesis file is of chain {trusted.chain_id}, the bundle of chain {chain_id}")
    first = link_headers(headers)
    if trusted.after_block is not None and trusted.after_block != first - 1:
        raise CheckFailed(f"{trusted.source} gives the validators after block {trusted.after_block}, but the bundle's QBFT headers start at "
                          f"block {first}: fetch the bundle with --validators-from {trusted.after_block}")  # fmt: skip
    tally = ValidatorTally(set(trusted.validators))
    changes = []
    sealed_by: list[bytes] = []
    validators = 0
    for raw in headers:
        fields = decode_header(raw)
        try:
            sealed_by = check_seals(raw, tally.validators)
        except CheckFailed as exc:
            raise CheckFailed(f"block {fields['number']}: {exc}") from None
        validators = len(tally.validators)
        change = tally.apply(number=fields["number"], proposer=fields["miner"], vote=decode_extra_data(fields["extraData"]).vote, epoch_length=trusted.epoch_length)
        if change:
            changes.append(change)
    last = decode_header(headers[-1])
    return Finality(last["number"], len(sealed_by), validators, decode_extra_data(last["extraData"]).round, first, tuple(changes))
