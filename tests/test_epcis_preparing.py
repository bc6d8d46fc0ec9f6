"""ledger_service.epcis.preparing: a large capture document is prepared in a worker process, and what comes back equals
what the job's own thread makes of it (events, hashes, EPCs, errors and eventIDs); a worker that dies costs nothing but
its speed; a small document never starts a process; several workers each prepare a slice. Then the events' rows as
store_events writes them, with their EPCs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from ledger_service import migrate as service_migrate
from ledger_service.epcis.identities import Directory, Place, demo_gln
from ledger_service.epcis.preparing import Preparer, _slices, prepare_document
from ledger_service.epcis.worker import T_EPC, T_EVENT, store_events
from partledger.db import make_engine

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "epcis" / "examples"
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
LOCATION = demo_gln(1, 1)


def _directory() -> Directory:
    directory = Directory()
    directory.orgs = {1}
    directory.locations = {(LOCATION, ""): Place(1, "service-site")}
    return directory


def _document() -> bytes:
    """Commissioning events at a member's location, the GS1 examples' events (parties no member has: per-event
    errors), and events that fail the schema or name a bad EPC, with and without eventIDs."""
    location = f"https://id.gs1.org/414/{LOCATION}"
    events: list[dict[str, Any]] = [
        {"type": "ObjectEvent", "eventTime": f"2026-12-01T10:00:{index % 60:02d}.000Z", "eventTimeZoneOffset": "+00:00",
         "epcList": [f"https://id.gs1.org/01/09506000134352/21/P{index}"], "action": "ADD", "bizStep": "commissioning",
         "readPoint": {"id": location}, "bizLocation": {"id": location}, "ilmd": {"cbvmda:lotNumber": "L1"},
         **({"eventID": f"urn:uuid:00000000-0000-4000-8000-{index:012d}"} if index % 2 else {})}
        for index in range(40)
    ]  # fmt: skip
    for path in sorted(EXAMPLES.glob("*.jsonld"))[:6]:
        events += json.loads(path.read_text())["epcisBody"].get("eventList", [])
    events += [
        {"type": "ObjectEvent", "eventTimeZoneOffset": "+00:00", "epcList": [], "action": "OBSERVE", "eventID": "urn:uuid:no-time"},
        {"type": "ObjectEvent", "eventTime": "2026-12-01T10:00:00Z", "eventTimeZoneOffset": "+00:00", "epcList": ["urn:epc:id:sgtin:bad"], "action": "OBSERVE"},
        "not an event",
    ]  # fmt: skip
    return zlib.compress(json.dumps({"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0", "epcisBody": {"eventList": events}}).encode())


@pytest.fixture
def preparer():
    made = Preparer(processes=1, in_process_below=10)
    yield made
    made.close()


def test_a_document_prepared_in_a_worker_process_equals_the_one_prepared_in_the_thread(preparer: Preparer) -> None:
    document, directory = _document(), _directory()
    here = prepare_document(document, directory)
    assert here.pid == os.getpid() and len(here.todo) >= 40 and len(here.errors) >= 3  # the cases are there
    assert preparer.wait_until_up(timeout=120)
    there = preparer.prepare(document, len(here.event_ids), directory)
    assert there.pid != os.getpid()
    assert there.todo == here.todo
    assert [p.digest for p in there.todo] == [p.digest for p in here.todo] and [p.body for p in there.todo] == [p.body for p in here.todo]
    assert [p.register for p in there.todo] == [p.register for p in here.todo] and any(p.register for p in here.todo)
    assert there.errors == here.errors and there.event_ids == here.event_ids


def _reversed(document: bytes) -> bytes:
    body = json.loads(zlib.decompress(document))
    body["epcisBody"]["eventList"].reverse()  # the refused events first
    return zlib.compress(json.dumps(body).encode())


@pytest.mark.parametrize("order", ["as-made", "reversed"])
def test_a_document_shared_between_the_thread_and_the_worker_equals_the_one_prepared_in_the_thread(preparer: Preparer, order: str) -> None:
    document, directory = _document(), _directory()
    if order == "reversed":
        document = _reversed(document)
    here = prepare_document(document, directory)
    count = len(here.event_ids)
    assert any((index < count // 2) == (order == "reversed") for index in here.errors)  # refusals in the worker's half, or the thread's
    assert any(code == "invalid_event" for code, _ in here.errors.values())  # a schema problem, whose path names its index
    assert preparer.wait_until_up(timeout=120)
    shared = preparer.prepare(document, count, directory, share=True)
    assert shared.pid != os.getpid()
    assert shared.todo == here.todo and [p.index for p in shared.todo] == [p.index for p in here.todo]
    assert shared.errors == here.errors and shared.event_ids == here.event_ids


def test_a_killed_worker_costs_its_document_nothing_and_is_replaced(preparer: Preparer) -> None:
    document, directory = _document(), _directory()
    expected = prepare_document(document, directory)
    assert preparer.wait_until_up(timeout=120)
    first = preparer.prepare(document, len(expected.event_ids), directory).pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{first}").exists() and Path(f"/proc/{first}/status").read_text().find("State:\tZ") < 0:  # until it is dead
        assert time.monotonic() < deadline, "the worker did not die"
        time.sleep(0.05)
    fallen_back = preparer.prepare(document, len(expected.event_ids), directory)
    assert fallen_back.todo == expected.todo and fallen_back.errors == expected.errors and fallen_back.pid == os.getpid()
    assert preparer.wait_until_up(timeout=120)
    again = preparer.prepare(document, len(expected.event_ids), directory)
    assert again.pid not in (first, os.getpid()) and again.todo == expected.todo


def test_the_worker_of_a_killed_service_ends_with_it(tmp_path: Path) -> None:
    """A service process SIGKILLed cannot close its pool: its worker, orphaned, ends by itself within seconds."""
    script = (
        "from ledger_service.epcis.preparing import Preparer\n"
        "import sys, time\n"
        "p = Preparer(processes=1, in_process_below=10)\n"
        "assert p.wait_until_up(timeout=120)\n"
        "print(p._started.result(), flush=True)\n"
        "time.sleep(600)\n"
    )
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        worker = int(service.stdout.readline())  # type: ignore[union-attr]
        assert _alive(worker)
        service.kill()
        service.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _alive(worker):
            assert time.monotonic() < deadline, "the orphaned worker is still running"
            time.sleep(0.05)
    finally:
        service.kill()


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie left for its new parent to reap."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def test_a_document_being_prepared_when_the_workers_close_is_prepared_anyway(preparer: Preparer) -> None:
    document, directory = _document(), _directory()
    expected = prepare_document(document, directory)
    assert preparer.wait_until_up(timeout=120)
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(preparer.prepare(document, len(expected.event_ids), directory)))
    thread.start()
    preparer.close()  # the service stopping: whether the worker had begun or not, the job gets its events
    thread.join(timeout=120)
    assert len(answers) == 1 and answers[0].todo == expected.todo and answers[0].errors == expected.errors


def test_a_small_document_starts_no_process() -> None:
    small = Preparer(processes=1, in_process_below=1_000)
    try:
        document = _document()
        assert small.prepare(document, 60, _directory()).pid == os.getpid()
        assert small._pool is None
    finally:
        small.close()
    assert Preparer(processes=0, in_process_below=1).prepare(document, 60, _directory()).pid == os.getpid()


def test_a_document_sliced_between_two_worker_processes_equals_the_one_prepared_in_the_thread() -> None:
    document, directory = _document(), _directory()
    here = prepare_document(document, directory)
    two = Preparer(processes=2, in_process_below=10)
    try:
        assert two.wait_until_up(timeout=120)
        there = two.prepare(document, len(here.event_ids), directory)
    finally:
        two.close()
    assert there.pid != os.getpid()
    assert there.todo == here.todo and [p.index for p in there.todo] == [p.index for p in here.todo]
    assert there.errors == here.errors and there.event_ids == here.event_ids


@pytest.mark.parametrize(("count", "pieces", "expected"), [
    (10, 2, [(0, 5), (5, None)]), (7, 3, [(0, 2), (2, 4), (4, None)]), (1, 4, [(0, None)]), (0, 2, [(0, None)]),
])  # fmt: skip
def test_slices_cover_the_events_once_and_leave_the_last_open(count: int, pieces: int, expected: list) -> None:
    assert _slices(count, pieces) == expected


def test_stored_events_name_their_epcs_by_their_own_seq(db_url: str) -> None:
    """store_events: each event's row, and one row per EPC it names (repeats once) with the event's own seq (read back
    by eventID), for the events of a command and for kept ones, on both databases."""
    prepared = prepare_document(_document(), _directory()).todo
    engine = make_engine(db_url)
    service_migrate.upgrade(engine)
    services = SimpleNamespace(vault=None)
    with engine.begin() as conn:
        store_events(conn, services, 1, "job-1", prepared[:25], command_id="command-1")
    with engine.begin() as conn:
        store_events(conn, services, 1, "job-1", prepared[25:], command_id=None)
    with engine.connect() as conn:
        events = {row.seq: row for row in conn.execute(select(T_EVENT.c.seq, T_EVENT.c.event_id, T_EVENT.c.state, T_EVENT.c.command_id))}
        epcs = conn.execute(select(T_EPC)).all()
    engine.dispose()
    assert sorted(row.event_id for row in events.values()) == sorted(p.event_id for p in prepared)
    named: dict[str, set] = {}
    for row in epcs:
        named.setdefault(events[row.seq].event_id, set()).add((row.epc, row.role, row.part_id and bytes(row.part_id)))
    assert named == {p.event_id: set(p.epcs) for p in prepared if p.epcs}
    assert len(epcs) == sum(len(set(p.epcs)) for p in prepared)
    by_id = {row.event_id: row for row in events.values()}
    assert {(by_id[p.event_id].state, by_id[p.event_id].command_id) for p in prepared[:25]} == {("pending", "command-1")}
    assert {(by_id[p.event_id].state, by_id[p.event_id].command_id) for p in prepared[25:]} == {("kept", None)}
