"""Web3 Secret Storage v3 keystores, one file per site key, and where their passphrases come from."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from partledger.errors import ConfigError

PASSPHRASE_ENV = "PARTLEDGER_KEYSTORE_PASSPHRASE"
PASSPHRASE_FILE_ENV = "PARTLEDGER_KEYSTORE_PASSPHRASE_FILE"
# scrypt cost: the standard strength for production; the devnet's throwaway keys use a light one to start fast.
SCRYPT_N_STRONG = 1 << 18
SCRYPT_N_LIGHT = 1 << 12


def read_passphrase(secret_file: Path | None = None) -> str:
    """The keystore passphrase from a secret file (argument, or PARTLEDGER_KEYSTORE_PASSPHRASE_FILE) or from
    PARTLEDGER_KEYSTORE_PASSPHRASE; never from the command line."""
    path = secret_file or (Path(os.environ[PASSPHRASE_FILE_ENV]) if PASSPHRASE_FILE_ENV in os.environ else None)
    if path is not None:
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV]
    raise ConfigError(f"no keystore passphrase: set {PASSPHRASE_FILE_ENV} (a secret file) or {PASSPHRASE_ENV}")


def write_passphrase_file(path: Path) -> str:
    """Creates a secret file holding a fresh random passphrase (mode 0600) and returns the passphrase."""
    passphrase = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(passphrase + "\n")
    return passphrase


def create_keystore(path: Path, passphrase: str, *, light: bool = False) -> LocalAccount:
    """A fresh key, written encrypted to `path` (mode 0600); refuses to overwrite an existing file."""
    account = Account.create()
    keystore = Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=SCRYPT_N_LIGHT if light else SCRYPT_N_STRONG)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"keystore {path} exists already; refusing to overwrite a key") from None
    with os.fdopen(descriptor, "w") as handle:
        json.dump(keystore, handle)
    return account


def load_keystore(path: Path, passphrase: str) -> LocalAccount:
    """The key in a v3 keystore; ConfigError (one line, no secret in it) when it cannot be opened."""
    try:
        keystore = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no keystore at {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable keystore {path}: {type(exc).__name__}") from None
    try:
        return Account.from_key(Account.decrypt(keystore, passphrase))
    except ValueError:
        raise ConfigError(f"cannot decrypt keystore {path}: wrong passphrase or damaged file") from None


def keystore_address(path: Path) -> str:
    """The address a keystore holds, read without decrypting it."""
    try:
        return to_checksum_address("0x" + json.loads(Path(path).read_text())["address"].removeprefix("0x"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"unreadable keystore {path}") from None
