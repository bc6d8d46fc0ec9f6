// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IConsortiumRegistry} from "./interfaces/IConsortiumRegistry.sol";
import {ALL_ROLES} from "./Roles.sol";

/// @title ConsortiumRegistry
/// @notice Who is in the consortium, what each member may do, and which keys sign for it. Administered by the
/// consortium operator (OPERATOR_ROLE); the operator role itself is granted by DEFAULT_ADMIN_ROLE.
contract ConsortiumRegistry is IConsortiumRegistry, AccessControl {
    /// @notice Role of the consortium operator, who admits organisations and manages their keys.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    struct Organisation {
        uint16 roles;
        bool suspended;
    }

    // One slot per key for the checks made on every write; the site name lives apart, read only by views.
    struct KeyRecord {
        uint32 orgId;
        uint64 addedBlock;
        uint64 revokedBlock;
    }

    uint32 private _organisationCount;
    mapping(uint32 orgId => Organisation) private _organisations;
    mapping(address key => KeyRecord) private _keys;
    mapping(address key => bytes32) private _keySites;

    /// @param admin holder of DEFAULT_ADMIN_ROLE (grants and revokes the operator role)
    /// @param operator the first consortium operator
    constructor(address admin, address operator) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
    }

    /// @inheritdoc IConsortiumRegistry
    function registerOrganisation(uint16 roles, string calldata name)
        external
        onlyRole(OPERATOR_ROLE)
        returns (uint32 orgId)
    {
        _requireValidRoles(roles);
        orgId = ++_organisationCount;
        _organisations[orgId] = Organisation({roles: roles, suspended: false});
        emit OrganisationRegistered(orgId, roles, name);
    }

    /// @inheritdoc IConsortiumRegistry
    function setOrganisationRoles(uint32 orgId, uint16 roles) external onlyRole(OPERATOR_ROLE) {
        _requireKnownOrganisation(orgId);
        _requireValidRoles(roles);
        _organisations[orgId].roles = roles;
        emit OrganisationRolesChanged(orgId, roles);
    }

    /// @inheritdoc IConsortiumRegistry
    function suspendOrganisation(uint32 orgId) external onlyRole(OPERATOR_ROLE) {
        _requireKnownOrganisation(orgId);
        if (_organisations[orgId].suspended) revert ConsortiumRegistryOrganisationUnchanged(orgId);
        _organisations[orgId].suspended = true;
        emit OrganisationSuspended(orgId);
    }

    /// @inheritdoc IConsortiumRegistry
    function reinstateOrganisation(uint32 orgId) external onlyRole(OPERATOR_ROLE) {
        _requireKnownOrganisation(orgId);
        if (!_organisations[orgId].suspended) revert ConsortiumRegistryOrganisationUnchanged(orgId);
        _organisations[orgId].suspended = false;
        emit OrganisationReinstated(orgId);
    }

    /// @inheritdoc IConsortiumRegistry
    function addSiteKey(uint32 orgId, address key, bytes32 site) external onlyRole(OPERATOR_ROLE) {
        _requireKnownOrganisation(orgId);
        if (key == address(0)) revert ConsortiumRegistryZeroKey();
        uint32 holder = _keys[key].orgId;
        if (holder != 0) revert ConsortiumRegistryKeyAlreadyRegistered(key, holder);
        _keys[key] = KeyRecord({orgId: orgId, addedBlock: uint64(block.number), revokedBlock: 0});
        _keySites[key] = site;
        emit SiteKeyAdded(orgId, key, site);
    }

    /// @inheritdoc IConsortiumRegistry
    function revokeSiteKey(address key) external {
        KeyRecord memory record = _keys[key];
        if (record.orgId == 0) revert ConsortiumRegistryUnknownKey(key);
        if (record.revokedBlock != 0) revert ConsortiumRegistryKeyRevoked(key, record.revokedBlock);
        if (!hasRole(OPERATOR_ROLE, msg.sender)) {
            (uint32 callerOrg,) = authorize(msg.sender, 0);
            if (callerOrg != record.orgId) revert ConsortiumRegistryUnauthorizedRevocation(msg.sender, key);
        }
        _keys[key].revokedBlock = uint64(block.number);
        emit SiteKeyRevoked(record.orgId, key, msg.sender);
    }

    /// @inheritdoc IConsortiumRegistry
    function authorize(address key, uint16 anyOfRoles) public view returns (uint32 orgId, uint16 roles) {
        KeyRecord memory record = _keys[key];
        orgId = record.orgId;
        if (orgId == 0) revert ConsortiumRegistryUnknownKey(key);
        if (record.revokedBlock != 0) revert ConsortiumRegistryKeyRevoked(key, record.revokedBlock);
        Organisation memory org = _organisations[orgId];
        if (org.suspended) revert ConsortiumRegistryOrganisationSuspended(orgId);
        roles = org.roles;
        if (anyOfRoles != 0 && roles & anyOfRoles == 0) revert ConsortiumRegistryMissingRole(orgId, anyOfRoles);
    }

    /// @inheritdoc IConsortiumRegistry
    function requireActiveOrganisation(uint32 orgId) external view returns (uint16 roles) {
        Organisation memory org = _organisations[orgId];
        if (org.roles == 0) revert ConsortiumRegistryUnknownOrganisation(orgId);
        if (org.suspended) revert ConsortiumRegistryOrganisationSuspended(orgId);
        return org.roles;
    }

    /// @inheritdoc IConsortiumRegistry
    function organisation(uint32 orgId) external view returns (uint16 roles, bool suspended) {
        Organisation memory org = _organisations[orgId];
        return (org.roles, org.suspended);
    }

    /// @inheritdoc IConsortiumRegistry
    function organisationCount() external view returns (uint32) {
        return _organisationCount;
    }

    /// @inheritdoc IConsortiumRegistry
    function siteKey(address key) external view returns (SiteKeyInfo memory) {
        KeyRecord memory record = _keys[key];
        return SiteKeyInfo({
            orgId: record.orgId,
            site: _keySites[key],
            addedBlock: record.addedBlock,
            revokedBlock: record.revokedBlock
        });
    }

    // Every registered organisation holds at least one role, so roles == 0 marks an unknown id.
    function _requireKnownOrganisation(uint32 orgId) private view {
        if (_organisations[orgId].roles == 0) revert ConsortiumRegistryUnknownOrganisation(orgId);
    }

    function _requireValidRoles(uint16 roles) private pure {
        if (roles == 0 || roles & ~ALL_ROLES != 0) revert ConsortiumRegistryInvalidRoles(roles);
    }
}
