"""Site keys: encrypted keystores (Web3 Secret Storage v3) and the signers built on them.

Sits between the ledger service and the chain: the service hands a transaction to a site's signer, the signer
hands back signed bytes. Private keys exist in clear only in memory, inside a signer.
"""

import partledger  # noqa: E402, F401 - first: it chooses eth-hash's Keccak backend before any hash is taken
