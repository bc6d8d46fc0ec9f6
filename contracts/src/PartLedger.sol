// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC2771Context} from "@openzeppelin/contracts/metatx/ERC2771Context.sol";
import {IConsortiumRegistry} from "./interfaces/IConsortiumRegistry.sol";
import {IPartLedger} from "./interfaces/IPartLedger.sol";
import {
    CUSTODY_ROLES, ROLE_DISTRIBUTOR, ROLE_MANUFACTURER, ROLE_RECYCLER, ROLE_REGULATOR, ROLE_WORKSHOP
} from "./Roles.sol";

/// @title PartLedger
/// @notice The lifecycle of serialised auto parts: registration, two-step custody hand-over, sale, installation,
/// removal, quarantine, scrapping and recycling, with recall as an overlay on production lots; assemblies and logistic
/// units that contain parts, and remanufacturing.
/// @dev Each part is one storage slot, so a bulk operation costs one cold slot read and write per part. A contained
/// part keeps that one slot: status Contained, and its container's number where an installed part keeps its VIN tag
/// (a contained part is never installed itself), so packing stays one slot write per part and moving a container
/// writes the container's slot only.
///
/// Who acts is `_msgSender()` (OpenZeppelin's ERC2771Context): the transaction's sender, or, for a call relayed by
/// the consortium's forwarder (fixed at deployment), the site key that signed the forwarded request. Every rule and
/// every event applies to that site key alike on both paths.
contract PartLedger is IPartLedger, ERC2771Context {
    struct Part {
        PartStatus status;
        uint32 custodian;
        uint32 recipient;
        uint64 lot;
        bytes15 vinTag;
    }

    struct Lot {
        uint32 manufacturer;
        bool recalled;
    }

    /// @dev A part or unit that has been used as a container: its number (what contained parts store) and how many
    /// parts are directly inside it.
    struct Container {
        uint64 number;
        uint32 contents;
    }

    uint256 private constant _GTIN_LIMIT = 1e14;

    IConsortiumRegistry private immutable _registry;
    mapping(bytes32 partId => Part) private _parts;
    mapping(uint64 lotNumber => Lot) private _lots;
    mapping(uint32 manufacturer => mapping(bytes32 lotCode => uint64)) private _lotNumbers;
    uint64 private _lotCount;
    mapping(bytes32 containerId => Container) private _containers;
    mapping(uint64 containerNumber => bytes32) private _containerIds;
    uint64 private _containerCount;
    mapping(bytes32 partId => bytes32 originalId) private _origins;

    /// @param registry_ the consortium registry that says which keys may act for which organisation
    /// @param trustedForwarder_ the ERC-2771 forwarder (PartLedgerForwarder) whose relayed calls act for their signer
    constructor(IConsortiumRegistry registry_, address trustedForwarder_) ERC2771Context(trustedForwarder_) {
        _registry = registry_;
    }

    /// @inheritdoc IPartLedger
    function registerParts(uint64 gtin, bytes32 lotCode, bytes32[] calldata serials) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_MANUFACTURER);
        _requireNonEmpty(serials.length);
        _requireValidGtin(gtin);
        uint64 lotNumber_ = _lotNumberFor(orgId, lotCode);
        for (uint256 i = 0; i < serials.length; ++i) {
            bytes32 serial = serials[i];
            if (serial == bytes32(0)) revert PartLedgerEmptySerial(i);
            bytes32 partId = keccak256(abi.encode(gtin, serial));
            if (_parts[partId].status != PartStatus.None) revert PartLedgerPartAlreadyRegistered(partId);
            _parts[partId] = Part({
                status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: lotNumber_, vinTag: bytes15(0)
            });
        }
        emit PartsRegistered(lotNumber_, orgId, _msgSender(), gtin, serials);
    }

    /// @inheritdoc IPartLedger
    function shipParts(bytes32[] calldata partIds, uint32 to, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        uint16 toRoles = _registry.requireActiveOrganisation(to);
        if (toRoles & CUSTODY_ROLES == 0) revert PartLedgerRecipientCannotHoldParts(to);
        if (to == orgId) revert PartLedgerShipmentToSelf(to);
        bool toRecycler = toRoles & ROLE_RECYCLER != 0;
        _requireNonEmpty(partIds.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            _requireHeld(partId, held, _mask(PartStatus.InStock), orgId);
            if (!toRecycler) {
                Lot memory lot_ = _lots[held.lot];
                if (lot_.recalled && lot_.manufacturer != to) revert PartLedgerPartRecalled(partId, held.lot);
            }
            _parts[partId] = Part({
                status: PartStatus.InTransit, custodian: orgId, recipient: to, lot: held.lot, vinTag: bytes15(0)
            });
        }
        emit PartsShipped(orgId, to, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function receiveParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _requireNonEmpty(partIds.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory shipped = _parts[partId];
            if (shipped.status != PartStatus.InTransit) _revertWrongStatus(partId, shipped);
            if (shipped.recipient != orgId) revert PartLedgerNotRecipient(partId, shipped.recipient, orgId);
            _parts[partId] = Part({
                status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: shipped.lot, vinTag: bytes15(0)
            });
        }
        emit PartsReceived(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function cancelShipments(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.InTransit), PartStatus.InStock, false, false);
        emit ShipmentsCancelled(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function sellParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_DISTRIBUTOR | ROLE_WORKSHOP);
        _transition(partIds, orgId, _mask(PartStatus.InStock), PartStatus.Sold, true, true);
        emit PartsSold(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function installParts(bytes32[] calldata partIds, bytes32[] calldata vinHashes, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_WORKSHOP);
        _requireNonEmpty(partIds.length);
        if (vinHashes.length != partIds.length) revert PartLedgerLengthMismatch(partIds.length, vinHashes.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            _requireHeld(partId, held, _mask(PartStatus.InStock), orgId);
            if (held.lot == 0) revert PartLedgerLogisticUnit(partId);
            if (_lots[held.lot].recalled) revert PartLedgerPartRecalled(partId, held.lot);
            _parts[partId] = Part({
                status: PartStatus.Installed,
                custodian: orgId,
                recipient: 0,
                lot: held.lot,
                vinTag: bytes15(vinHashes[i])
            });
        }
        emit PartsInstalled(orgId, _msgSender(), docHash, partIds, vinHashes);
    }

    /// @inheritdoc IPartLedger
    function removeParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_WORKSHOP);
        _transition(partIds, orgId, _mask(PartStatus.Installed), PartStatus.InStock, false, true);
        emit PartsRemoved(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function quarantineParts(bytes32[] calldata partIds, bytes32 reasonHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.InStock), PartStatus.Quarantined, false, true);
        emit PartsQuarantined(orgId, _msgSender(), reasonHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function releaseParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.Quarantined), PartStatus.InStock, false, true);
        emit PartsReleased(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function scrapParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _transition(
            partIds, orgId, _mask(PartStatus.InStock) | _mask(PartStatus.Quarantined), PartStatus.Scrapped, false, true
        );
        emit PartsScrapped(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function recycleParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_RECYCLER);
        _transition(
            partIds, orgId, _mask(PartStatus.InStock) | _mask(PartStatus.Quarantined), PartStatus.Recycled, false, true
        );
        emit PartsRecycled(orgId, _msgSender(), docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function recallLot(uint64 lotNumber_, bytes32 noticeHash) external {
        (uint32 orgId, uint16 roles) = _registry.authorize(_msgSender(), ROLE_MANUFACTURER | ROLE_REGULATOR);
        Lot memory lot_ = _lots[lotNumber_];
        if (lot_.manufacturer == 0) revert PartLedgerUnknownLot(lotNumber_);
        if (roles & ROLE_REGULATOR == 0 && lot_.manufacturer != orgId) {
            revert PartLedgerNotLotManufacturer(lotNumber_, lot_.manufacturer, orgId);
        }
        if (lot_.recalled) revert PartLedgerLotRecalled(lotNumber_);
        _lots[lotNumber_].recalled = true;
        emit LotRecalled(lotNumber_, orgId, _msgSender(), noticeHash);
    }

    /// @inheritdoc IPartLedger
    function packParts(uint64 sscc, bytes32[] calldata partIds) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _requireValidSscc(sscc);
        bytes32 unitId = logisticUnitId(sscc);
        if (_parts[unitId].status == PartStatus.None) {
            _parts[unitId] =
                Part({status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: 0, vinTag: bytes15(0)});
            emit LogisticUnitCreated(sscc, unitId, orgId);
        }
        _contain(unitId, partIds, orgId);
        emit PartsPacked(unitId, orgId, _msgSender(), partIds);
    }

    /// @inheritdoc IPartLedger
    function unpackParts(uint64 sscc, bytes32[] calldata partIds) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), CUSTODY_ROLES);
        _requireValidSscc(sscc);
        bytes32 unitId = logisticUnitId(sscc);
        _release(unitId, partIds, orgId);
        emit PartsUnpacked(unitId, orgId, _msgSender(), partIds);
    }

    /// @inheritdoc IPartLedger
    function assembleParts(bytes32 parentId, bytes32[] calldata childIds) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_MANUFACTURER | ROLE_WORKSHOP);
        _requirePart(parentId);
        _contain(parentId, childIds, orgId);
        emit PartsAssembled(parentId, orgId, _msgSender(), childIds);
    }

    /// @inheritdoc IPartLedger
    function disassembleParts(bytes32 parentId, bytes32[] calldata childIds) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_MANUFACTURER | ROLE_WORKSHOP);
        _requirePart(parentId);
        _release(parentId, childIds, orgId);
        emit PartsDisassembled(parentId, orgId, _msgSender(), childIds);
    }

    /// @inheritdoc IPartLedger
    function remanufacturePart(bytes32 originalId, uint64 gtin, bytes32 lotCode, bytes32 serial) external {
        (uint32 orgId,) = _registry.authorize(_msgSender(), ROLE_MANUFACTURER);
        Part memory original = _parts[originalId];
        _requireHeld(originalId, original, _mask(PartStatus.InStock), orgId);
        if (original.lot == 0) revert PartLedgerLogisticUnit(originalId);
        uint32 contents = _containers[originalId].contents;
        if (contents != 0) revert PartLedgerContainerNotEmpty(originalId, contents);
        _requireValidGtin(gtin);
        if (serial == bytes32(0)) revert PartLedgerEmptySerial(0);
        uint64 lotNumber_ = _lotNumberFor(orgId, lotCode);
        bytes32 partId = keccak256(abi.encode(gtin, serial));
        if (_parts[partId].status != PartStatus.None) revert PartLedgerPartAlreadyRegistered(partId);
        _parts[originalId] = Part({
            status: PartStatus.Remanufactured, custodian: orgId, recipient: 0, lot: original.lot, vinTag: bytes15(0)
        });
        _parts[partId] =
            Part({status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: lotNumber_, vinTag: bytes15(0)});
        _origins[partId] = originalId;
        bytes32[] memory serials = new bytes32[](1);
        serials[0] = serial;
        emit PartsRegistered(lotNumber_, orgId, _msgSender(), gtin, serials);
        emit PartRemanufactured(originalId, partId, orgId, _msgSender());
    }

    /// @inheritdoc IPartLedger
    function part(bytes32 partId) external view returns (PartView memory) {
        Part memory stored = _parts[partId];
        (, Part memory outermost) = _outermost(partId, stored);
        return PartView({
            status: outermost.status,
            custodian: outermost.custodian,
            recipient: outermost.recipient,
            lot: stored.lot,
            vinTag: outermost.vinTag,
            recalled: _lots[stored.lot].recalled
        });
    }

    /// @inheritdoc IPartLedger
    function containerOf(bytes32 partId) external view returns (bytes32) {
        Part memory stored = _parts[partId];
        return stored.status == PartStatus.Contained ? _containerIds[_containerNumberIn(stored)] : bytes32(0);
    }

    /// @inheritdoc IPartLedger
    function contentsCount(bytes32 containerId) external view returns (uint32) {
        return _containers[containerId].contents;
    }

    /// @inheritdoc IPartLedger
    function remanufacturedFrom(bytes32 partId) external view returns (bytes32) {
        return _origins[partId];
    }

    /// @inheritdoc IPartLedger
    function logisticUnitId(uint64 sscc) public pure returns (bytes32) {
        return keccak256(abi.encode(uint64(0), bytes32(uint256(sscc))));
    }

    /// @inheritdoc IPartLedger
    function lot(uint64 lotNumber_) external view returns (uint32 manufacturer, bool recalled) {
        Lot memory lot_ = _lots[lotNumber_];
        return (lot_.manufacturer, lot_.recalled);
    }

    /// @inheritdoc IPartLedger
    function lotNumber(uint32 manufacturer, bytes32 lotCode) external view returns (uint64) {
        return _lotNumbers[manufacturer][lotCode];
    }

    /// @inheritdoc IPartLedger
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @dev Puts loose parts held by `orgId` into `containerId`, whose outermost container `orgId` must hold in stock.
    /// A part can only be put into a container inside itself if it is that container's outermost one (a loose part
    /// is outermost), so comparing with the outermost container is the whole cycle check.
    function _contain(bytes32 containerId, bytes32[] calldata partIds, uint32 orgId) private {
        _requireNonEmpty(partIds.length);
        (bytes32 outermostId, Part memory outermost) = _outermost(containerId, _parts[containerId]);
        _requireHeld(outermostId, outermost, _mask(PartStatus.InStock), orgId);
        Container memory container = _containers[containerId];
        if (container.number == 0) {
            container.number = ++_containerCount;
            _containerIds[container.number] = containerId;
        }
        bytes15 tag = bytes15(uint120(container.number));
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            if (partId == outermostId) revert PartLedgerContainmentCycle(partId, containerId);
            Part memory held = _parts[partId];
            _requireHeld(partId, held, _mask(PartStatus.InStock), orgId);
            _parts[partId] =
                Part({status: PartStatus.Contained, custodian: orgId, recipient: 0, lot: held.lot, vinTag: tag});
        }
        container.contents += uint32(partIds.length);
        _containers[containerId] = container;
    }

    /// @dev Takes parts directly inside `containerId` out, loose into the stock of `orgId`, which must hold the
    /// outermost container in stock.
    function _release(bytes32 containerId, bytes32[] calldata partIds, uint32 orgId) private {
        _requireNonEmpty(partIds.length);
        (bytes32 outermostId, Part memory outermost) = _outermost(containerId, _parts[containerId]);
        _requireHeld(outermostId, outermost, _mask(PartStatus.InStock), orgId);
        Container memory container = _containers[containerId];
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            if (held.status != PartStatus.Contained || _containerNumberIn(held) != container.number) {
                revert PartLedgerNotInContainer(partId, containerId);
            }
            _parts[partId] =
                Part({status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: held.lot, vinTag: bytes15(0)});
        }
        container.contents -= uint32(partIds.length);
        _containers[containerId] = container;
    }

    /// @dev The outermost container of a part (the part itself when it is loose) and its stored record. Containment
    /// has no cycles, so the walk ends; each level costs one storage read.
    function _outermost(bytes32 partId, Part memory stored) private view returns (bytes32, Part memory) {
        while (stored.status == PartStatus.Contained) {
            partId = _containerIds[_containerNumberIn(stored)];
            stored = _parts[partId];
        }
        return (partId, stored);
    }

    function _containerNumberIn(Part memory stored) private pure returns (uint64) {
        return uint64(uint120(stored.vinTag));
    }

    function _requirePart(bytes32 id) private view {
        Part memory stored = _parts[id];
        if (stored.status == PartStatus.None) revert PartLedgerUnknownPart(id);
        if (stored.lot == 0) revert PartLedgerLogisticUnit(id);
    }

    /// @dev Moves parts held by `orgId` from one of the statuses in `fromMask` to `to`, clearing any recipient and
    /// VIN tag (neither outlives the status that set it).
    function _transition(
        bytes32[] calldata partIds,
        uint32 orgId,
        uint256 fromMask,
        PartStatus to,
        bool blockedByRecall,
        bool partsOnly
    ) private {
        _requireNonEmpty(partIds.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            _requireHeld(partId, held, fromMask, orgId);
            if (partsOnly && held.lot == 0) revert PartLedgerLogisticUnit(partId);
            if (blockedByRecall && _lots[held.lot].recalled) revert PartLedgerPartRecalled(partId, held.lot);
            _parts[partId] = Part({status: to, custodian: orgId, recipient: 0, lot: held.lot, vinTag: bytes15(0)});
        }
    }

    function _lotNumberFor(uint32 manufacturer, bytes32 lotCode) private returns (uint64 lotNumber_) {
        if (lotCode == bytes32(0)) revert PartLedgerEmptyLotCode();
        lotNumber_ = _lotNumbers[manufacturer][lotCode];
        if (lotNumber_ == 0) {
            lotNumber_ = ++_lotCount;
            _lotNumbers[manufacturer][lotCode] = lotNumber_;
            _lots[lotNumber_] = Lot({manufacturer: manufacturer, recalled: false});
            emit LotOpened(lotNumber_, manufacturer, lotCode);
        } else if (_lots[lotNumber_].recalled) {
            revert PartLedgerLotRecalled(lotNumber_);
        }
    }

    function _requireHeld(bytes32 partId, Part memory held, uint256 fromMask, uint32 orgId) private view {
        if (_mask(held.status) & fromMask == 0) _revertWrongStatus(partId, held);
        if (held.custodian != orgId) revert PartLedgerNotCustodian(partId, held.custodian, orgId);
    }

    function _revertWrongStatus(bytes32 partId, Part memory held) private view {
        if (held.status == PartStatus.None) revert PartLedgerUnknownPart(partId);
        if (held.status == PartStatus.Contained) {
            revert PartLedgerPartContained(partId, _containerIds[_containerNumberIn(held)]);
        }
        revert PartLedgerWrongStatus(partId, held.status);
    }

    /// @dev SSCC (GS1 AI 00): 18 digits, the last a GS1 mod-10 check digit over the 17 before it.
    function _requireValidSscc(uint64 sscc) private pure {
        if (sscc == 0 || sscc >= 1e18 || !_checkDigitValid(sscc, 17)) revert PartLedgerInvalidSscc(sscc);
    }

    function _requireNonEmpty(uint256 count) private pure {
        if (count == 0) revert PartLedgerEmptyBatch();
    }

    /// @dev GTIN-14 check digit (GS1 General Specifications 7.9.1): weights 3,1,3,... from the digit left of the
    /// check digit; the check digit brings the sum to a multiple of ten.
    function _requireValidGtin(uint64 gtin) private pure {
        if (gtin == 0 || gtin >= _GTIN_LIMIT || !_checkDigitValid(gtin, 13)) revert PartLedgerInvalidGtin(gtin);
    }

    function _checkDigitValid(uint64 number, uint256 digits) private pure returns (bool) {
        uint256 rest = number / 10;
        uint256 sum = 0;
        for (uint256 position = 0; position < digits; ++position) {
            sum += (rest % 10) * (position % 2 == 0 ? 3 : 1);
            rest /= 10;
        }
        return (10 - (sum % 10)) % 10 == number % 10;
    }

    function _mask(PartStatus status) private pure returns (uint256) {
        return 1 << uint8(status);
    }
}
