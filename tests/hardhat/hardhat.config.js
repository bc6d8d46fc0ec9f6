// The Hardhat node (EDR) that tests/test_hardhat_node.py runs PartLedger's core flow on, beside Anvil.
// Set up like the Anvil devnet (partledger/anvil.py AnvilConfig): free gas, a high block gas limit, a block per
// transaction, the dev mnemonic's accounts. tests/hardhatkit.py passes the chain id and the accounts' private keys
// (derived in Python: Hardhat derives a mnemonic's keys in JavaScript at about half a second each on a busy machine).
const DEV_MNEMONIC = "test test test test test test test test test test test junk";
const keys = JSON.parse(process.env.PARTLEDGER_HARDHAT_KEYS || "[]");

module.exports = {
  networks: {
    hardhat: {
      chainId: Number(process.env.PARTLEDGER_HARDHAT_CHAIN_ID || 31337),
      hardfork: "prague",
      blockGasLimit: 1_000_000_000,
      // Legacy transactions at gas price 0 need a zero base fee. It stays 0: the base fee rises only after a block
      // that uses more than half its gas limit, which no PartLedger transaction comes near.
      initialBaseFeePerGas: 0,
      accounts: keys.length
        ? keys.map((privateKey) => ({ privateKey, balance: "10000000000000000000000" }))
        : { mnemonic: DEV_MNEMONIC, count: 20 },
      mining: { auto: true, interval: 0 },
      // As every production node: a transaction that reverts is mined and its hash returned. Hardhat's default
      // answers eth_sendRawTransaction with an error instead (the transaction mined all the same).
      throwOnTransactionFailures: false,
    },
  },
};
