"""Where the public test vectors are (EPCIS examples and hashes, Besu QBFT headers): `../shared/vectors` beside the
project, as the project's machines lay it out. They are read from there, never copied into the repository.

A clone elsewhere (CI's temporary directory) finds them through PARTLEDGER_VECTORS, or at the machines' fixed place
beside the main checkout. Missing, the tests that read them fail at once with this module's message."""

from __future__ import annotations

import os
from pathlib import Path

from partledger.artifacts import REPO_ROOT

VECTORS_VARIABLE = "PARTLEDGER_VECTORS"
MACHINE_VECTORS = Path("/work/shared/vectors")  # the project's machines: /work/main and /work/shared side by side


def vectors_dir() -> Path:
    candidates = [Path(os.environ[VECTORS_VARIABLE])] if os.environ.get(VECTORS_VARIABLE) else []
    candidates += [REPO_ROOT.parent / "shared" / "vectors", MACHINE_VECTORS]
    for candidate in candidates:
        if (candidate / "epcis" / "hashes.json").is_file():
            return candidate
    raise FileNotFoundError(f"the public test vectors are not at {', '.join(map(str, candidates))}: set {VECTORS_VARIABLE}")
