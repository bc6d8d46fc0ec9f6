"""`partledger up | down | serve`: the whole stack on the embedded defaults (Anvil devnet, SQLite), for `make run`.

`up` resumes the devnet of the run directory (or starts a new one when there is none, or with --fresh), starts the
indexer and the service as background processes whose pids and logs live in the run directory, creates a demo API
key per organisation and the console's demo users once, and prints the URLs. Whatever runs already is kept; a stale
pid file is removed; a port taken by a process this stack did not start is refused. `down` stops them; nothing is
deleted but by `--fresh` or `partledger devnet reset`.

The service (FastAPI, SQLAlchemy, web3), uvicorn and requests are imported inside the functions that use them, so
that `partledger --help` starts without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from partledger.errors import DevnetError
from partledger_cli.devnet import ANVIL, DEVNET_FINALITY_DEPTH, KEEPER, DevnetPaths, default_paths, devnet_down, devnet_up, start_keeper
from partledger_cli.pidfiles import port_in_use, recorded

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


INDEXER = ("partledger_cli", "index")
SERVICE = ("partledger_cli", "serve")


@contextmanager
def _exclusive(paths: DevnetPaths) -> Iterator[None]:
    """One `up`, `down` or `reset` at a time on a run directory."""
    import fcntl

    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevnetError(f"another `partledger up`, `down` or `reset` is working on {paths.run}: wait for it to finish") from None
        yield


def _spawn(paths: DevnetPaths, name: str, arguments: list[str], env: dict[str, str]) -> int:
    log = open(paths.run / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "partledger_cli", *arguments],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env},
    )  # fmt: skip
    log.close()
    paths.pidfile(name).write_text(f"{process.pid}\n")
    return process.pid


def service_env(paths: DevnetPaths) -> dict[str, str]:
    relayer = {"PARTLEDGER_RELAYER_KEYS_DIR": str(paths.relayer_keys)} if paths.relayer_keys.is_dir() else {}  # none in a devnet made before
    return relayer | {
        "PARTLEDGER_MANIFEST": str(paths.manifest),
        "PARTLEDGER_INDEX_DB_URL": f"sqlite:///{paths.run / 'index.db'}",
        "PARTLEDGER_SERVICE_DB_URL": f"sqlite:///{paths.run / 'service.db'}",
        "PARTLEDGER_KEYS_DIR": str(paths.keys),
        "PARTLEDGER_KEYSTORE_PASSPHRASE_FILE": str(paths.passphrase),
        "PARTLEDGER_VIN_KEY_FILE": str(paths.run / "vin.key"),
    }


@dataclass(frozen=True)
class StackStart:
    summary: str  # "started a new devnet", "resumed the devnet at block N", "PartLedger is already running"
    urls: dict[str, str]
    notes: tuple[str, ...] = ()


def stack_up(paths: DevnetPaths, *, anvil_port: int, api_port: int, fresh: bool = False, confirmed: bool = False) -> StackStart:
    """Resumes the stack of the run directory (chain, keys, API keys, outbox, mirror), or starts a new one when there
    is none or `fresh` (after asking, unless `confirmed`). Whatever already runs is kept."""
    from partledger.anvil import AnvilConfig

    with _exclusive(paths):
        if fresh and paths.run.exists():
            _delete(paths, confirmed=confirmed)
        processes = {"anvil": recorded(paths.pid, *ANVIL), "indexer": recorded(paths.pidfile("indexer"), *INDEXER), "service": recorded(paths.pidfile("service"), *SERVICE)}
        if all(process.alive for process in processes.values()):
            return StackStart("PartLedger is already running", _urls(paths, _service_url(paths, api_port)))
        notes = [f"removed the stale pid file of the {name}, which no longer runs (pid {process.pid})" for name, process in processes.items() if process.stale and name != "anvil"]
        for name, process in processes.items():
            if process.stale and name != "anvil":
                process.path.unlink()
        if processes["anvil"].alive:
            summary = _devnet_running(paths)
        else:
            started = devnet_up(AnvilConfig(port=anvil_port), paths)
            summary, notes = started.summary(), [*started.notes, *notes]
        env = _prepare_service(paths)
        if not processes["indexer"].alive:
            arguments = ["index", "--manifest", str(paths.manifest), "--db", env["PARTLEDGER_INDEX_DB_URL"], "--finality-depth", str(DEVNET_FINALITY_DEPTH)]
            _spawn(paths, "indexer", arguments, env)
        api_url = _service_url(paths, api_port)
        if not processes["service"].alive:
            _wait_mirror_on_chain(paths)
            port = int(api_url.rsplit(":", 1)[1])
            if port_in_use(port):
                raise DevnetError(f"port {port} for the API is taken by a process this stack did not start: stop it, or choose another with `partledger up --api-port N`")
            _spawn(paths, "service", ["serve", "--port", str(port)], env)
            (paths.run / "service.url").write_text(api_url + "\n")
            _wait_http(f"{api_url}/v1/health", paths)
        return StackStart(summary, _urls(paths, api_url), tuple(notes))


def _devnet_running(paths: DevnetPaths) -> str:
    """The devnet's Anvil runs already (a `devnet up` alone, or the rest of the stack died): it must still be the
    chain of the manifest; the keeper is started when it is not running."""
    from partledger.chain import connect, require_chain
    from partledger.manifest import load_manifest

    manifest = load_manifest(paths.manifest)
    w3 = connect(manifest.rpc_url)
    require_chain(w3, chain_id=manifest.chain_id, code={name: (c.address, c.code_hash) for name, c in manifest.contracts.items()})
    start_keeper(paths)
    return f"the devnet was running, at block {w3.eth.block_number}"


def _wait_mirror_on_chain(paths: DevnetPaths, timeout: float = 120.0) -> None:
    """Until the mirror's cursor is a block of the chain: a devnet resumed from its save may lack the newest blocks
    the mirror had, and the service must not check commands against those before the indexer rolled them back."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from indexer.tables import IndexerState
    from partledger.chain import connect
    from partledger.db import make_engine
    from partledger.manifest import load_manifest

    w3 = connect(load_manifest(paths.manifest).rpc_url)
    engine = make_engine(service_env(paths)["PARTLEDGER_INDEX_DB_URL"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    cursor = conn.execute(select(IndexerState.__table__.c.block_number, IndexerState.__table__.c.block_hash)).first()
            except SQLAlchemyError:
                cursor = None  # not migrated yet: nothing to roll back
            if cursor is None:
                return
            block = w3.eth.get_block(cursor[0]) if cursor[0] <= w3.eth.block_number else None
            if block is not None and bytes(block["hash"]) == bytes(cursor[1]):
                return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise DevnetError(f"the mirror did not come back to the chain within {timeout:.0f}s; see {paths.run / 'indexer.log'}")


def _prepare_service(paths: DevnetPaths) -> dict[str, str]:
    """The VIN key, the service's migrated database, one demo API key per organisation and the console's demo users
    (console-users.json, mode 0600), each made only once."""
    from ledger_service import migrate as service_migrate
    from ledger_service.auth import create_api_key
    from ledger_service.vault import write_key_file
    from partledger.db import make_engine

    env = service_env(paths)
    if not Path(env["PARTLEDGER_VIN_KEY_FILE"]).exists():
        write_key_file(Path(env["PARTLEDGER_VIN_KEY_FILE"]))
    service_engine = make_engine(env["PARTLEDGER_SERVICE_DB_URL"], durable=True)
    service_migrate.upgrade(service_engine)
    keys_file = paths.run / "api-keys.json"
    if not keys_file.exists():
        consortium = json.loads(paths.consortium.read_text())
        keys = {org["slug"]: {"org_id": org["id"], "api_key": create_api_key(service_engine, org_id=org["id"], label="devnet demo")} for org in consortium["organisations"]}
        _write_secret_json(keys_file, keys)
    users_file = paths.run / "console-users.json"
    if not users_file.exists():
        _write_secret_json(users_file, demo_users(service_engine, json.loads(paths.consortium.read_text())))
    seed_gs1_identities(service_engine, json.loads(paths.consortium.read_text()))
    service_engine.dispose()
    return env


def demo_users(service_engine: Engine, consortium: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The console's demo users, each with a random password: an operator per organisation named by its slug, and
    `<slug>-admin` for each manufacturer. A user that exists already (its file was lost) gets a new password."""
    from ledger_service import accounts
    from ledger_service.errors import Conflict

    wanted = []
    for org in consortium["organisations"]:
        wanted.append((org, org["slug"], "operator"))
        if "MANUFACTURER" in org["roles"]:
            wanted.append((org, f"{org['slug']}-admin", "admin"))
    users = {}
    for org, username, role in wanted:
        password = accounts.new_password()
        try:
            accounts.create_user(service_engine, org_id=org["id"], username=username, password=password, role=role, display_name=f"{org['name']} ({role})")
        except Conflict:
            accounts.reset_password(service_engine, username=username, org_id=org["id"], password=password)
        users[username] = {"org": org["slug"], "org_id": org["id"], "role": role, "password": password}
    return users


def seed_gs1_identities(service_engine: Engine, consortium: dict[str, Any]) -> None:
    """Demo GS1 identities, once: a party GLN per organisation and a location GLN per site (identities.demo_gln), so
    that EPCIS documents name members as GS1 systems do."""
    from sqlalchemy import select

    from ledger_service.epcis.identities import demo_gln, set_identity
    from ledger_service.epcis.tables import Gs1Party

    with service_engine.connect() as conn:
        if conn.execute(select(Gs1Party.__table__.c.org_id).limit(1)).first() is not None:
            return
    for org in consortium["organisations"]:
        sites = [entry["site"] for entry in org["sites"]]
        locations = [{"gln": demo_gln(org["id"], index), "site": site} for index, site in enumerate(sites, start=1)]
        set_identity(service_engine, None, org["id"], gln=demo_gln(org["id"], 0), company_prefix=None, locations=locations, sites=set(sites))


def _write_secret_json(path: Path, value: Any) -> None:
    """Writes `value` as JSON to `path` atomically, readable by its owner only (mode 0600)."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _service_url(paths: DevnetPaths, api_port: int) -> str:
    """Where the service of this run directory answers: where it last ran, else on `api_port`."""
    recorded_url = paths.run / "service.url"
    if recorded(paths.pidfile("service"), *SERVICE).alive and recorded_url.exists():
        return recorded_url.read_text().strip()
    return f"http://127.0.0.1:{api_port}"


def _urls(paths: DevnetPaths, api_url: str) -> dict[str, str]:
    return {
        "api": api_url, "docs": f"{api_url}/docs", "health": f"{api_url}/v1/health", "keys": str(paths.run / "api-keys.json"),
        "console": f"{api_url}/console", "users": str(paths.run / "console-users.json"),
    }  # fmt: skip


def _wait_http(url: str, paths: DevnetPaths, timeout: float = 180.0) -> None:
    """Waits until the service answers; fails at once when its process ended."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not recorded(paths.pidfile("service"), *SERVICE).alive:
            raise DevnetError(f"the service stopped while starting; see {paths.run / 'service.log'}")
        time.sleep(0.1)
    raise DevnetError(f"the service did not answer at {url} within {timeout:.0f}s; see {paths.run / 'service.log'}")


def stack_down(paths: DevnetPaths) -> list[str]:
    """Stops the service and the indexer, then the devnet (its chain saved once more)."""
    from partledger.anvil import stop_pid

    stopped = []
    with _exclusive(paths):
        for name, markers in (("service", SERVICE), ("indexer", INDEXER)):
            process = recorded(paths.pidfile(name), *markers)
            if process.alive and stop_pid(process.pid):  # type: ignore[arg-type]
                stopped.append(name)
            process.path.unlink(missing_ok=True)
        if devnet_down(paths):
            stopped.append("anvil")
    return stopped


def reset_stack(paths: DevnetPaths, *, confirmed: bool) -> None:
    """Stops everything and deletes the run directory (after asking, unless `confirmed`)."""
    with _exclusive(paths):
        _delete(paths, confirmed=confirmed)


def _delete(paths: DevnetPaths, *, confirmed: bool) -> None:
    from partledger.anvil import stop_pid

    if not paths.run.exists():
        return
    what = f"{paths.run}: the devnet's chain, keys, API keys, outbox and mirror"
    if not confirmed:
        if not sys.stdin.isatty():
            raise DevnetError(f"this deletes {what}; add --yes to confirm")
        if not typer.confirm(f"Delete {what}?", default=False):
            raise DevnetError("nothing was deleted")
    for name, markers in (("service", SERVICE), ("indexer", INDEXER), ("keeper", KEEPER), ("anvil", ANVIL)):
        process = recorded(paths.pidfile(name) if name != "anvil" else paths.pid, *markers)
        if process.alive:
            stop_pid(process.pid)  # type: ignore[arg-type]
    shutil.rmtree(paths.run)


def up_command(
    anvil_port: Annotated[int, typer.Option(help="Anvil JSON-RPC port (a new devnet; one resumed keeps its own)")] = 8545,
    api_port: Annotated[int, typer.Option(help="HTTP API port")] = 8000,
    fresh: Annotated[bool, typer.Option("--fresh", help="delete the devnet and start a new one (asks first)")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="with --fresh: do not ask")] = False,
) -> None:
    """Start the whole stack on the embedded defaults, resuming the devnet of the run directory, and print its URLs."""
    paths = default_paths()
    started = stack_up(paths, anvil_port=anvil_port, api_port=api_port, fresh=fresh, confirmed=yes)
    for note in started.notes:
        typer.echo(note)
    typer.echo(started.summary)
    manifest = json.loads(paths.manifest.read_text())
    urls = started.urls
    typer.echo(f"chain      {manifest['rpc_url']}  (chain id {manifest['chain_id']}, Anvil devnet, saved to {paths.chain_state} every second)")
    for name, contract in manifest["contracts"].items():
        typer.echo(f"           {name:<19} {contract['address']}")
    typer.echo(f"API        {urls['api']}")
    typer.echo(f"API docs   {urls['docs']}")
    typer.echo(f"health     {urls['health']}")
    typer.echo(f"indexer    sqlite {paths.run / 'index.db'}  (log {paths.run / 'indexer.log'})")
    typer.echo(f"API keys   {urls['keys']}  (one demo key per organisation)")
    typer.echo(f"console    {urls['console']}")
    typer.echo(f"users      {urls['users']}  (console sign-in: an operator per organisation, named by its slug, and maker-admin)")
    typer.echo("stop       make stop   (partledger down; `make run` resumes)")


def down_command() -> None:
    """Stop everything `partledger up` started; the chain, keys and databases stay for the next `up`."""
    stopped = stack_down(default_paths())
    typer.echo("stopped " + ", ".join(stopped) if stopped else "nothing was running")


def serve_command(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    log_format: Annotated[str, typer.Option(help="json: one JSON object per line, with request ids; or text")] = "json",
) -> None:
    """Run the HTTP service (settings from PARTLEDGER_* environment variables). Its metrics are at /metrics; with
    several workers they add up through PROMETHEUS_MULTIPROC_DIR (a fresh directory when that is not set)."""
    import logging.config

    import uvicorn

    from partledger.jsonlog import logging_config

    try:
        config = logging_config(log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None
    logging.config.dictConfig(config)  # before the app is built: its start-up lines too
    with metrics_directory(workers):
        if workers > 1:
            uvicorn.run("partledger_cli.stack:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info", log_config=config, access_log=False)
        else:
            uvicorn.run(app_from_env(), host=host, port=port, log_level="info", log_config=config, access_log=False)


@contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the workers' metrics: the one set, without the files of processes that no longer
    run (a former run's: each process writes `<kind>_<pid>.db`; those of live processes sharing the directory, a
    `partledger submit` on this host, stay), or for several workers a temporary one of this run's own."""
    import tempfile

    variable = "PROMETHEUS_MULTIPROC_DIR"
    given = os.environ.get(variable)
    if given:
        for path in Path(given).glob("*.db"):
            pid = path.stem.rpartition("_")[2]
            if not pid.isdigit() or not _alive(int(pid)):
                path.unlink(missing_ok=True)
        yield
        return
    if workers <= 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="partledger-metrics-") as directory:
        os.environ[variable] = directory
        try:
            yield
        finally:
            os.environ.pop(variable, None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def app_from_env():  # type: ignore[no-untyped-def]
    from ledger_service.app import create_app
    from ledger_service.settings import ServiceSettings

    return create_app(ServiceSettings())  # type: ignore[call-arg]
