"""`partledger user`: the console's user accounts (ledger_service/accounts.py), in the service's database of the run
directory or of --service-db, like `partledger org`'s API keys.

A refusal (unknown user, taken name, weak password, ...) ends as one line on stderr with exit code 1; a usage error
exits 2 (Typer). Passwords are read from a file or a hidden prompt, or generated and printed once; never logged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from partledger.errors import PartLedgerError
from partledger_cli.org import ServiceDb, _migrated_engine

user_app = typer.Typer(help="People who sign in to the console: users per organisation with a role.", no_args_is_help=True)

Username = Annotated[str, typer.Argument(help="the username: 2 to 64 of a-z, 0-9, '.', '_', '-'")]
OrgScope = Annotated[Optional[int], typer.Option("--org-id", help="only if the user belongs to this organisation")]
PasswordFile = Annotated[Optional[Path], typer.Option(help="read the password from this file (its first line)")]


@contextmanager
def _one_line() -> Iterator[None]:
    """The service's refusals as one line on stderr and exit code 1."""
    from ledger_service.errors import ApiError

    try:
        yield
    except (ApiError, PartLedgerError) as exc:
        code = getattr(exc, "code", None)
        print(f"partledger: error: {exc}" + (f" ({code})" if code else ""), file=sys.stderr)
        raise typer.Exit(1) from None


def _read_password(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        print(f"partledger: error: cannot read the password file {path}: {exc.strerror}", file=sys.stderr)
        raise typer.Exit(1) from None
    return lines[0] if lines else ""


@user_app.command("add")
def add_user(
    username: Username,
    org_id: Annotated[int, typer.Option(help="the user's organisation (id on chain)")],
    role: Annotated[str, typer.Option(help="admin (users, API keys, settings), operator (acts) or viewer (reads)")] = "operator",
    site: Annotated[Optional[list[str]], typer.Option(help="narrow to these sites (repeatable): a site name or a site key address")] = None,
    display_name: Annotated[str, typer.Option(help="the name the console shows")] = "",
    password_file: PasswordFile = None,
    generate: Annotated[bool, typer.Option("--generate", help="generate a password and print it once")] = False,
    service_db: ServiceDb = None,
) -> None:
    """Create a user. The password comes from --password-file, or is generated (--generate) and printed once, or is
    asked for (hidden, twice)."""
    from ledger_service import accounts

    if password_file is not None:
        password = _read_password(password_file)
    elif generate:
        password = accounts.new_password()
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _one_line():
        engine = _migrated_engine(service_db)
        user_id = accounts.create_user(engine, org_id=org_id, username=username, password=password, role=role, sites=site or None, display_name=display_name)
    typer.echo(f"created user {username.strip().lower()} (id {user_id}, organisation {org_id}, {role})")
    if generate and password_file is None:
        typer.echo(f"password: {password}  (shown once)")


@user_app.command("list")
def list_users(
    org_id: Annotated[Optional[int], typer.Option(help="only this organisation's users")] = None,
    service_db: ServiceDb = None,
) -> None:
    """One JSON object per user: organisation, name, role, sites, second factor, disabled (never a secret)."""
    from ledger_service import accounts

    with _one_line():
        for user in accounts.list_users(_migrated_engine(service_db), org_id=org_id):
            typer.echo(json.dumps(user))


@user_app.command("disable")
def disable_user(username: Username, org_id: OrgScope = None, service_db: ServiceDb = None) -> None:
    """Disable a user; its live sessions end at once."""
    from ledger_service import accounts

    with _one_line():
        accounts.disable_user(_migrated_engine(service_db), username=username, org_id=org_id)
    typer.echo(f"disabled {username.strip().lower()} (its sessions ended)")


@user_app.command("enable")
def enable_user(username: Username, org_id: OrgScope = None, service_db: ServiceDb = None) -> None:
    """Enable a disabled user again (it signs in anew)."""
    from ledger_service import accounts

    with _one_line():
        accounts.enable_user(_migrated_engine(service_db), username=username, org_id=org_id)
    typer.echo(f"enabled {username.strip().lower()}")


@user_app.command("reset")
def reset_user(
    username: Username,
    org_id: OrgScope = None,
    password_file: PasswordFile = None,
    clear_totp: Annotated[bool, typer.Option("--clear-totp", help="also remove the second factor (a lost phone)")] = False,
    service_db: ServiceDb = None,
) -> None:
    """Set a new password (from --password-file, else generated and printed once); the user's sessions end."""
    from ledger_service import accounts

    password = _read_password(password_file) if password_file is not None else None
    with _one_line():
        new = accounts.reset_password(_migrated_engine(service_db), username=username, org_id=org_id, password=password, clear_totp=clear_totp)
    typer.echo(f"reset {username.strip().lower()} (its sessions ended{', second factor removed' if clear_totp else ''})")
    if password is None:
        typer.echo(f"password: {new}  (shown once)")


@user_app.command("role")
def set_role(
    username: Username,
    org_id: Annotated[int, typer.Option(help="the user's organisation")],
    role: Annotated[str, typer.Option(help="admin, operator or viewer")],
    site: Annotated[Optional[list[str]], typer.Option(help="narrow to these sites (repeatable); left out: unchanged")] = None,
    all_sites: Annotated[bool, typer.Option("--all-sites", help="widen to every site of the organisation")] = False,
    service_db: ServiceDb = None,
) -> None:
    """Change a user's role (and sites); it applies from the user's next request."""
    from ledger_service import accounts

    sites = None if all_sites else (site or ...)
    with _one_line():
        accounts.set_user_role(_migrated_engine(service_db), org_id=org_id, username=username, role=role, sites=sites)
    typer.echo(f"{username.strip().lower()} is now {role}")


@user_app.command("require-totp")
def require_totp(
    org_id: Annotated[int, typer.Option(help="the organisation")],
    off: Annotated[bool, typer.Option("--off", help="no longer require it")] = False,
    service_db: ServiceDb = None,
) -> None:
    """Require (or stop requiring) a second factor (TOTP) for every user of an organisation."""
    from ledger_service import accounts

    with _one_line():
        accounts.set_require_totp(_migrated_engine(service_db), org_id=org_id, required=not off)
    typer.echo(f"organisation {org_id} {'no longer requires' if off else 'requires'} a second factor")
