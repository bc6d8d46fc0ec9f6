"""Site key life cycle: keystores on disk by organisation and site, their status on chain, rotation and revocation.

On disk a site's key lives at `<dir>/<org-slug>/<site>.json`; a rotation writes the next one beside it as
`<site>.2.json`, `<site>.3.json`, ... so that the path alone names the organisation and site. On chain the
ConsortiumRegistry is the authority: `siteKey(address)` gives the organisation, site, and the blocks the key was
added and revoked in. A rotation adds the new key before it revokes the old one, so the site is never without an
active key; the operator key signs both (any TransactionSigner: a LocalSigner, or a RemoteSigner in front of an HSM).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from web3 import Web3
from web3.contract import Contract

from partledger.artifacts import load_artifact
from partledger.chain import TransactionSigner, send_call
from partledger.errors import ConfigError, ContractRevert, PartLedgerError, ValidationError
from partledger.ids import ascii32
from partledger.manifest import Manifest
from wallets.errors import RotationIncomplete
from wallets.keystore import SCRYPT_N_STRONG, create_keystore, keystore_address

# Both become path components; the site also becomes the bytes32 site name on chain.
ORG_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_KEYSTORE_NAME = re.compile(r"^(?P<site>[^.]+)(?:\.(?P<generation>\d+))?\.json$")


@dataclass(frozen=True)
class KeystoreFile:
    path: Path
    address: str
    org_slug: str | None  # None when the path follows no <org-slug>/<site>.json layout (the operator's key)
    site: str | None


@dataclass(frozen=True)
class SiteKeyStatus:
    """ConsortiumRegistry.siteKey(address): org id 0 means the registry never knew the key."""

    address: str
    org_id: int
    site: str
    added_block: int
    revoked_block: int

    @property
    def state(self) -> str:
        if self.org_id == 0:
            return "unknown"
        return "revoked" if self.revoked_block else "active"


@dataclass(frozen=True)
class Rotation:
    old: SiteKeyStatus
    new: SiteKeyStatus
    new_keystore: Path


def site_keystore_path(directory: Path, *, org_slug: str, site: str) -> Path:
    if not ORG_SLUG.match(org_slug):
        raise ValidationError("invalid_org_slug", f"organisation slug {org_slug!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    if not SITE_NAME.match(site):
        raise ValidationError("invalid_site", f"site {site!r} must be 1 to 32 of A-Z a-z 0-9 _ -")
    return directory / org_slug / f"{site}.json"


def create_site_keystore(directory: Path, *, org_slug: str, site: str, passphrase: str, light: bool = False) -> KeystoreFile:
    """A fresh key for a site, at <directory>/<org-slug>/<site>.json; refuses to overwrite one."""
    path = site_keystore_path(directory, org_slug=org_slug, site=site)
    account = create_keystore(path, passphrase, light=light)
    return KeystoreFile(path=path, address=account.address, org_slug=org_slug, site=site)


def list_keystores(directory: Path) -> list[KeystoreFile]:
    """Every v3 keystore under `directory`, read without decrypting, with the organisation and site its path names."""
    if not directory.is_dir():
        raise ConfigError(f"no key directory at {directory}")
    found = []
    for path in sorted(directory.rglob("*.json")):
        if not _is_keystore(path):
            continue
        relative = path.relative_to(directory)
        named = _KEYSTORE_NAME.match(relative.name)
        laid_out = len(relative.parts) == 2 and named is not None
        found.append(
            KeystoreFile(
                path=path,
                address=keystore_address(path),
                org_slug=relative.parts[0] if laid_out else None,
                site=named["site"] if laid_out and named else None,
            )
        )
    return found


def registry_contract(w3: Web3, manifest: Manifest) -> Contract:
    return w3.eth.contract(address=manifest.address("ConsortiumRegistry"), abi=load_artifact("ConsortiumRegistry").abi)


def read_site_key(registry: Contract, address: str) -> SiteKeyStatus:
    address = Web3.to_checksum_address(address)
    org_id, site, added_block, revoked_block = registry.functions.siteKey(address).call()
    return SiteKeyStatus(address=address, org_id=org_id, site=_site_text(site), added_block=added_block, revoked_block=revoked_block)


def rotate_site_key(
    w3: Web3,
    registry: Contract,
    operator: TransactionSigner,
    old_keystore: Path,
    *,
    passphrase: str,
    gas_price: int = 0,
) -> Rotation:
    """Replaces the active site key in `old_keystore` with a fresh one for the same organisation and site.

    Writes the new keystore (same scrypt strength as the old one, encrypted with `passphrase`) beside the old,
    adds it on chain, then revokes the old key. The old key's passphrase is not needed: a lost or stolen key
    must be replaceable, also when it was already revoked in haste (`wallet revoke`): then the new key is only
    added. A service signing from the same key directory picks the new keystore up without a restart.
    """
    old = read_site_key(registry, keystore_address(old_keystore))
    if old.state == "unknown":
        raise ConfigError(f"cannot rotate {old.address}: it is no site key of this consortium")
    if old.state == "revoked" and _replaced(registry, old, old_keystore):
        raise ConfigError(f"cannot rotate {old.address}: it was revoked in block {old.revoked_block} and already replaced")
    new_keystore = _next_keystore_path(old_keystore)
    new_account = create_keystore(new_keystore, passphrase, light=_is_light(old_keystore))
    try:
        send_call(w3, operator, registry.functions.addSiteKey(old.org_id, new_account.address, ascii32(old.site)), gas_price=gas_price)
    except ContractRevert:
        new_keystore.unlink()  # the chain refused the key: nothing refers to it
        raise
    except PartLedgerError as exc:
        raise RotationIncomplete(
            f"adding the new key {new_account.address} ({new_keystore}) did not complete: {exc}; "
            f"the old key {old.address} is still active"
        ) from None
    if old.state == "revoked":
        return Rotation(old=old, new=read_site_key(registry, new_account.address), new_keystore=new_keystore)
    try:
        send_call(w3, operator, registry.functions.revokeSiteKey(old.address), gas_price=gas_price)
    except PartLedgerError as exc:
        raise RotationIncomplete(
            f"the new key {new_account.address} ({new_keystore}) is active, but revoking the old key {old.address} "
            f"failed: {exc}; revoke it before relying on the rotation"
        ) from None
    return Rotation(old=read_site_key(registry, old.address), new=read_site_key(registry, new_account.address), new_keystore=new_keystore)


def revoke_site_key(w3: Web3, registry: Contract, operator: TransactionSigner, address: str, *, gas_price: int = 0) -> SiteKeyStatus:
    """Revokes a site key for good (ContractRevert ConsortiumRegistryKeyRevoked/UnknownKey when it cannot be)."""
    send_call(w3, operator, registry.functions.revokeSiteKey(Web3.to_checksum_address(address)), gas_price=gas_price)
    return read_site_key(registry, address)


def _replaced(registry: Contract, old: SiteKeyStatus, old_keystore: Path) -> bool:
    """Whether a later keystore of the same site beside `old_keystore` holds an active key of old's organisation
    and site (a rotation already done)."""
    named = _KEYSTORE_NAME.match(old_keystore.name)
    base = named["site"] if named else old_keystore.stem
    for candidate in old_keystore.parent.glob(f"{base}.*.json"):
        if candidate != old_keystore and _is_keystore(candidate):
            status = read_site_key(registry, keystore_address(candidate))
            if status.state == "active" and (status.org_id, status.site) == (old.org_id, old.site):
                return True
    return False


def _next_keystore_path(old_keystore: Path) -> Path:
    named = _KEYSTORE_NAME.match(old_keystore.name)
    base = named["site"] if named else old_keystore.stem
    generation = 2
    while (candidate := old_keystore.parent / f"{base}.{generation}.json").exists():
        generation += 1
    return candidate


def _is_light(keystore: Path) -> bool:
    """Whether a keystore uses a lighter scrypt than the production strength (the devnet's throwaway keys)."""
    try:
        data = json.loads(keystore.read_text())
        crypto = data.get("crypto") or data["Crypto"]
        return crypto["kdf"] == "scrypt" and int(crypto["kdfparams"]["n"]) < SCRYPT_N_STRONG
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _is_keystore(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("crypto" in data or "Crypto" in data) and "address" in data


def _site_text(site: bytes) -> str:
    raw = bytes(site).rstrip(b"\0")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + bytes(site).hex()
