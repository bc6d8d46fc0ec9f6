"""The ledger service: the HTTP API (FastAPI) where sites send commands and readers query and verify.

Write side: auth, validation, the durable outbox, the submitter that has `wallets` sign and sends to the chain.
Read side: queries over the indexer's tables, the consumer verify page, proofs. Built in later issues (#3, #4, #5).
"""

import partledger  # noqa: E402, F401 - first: it chooses eth-hash's Keccak backend before any hash is taken
