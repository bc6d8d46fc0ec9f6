// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";

/// @title PartLedgerForwarder
/// @notice The consortium's ERC-2771 forwarder: OpenZeppelin's ERC2771Forwarder, unchanged, under the EIP-712 domain
/// "PartLedger Forwarder", version "1". A site key signs a `ForwardRequest(address from,address to,uint256 value,
/// uint256 gas,uint256 nonce,uint48 deadline,bytes data)` (one nonce sequence per signer, a deadline); anyone may
/// relay it, alone (`execute`) or in a batch with other sites' requests (`executeBatch`). PartLedger and
/// EvidenceLedger trust this forwarder's address, fixed at their deployment, and take the signer as the acting key.
/// @dev Off-chain code reads the domain from `eip712Domain()` (ERC-5267). A request that fails its checks (signer,
/// deadline, nonce, untrusted target) reverts with the forwarder's error, or is skipped in a non-atomic batch; a
/// forwarded call that reverts uses its nonce and is reported by `ExecutedForwardRequest(signer, nonce, false)`.
contract PartLedgerForwarder is ERC2771Forwarder {
    constructor() ERC2771Forwarder("PartLedger Forwarder") {}
}
