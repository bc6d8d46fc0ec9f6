// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Part ledger of PartLedger: serialised parts, their custody and their lifecycle.
/// @notice A part is identified by `partId = keccak256(abi.encode(uint64 gtin, bytes32 serial))`, where `gtin` is
/// its GTIN-14 (GS1 AI 01) read as a number and `serial` its serial (GS1 AI 21, 1 to 20 characters) in ASCII,
/// left-aligned and zero-padded to 32 bytes. Every operation takes a list of part ids, is all-or-nothing, and emits
/// one event carrying every id it changed, so that the indexer needs no view call.
///
/// Containment: an assembly (a part made of parts) contains child parts, and a logistic unit (a carton or pallet,
/// identified by its SSCC, GS1 AI 00) contains parts, assemblies or other units. A logistic unit is stored like a part
/// with lot 0 under `logisticUnitId(sscc) = keccak256(abi.encode(uint64(0), bytes32(uint256(sscc))))`, and it ships,
/// is received and is cancelled with the ordinary functions. A contained part takes its status, custodian, recipient
/// and VIN tag from its outermost container (see {part}): moving a container moves everything inside in the same
/// transaction, at no cost per contained part, and the events name the container only. The chain keeps no list of a
/// container's contents (the indexer's mirror does), so the recall block on a container's contents is the service's.
///
/// The caller is the acting site key: the transaction's sender, or the signer of a request relayed by the trusted
/// ERC-2771 forwarder (see {PartLedgerForwarder}). Events name it as `siteKey` on both paths.
interface IPartLedger {
    /// @notice Lifecycle status of a part. Scrapped and Recycled are terminal.
    enum PartStatus {
        None, // never registered
        InStock, // held by its custodian (registered, received, removed, released)
        InTransit, // shipped by its custodian to a named recipient, not yet received
        Sold, // sold over the counter by a distributor or workshop
        Installed, // fitted to a vehicle by a workshop
        Quarantined, // held back by its custodian (QC failure, suspected counterfeit)
        Scrapped,
        Recycled,
        Contained, // stored only: inside a container, whose state it takes (the views never return it)
        Remanufactured // consumed by remanufacturing into a new part (terminal)
    }

    /// @notice Everything the ledger stores about one part.
    /// @param custodian the organisation holding the part (the shipper while it is in transit)
    /// @param recipient the organisation a shipment is addressed to, 0 unless in transit
    /// @param lot the production lot number (see {lot})
    /// @param vinTag the first 15 bytes of the salted VIN hash of the vehicle it is installed in, 0 unless installed
    /// @param recalled whether its lot is under recall
    struct PartView {
        PartStatus status;
        uint32 custodian;
        uint32 recipient;
        uint64 lot;
        bytes15 vinTag;
        bool recalled;
    }

    /// @notice The operation named no part.
    error PartLedgerEmptyBatch();
    /// @notice Two lists that must pair up have different lengths.
    error PartLedgerLengthMismatch(uint256 partCount, uint256 valueCount);
    /// @notice Not a GTIN-14: zero, more than 14 digits, or a wrong check digit.
    error PartLedgerInvalidGtin(uint64 gtin);
    /// @notice The serial at `index` of the list is empty.
    error PartLedgerEmptySerial(uint256 index);
    /// @notice A lot code must not be empty.
    error PartLedgerEmptyLotCode();
    /// @notice A part with this id is already registered; a part is registered once, whatever became of it.
    error PartLedgerPartAlreadyRegistered(bytes32 partId);
    /// @notice No part with this id was ever registered.
    error PartLedgerUnknownPart(bytes32 partId);
    /// @notice The operation is not allowed from the part's current status.
    error PartLedgerWrongStatus(bytes32 partId, PartStatus status);
    /// @notice The caller's organisation does not hold the part.
    error PartLedgerNotCustodian(bytes32 partId, uint32 custodian, uint32 caller);
    /// @notice The shipment is addressed to another organisation than the caller's.
    error PartLedgerNotRecipient(bytes32 partId, uint32 recipient, uint32 caller);
    /// @notice The part's lot is recalled: it may not be sold, installed, or shipped anywhere but back to its
    /// manufacturer or to a recycler.
    error PartLedgerPartRecalled(bytes32 partId, uint64 lot);
    /// @notice An organisation cannot ship to itself.
    error PartLedgerShipmentToSelf(uint32 orgId);
    /// @notice The recipient holds no role that may take custody of parts (an auditor, a regulator).
    error PartLedgerRecipientCannotHoldParts(uint32 orgId);
    /// @notice No lot has this number.
    error PartLedgerUnknownLot(uint64 lot);
    /// @notice The lot is already recalled (no part can be added to it, and it cannot be recalled twice).
    error PartLedgerLotRecalled(uint64 lot);
    /// @notice Only the lot's manufacturer or a regulator may recall it.
    error PartLedgerNotLotManufacturer(uint64 lot, uint32 manufacturer, uint32 caller);

    /// @notice The part is inside a container and cannot be acted on alone (nor packed into a second container).
    error PartLedgerPartContained(bytes32 partId, bytes32 containerId);
    /// @notice The part is not directly inside that container.
    error PartLedgerNotInContainer(bytes32 partId, bytes32 containerId);
    /// @notice Putting the part into that container would put it inside itself.
    error PartLedgerContainmentCycle(bytes32 partId, bytes32 containerId);
    /// @notice The part still contains other parts (remanufacture takes a part with nothing inside).
    error PartLedgerContainerNotEmpty(bytes32 partId, uint32 contents);
    /// @notice A logistic unit stands where a part is required (units only ship, are received, packed and unpacked).
    error PartLedgerLogisticUnit(bytes32 id);
    /// @notice Not an SSCC: zero, more than 18 digits, or a wrong check digit.
    error PartLedgerInvalidSscc(uint64 sscc);

    /// @notice A manufacturer opened a production lot (on its first registration).
    event LotOpened(uint64 indexed lot, uint32 indexed manufacturer, bytes32 lotCode);
    /// @notice Parts were registered in stock at their manufacturer; ids are keccak256(abi.encode(gtin, serial)).
    event PartsRegistered(
        uint64 indexed lot, uint32 indexed manufacturer, address indexed siteKey, uint64 gtin, bytes32[] serials
    );
    /// @notice Parts were shipped by `from` to `to`, awaiting receipt.
    event PartsShipped(
        uint32 indexed from, uint32 indexed to, address indexed siteKey, bytes32 docHash, bytes32[] partIds
    );
    /// @notice Parts in transit were received by `orgId`, which now holds them.
    event PartsReceived(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice The shipper cancelled shipments before receipt; the parts are back in its stock.
    event ShipmentsCancelled(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice Parts were sold over the counter.
    event PartsSold(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice Parts were installed, each in the vehicle whose salted VIN hash stands at the same index.
    event PartsInstalled(
        uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds, bytes32[] vinHashes
    );
    /// @notice Installed parts were removed from their vehicles and are back in the workshop's stock.
    event PartsRemoved(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice Parts were put in quarantine; `reasonHash` is the hash of the QC report or notice.
    event PartsQuarantined(uint32 indexed orgId, address indexed siteKey, bytes32 reasonHash, bytes32[] partIds);
    /// @notice Quarantined parts were released back to stock.
    event PartsReleased(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice Parts were scrapped (terminal).
    event PartsScrapped(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice Parts were recycled (terminal).
    event PartsRecycled(uint32 indexed orgId, address indexed siteKey, bytes32 docHash, bytes32[] partIds);
    /// @notice A lot was recalled by its manufacturer or a regulator; `noticeHash` is the hash of the recall notice.
    event LotRecalled(uint64 indexed lot, uint32 indexed orgId, address indexed siteKey, bytes32 noticeHash);

    /// @notice A logistic unit was created by its first packing, at the packing organisation.
    event LogisticUnitCreated(uint64 indexed sscc, bytes32 indexed unitId, uint32 indexed orgId);
    /// @notice Parts (or assemblies, or units) were packed into a logistic unit.
    event PartsPacked(bytes32 indexed unitId, uint32 indexed orgId, address indexed siteKey, bytes32[] partIds);
    /// @notice Parts were unpacked from a logistic unit; they are loose in the custodian's stock.
    event PartsUnpacked(bytes32 indexed unitId, uint32 indexed orgId, address indexed siteKey, bytes32[] partIds);
    /// @notice Child parts were fitted into an assembly part.
    event PartsAssembled(bytes32 indexed parentId, uint32 indexed orgId, address indexed siteKey, bytes32[] childIds);
    /// @notice Child parts were taken out of an assembly part; they are loose in the custodian's stock.
    event PartsDisassembled(
        bytes32 indexed parentId, uint32 indexed orgId, address indexed siteKey, bytes32[] childIds
    );
    /// @notice A part was remanufactured into the new part `partId` (registered in the same transaction); the
    /// original is consumed.
    event PartRemanufactured(bytes32 indexed originalId, bytes32 indexed partId, uint32 indexed orgId, address siteKey);

    /// @notice Registers serialised parts of one GTIN in a production lot, in stock at the caller's organisation.
    /// @dev Requires an active MANUFACTURER key, a valid GTIN-14, a non-empty lot code and serials, no part already
    /// registered, and a lot not under recall. Opens the lot on first use (emits {LotOpened}). Emits {PartsRegistered}.
    function registerParts(uint64 gtin, bytes32 lotCode, bytes32[] calldata serials) external;

    /// @notice Ships parts held by the caller's organisation to organisation `to`, which must receive them.
    /// @dev Requires an active key of a custody role, parts InStock and held by the caller, an active recipient with
    /// a custody role other than the caller; recalled parts only back to their manufacturer or to a recycler.
    /// Emits {PartsShipped}.
    function shipParts(bytes32[] calldata partIds, uint32 to, bytes32 docHash) external;

    /// @notice Receives parts shipped to the caller's organisation, which becomes their custodian.
    /// @dev Requires parts InTransit addressed to the caller's organisation. Emits {PartsReceived}.
    function receiveParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Cancels shipments the caller's organisation sent and that were not yet received.
    /// @dev Requires parts InTransit whose custodian is the caller's organisation. Emits {ShipmentsCancelled}.
    function cancelShipments(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Records an over-the-counter sale.
    /// @dev Requires a DISTRIBUTOR or WORKSHOP key, parts InStock held by the caller, not recalled. Emits {PartsSold}.
    function sellParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Installs parts in vehicles, given as salted VIN hashes (never a VIN in clear).
    /// @dev Requires a WORKSHOP key, parts InStock held by the caller, not recalled, one VIN hash per part.
    /// Emits {PartsInstalled}.
    function installParts(bytes32[] calldata partIds, bytes32[] calldata vinHashes, bytes32 docHash) external;

    /// @notice Removes installed parts from their vehicles, back into the workshop's stock.
    /// @dev Requires a WORKSHOP key and parts Installed by the caller's organisation. Emits {PartsRemoved}.
    function removeParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Holds parts back from use (QC failure, suspected counterfeit).
    /// @dev Requires a custody-role key and parts InStock held by the caller. Emits {PartsQuarantined}.
    function quarantineParts(bytes32[] calldata partIds, bytes32 reasonHash) external;

    /// @notice Releases quarantined parts back to stock.
    /// @dev Requires a custody-role key and parts Quarantined held by the caller. Emits {PartsReleased}.
    function releaseParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Scraps parts for good.
    /// @dev Requires a custody-role key and parts InStock or Quarantined held by the caller. Emits {PartsScrapped}.
    function scrapParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Recycles parts for good.
    /// @dev Requires a RECYCLER key and parts InStock or Quarantined held by the caller. Emits {PartsRecycled}.
    function recycleParts(bytes32[] calldata partIds, bytes32 docHash) external;

    /// @notice Recalls a whole production lot: its parts can no longer be sold, installed or shipped onward.
    /// @dev Requires the lot's manufacturer (MANUFACTURER key of that organisation) or a REGULATOR key, and a lot
    /// not already recalled. Emits {LotRecalled}.
    function recallLot(uint64 lot, bytes32 noticeHash) external;

    /// @notice Packs parts held loose in the caller's stock into the logistic unit `sscc`, creating the unit at the
    /// caller's organisation on first use (emits {LogisticUnitCreated}).
    /// @dev Requires a custody-role key; the unit (its outermost container) InStock and held by the caller; each part
    /// InStock, held by the caller and in no container; no part that contains the unit. Emits {PartsPacked}.
    function packParts(uint64 sscc, bytes32[] calldata partIds) external;

    /// @notice Takes parts out of the logistic unit `sscc`, loose into the caller's stock.
    /// @dev Requires a custody-role key, the unit (its outermost container) InStock and held by the caller, and each
    /// part directly inside the unit. Emits {PartsUnpacked}.
    function unpackParts(uint64 sscc, bytes32[] calldata partIds) external;

    /// @notice Fits child parts into the assembly part `parentId` (its as-built bill of materials).
    /// @dev Requires a MANUFACTURER or WORKSHOP key; parent and children parts (not logistic units); the parent (its
    /// outermost container) InStock and held by the caller; each child InStock, held by the caller and in no
    /// container; no cycle. Emits {PartsAssembled}.
    function assembleParts(bytes32 parentId, bytes32[] calldata childIds) external;

    /// @notice Takes child parts out of the assembly part `parentId`, loose into the caller's stock.
    /// @dev Requires a MANUFACTURER or WORKSHOP key, the parent (its outermost container) InStock and held by the
    /// caller, and each child directly inside the parent. Emits {PartsDisassembled}.
    function disassembleParts(bytes32 parentId, bytes32[] calldata childIds) external;

    /// @notice Remanufactures a returned part into a new serialised part linked to it; the original is consumed.
    /// @dev Requires a MANUFACTURER key, the original a part InStock, held by the caller, in no container and holding
    /// none, and the
    /// new part's GTIN, lot and serial valid as for {registerParts}. Emits {PartsRegistered} for the new part and
    /// {PartRemanufactured}.
    function remanufacturePart(bytes32 originalId, uint64 gtin, bytes32 lotCode, bytes32 serial) external;

    /// @notice What the ledger stores about a part; status None for an unknown id. A contained part shows its
    /// outermost container's status, custodian, recipient and VIN tag, with its own lot and recall state.
    function part(bytes32 partId) external view returns (PartView memory);

    /// @notice A lot's manufacturer and recall state; manufacturer 0 for an unknown lot.
    function lot(uint64 lotNumber) external view returns (uint32 manufacturer, bool recalled);

    /// @notice The lot number a manufacturer's lot code was given, 0 if it has none yet.
    function lotNumber(uint32 manufacturer, bytes32 lotCode) external view returns (uint64);

    /// @notice The container a part is directly inside (an assembly or a logistic unit), 0 when it is loose.
    function containerOf(bytes32 partId) external view returns (bytes32);

    /// @notice How many parts are directly inside a container.
    function contentsCount(bytes32 containerId) external view returns (uint32);

    /// @notice The part that `partId` was remanufactured from, 0 when it is an original.
    function remanufacturedFrom(bytes32 partId) external view returns (bytes32);

    /// @notice The id a logistic unit is stored under.
    function logisticUnitId(uint64 sscc) external pure returns (bytes32);

    /// @notice The consortium registry this ledger asks who may act.
    function registry() external view returns (address);
}
