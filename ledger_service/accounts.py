"""People, besides API keys: the console's user accounts, their server-side sessions, sign-in throttling and the
optional TOTP second factor.

A user belongs to one organisation with a role: `admin` (users, API keys, site settings), `operator` (acts) or
`viewer` (reads), optionally narrowed to sites like an API key. A signed-in user reaches the service as a
`Principal` like an API key does, so the same authorisation, validation and outbox apply to both (no second write
path); `Principal.actor` ("user:<username>") is what commands and the audit log record.

- Passwords: Argon2id (argon2-cffi's defaults), rehashed on sign-in when the parameters change; never logged.
- Sessions: a random 256-bit token in the cookie, only its SHA-256 in SQL; they end after SESSION_IDLE seconds
  unused or SESSION_LIFETIME after sign-in, on sign-out, when the user is disabled or its password reset, and
  while its organisation is suspended. Every sign-in makes a new token (rotation). Each session has a CSRF token.
- Throttling: failed sign-ins are rows in SQL (so several workers agree), counted per account and per client
  over THROTTLE_WINDOW; over the limit, 429 sign_in_throttled with Retry-After, before the password is looked at.
- TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step, each step's code accepted once). The secret is sealed
  with the service's Vault key (settings.vin_key_file, AES-GCM, bound to the user id): without that key the
  service refuses to enrol or check a second factor rather than keep secrets in the clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from dataclasses import dataclass
from types import EllipsisType
from typing import Any
from urllib.parse import quote, urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from indexer.tables import Organisation
from ledger_service.auth import Principal, site_restriction
from ledger_service.errors import Conflict, NotFound, TooManyRequests, TotpRequired, Unauthorized, Unavailable
from ledger_service.tables import OrgSetting, SignInFailure, User, WebSession
from ledger_service.vault import Vault
from partledger.errors import ValidationError
from partledger.model import Role

ROLES = ("admin", "operator", "viewer")
SESSION_IDLE = 8 * 3600.0
SESSION_LIFETIME = 7 * 86400.0
SESSION_TOUCH = 60.0  # last_seen_at is written at most this often: a page view is not a write
THROTTLE_WINDOW = 15 * 60.0
ACCOUNT_FAILURES = 5  # per account per window
CLIENT_FAILURES = 20  # per client per window
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # Argon2 hashes any length; a megabyte "password" would still cost the server
TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "PartLedger"
_USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
T_USER, T_SESSION, T_FAIL, T_SETTING = User.__table__, WebSession.__table__, SignInFailure.__table__, OrgSetting.__table__
T_ORG = Organisation.__table__
_hasher = PasswordHasher()  # Argon2id; stateless, so one per process is as good as one per call
_dummy_hash: str | None = None


def _now() -> float:
    """The clock (tests move it)."""
    return time.time()


@dataclass(frozen=True)
class SessionUser:
    """A signed-in user, as each console request sees it."""

    principal: Principal
    user_id: int
    username: str
    display_name: str
    org_id: int
    role: str
    csrf_token: str
    session_id: str  # SHA-256 hex of the session token
    totp_enabled: bool
    totp_setup_required: bool = False  # the organisation requires a second factor this user has not set up yet


# --- users ----------------------------------------------------------------------------------------------------


def normal_username(username: str) -> str:
    """A username as stored: lowercase [a-z0-9._-], 2 to 64 characters; ValidationError otherwise."""
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise ValidationError("invalid_username", "a username is 2 to 64 of a-z, 0-9, '.', '_' and '-'")
    return name


def check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise ValidationError("weak_password", f"a password has at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise ValidationError("weak_password", f"a password has at most {PASSWORD_MAX} characters")


def new_password() -> str:
    """A generated password: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError("invalid_role", f"a role is one of {', '.join(ROLES)}, got {role!r}")
    return role


def _sites(sites: list[str] | None) -> str | None:
    return json.dumps([site_restriction(site) for site in sites]) if sites else None


def create_user(
    engine: Engine, *, org_id: int, username: str, password: str, role: str, sites: list[str] | None = None, display_name: str = ""
) -> int:
    """Creates a user and returns its id; Conflict username_taken when the name exists (in any organisation)."""
    name = normal_username(username)
    check_password(password)
    now = _now()
    values = dict(
        org_id=org_id, username=name, display_name=display_name.strip()[:200], password_hash=_hasher.hash(password),
        role=_role(role), sites=_sites(sites), totp_confirmed=False, created_at=now, updated_at=now,
    )  # fmt: skip
    try:
        with engine.begin() as conn:
            return int(conn.execute(insert(T_USER).values(**values)).inserted_primary_key[0])
    except IntegrityError:
        raise Conflict(f"the username {name!r} is taken", code="username_taken") from None


def list_users(engine: Engine, *, org_id: int | None = None) -> list[dict[str, Any]]:
    """The users (of one organisation, or all), by organisation and name; no hashes, no secrets."""
    query = select(T_USER)
    if org_id is not None:
        query = query.where(T_USER.c.org_id == org_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(T_USER.c.org_id, T_USER.c.username)).mappings().all()
    return [user_view(row) for row in rows]


def user_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "org_id": row["org_id"], "username": row["username"], "display_name": row["display_name"],
        "role": row["role"], "sites": json.loads(row["sites"]) if row["sites"] else None,
        "totp_enabled": bool(row["totp_confirmed"]), "disabled": row["disabled_at"] is not None,
        "disabled_at": row["disabled_at"], "created_at": row["created_at"], "updated_at": row["updated_at"],
    }  # fmt: skip


def get_user(engine: Engine, *, username: str, org_id: int | None = None) -> dict[str, Any]:
    """One user's view; NotFound unknown_user (also when it belongs to another organisation than `org_id`)."""
    with engine.connect() as conn:
        return user_view(_user_row(conn, username, org_id))


def _user_row(conn: Connection, username: str, org_id: int | None) -> Any:
    name = username.strip().lower()
    row = conn.execute(select(T_USER).where(T_USER.c.username == name)).mappings().first()
    if row is None or (org_id is not None and row["org_id"] != org_id):
        raise NotFound(f"no user {name!r}" + (f" in organisation {org_id}" if org_id is not None else ""), code="unknown_user")
    return row


def set_user_role(engine: Engine, *, org_id: int, username: str, role: str, sites: list[str] | None | EllipsisType = ...) -> None:
    """Changes a user's role (and its sites, unless `sites` is left out). It applies from the user's next request."""
    values: dict[str, Any] = {"role": _role(role), "updated_at": _now()}
    if sites is not ...:
        values["sites"] = _sites(sites)  # type: ignore[arg-type]
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        conn.execute(update(T_USER).where(T_USER.c.id == row["id"]).values(**values))


def disable_user(engine: Engine, *, username: str, org_id: int | None = None) -> None:
    """Disables a user and ends its live sessions in the same transaction."""
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        now = _now()
        conn.execute(update(T_USER).where(T_USER.c.id == row["id"]).values(disabled_at=row["disabled_at"] or now, updated_at=now))
        _end_sessions(conn, row["id"], now)


def enable_user(engine: Engine, *, username: str, org_id: int | None = None) -> None:
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        conn.execute(update(T_USER).where(T_USER.c.id == row["id"]).values(disabled_at=None, updated_at=_now()))


def reset_password(engine: Engine, *, username: str, org_id: int | None = None, password: str | None = None, clear_totp: bool = False) -> str:
    """Sets a new password (generated when not given) and returns it; ends the user's sessions. `clear_totp` also
    removes its second factor (a lost phone), to be set up again at the next sign-in."""
    password = password if password is not None else new_password()
    check_password(password)
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        now = _now()
        values: dict[str, Any] = {"password_hash": _hasher.hash(password), "updated_at": now}
        if clear_totp:
            values |= {"totp_secret": None, "totp_confirmed": False, "totp_last_step": None}
        conn.execute(update(T_USER).where(T_USER.c.id == row["id"]).values(**values))
        _end_sessions(conn, row["id"], now)
    return password


def change_password(engine: Engine, *, user_id: int, current: str, new: str, keep_session: str | None = None) -> None:
    """A user's own change: the current password is checked (bad_credentials); every other session ends, the one
    named by `keep_session` (its session_id) stays."""
    check_password(new)
    with engine.begin() as conn:
        row = conn.execute(select(T_USER).where(T_USER.c.id == user_id)).mappings().first()
        if row is None or not _verify(row["password_hash"], current):
            raise Unauthorized("the current password is not right", code="bad_credentials")
        now = _now()
        conn.execute(update(T_USER).where(T_USER.c.id == user_id).values(password_hash=_hasher.hash(new), updated_at=now))
        _end_sessions(conn, user_id, now, keep=keep_session)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_nobody(password: str) -> None:
    """Spends the time a real check takes, so that an unknown username answers as slowly as a wrong password."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    _verify(_dummy_hash, password)


# --- organisation settings ------------------------------------------------------------------------------------


def set_require_totp(engine: Engine, *, org_id: int, required: bool) -> None:
    """Whether the organisation's users must sign in with a second factor (set by its admin)."""
    with engine.begin() as conn:
        done = conn.execute(update(T_SETTING).where(T_SETTING.c.org_id == org_id).values(require_totp=required, updated_at=_now())).rowcount
        if not done:
            conn.execute(insert(T_SETTING).values(org_id=org_id, require_totp=required, updated_at=_now()))


def require_totp(engine: Engine, org_id: int) -> bool:
    with engine.connect() as conn:
        return _requires_totp(conn, org_id)


def _requires_totp(conn: Connection, org_id: int) -> bool:
    return bool(conn.execute(select(T_SETTING.c.require_totp).where(T_SETTING.c.org_id == org_id)).scalar())


# --- throttling -----------------------------------------------------------------------------------------------


def _throttle(conn: Connection, *, account: str, client: str, now: float) -> None:
    """TooManyRequests when the account or the client has failed too often within the window; Retry-After is when
    enough of its failures leave the window."""
    since = now - THROTTLE_WINDOW
    for scope, subject, limit in (("account", account, ACCOUNT_FAILURES), ("client", client, CLIENT_FAILURES)):
        times = conn.execute(
            select(T_FAIL.c.at).where(T_FAIL.c.scope == scope, T_FAIL.c.subject == subject, T_FAIL.c.at > since).order_by(T_FAIL.c.at)
        ).scalars().all()  # fmt: skip
        if len(times) >= limit:
            wait = times[len(times) - limit] + THROTTLE_WINDOW - now
            raise TooManyRequests(
                f"too many failed sign-ins for this {scope}; try again in {max(1, int(wait + 0.999))} s",
                retry_after=int(wait + 0.999), code="sign_in_throttled", details={"scope": scope},
            )  # fmt: skip


def _record_failure(engine: Engine, *, account: str, client: str) -> None:
    now = _now()
    with engine.begin() as conn:
        conn.execute(delete(T_FAIL).where(T_FAIL.c.at <= now - THROTTLE_WINDOW))
        conn.execute(insert(T_FAIL), [{"scope": "account", "subject": account, "at": now}, {"scope": "client", "subject": client[:255], "at": now}])


# --- sessions -------------------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _end_sessions(conn: Connection, user_id: int, now: float, *, keep: str | None = None) -> None:
    query = update(T_SESSION).where(T_SESSION.c.user_id == user_id, T_SESSION.c.revoked_at.is_(None))
    if keep is not None:
        query = query.where(T_SESSION.c.token_sha256 != keep)
    conn.execute(query.values(revoked_at=now))


def end_sessions(engine: Engine, *, user_id: int) -> None:
    """Ends every live session of the user (signs it out everywhere)."""
    with engine.begin() as conn:
        _end_sessions(conn, user_id, _now())


def sign_in(
    service_engine: Engine, index_engine: Engine, *, username: str, password: str, totp_code: str | None, client: str,
    vault: Vault | None = None, previous_token: str | None = None,
) -> tuple[str, SessionUser]:
    """Checks the credentials and opens a new session: (the cookie's token, the user). Refusals: 429
    sign_in_throttled (before anything is checked), 401 bad_credentials (never saying which part was wrong),
    401 org_suspended (the password was right, the organisation is not an active member), 401 totp_required
    (the password was right, a code is needed: ask for it and send both again). `vault` opens TOTP secrets;
    `previous_token`, the session the browser still holds, is ended (a sign-in never continues an old token)."""
    account = username.strip().lower()[:255]
    now = _now()
    with service_engine.connect() as conn:
        _throttle(conn, account=account, client=client, now=now)
        row = conn.execute(select(T_USER).where(T_USER.c.username == account)).mappings().first()
        required = _requires_totp(conn, row["org_id"]) if row is not None else False
    if row is None or row["disabled_at"] is not None:
        _verify_nobody(password)
        _record_failure(service_engine, account=account, client=client)
        raise Unauthorized("unknown username or wrong password", code="bad_credentials")
    if not _verify(row["password_hash"], password):
        _record_failure(service_engine, account=account, client=client)
        raise Unauthorized("unknown username or wrong password", code="bad_credentials")
    org = _organisation(index_engine, row["org_id"])
    if org is None:
        raise Unauthorized("the user's organisation is not an active consortium member", code="org_suspended")
    totp_step = None
    if row["totp_confirmed"]:
        if not totp_code or not totp_code.strip():
            raise TotpRequired("a code from the authenticator app is needed", code="totp_required")
        totp_step = _matching_step(_open_secret(vault, row), totp_code, now=now, after=row["totp_last_step"])
        if totp_step is None:
            _record_failure(service_engine, account=account, client=client)
            raise Unauthorized("unknown username or wrong password or code", code="bad_credentials")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with service_engine.begin() as conn:
        if totp_step is not None:
            fresh = conn.execute(
                update(T_USER).where(T_USER.c.id == row["id"], (T_USER.c.totp_last_step.is_(None)) | (T_USER.c.totp_last_step < totp_step)).values(totp_last_step=totp_step)
            ).rowcount  # fmt: skip
            if not fresh:  # the same code, used concurrently
                raise Unauthorized("unknown username or wrong password or code", code="bad_credentials")
        if _hasher.check_needs_rehash(row["password_hash"]):
            conn.execute(update(T_USER).where(T_USER.c.id == row["id"]).values(password_hash=_hasher.hash(password)))
        if previous_token:
            conn.execute(update(T_SESSION).where(T_SESSION.c.token_sha256 == _digest(previous_token), T_SESSION.c.revoked_at.is_(None)).values(revoked_at=now))
        conn.execute(delete(T_FAIL).where(T_FAIL.c.scope == "account", T_FAIL.c.subject == account))
        conn.execute(delete(T_SESSION).where(T_SESSION.c.expires_at < now - 86400))  # housekeeping: long-ended sessions
        conn.execute(insert(T_SESSION).values(
            token_sha256=_digest(token), user_id=row["id"], csrf_token=csrf, created_at=now, last_seen_at=now,
            expires_at=now + SESSION_LIFETIME, revoked_at=None, client=client[:255],
        ))  # fmt: skip
    user = _session_user(row, org, csrf_token=csrf, session_id=_digest(token), required=required)
    return token, user


def authenticate_session(service_engine: Engine, index_engine: Engine, token: str | None) -> SessionUser:
    """The user behind a session cookie; Unauthorized not_signed_in when there is none, or it expired, was ended,
    its user is disabled or its organisation is not an active member. Keeps the session alive (idle timeout)."""
    if not token:
        raise Unauthorized("not signed in", code="not_signed_in")
    digest = _digest(token)
    now = _now()
    with service_engine.connect() as conn:
        found = conn.execute(
            select(T_SESSION.c.csrf_token, T_SESSION.c.last_seen_at, T_SESSION.c.expires_at, T_SESSION.c.revoked_at, T_USER)
            .select_from(T_SESSION.join(T_USER, T_USER.c.id == T_SESSION.c.user_id))
            .where(T_SESSION.c.token_sha256 == digest)
        ).mappings().first()  # fmt: skip
        required = _requires_totp(conn, found["org_id"]) if found is not None else False
    if (
        found is None or found["revoked_at"] is not None or found["expires_at"] <= now
        or found["last_seen_at"] + SESSION_IDLE <= now or found["disabled_at"] is not None
    ):  # fmt: skip
        raise Unauthorized("not signed in (the session ended)", code="not_signed_in")
    org = _organisation(index_engine, found["org_id"])
    if org is None:
        raise Unauthorized("not signed in (the organisation is not an active member)", code="not_signed_in")
    if now - found["last_seen_at"] >= SESSION_TOUCH:
        with service_engine.begin() as conn:
            conn.execute(update(T_SESSION).where(T_SESSION.c.token_sha256 == digest).values(last_seen_at=now))
    return _session_user(found, org, csrf_token=found["csrf_token"], session_id=digest, required=required)


def sign_out(engine: Engine, token: str) -> None:
    """Ends the session (idempotent)."""
    with engine.begin() as conn:
        conn.execute(update(T_SESSION).where(T_SESSION.c.token_sha256 == _digest(token), T_SESSION.c.revoked_at.is_(None)).values(revoked_at=_now()))


def csrf_matches(user: SessionUser, submitted: str | None) -> bool:
    """Whether a form's csrf_token is the session's (constant time)."""
    return bool(submitted) and hmac.compare_digest(user.csrf_token.encode(), str(submitted).encode())


def _organisation(index_engine: Engine, org_id: int) -> Any:
    """The organisation's mirror row, None when it is unknown or suspended."""
    with index_engine.connect() as conn:
        org = conn.execute(select(T_ORG.c.roles, T_ORG.c.suspended).where(T_ORG.c.org_id == org_id)).first()
    return None if org is None or org.suspended else org


def _session_user(row: Any, org: Any, *, csrf_token: str, session_id: str, required: bool) -> SessionUser:
    sites = tuple(json.loads(row["sites"])) if row["sites"] else None
    principal = Principal(
        org_id=row["org_id"], roles=Role(org.roles), key_id=f"user:{row['id']}"[:16], sites=sites,
        user_id=row["id"], username=row["username"], role=row["role"],
    )  # fmt: skip
    enabled = bool(row["totp_confirmed"])
    return SessionUser(
        principal=principal, user_id=row["id"], username=row["username"], display_name=row["display_name"] or row["username"],
        org_id=row["org_id"], role=row["role"], csrf_token=csrf_token, session_id=session_id, totp_enabled=enabled,
        totp_setup_required=required and not enabled,
    )  # fmt: skip


# --- TOTP (RFC 6238) ------------------------------------------------------------------------------------------


def hotp(key: bytes, counter: int, *, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 4226: HMAC of the 8-byte counter, dynamically truncated to `digits` decimal digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp_now(secret_b32: str, at: float | None = None, *, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """The code for the time `at` (now by default): HOTP of the 30-second step count since the epoch."""
    return hotp(_b32decode(secret_b32), int((_now() if at is None else at) // TOTP_STEP), digits=digits, digest=digest)


def _b32decode(secret_b32: str) -> bytes:
    text = secret_b32.strip().replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _matching_step(secret: bytes, code: str, *, now: float, after: int | None) -> int | None:
    """The step (now ±1) whose code is `code` and is later than the last one used; None otherwise."""
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != TOTP_DIGITS:
        return None
    current = int(now // TOTP_STEP)
    for step in (current - 1, current, current + 1):
        if (after is None or step > after) and hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def _associated(user_id: int) -> bytes:
    return b"partledger totp user " + str(user_id).encode()


def _need_vault(vault: Vault | None) -> Vault:
    if vault is None:
        raise Unavailable("two-factor sign-in needs the service's encryption key (vin_key_file), which is not configured", code="totp_unavailable")
    return vault


def _open_secret(vault: Vault | None, row: Any) -> bytes:
    return _need_vault(vault).open(bytes(row["totp_secret"]), _associated(row["id"]))


def begin_totp(engine: Engine, *, user_id: int, vault: Vault | None = None) -> tuple[str, str]:
    """Starts setting up a second factor: a new secret (base32) and its otpauth:// URI for the authenticator app
    (shown as a QR code). It takes effect once confirm_totp gets a right code. Conflict totp_enabled when the user
    has one already (an admin's reset removes it)."""
    vault = _need_vault(vault)
    secret = secrets.token_bytes(20)
    with engine.begin() as conn:
        row = conn.execute(select(T_USER.c.username, T_USER.c.totp_confirmed).where(T_USER.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id}", code="unknown_user")
        if row.totp_confirmed:
            raise Conflict("this user has a second factor already", code="totp_enabled")
        conn.execute(update(T_USER).where(T_USER.c.id == user_id).values(totp_secret=vault.seal(secret, _associated(user_id)), updated_at=_now()))
    secret_b32 = base64.b32encode(secret).decode().rstrip("=")
    label = quote(f"{TOTP_ISSUER}:{row.username}")
    query = urlencode({"secret": secret_b32, "issuer": TOTP_ISSUER, "algorithm": "SHA1", "digits": TOTP_DIGITS, "period": TOTP_STEP})
    return secret_b32, f"otpauth://totp/{label}?{query}"


def confirm_totp(engine: Engine, *, user_id: int, code: str, vault: Vault | None = None) -> None:
    """Turns the second factor on when `code` matches the secret begin_totp gave; ValidationError totp_invalid."""
    with engine.connect() as conn:
        row = conn.execute(select(T_USER).where(T_USER.c.id == user_id)).mappings().first()
    if row is None or row["totp_secret"] is None or row["totp_confirmed"]:
        raise ValidationError("totp_invalid", "no second factor is being set up for this user")
    step = _matching_step(_open_secret(vault, row), code, now=_now(), after=row["totp_last_step"])
    if step is None:
        raise ValidationError("totp_invalid", "the code does not match; check the phone's clock and try the next code")
    with engine.begin() as conn:
        conn.execute(update(T_USER).where(T_USER.c.id == user_id).values(totp_confirmed=True, totp_last_step=step, updated_at=_now()))

