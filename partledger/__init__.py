"""PartLedger's shared core: what every stage of the flow needs and none of them owns.

The flow is one way: ledger_service -> wallets -> chain (contracts) -> indexer -> query/verify API, labels, proofs.
This package holds GS1 identifiers and part ids, roles and statuses, contract artifacts and the deployment
manifest, the chain boundary (connecting, sending, decoding reverts), deployment, the Anvil launcher of the devnet
and tests, and the error tree. It imports none of the stages.
"""

__version__ = "0.1.0"
