"""The ledger service: the HTTP API (FastAPI) where sites send commands and readers query and verify.

Write side: auth, validation, the durable outbox, the submitter that has `wallets` sign and sends to the chain.
Read side: queries over the indexer's tables, the consumer verify page, proofs. Built in later issues (#3, #4, #5).
"""
