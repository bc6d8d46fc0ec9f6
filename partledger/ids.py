"""GS1 identifiers and the ids PartLedger derives from them.

A part is a GTIN-14 (GS1 AI 01) plus a serial (AI 21); its on-chain id is
``keccak256(abi.encode(uint64 gtin, bytes32 serial))`` with the serial in ASCII, left-aligned and zero-padded,
exactly as PartLedger.sol computes it. A logistic unit is its SSCC (AI 00, 18 digits) stored under
``keccak256(abi.encode(uint64 0, bytes32 sscc))``, an id no part can have (no GTIN is zero). Lot codes (AI 10) travel as bytes32 the same way. VINs never travel in
clear: only ``keccak256(salt || VIN)``.
"""

from __future__ import annotations

import re

from eth_utils import keccak
from sha3 import keccak_256

from partledger.errors import ValidationError

# GS1 General Specifications, figure 7.11-1: the 82 characters allowed in AI 21 and AI 10.
GS1_CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
SERIAL_MAX_LENGTH = 20
LOT_MAX_LENGTH = 20
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit for the digits before it (weights 3,1,3,... from the right)."""
    digits = [int(digit) for digit in body]
    total = 3 * sum(digits[-1::-2]) + sum(digits[-2::-2])
    return (10 - total % 10) % 10


def normalize_gtin(value: str | int) -> str:
    """GTIN-8/12/13/14 as a 14-digit string, check digit verified; ValidationError otherwise."""
    text = str(value).strip()
    if not text.isdigit() or len(text) not in (8, 12, 13, 14):
        raise ValidationError("invalid_gtin", f"GTIN must be 8, 12, 13 or 14 digits, got {text!r}")
    gtin = text.zfill(14)
    if gtin_check_digit(gtin[:-1]) != int(gtin[-1]):
        raise ValidationError("invalid_gtin", f"GTIN {gtin} has a wrong check digit (expected {gtin_check_digit(gtin[:-1])})")
    if int(gtin) == 0:
        raise ValidationError("invalid_gtin", "GTIN must not be zero")
    return gtin


def normalize_sscc(value: str | int) -> str:
    """An SSCC as its 18 digits, check digit verified; ValidationError otherwise."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise ValidationError("invalid_sscc", f"SSCC must be up to 18 digits and not zero, got {text!r}")
    sscc = text.zfill(18)
    if gtin_check_digit(sscc[:-1]) != int(sscc[-1]):
        raise ValidationError("invalid_sscc", f"SSCC {sscc} has a wrong check digit (expected {gtin_check_digit(sscc[:-1])})")
    return sscc


def logistic_unit_id(sscc: str | int) -> bytes:
    """The on-chain id of the logistic unit `sscc` (PartLedger.logisticUnitId), after validating the SSCC."""
    return keccak_256(bytes(32) + int(normalize_sscc(sscc)).to_bytes(32, "big")).digest()


def _require_cset82(kind: str, code: str, value: str, max_length: int) -> None:
    if not 1 <= len(value) <= max_length:
        raise ValidationError(code, f"{kind} must be 1 to {max_length} characters, got {len(value)}")
    if GS1_CSET82.issuperset(value):  # the common case, without a loop in Python
        return
    bad = sorted({char for char in value if char not in GS1_CSET82})
    if bad:
        raise ValidationError(code, f"{kind} {value!r} has characters outside the GS1 set: {''.join(bad)!r}")


def validate_serial(serial: str) -> str:
    """A GS1 AI 21 serial: 1 to 20 characters of GS1 character set 82."""
    _require_cset82("serial", "invalid_serial", serial, SERIAL_MAX_LENGTH)
    return serial


def is_valid_serial(serial: str) -> bool:
    """Whether `serial` is one validate_serial accepts (a Digital Link's serial may be any text)."""
    try:
        validate_serial(serial)
    except ValidationError:
        return False
    return True


def validate_lot(lot: str) -> str:
    """A GS1 AI 10 batch/lot code: 1 to 20 characters of GS1 character set 82."""
    _require_cset82("lot", "invalid_lot", lot, LOT_MAX_LENGTH)
    return lot


def ascii32(text: str) -> bytes:
    """ASCII text left-aligned and zero-padded to 32 bytes (serials, lot codes, site names)."""
    raw = text.encode("ascii")
    if len(raw) > 32:
        raise ValidationError("too_long", f"{text!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def text32(raw: bytes) -> str:
    """The inverse of ascii32."""
    return bytes(raw).rstrip(b"\0").decode("ascii")


def part_id(gtin: str | int, serial: str) -> bytes:
    """The on-chain id of a part, after validating both identifiers."""
    return part_id_unchecked(int(normalize_gtin(gtin)), ascii32(validate_serial(serial)))


def part_id_unchecked(gtin: int, serial32: bytes) -> bytes:
    """The on-chain id from a numeric GTIN and a padded serial, without validating the identifiers (decoders, hot
    loops): abi.encode(uint64, bytes32) is the GTIN as a 32-byte word and the serial, hashed by the C keccak of
    safe-pysha3 directly, a tenth of eth_abi's encode and eth_utils' keccak (it runs once per scan and per
    registered part)."""
    if not 0 <= gtin < 2**64 or len(serial32) != 32:
        raise ValidationError("invalid_part", "a part id needs a uint64 GTIN and a 32-byte serial")
    return keccak_256(gtin.to_bytes(32, "big") + serial32).digest()


def normalize_vin(vin: str) -> str:
    """A 17-character VIN (ISO 3779: no I, O or Q), upper-cased."""
    text = vin.strip().upper()
    if not _VIN.match(text):
        raise ValidationError("invalid_vin", "VIN must be 17 characters of A-Z and 0-9 without I, O and Q")
    return text


def vin_hash(vin: str, salt: bytes) -> bytes:
    """The salted VIN hash that goes on chain: keccak256(salt || VIN). The salt is 32 random bytes kept private."""
    if len(salt) != 32:
        raise ValidationError("invalid_salt", "VIN salt must be 32 bytes")
    return keccak(salt + normalize_vin(vin).encode("ascii"))


# 49 CFR 565.15 (and GB 16735, which requires it of every vehicle sold in China): the VIN's ninth character is a
# check digit over the other sixteen. ISO 3779 leaves position 9 to the manufacturer; these markets fix it.
_VIN_VALUES = {**{str(digit): digit for digit in range(10)}, **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))),
               "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10)))}  # fmt: skip
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The check digit a VIN's ninth character must be: the weighted sum of its transliterated characters modulo
    11, written X for 10."""
    text = normalize_vin(vin)
    remainder = sum(_VIN_VALUES[char] * weight for char, weight in zip(text, _VIN_WEIGHTS)) % 11
    return "X" if remainder == 10 else str(remainder)


def checked_vin(vin: str) -> str:
    """A VIN normalized as normalize_vin does, with its check digit verified; ValidationError (invalid_vin, or
    vin_check_digit naming the digit expected) otherwise."""
    text = normalize_vin(vin)
    expected = vin_check_digit(text)
    if text[8] != expected:
        raise ValidationError("vin_check_digit", f"VIN {text} has check digit {text[8]}, but its other characters give {expected}")
    return text
