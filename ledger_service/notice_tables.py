"""The service's table of recall notices (migration 0007): the text a recall carries, in Chinese and English, as the
canonical bytes whose SHA-256 is the recall's notice_hash on chain (ledger_service.recall_notices).

One row per recall command that carried a notice, written in the command's transaction. The same notice sent twice
(two lots, or a command rejected and sent again) is two rows with the same hash and the same bytes: rows are never
updated, so a retry can never clash with the first. Public once a recall on chain names its hash.
"""

from __future__ import annotations

from sqlalchemy import LargeBinary
from sqlmodel import Field

from ledger_service.tables import BigId, ServiceTable


class RecallNoticeRecord(ServiceTable, table=True):
    __tablename__ = "recall_notices"

    command_id: str = Field(primary_key=True, max_length=36)  # the recall command that anchors it
    notice_hash: bytes = Field(sa_type=LargeBinary, index=True)  # SHA-256 of `canonical`
    canonical: bytes = Field(sa_type=LargeBinary)  # the notice's canonical JSON (RFC 8785), UTF-8
    org_id: int  # who sent the recall
    lot: int = Field(sa_type=BigId)
    created_at: float
