"""Send the refunds OROS issues (sql/postgres/0103) to Stripe: each once, whoever sends it.

The admin API sends the refunds a request or a webhook just issued; the
settler's ``refunds`` job sends whatever is still pending (a Stripe outage, a
crash). Per refund, in one transaction holding its row
(``oros_take_issued_refund``: a second sender skips it): look for a refund
Stripe already made for it (by its metadata: Stripe forgets idempotency keys
after a day, and a sender may have died after Stripe answered), else create
one against the PaymentIntent with idempotency key ``refund:<id>``; then
record the answer (``oros_finish_issued_refund``). Stripe refusing (a charge
disputed or already refunded) turns it ``manual`` for finance; anything that
leaves us unsure keeps it pending for the next sender. So a refund is never
made twice, and never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
import stripe

from .connections import pg_connect
from .settings import Settings
from .stripe_gateway import stripe_client, to_cents

log = logging.getLogger(__name__)

BATCH_LIMIT = 200
# Stripe said no: nothing was refunded, and asking again would not change that.
REFUSED = (stripe.InvalidRequestError, stripe.PermissionError, stripe.CardError)

_PENDING_SQL = "SELECT id::text AS id FROM oros_pending_issued_refunds(%(limit)s) AS p(id)"
_TAKE_SQL = "SELECT * FROM oros_take_issued_refund(%(id)s)"
_FINISH_SQL = "SELECT status FROM oros_finish_issued_refund(%(id)s, %(made)s, %(refused)s, %(error)s)"


def send(settings: Settings, ids: Iterable[str] | None = None, *, limit: int = BATCH_LIMIT) -> dict[str, int]:
    """Send these pending refunds (None: every pending one, oldest first, at most ``limit``)."""
    result = {"succeeded": 0, "manual": 0, "deferred": 0, "skipped": 0}
    with pg_connect(settings, autocommit=True) as conn:
        todo = list(ids) if ids is not None else [r["id"] for r in conn.execute(_PENDING_SQL, {"limit": limit})]
        if not todo:
            return result
        if settings.stripe_api_key is None:
            log.warning("refunds pending but no Stripe configured", extra={"refunds": len(todo)})
            return {**result, "deferred": len(todo)}
        client = stripe_client(settings)
        for refund_id in todo:
            result[_send_one(conn, client, str(refund_id))] += 1
    return result


def _send_one(conn: psycopg.Connection, client: stripe.StripeClient, refund_id: str) -> str:
    with conn.transaction():
        row = conn.execute(_TAKE_SQL, {"id": refund_id}).fetchone()
        if row["id"] is None:
            return "skipped"  # done already, or another sender holds it
        context = {"issued_refund": refund_id, "payment_intent": row["payment_intent_id"],
                   "amount": str(row["amount"])}
        try:
            made = _made(client, row) or _create(client, row)
        except REFUSED as exc:
            _finish(conn, refund_id, refused=True, error=_reason(exc))
            log.error("stripe refused a refund: finance returns it by hand", extra={**context, "error": _reason(exc)})
            return "manual"
        except stripe.StripeError as exc:
            _finish(conn, refund_id, error=_reason(exc))
            log.warning("refund deferred: unsure whether Stripe made it", extra={**context, "error": _reason(exc)})
            return "deferred"
        _finish(conn, refund_id, made=made.id)
        log.info("refund made", extra={**context, "stripe_refund": made.id})
        return "succeeded"


def _made(client: stripe.StripeClient, row: dict):
    """The refund an earlier sender already made for this row, if any."""
    found = client.v1.refunds.list({"payment_intent": row["payment_intent_id"], "limit": 100})
    return next((r for r in found.data if (r.to_dict().get("metadata") or {}).get("oros_refund_id") == str(row["id"])),
                None)


def _create(client: stripe.StripeClient, row: dict):
    return client.v1.refunds.create(
        {"payment_intent": row["payment_intent_id"], "amount": to_cents(row["amount"]),
         "metadata": {"oros_refund_id": str(row["id"]), "reason": row["reason"],
                      # Whose payment: a campaign's (a funding, a boost) or a refused tip's.
                      **({"oros_campaign_id": str(row["campaign_id"])} if row["campaign_id"] else {}),
                      **({"oros_tip_intent_id": str(row["tip_intent_id"])} if row.get("tip_intent_id") else {})}},
        {"idempotency_key": f"refund:{row['id']}"},
    )


def _finish(conn: psycopg.Connection, refund_id: str, *, made: str | None = None, refused: bool = False,
            error: str | None = None) -> None:
    conn.execute(_FINISH_SQL, {"id": refund_id, "made": made, "refused": refused, "error": error})


def _reason(exc: stripe.StripeError) -> str:
    return (exc.user_message or str(exc) or type(exc).__name__)[:500]
