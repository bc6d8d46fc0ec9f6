"""The PartLedger exception tree. Every error the project raises on purpose derives from PartLedgerError.

PartLedgerError
├── ConfigError             settings, files or arguments that cannot work (missing artifacts, bad manifest, dev key
│                           on a non-dev chain); final
├── ValidationError         input that breaks a rule checked off chain (GTIN check digit, GS1 serial); final
├── ChainError
│   ├── ChainUnavailable    the JSON-RPC node cannot be reached or answered with a transport error; retryable
│   ├── ChainMismatch       the node is not the chain the manifest describes (chain id, missing code); final
│   └── ContractRevert      a call or transaction reverted; keeps the custom error's name and arguments; final
└── DevnetError             the local devnet could not be started or stopped
"""

from __future__ import annotations

from typing import Any


class PartLedgerError(Exception):
    """Root of every error PartLedger raises on purpose; its message is one line meant for a person."""


class ConfigError(PartLedgerError):
    """Settings, files or arguments that cannot work."""


class ValidationError(PartLedgerError):
    """Input that breaks a rule checked before anything reaches the chain."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ChainError(PartLedgerError):
    """Something went wrong at the chain boundary."""


class ChainUnavailable(ChainError):
    """The node could not be reached; trying again later may succeed."""


class ChainMismatch(ChainError):
    """The node is not the chain the deployment manifest describes."""


class ContractRevert(ChainError):
    """A contract call reverted. `name` is the custom error (e.g. PartLedgerNotCustodian) and `args` its values,
    decoded with the committed ABIs; `name` is "Unknown" when the data matches no known error."""

    def __init__(self, name: str, args: tuple[Any, ...] = (), data: bytes = b"") -> None:
        shown = ", ".join(_show(value) for value in args)
        super().__init__(f"contract reverted with {name}({shown})")
        self.name = name
        self.args_ = args
        self.data = data


class DevnetError(PartLedgerError):
    """The local devnet could not be started, found or stopped."""


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)
