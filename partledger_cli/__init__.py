"""The `partledger` command: the top floor that wires the stages together. Nothing imports it."""

import partledger  # noqa: E402, F401 - first: it chooses eth-hash's Keccak backend before any hash is taken
