"""PartLedger's shared core: what every stage of the flow needs and none of them owns.

The flow is one way: ledger_service -> wallets -> chain (contracts) -> indexer -> query/verify API, labels, proofs.
This package holds GS1 identifiers and part ids, roles and statuses, contract artifacts and the deployment
manifest, the chain boundary (connecting, sending, decoding reverts), deployment, the Anvil launcher of the devnet
and tests, and the error tree. It imports none of the stages.
"""

import os

__version__ = "0.1.0"

# Keccak-256 through safe-pysha3 (a dependency), not pycryptodome, which eth-hash picks first when both are installed:
# 20 us a hash against 7 on this machine, and the relay hashes each request several times (its EIP-712 digest, its
# addresses' checksums). eth-hash chooses its backend at the first hash, after this import.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
