"""partledger.eip712's direct ForwardRequest digest and signer recovery against the general implementations they
replace on the relay's hot path: eth-account's typed-data encoder and eth-keys' recovery, over random requests and
random (valid and invalid) signatures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from eth_utils import keccak
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wallets.signer import LocalSigner
from partledger.eip712 import SECP256K1_HALF_N, Eip712Domain, ForwardRequest, forward_request_digest, forward_request_typed_data, recover_forward_request_signer

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: Account.create().address if raw == bytes(20) else "0x" + raw.hex())
domains = st.builds(Eip712Domain, name=st.text(max_size=40), version=st.text(max_size=8), chainId=st.integers(0, 2**256 - 1), verifyingContract=addresses)
requests = st.builds(
    ForwardRequest, sender=addresses, to=addresses, value=st.integers(0, 2**256 - 1), gas=st.integers(0, 2**256 - 1),
    nonce=st.integers(0, 2**256 - 1), deadline=st.integers(0, 2**48 - 1), data=st.binary(max_size=300),
)  # fmt: skip


def typed_digest(domain: Eip712Domain, request: ForwardRequest) -> bytes:
    signable = encode_typed_data(full_message=forward_request_typed_data(domain, request))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=300, deadline=None)
@given(domains, requests)
def test_the_direct_digest_equals_eth_accounts_typed_data_encoding(domain: Eip712Domain, request: ForwardRequest) -> None:
    assert forward_request_digest(domain, request) == typed_digest(domain, request)


@pytest.mark.parametrize("field, value", [("deadline", 2**48), ("nonce", 2**256), ("gas", -1), ("value", 2**256)])
def test_a_value_out_of_its_types_range_is_refused(field: str, value: int) -> None:
    domain = Eip712Domain("Forwarder", "1", 1, "0x" + "11" * 20)
    request = ForwardRequest(sender="0x" + "22" * 20, to="0x" + "33" * 20, value=0, gas=1, nonce=0, deadline=1, data=b"")
    with pytest.raises(ValueError):
        forward_request_digest(domain, ForwardRequest(**{**request.__dict__, field: value}))


@settings(max_examples=50, deadline=None)
@given(domains, requests)
def test_a_local_signer_signs_the_direct_digest_as_it_signs_the_typed_data(domain: Eip712Domain, request: ForwardRequest) -> None:
    """The custodial relay signs the digest (wallets.signer.LocalSigner.sign_eip712_digest): the very signature the
    typed data gets (RFC 6979: deterministic), recovering to the key."""
    signer = LocalSigner(Account.create())
    signature = signer.sign_eip712_digest(forward_request_digest(domain, request))
    assert signature == signer.sign_typed_data(forward_request_typed_data(domain, request))
    assert recover_forward_request_signer(domain, request, signature) == signer.address


def eth_keys_signer(digest: bytes, signature: bytes) -> str | None:
    """What the relay's recovery was before: eth-keys, with the forwarder's rules (v 27/28, low s, r and s not 0)."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if s > SECP256K1_HALF_N or r == 0 or s == 0:
        return None
    try:
        return keys.Signature(vrs=(signature[64] - 27, r, s)).recover_public_key_from_msg_hash(digest).to_checksum_address()
    except (BadSignature, ValueError):
        return None


@settings(max_examples=200, deadline=None)
@given(domains, requests, st.binary(min_size=32, max_size=32).filter(lambda key: 0 < int.from_bytes(key, "big") < 2**256 - 2**128))
def test_a_real_signature_recovers_to_its_signer(domain: Eip712Domain, request: ForwardRequest, key: bytes) -> None:
    account = Account.from_key(key)
    digest = forward_request_digest(domain, request)
    signed = Account.unsafe_sign_hash(digest, key)
    assert recover_forward_request_signer(domain, request, bytes(signed.signature)) == account.address
    assert recover_forward_request_signer(domain, request, bytes(signed.signature), digest=digest) == account.address


@settings(max_examples=500, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.one_of(
        st.binary(min_size=0, max_size=70),
        st.tuples(st.binary(min_size=64, max_size=64), st.sampled_from([0, 1, 27, 28, 29])).map(lambda rs_v: rs_v[0] + bytes([rs_v[1]])),
        st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.sampled_from([27, 28])).map(
            lambda t: t[0].to_bytes(32, "big") + t[1].to_bytes(32, "big") + bytes([t[2]])
        ),
    ),
)
@example(bytes(32), (2 * SECP256K1_HALF_N + 1).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b")  # r = n
@example(bytes(32), (2**256 - 1).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1c")
def test_any_signature_recovers_as_eth_keys_with_the_forwarders_rules(digest: bytes, signature: bytes) -> None:
    domain = Eip712Domain("Forwarder", "1", 1, "0x" + "11" * 20)
    request = ForwardRequest(sender="0x" + "22" * 20, to="0x" + "33" * 20, value=0, gas=1, nonce=0, deadline=1, data=b"")
    assert recover_forward_request_signer(domain, request, signature, digest=digest) == eth_keys_signer(digest, signature)


def test_a_high_s_twin_of_a_valid_signature_is_refused() -> None:
    """The same point signs with s and n - s; the forwarder (OpenZeppelin's ECDSA) takes only the low one."""
    domain = Eip712Domain("Forwarder", "1", 1, "0x" + "11" * 20)
    request = ForwardRequest(sender="0x" + "22" * 20, to="0x" + "33" * 20, value=0, gas=1, nonce=0, deadline=1, data=b"")
    account = Account.create()
    signature = bytes(Account.unsafe_sign_hash(forward_request_digest(domain, request), account.key).signature)
    n = 2 * SECP256K1_HALF_N + 1
    twin = signature[:32] + (n - int.from_bytes(signature[32:64], "big")).to_bytes(32, "big") + bytes([55 - signature[64]])
    assert recover_forward_request_signer(domain, request, signature) == account.address
    assert recover_forward_request_signer(domain, request, twin) is None


@pytest.mark.parametrize("package", ["partledger", "partledger_cli", "ledger_service", "indexer", "wallets", "labels"])
def test_every_stage_hashes_with_pysha3(package: str) -> None:
    """eth-hash takes pycryptodome's Keccak when nothing says otherwise, three times slower a hash; partledger says
    otherwise, and every stage imports it before its first hash."""
    probe = f"import {package}; from eth_utils import keccak; keccak(b''); from eth_hash.auto import keccak as k; print(k._backend.keccak256.__module__)"
    env = {key: value for key, value in os.environ.items() if key != "ETH_HASH_BACKEND"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert out == "eth_hash.backends.pysha3"
