"""Anvil's automine with a sweep (AnvilConfig.sweep_seconds, `--mixed-mining`), the chain of the SIGKILL tests: a
transaction is still mined as it arrives, and a block comes every sweep_seconds without one, taking whatever ready
transactions automine missed (foundry-rs/foundry#10122)."""

from __future__ import annotations

import time

import pytest
import requests
from eth_account import Account

from partledger.anvil import AnvilConfig, AnvilNode
from tests.chainkit import dev_account
from tests.ports import free_port

pytestmark = pytest.mark.chain

def test_the_sweep_is_mixed_mining_and_a_block_time_means_interval_mining_alone() -> None:
    swept = AnvilConfig(sweep_seconds=2.0).arguments()
    assert swept[-3:] == ["--mixed-mining", "--block-time", "2.0"]
    interval = AnvilConfig(block_time=1.0, sweep_seconds=2.0).arguments()
    assert "--mixed-mining" not in interval and interval[interval.index("--block-time") + 1] == "1.0"
    assert "--block-time" not in AnvilConfig().arguments()


def test_a_swept_node_mines_a_transaction_and_a_block_without_one() -> None:
    node = AnvilNode.start(AnvilConfig(port=free_port(), sweep_seconds=0.5))
    try:

        def call(method: str, *params: object) -> object:
            answer = requests.post(node.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=30).json()
            assert "error" not in answer, answer
            return answer["result"]

        raw = Account.sign_transaction({"nonce": 0, "gas": 21_000, "gasPrice": 0, "to": "0x" + "11" * 20, "value": 1, "chainId": 31337}, dev_account(0).key)
        sent = call("eth_sendRawTransaction", "0x" + raw.raw_transaction.hex().removeprefix("0x"))
        deadline = time.monotonic() + 60  # blocks come within a second here; a slow machine gets ample time
        while (receipt := call("eth_getTransactionReceipt", sent)) is None:
            assert time.monotonic() < deadline, "the transaction was never mined"
            time.sleep(0.05)
        mined_in = int(receipt["blockNumber"], 16)  # type: ignore[index]
        head = int(call("eth_blockNumber"), 16)  # type: ignore[arg-type]
        while int(call("eth_blockNumber"), 16) <= head:  # type: ignore[arg-type]
            assert time.monotonic() < deadline, "no block without a transaction: the node does not sweep"
            time.sleep(0.05)
        block = call("eth_getBlockByNumber", hex(head + 1), False)
        assert block["transactions"] == [] and mined_in <= head  # type: ignore[index]
    finally:
        node.stop()
