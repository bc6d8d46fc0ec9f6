"""Shared fixtures: one Anvil node for the session, the contracts deployed once, a chain snapshot per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from web3 import Web3

from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.chain import connect
from tests.chainkit import ANVIL_ACCOUNTS, Ledger, build_ledger, revert_to, snapshot

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS))
    yield node
    node.stop()


@pytest.fixture(scope="session")
def w3(anvil: AnvilNode) -> Web3:
    return connect(anvil.url)


@pytest.fixture(scope="session")
def deployed(w3: Web3) -> Ledger:
    return build_ledger(w3)


@pytest.fixture
def ledger(deployed: Ledger) -> Iterator[Ledger]:
    """The deployed consortium, rolled back to its fresh state after the test."""
    snapshot_id = snapshot(deployed.w3)
    yield deployed
    revert_to(deployed.w3, snapshot_id)


@pytest.fixture(scope="session")
def postgres() -> Iterator["PostgresCluster"]:
    """A throwaway PostgreSQL cluster for the session (started as the postgres user when running as root)."""
    from tests.pgcluster import PostgresCluster

    cluster = PostgresCluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty database of each kind: SQLite (WAL) in a temporary file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    from tests.pgcluster import unique_name

    return request.getfixturevalue("postgres").create_database(unique_name("db"))
