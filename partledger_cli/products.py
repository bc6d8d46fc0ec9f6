"""`partledger products links set|list`: a GTIN's links (product page, instructions, safety information...) that the
Digital Link resolver serves, kept by the GTIN's manufacturer through the service's API
(GET/PUT /v1/products/{gtin}/links; ledger_service.resolver_links).

The service is reached at --service (default $PARTLEDGER_SERVICE_URL, else http://127.0.0.1:8000) with the API key
in $PARTLEDGER_API_KEY. A refusal ends as one line on stderr (with the service's error code) and exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

products_app = typer.Typer(help="Products: the links each GTIN's manufacturer keeps for the Digital Link resolver.", no_args_is_help=True)
links_app = typer.Typer(help="A GTIN's links (GS1 link types: gs1:pip, gs1:instructions, gs1:safetyInfo, ...).", no_args_is_help=True)
products_app.add_typer(links_app, name="links")

Gtin = Annotated[str, typer.Argument(help="the GTIN (8, 12, 13 or 14 digits)")]
Service = Annotated[Optional[str], typer.Option(help="the service's URL (default: $PARTLEDGER_SERVICE_URL, else http://127.0.0.1:8000)")]
DEFAULT_SERVICE = "http://127.0.0.1:8000"


def service_client(url: str) -> Any:
    """An HTTP client for the service at `url` (an httpx.Client)."""
    import httpx

    return httpx.Client(base_url=url, timeout=30)


def _call(method: str, service: Optional[str], path: str, body: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    import httpx

    url = service or os.environ.get("PARTLEDGER_SERVICE_URL") or DEFAULT_SERVICE
    api_key = os.environ.get("PARTLEDGER_API_KEY")
    if not api_key:
        _fail("set PARTLEDGER_API_KEY to the API key of the GTIN's manufacturer")
    try:
        with service_client(url) as client:
            reply = client.request(method, path, json=body, headers={"Authorization": f"Bearer {api_key}"})
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}")
    try:
        answer = reply.json()
    except ValueError:
        _fail(f"the service answered {reply.status_code}: {reply.text[:300]}")
    if reply.status_code != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        rows = "".join(f"\n  link {row.get('row')}: {row.get('message')} ({row.get('code')})" for row in error.get("details") or [] if isinstance(row, dict))
        _fail(f"{error.get('message', reply.text[:300])} ({error.get('code', reply.status_code)}){rows}")
    return answer


def _fail(message: str) -> Any:
    print(f"partledger: error: {message}", file=sys.stderr)
    raise typer.Exit(1)


@links_app.command("list")
def list_links(
    gtin: Gtin,
    service: Service = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the service's answer as JSON")] = False,
) -> None:
    """The GTIN's links, in their manufacturer's order."""
    answer = _call("GET", service, f"/v1/products/{gtin}/links")
    if as_json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    maker = answer["manufacturer"]
    print(f"GTIN {answer['gtin']}, manufacturer {maker['name'] or maker['id']}: {len(answer['links'])} link(s)")
    for link in answer["links"]:
        print(f"  {link['link_type']:<24} {link['lang'] or '-':<6} {link['href']}  {link['title']}")


@links_app.command("set")
def set_links(
    gtin: Gtin,
    file: Annotated[Path, typer.Option(help='a JSON file: a list of {"link_type", "href", "title", "lang"?, "type"?} (or {"links": [...]}); [] removes them all')],
    service: Service = None,
) -> None:
    """Replace the GTIN's links with those of FILE (the GTIN's manufacturer only)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the links file {file}: {exc}")
    body = data if isinstance(data, dict) else {"links": data}
    answer = _call("PUT", service, f"/v1/products/{gtin}/links", body)
    print(f"GTIN {answer['gtin']}: {len(answer['links'])} link(s) set")
