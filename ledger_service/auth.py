"""Organisation API keys: `Authorization: Bearer plk_<key id>_<secret>`, stored as SHA-256 of the secret.

A key acts for one organisation, with that organisation's roles as the chain mirror has them now (a suspended
organisation's keys are refused), optionally narrowed to some of its sites: each named by a site key's address (that
key only) or by the site's name (whichever key the site has, so the narrowing survives a key rotation).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from eth_utils import to_checksum_address
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine

from indexer.tables import Organisation
from ledger_service.errors import Forbidden, Unauthorized
from ledger_service.tables import ApiKey
from partledger.errors import ValidationError
from partledger.model import Role

KEY_PREFIX = "plk"
T_KEY = ApiKey.__table__
T_ORG = Organisation.__table__
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# The two reads of every authenticated request, built once (building a statement costs as much as running it)
KEY_BY_ID = select(T_KEY).where(T_KEY.c.key_id == bindparam("key_id"))
ORG_STATUS = select(T_ORG.c.roles, T_ORG.c.suspended).where(T_ORG.c.org_id == bindparam("org_id"))


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organisation, and the API key or the signed-in user it acts through. API keys act as
    operators; a user acts with the role the organisation's admin gave it."""

    org_id: int
    roles: Role
    key_id: str
    sites: tuple[str, ...] | None
    user_id: int | None = None
    username: str | None = None
    role: str = "operator"  # admin | operator | viewer

    @property
    def actor(self) -> str:
        """Who sent a command, as the outbox and the audit log record it: "user:<username>" or "key:<key id>"."""
        return f"user:{self.username}" if self.username is not None else f"key:{self.key_id}"

    @property
    def may_act(self) -> bool:
        """Viewers read only."""
        return self.role in ("admin", "operator")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_use(self, address: str, site: str) -> bool:
        """Whether this key may have commands signed by the site key `address` of site `site`."""
        return sites_allow(self.sites, address, site)

    @property
    def sees_everything(self) -> bool:
        """Auditors and regulators read every organisation's consortium-class data."""
        return bool(self.roles & (Role.AUDITOR | Role.REGULATOR))


def require_may_act(principal: Principal) -> None:
    """Refuses a principal that may only read (a viewer): 403 read_only_role. Every write path calls it."""
    if not principal.may_act:
        raise Forbidden(f"the role {principal.role!r} may read but not act", code="read_only_role")


def sites_allow(sites: tuple[str, ...] | list[str] | None, address: str, site: str) -> bool:
    """Whether an API key narrowed to `sites` (None: not narrowed) may use the site key `address` of site `site`."""
    return sites is None or address in sites or site in sites


def site_restriction(value: str) -> str:
    """One of the sites an API key is narrowed to, as stored: a site key address checksummed, or a site name;
    ValidationError otherwise."""
    text = value.strip()
    if _ADDRESS.fullmatch(text):
        return to_checksum_address(text)
    if text.lower().startswith("0x") or not text or len(text.encode()) > 32 or not text.isprintable():
        raise ValidationError("invalid_site", f"a site is a site key address (0x and 40 hex digits) or a site name of at most 32 bytes, got {value!r}")
    return text


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(engine: Engine, *, org_id: int, label: str = "", sites: list[str] | None = None) -> str:
    """Creates a key for `org_id` and returns it; this is the only time the clear key exists."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(T_KEY).values(
            key_id=key_id, org_id=org_id, secret_sha256=_digest(secret), label=label,
            sites=json.dumps([site_restriction(site) for site in sites]) if sites else None, created_at=time.time(),
        ))  # fmt: skip
    return f"{KEY_PREFIX}_{key_id}_{secret}"


def revoke_api_key(engine: Engine, key_id: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(update(T_KEY).where(T_KEY.c.key_id == key_id, T_KEY.c.revoked_at.is_(None)).values(revoked_at=time.time()))
    return result.rowcount == 1


def authenticate(service_engine: Engine, index_engine: Engine, authorization: str | None) -> Principal:
    """The principal behind an Authorization header; Unauthorized (never saying which part was wrong) otherwise."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("an API key is required: Authorization: Bearer plk_...")
    prefix, _, rest = authorization[7:].strip().partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not key_id or not secret:
        raise Unauthorized("malformed API key")
    with service_engine.connect() as conn:
        row = conn.execute(KEY_BY_ID, {"key_id": key_id}).mappings().first()
    if row is None or row["revoked_at"] is not None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
        raise Unauthorized("unknown or revoked API key")
    with index_engine.connect() as conn:
        org = conn.execute(ORG_STATUS, {"org_id": row["org_id"]}).first()
    if org is None or org.suspended:
        raise Unauthorized("the key's organisation is not an active consortium member")
    sites = tuple(json.loads(row["sites"])) if row["sites"] else None
    return Principal(org_id=row["org_id"], roles=Role(org.roles), key_id=key_id, sites=sites)
