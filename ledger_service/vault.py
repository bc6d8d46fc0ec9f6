"""Private data at rest: clear VINs (and their salts) encrypted with AES-GCM under a key kept outside the database,
so that a stolen database dump reveals no VIN."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from partledger.errors import ConfigError


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the VIN encryption key must be 32 bytes (base64 in its key file)")
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> Vault:
        try:
            return cls(base64.b64decode(path.read_text().strip(), validate=True))
        except FileNotFoundError:
            raise ConfigError(f"no VIN encryption key file at {path}") from None
        except (OSError, ValueError):
            raise ConfigError(f"unreadable VIN encryption key file {path}") from None

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """nonce(12) || ciphertext+tag; `associated` (e.g. the VIN hash) binds the ciphertext to its row."""
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], associated)


def write_key_file(path: Path) -> None:
    """A fresh random key, base64, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
