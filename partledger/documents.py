"""Salted document hashes: what goes on chain for a trade document (never its content).

doc_hash = keccak256(salt || keccak256(content)), with a 32-byte random salt kept by the parties and handed to
whoever must verify (an auditor holding the PDF and the salt recomputes the hash and finds the anchor).
"""

from __future__ import annotations

import secrets

from eth_utils import keccak

from partledger.errors import ValidationError


def new_salt() -> bytes:
    return secrets.token_bytes(32)


def salted_document_hash(content: bytes, salt: bytes) -> bytes:
    if len(salt) != 32:
        raise ValidationError("invalid_salt", "a document salt is 32 bytes")
    return keccak(salt + keccak(content))
