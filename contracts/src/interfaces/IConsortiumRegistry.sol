// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Consortium registry of PartLedger: organisations, their roles and their site signer keys.
/// @notice Every write anywhere in PartLedger is made by a site key; this registry says which organisation a key
/// speaks for and whether it may still speak. A key that is unknown, revoked, or whose organisation is suspended
/// can change nothing, in this contract or in the ledgers that ask it.
interface IConsortiumRegistry {
    /// @notice Facts about one site key, as recorded when it was added and revoked.
    /// @param orgId the organisation the key signs for (0 when the key was never added)
    /// @param site the site (plant, warehouse, workshop bay) the key belongs to, as a short identifier
    /// @param addedBlock the block in which the key was added
    /// @param revokedBlock the block in which it was revoked, 0 while it is valid
    struct SiteKeyInfo {
        uint32 orgId;
        bytes32 site;
        uint64 addedBlock;
        uint64 revokedBlock;
    }

    /// @notice A role mask with bits outside the defined roles, or no bit at all.
    error ConsortiumRegistryInvalidRoles(uint16 roles);
    /// @notice No organisation has this id.
    error ConsortiumRegistryUnknownOrganisation(uint32 orgId);
    /// @notice The organisation is suspended: none of its keys may act, and it may not receive custody.
    error ConsortiumRegistryOrganisationSuspended(uint32 orgId);
    /// @notice The organisation was already in the state the call asked for.
    error ConsortiumRegistryOrganisationUnchanged(uint32 orgId);
    /// @notice The zero address cannot be a site key.
    error ConsortiumRegistryZeroKey();
    /// @notice The key was already added once (to `orgId`); a key is never reused, even after revocation.
    error ConsortiumRegistryKeyAlreadyRegistered(address key, uint32 orgId);
    /// @notice The key was never added to any organisation.
    error ConsortiumRegistryUnknownKey(address key);
    /// @notice The key was revoked in block `revokedBlock` and can change nothing since.
    error ConsortiumRegistryKeyRevoked(address key, uint64 revokedBlock);
    /// @notice The key's organisation holds none of the roles in `neededRoles`.
    error ConsortiumRegistryMissingRole(uint32 orgId, uint16 neededRoles);
    /// @notice The caller may not revoke this key: only the operator or an active key of the same organisation may.
    error ConsortiumRegistryUnauthorizedRevocation(address caller, address key);

    /// @notice An organisation was admitted to the consortium.
    event OrganisationRegistered(uint32 indexed orgId, uint16 roles, string name);
    /// @notice An organisation's roles were replaced.
    event OrganisationRolesChanged(uint32 indexed orgId, uint16 roles);
    /// @notice An organisation was suspended: its keys can act nowhere until it is reinstated.
    event OrganisationSuspended(uint32 indexed orgId);
    /// @notice A suspended organisation was reinstated.
    event OrganisationReinstated(uint32 indexed orgId);
    /// @notice A site key was added to an organisation.
    event SiteKeyAdded(uint32 indexed orgId, address indexed key, bytes32 site);
    /// @notice A site key was revoked, by the operator or by its own organisation (`revokedBy`).
    event SiteKeyRevoked(uint32 indexed orgId, address indexed key, address revokedBy);

    /// @notice Admits an organisation with the given roles.
    /// @dev Requires the operator role. Emits {OrganisationRegistered}.
    /// @param roles the organisation's role mask (see Roles.sol); at least one defined role, no undefined bit
    /// @param name the organisation's registered name (public to the consortium)
    /// @return orgId the new organisation's id, counting up from 1
    function registerOrganisation(uint16 roles, string calldata name) external returns (uint32 orgId);

    /// @notice Replaces an organisation's roles.
    /// @dev Requires the operator role and a known organisation. Emits {OrganisationRolesChanged}.
    function setOrganisationRoles(uint32 orgId, uint16 roles) external;

    /// @notice Suspends an organisation: none of its keys can act and it cannot be shipped to.
    /// @dev Requires the operator role, a known organisation not already suspended. Emits {OrganisationSuspended}.
    function suspendOrganisation(uint32 orgId) external;

    /// @notice Lifts a suspension.
    /// @dev Requires the operator role and a suspended organisation. Emits {OrganisationReinstated}.
    function reinstateOrganisation(uint32 orgId) external;

    /// @notice Adds a site signer key to an organisation.
    /// @dev Requires the operator role, a known organisation and a key never added before. Emits {SiteKeyAdded}.
    /// @param site a short identifier of the site the key belongs to (a plant, a warehouse, a workshop)
    function addSiteKey(uint32 orgId, address key, bytes32 site) external;

    /// @notice Revokes a site key for good: from this block on it can change nothing anywhere.
    /// @dev The caller is the operator, or an active key of the same organisation (so that a site can cut off a
    /// compromised sibling key at once). The key must be known and not yet revoked. Emits {SiteKeyRevoked}.
    function revokeSiteKey(address key) external;

    /// @notice Checks that `key` may act now, for an organisation holding one of `anyOfRoles`.
    /// @dev Reverts with {ConsortiumRegistryUnknownKey}, {ConsortiumRegistryKeyRevoked},
    /// {ConsortiumRegistryOrganisationSuspended} or {ConsortiumRegistryMissingRole}. `anyOfRoles == 0` asks only
    /// that the key be active.
    /// @return orgId the organisation the key acts for
    /// @return roles that organisation's full role mask
    function authorize(address key, uint16 anyOfRoles) external view returns (uint32 orgId, uint16 roles);

    /// @notice Checks that an organisation exists and is not suspended.
    /// @return roles its role mask
    function requireActiveOrganisation(uint32 orgId) external view returns (uint16 roles);

    /// @notice An organisation's roles and suspension state; `roles == 0` for an unknown id.
    function organisation(uint32 orgId) external view returns (uint16 roles, bool suspended);

    /// @notice How many organisations have been registered (ids run from 1 to this number).
    function organisationCount() external view returns (uint32);

    /// @notice What the registry records of a site key; all zero for a key never added.
    function siteKey(address key) external view returns (SiteKeyInfo memory);
}
