// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Organisation roles in the PartLedger consortium, as bits of a uint16 mask.
// An organisation may hold several roles (a distributor that also runs a workshop).

uint16 constant ROLE_MANUFACTURER = 1 << 0;
uint16 constant ROLE_LOGISTICS = 1 << 1; // logistics provider or warehouse
uint16 constant ROLE_DISTRIBUTOR = 1 << 2; // distributor or retailer
uint16 constant ROLE_WORKSHOP = 1 << 3;
uint16 constant ROLE_RECYCLER = 1 << 4;
uint16 constant ROLE_AUDITOR = 1 << 5;
uint16 constant ROLE_REGULATOR = 1 << 6;

/// @dev Every role bit defined above.
uint16 constant ALL_ROLES = (1 << 7) - 1;

/// @dev Roles whose holders may take custody of parts (ship, receive, hold in stock, quarantine, scrap).
uint16 constant CUSTODY_ROLES = ROLE_MANUFACTURER | ROLE_LOGISTICS | ROLE_DISTRIBUTOR | ROLE_WORKSHOP | ROLE_RECYCLER;
