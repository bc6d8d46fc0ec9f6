"""ledger_service.group_commit.GroupCommit on a real SQLite service database, as the relay desk and the command outbox
use it: concurrent posts' rows written in one transaction behind a leader, and a conflict in a group failing only the
post it belongs to."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.exc import IntegrityError

from ledger_service import migrate
from ledger_service.group_commit import GroupCommit
from ledger_service.relay_tables import RelayRequest
from partledger.db import make_engine

T_REQ = RelayRequest.__table__


def row(nonce: int, digest: bytes | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "digest": digest or os.urandom(32), "org_id": 1, "submitted_by": 1, "actor": "key:test",
        "signer": "0x" + "11" * 20, "nonce": nonce, "target": "0x" + "22" * 20, "function": "receiveParts", "gas": 100_000,
        "deadline": 2**40, "data": b"\x01\x02", "signature": bytes(65), "state": "accepted", "batch_id": None, "attempts": 0,
        "created_at": 1.0, "updated_at": 1.0,
    }  # fmt: skip


def insert_all(conn: Any, posts: list[list[dict[str, Any]]]) -> None:
    conn.execute(insert(T_REQ), [row for rows in posts for row in rows])


def write(writer: GroupCommit, rows: list[dict[str, Any]]) -> None:
    writer.write(rows)


class HeldLeader(GroupCommit):
    """A GroupCommit whose first commit waits until released, so that the posts arriving meanwhile queue up."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine, insert_all)
        self.first_commit_started = threading.Event()
        self.release = threading.Event()
        self.commits: list[int] = []

    def _commit(self, payloads: list[Any]) -> None:
        if not self.commits and not self.first_commit_started.is_set():
            self.first_commit_started.set()
            assert self.release.wait(60)
        super()._commit(payloads)
        self.commits.append(sum(len(rows) for rows in payloads))


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}", durable=True)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def stored(engine: Any) -> set[bytes]:
    with engine.connect() as conn:
        return {bytes(digest) for digest in conn.execute(select(T_REQ.c.digest)).scalars()}


def post_behind_a_held_leader(writer: HeldLeader, posts: list[list[dict[str, Any]]]) -> list[BaseException | None]:
    """Each post from a thread of its own: the first leads and its commit is held until every other post waits in the
    queue behind it; then released. What each post's write raised (None: written)."""
    outcomes: list[BaseException | None] = [None] * len(posts)

    def post(index: int) -> None:
        try:
            write(writer, posts[index])
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to look at
            outcomes[index] = exc

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(posts))]
    threads[0].start()
    assert writer.first_commit_started.wait(60)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 60
    while True:
        with writer._lock:  # noqa: SLF001 - the queue is what these tests are about
            if len(writer._queue) == len(posts) - 1:  # noqa: SLF001
                break
        assert time.monotonic() < deadline, "the posts never queued behind the leader"
        time.sleep(0.005)
    writer.release.set()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_posts_that_arrive_while_one_writes_are_written_together_in_one_transaction(engine: Any) -> None:
    writer = HeldLeader(engine)
    transactions: list[int] = []
    event.listen(engine, "commit", lambda _conn: transactions.append(1))
    posts = [[row(n, os.urandom(32)) for n in range(1 + index % 3)] for index in range(21)]
    outcomes = post_behind_a_held_leader(writer, posts)
    assert outcomes == [None] * len(posts)
    assert writer.commits == [len(posts[0]), sum(len(p) for p in posts[1:])]  # the leader's own, then all the others at once
    assert len(transactions) == 2
    assert stored(engine) == {r["digest"] for p in posts for r in p}


def test_a_post_in_conflict_fails_alone_and_the_rest_of_its_group_is_written(engine: Any) -> None:
    writer = HeldLeader(engine)
    taken = os.urandom(32)
    first = [row(0, taken)]
    clash = [row(5), row(6, taken)]  # the same request (digest) as the leader's, posted at once
    others = [[row(10 + index)] for index in range(6)]
    posts = [first, *others[:3], clash, *others[3:]]
    outcomes = post_behind_a_held_leader(writer, posts)
    failed = [index for index, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [posts.index(clash)] and isinstance(outcomes[failed[0]], IntegrityError)
    assert stored(engine) == {r["digest"] for p in posts if p is not clash for r in p}  # nothing of the clashing post
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T_REQ)).scalar() == 1 + 6


def test_a_lone_post_is_written_by_itself_and_its_error_is_its_own(engine: Any) -> None:
    writer = GroupCommit(engine, insert_all)
    rows = [row(1), row(2)]
    write(writer, rows)
    assert stored(engine) == {r["digest"] for r in rows}
    with pytest.raises(IntegrityError):
        write(writer, [row(3, rows[0]["digest"])])
    write(writer, [row(4)])  # the writer goes on after a failed group
    assert len(stored(engine)) == 3
