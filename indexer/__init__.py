"""The indexer: mirrors the contracts' events into SQL, reorg-safe and exactly-once (issue #4).

It reads the chain through standard eth_* calls and the deployment manifest, and imports nothing but the shared
`partledger` package.
"""

import partledger  # noqa: E402, F401 - first: it chooses eth-hash's Keccak backend before any hash is taken
