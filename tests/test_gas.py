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
}


def test_gas_per_operation_within_targets(ledger):
    figures = measure_gas(ledger)
    over = {name: (figures[name], limit) for name, limit in TARGETS.items() if figures[name] > limit}
    assert not over, f"over the gas target (measured, target): {over}"
    # A bulk part costs at least its storage floor: a new slot when registered, a slot rewrite when moved.
    assert figures["register_per_part"] > 22_100
    assert figures["ship_per_part"] > 2_900
    assert figures["pack_per_part"] > 2_900 and figures["unpack_per_part"] > 2_900
