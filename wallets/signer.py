"""Signers: the one place where site keys sign, behind one small interface.

`LocalSigner` holds a key opened from a v3 keystore; `RemoteSigner` asks a Web3Signer-compatible JSON-RPC endpoint
(an HSM or KMS front, or `python -m wallets.remote_server`) and trusts nothing it answers: every signed transaction
is decoded, its sender recovered and its fields compared with the transaction asked for, and every typed-data
signature is recovered against the message, before anything leaves this module. Both satisfy
partledger.chain.TransactionSigner, so `send_transaction(w3, signer, tx)` works with either.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import rlp
from coincurve import PrivateKey
from eth_account import Account
from eth_account.datastructures import SignedTransaction
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from wallets.errors import SignerError, SignerMismatch, SignerUnavailable
from wallets.keystore import load_keystore

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# Transaction fields sent to a remote signer as hex quantities, and the ones every request must carry.
QUANTITY_FIELDS = ("gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce", "value", "chainId")
REQUIRED_FIELDS = ("gas", "nonce", "chainId")
LEGACY_TYPE = 0
DYNAMIC_FEE_TYPE = 2


@runtime_checkable
class Signer(Protocol):
    """A site key that signs: eth-account's BaseAccount trimmed to what PartLedger uses."""

    @property
    def address(self) -> str: ...

    def sign_transaction(self, transaction_dict: dict[str, Any]) -> SignedTransaction: ...

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes: ...


class LocalSigner:
    """A key held in this process's memory, opened from a v3 keystore."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._key = PrivateKey(bytes(account.key))

    @classmethod
    def from_keystore(cls, path: Path, passphrase: str) -> LocalSigner:
        return cls(load_keystore(path, passphrase))

    @property
    def address(self) -> str:
        return self._account.address

    def sign_transaction(self, transaction_dict: dict[str, Any]) -> SignedTransaction:
        legacy = _plain_legacy(transaction_dict)
        if legacy is None:
            return self._account.sign_transaction(transaction_dict)
        return self._sign_legacy(*legacy)

    def _sign_legacy(self, fields: list[Any], chain_id: int) -> SignedTransaction:
        """An EIP-155 legacy transaction (what the submitter signs: gas price zero on a permissioned chain), signed
        directly: its RLP, keccak and a recoverable secp256k1 signature, 0.14 ms for a 200-part call against
        eth-account's 0.6 ms (its general path validates and formats every field through several layers). The
        bytes are eth-account's, byte for byte (RFC 6979 nonces, low s: tests/test_wallets.py compares the two)."""
        signature = self._key.sign_recoverable(keccak(rlp.encode([*fields, chain_id, 0, 0])), hasher=None)
        r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64] + 35 + 2 * chain_id
        raw = rlp.encode([*fields, v, r, s])
        return SignedTransaction(raw_transaction=HexBytes(raw), hash=HexBytes(keccak(raw)), r=r, s=s, v=v)

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        """The 65-byte r||s||v signature (v 27 or 28) of EIP-712 typed data."""
        return bytes(self._account.sign_typed_data(full_message=full_message).signature)

    def sign_eip712_digest(self, digest: bytes) -> bytes:
        """The same signature as sign_typed_data's, of the EIP-712 digest the caller computed (partledger.eip712's
        direct encoders: eth-account's general encoder costs ~0.8 ms a message). Only for a digest built here from
        typed data: a key that signs any 32 bytes it is handed signs whatever someone else hashed."""
        return bytes(self._account.unsafe_sign_hash(digest).signature)

    def __repr__(self) -> str:
        return f"LocalSigner({self.address})"


_LEGACY_FIELDS = frozenset({"to", "data", "value", "gas", "gasPrice", "chainId", "nonce"})
_UINT256 = 2**256


def _plain_legacy(transaction: dict[str, Any]) -> tuple[list[Any], int] | None:
    """The RLP fields (nonce, gasPrice, gas, to, value, data) and chain id of a legacy contract call given exactly as
    the submitter gives it (a 0x address, 0x or bytes data, ints in range); None for anything else, which eth-account
    signs (and checks: a checksum that does not match, a field it does not know)."""
    if transaction.keys() != _LEGACY_FIELDS:
        return None
    to, data = transaction["to"], transaction["data"]
    numbers = [transaction[name] for name in ("nonce", "gasPrice", "gas", "value", "chainId")]
    if not all(type(number) is int and 0 <= number < _UINT256 for number in numbers) or not numbers[4]:
        return None
    if not isinstance(to, str) or len(to) != 42 or not to.startswith("0x") or to != to_checksum_address(to):
        return None
    try:
        payload = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else bytes(data) if isinstance(data, (bytes, bytearray)) else None
    except ValueError:
        return None
    if payload is None:
        return None
    nonce, gas_price, gas, value, chain_id = numbers
    return [nonce, gas_price, gas, bytes.fromhex(to[2:]), value, payload], chain_id


class RemoteSigner:
    """A key held by a Web3Signer-compatible JSON-RPC endpoint (eth_signTransaction, eth_signTypedData).

    Transport failures raise SignerUnavailable (retryable), refusals SignerError, and an answer signed by another
    key or for another transaction SignerMismatch.
    """

    def __init__(self, url: str, address: str, *, timeout: float = 10.0) -> None:
        self._url = url
        self._address = to_checksum_address(address)
        self._timeout = timeout
        import httpx  # here, not at the top: importing httpx loads its command line (rich, click, pygments), 0.25 s

        self._client = httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)

    @property
    def address(self) -> str:
        return self._address

    @property
    def url(self) -> str:
        return self._url

    def sign_transaction(self, transaction_dict: dict[str, Any]) -> SignedTransaction:
        """The transaction signed by the remote key, checked to be exactly the one asked for."""
        request = transaction_request(self._address, transaction_dict)
        raw = _hex_bytes(self._call("eth_signTransaction", [request]), "eth_signTransaction", self._url)
        return self._checked_transaction(raw, request)

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        """The 65-byte r||s||v signature (v 27 or 28, low s) of EIP-712 typed data, checked to recover to this key."""
        signable = encode_typed_data(full_message=full_message)  # a malformed message fails here, before any request
        result = self._call("eth_signTypedData", [self._address, _jsonable(full_message)])
        signature = _normalized_signature(_hex_bytes(result, "eth_signTypedData", self._url), self._url)
        try:
            signer = Account.recover_message(signable, signature=signature)
        except Exception:  # noqa: BLE001 - whatever eth-keys objects to, the signature is unusable
            raise SignerError(f"the remote signer at {self._url} answered eth_signTypedData with an invalid signature") from None
        if signer != self._address:
            raise SignerMismatch(f"the remote signer at {self._url} signed typed data with {signer}, not with {self._address}")
        return signature

    def accounts(self) -> list[str]:
        """The addresses the endpoint holds keys for (eth_accounts)."""
        result = self._call("eth_accounts", [])
        if not isinstance(result, list):
            raise SignerError(f"the remote signer at {self._url} answered eth_accounts with no list")
        return [to_checksum_address(address) for address in result]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteSigner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteSigner({self._address} at {self._url})"

    def _call(self, method: str, params: list[Any]) -> Any:
        import httpx

        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            reply = self._client.post(self._url, json=payload)
        except httpx.TimeoutException:
            raise SignerUnavailable(f"the remote signer at {self._url} did not answer {method} within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise SignerUnavailable(f"cannot reach the remote signer at {self._url}: {type(exc).__name__}") from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("result" not in body and "error" not in body):
            kind = SignerUnavailable if reply.status_code >= 500 else SignerError
            raise kind(f"the remote signer at {self._url} answered {method} with HTTP {reply.status_code} and no JSON-RPC reply")
        if "error" in body:
            error = body["error"] if isinstance(body["error"], dict) else {"message": str(body["error"])}
            message = " ".join(str(error.get("message", "no message")).split())[:200]
            raise SignerError(f"the remote signer at {self._url} refused {method}: {message} (code {error.get('code')})")
        return body["result"]

    def _checked_transaction(self, raw: bytes, request: dict[str, Any]) -> SignedTransaction:
        try:
            sender = Account.recover_transaction(raw)
            fields, (v, r, s) = decode_signed_transaction(raw)
        except Exception:  # noqa: BLE001 - whatever the decoders object to, the answer is no signed transaction
            raise SignerError(f"the remote signer at {self._url} answered eth_signTransaction with no signed transaction") from None
        if sender != self._address:
            raise SignerMismatch(f"the remote signer at {self._url} returned a transaction signed by {sender}, not by {self._address}")
        differing = sorted(name for name, value in expected_fields(request).items() if fields.get(name) != value)
        if differing:
            raise SignerMismatch(
                f"the remote signer at {self._url} returned a signed transaction whose {', '.join(differing)} "
                "differ from the transaction asked for"
            )
        return SignedTransaction(raw_transaction=HexBytes(raw), hash=HexBytes(keccak(raw)), r=r, s=s, v=v)


def transaction_request(address: str, transaction: dict[str, Any]) -> dict[str, Any]:
    """A transaction dict (as web3's build_transaction makes it) as the eth_signTransaction parameter object."""
    if "from" in transaction and to_checksum_address(transaction["from"]) != address:
        raise SignerError(f"the transaction is from {transaction['from']}, but this signer holds {address}")
    missing = [name for name in REQUIRED_FIELDS if transaction.get(name) is None]
    if "gasPrice" not in transaction and "maxFeePerGas" not in transaction:
        missing.append("gasPrice")
    if missing:
        raise SignerError(f"the transaction to sign has no {', '.join(missing)}")
    request: dict[str, Any] = {"from": address}
    if transaction.get("to"):
        request["to"] = to_checksum_address(transaction["to"])
    for name in QUANTITY_FIELDS:
        if transaction.get(name) is not None:
            request[name] = hex(int(transaction[name]))
    request.setdefault("value", "0x0")
    request["data"] = "0x" + bytes(HexBytes(transaction.get("data") or b"")).hex()
    return request


def expected_fields(request: dict[str, Any]) -> dict[str, Any]:
    """The fields a signed transaction must carry to be the one `request` (an eth_signTransaction object) asked for."""
    fields: dict[str, Any] = {
        "type": DYNAMIC_FEE_TYPE if "maxFeePerGas" in request else LEGACY_TYPE,
        "to": to_checksum_address(request["to"]) if "to" in request else None,
        "data": bytes.fromhex(request["data"].removeprefix("0x")),
    }
    for name in QUANTITY_FIELDS:
        if name in request:
            fields[name] = int(request[name], 16)
    return fields


def decode_signed_transaction(raw: bytes) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The fields of a signed legacy (EIP-155) or EIP-1559 transaction, in expected_fields' form, and its (v, r, s)."""
    if raw[0] >= 0xC0:  # an RLP list: a legacy transaction
        nonce, gas_price, gas, to, value, data, v, r, s = rlp.decode(raw)
        v_int = int.from_bytes(v, "big")
        fields = {
            "type": LEGACY_TYPE,
            "nonce": int.from_bytes(nonce, "big"),
            "gasPrice": int.from_bytes(gas_price, "big"),
            "gas": int.from_bytes(gas, "big"),
            "to": to_checksum_address(to) if to else None,
            "value": int.from_bytes(value, "big"),
            "data": bytes(data),
            "chainId": (v_int - 35) // 2 if v_int >= 35 else None,  # None: no replay protection (pre-EIP-155)
        }
        return fields, (v_int, int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    typed = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    fields = {name: typed.get(name) for name in ("type", "nonce", "gas", "value", "chainId", "maxFeePerGas", "maxPriorityFeePerGas")}
    fields["to"] = to_checksum_address(typed["to"]) if typed.get("to") else None
    fields["data"] = bytes(typed.get("data") or b"")
    return fields, (typed["v"], typed["r"], typed["s"])


def _normalized_signature(signature: bytes, url: str) -> bytes:
    """r||s||v with v in {27, 28} and s in the lower half of the curve order, as EvidenceLedger requires; HSMs and
    KMSs return either half, and flipping s (with v) keeps the signature valid for the same key."""
    if len(signature) != 65:
        raise SignerError(f"the remote signer at {url} answered eth_signTypedData with {len(signature)} bytes, not a 65-byte signature")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    v = v + 27 if v in (0, 1) else v
    if s > SECP256K1_N // 2:
        s, v = SECP256K1_N - s, 55 - v
    return r + s.to_bytes(32, "big") + bytes([v])


def _hex_bytes(result: Any, method: str, url: str) -> bytes:
    try:
        return bytes.fromhex(result.removeprefix("0x"))
    except (AttributeError, ValueError):
        raise SignerError(f"the remote signer at {url} answered {method} with no hex data") from None


def _jsonable(value: Any) -> Any:
    """Typed data as JSON: bytes become 0x-hex strings, tuples lists."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
