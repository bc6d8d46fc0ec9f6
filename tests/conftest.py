"""Shared fixtures: one Anvil node per test worker, the contracts deployed once, a chain snapshot per test; and the
run's seed.

One seed per run (PARTLEDGER_TEST_SEED, else drawn and printed) feeds hypothesis, the failpoints of the processes the
tests kill, and the order of the tests: modules in a shuffled order (the heaviest, marked `heavy`, first so that two
workers finish together), and the tests of a module shuffled within the groups that share a module- or class-scoped
parameter (so that such a fixture is still built once). A red run ends with the line that replays it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.nodeid import NodeId
from hypothesis import HealthCheck, settings
from web3 import Web3

from partledger.anvil import AnvilConfig, AnvilNode
from partledger.artifacts import REPO_ROOT
from partledger.chain import connect
from tests.chainkit import ANVIL_ACCOUNTS, Ledger, build_ledger, revert_to, snapshot
from tests.ports import free_port
from tests.seed import SEED_VARIABLE, run_seed

# database=None: what a run generates depends on its seed alone, not on examples a former run saved.
# Services started by tests (in process, or as processes that inherit this environment) prepare capture documents in
# their own thread: a preparing process at each of the suite's service starts would cost it minutes of CPU. The tests
# of that process ask for it (tests/test_epcis_preparing.py, the capture module's site).
os.environ.setdefault("PARTLEDGER_EPCIS_PREPARE_PROCESSES", "0")

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "heavy: a module that takes minutes; scheduled first so that the workers finish together")
    config.addinivalue_line("markers", "spread: the module's tests may run on different workers (each builds the module's fixtures)")
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's work unit (set by this conftest), also without xdist")
    seed = run_seed()
    from hypothesis import core

    core.global_force_seed = seed  # as hypothesis's own --hypothesis-seed does


def pytest_report_header(config: pytest.Config) -> str:
    return f"PartLedger test seed: {SEED_VARIABLE}={run_seed()} (set it to replay this run's order, examples and failpoints)"


@pytest.hookimpl(specname="pytest_collection_modifyitems", tryfirst=True)  # before pytest-xdist reads the groups
def pytest_mark_work_units(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for the workers (pytest-xdist's loadgroup): a module is one unit, so its module-scoped fixtures are
    built once; a module marked `spread` gives each test (or each group sharing a wide parameter) a unit of its own,
    for modules whose tests are few and long."""
    loadgroup = bool(getattr(config.option, "loadgroup", False))  # set on pytest-xdist workers under --dist loadgroup
    for item in items:
        spread = item.get_closest_marker("spread") is not None
        group = item.nodeid if spread else str(item.path.relative_to(config.rootpath))
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup:
            # pytest-xdist 3.8 tells the scheduler the group by renaming the item (`item._nodeid = "<id>@<group>"`), but
            # pytest 9 reads a node's id from `item._id`: the rename is lost, every test becomes a unit of its own, and a
            # module's fixtures are built on every worker (seen: the equality module's 10,000-operation chain built
            # twice, the reorg module's on all three workers). Rename the way pytest 9 reads it.
            item._id = NodeId.parse(f"{item.nodeid}@{group}")


def _group_key(item: pytest.Item) -> tuple[object, ...]:
    """Items with equal keys share every fixture wider than a function (module, class, and their parameters)."""
    callspec = getattr(item, "callspec", None)
    params: tuple[tuple[str, int], ...] = ()
    if callspec is not None:
        scopes = getattr(callspec, "_arg2scope", {})
        params = tuple(sorted((name, index) for name, index in callspec.indices.items() if str(getattr(scopes.get(name), "value", "function")) != "function"))
    return (item.path, getattr(item, "cls", None), params)


@pytest.hookimpl(specname="pytest_collection_modifyitems", trylast=True)  # after pytest grouped the tests that share wide fixtures
def pytest_shuffle_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    rng = random.Random(run_seed())
    modules: dict[Path, list[list[pytest.Item]]] = {}
    for item in items:  # pytest has already ordered the items so that wide fixtures are built once: keep the groups
        groups = modules.setdefault(item.path, [])
        if groups and _group_key(groups[-1][-1]) == _group_key(item):
            groups[-1].append(item)
        else:
            groups.append([item])
    order = list(modules)
    rng.shuffle(order)
    order.sort(key=lambda path: not any(item.get_closest_marker("heavy") for group in modules[path] for item in group))
    shuffled: list[pytest.Item] = []
    for path in order:
        groups = modules[path]
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
            shuffled.extend(group)
    items[:] = shuffled


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001 - pytest's
    if exitstatus not in (0, 5):
        terminalreporter.write_line(f"replay this run: {SEED_VARIABLE}={run_seed()} make test")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """test-artifacts/<worker>/: screenshots and files a person may want to look at after the run."""
    directory = REPO_ROOT / "test-artifacts" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session", autouse=True)
def light_password_hashing() -> Iterator[Any]:
    """Services in this process hash passwords with Argon2id at its lightest (1 pass, 1 MiB), not the production
    strength (64 MiB, 0.11-0.13 s a hash or a check on these machines). The console, notification and page tests
    create users and sign in some 250 times: 30-50 s of a suite run's CPU went to it. Processes the tests start
    (`partledger serve`, `partledger user`) keep the production strength. The fixture's value is the production
    hasher: tests/test_accounts.py stores a password with it and checks its strength."""
    from argon2 import PasswordHasher

    from ledger_service import accounts

    production = accounts._hasher
    accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield production
    accounts._hasher = production


@pytest.fixture
def test_rng(request: pytest.FixtureRequest) -> random.Random:
    """A random source for one test, from the run's seed and the test's id."""
    return random.Random(f"{run_seed()}:{request.node.nodeid}")


@pytest.fixture(scope="session")
def forkserver() -> Iterator["ForkServer"]:
    """This worker's fork server for `partledger` processes started many times (tests/forkserver.py)."""
    from tests.forkserver import ForkServer

    server = ForkServer()
    yield server
    server.close()


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
    """A throwaway PostgreSQL cluster for this worker (started as the postgres user when running as root)."""
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
