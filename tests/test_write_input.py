"""Malformed input to the write API: always a 4xx with a stable error code, never a 500, never a command.
Idempotency under concurrency, and logs that never carry a secret or a clear VIN."""

from __future__ import annotations

import base64
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import select

from ledger_service.app import create_app
from ledger_service.auth import revoke_api_key
from ledger_service.tables import ChainTransaction, Command
from partledger.db import make_engine
from partledger.ids import part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, wait_command
from tests.test_write_api import (
    NO_DOC,
    VINS,
    accepted,
    confirmed,
    count_rows,
    held_by,
    hexid,
    ids_of,
    make_stack,
    on_chain,
    post,
    post_csv,
    refused,
    serve,
    stack,  # noqa: F401 - the fixture
)

S = PartStatus
ZERO_ID = "0x" + "00" * 32
PART_ENDPOINTS = ["ship", "receive", "cancel", "sell", "remove", "quarantine", "release", "scrap", "recycle"]
JSON_ENDPOINTS = ["/v1/parts/register", "/v1/parts/install", "/v1/lots/recall", "/v1/batches"] + [f"/v1/parts/{name}" for name in PART_ENDPOINTS]
STABLE_CODES = {"invalid_request", "invalid_csv", "invalid_rows", "invalid_gtin", "invalid_lot", "invalid_serial", "invalid_vin"}


@pytest.fixture
def sqlite_stack(ledger: Ledger, tmp_path) -> Stack:
    """Validation does not depend on the database: SQLite only, for speed."""
    return prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")


def raw_post(stack: Stack, org: str, path: str, content: bytes, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    assert stack.client is not None
    return stack.client.post(path, headers=stack.headers(org, **{"Content-Type": content_type}), content=content)


def commands_in(stack: Stack) -> int:
    return count_rows(make_engine(stack.service_db_url), Command.__table__)


def schema_refusal(response) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    error = refused(response, 422, "invalid_request")
    assert error["details"] and all("loc" in detail and "message" in detail for detail in error["details"])
    return error["details"]


# --- the shape of a request ----------------------------------------------------------------------------------------


def test_bad_json_wrong_types_extra_fields_malformed_ids_and_empty_lists_get_422_invalid_request(sqlite_stack, ledger):
    stack = sqlite_stack
    [pid] = held_by(ledger, "maker", ["IN-1"])
    good = hexid(pid)
    vin_item = {"part_id": good, "vin": VINS[0]}
    cases: list[tuple[str, Any]] = [
        # wrong types
        ("/v1/parts/register", {"gtin": int(GTIN_A), "lot": "L", "serials": ["A"]}),
        ("/v1/parts/register", {"gtin": GTIN_A, "lot": "L", "serials": "A"}),
        ("/v1/parts/register", {"gtin": GTIN_A, "lot": "L", "serials": [1]}),
        ("/v1/parts/ship", {"part_ids": [good], "to_org": "warehouse"}),
        ("/v1/parts/ship", {"part_ids": [good], "to_org": 0}),
        ("/v1/parts/scrap", {"part_ids": good}),
        ("/v1/parts/scrap", {"part_ids": [good], "doc_hash": "not-a-hash"}),
        ("/v1/parts/install", {"items": [{"part_id": good, "vin": 12345678901234567}]}),
        ("/v1/parts/install", {"items": [{"part_id": good, "vin": "WVWZZZ1JZXW0"}]}),
        ("/v1/lots/recall", {"lot": "L-1", "notice_hash": ZERO_ID}),
        ("/v1/lots/recall", {"lot": 1}),
        ("/v1/batches", {"root": ZERO_ID, "record_count": 0, "kind": "scan"}),
        ("/v1/batches", {"root": ZERO_ID, "record_count": 2**32, "kind": "scan"}),
        ("/v1/batches", {"root": ZERO_ID, "record_count": 1, "kind": "scän"}),
        ("/v1/batches", {"root": ZERO_ID, "record_count": 1, "kind": "k" * 33}),
        ("/v1/parts/register", {"gtin": GTIN_A, "lot": "L" * 21, "serials": ["A"]}),
        ("/v1/parts/register", {"gtin": "1234567", "lot": "L", "serials": ["A"]}),
        # extra fields, at the top and inside an item
        ("/v1/parts/scrap", {"part_ids": [good], "org_id": 2}),
        ("/v1/parts/register", {"gtin": GTIN_A, "lot": "L", "serials": ["A"], "custodian": 3}),
        ("/v1/parts/install", {"items": [vin_item | {"salt": ZERO_ID}]}),
        # malformed part ids
        ("/v1/parts/scrap", {"part_ids": [good[2:]]}),
        ("/v1/parts/scrap", {"part_ids": [good[:-1]]}),
        ("/v1/parts/scrap", {"part_ids": [good + "00"]}),
        ("/v1/parts/scrap", {"part_ids": ["0x" + "zz" * 32]}),
        ("/v1/parts/install", {"items": [{"part_id": "0x01", "vin": VINS[0]}]}),
        # empty lists
        ("/v1/parts/register", {"gtin": GTIN_A, "lot": "L", "serials": []}),
        ("/v1/parts/install", {"items": []}),
    ] + [(f"/v1/parts/{name}", {"part_ids": []}) for name in PART_ENDPOINTS]
    with serve(stack):
        for path, body in cases:
            schema_refusal(post(stack, "maker", path, body))
        for path in JSON_ENDPOINTS:
            for content in (b'{"part_ids": [', b"", b"[]", b"\xff\xfe{}"):
                schema_refusal(raw_post(stack, "maker", path, content))
        assert commands_in(stack) == 0
    assert on_chain(ledger, pid)[0] == S.IN_STOCK


def test_no_write_endpoint_answers_500_to_garbage(sqlite_stack):
    stack = sqlite_stack
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON: parsed with web3's recursion limit, it would kill the process
    garbage = [deep, b'{"part_ids": ' + deep + b"}", b"[" * 50_000, b"\x00" * 64, "{\"gtin\": \"\u202e\"}".encode(), b'{"items": [null], "part_ids": [null]}', b"null"]
    requests = [(path, content, "application/json") for path in JSON_ENDPOINTS for content in garbage]
    requests += [("/v1/parts/register", garbage[0], "text/csv"), ("/v1/parts/scrap", b"part_ids=1", "application/x-www-form-urlencoded")]
    requests += [("/v1/parts/register.csv", content, content_type) for content in garbage for content_type in ("text/csv", "application/json")]
    with serve(stack):
        for path, content, content_type in requests:
            response = raw_post(stack, "maker", path, content, content_type)
            assert 400 <= response.status_code < 500, (path, content[:20], response.status_code, response.text)
            assert response.json()["error"]["code"] in STABLE_CODES, (path, content[:20], response.text)
        assert commands_in(stack) == 0


def test_oversized_bodies_and_too_many_rows_get_413_payload_too_large(sqlite_stack):
    stack = sqlite_stack
    many = [f"SER{index:05d}" for index in range(200)]
    with serve(stack, max_body_bytes=2_048, max_rows_per_request=50):
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-BIG", "serials": many}), 413, "payload_too_large")
        csv_text = "gtin,serial,lot\n" + "".join(f"{GTIN_A},{serial},L-BIG\n" for serial in many)
        refused(post_csv(stack, "maker", csv_text), 413, "payload_too_large")
        refused(post(stack, "maker", "/v1/parts/scrap", {"part_ids": [ZERO_ID] * 40}), 413, "payload_too_large")
        refused(post(stack, "maker", "/v1/batches", {"root": ZERO_ID, "record_count": 1, "kind": "scan", "site": "x" * 64, "pad": " " * 3_000}), 413, "payload_too_large")
        # Under the byte limit but over the row limit.
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-BIG", "serials": many[:51]}), 413, "payload_too_large")
        refused(post_csv(stack, "maker", "gtin,serial,lot\n" + "".join(f"{GTIN_A},{serial},L\n" for serial in many[:51])), 413, "payload_too_large")
        assert commands_in(stack) == 0
        confirmed(stack, "maker", post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-BIG", "serials": many[:50]}))


# --- GS1 identifiers and CSV rows ---------------------------------------------------------------------------------


def test_gtins_serials_and_lots_outside_gs1_rules_are_refused_row_by_row(sqlite_stack, ledger):
    stack = sqlite_stack
    register = "/v1/parts/register"
    with serve(stack):
        for gtin in ("04012345000017", "4012345000010", "0401234500001A", "00000000000000", "12345670" + "1"):
            refused(post(stack, "maker", register, {"gtin": gtin, "lot": "L-1", "serials": ["A1"]}), 400, "invalid_gtin")
        for lot in ("L 1", "LOT#1", "Lot\u00e9"):
            refused(post(stack, "maker", register, {"gtin": GTIN_A, "lot": lot, "serials": ["A1"]}), 400, "invalid_lot")
        serials = ["OK-1", "WITH SPACE", "UMLAUT\u00dc", "S" * 21, "OK-2", "", "TAB\t", "HASH#1", "S" * 20]
        error = refused(post(stack, "maker", register, {"gtin": GTIN_A, "lot": "L-1", "serials": serials}), 422, "invalid_rows")
        assert [(row["row"], row["code"]) for row in error["details"]] == [(row, "invalid_serial") for row in (2, 3, 4, 6, 7, 8)]
        assert error["details"][0]["serial"] == "WITH SPACE"
        error = refused(post(stack, "maker", register, {"gtin": GTIN_A, "lot": "L-1", "serials": ["D1", "D2", "D1"]}), 422, "duplicate_parts")
        assert commands_in(stack) == 0
    assert on_chain(ledger, part_id(GTIN_A, "OK-1"))[0] == S.NONE


def test_csv_uploads_get_a_report_of_every_bad_row_with_its_line_number(sqlite_stack, ledger):
    stack = sqlite_stack
    bad = (
        "gtin,serial,lot\n"
        f"{GTIN_A},OK1,L-1\n"  # line 2
        f"04012345000017,OK2,L-1\n"  # 3: check digit
        f"{GTIN_A},BAD SERIAL,L-1\n"  # 4
        f"{GTIN_A},{'S' * 21},L-1\n"  # 5: too long
        f"{GTIN_A},OK3\n"  # 6: a column missing
        f"{GTIN_A},OK4,L-1,extra\n"  # 7: a column too many
        f"{GTIN_A},OK5,L-2\n"  # 8: another lot
        "\n"  # 9: blank, skipped
        f"{GTIN_A},OK6,L 1\n"  # 10: lot outside GS1
        f"{GTIN_B},OK7,L-1\n"  # 11: another GTIN
    )
    with serve(stack):
        error = refused(post_csv(stack, "maker", bad), 422, "invalid_rows")
        assert [(row["row"], row["code"]) for row in error["details"]] == [
            (3, "invalid_gtin"), (4, "invalid_serial"), (5, "invalid_serial"), (6, "invalid_row"), (7, "invalid_row"),
            (8, "mixed_batch"), (10, "invalid_lot"), (11, "mixed_batch"),
        ]  # fmt: skip
        # A bad first row is reported like any other (the others are compared with the first good row).
        error = refused(post_csv(stack, "maker", f"gtin,serial,lot\n04012345000017,F1,L-1\n{GTIN_A},F2,L-1\n{GTIN_A},F3\n"), 422, "invalid_rows")
        assert [(row["row"], row["code"]) for row in error["details"]] == [(2, "invalid_gtin"), (4, "invalid_row")]
        refused(post_csv(stack, "maker", f"gtin,serial,lot\n{GTIN_A},D1,L-1\n{GTIN_A},D1,L-1\n"), 422, "duplicate_parts")
        refused(post_csv(stack, "maker", f"serial,gtin,lot\nX1,{GTIN_A},L-1\n"), 400, "invalid_csv")
        refused(post_csv(stack, "maker", f"gtin;serial;lot\n{GTIN_A};X1;L-1\n"), 400, "invalid_csv")
        refused(post_csv(stack, "maker", "gtin,serial,lot\n"), 400, "invalid_csv")
        refused(post_csv(stack, "maker", ""), 400, "invalid_csv")
        # Found by the API fuzzer: a bare carriage return in an unquoted field made the csv module raise (a 500).
        refused(raw_post(stack, "maker", "/v1/parts/register.csv", "\x1d¤\x1d\x8b\U000f40b9`v\x8a\U0008eafc\x90\r\U0009e734".encode(), "text/csv"), 400, "invalid_csv")
        error = refused(post_csv(stack, "maker", f"gtin,serial,lot\n{GTIN_A},A\rB,L-1\n"), 422, "invalid_rows")
        assert [(row["row"], row["code"]) for row in error["details"]] == [(2, "invalid_row"), (3, "invalid_row")]
        refused(raw_post(stack, "maker", "/v1/parts/register.csv", f"gtin,serial,lot\n{GTIN_A},\xc4,L\n".encode("latin-1"), "text/csv"), 400, "invalid_csv")
        assert commands_in(stack) == 0
    assert on_chain(ledger, part_id(GTIN_A, "OK1"))[0] == S.NONE


def test_unknown_duplicate_and_unheld_parts_are_refused_before_acceptance(stack, ledger):
    [pid] = held_by(ledger, "workshop", ["UK-1"])
    unknown = [part_id(GTIN_A, "NEVER-1"), part_id(GTIN_A, "NEVER-2")]
    with serve(stack):
        error = refused(post(stack, "workshop", "/v1/parts/scrap", {"part_ids": ids_of([unknown[0], pid, unknown[1]])}), 422, "unknown_part")
        assert error["details"] == [{"part_id": hexid(unknown[0])}, {"part_id": hexid(unknown[1])}]
        refused(post(stack, "workshop", "/v1/parts/scrap", {"part_ids": ids_of([pid, pid])}), 422, "duplicate_parts")
        items = [{"part_id": hexid(pid), "vin": VINS[0]}, {"part_id": hexid(pid), "vin": VINS[1]}]
        refused(post(stack, "workshop", "/v1/parts/install", {"items": items}), 422, "duplicate_parts")
        refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(unknown[0]), "vin": VINS[0]}]}), 422, "unknown_part")
        refused(post(stack, "workshop", "/v1/parts/ship", {"part_ids": [ZERO_ID], "to_org": 1}), 422, "unknown_part")
        assert commands_in(stack) == 0
    assert on_chain(ledger, pid) == (S.IN_STOCK, ledger.orgs["workshop"].id, 0)


# --- idempotency ---------------------------------------------------------------------------------------------------


def test_fifty_concurrent_requests_with_one_idempotency_key_make_one_command_and_one_on_chain_effect(stack, ledger):
    """Spread over three API instances on the same databases (replicas), so that the requests really overlap."""
    body = {"gtin": GTIN_A, "lot": "L-IDEM", "serials": ["IDEM-1"]}
    headers = stack.headers("maker", **{"Idempotency-Key": "upload-2024-06-01-0001"})
    with serve(stack) as main:
        replicas = [TestClient(create_app(stack.settings(submitter=False))) for _ in range(2)]
        for replica in replicas:
            replica.__enter__()
        try:
            clients = [main, *replicas]
            start = threading.Barrier(50)

            def attempt(index: int):  # type: ignore[no-untyped-def]
                start.wait()
                return clients[index % len(clients)].post("/v1/parts/register", headers=headers, json=body)

            with ThreadPoolExecutor(max_workers=50) as pool:
                responses = list(pool.map(attempt, range(50)))
        finally:
            for replica in replicas:
                replica.__exit__(None, None, None)
        answers = [(response.status_code, response.json().get("command_id") or response.json()["error"]["code"]) for response in responses]
        commands = {answer for status, answer in answers if status == 202}
        assert len(commands) == 1, answers
        assert {status for status, _ in answers} <= {202, 409}
        assert all(answer == "idempotency_in_progress" for status, answer in answers if status == 409)
        assert sum(response.json().get("idempotent_replay", False) for response in responses) == sum(status == 202 for status, _ in answers) - 1
        [command] = commands
        view = wait_command(stack, "maker", command)
        assert view["status"] == "confirmed"
        replay = post(stack, "maker", "/v1/parts/register", body, **{"Idempotency-Key": "upload-2024-06-01-0001"})
        assert replay.status_code == 202 and replay.json()["command_id"] == command and replay.json()["idempotent_replay"] is True
    service = make_engine(stack.service_db_url)
    assert count_rows(service, Command.__table__) == 1 and count_rows(service, ChainTransaction.__table__) == 1
    events = ledger.parts.events.PartsRegistered.get_logs(from_block=0)
    assert [serial.rstrip(b"\0") for event in events for serial in event["args"]["serials"]].count(b"IDEM-1") == 1


def test_an_idempotency_key_reused_for_another_request_is_422(sqlite_stack, ledger):
    stack = sqlite_stack
    key = {"Idempotency-Key": "k-1"}
    with serve(stack):
        first = accepted(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-K", "serials": ["K1"]}, **key))
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-K", "serials": ["K2"]}, **key), 422, "idempotency_key_reused")
        refused(post(stack, "maker", "/v1/batches", {"root": "0x" + keccak(text="r").hex(), "record_count": 1, "kind": "scan"}, **key), 422, "idempotency_key_reused")
        same_but_site = {"gtin": GTIN_A, "lot": "L-K", "serials": ["K1"], "site": "service-site"}
        refused(post(stack, "maker", "/v1/parts/register", same_but_site, **key), 422, "idempotency_key_reused")
        again = post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-K", "serials": ["K1"]}, **key)
        assert again.status_code == 202 and again.json()["command_id"] == first
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-K", "serials": ["K3"]}, **{"Idempotency-Key": "k" * 256}), 422, "invalid_request")
        assert commands_in(stack) == 1


def test_a_retry_after_the_command_took_effect_gets_the_first_answer_not_a_state_error(sqlite_stack, ledger):
    """The client lost the 202 and retries once the command is on chain: the pre-check would now refuse it."""
    stack = sqlite_stack
    maker = ledger.orgs["maker"]
    pids = held_by(ledger, "maker", ["RT-1"], lot="L-RT")
    lot = ledger.lot_number(maker, "L-RT")
    ship = {"part_ids": ids_of(pids), "to_org": ledger.orgs["warehouse"].id}
    recall = {"lot": lot, "notice_hash": "0x" + keccak(text="n").hex()}
    with serve(stack):
        for path, body in (("/v1/parts/ship", ship), ("/v1/lots/recall", recall)):
            key = {"Idempotency-Key": f"retry-{path}"}
            first = confirmed(stack, "maker", post(stack, "maker", path, body, **key))
            retry = post(stack, "maker", path, body, **key)
            assert retry.status_code == 202, retry.text
            assert retry.json()["command_id"] == first["command_id"] and retry.json()["idempotent_replay"] is True
            refused(post(stack, "maker", path, body), 409, "invalid_state" if path.endswith("ship") else "lot_recalled")
        assert commands_in(stack) == 2


# --- logs ---------------------------------------------------------------------------------------------------------


def test_logs_never_contain_private_keys_passphrases_api_keys_or_clear_vins(ledger, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    workshop = ledger.orgs["workshop"]
    vins = [*VINS, "JH4KA7561PC008269"]
    with serve(stack) as client:
        registered = confirmed(stack, "maker", post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-LOG", "serials": ["LG1", "LG2", "LG3"]}))
        pids = [part_id(GTIN_A, serial) for serial in ("LG1", "LG2", "LG3")]
        confirmed(stack, "maker", post(stack, "maker", "/v1/parts/ship", {"part_ids": ids_of(pids), "to_org": workshop.id}))
        confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/receive", {"part_ids": ids_of(pids)}))
        items = [{"part_id": hexid(pid), "vin": vin} for pid, vin in zip(pids, [vins[0].lower(), vins[1], vins[2]])]
        confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/install", {"items": items}, **{"Idempotency-Key": "install-1"}))
        post(stack, "workshop", "/v1/parts/install", {"items": items}, **{"Idempotency-Key": "install-1"})
        refused(post(stack, "workshop", "/v1/parts/install", {"items": items}), 409, "invalid_state")
        refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pids[0]), "vin": vins[2] + "X"}]}), 422, "invalid_request")
        confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/remove", {"part_ids": ids_of(pids[:1])}))
        confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pids[0]), "vin": vins[1]}]}))
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-LOG", "serials": ["LG1"]}), 409, "already_registered")
        client.get(f"/v1/commands/{registered['command_id']}", headers=stack.headers("auditor"))
        revoked = stack.api_keys["distributor"]
        revoke_api_key(client.app.state.services.service_engine, revoked.split("_")[1])
        refused(post(stack, "distributor", "/v1/parts/sell", {"part_ids": ids_of(pids)}), 401, "unauthorized")
        refused(client.post("/v1/parts/sell", headers={"Authorization": f"Bearer {revoked}x"}, json={"part_ids": ids_of(pids)}), 401, "unauthorized")

    private_keys = []
    for keystore in sorted(stack.keys_dir.glob("*/*.json")):
        key = bytes(Account.decrypt(json.loads(keystore.read_text()), PASSPHRASE))
        private_keys += [key.hex(), key.hex().upper(), base64.b64encode(key).decode()]
    api_keys = [part for key in stack.api_keys.values() for part in (key, key.split("_", 2)[2])]
    vin_key = (stack.workdir / "vin.key").read_text().strip()
    secrets = {"keystore passphrase": [PASSPHRASE], "VIN key": [vin_key], "private key": private_keys, "API key": api_keys, "VIN": [v for vin in vins for v in (vin, vin.lower())]}
    out, err = capfd.readouterr()
    records = "\n".join(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in caplog.records)
    logs = "\n".join((caplog.text, records, out, err))
    assert sum(record.levelno == logging.DEBUG for record in caplog.records) > 100, "DEBUG logs were not captured"
    assert "signing with 9 site keys" in logs
    # On failure, show what precedes the secret, never the secret itself.
    leaked = {what: logs[max(logs.find(value) - 200, 0) : logs.find(value)] for what, values in secrets.items() for value in values if value in logs}
    assert leaked == {}
