"""Gas targets of the chain foundation, measured on Anvil exactly as `make gas` does (gas is deterministic)."""

from benchmarks.gas import measure_gas

TARGETS = {
    "register_per_part": 26_000,
    "ship_per_part": 9_000,
    "receive_per_part": 9_000,
    "install_per_part": 9_000,
    "single_transition_tx": 50_000,
    "batch_root_anchor": 60_000,
    # Containment (issue 15): per contained part, within the bulk targets.
    "pack_per_part": 9_000,
    "unpack_per_part": 9_000,
    "assemble_per_part": 9_000,
    "disassemble_per_part": 9_000,
    "ship_container_per_part": 9_000,
    "receive_container_per_part": 9_000,
    # Relayed (issue 17): one single-part shipment per request, in an executeBatch of 100 requests from 100 sites of
    # 100 organisations. The issue asks 25,000, which OpenZeppelin's ERC2771Forwarder cannot reach: what no code can
    # save (the request's calldata 4,327, ecrecover 3,100, the signer's nonce 5,100, ExecutedForwardRequest 1,637,
    # the part's and its lot's slots 7,500, the key and organisation records 4,320, PartsShipped 2,899, the base
    # share 210) is 29,093 already, and the Solidity around it 12,296 more (README, "Gas"). This holds the measured
    # figure against regressions.
    "relayed_transition_per_request": 42_000,
}


def test_gas_per_operation_within_targets(ledger):
    figures = measure_gas(ledger)
    over = {name: (figures[name], limit) for name, limit in TARGETS.items() if figures[name] > limit}
    assert not over, f"over the gas target (measured, target): {over}"
    # A bulk part costs at least its storage floor: a new slot when registered, a slot rewrite when moved.
    assert figures["register_per_part"] > 22_100
    assert figures["ship_per_part"] > 2_900
    assert figures["pack_per_part"] > 2_900 and figures["unpack_per_part"] > 2_900
    assert figures["relayed_transition_per_request"] > 29_000  # the floor above: a figure under it measured nothing
