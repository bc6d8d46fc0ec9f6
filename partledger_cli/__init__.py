"""The `partledger` command: the top floor that wires the stages together. Nothing imports it."""
