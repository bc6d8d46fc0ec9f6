"""Auditor proofs: self-contained evidence that an event or a trade document is on the consortium chain.

- `verifier`: the offline verifier of a proof bundle (format: docs/proof-bundle.md). One module, dependencies rlp,
  eth-hash and coincurve only: no web3, no database, no PartLedger server. An auditor can read it in an afternoon.
- `builder`: builds a bundle from any standard JSON-RPC node (the service and `partledger proof get` use it).
- `checkpoints`: operator-signed block-hash checkpoints, the trust anchor an auditor takes once.

Nothing here is imported by the package's `__init__`, so `import partledger.proofs.verifier` pulls in nothing else.
"""
