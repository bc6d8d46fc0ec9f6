"""Members' GS1 identities: which organisation and site an EPCIS party or location names, and back.

An organisation may have a party GLN (AI 417; urn:epc:id:pgln) and a GS1 company prefix; its sites, and the
organisation as a whole, may have location GLNs (AI 414 with an optional AI 254 extension; urn:epc:id:sgln). A member
without a GLN is still named: `urn:partledger:org:N`, and its sites `urn:partledger:site:N:<site>`. Capture maps
sourceList/destinationList parties, bizLocation and readPoint through here (an unknown one is a per-event error);
derived ledger events are written with the identities found here.

Identities are set by the organisation itself (PUT /v1/gs1/identity) or by the operator (`partledger org gs1`). A GLN
names one member only (409 gln_taken).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from indexer.tables import Organisation, SiteKey
from ledger_service.epcis.mapping import ORG_URN, SITE_URN, org_urn, site_urn
from ledger_service.epcis.tables import Gs1Location, Gs1Party, Gs1PartyGln
from ledger_service.errors import Conflict, Unprocessable
from partledger.epcis.identifiers import location_uri, parse_epc, party_uri
from partledger.db import write_transaction
from partledger.errors import ValidationError
from partledger.ids import gtin_check_digit

T_PARTY, T_PGLN, T_LOCATION = Gs1Party.__table__, Gs1PartyGln.__table__, Gs1Location.__table__
T_ORG, T_KEY = Organisation.__table__, SiteKey.__table__


class UnknownParty(Exception):
    """An EPCIS party or location that names no member (or a malformed one): a per-event error."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"{value!r} names no member of the consortium: {reason}")
        self.value = value
        self.code = "unknown_party"


@dataclass(frozen=True)
class Place:
    """Where an identifier points: an organisation, and one of its sites when the identifier names a site."""

    org_id: int
    site: str | None = None


@dataclass
class Directory:
    """A snapshot of every member's identities, for one capture job or one query."""

    parties: dict[str, int] = field(default_factory=dict)  # party GLN -> org
    prefixes: dict[int, str] = field(default_factory=dict)  # org -> company prefix
    party_glns: dict[int, str] = field(default_factory=dict)  # org -> party GLN
    locations: dict[tuple[str, str], Place] = field(default_factory=dict)  # (GLN, extension) -> place
    site_locations: dict[tuple[int, str | None], tuple[str, str]] = field(default_factory=dict)  # (org, site) -> (GLN, ext)
    orgs: set[int] = field(default_factory=set)
    sites: dict[int, set[str]] = field(default_factory=dict)

    def resolve(self, value: str) -> Place:
        """The member (and site) an EPCIS party or location identifier names; UnknownParty otherwise."""
        place = self.lookup(value)
        if place is None:
            raise UnknownParty(value, "a party is a GLN (urn:epc:id:pgln, urn:epc:id:sgln or a Digital Link /417/, /414/) or urn:partledger:org:N")
        return place

    def lookup(self, value: str) -> Place | None:
        """The member (and site) a GS1 party or location key, or a urn:partledger one, names (UnknownParty when it
        names none); None for an identifier of another kind (a geo: URI, a company's own URI): not a member's."""
        if value.startswith(ORG_URN):
            org = _int(value[len(ORG_URN) :])
            if org is None or org not in self.orgs:
                raise UnknownParty(value, "no such organisation")
            return Place(org)
        if value.startswith(SITE_URN):
            org_text, _, site = value[len(SITE_URN) :].partition(":")
            org = _int(org_text)
            if org is None or site not in self.sites.get(org, set()):
                raise UnknownParty(value, "no such site")
            return Place(org, site)
        try:
            epc = parse_epc(value)
        except ValidationError as exc:
            if value.startswith(("urn:epc:", "https://id.gs1.org/")):
                raise UnknownParty(value, str(exc)) from None
            return None
        if epc.kind == "pgln":
            org = self.parties.get(epc.gln or "")
            if org is None:
                raise UnknownParty(value, f"no member has the party GLN {epc.gln}")
            return Place(org)
        if epc.kind == "sgln":
            place = self.locations.get((epc.gln or "", epc.extension or ""))
            if place is None:
                raise UnknownParty(value, f"no member has the location GLN {epc.gln}" + (f" extension {epc.extension}" if epc.extension else ""))
            return place
        return None

    def party(self, org_id: int) -> str:
        """The identifier derived events give an organisation as a party (source or destination)."""
        gln = self.party_glns.get(org_id)
        return party_uri(gln) if gln else org_urn(org_id)

    def location(self, org_id: int, site: str | None) -> str:
        """The identifier derived events give a site of an organisation (bizLocation)."""
        found = self.site_locations.get((org_id, site)) or self.site_locations.get((org_id, None))
        if found is not None:
            return location_uri(found[0], found[1])
        return site_urn(org_id, site) if site else org_urn(org_id)


def load_directory(service_engine: Engine, index_engine: Engine) -> Directory:
    directory = Directory()
    with index_engine.connect() as conn:
        directory.orgs = {row.org_id for row in conn.execute(select(T_ORG.c.org_id))}
        for row in conn.execute(select(T_KEY.c.org_id, T_KEY.c.site)):
            directory.sites.setdefault(row.org_id, set()).add(row.site)
    with service_engine.connect() as conn:
        for row in conn.execute(select(T_PARTY)):
            if row.company_prefix:
                directory.prefixes[row.org_id] = row.company_prefix
        for row in conn.execute(select(T_PGLN).order_by(T_PGLN.c.org_id, T_PGLN.c.position)):
            directory.parties[row.gln] = row.org_id
            directory.party_glns.setdefault(row.org_id, row.gln)
        for row in conn.execute(select(T_LOCATION)):
            directory.locations[(row.gln, row.extension)] = Place(row.org_id, row.site)
            directory.site_locations.setdefault((row.org_id, row.site), (row.gln, row.extension))
    return directory


def identity_of(service_engine: Engine, org_id: int) -> dict[str, Any]:
    """An organisation's GS1 identity as the API shows it."""
    with service_engine.connect() as conn:
        party = conn.execute(select(T_PARTY).where(T_PARTY.c.org_id == org_id)).first()
        glns = [row.gln for row in conn.execute(select(T_PGLN.c.gln).where(T_PGLN.c.org_id == org_id).order_by(T_PGLN.c.position))]
        locations = conn.execute(select(T_LOCATION).where(T_LOCATION.c.org_id == org_id).order_by(T_LOCATION.c.gln, T_LOCATION.c.extension)).all()
    return {
        "organisation": org_id,
        "gln": glns[0] if glns else None,
        "party_glns": glns[1:],
        "company_prefix": party.company_prefix if party else None,
        "party": party_uri(glns[0]) if glns else org_urn(org_id),
        "locations": [{"gln": row.gln, "extension": row.extension or None, "site": row.site, "uri": location_uri(row.gln, row.extension)} for row in locations],
    }


def all_identities(service_engine: Engine) -> list[dict[str, Any]]:
    """Every member's GS1 identity that is set."""
    with service_engine.connect() as conn:
        orgs = sorted(
            {row.org_id for row in conn.execute(select(T_PARTY.c.org_id))} | {row.org_id for row in conn.execute(select(T_PGLN.c.org_id))}
            | {row.org_id for row in conn.execute(select(T_LOCATION.c.org_id))}
        )  # fmt: skip
    return [identity_of(service_engine, org) for org in orgs]


def set_identity(
    service_engine: Engine, index_engine: Engine | None, org_id: int, *, gln: str | None, company_prefix: str | None,
    locations: list[dict[str, Any]], party_glns: list[str] = (), sites: set[str] | None = None,  # type: ignore[assignment]
) -> dict[str, Any]:  # fmt: skip
    """Replaces an organisation's GS1 identity: its party GLN (and more party GLNs it answers to), company prefix and
    locations ({gln, extension?, site?}). A location's site must be one of the organisation's sites: `sites`, or
    those the mirror lists."""
    glns = ([gln] if gln is not None else []) + list(party_glns)
    if party_glns and gln is None:
        raise Unprocessable("name the organisation's main party GLN (gln) before more of them", code="invalid_gln")
    for value in glns:
        _check_gln(value)
    if len(set(glns)) != len(glns):
        raise Unprocessable("a party GLN is listed twice", code="duplicate_gln")
    if company_prefix is not None and not (company_prefix.isdigit() and 6 <= len(company_prefix) <= 12):
        raise Unprocessable("a GS1 company prefix is 6 to 12 digits", code="invalid_company_prefix")
    if sites is None:
        assert index_engine is not None
        with index_engine.connect() as conn:
            sites = {row.site for row in conn.execute(select(T_KEY.c.site).where(T_KEY.c.org_id == org_id))}
    rows = []
    for number, location in enumerate(locations, start=1):
        location_gln = str(location.get("gln", ""))
        extension = str(location.get("extension") or "")
        _check_gln(location_gln)
        if extension and not (len(extension) <= 20 and extension.isascii() and extension.isalnum()):
            raise Unprocessable(f"location {number}: a GLN extension is up to 20 letters or digits", code="invalid_gln")
        site = location.get("site")
        if site is not None and site not in sites:
            raise Unprocessable(f"location {number}: organisation {org_id} has no site {site!r}", code="unknown_site")
        rows.append({"gln": location_gln, "extension": extension, "org_id": org_id, "site": site})
    if len({(row["gln"], row["extension"]) for row in rows}) != len(rows):
        raise Unprocessable("a location is listed twice", code="duplicate_location")
    now = time.time()
    with write_transaction(service_engine) as conn:  # reads, then writes: the write lock first (SQLite)
        for value in glns:
            other = conn.execute(select(T_PGLN.c.org_id).where(T_PGLN.c.gln == value, T_PGLN.c.org_id != org_id)).first()
            if other is not None:
                raise Conflict(f"the GLN {value} is organisation {other.org_id}'s", code="gln_taken")
        for row in rows:
            other = conn.execute(select(T_LOCATION.c.org_id).where(T_LOCATION.c.gln == row["gln"], T_LOCATION.c.extension == row["extension"], T_LOCATION.c.org_id != org_id)).first()
            if other is not None:
                raise Conflict(f"the location GLN {row['gln']} is organisation {other.org_id}'s", code="gln_taken")
        conn.execute(delete(T_PARTY).where(T_PARTY.c.org_id == org_id))
        conn.execute(insert(T_PARTY).values(org_id=org_id, company_prefix=company_prefix, updated_at=now))
        conn.execute(delete(T_PGLN).where(T_PGLN.c.org_id == org_id))
        if glns:
            conn.execute(insert(T_PGLN), [{"gln": value, "org_id": org_id, "position": position} for position, value in enumerate(glns)])
        conn.execute(delete(T_LOCATION).where(T_LOCATION.c.org_id == org_id))
        if rows:
            conn.execute(insert(T_LOCATION), [row | {"updated_at": now} for row in rows])
    return identity_of(service_engine, org_id)


def demo_gln(org_id: int, site_index: int) -> str:
    """A GLN for the demo consortium (GS1 China's 690 range, company 69012345): the organisation's party GLN at
    site index 0, its sites' location GLNs from 1."""
    body = f"69012345{org_id:02d}{site_index:02d}"
    return body + str(gtin_check_digit(body))


def _check_gln(gln: str) -> None:
    if not (len(gln) == 13 and gln.isdigit()) or gtin_check_digit(gln[:12]) != int(gln[12]):
        raise Unprocessable(f"{gln!r} is not a GLN (13 digits with a valid check digit)", code="invalid_gln")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 10 else None


__all__ = ["Directory", "Place", "UnknownParty", "all_identities", "demo_gln", "identity_of", "load_directory", "set_identity"]
