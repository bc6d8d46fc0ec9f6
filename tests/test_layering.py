"""The one-way flow, checked by reading imports: a stage imports only what is upstream of it or shared."""

from __future__ import annotations

import ast
from pathlib import Path

from partledger.artifacts import REPO_ROOT

# package -> the project packages it may import. The CLI is the top floor: it may import anything, nothing imports it.
ALLOWED = {
    "partledger": set(),
    "wallets": {"partledger"},
    "indexer": {"partledger"},
    "labels": {"partledger", "wallets"},
    "ledger_service": {"partledger", "wallets", "indexer", "labels"},
    "partledger_cli": {"partledger", "wallets", "indexer", "labels", "ledger_service"},
}


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(ALLOWED)
    return found


def test_every_package_imports_only_upstream_or_shared():
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for imported in project_imports(path) - allowed - {package}:
                violations.append(f"{path.relative_to(REPO_ROOT)} imports {imported}")
    assert not violations, "\n".join(violations)


def test_nothing_outside_tests_imports_the_cli():
    importers = [
        str(path.relative_to(REPO_ROOT))
        for package in ALLOWED
        if package != "partledger_cli"
        for path in (REPO_ROOT / package).rglob("*.py")
        if "partledger_cli" in project_imports(path)
    ]
    assert not importers
