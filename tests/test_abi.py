"""partledger.abi writes what eth-abi writes, or raises what eth-abi raises: for every type it writes itself
(bytes32, uintN, address, string, bytes, arrays and tuples of those, the forwarder's ForwardRequestData[] among them),
with values at and over their bounds and addresses in every case, and for the types it leaves to eth-abi. It reads
what eth-abi reads, from those encodings and from them damaged, or fails as eth-abi fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_abi import decode as eth_abi_decode
from eth_abi import encode as eth_abi_encode
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from partledger.abi import _direct, _read, decode, encode

_UINTS = ["uint8", "uint32", "uint64", "uint256"]
_INTEGER = st.one_of(
    st.integers(min_value=-1, max_value=2**256), st.sampled_from([-1, 0, 255, 256, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**256 - 1, 2**256]), st.booleans(),
)  # fmt: skip
_WORD = st.binary(min_size=31, max_size=33)
_ADDRESS = st.one_of(
    st.binary(min_size=20, max_size=20).map(to_checksum_address),
    st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex()),  # all lower case: taken without a checksum
    st.binary(min_size=20, max_size=20).map(lambda raw: to_checksum_address(raw).swapcase().replace("0X", "0x")),  # mixed, wrong
    st.binary(min_size=19, max_size=21),  # bytes: 20 of them only
    st.sampled_from(["0x" + "ab" * 19, "0x" + "zz" * 20, "", 7]),
)
# The forwarder's ForwardRequestData: from, to, value, gas, deadline, data, signature
_REQUEST = st.tuples(_ADDRESS, _ADDRESS, _INTEGER, _INTEGER, _INTEGER, st.binary(max_size=70), st.binary(min_size=65, max_size=65))
_FIELD = st.one_of(
    st.tuples(st.just("bytes32"), _WORD),
    st.tuples(st.sampled_from(_UINTS), _INTEGER),
    st.tuples(st.just("string"), st.text(max_size=70)),
    st.tuples(st.just("bytes"), st.binary(max_size=70)),
    st.tuples(st.just("bytes32[]"), st.lists(_WORD, max_size=5)),
    st.tuples(st.sampled_from([f"{kind}[]" for kind in _UINTS]), st.lists(_INTEGER, max_size=5)),
    st.tuples(st.just("string[]"), st.lists(st.text(max_size=40), max_size=3)),
    st.tuples(st.just("bytes32[][]"), st.lists(st.lists(_WORD, max_size=3), max_size=3)),
    st.tuples(st.just("address[]"), st.lists(_ADDRESS, max_size=3)),
    st.tuples(st.just("address"), _ADDRESS),
    st.tuples(st.just("(bytes32,uint8)[]"), st.lists(st.tuples(_WORD, _INTEGER), max_size=2)),
    st.tuples(st.just("(bytes32,uint8)"), st.tuples(_WORD, _INTEGER)),
    st.tuples(st.just("(address,address,uint256,uint256,uint48,bytes,bytes)[]"), st.lists(_REQUEST, max_size=3)),
    st.tuples(st.just("(uint8,(bytes,uint8)[])"), st.tuples(_INTEGER, st.lists(st.tuples(st.binary(max_size=40), _INTEGER), max_size=2))),
    st.tuples(st.sampled_from(["bool", "bytes4", "uint8[2]"]), st.sampled_from([True, b"abcd", [1, 2]])),  # left to eth-abi
)


@given(st.lists(_FIELD, min_size=1, max_size=6))
def test_encode_writes_or_refuses_what_eth_abi_does(fields: list[tuple[str, Any]]) -> None:
    types, values = [kind for kind, _ in fields], [value for _, value in fields]
    agrees(lambda: encode(types, values), lambda: eth_abi_encode(types, values))


def agrees(ours: Callable[[], Any], eth_abis: Callable[[], Any]) -> None:
    """`ours()` returns what `eth_abis()` returns, or raises the type of error it raises."""
    try:
        expected = eth_abis()
    except Exception as exc:  # noqa: BLE001 - whatever eth-abi raises, ours must raise it too
        with pytest.raises(type(exc)):
            ours()
        return
    assert ours() == expected


def test_an_execute_batch_of_relayed_requests_is_written_directly() -> None:
    """The relayer's executeBatch(ForwardRequestData[], address) of 100 requests: written here, as eth-abi does."""
    request = (to_checksum_address(b"\x01" * 20), to_checksum_address(b"\x02" * 20), 0, 90_000, 2**40, b"\x03" * 100, b"\x04" * 65)
    types = ["(address,address,uint256,uint256,uint48,bytes,bytes)[]", "address"]
    values = [[request] * 100, to_checksum_address(b"\x05" * 20)]
    assert _direct(types, values) is not None and encode(types, values) == eth_abi_encode(types, values)


def test_a_200_part_registration_is_written_directly() -> None:
    serials = [bytes([index]) * 32 for index in range(200)]
    values = [9506000134352, b"L" * 32, serials]
    types = ["uint256", "bytes32", "bytes32[]"]
    assert _direct(types, values) is not None and encode(types, values) == eth_abi_encode(types, values)


@given(st.lists(_FIELD, min_size=1, max_size=6), st.data())
def test_decode_reads_what_eth_abi_reads_or_refuses_what_it_refuses(fields: list[tuple[str, Any]], data: st.DataObject) -> None:
    """Whatever eth-abi encodes of the drawn values, and that encoding with some bytes changed (cut, extended,
    flipped: pointers, lengths, padding), decodes as eth-abi's decode does, or fails as it fails."""
    types, values = [kind for kind, _ in fields], [value for _, value in fields]
    try:
        encoded = eth_abi_encode(types, values)
    except Exception:  # noqa: BLE001 - values eth-abi would not write: junk bytes instead
        encoded = data.draw(st.binary(max_size=400))
    damage = data.draw(st.sampled_from(["none", "flip", "cut", "extend"]))
    if damage == "flip" and encoded:
        at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded = encoded[:at] + bytes([encoded[at] ^ data.draw(st.integers(min_value=1, max_value=255))]) + encoded[at + 1 :]
    elif damage == "cut":
        encoded = encoded[: data.draw(st.integers(min_value=0, max_value=len(encoded)))]
    elif damage == "extend":
        encoded += data.draw(st.binary(min_size=1, max_size=64))
    agrees(lambda: decode(types, encoded), lambda: tuple(eth_abi_decode(types, encoded)))


def test_the_indexers_events_are_read_directly() -> None:
    """The types of PartLedger's events, canonically encoded: read here, not by eth-abi, and the same values."""
    types = ["(bytes32,uint16,uint32,uint32,bytes32,bytes32,bytes32,uint64)", "address", "bytes", "bytes32", "bytes32[]", "string", "uint64"]
    values = [(b"a" * 32, 1, 2, 3, b"b" * 32, b"c" * 32, b"d" * 32, 4), "0x" + "ab" * 20, b"xyz", b"e" * 32, [b"f" * 32], "h\u00e9llo", 7]
    encoded = eth_abi_encode(types, values)
    assert _read(types, encoded, 0) == tuple(eth_abi_decode(types, encoded)) == decode(types, encoded)
