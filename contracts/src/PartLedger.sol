// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortiumRegistry} from "./interfaces/IConsortiumRegistry.sol";
import {IPartLedger} from "./interfaces/IPartLedger.sol";
import {
    CUSTODY_ROLES, ROLE_DISTRIBUTOR, ROLE_MANUFACTURER, ROLE_RECYCLER, ROLE_REGULATOR, ROLE_WORKSHOP
} from "./Roles.sol";

/// @title PartLedger
/// @notice The lifecycle of serialised auto parts: registration, two-step custody hand-over, sale, installation,
/// removal, quarantine, scrapping and recycling, with recall as an overlay on production lots.
/// @dev Each part is one storage slot, so a bulk operation costs one cold slot read and write per part.
contract PartLedger is IPartLedger {
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

    uint256 private constant _GTIN_LIMIT = 1e14;

    IConsortiumRegistry private immutable _registry;
    mapping(bytes32 partId => Part) private _parts;
    mapping(uint64 lotNumber => Lot) private _lots;
    mapping(uint32 manufacturer => mapping(bytes32 lotCode => uint64)) private _lotNumbers;
    uint64 private _lotCount;

    /// @param registry_ the consortium registry that says which keys may act for which organisation
    constructor(IConsortiumRegistry registry_) {
        _registry = registry_;
    }

    /// @inheritdoc IPartLedger
    function registerParts(uint64 gtin, bytes32 lotCode, bytes32[] calldata serials) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, ROLE_MANUFACTURER);
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
        emit PartsRegistered(lotNumber_, orgId, msg.sender, gtin, serials);
    }

    /// @inheritdoc IPartLedger
    function shipParts(bytes32[] calldata partIds, uint32 to, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
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
        emit PartsShipped(orgId, to, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function receiveParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
        _requireNonEmpty(partIds.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory shipped = _parts[partId];
            if (shipped.status != PartStatus.InTransit) _revertWrongStatus(partId, shipped.status);
            if (shipped.recipient != orgId) revert PartLedgerNotRecipient(partId, shipped.recipient, orgId);
            _parts[partId] = Part({
                status: PartStatus.InStock, custodian: orgId, recipient: 0, lot: shipped.lot, vinTag: bytes15(0)
            });
        }
        emit PartsReceived(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function cancelShipments(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.InTransit), PartStatus.InStock, false);
        emit ShipmentsCancelled(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function sellParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, ROLE_DISTRIBUTOR | ROLE_WORKSHOP);
        _transition(partIds, orgId, _mask(PartStatus.InStock), PartStatus.Sold, true);
        emit PartsSold(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function installParts(bytes32[] calldata partIds, bytes32[] calldata vinHashes, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, ROLE_WORKSHOP);
        _requireNonEmpty(partIds.length);
        if (vinHashes.length != partIds.length) revert PartLedgerLengthMismatch(partIds.length, vinHashes.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            _requireHeld(partId, held, _mask(PartStatus.InStock), orgId);
            if (_lots[held.lot].recalled) revert PartLedgerPartRecalled(partId, held.lot);
            _parts[partId] = Part({
                status: PartStatus.Installed,
                custodian: orgId,
                recipient: 0,
                lot: held.lot,
                vinTag: bytes15(vinHashes[i])
            });
        }
        emit PartsInstalled(orgId, msg.sender, docHash, partIds, vinHashes);
    }

    /// @inheritdoc IPartLedger
    function removeParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, ROLE_WORKSHOP);
        _transition(partIds, orgId, _mask(PartStatus.Installed), PartStatus.InStock, false);
        emit PartsRemoved(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function quarantineParts(bytes32[] calldata partIds, bytes32 reasonHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.InStock), PartStatus.Quarantined, false);
        emit PartsQuarantined(orgId, msg.sender, reasonHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function releaseParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
        _transition(partIds, orgId, _mask(PartStatus.Quarantined), PartStatus.InStock, false);
        emit PartsReleased(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function scrapParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, CUSTODY_ROLES);
        _transition(
            partIds, orgId, _mask(PartStatus.InStock) | _mask(PartStatus.Quarantined), PartStatus.Scrapped, false
        );
        emit PartsScrapped(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function recycleParts(bytes32[] calldata partIds, bytes32 docHash) external {
        (uint32 orgId,) = _registry.authorize(msg.sender, ROLE_RECYCLER);
        _transition(
            partIds, orgId, _mask(PartStatus.InStock) | _mask(PartStatus.Quarantined), PartStatus.Recycled, false
        );
        emit PartsRecycled(orgId, msg.sender, docHash, partIds);
    }

    /// @inheritdoc IPartLedger
    function recallLot(uint64 lotNumber_, bytes32 noticeHash) external {
        (uint32 orgId, uint16 roles) = _registry.authorize(msg.sender, ROLE_MANUFACTURER | ROLE_REGULATOR);
        Lot memory lot_ = _lots[lotNumber_];
        if (lot_.manufacturer == 0) revert PartLedgerUnknownLot(lotNumber_);
        if (roles & ROLE_REGULATOR == 0 && lot_.manufacturer != orgId) {
            revert PartLedgerNotLotManufacturer(lotNumber_, lot_.manufacturer, orgId);
        }
        if (lot_.recalled) revert PartLedgerLotRecalled(lotNumber_);
        _lots[lotNumber_].recalled = true;
        emit LotRecalled(lotNumber_, orgId, msg.sender, noticeHash);
    }

    /// @inheritdoc IPartLedger
    function part(bytes32 partId) external view returns (PartView memory) {
        Part memory stored = _parts[partId];
        return PartView({
            status: stored.status,
            custodian: stored.custodian,
            recipient: stored.recipient,
            lot: stored.lot,
            vinTag: stored.vinTag,
            recalled: _lots[stored.lot].recalled
        });
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

    /// @dev Moves parts held by `orgId` from one of the statuses in `fromMask` to `to`, clearing any recipient and
    /// VIN tag (neither outlives the status that set it).
    function _transition(
        bytes32[] calldata partIds,
        uint32 orgId,
        uint256 fromMask,
        PartStatus to,
        bool blockedByRecall
    ) private {
        _requireNonEmpty(partIds.length);
        for (uint256 i = 0; i < partIds.length; ++i) {
            bytes32 partId = partIds[i];
            Part memory held = _parts[partId];
            _requireHeld(partId, held, fromMask, orgId);
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

    function _requireHeld(bytes32 partId, Part memory held, uint256 fromMask, uint32 orgId) private pure {
        if (_mask(held.status) & fromMask == 0) _revertWrongStatus(partId, held.status);
        if (held.custodian != orgId) revert PartLedgerNotCustodian(partId, held.custodian, orgId);
    }

    function _revertWrongStatus(bytes32 partId, PartStatus status) private pure {
        if (status == PartStatus.None) revert PartLedgerUnknownPart(partId);
        revert PartLedgerWrongStatus(partId, status);
    }

    function _requireNonEmpty(uint256 count) private pure {
        if (count == 0) revert PartLedgerEmptyBatch();
    }

    /// @dev GTIN-14 check digit (GS1 General Specifications 7.9.1): weights 3,1,3,... from the digit left of the
    /// check digit; the check digit brings the sum to a multiple of ten.
    function _requireValidGtin(uint64 gtin) private pure {
        if (gtin == 0 || gtin >= _GTIN_LIMIT) revert PartLedgerInvalidGtin(gtin);
        uint256 rest = gtin / 10;
        uint256 sum = 0;
        for (uint256 position = 0; position < 13; ++position) {
            sum += (rest % 10) * (position % 2 == 0 ? 3 : 1);
            rest /= 10;
        }
        if ((10 - (sum % 10)) % 10 != gtin % 10) revert PartLedgerInvalidGtin(gtin);
    }

    function _mask(PartStatus status) private pure returns (uint256) {
        return 1 << uint8(status);
    }
}
