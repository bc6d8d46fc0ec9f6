"""Roles, part statuses and document types, mirroring contracts/src (Roles.sol, IPartLedger.sol)."""

from __future__ import annotations

import enum


class Role(enum.IntFlag):
    """Organisation roles, the bits of Roles.sol."""

    MANUFACTURER = 1 << 0
    LOGISTICS = 1 << 1
    DISTRIBUTOR = 1 << 2
    WORKSHOP = 1 << 3
    RECYCLER = 1 << 4
    AUDITOR = 1 << 5
    REGULATOR = 1 << 6


CUSTODY_ROLES = Role.MANUFACTURER | Role.LOGISTICS | Role.DISTRIBUTOR | Role.WORKSHOP | Role.RECYCLER


class PartStatus(enum.IntEnum):
    """IPartLedger.PartStatus."""

    NONE = 0
    IN_STOCK = 1
    IN_TRANSIT = 2
    SOLD = 3
    INSTALLED = 4
    QUARANTINED = 5
    SCRAPPED = 6
    RECYCLED = 7
    CONTAINED = 8  # stored on chain only: a contained part shows its outermost container's status
    REMANUFACTURED = 9


TERMINAL_STATUSES = frozenset({PartStatus.SCRAPPED, PartStatus.RECYCLED, PartStatus.REMANUFACTURED})


class DocType(enum.IntEnum):
    """Trade document types anchored in the EvidenceLedger."""

    PURCHASE_ORDER = 1
    INVOICE = 2
    DELIVERY_NOTE = 3
    PAYMENT_CONFIRMATION = 4
    QC_REPORT = 5
    RECALL_NOTICE = 6
