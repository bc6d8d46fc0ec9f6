"""Who may write what: every organisation of the consortium against every write endpoint, on SQLite and PostgreSQL.

An organisation whose roles allow a write gets 202 (each is given a part in the right state, so no state error
hides a role error); one whose roles do not gets 403 missing_role, even for parts it holds in the right state.
Then the chain and the service's tables are compared with what only the allowed requests could have produced.
Separately: an organisation's API key can never act for another organisation, and a revoked key is refused.
"""

from __future__ import annotations

from typing import Any

from eth_utils import keccak
from sqlalchemy import select

from ledger_service.auth import create_api_key, revoke_api_key
from ledger_service.tables import ChainTransaction, Command, CommandItem
from partledger.db import make_engine
from partledger.ids import part_id
from partledger.model import PartStatus
from tests.chainkit import CONSORTIUM, GTIN_A, GTIN_B, Ledger
from tests.servicekit import Stack, wait_command
from tests.test_write_api import NO_DOC, VINS, accepted, held_by, hexid, on_chain, post, post_csv, refused, serve, stack  # noqa: F401

S = PartStatus
ORGS = [name for name, _, _ in CONSORTIUM]
CUSTODY = {"maker", "maker2", "warehouse", "distributor", "workshop", "workshop2", "recycler"}
# Written from the product brief, not from ledger_service.operations, so that the two are checked against each other.
MAY = {
    "register": {"maker", "maker2"},
    "register.csv": {"maker", "maker2"},
    "ship": CUSTODY,
    "receive": CUSTODY,
    "cancel": CUSTODY,
    "sell": {"distributor", "workshop", "workshop2"},
    "install": {"workshop", "workshop2"},
    "remove": {"workshop", "workshop2"},
    "quarantine": CUSTODY,
    "release": CUSTODY,
    "scrap": CUSTODY,
    "recycle": {"recycler"},
    "recall": {"maker", "maker2", "regulator"},
    "batches": set(ORGS) - {"auditor"},
}
KIND = {"register.csv": "register", "batches": "anchor_batch"}
PART_OPS = ["ship", "receive", "cancel", "sell", "install", "remove", "quarantine", "release", "scrap", "recycle"]
AFTER = {  # the status an allowed part operation leaves its part in, held by the caller
    "receive": S.IN_STOCK, "cancel": S.IN_STOCK, "sell": S.SOLD, "install": S.INSTALLED, "remove": S.IN_STOCK,
    "quarantine": S.QUARANTINED, "release": S.IN_STOCK, "scrap": S.SCRAPPED, "recycle": S.RECYCLED,
}  # fmt: skip


def ship_target(ledger: Ledger, name: str) -> int:
    return ledger.orgs["distributor" if name == "warehouse" else "warehouse"].id


def seed_matrix(ledger: Ledger) -> tuple[dict[tuple[str, str], bytes], dict[str, int]]:
    """For every organisation and part operation, a part it could apply that operation to (for organisations
    that hold no parts, the auditor and the regulator, parts of `maker`), and the lots to recall."""
    maker, maker2 = ledger.orgs["maker"], ledger.orgs["maker2"]
    p = ledger.parts.functions
    parts: dict[tuple[str, str], bytes] = {}
    for name in ORGS:
        holder = name if name in CUSTODY else "maker"
        ops = [op for op in PART_OPS if not (op == "receive" and name == "maker")]
        pids = ledger.register(maker, [f"Z{ORGS.index(name)}-{op}" for op in ops], lot="L-AZ")
        parts.update({(name, op): pid for op, pid in zip(ops, pids)})
        if holder != "maker":
            ledger.act(maker.key, p.shipParts(pids, ledger.orgs[holder].id, NO_DOC))
            ledger.act(ledger.orgs[holder].key, p.receiveParts([pid for op, pid in zip(ops, pids) if op != "receive"], NO_DOC))
    [parts[("maker", "receive")]] = ledger.register(maker2, ["maker-receive"], lot="L-AZ2")
    ledger.act(maker2.key, p.shipParts([parts[("maker", "receive")]], maker.id, NO_DOC))
    for name in CUSTODY:
        key = ledger.orgs[name].key
        ledger.act(key, p.quarantineParts([parts[(name, "release")]], NO_DOC))
        ledger.act(key, p.shipParts([parts[(name, "cancel")]], ship_target(ledger, name), NO_DOC))
        if name.startswith("workshop"):
            ledger.act(key, p.installParts([parts[(name, "remove")]], [keccak(text=name)], NO_DOC))
    lots = {}
    for name, manufacturer, code in (("maker", maker, "L-RM"), ("maker2", maker2, "L-RM2"), ("regulator", maker, "L-RR"), ("other", maker, "L-RX")):
        ledger.register(manufacturer, [f"lot-{code}"], lot=code)
        lots[name] = ledger.lot_number(manufacturer, code)
    return parts, lots


def request_for(ledger: Ledger, endpoint: str, name: str, parts: dict[tuple[str, str], bytes], lots: dict[str, int]) -> tuple[str, Any]:
    if endpoint == "register":
        return "/v1/parts/register", {"gtin": GTIN_B, "lot": f"L-{name}", "serials": [f"J-{name}"]}
    if endpoint == "register.csv":
        return "/v1/parts/register.csv", f"gtin,serial,lot\n{GTIN_B},C-{name},L-{name}\n"
    if endpoint == "recall":
        return "/v1/lots/recall", {"lot": lots.get(name, lots["other"]), "notice_hash": "0x" + keccak(text=f"notice-{name}").hex()}
    if endpoint == "batches":
        return "/v1/batches", {"root": "0x" + keccak(text=f"batch-{name}").hex(), "record_count": 7, "kind": "scan"}
    pid = hexid(parts[(name, endpoint)])
    if endpoint == "install":
        return "/v1/parts/install", {"items": [{"part_id": pid, "vin": VINS[0]}]}
    if endpoint == "ship":
        return "/v1/parts/ship", {"part_ids": [pid], "to_org": ship_target(ledger, name)}
    return f"/v1/parts/{endpoint}", {"part_ids": [pid]}


def send(stack: Stack, name: str, path: str, body: Any):  # type: ignore[no-untyped-def]
    if isinstance(body, str):
        return post_csv(stack, name, body)
    return post(stack, name, path, body)


def part_states(ledger: Ledger, pids: list[bytes]) -> dict[bytes, tuple[PartStatus, int, int]]:
    return {pid: on_chain(ledger, pid) for pid in pids}


def test_every_role_may_do_exactly_its_writes_and_no_refused_request_leaves_a_trace(stack, ledger):
    parts, lots = seed_matrix(ledger)
    before = part_states(ledger, list(parts.values()))
    answers: dict[tuple[str, str], tuple[int, str | None]] = {}
    commands: dict[str, tuple[str, str]] = {}  # command id -> (org, endpoint)
    with serve(stack):
        for endpoint in MAY:
            for name in ORGS:
                response = send(stack, name, *request_for(ledger, endpoint, name, parts, lots))
                code = response.json()["error"]["code"] if response.status_code >= 400 else None
                answers[(endpoint, name)] = (response.status_code, code)
                if response.status_code == 202:
                    commands[response.json()["command_id"]] = (name, endpoint)
        views = {command: wait_command(stack, org, command) for command, (org, _) in commands.items()}

    expected = {(endpoint, name): (202, None) if name in MAY[endpoint] else (403, "missing_role") for endpoint in MAY for name in ORGS}
    assert {key: answer for key, answer in answers.items() if answer != expected[key]} == {}
    assert {command: view["status"] for command, view in views.items() if view["status"] != "confirmed"} == {}

    # The service recorded exactly the allowed commands, and signed only with the keys of organisations allowed them.
    service = make_engine(stack.service_db_url)
    with service.connect() as conn:
        rows = conn.execute(select(Command.__table__)).mappings().all()
        items = conn.execute(select(CommandItem.__table__.c.state)).scalars().all()
        txs = conn.execute(select(ChainTransaction.__table__)).mappings().all()
    org_of = {org.id: name for name, org in ledger.orgs.items()}
    assert sorted((row["id"], org_of[row["org_id"]], row["kind"]) for row in rows) == sorted(
        (command, name, KIND.get(endpoint, endpoint)) for command, (name, endpoint) in commands.items()
    )
    assert set(items) == {"confirmed"} and {tx["state"] for tx in txs} == {"confirmed"}
    signer_org = {address: name for name, address in stack.site_keys.items()}
    may_kind = {KIND.get(endpoint, endpoint): allowed for endpoint, allowed in MAY.items()}
    assert [(tx["kind"], signer_org[tx["signer"]]) for tx in txs if signer_org[tx["signer"]] not in may_kind[tx["kind"]]] == []

    # On chain: every part moved by an allowed request, none by a refused one.
    after = part_states(ledger, list(parts.values()))
    for (name, op), pid in parts.items():
        if name not in MAY[op]:
            assert after[pid] == before[pid], (name, op)
        elif op == "ship":
            assert after[pid] == (S.IN_TRANSIT, ledger.orgs[name].id, ship_target(ledger, name)), (name, op)
        else:
            assert after[pid] == (AFTER[op], ledger.orgs[name].id, 0), (name, op)
    for name in ORGS:
        registered = {source: on_chain(ledger, part_id(GTIN_B, f"{source}-{name}"))[0] != S.NONE for source in ("J", "C")}
        assert registered == {"J": name in MAY["register"], "C": name in MAY["register.csv"]}, name
        anchored = ledger.evidence.functions.batch(keccak(text=f"batch-{name}")).call()[0] != 0
        assert anchored == (name in MAY["batches"]), name
    assert {name: ledger.parts.functions.lot(lot).call()[1] for name, lot in lots.items()} == {
        "maker": True, "maker2": True, "regulator": True, "other": False
    }


def test_an_api_key_never_acts_for_another_organisation(stack, ledger):
    workshop, workshop2, warehouse = ledger.orgs["workshop"], ledger.orgs["workshop2"], ledger.orgs["warehouse"]
    p = ledger.parts.functions
    inbound = ledger.register(ledger.orgs["maker"], ["X-IN"])
    ledger.act(ledger.orgs["maker"].key, p.shipParts(inbound, workshop.id, NO_DOC))
    outbound, stock = held_by(ledger, "workshop", ["X-OUT"]), held_by(ledger, "workshop", ["X-STOCK"])
    ledger.act(workshop.key, p.shipParts(outbound, warehouse.id, NO_DOC))
    own = held_by(ledger, "workshop2", ["X-OWN"])
    watched = inbound + outbound + stock + own
    with serve(stack) as client:
        before = part_states(ledger, watched)
        # Parts of B, in the state B could act on: A's pre-check names B as the holder.
        error = refused(post(stack, "workshop2", "/v1/parts/receive", {"part_ids": [hexid(inbound[0])]}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(inbound[0]), "reason": f"recipient is organisation {workshop.id}"}]
        error = refused(post(stack, "workshop2", "/v1/parts/cancel", {"part_ids": [hexid(outbound[0])]}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(outbound[0]), "reason": f"custodian is organisation {workshop.id}"}]
        for endpoint, body in (
            ("install", {"items": [{"part_id": hexid(stock[0]), "vin": VINS[0]}]}),
            ("ship", {"part_ids": [hexid(stock[0])], "to_org": workshop2.id}),
            ("scrap", {"part_ids": [hexid(stock[0])]}),
        ):
            error = refused(post(stack, "workshop2", f"/v1/parts/{endpoint}", body), 409, "invalid_state")
            assert error["details"] == [{"part_id": hexid(stock[0]), "reason": f"custodian is organisation {workshop.id}"}]
        # B's site keys, by address or as the API key's only site: no key to sign with.
        own_scrap = {"part_ids": [hexid(own[0])]}
        for site in (stack.site_keys["workshop"], workshop.key, "workshop-site-0", "nowhere"):
            refused(post(stack, "workshop2", "/v1/parts/scrap", own_scrap | {"site": site}), 403, "no_site_key")
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-X", "serials": ["X-R"], "site": stack.site_keys["maker2"]}), 403, "no_site_key")
        service = client.app.state.services.service_engine
        narrowed = create_api_key(service, org_id=workshop2.id, sites=[stack.site_keys["workshop"]])
        response = client.post("/v1/parts/scrap", headers={"Authorization": f"Bearer {narrowed}"}, json=own_scrap)
        refused(response, 403, "no_site_key")
        # A command is B's alone: A does not see it, and A's Idempotency-Key of the same value is A's own.
        scrap_b = accepted(post(stack, "workshop", "/v1/parts/scrap", {"part_ids": [hexid(stock[0])]}, **{"Idempotency-Key": "shared-key"}))
        refused(client.get(f"/v1/commands/{scrap_b}", headers=stack.headers("workshop2")), 404, "unknown_command")
        scrap_a = accepted(post(stack, "workshop2", "/v1/parts/scrap", own_scrap, **{"Idempotency-Key": "shared-key"}))
        assert scrap_a != scrap_b
        # A revoked, unknown, malformed or missing key is 401, at once.
        revoked = stack.api_keys["workshop2"]
        assert revoke_api_key(service, revoked.split("_")[1]) is True
        for authorization in (f"Bearer {revoked}", f"Bearer {revoked[:-4]}AAAA", "Bearer plk_nokey", "Basic d29ya3Nob3A6eA==", None):
            headers = {"Authorization": authorization} if authorization else {}
            refused(client.post("/v1/parts/scrap", headers=headers, json=own_scrap), 401, "unauthorized")
            refused(client.get(f"/v1/commands/{scrap_a}", headers=headers), 401, "unauthorized")
        views = [wait_command(stack, "workshop", scrap_b)]
        stack.api_keys["workshop2"] = create_api_key(service, org_id=workshop2.id)
        views.append(wait_command(stack, "workshop2", scrap_a))
    assert [view["status"] for view in views] == ["confirmed", "confirmed"]
    after = part_states(ledger, watched)
    assert after[stock[0]] == (S.SCRAPPED, workshop.id, 0) and after[own[0]] == (S.SCRAPPED, workshop2.id, 0)
    assert {pid: state for pid, state in after.items() if pid not in (stock[0], own[0])} == {
        pid: state for pid, state in before.items() if pid not in (stock[0], own[0])
    }
    with make_engine(stack.service_db_url).connect() as conn:
        recorded = conn.execute(select(Command.__table__.c.id, Command.__table__.c.org_id)).all()
    assert sorted(recorded) == sorted([(scrap_b, workshop.id), (scrap_a, workshop2.id)])
