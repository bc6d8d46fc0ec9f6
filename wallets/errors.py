"""The wallets' errors, under the project's root PartLedgerError (partledger.errors).

PartLedgerError
├── SignerUnavailable       the remote signer cannot be reached, timed out or answered with no JSON-RPC; retryable
├── SignerError             the signer refused to sign (unknown account, invalid request); final
│   └── SignerMismatch      the signer answered with a signature of another key or of another transaction; final,
│                           and a security event: a signer that does this must not be trusted again
└── RotationIncomplete      a key rotation stopped between adding the new key and revoking the old; the message
                            says which keys are active; final (an operator finishes it by hand)

No message ever holds a passphrase, a private key or a keystore's content.
"""

from __future__ import annotations

from partledger.errors import PartLedgerError


class SignerUnavailable(PartLedgerError):
    """The remote signer could not be reached; trying again later may succeed."""


class SignerError(PartLedgerError):
    """The signer refused to sign or answered with something that is no signature."""


class SignerMismatch(SignerError):
    """The signature the signer returned is not by the expected key over the expected transaction or message."""


class RotationIncomplete(PartLedgerError):
    """A rotation stopped between its two on-chain steps; the message says which keys are active now."""
