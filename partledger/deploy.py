"""Deployment of the PartLedger contracts (and the forwarder they trust) to any JSON-RPC chain, and the dev-key guard.

Standard eth_* calls only: works on Anvil and on a Besu/QBFT network with gas price zero alike.
"""

from __future__ import annotations

import functools

from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from partledger.artifacts import FORWARDER, load_artifact
from partledger.chain import TransactionSigner, is_dev_chain, send_transaction
from partledger.errors import ConfigError
from partledger.manifest import DeployedContract, Manifest

# The mnemonic every Anvil, Hardhat and Ganache node ships with; its keys are public knowledge.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


@functools.cache
def dev_key_addresses(count: int = 20) -> frozenset[str]:
    """Addresses of the well-known development keys (the first `count` of the dev mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    return frozenset(
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").address for index in range(count)
    )


def refuse_dev_key(w3: Web3, address: str) -> None:
    """ConfigError when a well-known development key is about to act on a chain that is not a dev chain."""
    if Web3.to_checksum_address(address) in dev_key_addresses() and not is_dev_chain(w3):
        raise ConfigError(f"refusing the public development key {address} on chain {w3.eth.chain_id}, not a dev chain")


def deploy_contracts(
    w3: Web3,
    deployer: TransactionSigner,
    *,
    rpc_url: str,
    admin: str,
    operator: str,
    gas_price: int = 0,
    confirmations: int = 0,
) -> Manifest:
    """Deploys the ERC-2771 forwarder, ConsortiumRegistry, PartLedger and EvidenceLedger (both trusting the
    forwarder) and returns the manifest describing them."""
    for address in (deployer.address, admin, operator):
        refuse_dev_key(w3, address)
    chain_id = w3.eth.chain_id
    deployed: dict[str, DeployedContract] = {}

    def deploy(name: str, *args: object) -> str:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        transaction = factory.constructor(*args).build_transaction(
            {
                "from": deployer.address,
                "nonce": w3.eth.get_transaction_count(deployer.address, "pending"),
                "gasPrice": gas_price,
                "chainId": chain_id,
            }
        )
        receipt = send_transaction(w3, deployer, transaction)
        address = receipt["contractAddress"]
        code = bytes(w3.eth.get_code(address))
        deployed[name] = DeployedContract(
            address=address,
            block=receipt["blockNumber"],
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            artifact_sha256=artifact.sha256,
            code_hash="0x" + keccak(code).hex(),
        )
        return address

    # The forwarder first: the ledgers fix its address at construction (ERC2771Context), for good.
    forwarder = deploy(FORWARDER)
    registry = deploy("ConsortiumRegistry", Web3.to_checksum_address(admin), Web3.to_checksum_address(operator))
    deploy("PartLedger", registry, forwarder)
    deploy("EvidenceLedger", registry, forwarder)
    return Manifest(
        chain_id=chain_id,
        rpc_url=rpc_url,
        deployment_block=min(contract.block for contract in deployed.values()),
        deployer=deployer.address,
        operator=Web3.to_checksum_address(operator),
        contracts=deployed,
        dev_chain=is_dev_chain(w3),
        confirmations=confirmations,
        gas_price=gas_price,
    )
