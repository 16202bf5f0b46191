"""Pay requested withdrawals with Stripe Connect transfers (``oros payouts --once``).

The amount was reserved when the creator asked (``oros_request_withdrawal``).
Per withdrawal: mark it ``processing`` (committed), send one Stripe transfer
whose idempotency key is the withdrawal id, then record the outcome with
``oros_finish_withdrawal`` (paid settles the legs; failed fails them, which
returns the money). A crash anywhere in between leaves the withdrawal
``processing``; the next run looks for a transfer already made for it and
otherwise resends with the same key, which Stripe answers with the first
transfer. So a withdrawal is never paid twice, and never silently lost.

Outcomes: Stripe refusing the request (no such account, account cannot
receive transfers) fails the withdrawal with Stripe's message. Anything that
leaves us unsure whether money moved (network errors, 5xx, rate limits, an
idempotency conflict) defers it to the next run and changes nothing.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import orjson
import psycopg
import stripe

from oros.connections import pg_connect
from oros.locks import PAYOUTS_LOCK
from oros.money import fmt
from oros.settings import Settings
from oros.stripe_gateway import CURRENCY, stripe_client, to_cents

log = logging.getLogger(__name__)

BATCH_LIMIT = 500
NO_ACCOUNT = "creator has no connected Stripe account"

# Stripe said no: nothing was transferred, so the reservation can be returned.
REFUSED = (stripe.InvalidRequestError, stripe.PermissionError, stripe.CardError)

_OPEN_SQL = """
SELECT w.id::text AS id, w.amount, w.method, w.status, wa.user_id::text AS user_id, cp.stripe_account_id
  FROM withdrawals w
  JOIN wallets wa ON wa.id = w.wallet_id
  LEFT JOIN creator_profiles cp ON cp.user_id = wa.user_id
 WHERE w.status IN ('requested', 'processing')
 ORDER BY w.created_at, w.id
 LIMIT %(limit)s
"""

_MARK_SQL = "UPDATE withdrawals SET status = 'processing' WHERE id = %(id)s AND status = 'requested'"
_FINISH_SQL = "SELECT oros_finish_withdrawal(%(id)s, %(ok)s, %(transfer)s, %(reason)s)"


def pay_withdrawals(settings: Settings, *, limit: int = BATCH_LIMIT) -> dict:
    """Pay the open withdrawals (oldest first, at most ``limit``); returns counts and the amount paid."""
    client = stripe_client(settings)
    result = {"paid": 0, "failed": 0, "deferred": 0, "amount_paid": Decimal("0.00")}
    with pg_connect(settings, autocommit=True) as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (PAYOUTS_LOCK,)).fetchone()["ok"]:
            log.info("another payout run is in progress")
            return {**result, "amount_paid": "0.00", "skipped": True}
        try:
            for withdrawal in conn.execute(_OPEN_SQL, {"limit": limit}).fetchall():
                outcome = _pay_one(conn, client, withdrawal)
                result[outcome] += 1
                if outcome == "paid":
                    result["amount_paid"] += withdrawal["amount"]
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (PAYOUTS_LOCK,))
    return {**result, "amount_paid": fmt(result["amount_paid"])}


def _pay_one(conn: psycopg.Connection, client: stripe.StripeClient, withdrawal: dict) -> str:
    wid = withdrawal["id"]
    retry = withdrawal["status"] == "processing"
    # Committed before Stripe is called: from here on only the outcome may close it.
    conn.execute(_MARK_SQL, {"id": wid})
    if not withdrawal["stripe_account_id"]:
        _finish(conn, wid, ok=False, transfer=None, reason=NO_ACCOUNT)
        return "failed"
    try:
        transfer = (_transfer_made(client, wid) if retry else None) or _send(client, withdrawal)
    except REFUSED as exc:
        _finish(conn, wid, ok=False, transfer=None, reason=_reason(exc))
        return "failed"
    except stripe.StripeError as exc:
        log.warning("payout deferred: unsure whether Stripe made the transfer",
                    extra={"withdrawal_id": wid, "error": _reason(exc), "retry": retry})
        return "deferred"
    _finish(conn, wid, ok=True, transfer=transfer.id, reason=None)
    log.info("withdrawal paid", extra={"withdrawal_id": wid, "stripe_transfer_id": transfer.id,
                                       "amount": fmt(withdrawal["amount"])})
    return "paid"


def _transfer_made(client: stripe.StripeClient, withdrawal_id: str):
    """A transfer an earlier, interrupted run made (Stripe forgets idempotency keys after 24 hours)."""
    found = client.v1.transfers.list({"transfer_group": withdrawal_id, "limit": 1})
    return found.data[0] if found.data else None


def _send(client: stripe.StripeClient, withdrawal: dict):
    return client.v1.transfers.create(
        {
            "amount": to_cents(withdrawal["amount"]),
            "currency": CURRENCY,
            "destination": withdrawal["stripe_account_id"],
            "transfer_group": withdrawal["id"],
            "metadata": {"oros_withdrawal_id": withdrawal["id"], "method": withdrawal["method"]},
        },
        {"idempotency_key": withdrawal["id"]},
    )


def _finish(conn: psycopg.Connection, wid: str, *, ok: bool, transfer: str | None, reason: str | None) -> None:
    conn.execute(_FINISH_SQL, {"id": wid, "ok": ok, "transfer": transfer, "reason": reason})
    if not ok:
        log.warning("withdrawal failed; money returned", extra={"withdrawal_id": wid, "reason": reason})


def _reason(exc: stripe.StripeError) -> str:
    return (exc.user_message or str(exc) or type(exc).__name__)[:500]


def run_payouts_command(settings: Settings) -> int:
    """``oros payouts --once``: prints the result; exit 1 when a withdrawal had to be deferred."""
    result = pay_withdrawals(settings)
    print(orjson.dumps(result).decode())
    return 1 if result["deferred"] else 0
