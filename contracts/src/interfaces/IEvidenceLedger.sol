// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Evidence ledger of PartLedger: trade documents both parties signed, and roots of record batches.
/// @notice A trade document (purchase order, invoice, delivery note, payment confirmation) is anchored as its salted
/// hash with the EIP-712 signatures of a site key of each party over the same {Attestation}. High-volume records
/// (scans, sensor readings, QC measurements) are anchored as Merkle roots of batches in OpenZeppelin's
/// StandardMerkleTree form. Off-chain code reads the EIP-712 domain from `eip712Domain()` (ERC-5267).
interface IEvidenceLedger {
    /// @notice What both parties sign. EIP-712 type:
    /// `Attestation(bytes32 docHash,uint16 docType,uint32 issuer,uint32 counterparty,bytes32 previous,bytes32 partsRoot,bytes32 nonce,uint64 deadline)`
    /// @param docHash salted hash of the document; the salt stays with the parties
    /// @param docType the document type (1 purchase order, 2 invoice, 3 delivery note, 4 payment confirmation, ...)
    /// @param issuer the organisation that issued the document
    /// @param counterparty the other party
    /// @param previous the docHash of the anchored document this one amends or answers, 0 if none
    /// @param partsRoot Merkle root of the part ids the document covers, 0 if none
    /// @param nonce a random value chosen by the proposer; each party can cancel it before anchoring
    /// @param deadline unix time after which the signatures may no longer be anchored
    struct Attestation {
        bytes32 docHash;
        uint16 docType;
        uint32 issuer;
        uint32 counterparty;
        bytes32 previous;
        bytes32 partsRoot;
        bytes32 nonce;
        uint64 deadline;
    }

    /// @notice An anchored document: where and between whom.
    struct DocumentRecord {
        uint64 blockNumber;
        uint32 issuer;
        uint32 counterparty;
        uint16 docType;
    }

    /// @notice An anchored batch root: where, by whom, of how many records (what kind: see {BatchAnchored}).
    struct BatchRecord {
        uint64 blockNumber;
        uint32 orgId;
        uint32 recordCount;
    }

    /// @notice The document hash is zero.
    error EvidenceLedgerEmptyDocumentHash();
    /// @notice Issuer and counterparty are the same organisation.
    error EvidenceLedgerSameParty(uint32 orgId);
    /// @notice The submitting key belongs to neither party.
    error EvidenceLedgerSubmitterNotParty(address submitter, uint32 orgId);
    /// @notice The signatures' deadline has passed.
    error EvidenceLedgerExpiredSignature(uint64 deadline);
    /// @notice This document hash is anchored already.
    error EvidenceLedgerDocumentAlreadyAnchored(bytes32 docHash);
    /// @notice The document it links to is not anchored.
    error EvidenceLedgerUnknownPreviousDocument(bytes32 previous);
    /// @notice A signature recovers to `signer`, which is not a key of organisation `party`.
    error EvidenceLedgerSignerNotParty(address signer, uint32 party);
    /// @notice The nonce was used or cancelled by organisation `orgId`.
    error EvidenceLedgerNonceUsed(uint32 orgId, bytes32 nonce);
    /// @notice The batch root is zero or holds no record.
    error EvidenceLedgerEmptyBatch();
    /// @notice This batch root is anchored already.
    error EvidenceLedgerBatchAlreadyAnchored(bytes32 root);

    /// @notice A trade document was anchored with both parties' signatures.
    event DocumentAnchored(
        bytes32 indexed docHash,
        uint32 indexed issuer,
        uint32 indexed counterparty,
        Attestation attestation,
        address issuerSigner,
        address counterpartySigner,
        bytes issuerSignature,
        bytes counterpartySignature
    );
    /// @notice An organisation cancelled a nonce: no attestation carrying it can be anchored with that party.
    event NonceCancelled(uint32 indexed orgId, bytes32 indexed nonce, address siteKey);
    /// @notice A Merkle root of a batch of records was anchored.
    event BatchAnchored(bytes32 indexed root, uint32 indexed orgId, address indexed siteKey, bytes32 kind, uint32 recordCount);

    /// @notice Anchors a trade document signed by both parties.
    /// @dev Requires the caller to be an active key of the issuer or the counterparty, distinct parties, a non-zero
    /// document hash not anchored before, a `previous` that is anchored (or 0), a deadline not passed, a nonce neither
    /// party has used or cancelled, and two signatures (low-s, 65 bytes) recovering to active keys of the issuer and
    /// of the counterparty. Uses the nonce for both parties. Emits {DocumentAnchored}.
    function anchorDocument(
        Attestation calldata attestation,
        bytes calldata issuerSignature,
        bytes calldata counterpartySignature
    ) external;

    /// @notice Cancels a nonce for the caller's organisation, so that an attestation it signed is never anchored.
    /// @dev Requires an active key; the nonce must not be used yet. Emits {NonceCancelled}.
    function cancelNonce(bytes32 nonce) external;

    /// @notice Anchors the Merkle root of a batch of records (OpenZeppelin StandardMerkleTree form).
    /// @dev Requires an active key, a non-zero root not anchored before and at least one record. Emits {BatchAnchored}.
    /// @param kind what the records are (e.g. "scan", "qc"), as a short identifier
    function anchorBatch(bytes32 root, uint32 recordCount, bytes32 kind) external;

    /// @notice The anchor of a document; blockNumber 0 when it is not anchored.
    function document(bytes32 docHash) external view returns (DocumentRecord memory);

    /// @notice The anchor of a batch root; blockNumber 0 when it is not anchored.
    function batch(bytes32 root) external view returns (BatchRecord memory);

    /// @notice Whether organisation `orgId` used or cancelled `nonce`.
    function nonceUsed(uint32 orgId, bytes32 nonce) external view returns (bool);

    /// @notice Whether `leaf` (the double-hashed record) is in the anchored batch `root`, by its Merkle proof.
    function verifyBatchRecord(bytes32 root, bytes32[] calldata proof, bytes32 leaf) external view returns (bool);

    /// @notice The EIP-712 digest that both parties sign for `attestation`, under this contract's domain.
    function attestationDigest(Attestation calldata attestation) external view returns (bytes32);
}
