"""Console accounts (ledger_service/accounts.py): Argon2id passwords, server-side sessions that expire, rotate and
end, sign-in throttling per account and per client kept in SQL, the TOTP second factor, the `partledger user`
commands and the demo users of `make run`, on SQLite and PostgreSQL; and, on the chain, that a command and an
audited read record who sent them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, inspect, insert, select, update
from sqlalchemy.engine import Engine

from indexer import migrate as index_migrate
from indexer.tables import Organisation
from ledger_service import accounts, migrate
from ledger_service.audit_tables import AuditLogEntry
from ledger_service.auth import Principal, require_may_act
from ledger_service.errors import Conflict, Forbidden, NotFound, TooManyRequests, TotpRequired, Unauthorized, Unavailable, install_error_handlers
from ledger_service.tables import SERVICE_METADATA, Command, OrgSetting, SignInFailure, User, WebSession
from ledger_service.vault import Vault
from partledger.db import make_engine
from partledger.errors import ValidationError
from partledger.model import Role
from tests.forkserver import ForkServer
from tests.test_scan_migration import downgrade

PASSWORD = "correct horse battery"
MAKER, WAREHOUSE = 2, 3
T_USER, T_SESSION, T_ORG = User.__table__, WebSession.__table__, Organisation.__table__
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # Argon2id still, for tests that sign in often


# --- fixtures -------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moving = Clock()
    monkeypatch.setattr(accounts, "_now", moving)
    return moving


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "_hasher", CHEAP)
    monkeypatch.setattr(accounts, "_dummy_hash", None)


@pytest.fixture
def service(db_url: str) -> Engine:
    """The service's database, migrated: SQLite or PostgreSQL."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def index(tmp_path: Path) -> Engine:
    """The indexer's mirror with two active members: a manufacturer and a logistics company."""
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    index_migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert(T_ORG), [
            {"org_id": MAKER, "name": "Maker", "roles": int(Role.MANUFACTURER), "suspended": False, "registered_block": 1, "updated_block": 1},
            {"org_id": WAREHOUSE, "name": "Warehouse", "roles": int(Role.LOGISTICS), "suspended": False, "registered_block": 1, "updated_block": 1},
        ])  # fmt: skip
    yield engine
    engine.dispose()


@pytest.fixture
def vault() -> Vault:
    return Vault(os.urandom(32))


def sign_in(service: Engine, index: Engine, username: str = "alice", password: str = PASSWORD, *, code: str | None = None, client: str = "10.0.0.1", **extra):
    return accounts.sign_in(service, index, username=username, password=password, totp_code=code, client=client, **extra)


def alice(service: Engine, **values) -> int:
    return accounts.create_user(service, **{"org_id": MAKER, "username": "alice", "password": PASSWORD, "role": "operator"} | values)


def refused(error: pytest.ExceptionInfo, kind: type, code: str) -> None:
    assert type(error.value) is kind and error.value.code == code, (type(error.value), getattr(error.value, "code", None))


# --- users and passwords --------------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id_and_lists_carry_no_secret(service, monkeypatch, light_password_hashing):
    monkeypatch.setattr(accounts, "_hasher", light_password_hashing)  # the service's own hasher (tests run lighter: conftest)
    alice(service, display_name="Alice Li", sites=["plant-shanghai"])
    with service.connect() as conn:
        stored = conn.execute(select(T_USER.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "m=65536" in stored and PASSWORD not in stored
    assert not PasswordHasher().check_needs_rehash(stored)  # argon2-cffi's defaults (RFC 9106's low-memory choice)
    [listed] = accounts.list_users(service, org_id=MAKER)
    assert listed == listed | {"username": "alice", "display_name": "Alice Li", "role": "operator", "sites": ["plant-shanghai"], "totp_enabled": False, "disabled": False}
    assert not {"password_hash", "totp_secret"} & set(listed)
    assert accounts.list_users(service, org_id=WAREHOUSE) == []


def test_a_password_hashed_with_older_parameters_is_rehashed_at_sign_in(service, index, monkeypatch):
    monkeypatch.setattr(accounts, "_hasher", CHEAP)
    alice(service)
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher())
    sign_in(service, index)
    with service.connect() as conn:
        stored = conn.execute(select(T_USER.c.password_hash)).scalar_one()
    assert "m=65536" in stored and not PasswordHasher().check_needs_rehash(stored)


def test_usernames_passwords_and_roles_are_checked_and_names_are_unique_in_any_case(service, cheap_hashing):
    with pytest.raises(ValidationError) as error:
        alice(service, username="a")
    assert error.value.code == "invalid_username"
    with pytest.raises(ValidationError) as error:
        alice(service, username="al ice")
    assert error.value.code == "invalid_username"
    with pytest.raises(ValidationError) as error:
        alice(service, password="short")
    assert error.value.code == "weak_password"
    with pytest.raises(ValidationError) as error:
        alice(service, role="root")
    assert error.value.code == "invalid_role"
    with pytest.raises(ValidationError) as error:
        alice(service, sites=["0xnot-an-address"])
    assert error.value.code == "invalid_site"
    alice(service, username="Alice")
    with pytest.raises(Conflict) as error:
        alice(service, org_id=WAREHOUSE)
    assert error.value.code == "username_taken"
    assert [user["username"] for user in accounts.list_users(service)] == ["alice"]


def test_an_admin_of_one_organisation_cannot_touch_another_organisations_user(service, cheap_hashing):
    alice(service)
    for change in (
        lambda: accounts.disable_user(service, username="alice", org_id=WAREHOUSE),
        lambda: accounts.reset_password(service, username="alice", org_id=WAREHOUSE),
        lambda: accounts.set_user_role(service, org_id=WAREHOUSE, username="alice", role="viewer"),
    ):
        with pytest.raises(NotFound) as error:
            change()
        assert error.value.code == "unknown_user"
    assert accounts.get_user(service, username="alice")["role"] == "operator"


# --- principals -----------------------------------------------------------------------------------------------


def test_a_signed_in_user_acts_as_a_principal_of_its_organisation_narrowed_to_its_sites(service, index, cheap_hashing):
    user_id = alice(service, sites=["plant-shanghai"], display_name="Alice Li")
    token, user = sign_in(service, index)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32 and user.session_id == hashlib.sha256(token.encode()).hexdigest()
    principal = user.principal
    assert (principal.org_id, principal.roles, principal.sites, principal.user_id, principal.username, principal.role) == (
        MAKER, Role.MANUFACTURER, ("plant-shanghai",), user_id, "alice", "operator")
    assert principal.actor == "user:alice" and principal.may_act and not principal.is_admin
    assert principal.may_use("0x" + "1" * 40, "plant-shanghai") and not principal.may_use("0x" + "1" * 40, "plant-suzhou")
    again = accounts.authenticate_session(service, index, token)
    assert again == user
    assert accounts.csrf_matches(user, user.csrf_token) and not accounts.csrf_matches(user, "x" * 43) and not accounts.csrf_matches(user, None)
    with service.connect() as conn:
        assert conn.execute(select(T_SESSION.c.token_sha256)).scalar_one() == user.session_id  # the token itself is not stored


def test_a_viewer_reads_but_may_not_act_and_api_keys_act_as_operators(service, index, cheap_hashing):
    alice(service, role="viewer")
    _, user = sign_in(service, index)
    assert not user.principal.may_act and not user.principal.is_admin
    with pytest.raises(Forbidden) as error:
        require_may_act(user.principal)
    assert error.value.code == "read_only_role"
    key = Principal(org_id=MAKER, roles=Role.MANUFACTURER, key_id="0123456789abcdef", sites=None)
    assert key.role == "operator" and key.may_act and key.actor == "key:0123456789abcdef" and key.user_id is None
    require_may_act(key)
    accounts.set_user_role(service, org_id=MAKER, username="alice", role="admin")
    assert accounts.authenticate_session(service, index, sign_in(service, index)[0]).principal.is_admin


# --- sign-in and sessions -------------------------------------------------------------------------------------


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(service, index, cheap_hashing):
    alice(service)
    for username, password in (("alice", "wrong password!"), ("nobody", PASSWORD), ("alice", "")):
        with pytest.raises(Unauthorized) as error:
            sign_in(service, index, username, password)
        refused(error, Unauthorized, "bad_credentials")
        assert str(error.value) == "unknown username or wrong password"


def test_every_sign_in_makes_a_new_token_and_ends_the_one_the_browser_held(service, index, cheap_hashing):
    alice(service)
    first, user = sign_in(service, index)
    second, again = sign_in(service, index, previous_token=first)
    assert second != first and again.session_id != user.session_id and again.csrf_token != user.csrf_token
    with pytest.raises(Unauthorized) as error:
        accounts.authenticate_session(service, index, first)
    refused(error, Unauthorized, "not_signed_in")
    assert accounts.authenticate_session(service, index, second).username == "alice"


def test_signing_out_ends_the_session_and_no_token_is_no_session(service, index, cheap_hashing):
    alice(service)
    token, _ = sign_in(service, index)
    accounts.sign_out(service, token)
    accounts.sign_out(service, token)
    for presented in (token, None, "", "made-up-token"):
        with pytest.raises(Unauthorized) as error:
            accounts.authenticate_session(service, index, presented)
        refused(error, Unauthorized, "not_signed_in")


def test_a_session_ends_after_eight_idle_hours(service, index, clock, cheap_hashing):
    alice(service)
    token, _ = sign_in(service, index)
    clock.advance(accounts.SESSION_IDLE - 1)
    accounts.authenticate_session(service, index, token)  # used: the idle clock starts again
    clock.advance(accounts.SESSION_IDLE - 1)
    accounts.authenticate_session(service, index, token)
    clock.advance(accounts.SESSION_IDLE)
    with pytest.raises(Unauthorized) as error:
        accounts.authenticate_session(service, index, token)
    refused(error, Unauthorized, "not_signed_in")


def test_a_session_in_use_still_ends_seven_days_after_sign_in(service, index, clock, cheap_hashing):
    alice(service)
    token, _ = sign_in(service, index)
    start = clock.now
    while clock.now + 3600 < start + accounts.SESSION_LIFETIME:
        clock.advance(3600)
        accounts.authenticate_session(service, index, token)
    clock.now = start + accounts.SESSION_LIFETIME
    with pytest.raises(Unauthorized) as error:
        accounts.authenticate_session(service, index, token)
    refused(error, Unauthorized, "not_signed_in")


def test_disabling_a_user_ends_its_live_sessions_and_refuses_its_sign_in(service, index, cheap_hashing):
    alice(service)
    tokens = [sign_in(service, index, client=f"10.0.0.{n}")[0] for n in range(3)]
    accounts.disable_user(service, username="alice", org_id=MAKER)
    for token in tokens:
        with pytest.raises(Unauthorized) as error:
            accounts.authenticate_session(service, index, token)
        refused(error, Unauthorized, "not_signed_in")
    with pytest.raises(Unauthorized) as error:
        sign_in(service, index)
    refused(error, Unauthorized, "bad_credentials")
    assert accounts.get_user(service, username="alice")["disabled"]
    accounts.enable_user(service, username="alice")
    with pytest.raises(Unauthorized):
        accounts.authenticate_session(service, index, tokens[0])  # enabling does not bring old sessions back
    assert accounts.authenticate_session(service, index, sign_in(service, index)[0]).username == "alice"


def test_a_password_reset_ends_the_sessions_and_the_old_password(service, index, cheap_hashing):
    alice(service)
    token, _ = sign_in(service, index)
    new = accounts.reset_password(service, username="alice")
    assert len(new) >= accounts.PASSWORD_MIN and new != PASSWORD
    with pytest.raises(Unauthorized):
        accounts.authenticate_session(service, index, token)
    with pytest.raises(Unauthorized):
        sign_in(service, index)
    assert sign_in(service, index, password=new)[1].username == "alice"
    assert accounts.reset_password(service, username="alice", password="chosen password 2") == "chosen password 2"


def test_a_users_own_password_change_keeps_only_the_current_session(service, index, cheap_hashing):
    user_id = alice(service)
    other, _ = sign_in(service, index)
    current, user = sign_in(service, index)
    with pytest.raises(Unauthorized) as error:
        accounts.change_password(service, user_id=user_id, current="not the password", new="a new password 1")
    refused(error, Unauthorized, "bad_credentials")
    accounts.change_password(service, user_id=user_id, current=PASSWORD, new="a new password 1", keep_session=user.session_id)
    assert accounts.authenticate_session(service, index, current).username == "alice"
    with pytest.raises(Unauthorized):
        accounts.authenticate_session(service, index, other)


def test_a_suspended_organisation_refuses_sign_in_and_ends_live_sessions(service, index, cheap_hashing):
    alice(service)
    token, _ = sign_in(service, index)
    with index.begin() as conn:
        conn.execute(update(T_ORG).where(T_ORG.c.org_id == MAKER).values(suspended=True))
    with pytest.raises(Unauthorized) as error:
        accounts.authenticate_session(service, index, token)
    refused(error, Unauthorized, "not_signed_in")
    with pytest.raises(Unauthorized) as error:
        sign_in(service, index)
    refused(error, Unauthorized, "org_suspended")
    accounts.create_user(service, org_id=99, username="ghost", password=PASSWORD, role="operator")  # not a member at all
    with pytest.raises(Unauthorized) as error:
        sign_in(service, index, "ghost")
    refused(error, Unauthorized, "org_suspended")


# --- throttling -----------------------------------------------------------------------------------------------


def fail(service: Engine, index: Engine, username: str = "alice", *, client: str = "10.0.0.1") -> None:
    with pytest.raises(Unauthorized):
        sign_in(service, index, username, "wrong password!", client=client)


def test_five_failures_throttle_the_account_from_any_client_until_they_leave_the_window(service, index, clock, cheap_hashing):
    alice(service)
    for n in range(accounts.ACCOUNT_FAILURES):
        fail(service, index, client=f"10.0.1.{n}")
        clock.advance(60)
    with pytest.raises(TooManyRequests) as error:
        sign_in(service, index, client="192.0.2.7")  # the right password, from a new client: still refused
    refused(error, TooManyRequests, "sign_in_throttled")
    assert error.value.details == {"scope": "account"}
    assert error.value.retry_after == accounts.THROTTLE_WINDOW - 5 * 60  # when the first failure leaves the window
    clock.advance(error.value.retry_after)
    assert sign_in(service, index)[1].username == "alice"  # and a success clears the account's count
    for _ in range(accounts.ACCOUNT_FAILURES - 1):
        fail(service, index, client="10.0.2.1")
    assert sign_in(service, index)[1].username == "alice"


def test_twenty_failures_from_one_client_throttle_it_for_every_account(service, index, clock, cheap_hashing):
    alice(service)
    for n in range(accounts.CLIENT_FAILURES):
        fail(service, index, f"user-{n}", client="203.0.113.9")
    with pytest.raises(TooManyRequests) as error:
        sign_in(service, index, client="203.0.113.9")
    refused(error, TooManyRequests, "sign_in_throttled")
    assert error.value.details == {"scope": "client"} and 1 <= error.value.retry_after <= accounts.THROTTLE_WINDOW
    assert sign_in(service, index, client="203.0.113.10")[1].username == "alice"  # another client is not held off
    clock.advance(accounts.THROTTLE_WINDOW)
    assert sign_in(service, index, client="203.0.113.9")[1].username == "alice"


def test_workers_on_one_database_share_the_throttle(service, index, db_url, cheap_hashing):
    other_worker = make_engine(db_url)
    try:
        alice(service)
        for _ in range(accounts.ACCOUNT_FAILURES):
            fail(other_worker, index)
        with pytest.raises(TooManyRequests):
            sign_in(service, index)
    finally:
        other_worker.dispose()


def test_throttling_answers_429_with_retry_after_and_totp_required_401():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/throttled")
    def throttled() -> None:
        raise TooManyRequests("too many failed sign-ins", retry_after=42, code="sign_in_throttled")

    @app.get("/totp")
    def totp() -> None:
        raise TotpRequired("a code is needed")

    client = TestClient(app)
    reply = client.get("/throttled")
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "42" and reply.json()["error"]["code"] == "sign_in_throttled"
    reply = client.get("/totp")
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "totp_required"


# --- TOTP -----------------------------------------------------------------------------------------------------

RFC6238_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238_VECTORS = [  # RFC 6238 appendix B: time, TOTP (8 digits) for SHA-1, SHA-256, SHA-512
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_totp_codes_match_the_rfc_6238_test_vectors(at, sha1, sha256, sha512):
    for digest, expected in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        secret = base64.b32encode(RFC6238_SEEDS[digest]).decode()
        assert accounts.totp_now(secret, at, digits=8, digest=digest) == expected
    secret = base64.b32encode(RFC6238_SEEDS["sha1"]).decode().rstrip("=")
    assert accounts.totp_now(secret, at) == sha1[-6:]  # the app's 6 digits: the same value modulo 10^6


def enrol(service: Engine, vault: Vault, user_id: int, clock: Clock) -> str:
    secret, uri = accounts.begin_totp(service, user_id=user_id, vault=vault)
    assert uri.startswith("otpauth://totp/PartLedger%3Aalice?") and f"secret={secret}" in uri and "issuer=PartLedger" in uri
    accounts.confirm_totp(service, user_id=user_id, code=accounts.totp_now(secret, clock.now), vault=vault)
    clock.advance(accounts.TOTP_STEP)  # the confirming code's step is used up
    return secret


def test_with_totp_sign_in_needs_a_code_of_an_adjacent_step_and_each_step_once(service, index, vault, clock, cheap_hashing):
    user_id = alice(service)
    secret = enrol(service, vault, user_id, clock)
    assert accounts.get_user(service, username="alice")["totp_enabled"]
    with pytest.raises(TotpRequired) as error:
        sign_in(service, index, vault=vault)
    refused(error, TotpRequired, "totp_required")
    with pytest.raises(Unauthorized) as error:
        sign_in(service, index, "alice", "wrong password!", code=accounts.totp_now(secret, clock.now), vault=vault)
    refused(error, Unauthorized, "bad_credentials")  # a wrong password is never asked for a code
    step = accounts.TOTP_STEP
    clock.advance(2 * step)
    _, user = sign_in(service, index, code=accounts.totp_now(secret, clock.now - step), vault=vault)  # the phone is 30 s behind
    assert user.totp_enabled
    with pytest.raises(Unauthorized) as error:
        sign_in(service, index, code=accounts.totp_now(secret, clock.now - step), vault=vault)
    refused(error, Unauthorized, "bad_credentials")  # the same code again
    sign_in(service, index, code=accounts.totp_now(secret, clock.now + step), vault=vault)  # 30 s ahead
    for off_by in (-2 * step, 3 * step, 0):  # too far off; and now's step, older than the one just used
        with pytest.raises(Unauthorized) as error:
            sign_in(service, index, code=accounts.totp_now(secret, clock.now + off_by), vault=vault)
        refused(error, Unauthorized, "bad_credentials")


def test_a_wrong_confirmation_code_leaves_totp_off(service, vault, clock, cheap_hashing):
    user_id = alice(service)
    secret, _ = accounts.begin_totp(service, user_id=user_id, vault=vault)
    wrong = f"{(int(accounts.totp_now(secret, clock.now)) + 1) % 10**6:06d}"
    with pytest.raises(ValidationError) as error:
        accounts.confirm_totp(service, user_id=user_id, code=wrong, vault=vault)
    assert error.value.code == "totp_invalid"
    assert not accounts.get_user(service, username="alice")["totp_enabled"]
    accounts.confirm_totp(service, user_id=user_id, code=accounts.totp_now(secret, clock.now), vault=vault)
    with pytest.raises(Conflict) as error:
        accounts.begin_totp(service, user_id=user_id, vault=vault)
    assert error.value.code == "totp_enabled"


def test_the_totp_secret_is_sealed_with_the_vault_key_and_needs_it(service, index, vault, clock, cheap_hashing):
    user_id = alice(service)
    with pytest.raises(Unavailable) as error:
        accounts.begin_totp(service, user_id=user_id)
    assert error.value.code == "totp_unavailable"
    secret = enrol(service, vault, user_id, clock)
    with service.connect() as conn:
        sealed = bytes(conn.execute(select(T_USER.c.totp_secret)).scalar_one())
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert raw not in sealed and secret.encode() not in sealed and len(sealed) == 12 + len(raw) + 16
    assert vault.open(sealed, accounts._associated(user_id)) == raw
    with pytest.raises(Exception):  # noqa: B017, PT011 - another key, or another user's row, does not open it
        Vault(os.urandom(32)).open(sealed, accounts._associated(user_id))
    with pytest.raises(Exception):  # noqa: B017, PT011
        vault.open(sealed, accounts._associated(user_id + 1))
    with pytest.raises(Unavailable):
        sign_in(service, index, code=accounts.totp_now(secret, clock.now))


def test_an_organisation_that_requires_totp_flags_users_without_it_and_reset_can_remove_it(service, index, vault, clock, cheap_hashing):
    user_id = alice(service)
    assert not accounts.require_totp(service, MAKER)
    accounts.set_require_totp(service, org_id=MAKER, required=True)
    accounts.set_require_totp(service, org_id=MAKER, required=True)
    assert accounts.require_totp(service, MAKER) and not accounts.require_totp(service, WAREHOUSE)
    token, user = sign_in(service, index)
    assert user.totp_setup_required and not user.totp_enabled
    enrol(service, vault, user_id, clock)
    assert not accounts.authenticate_session(service, index, token).totp_setup_required
    accounts.reset_password(service, username="alice", password=PASSWORD, clear_totp=True)  # a lost phone
    assert sign_in(service, index)[1].totp_setup_required
    accounts.set_require_totp(service, org_id=MAKER, required=False)
    assert not sign_in(service, index)[1].totp_setup_required


# --- the migration --------------------------------------------------------------------------------------------

ACCOUNT_TABLES = {User.__tablename__, WebSession.__tablename__, SignInFailure.__tablename__, OrgSetting.__tablename__}


def test_migration_0004_matches_the_tables_and_downgrades(service):
    mine = MetaData()
    for name in (*ACCOUNT_TABLES, Command.__tablename__, AuditLogEntry.__tablename__):
        SERVICE_METADATA.tables[name].to_metadata(mine)
    with service.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in mine.tables})
        assert compare_metadata(context, mine) == []
    downgrade(service, "0003")
    assert ACCOUNT_TABLES.isdisjoint(inspect(service).get_table_names())
    assert "actor" not in {column["name"] for column in inspect(service).get_columns("commands")}
    migrate.upgrade(service)
    assert ACCOUNT_TABLES <= set(inspect(service).get_table_names())


# --- `partledger user` ----------------------------------------------------------------------------------------

CLI = [sys.executable, "-m", "partledger_cli"]


class UserCli:
    """`partledger user ...`: the first run in a fresh interpreter, the others forked from the worker's fork server
    (tests/forkserver.py), which spares each run a second of imports."""

    def __init__(self, forkserver: ForkServer, workdir: Path) -> None:
        self.forkserver, self.workdir, self.runs = forkserver, workdir, 0

    def __call__(self, *arguments: str, service_db: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = ["user", *arguments, "--service-db", service_db]
        self.runs += 1
        if self.runs == 1:
            return subprocess.run([*CLI, *command], capture_output=True, text=True, input=stdin, timeout=120)
        return self.forkserver.run(command, env=dict(os.environ), workdir=self.workdir / "cli", timeout=120, input=stdin)


@pytest.fixture
def run_user(forkserver: ForkServer, tmp_path: Path) -> UserCli:
    return UserCli(forkserver, tmp_path)


def one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partledger: error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_user_commands_add_list_disable_enable_and_reset(tmp_path, index, run_user: UserCli):
    service_db = f"sqlite:///{tmp_path / 'service.db'}"
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    added = run_user("add", "Alice", "--org-id", str(MAKER), "--role", "admin", "--site", "plant-shanghai", "--password-file", str(tmp_path / "pw"), service_db=service_db)
    assert added.returncode == 0 and "created user alice" in added.stdout and PASSWORD not in added.stdout, added.stderr
    generated = run_user("add", "bob", "--org-id", str(WAREHOUSE), "--generate", service_db=service_db)
    assert generated.returncode == 0, generated.stderr
    bob_password = generated.stdout.split("password: ")[1].split()[0]
    prompted = run_user("add", "carol", "--org-id", str(MAKER), "--role", "viewer", service_db=service_db, stdin="carol's password\ncarol's password\n")
    assert prompted.returncode == 0 and "carol's password" not in prompted.stdout, prompted.stderr
    listed = [json.loads(line) for line in run_user("list", service_db=service_db).stdout.splitlines()]
    assert [(u["username"], u["org_id"], u["role"], u["sites"]) for u in listed] == [
        ("alice", MAKER, "admin", ["plant-shanghai"]), ("carol", MAKER, "viewer", None), ("bob", WAREHOUSE, "operator", None)]
    assert not any("password" in line or "argon2" in line for line in run_user("list", service_db=service_db).stdout.splitlines())
    assert [json.loads(line)["username"] for line in run_user("list", "--org-id", str(WAREHOUSE), service_db=service_db).stdout.splitlines()] == ["bob"]

    engine = make_engine(service_db)
    try:
        token, _ = sign_in(engine, index)
        assert sign_in(engine, index, "bob", bob_password)[1].org_id == WAREHOUSE
        assert sign_in(engine, index, "carol", "carol's password")[1].role == "viewer"
        assert run_user("disable", "alice", service_db=service_db).returncode == 0
        with pytest.raises(Unauthorized):
            accounts.authenticate_session(engine, index, token)
        assert run_user("enable", "alice", service_db=service_db).returncode == 0
        reset = run_user("reset", "alice", service_db=service_db)
        assert reset.returncode == 0, reset.stderr
        new = reset.stdout.split("password: ")[1].split()[0]
        assert sign_in(engine, index, password=new)[1].username == "alice"
        assert run_user("role", "alice", "--org-id", str(MAKER), "--role", "viewer", service_db=service_db).returncode == 0
        assert accounts.get_user(engine, username="alice")["sites"] == ["plant-shanghai"]
        assert run_user("require-totp", "--org-id", str(MAKER), service_db=service_db).returncode == 0
        assert accounts.require_totp(engine, MAKER)
    finally:
        engine.dispose()


def test_user_commands_refuse_in_one_line_with_exit_code_1(tmp_path, run_user: UserCli):
    service_db = f"sqlite:///{tmp_path / 'service.db'}"
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "short").write_text("short\n")
    assert run_user("add", "alice", "--org-id", "2", "--password-file", str(tmp_path / "pw"), service_db=service_db).returncode == 0
    one_line_error(run_user("add", "alice", "--org-id", "3", "--password-file", str(tmp_path / "pw"), service_db=service_db), "username_taken")
    one_line_error(run_user("add", "x", "--org-id", "3", "--password-file", str(tmp_path / "pw"), service_db=service_db), "invalid_username")
    one_line_error(run_user("add", "dave", "--org-id", "3", "--password-file", str(tmp_path / "short"), service_db=service_db), "weak_password")
    one_line_error(run_user("add", "dave", "--org-id", "3", "--role", "root", "--generate", service_db=service_db), "invalid_role")
    one_line_error(run_user("add", "dave", "--org-id", "3", "--password-file", str(tmp_path / "missing"), service_db=service_db), "cannot read the password file")
    one_line_error(run_user("disable", "nobody", service_db=service_db), "unknown_user")
    one_line_error(run_user("reset", "alice", "--org-id", "3", service_db=service_db), "unknown_user")
    assert run_user("add", "dave", "--generate", service_db=service_db).returncode == 2  # a usage error: no --org-id


# --- the demo users of `make run` -----------------------------------------------------------------------------


def test_make_run_creates_demo_users_once_in_a_private_file_next_to_the_api_keys(tmp_path, index, cheap_hashing):
    from partledger_cli.paths import DevnetPaths
    from partledger_cli.stack import _prepare_service, _urls, service_env

    paths = DevnetPaths(run=tmp_path / "run")
    paths.run.mkdir()
    paths.consortium.write_text(json.dumps({"organisations": [
        {"slug": "maker", "id": MAKER, "name": "Maker", "roles": ["MANUFACTURER"], "sites": []},
        {"slug": "warehouse", "id": WAREHOUSE, "name": "Warehouse", "roles": ["LOGISTICS"], "sites": []},
    ]}))  # fmt: skip
    _prepare_service(paths)
    users_file = paths.run / "console-users.json"
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600 and users_file.parent == (paths.run / "api-keys.json").parent
    users = json.loads(users_file.read_text())
    assert {name: (user["org_id"], user["role"]) for name, user in users.items()} == {
        "maker": (MAKER, "operator"), "maker-admin": (MAKER, "admin"), "warehouse": (WAREHOUSE, "operator")}
    assert _urls(paths, "http://127.0.0.1:8000")["users"] == str(users_file)
    engine = make_engine(service_env(paths)["PARTLEDGER_SERVICE_DB_URL"])
    try:
        for name, user in users.items():
            assert sign_in(engine, index, name, user["password"])[1].role == user["role"]
        hashes = stored_hashes(engine)
        _prepare_service(paths)  # resumed: the same users and passwords
        assert json.loads(users_file.read_text()) == users and stored_hashes(engine) == hashes
        users_file.unlink()  # lost: new passwords for the same users
        _prepare_service(paths)
        renewed = json.loads(users_file.read_text())
        assert renewed.keys() == users.keys() and renewed["maker"]["password"] != users["maker"]["password"]
        assert sign_in(engine, index, "maker", renewed["maker"]["password"])[1].username == "maker"
        assert len(accounts.list_users(engine)) == 3
    finally:
        engine.dispose()


def stored_hashes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(T_USER.c.username, T_USER.c.password_hash)).all())


# --- who sent it: commands and audited reads (on the chain) ---------------------------------------------------


@pytest.mark.chain
def test_a_command_and_an_audited_read_record_the_user_or_api_key_that_sent_them(ledger, tmp_path, cheap_hashing):
    from ledger_service import write_service
    from ledger_service.audit import audit_log_of
    from tests.chainkit import GTIN_A
    from tests.servicekit import prepare_stack, running_service, wait_command

    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    with running_service(stack) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        engine, index_engine = services.service_engine, services.index_engine
        for username, org, role in (("maker-op", "maker", "operator"), ("maker-view", "maker", "viewer"), ("aud", "auditor", "operator")):
            accounts.create_user(engine, org_id=ledger.orgs[org].id, username=username, password=PASSWORD, role=role)
        _, operator = accounts.sign_in(engine, index_engine, username="maker-op", password=PASSWORD, totp_code=None, client="t")
        answer = write_service.submit_register(services, operator.principal, gtin=GTIN_A, lot="L-USER", serials=["U1", "U2"], request_sha256="0" * 64)
        view = wait_command(stack, "maker", answer["command_id"])
        assert view["status"] == "confirmed" and view["actor"] == "user:maker-op"

        by_key = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-KEY", "serials": ["K1"]})
        assert by_key.status_code == 202, by_key.text
        key_id = stack.api_keys["maker"].split("_")[1]
        assert wait_command(stack, "maker", by_key.json()["command_id"])["actor"] == f"key:{key_id}"
        with engine.connect() as conn:
            actors = dict(conn.execute(select(Command.__table__.c.id, Command.__table__.c.actor)).all())
        assert actors == {answer["command_id"]: "user:maker-op", by_key.json()["command_id"]: f"key:{key_id}"}

        _, viewer = accounts.sign_in(engine, index_engine, username="maker-view", password=PASSWORD, totp_code=None, client="t")
        with pytest.raises(Forbidden) as error:
            write_service.submit_register(services, viewer.principal, gtin=GTIN_A, lot="L-VIEW", serials=["V1"], request_sha256="1" * 64)
        assert error.value.code == "read_only_role"
        with pytest.raises(Forbidden) as error:
            services.outbox.signer_for(viewer.principal, None)  # every signing path starts here
        assert error.value.code == "read_only_role"
        with engine.connect() as conn:
            assert len(conn.execute(select(Command.__table__.c.id)).all()) == 2

        assert client.get("/v1/parts", headers=stack.headers("auditor")).status_code == 200
        _, auditor = accounts.sign_in(engine, index_engine, username="aud", password=PASSWORD, totp_code=None, client="t")
        audit = audit_log_of(client.app)
        entry_id = audit.record(auditor.principal, method="GET", target="/console/audit/parts", status=200)
        entries = client.get("/v1/audit/log", headers=stack.headers("auditor")).json()["items"]
        auditor_key = stack.api_keys["auditor"].split("_")[1]
        assert entries[0]["actor"] == f"key:{auditor_key}" and entries[0]["key_id"] == auditor_key
        [mine] = [entry for entry in entries if entry["id"] == entry_id]
        assert mine["actor"] == "user:aud"
        audit.anchor_pending()
        proof = audit.entry_proof(entry_id)
        assert proof is not None and proof.values[2] == "user:aud"  # the anchored leaf names the person
        assert audit.entry_proof(entries[0]["id"]).values[2] == auditor_key  # an API key's leaf is as before


@pytest.mark.chain
def test_a_users_commands_follow_a_revoked_site_key_to_its_replacement_only_when_its_sites_allow(ledger, tmp_path, cheap_hashing):
    """As for API keys: a user narrowed to the site's name follows the site to its new key; one narrowed to the
    revoked key's address is rejected with the reason, never signed by a key it may not use."""
    from ledger_service import write_service
    from partledger.ids import ascii32
    from tests.servicekit import PASSPHRASE, prepare_stack, running_service
    from tests.test_write_api import held_by, settled, submitting
    from wallets.keystore import create_keystore

    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    workshop, old = ledger.orgs["workshop"], stack.site_keys["workshop"]
    pids = held_by(ledger, "workshop", ["US1", "US2"])
    with running_service(stack, submitter=False) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        accounts.create_user(services.service_engine, org_id=workshop.id, username="by-site", password=PASSWORD, role="operator", sites=["service-site"])
        accounts.create_user(services.service_engine, org_id=workshop.id, username="by-address", password=PASSWORD, role="operator", sites=[old])
        commands = []
        for username, pid in (("by-site", pids[0]), ("by-address", pids[1])):
            _, user = accounts.sign_in(services.service_engine, services.index_engine, username=username, password=PASSWORD, totp_code=None, client="t")
            answer = write_service.submit_transition(services, user.principal, kind="scrap", parts=[pid], request_sha256=pid.hex())
            commands.append(answer["command_id"])
        new = create_keystore(stack.keys_dir / "workshop" / "service-site.2.json", PASSPHRASE, light=True)
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(workshop.id, new.address, ascii32("service-site")))
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(old))
        with submitting(client):
            moved, kept_back = settled(stack, "workshop", commands[0]), settled(stack, "workshop", commands[1])
    assert (moved["status"], moved["actor"], moved["re_signed_by"]) == ("confirmed", "user:by-site", [new.address])
    assert (kept_back["status"], kept_back["actor"], kept_back["transactions"]) == ("rejected", "user:by-address", [])
    assert f"may not use the replacement key {new.address}" in kept_back["errors"][0]["message"]
