"""Opaque cursors for keyset pagination: the last row's sort key, base64url JSON."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from ledger_service.errors import BadRequest


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise BadRequest("malformed pagination cursor", code="invalid_cursor") from None
    if not isinstance(key, list) or len(key) != size:
        raise BadRequest("malformed pagination cursor", code="invalid_cursor")
    return key
