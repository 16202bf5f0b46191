"""The ``refund_unspent`` job: a completed campaign's unspent boost money goes back to its boosters.

A business (or an admin) may give a completed campaign's unspent budget back
itself (``POST /v1/campaigns/{id}/refund-unspent``); the boosters' money must
go back whether it does or not. So this job gives it back for every completed
campaign whose boosters still hold money, once the campaign's last events
were paid and its payouts are final (``oros_unspent_settled``, 0182: no
payout still held, and a settlement read everything ingested up to
``OROS_UNSPENT_GRACE_S`` plus its re-read overlap past the completion):
``oros_give_back_unspent`` (sql/postgres/0182), the same refunds by the
same rule, the business's part with it, one campaign per transaction under
its row lock, which checks that gate again. A campaign the database refuses
is logged and counted (``failed``) and the others go on; the next run tries
it again. A campaign given back holds nothing, so a second run (or a business's
call at the same time) finds nothing to give. The card refunds are sent at
once; any that fail stay pending for the ``refunds`` job (oros/issued_refunds.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg

from oros import issued_refunds
from oros.connections import pg_connect
from oros.settings import Settings

from .run import OVERLAP

log = logging.getLogger(__name__)

BATCH_LIMIT = 100  # campaigns per run; the next run takes the rest
_DUE_SQL = "SELECT d::text AS id FROM oros_unspent_boosts_due(%(limit)s, %(grace)s) AS d"
_GIVE_SQL = "SELECT id::text AS id, status, amount FROM oros_give_back_unspent(%(campaign)s, NULL, %(grace)s)"


def grace(settings: Settings) -> timedelta:
    """How far past a completion a settlement's watermark must be: the ingest lag waited out, plus the
    overlap a run re-reads because an insert may become visible after the watermark passed it."""
    return timedelta(seconds=settings.unspent_grace_s) + OVERLAP


def refund_unspent(settings: Settings, *, limit: int = BATCH_LIMIT) -> dict[str, int]:
    """Give back the unspent budget of the campaigns due (at most ``limit``); send their card refunds."""
    result = {"campaigns": 0, "refunds": 0, "failed": 0}
    pending: list[str] = []
    after = grace(settings)
    with pg_connect(settings, autocommit=True) as conn:
        for campaign in [r["id"] for r in conn.execute(_DUE_SQL, {"limit": limit, "grace": after})]:
            try:
                with conn.transaction():
                    rows = conn.execute(_GIVE_SQL, {"campaign": campaign, "grace": after}).fetchall()
            except psycopg.DatabaseError as exc:
                if exc.sqlstate is None:  # the connection, not the campaign: nothing else can go either
                    raise
                log.exception("unspent budget not given back", extra={"campaign": campaign})
                result["failed"] += 1
                continue
            log.info("unspent budget given back", extra={"campaign": campaign, "refunds": len(rows),
                                                          "amount": str(sum(r["amount"] for r in rows))})
            result["campaigns"] += 1
            result["refunds"] += len(rows)
            pending += [r["id"] for r in rows if r["status"] == "pending"]
    if pending:
        result.update(issued_refunds.send(settings, pending))
    return result
