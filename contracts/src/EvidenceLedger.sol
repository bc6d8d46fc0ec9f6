// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC2771Context} from "@openzeppelin/contracts/metatx/ERC2771Context.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IConsortiumRegistry} from "./interfaces/IConsortiumRegistry.sol";
import {IEvidenceLedger} from "./interfaces/IEvidenceLedger.sol";

/// @title EvidenceLedger
/// @notice Trade evidence between consortium members: documents anchored with both parties' EIP-712 signatures
/// checked here, on chain, against the consortium registry; and Merkle roots of batches of records.
/// @dev The submitting site key is `_msgSender()` (ERC2771Context): the transaction's sender, or the signer of a
/// request relayed by the consortium's forwarder, fixed at deployment.
contract EvidenceLedger is IEvidenceLedger, EIP712, ERC2771Context {
    /// @notice EIP-712 type hash of {Attestation}.
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(bytes32 docHash,uint16 docType,uint32 issuer,uint32 counterparty,bytes32 previous,bytes32 partsRoot,bytes32 nonce,uint64 deadline)"
    );

    IConsortiumRegistry private immutable _registry;
    mapping(bytes32 docHash => DocumentRecord) private _documents;
    mapping(bytes32 root => BatchRecord) private _batches;
    mapping(uint32 orgId => mapping(bytes32 nonce => bool)) private _usedNonces;

    /// @param registry_ the consortium registry that says which keys sign for which organisation
    /// @param trustedForwarder_ the ERC-2771 forwarder (PartLedgerForwarder) whose relayed calls act for their signer
    constructor(IConsortiumRegistry registry_, address trustedForwarder_)
        EIP712("PartLedger EvidenceLedger", "1")
        ERC2771Context(trustedForwarder_)
    {
        _registry = registry_;
    }

    /// @inheritdoc IEvidenceLedger
    function anchorDocument(
        Attestation calldata attestation,
        bytes calldata issuerSignature,
        bytes calldata counterpartySignature
    ) external {
        _requireAnchorable(attestation);
        bytes32 digest = _hashTypedDataV4(_structHash(attestation));
        address issuerSigner = _recoverPartySigner(digest, issuerSignature, attestation.issuer);
        address counterpartySigner = _recoverPartySigner(digest, counterpartySignature, attestation.counterparty);
        _useNonce(attestation.issuer, attestation.nonce);
        _useNonce(attestation.counterparty, attestation.nonce);
        _documents[attestation.docHash] = DocumentRecord({
            blockNumber: uint64(block.number),
            issuer: attestation.issuer,
            counterparty: attestation.counterparty,
            docType: attestation.docType
        });
        emit DocumentAnchored(
            attestation.docHash,
            attestation.issuer,
            attestation.counterparty,
            attestation,
            issuerSigner,
            counterpartySigner,
            issuerSignature,
            counterpartySignature
        );
    }

    /// @inheritdoc IEvidenceLedger
    function cancelNonce(bytes32 nonce) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), 0);
        _useNonce(orgId, nonce);
        emit NonceCancelled(orgId, nonce, _msgSender());
    }

    /// @inheritdoc IEvidenceLedger
    function anchorBatch(bytes32 root, uint32 recordCount, bytes32 kind) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), 0);
        if (root == bytes32(0) || recordCount == 0) revert EvidenceLedgerEmptyBatch();
        if (_batches[root].blockNumber != 0) revert EvidenceLedgerBatchAlreadyAnchored(root);
        // One slot per batch, so that anchoring costs the same whatever the batch size; the kind lives in the event.
        _batches[root] = BatchRecord({blockNumber: uint64(block.number), orgId: orgId, recordCount: recordCount});
        emit BatchAnchored(root, orgId, _msgSender(), kind, recordCount);
    }

    /// @inheritdoc IEvidenceLedger
    function document(bytes32 docHash) external view returns (DocumentRecord memory) {
        return _documents[docHash];
    }

    /// @inheritdoc IEvidenceLedger
    function batch(bytes32 root) external view returns (BatchRecord memory) {
        return _batches[root];
    }

    /// @inheritdoc IEvidenceLedger
    function nonceUsed(uint32 orgId, bytes32 nonce) external view returns (bool) {
        return _usedNonces[orgId][nonce];
    }

    /// @inheritdoc IEvidenceLedger
    function verifyBatchRecord(bytes32 root, bytes32[] calldata proof, bytes32 leaf) external view returns (bool) {
        return _batches[root].blockNumber != 0 && MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @inheritdoc IEvidenceLedger
    function attestationDigest(Attestation calldata attestation) external view returns (bytes32) {
        return _hashTypedDataV4(_structHash(attestation));
    }

    /// @dev Every check on an attestation that needs no signature: submitter, parties, hash, deadline, link.
    function _requireAnchorable(Attestation calldata attestation) private view {
        (uint32 submitterOrg,) = _registry.authorize(_msgSender(), 0);
        if (submitterOrg != attestation.issuer && submitterOrg != attestation.counterparty) {
            revert EvidenceLedgerSubmitterNotParty(_msgSender(), submitterOrg);
        }
        if (attestation.issuer == attestation.counterparty) revert EvidenceLedgerSameParty(attestation.issuer);
        if (attestation.docHash == bytes32(0)) revert EvidenceLedgerEmptyDocumentHash();
        if (block.timestamp > attestation.deadline) revert EvidenceLedgerExpiredSignature(attestation.deadline);
        if (_documents[attestation.docHash].blockNumber != 0) {
            revert EvidenceLedgerDocumentAlreadyAnchored(attestation.docHash);
        }
        bytes32 previous = attestation.previous;
        if (previous != bytes32(0) && _documents[previous].blockNumber == 0) {
            revert EvidenceLedgerUnknownPreviousDocument(previous);
        }
    }

    function _recoverPartySigner(bytes32 digest, bytes calldata signature, uint32 party)
        private
        view
        returns (address signer)
    {
        signer = ECDSA.recover(digest, signature);
        if (_registry.siteKey(signer).orgId != party) revert EvidenceLedgerSignerNotParty(signer, party);
        _registry.authorize(signer, 0); // reverts when the key is revoked or its organisation suspended
    }

    function _useNonce(uint32 orgId, bytes32 nonce) private {
        if (_usedNonces[orgId][nonce]) revert EvidenceLedgerNonceUsed(orgId, nonce);
        _usedNonces[orgId][nonce] = true;
    }

    function _structHash(Attestation calldata attestation) private pure returns (bytes32) {
        return keccak256(abi.encode(ATTESTATION_TYPEHASH, attestation));
    }
}
