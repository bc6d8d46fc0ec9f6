"""`partledger up | down | serve`: the whole stack on the embedded defaults (Anvil devnet, SQLite), for `make run`.

`up` starts the devnet (when it is not running), the indexer and the service as background processes whose pids
and logs live in the devnet run directory, creates a demo API key per organisation, and prints the URLs.

The service (FastAPI, SQLAlchemy, web3), uvicorn and requests are imported inside the functions that use them, so
that `partledger --help` starts without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from partledger.errors import DevnetError
from partledger_cli.devnet import DevnetPaths, default_paths, devnet_down, devnet_up, running_pid


def _pid_alive(path: Path) -> int | None:
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _spawn(paths: DevnetPaths, name: str, arguments: list[str], env: dict[str, str]) -> int:
    log = open(paths.run / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "partledger_cli", *arguments],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env},
    )  # fmt: skip
    log.close()
    (paths.run / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def service_env(paths: DevnetPaths) -> dict[str, str]:
    return {
        "PARTLEDGER_MANIFEST": str(paths.manifest),
        "PARTLEDGER_INDEX_DB_URL": f"sqlite:///{paths.run / 'index.db'}",
        "PARTLEDGER_SERVICE_DB_URL": f"sqlite:///{paths.run / 'service.db'}",
        "PARTLEDGER_KEYS_DIR": str(paths.keys),
        "PARTLEDGER_KEYSTORE_PASSPHRASE_FILE": str(paths.passphrase),
        "PARTLEDGER_VIN_KEY_FILE": str(paths.run / "vin.key"),
    }


def stack_up(paths: DevnetPaths, *, anvil_port: int, api_port: int) -> dict[str, str]:
    from ledger_service import migrate as service_migrate
    from ledger_service.auth import create_api_key
    from ledger_service.vault import write_key_file
    from partledger.anvil import AnvilConfig
    from partledger.db import make_engine

    if running_pid(paths) is None:
        devnet_up(AnvilConfig(port=anvil_port), paths)
    env = service_env(paths)
    if not Path(env["PARTLEDGER_VIN_KEY_FILE"]).exists():
        write_key_file(Path(env["PARTLEDGER_VIN_KEY_FILE"]))
    service_engine = make_engine(env["PARTLEDGER_SERVICE_DB_URL"])
    service_migrate.upgrade(service_engine)
    keys_file = paths.run / "api-keys.json"
    if not keys_file.exists():
        consortium = json.loads(paths.consortium.read_text())
        keys = {org["slug"]: {"org_id": org["id"], "api_key": create_api_key(service_engine, org_id=org["id"], label="devnet demo")} for org in consortium["organisations"]}
        descriptor = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(keys, handle, indent=2)
    if _pid_alive(paths.run / "indexer.pid") is None:
        _spawn(paths, "indexer", ["index", "--manifest", str(paths.manifest), "--db", env["PARTLEDGER_INDEX_DB_URL"]], env)
    api_url = f"http://127.0.0.1:{api_port}"
    if _pid_alive(paths.run / "service.pid") is None:
        _spawn(paths, "service", ["serve", "--port", str(api_port)], env)
        _wait_http(f"{api_url}/v1/health", paths.run / "service.log")
    return {"api": api_url, "docs": f"{api_url}/docs", "health": f"{api_url}/v1/health", "keys": str(keys_file)}


def _wait_http(url: str, log: Path, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise DevnetError(f"the service did not answer at {url} within {timeout:.0f}s; see {log}")


def stack_down(paths: DevnetPaths) -> list[str]:
    from partledger.anvil import stop_pid

    stopped = []
    for name in ("service", "indexer"):
        pid = _pid_alive(paths.run / f"{name}.pid")
        if pid is not None and stop_pid(pid):
            stopped.append(name)
        (paths.run / f"{name}.pid").unlink(missing_ok=True)
    if devnet_down(paths):
        stopped.append("anvil")
    return stopped


def up_command(
    anvil_port: Annotated[int, typer.Option(help="Anvil JSON-RPC port")] = 8545,
    api_port: Annotated[int, typer.Option(help="HTTP API port")] = 8000,
) -> None:
    """Start the whole stack on the embedded defaults and print its URLs."""
    paths = default_paths()
    urls = stack_up(paths, anvil_port=anvil_port, api_port=api_port)
    manifest = json.loads(paths.manifest.read_text())
    typer.echo(f"chain      {manifest['rpc_url']}  (chain id {manifest['chain_id']}, Anvil devnet)")
    for name, contract in manifest["contracts"].items():
        typer.echo(f"           {name:<19} {contract['address']}")
    typer.echo(f"API        {urls['api']}")
    typer.echo(f"API docs   {urls['docs']}")
    typer.echo(f"health     {urls['health']}")
    typer.echo(f"indexer    sqlite {paths.run / 'index.db'}  (log {paths.run / 'indexer.log'})")
    typer.echo(f"API keys   {urls['keys']}  (one demo key per organisation)")
    typer.echo("stop       make stop   (partledger down)")


def down_command() -> None:
    """Stop everything `partledger up` started."""
    stopped = stack_down(default_paths())
    typer.echo("stopped " + ", ".join(stopped) if stopped else "nothing was running")


def serve_command(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Run the HTTP service (settings from PARTLEDGER_* environment variables)."""
    import uvicorn

    if workers > 1:
        uvicorn.run("partledger_cli.stack:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info")
    else:
        uvicorn.run(app_from_env(), host=host, port=port, log_level="info")


def app_from_env():  # type: ignore[no-untyped-def]
    from ledger_service.app import create_app
    from ledger_service.settings import ServiceSettings

    return create_app(ServiceSettings())  # type: ignore[call-arg]
