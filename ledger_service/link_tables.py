"""The service's table of manufacturers' product links (migration 0006): per GTIN, the links its manufacturer keeps
(product page, instructions, safety information, ... as GS1 Web Vocabulary link types), which the Digital Link
resolver serves in its linksets and redirects to on ?linkType= (ledger_service.resolver_links).

Service-private and public at once: nothing here goes on chain, and everything here is shown to anyone who scans.
"""

from __future__ import annotations

from typing import Optional

from sqlmodel import Field

from ledger_service.tables import ServiceTable


class ProductLink(ServiceTable, table=True):
    """One link of a GTIN's set, in the order its manufacturer gave them (PUT replaces the whole set)."""

    __tablename__ = "product_links"

    gtin: str = Field(primary_key=True, max_length=14)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    link_type: str = Field(max_length=64)  # the GS1 Web Vocabulary term, without its namespace: pip, instructions, ...
    href: str = Field(max_length=2048)  # https only
    title: str = Field(max_length=200)
    lang: Optional[str] = Field(default=None, max_length=35)  # the target's language: ISO 639-1, optionally -region
    media_type: Optional[str] = Field(default=None, max_length=100)  # text/html, application/pdf, ...
    org_id: int  # the manufacturer that set it
    updated_at: float
