"""Besu QBFT finality in proofs: every public vector in ../shared/vectors/qbft gives its expected outcome; headers
sealed here by several validator keys are accepted or refused exactly as Besu would (quorum, outsiders, duplicates,
a seal over another block or round, votes and epochs); and a bundle of a QBFT chain (Anvil's chain shown through a
QBFT-sealing JSON-RPC wrapper) verifies through the CLI with --validators alone, a tampered one refused."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import coincurve
import pytest
import rlp
from eth_account import Account
from eth_utils import keccak
from typer.testing import CliRunner

from partledger.artifacts import REPO_ROOT
from partledger.errors import ConfigError
from partledger.proofs import qbft
from partledger.proofs import verifier as v
from partledger.proofs.builder import JsonRpc, ProofBuilder, dump_bundle, encode_header
from partledger_cli.main import app
from tests.chainkit import Ledger
from tests.qbftkit import EXTRA, Chain, QbftRpc, address, besu_hash, extra_data, seal, seal_by, seal_digest, sealed, unsealed_header, with_extra
from tests.vectors import vectors_dir

VECTORS = json.loads((vectors_dir() / "qbft" / "vectors.json").read_text())["vectors"]
KEYS = [Account.from_key(keccak(text=f"partledger qbft validator {i}")) for i in range(7)]
OUTSIDER = Account.from_key(keccak(text="partledger qbft outsider"))
runner = CliRunner()


def b(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def h(data: bytes) -> str:
    return "0x" + data.hex()


def vote_json(vote: qbft.Vote | None) -> dict[str, str] | None:
    return None if vote is None else {"recipient": h(vote.recipient), "type": "ADD" if vote.add else "DROP"}


# --- the public vectors -----------------------------------------------------------------------------------------


def check_decode(vector: dict[str, Any]) -> None:
    raw, expected = b(vector["inputs"]["extra_data"]), vector["expected"]
    extra = qbft.decode_extra_data(raw)
    decoded = {
        "vanity": h(extra.vanity), "vanity_len": len(extra.vanity), "validators": [h(a) for a in extra.validators],
        "validator_count": len(extra.validators), "vote": vote_json(extra.vote), "round": extra.round,
        "seals": [h(s) for s in extra.seals], "seal_count": len(extra.seals), "reencode_all_equals_input": extra.encode() == raw,
        "seals_rs_recid": [[int.from_bytes(s[:32], "big"), int.from_bytes(s[32:64], "big"), s[64]] for s in extra.seals],
    }  # fmt: skip
    assert {key: decoded[key] for key in expected} == expected


def check_encode(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    if "from_vector" in inputs:
        base = qbft.decode_extra_data(b(next(x for x in VECTORS if x["id"] == inputs["from_vector"])["inputs"]["extra_data"]))
        vote = [base.vote.recipient, b"\xff"] if base.vote and base.vote.add else []
        if inputs["encoding"] == "no_seals":  # the commit-seal hash's extraData: the round kept
            assert expected["rlp_items"][3] == f"writeIntScalar(0x{base.round:X})"
            encoded, wanted = base.encode_for_commit_seal(), rlp.encode([base.vanity, list(base.validators), vote, base.round, []])
        else:  # the block hash's extraData: round 0 written as 0x80
            assert inputs["encoding"] == "no_seals_no_round" and expected["rlp_items"][3] == "writeNull() (0x80)"
            encoded, wanted = base.encode_on_chain(), rlp.encode([base.vanity, list(base.validators), vote, b"", []])
        assert expected["rlp_items"][4] == "writeEmptyList()" and wanted.endswith(b"\xc0")
        assert encoded == wanted and expected["extra_data_from_items"]
        return
    assert inputs["encoding"] == "all" and inputs["vote"] is None and not inputs["seals"]
    extra = qbft.ExtraData(b(inputs["vanity"]), tuple(b(a) for a in inputs["validators"]), None, inputs["round"], ())
    assert h(extra.encode()) == expected["extra_data"]


def ibft2_items(raw: bytes) -> dict[str, Any]:
    """IBFT 2.0's reading of an extraData (test side): no vote 0x80, a drop 0x00, the round in 4 bytes."""
    vanity, validators, vote, round_bytes, seals = rlp.decode(raw)
    assert len(round_bytes) == 4
    kinds = {b"\xff": "ADD", b"\x00": "DROP"}
    return {
        "vanity": h(vanity), "validators": [h(a) for a in validators], "round": int.from_bytes(round_bytes, "big"),
        "vote": None if vote == b"" else {"recipient": h(vote[0]), "type": kinds[vote[1]]}, "seals": [h(s) for s in seals],
        "reencode_all_equals_input": rlp.encode([vanity, validators, vote, round_bytes, seals]) == raw,
    }  # fmt: skip


def check_ibft2_decode(vector: dict[str, Any]) -> None:
    raw, expected = b(vector["inputs"]["extra_data"]), vector["expected"]
    assert expected.pop("qbft_decoder_rejects") is True
    with pytest.raises(v.CheckFailed):
        qbft.decode_extra_data(raw)
    assert {key: ibft2_items(raw)[key] for key in expected} == expected


def check_ibft2_encode(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    validators = [b(a) for a in inputs["validators"]]
    ours = qbft.ExtraData(b(inputs["vanity"]), tuple(validators), None, inputs["round"], ()).encode()
    assert h(ours) != expected["extra_data"]  # a QBFT codec never writes IBFT 2.0's layout
    assert h(rlp.encode([b(inputs["vanity"]), validators, b"", inputs["round"].to_bytes(4, "big"), []])) == expected["extra_data"]
    with pytest.raises(v.CheckFailed, match="QBFT vote is neither"):  # 0x80 for no vote: IBFT 2.0's
        qbft.decode_extra_data(b(expected["extra_data"]))


def check_quorum(vector: dict[str, Any]) -> None:
    assert [qbft.quorum(n) for n in vector["inputs"]["validator_counts"]] == vector["expected"]["quorum"]


def check_quorum_ratio(vector: dict[str, Any]) -> None:
    """Each (validators, committers) case as a real header, sealed by that many of that many validator keys."""
    outcomes = []
    for validators, committers in vector["inputs"]["cases_validators_committers"]:
        keys = [Account.from_key((i + 1).to_bytes(32, "big")) for i in range(validators)]
        header = unsealed_header(number=9, parent_hash=b"\x01" * 32, proposer=address(keys[0]), validators=[address(k) for k in keys])
        try:
            qbft.check_seals(seal_by(header, keys[:committers]), {address(k) for k in keys})
            outcomes.append(True)
        except v.CheckFailed:
            outcomes.append(False)
    assert outcomes == vector["expected"]["valid"]


def check_key_to_address(vector: dict[str, Any]) -> None:
    digest = keccak(text=vector["id"])
    for key, expected in zip(vector["inputs"]["private_keys"], vector["expected"]["addresses"], strict=True):
        account = Account.from_key(key)
        assert account.address.lower() == expected
        assert h(qbft.recover_seal(digest, seal(digest, account))) == expected  # the seal recovery finds the key's address


def check_block_7528(vector: dict[str, Any]) -> None:
    raw, expected = b(vector["inputs"]["header_rlp"]), vector["expected"]
    fields = v.decode_header(raw)
    extra = qbft.decode_extra_data(fields["extraData"])
    validators = {b(a) for a in vector["inputs"]["validators"]}
    assert (fields["number"], fields["timestamp"], h(fields["stateRoot"]), extra.round) == (expected["number"], expected["timestamp"], expected["state_root"], expected["round"])
    assert [h(a) for a in extra.validators] == expected["validators"] and [h(s) for s in extra.seals] == expected["seals"]
    assert h(with_extra(raw, extra.encode_for_commit_seal())) == expected["header_rlp_without_seals"]
    assert h(qbft.commit_seal_hash(raw)) == expected["commit_seal_hash"]
    signers = qbft.check_seals(raw, validators)
    assert len(set(signers)) == len(signers) == expected["signer_count"] and set(signers) <= validators
    assert qbft.quorum(len(validators)) == expected["quorum"] and expected["commit_seals_valid"] and expected["signers_distinct"]
    assert expected["signers_subset_of_validators"]
    assert qbft.block_hash(raw) == keccak(with_extra(raw, extra.encode_on_chain())) != keccak(raw)

    def refit(round_number: int, seals: tuple[bytes, ...]) -> bytes:
        return with_extra(raw, qbft.ExtraData(extra.vanity, extra.validators, extra.vote, round_number, seals).encode())

    replaced = (validators - {signers[1]}) | {b"\x42" * 20}
    mutations: dict[str, Callable[[], Any]] = {
        "drop the last seal": lambda: qbft.check_seals(refit(1, extra.seals[:2]), validators),
        "repeat the first seal in place of the last": lambda: qbft.check_seals(refit(1, (*extra.seals[:2], extra.seals[0])), validators),
        "set round 1 -> 0 in extraData, keep seals": lambda: qbft.check_seals(refit(0, extra.seals), validators),
        "use on-chain (round-zeroed) hash as seal hash": lambda: qbft.check_committers([qbft.recover_seal(qbft.block_hash(raw), s) for s in extra.seals], validators),
        "verify against validator set with one signer replaced": lambda: qbft.check_committers(qbft.committers(raw), replaced),
    }
    assert [m["what"] for m in vector["mutations"]] == list(mutations) and {m["expected"] for m in vector["mutations"]} == {"reject"}
    reasons = ["quorum of 4 validators is 3", "duplicate committers", "not a validator", "not a validator", "not a validator"]
    for (what, mutate), reason in zip(mutations.items(), reasons, strict=True):
        with pytest.raises(v.CheckFailed, match=reason):
            mutate()
    assert qbft.block_hash(refit(0, extra.seals)) == qbft.block_hash(raw)  # the round is not in the block hash


def check_genesis_keys(vector: dict[str, Any]) -> None:
    raw, expected = b(vector["inputs"]["extra_data"]), vector["expected"]
    extra = qbft.decode_extra_data(raw)
    keys = {bytes.fromhex(Account.from_key(k).address[2:]) for k in vector["inputs"]["private_keys"]}
    assert expected["validator_set_equals_key_addresses"] and set(extra.validators) == keys
    assert (vote_json(extra.vote), extra.round, list(extra.seals)) == (expected["vote"], expected["round"], expected["seals"])
    assert qbft.trusted_validators({"extraData": h(raw)}).validators == keys


def check_ibft2_header_hashes(vector: dict[str, Any]) -> None:
    """Pins the header RLP with IBFT 2.0's hashing (3 and 4 extraData items), and shows a QBFT verifier does not
    take that header for a QBFT one."""
    header, expected = vector["inputs"]["header"], vector["expected"]
    names = ["parentHash", "ommersHash", "coinbase", *(name for name, _ in v.HEADER_FIELDS[3:15])]  # pre-London, Besu's names
    raw = rlp.encode([value.to_bytes(8, "big") if name == "nonce" else value if isinstance(value, int) else b(value) for name, value in ((n, header[n]) for n in names)])
    vanity, validators, vote, round_bytes, seals = rlp.decode(b(header["extraData"]))
    on_chain = keccak(with_extra(raw, rlp.encode([vanity, validators, vote])))
    committed = keccak(with_extra(raw, rlp.encode([vanity, validators, vote, round_bytes])))
    assert (h(on_chain), h(committed)) == (expected["on_chain_hash"], expected["committed_seal_hash"])
    keys = [coincurve.PrivateKey(i.to_bytes(32, "big")) for i in vector["inputs"]["committer_private_keys"]]
    addresses = [keccak(k.public_key.format(compressed=False)[1:])[-20:] for k in keys]
    assert expected["committers_are_addresses_of_keys_in_order"] and [qbft.recover_seal(committed, s) for s in seals] == addresses
    assert expected["seals_equal_rfc6979_signatures"] and [k.sign_recoverable(committed, hasher=None) for k in keys] == seals
    assert qbft.header_extra_data(raw) is None and qbft.block_hash(raw) == keccak(raw) != on_chain


def check_stale_digest(vector: dict[str, Any]) -> None:
    header, expected = rlp.encode(rlp.decode(b(vector["inputs"]["block_rlp"]))[0]), vector["expected"]
    extra = qbft.decode_extra_data(v.decode_header(header)["extraData"])
    digest = b(vector["inputs"]["digest"])
    assert extra.round == vector["inputs"]["round"] and (qbft.commit_seal_hash(header) == digest) is expected["qbft_commit_hash_equals_digest"]
    ibft2_style = keccak(with_extra(header, rlp.encode([extra.vanity, list(extra.validators), b"", extra.round.to_bytes(4, "big")])))
    assert (ibft2_style == digest) is expected["ibft2_style_commit_hash_equals_digest"]
    signer = qbft.recover_seal(digest, b(vector["inputs"]["commit_seal"]))
    assert expected["seal_signer_is_the_single_validator_and_coinbase"] and [signer] == list(extra.validators) == [v.decode_header(header)["miner"]]
    with pytest.raises(v.CheckFailed, match="not a validator"):  # sealed with it, the QBFT block is refused: it signs another hash
        qbft.check_seals(sealed(header, [b(vector["inputs"]["commit_seal"])]), {signer})


CHECKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "qbft_extradata_decode": check_decode,
    "qbft_extradata_encode": check_encode,
    "ibft2_extradata_decode": check_ibft2_decode,
    "ibft2_extradata_encode": check_ibft2_encode,
    "quorum": check_quorum,
    "quorum_ratio": check_quorum_ratio,
    "key_to_address": check_key_to_address,
    "qbft_commit_seals": check_block_7528,
    "genesis_validators_from_keys": check_genesis_keys,
    "ibft2_header_hashes": check_ibft2_header_hashes,
    "stale_qbft_message_commit": check_stale_digest,
}


@pytest.mark.parametrize("vector", VECTORS, ids=[x["id"] for x in VECTORS])
def test_every_public_vector_gives_its_expected_outcome(vector: dict[str, Any]):
    assert vector["kind"] in CHECKERS, f"no check for vectors of kind {vector['kind']}"
    CHECKERS[vector["kind"]](copy.deepcopy(vector))


def test_the_genesis_examples_are_trust_anchors_or_refused():
    folder = vectors_dir() / "qbft"
    genesis = json.loads((folder / "genesis-example.json").read_text())
    trusted = qbft.trusted_validators(genesis)
    assert (len(trusted.validators), trusted.after_block, trusted.epoch_length, trusted.chain_id) == (4, 0, 30_000, 1337)
    contract_mode = next(x for x in VECTORS if x["id"] == "besu-genesis-validator-contract-mode")["inputs"]["extra_data"]
    with pytest.raises(v.CheckFailed, match="no validators"):
        qbft.trusted_validators({"config": {"qbft": {}}, "extraData": contract_mode})
    with pytest.raises(v.CheckFailed, match="by contract"):
        qbft.trusted_validators(genesis | {"config": {"qbft": {"validatorcontractaddress": "0x" + "00" * 20}}})
    with pytest.raises(v.CheckFailed, match="not of a QBFT network"):
        qbft.trusted_validators(genesis | {"config": {"ibft2": {}}})
    with pytest.raises(v.CheckFailed, match="change the validators"):
        qbft.trusted_validators(genesis | {"config": genesis["config"] | {"transitions": {"qbft": [{"block": 10, "validators": []}]}}})


def test_the_cli_refuses_an_unusable_validators_file_in_one_line(tmp_path: Path):
    contract_mode = next(x for x in VECTORS if x["id"] == "besu-docs-qbft-genesis-contract-mode")["inputs"]["extra_data"]
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps({"config": {"chainId": 1337, "qbft": {"validatorcontractaddress": "0x" + "00" * 19 + "01"}}, "extraData": contract_mode}))
    result = runner.invoke(app, ["proof", "verify", str(tmp_path / "bundle.json"), "--validators", str(genesis)])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == f"unusable validators file {genesis}: the genesis file selects validators by contract: a contract's validator set cannot be checked from headers"


# --- headers sealed here ------------------------------------------------------------------------------------------

FOUR = KEYS[:4]


def finality(chain: Chain, headers: list[bytes] | None = None, anchor: Any = None) -> qbft.Finality:
    trusted = qbft.trusted_validators(anchor if anchor is not None else chain.genesis())
    return qbft.verify_finality(headers if headers is not None else chain.headers, trusted, chain_id=1337)


def test_a_block_sealed_by_a_quorum_of_the_validators_is_final():
    chain = Chain(KEYS[:4])
    chain.next(validators=FOUR, signers=FOUR[1:])
    final = finality(chain)
    assert (final.number, final.signers, final.validators, final.round) == (1, 3, 4, 0)
    assert "block 1 sealed by 3 of its 4 validators (quorum 3, round 0)" in final.detail
    assert qbft.block_hash(chain.headers[0]) == besu_hash(chain.headers[0]) != keccak(chain.headers[0])


def test_a_block_short_of_the_quorum_is_refused():
    chain = Chain(KEYS[:4])
    chain.next(validators=FOUR, signers=FOUR[:2])
    with pytest.raises(v.CheckFailed, match=r"block 1: 2 commit seal\(s\), the quorum of 4 validators is 3"):
        finality(chain)


def test_a_seal_from_a_non_validator_is_refused_even_beside_a_quorum():
    chain = Chain(KEYS[:4])
    chain.next(validators=FOUR, signers=[*FOUR[:3], OUTSIDER])
    with pytest.raises(v.CheckFailed, match=f"recovers to {OUTSIDER.address}, not a validator"):
        finality(chain)


def test_a_duplicated_seal_is_refused_also_as_its_high_s_twin():
    header = unsealed_header(number=1, parent_hash=b"\x99" * 32, proposer=address(FOUR[0]), validators=[address(k) for k in FOUR])
    digest = seal_digest(header)
    first, second = seal(digest, FOUR[0]), seal(digest, FOUR[1])
    twin = first[:32] + (v.SECP256K1_N - int.from_bytes(first[32:64], "big")).to_bytes(32, "big") + bytes([first[64] ^ 1])
    assert qbft.recover_seal(digest, twin) == address(FOUR[0])
    for seals in ([first, second, first], [first, second, twin]):
        with pytest.raises(v.CheckFailed, match="duplicate committers"):
            qbft.check_seals(sealed(header, seals), {address(k) for k in FOUR})


def test_a_seal_over_another_block_is_refused():
    header = unsealed_header(number=1, parent_hash=b"\x99" * 32, proposer=address(FOUR[0]), validators=[address(k) for k in FOUR])
    other = unsealed_header(number=1, parent_hash=b"\x99" * 32, proposer=address(FOUR[0]), validators=[address(k) for k in FOUR], state_root=b"\x23" * 32)
    seals = [seal(seal_digest(header), k) for k in FOUR[:2]] + [seal(seal_digest(other), FOUR[2])]
    with pytest.raises(v.CheckFailed, match="not a validator"):
        qbft.check_seals(sealed(header, seals), {address(k) for k in FOUR})


def test_a_changed_round_keeps_the_block_hash_but_no_seal_holds():
    chain = Chain(KEYS[:4])
    raw = chain.next(validators=FOUR, signers=FOUR[:3], round_number=0)
    vanity, validators, vote, _round, seals = rlp.decode(rlp.decode(raw)[EXTRA])
    moved = with_extra(raw, rlp.encode([vanity, validators, vote, 1, seals]))
    assert qbft.block_hash(moved) == qbft.block_hash(raw) and qbft.commit_seal_hash(moved) != qbft.commit_seal_hash(raw)
    with pytest.raises(v.CheckFailed, match="not a validator"):
        finality(chain, [moved])
    resealed = Chain(KEYS[:4])
    resealed.next(validators=FOUR, signers=FOUR[:3], round_number=1)  # sealed in round 1: the seals sign that round
    assert finality(resealed).round == 1


def test_an_added_validator_raises_the_quorum_of_the_next_block():
    five, newcomer = KEYS[:5], KEYS[4]
    chain = Chain(KEYS[:4])
    for proposer in FOUR[:3]:  # 3 of 4 validators vote to add the newcomer: more than half, so after the 3rd vote
        chain.next(validators=FOUR, signers=FOUR[:3], proposer=proposer, vote=(newcomer, True))
    assert finality(chain).validators == 4
    short = chain.copy()
    short.next(validators=five, signers=FOUR[:3])  # the quorum of 4, not of 5
    with pytest.raises(v.CheckFailed, match=r"block 4: 3 commit seal\(s\), the quorum of 5 validators is 4"):
        finality(short)
    stale = chain.copy()
    stale.next(validators=FOUR, signers=FOUR[:3])  # still listing the old set
    with pytest.raises(v.CheckFailed, match="block 4: its extraData lists the validators"):
        finality(stale)
    chain.next(validators=five, signers=[newcomer, *FOUR[1:3], FOUR[0]], proposer=newcomer)
    final = finality(chain)
    assert (final.signers, final.validators) == (4, 5) and final.changes == (f"{newcomer.address} added in block 3",)


def test_a_dropped_validator_lowers_the_quorum_and_its_seal_no_longer_counts():
    leaving, three = FOUR[3], FOUR[:3]
    chain = Chain(KEYS[:4])
    for proposer in three:
        chain.next(validators=FOUR, signers=FOUR[:3], proposer=proposer, vote=(leaving, False))
    before = chain.copy()
    chain.next(validators=three, signers=three[:2])  # 2 of 3 is the quorum now; 2 of 4 was not
    final = finality(chain)
    assert (final.signers, final.validators) == (2, 3) and final.changes == (f"{leaving.address} dropped in block 3",)
    before.next(validators=three, signers=[*three[:2], leaving])
    with pytest.raises(v.CheckFailed, match=f"block 4: a commit seal recovers to {leaving.address}, not a validator"):
        finality(before)


def test_votes_still_open_at_an_epoch_block_are_discarded():
    newcomer = KEYS[4]
    chain = Chain(KEYS[:4], epoch_length=3)
    chain.next(validators=FOUR, signers=FOUR[:3], proposer=FOUR[0], vote=(newcomer, True))
    chain.next(validators=FOUR, signers=FOUR[:3], proposer=FOUR[1], vote=(newcomer, True))
    chain.next(validators=FOUR, signers=FOUR[:3], proposer=FOUR[2], vote=(newcomer, True))  # block 3: an epoch block, its vote ignored
    chain.next(validators=FOUR, signers=FOUR[:3], proposer=FOUR[3], vote=(newcomer, True))  # 1 open vote, not 4
    added = chain.copy()
    chain.next(validators=FOUR, signers=FOUR[:3])
    assert finality(chain).validators == 4
    added.next(validators=KEYS[:5], signers=KEYS[:4])
    with pytest.raises(v.CheckFailed, match="block 5: its extraData lists the validators"):
        finality(added)


def test_a_proposer_outside_the_validators_is_refused():
    chain = Chain(KEYS[:4])
    chain.next(validators=FOUR, signers=FOUR[:3], proposer=OUTSIDER)
    with pytest.raises(v.CheckFailed, match=f"proposer \\(coinbase\\) {OUTSIDER.address} is not a validator"):
        finality(chain)


def test_a_header_that_does_not_name_its_parent_is_refused():
    chain = Chain(KEYS[:4])
    chain.next(validators=FOUR, signers=FOUR[:3])
    chain.headers.append(seal_by(unsealed_header(number=2, parent_hash=b"\x01" * 32, proposer=address(FOUR[0]), validators=[address(k) for k in FOUR]), FOUR[:3]))
    with pytest.raises(v.CheckFailed, match="after block 1 does not name it as its parent"):
        finality(chain)


def test_a_genesis_anchor_needs_the_headers_from_block_1_and_a_list_holds_before_the_first_header():
    chain = Chain(KEYS[:4])
    for _ in range(3):
        chain.next(validators=FOUR, signers=FOUR[:3])
    with pytest.raises(v.CheckFailed, match="after block 0, but the bundle's QBFT headers start at block 3: fetch the bundle with --validators-from 0"):
        finality(chain, chain.headers[2:])
    assert finality(chain, chain.headers[2:], anchor=[k.address for k in FOUR]).first == 3
    assert finality(chain, anchor=[k.address.lower() for k in reversed(FOUR)]).number == 3
    with pytest.raises(v.CheckFailed, match="lists the validators"):
        finality(chain, chain.headers[2:], anchor=[k.address for k in KEYS[:5]])
    text = FOUR[0].address
    letter = next(i for i, c in enumerate(text) if i > 1 and c.isalpha())
    with pytest.raises(v.CheckFailed, match="wrong EIP-55 checksum"):
        qbft.trusted_validators([text[:letter] + text[letter].swapcase() + text[letter + 1 :]])
    with pytest.raises(v.CheckFailed, match="of chain 1337, the bundle of chain 31337"):
        qbft.verify_finality(chain.headers, qbft.trusted_validators(chain.genesis()), chain_id=31337)


def test_extra_data_must_be_besus_canonical_encoding():
    validators = [address(k) for k in FOUR]
    good = extra_data(validators, vote=(address(KEYS[5]), False), round_number=3)
    assert qbft.decode_extra_data(good).vote == qbft.Vote(address(KEYS[5]), False)
    vanity, listed, vote, round_bytes, seals = rlp.decode(good)
    for bad, why in (
        (rlp.encode([vanity, listed, [vote[0], b"\x00"], round_bytes, seals]), "vote"),  # IBFT 2.0's drop byte
        (rlp.encode([vanity, listed, b"", round_bytes, seals]), "vote"),  # IBFT 2.0's no vote
        (rlp.encode([vanity[:31], listed, vote, round_bytes, seals]), "vanity"),
        (rlp.encode([vanity, listed, vote, b"\x00\x03", seals]), "round"),
        (rlp.encode([vanity, listed, vote, round_bytes, seals, b""]), "five items"),
        (rlp.encode([vanity, listed, vote, round_bytes, [b"\x01" * 64]]), "65-byte"),
        (good + b"\x00", "not RLP"),
    ):
        with pytest.raises(v.CheckFailed, match=why):
            qbft.decode_extra_data(bad)


def test_the_qbft_module_needs_what_the_verifier_needs_and_nothing_more():
    source = (REPO_ROOT / "partledger" / "proofs" / "qbft.py").read_text()
    imports = {m.group(1) for m in re.finditer(r"^(?:from|import) ([\w.]+)", source, re.M)}
    assert {name.split(".")[0] for name in imports} - set(sys.stdlib_module_names) - {"__future__"} == {"rlp", "eth_hash", "coincurve", "partledger"}
    assert {name for name in imports if name.startswith("partledger")} == {"partledger.proofs.verifier"}


def test_the_builder_rebuilds_a_qbft_header_to_besus_hash():
    chain = Chain(KEYS[:4])
    raw = chain.next(validators=FOUR, signers=FOUR[:3])
    fields = v.render_header(v.decode_header(raw))
    assert encode_header(fields | {"hash": h(besu_hash(raw)), "size": "0x1"}) == raw
    with pytest.raises(Exception, match="does not hash"):
        encode_header(fields | {"hash": h(keccak(raw))})


# --- a QBFT bundle, end to end ------------------------------------------------------------------------------------

GENESIS_VALIDATORS = 4
VOTES = {1: (0, 4, True), 2: (1, 4, True), 3: (2, 4, True), 4: (1, 0, False), 5: (2, 0, False), 6: (3, 0, False)}  # add key 4, drop key 0


@pytest.mark.chain
def test_a_qbft_bundle_verifies_with_validators_alone_and_a_tampered_one_is_refused(ledger: Ledger, tmp_path: Path):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["Q-1", "Q-2"], lot="LOT-QBFT")
    shipped = ledger.act(maker.key, ledger.parts.functions.shipParts(ids, ledger.orgs["warehouse"].id, b"\x0e" * 32))
    assert shipped["blockNumber"] > max(VOTES)
    builder = ProofBuilder(rpc_url=ledger.w3.provider.endpoint_uri, manifest=ledger.manifest)
    rpc = QbftRpc(JsonRpc(ledger.w3.provider.endpoint_uri), KEYS[:5], genesis=GENESIS_VALIDATORS, votes=VOTES)
    builder.rpc = rpc  # type: ignore[assignment] - the wrapper has JsonRpc's one method
    bundle = builder.event(bytes(shipped["transactionHash"]), shipped["logs"][0]["logIndex"])
    number = bundle["block"]["number"]
    assert len(bundle["qbft"]["headers"]) == number - 1 and bundle["block"]["hash"] == rpc.call("eth_getBlockByNumber", [hex(number), False])["hash"]
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(Chain(KEYS[:GENESIS_VALIDATORS]).genesis(chain_id=ledger.manifest.chain_id)))
    validators_list = tmp_path / "validators.json"
    validators_list.write_text(json.dumps([k.address for k in KEYS[:GENESIS_VALIDATORS]]))
    path = tmp_path / "bundle.json"
    path.write_text(dump_bundle(bundle))

    for anchor in (genesis, validators_list):
        result = runner.invoke(app, ["proof", "verify", str(path), "--validators", str(anchor), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        checks = {c["name"]: c["detail"] for c in json.loads(result.output)["checks"]}
        assert list(checks) == ["format", "header", "finality", "anchor", "transaction", "receipt", "event", "registry", "signers"]
        assert f"block {number} sealed by 3 of its 4 validators" in checks["finality"]
        assert f"{KEYS[4].address} added in block 3" in checks["finality"] and f"{KEYS[0].address} dropped in block 6" in checks["finality"]
        assert f"block {number} is final" in checks["anchor"]
    done = subprocess.run([sys.executable, "-m", "partledger.proofs.verifier", str(path), "--validators", str(genesis)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0 and "[PASS] finality" in done.stdout, done.stdout + done.stderr
    trusted_hash = runner.invoke(app, ["proof", "verify", str(path), "--trusted-block", f"{number}:{bundle['block']['hash']}"], catch_exceptions=False)
    assert trusted_hash.exit_code == 0, trusted_hash.output

    # from the validators after block 3 (the newcomer just added): a list anchors it, the genesis no longer does
    builder.qbft_from = 3
    later = builder.event(bytes(shipped["transactionHash"]), shipped["logs"][0]["logIndex"])
    assert len(later["qbft"]["headers"]) == number - 4
    after_3 = v.TrustAnchors(validators=[k.address for k in KEYS[:5]])
    assert v.verify_bundle(later, anchors=after_3).ok
    refused = v.verify_bundle(later, anchors=v.TrustAnchors(validators=json.loads(genesis.read_text())))
    assert refused.failed == ["finality", "anchor"] and "fetch the bundle with --validators-from 0" in refused.checks[2].detail

    # one seal taken out of the block's header: the block hash is the same (seals are not in it), the quorum is not
    tampered = copy.deepcopy(bundle)
    raw = b(bundle["block"]["header"])
    vanity, listed, vote, round_bytes, seals = rlp.decode(rlp.decode(raw)[EXTRA])
    fewer = with_extra(raw, rlp.encode([vanity, listed, vote, round_bytes, seals[:-1]]))
    tampered["block"] |= {"header": h(fewer), "fields": v.render_header(v.decode_header(fewer))}
    assert besu_hash(fewer) == b(bundle["block"]["hash"])
    path.write_text(dump_bundle(tampered))
    result = runner.invoke(app, ["proof", "verify", str(path), "--validators", str(genesis)], catch_exceptions=False)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == f"INVALID: failed finality, anchor: finality: block {number}: 2 commit seal(s), the quorum of 4 validators is 3", result.output

    other = tmp_path / "other.json"  # another network's validators
    other.write_text(json.dumps(Chain(KEYS[2:6]).genesis(chain_id=ledger.manifest.chain_id)))
    path.write_text(dump_bundle(bundle))
    result = runner.invoke(app, ["proof", "verify", str(path), "--validators", str(other)], catch_exceptions=False)
    assert result.exit_code == 1 and "INVALID: failed finality, anchor: finality: block 1: its extraData lists the validators" in result.output
