"""Clone detection: which scans of a label say that the label was copied. Pure rules, no I/O.

A copied label carries a genuine signature, so the signature alone cannot tell; the ledger's state and the history
of scans can:
- scanned_after_scrap: the part was scrapped or recycled, so a label still being scanned sits on another part;
- scanned_as_new_after_installation: the scanner says it is buying or receiving the part as new, while the ledger
  has it installed in a vehicle;
- vin_mismatch: the part is installed and the scanner's VIN is not the vehicle's;
- impossible_travel: two scans of the same label, in places farther apart than anyone could travel in the time
  between them (faster than MAX_SPEED_KMH once the coarseness of both locations is allowed for);
- unregistered_serial: a serial that no part of this GTIN has, which is what a counterfeiter inventing serials
  leaves behind (flagged to the GTIN's manufacturer).
Ordinary repeated scans (the owner checking the same part at home, again and again) raise nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from partledger.model import PartStatus

MAX_SPEED_KMH = 900.0  # an airliner's cruising speed: nobody carries a part faster
LOCATION_SLACK_KM = 30.0  # two coarse (0.1 degree) cells can hide this much of the true distance
TRAVEL_WINDOW_SECONDS = 24 * 3600.0  # scans further apart than this are not compared
EARTH_RADIUS_KM = 6371.0088

SCANNED_AFTER_SCRAP = "scanned_after_scrap"
SCANNED_AS_NEW_AFTER_INSTALLATION = "scanned_as_new_after_installation"
VIN_MISMATCH = "vin_mismatch"
IMPOSSIBLE_TRAVEL = "impossible_travel"
UNREGISTERED_SERIAL = "unregistered_serial"
FLAG_KINDS = (SCANNED_AFTER_SCRAP, SCANNED_AS_NEW_AFTER_INSTALLATION, VIN_MISMATCH, IMPOSSIBLE_TRAVEL, UNREGISTERED_SERIAL)
CONTEXTS = ("purchase", "vehicle")  # what the scanner says it is doing: buying/receiving the part as new, or checking a fitted one


@dataclass(frozen=True)
class ScanFacts:
    """The scan being judged."""

    at: float  # unix seconds
    lat: float | None = None
    lon: float | None = None
    context: str | None = None
    vin_match: bool | None = None  # None: no VIN given, or none to compare with


@dataclass(frozen=True)
class PriorScan:
    scan_id: bytes
    at: float
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Flag:
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


def coarse(value: float | None) -> float | None:
    """A coordinate rounded to 0.1 degree (about 11 km): all the precision a scan keeps."""
    return None if value is None else round(value, 1)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def impossible_travel(scan: ScanFacts, prior: PriorScan) -> dict[str, Any] | None:
    """The evidence when `prior` and `scan` are too far apart for the time between them, else None."""
    if None in (scan.lat, scan.lon, prior.lat, prior.lon):
        return None
    hours = abs(scan.at - prior.at) / 3600.0
    if hours * 3600.0 > TRAVEL_WINDOW_SECONDS:
        return None
    distance = distance_km(scan.lat, scan.lon, prior.lat, prior.lon)  # type: ignore[arg-type]
    reachable = LOCATION_SLACK_KM + MAX_SPEED_KMH * hours
    if distance <= reachable:
        return None
    return {
        "previous_scan": "0x" + prior.scan_id.hex(),
        "distance_km": round(distance),
        "minutes_between": round(hours * 60, 1),
        "previous_location": [prior.lat, prior.lon],
        "location": [scan.lat, scan.lon],
    }


def assess_scan(scan: ScanFacts, *, registered: bool, status: PartStatus | None, history: Iterable[PriorScan]) -> list[Flag]:
    """The flags a scan raises, given the part's state (None/unregistered when unknown) and earlier scans of it."""
    if not registered:
        return [Flag(UNREGISTERED_SERIAL)]
    flags = []
    if status in (PartStatus.SCRAPPED, PartStatus.RECYCLED):
        flags.append(Flag(SCANNED_AFTER_SCRAP, {"status": status.name.lower()}))
    if status is PartStatus.INSTALLED and scan.context == "purchase":
        flags.append(Flag(SCANNED_AS_NEW_AFTER_INSTALLATION))
    if status is PartStatus.INSTALLED and scan.vin_match is False:
        flags.append(Flag(VIN_MISMATCH))
    if scan.lat is not None and scan.lon is not None:
        for prior in sorted(history, key=lambda p: -p.at):
            evidence = impossible_travel(scan, prior)
            if evidence is not None:
                flags.append(Flag(IMPOSSIBLE_TRAVEL, evidence))
                break
    return flags
