"""partledger.abi writes what eth-abi writes, or raises what eth-abi raises: for every type it writes itself
(bytes32, uintN, string, bytes, arrays of bytes32 or uintN), with values at and over their bounds, and for the types
it leaves to eth-abi."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode as eth_abi_encode
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from partledger.abi import _direct, encode

_UINTS = ["uint8", "uint32", "uint64", "uint256"]
_INTEGER = st.one_of(
    st.integers(min_value=-1, max_value=2**256), st.sampled_from([-1, 0, 255, 256, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**256 - 1, 2**256]), st.booleans(),
)  # fmt: skip
_WORD = st.binary(min_size=31, max_size=33)
_FIELD = st.one_of(
    st.tuples(st.just("bytes32"), _WORD),
    st.tuples(st.sampled_from(_UINTS), _INTEGER),
    st.tuples(st.just("string"), st.text(max_size=70)),
    st.tuples(st.just("bytes"), st.binary(max_size=70)),
    st.tuples(st.just("bytes32[]"), st.lists(_WORD, max_size=5)),
    st.tuples(st.sampled_from([f"{kind}[]" for kind in _UINTS]), st.lists(_INTEGER, max_size=5)),
    st.tuples(st.sampled_from(["string[]", "bytes32[][]", "address[]"]), st.just([])),  # empty arrays of other kinds: written here too
    st.tuples(st.just("address"), st.binary(min_size=20, max_size=20).map(to_checksum_address)),
    st.tuples(st.just("(bytes32,uint8)[]"), st.lists(st.tuples(_WORD, _INTEGER), max_size=2)),
)


@given(st.lists(_FIELD, min_size=1, max_size=6))
def test_encode_writes_or_refuses_what_eth_abi_does(fields: list[tuple[str, Any]]) -> None:
    types, values = [kind for kind, _ in fields], [value for _, value in fields]
    try:
        expected: bytes | Exception = eth_abi_encode(types, values)
    except Exception as exc:  # noqa: BLE001 - whatever eth-abi raises, the direct path must raise it too
        expected = exc
    if isinstance(expected, Exception):
        with pytest.raises(type(expected)):
            encode(types, values)
    else:
        assert encode(types, values) == expected


def test_a_200_part_registration_is_written_directly() -> None:
    serials = [bytes([index]) * 32 for index in range(200)]
    values = [9506000134352, b"L" * 32, serials]
    types = ["uint256", "bytes32", "bytes32[]"]
    assert _direct(types, values) is not None and encode(types, values) == eth_abi_encode(types, values)
