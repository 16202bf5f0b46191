"""Stripe webhook events of the supporter flows: tips, memberships, refunds and disputes.

Each applier runs inside the webhook's transaction, after the event was
claimed (admin_api.webhooks), and moves money only through SQL functions:

* a one_time tip's ``payment_intent.succeeded`` and a monthly tip's
  ``invoice.paid`` credit only a pending tip intent POST /v1/tips recorded,
  for its amount (``oros_credit_tip``), at the creator's fee of this moment
  (oros/fees.py); ``invoice.paid`` of a membership books it and activates it
  (``oros_membership_paid``). Stripe sends ``invoice.payment_succeeded``
  beside ``invoice.paid`` (``oros dev``'s localstripe only the former): both
  apply once per invoice.
* ``customer.subscription.updated|deleted`` follow the subscription (a
  membership's cancel flag, paid period and end; a monthly tip's end);
  ``invoice.payment_failed`` is recorded (Stripe retries; its end ends it).
* a boost's ``payment_intent.succeeded`` credits only a pending boost intent
  POST /v1/campaigns/{id}/boosts recorded, for its amount, at the reward
  percent of this moment (``oros_credit_boost``, sql/postgres/0104); one
  paid after its campaign stopped being active is refunded at once (the
  webhook sends the refund after committing).
* ``charge.refunded`` and ``charge.dispute.*`` record what Stripe took back
  of a payment and bring the tip, funding, boost or membership invoice it
  paid to match (``oros_record_refund``, ``oros_record_dispute``,
  sql/postgres/0080, 0107); a membership whose paid period is taken back ends
  (0173) and its subscription is canceled after the commit, as a refused
  monthly tip's is (0170).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import stripe

from oros import fees, tiers
from oros.httperrors import ApiError
from oros.settings import Settings
from oros.stripe_gateway import async_stripe_client

from . import billing
from .stripe_payload import Ignored, cents, lower, object_id, text

log = logging.getLogger(__name__)

_TIP_CREATOR_SQL = """SELECT to_creator_id::text AS creator FROM tip_intents
                       WHERE stripe_payment_intent_id = %(pi)s OR stripe_subscription_id = %(sub)s"""
_NOW_MS_SQL = "SELECT floor(extract(epoch FROM now()) * 1000)::bigint AS ms"
_CREDIT_TIP_SQL = """SELECT * FROM oros_credit_tip(%(event)s, %(pi)s, %(sub)s, %(invoice)s, %(amount)s, %(currency)s,
                                                   %(fee_pct)s, %(hold_days)s)"""
_FAIL_TIP_SQL = "SELECT oros_fail_tip_intent(%(pi)s) AS n"
_CREDIT_BOOST_SQL = "SELECT * FROM oros_credit_boost(%(event)s, %(pi)s, %(amount)s, %(currency)s, %(reward_pct)s)"
_FAIL_BOOST_SQL = "SELECT oros_fail_boost_intent(%(pi)s) AS n"
_MEMBERSHIP_TYPE_SQL = "SELECT membership_type FROM memberships WHERE billing_provider_id = %(sub)s"
_MEMBERSHIP_PAID_SQL = """SELECT * FROM oros_membership_paid(%(event)s, %(sub)s, %(invoice)s, %(pi)s, %(amount)s,
                                                             %(currency)s, %(price)s, %(cap)s, %(period_end)s)"""
_MEMBERSHIP_SUB_SQL = "SELECT billing_provider_id FROM memberships WHERE id = %(id)s"
_MEMBERSHIP_FAILED_SQL = "SELECT oros_membership_payment_failed(%(sub)s) AS n"
_MEMBERSHIP_CHANGED_SQL = """SELECT oros_membership_changed(%(sub)s, %(status)s, %(cancel)s, %(period_end)s,
                                                        %(created)s) AS outcome"""
_MEMBERSHIP_ENDED_SQL = "SELECT oros_end_membership(%(sub)s) AS outcome"
_TIP_ENDED_SQL = "SELECT oros_end_tip_subscription(%(sub)s) AS n"
_REFUND_SQL = "SELECT * FROM oros_record_refund(%(pi)s, %(charge)s, %(refunded)s)"
_DISPUTE_SQL = """SELECT * FROM oros_record_dispute(%(id)s, %(pi)s, %(charge)s, %(amount)s, %(status)s,
                                                   %(withdrawn)s, %(reinstated)s)"""
_NOTE_REFUND_SQL = "SELECT oros_note_refund(%(pi)s, %(charge)s, %(refunded)s)"
_NOTE_DISPUTE_SQL = """SELECT oros_note_dispute(%(id)s, %(pi)s, %(charge)s, %(amount)s, %(status)s, %(withdrawn)s,
                                                %(reinstated)s)"""

# A subscription in one of these states is over (its membership or monthly tip ends).
ENDED = ("canceled", "unpaid", "incomplete_expired")


async def credit_tip(conn: psycopg.AsyncConnection, settings: Settings, event: dict, pi: str,
                     received: Decimal | None, currency: str | None) -> dict | None:
    """``payment_intent.succeeded`` of a one_time tip; None when the intent is not a tip's."""
    return await _credit_tip(conn, settings, event, pi=pi, sub=None, invoice=None, received=received,
                             currency=currency)


async def _credit_tip(conn, settings: Settings, event: dict, *, pi: str | None, sub: str | None,
                      invoice: str | None, received: Decimal | None, currency: str | None) -> dict | None:
    found = await (await conn.execute(_TIP_CREATOR_SQL, {"pi": pi if sub is None else None, "sub": sub})).fetchone()
    if found is None:
        return None
    row = await (await conn.execute(_CREDIT_TIP_SQL, {
        "event": event["id"], "pi": pi, "sub": sub, "invoice": invoice, "amount": received, "currency": currency,
        "fee_pct": await _tip_fee_pct(conn, settings, found["creator"]), "hold_days": settings.hold_days,
    })).fetchone()
    if row["outcome"] == "credited":
        return {"tip_id": str(row["tip_id"]), "creator_id": str(row["creator_id"]), "amount": row["amount"]}
    if row["outcome"] == "refused":
        # Money reached Stripe but not the books: it is given back (an issued refund, sent after the commit)
        # and a monthly tip stops, or each later invoice would be charged and refused again.
        log.error("tip payment refused: paid at Stripe, nothing credited; refunded, subscription canceled",
                  extra={"stripe_event": event["id"], "payment_intent": pi, "invoice": invoice,
                         "reason": row["reason"], "refund": row["refund_id"], "subscription": row["subscription_id"]})
        raise Ignored(row["reason"], refund_ids=(str(row["refund_id"]),) if row["refund_id"] else (),
                      cancel_subscription=row["subscription_id"])
    raise Ignored(row["reason"])


async def _tip_fee_pct(conn, settings: Settings, creator: str) -> Decimal:
    """The creator's tip fee now (the transaction's clock, which also stamps the tip)."""
    spans = await (await conn.execute(fees.SPANS_SQL, {"users": [creator]})).fetchall()
    now_ms = (await (await conn.execute(_NOW_MS_SQL)).fetchone())["ms"]
    return fees.FeeSchedule.from_rows(settings.tip_fee_pct, spans).pct(creator, now_ms)


async def cancel_subscription(settings: Settings, sub: str) -> None:
    """Cancel a subscription at Stripe now, after the transaction that decided it committed.

    A failure is logged, not raised: the event is applied already. A refused monthly tip's next invoice is
    refused (and canceled) again, and the supporter may cancel it (POST /v1/tips/monthly/{id}/cancel); a
    membership ended by a takeback refuses nothing more, so the ERROR is finance's cue to cancel it.
    """
    if settings.stripe_api_key is None:
        log.error("a subscription must be canceled but no Stripe is configured", extra={"subscription": sub})
        return
    client, http = async_stripe_client(settings)
    try:
        await client.v1.subscriptions.cancel_async(sub)
    except stripe.StripeError as exc:
        log.error("canceling a subscription at Stripe failed", extra={"subscription": sub, "error": str(exc)})
    finally:
        await http.close_async()


async def fail_tip(conn: psycopg.AsyncConnection, pi: str) -> int:
    return (await (await conn.execute(_FAIL_TIP_SQL, {"pi": pi})).fetchone())["n"]


async def credit_boost(conn: psycopg.AsyncConnection, settings: Settings, event: dict, pi: str,
                       received: Decimal | None, currency: str | None) -> dict | None:
    """``payment_intent.succeeded`` of a boost; None when the intent is not a boost's.

    Credited: the campaign's budget rose. ``refund_id``: the campaign could no longer take it, and the
    caller sends that refund once this transaction has committed.
    """
    row = await (await conn.execute(_CREDIT_BOOST_SQL, {
        "event": event["id"], "pi": pi, "amount": received, "currency": currency,
        "reward_pct": settings.boost_reward_pct,
    })).fetchone()
    if row["outcome"] == "no_intent":
        return None
    if row["outcome"] == "credited":
        return {"boost_id": str(row["boost_id"]), "campaign_id": str(row["campaign_id"]), "amount": row["amount"]}
    if row["outcome"] == "refund_due":
        log.warning("boost paid for a campaign that cannot take it: refunded at once",
                    extra={"stripe_event": event["id"], "payment_intent": pi, "reason": row["reason"]})
        return {"campaign_id": str(row["campaign_id"]), "amount": row["amount"], "refund_id": str(row["refund_id"]),
                "outcome": "refunded", "reason": row["reason"]}
    if row["outcome"] == "refused":
        log.error("boost payment refused: paid at Stripe, nothing credited",
                  extra={"stripe_event": event["id"], "payment_intent": pi, "reason": row["reason"]})
    raise Ignored(row["reason"])


async def fail_boost(conn: psycopg.AsyncConnection, pi: str) -> int:
    return (await (await conn.execute(_FAIL_BOOST_SQL, {"pi": pi})).fetchone())["n"]


async def record_refund(conn: psycopg.AsyncConnection, charge: dict) -> dict | None:
    """``charge.refunded`` of a payment of ours (tip, funding, membership): applied; None otherwise."""
    pi = object_id(charge.get("payment_intent"))
    refunded = cents(charge, "amount_refunded")
    if pi is None or refunded is None:
        return None
    row = await (await conn.execute(_REFUND_SQL, {"pi": pi, "charge": charge.get("id"), "refunded": refunded}
                                    )).fetchone()
    # Unmatched, it may be a checkout sale's refund (the caller's path), or a payment of ours not credited yet:
    # recorded either way, and applied when that payment is.
    return None if row["kind"] == "unmatched" else await _taken(conn, row)


async def _taken(conn: psycopg.AsyncConnection, row: dict) -> dict:
    taken = {"kind": row["kind"], "object_id": str(row["object_id"]), "outcome": row["outcome"],
             "taken_back": row["taken"]}
    if row["outcome"] == "membership_ended":
        # Its paid period was taken back (0173): Stripe must not bill it again (canceled after the commit).
        found = await (await conn.execute(_MEMBERSHIP_SUB_SQL, {"id": row["object_id"]})).fetchone()
        taken["cancel_subscription"] = found["billing_provider_id"]
    return taken


async def _invoice_paid(conn, redis, settings: Settings, event: dict) -> dict:
    invoice = event["data"]["object"]
    invoice_id = text(invoice, "id")
    sub = _subscription_of(invoice)
    if sub is None:
        raise Ignored("the invoice belongs to no subscription")
    received, currency = cents(invoice, "amount_paid"), lower(invoice.get("currency"))
    pi = _invoice_payment_intent(invoice) or await _paid_payment_intent(settings, invoice_id)
    tip = await _credit_tip(conn, settings, event, pi=pi, sub=sub, invoice=invoice_id, received=received,
                            currency=currency)
    if tip is not None:
        return tip
    membership = await (await conn.execute(_MEMBERSHIP_TYPE_SQL, {"sub": sub})).fetchone()
    if membership is None:
        raise Ignored(f"subscription {sub} is no tip or membership of ours")
    tier = tiers.TIERS[membership["membership_type"]]
    row = await (await conn.execute(_MEMBERSHIP_PAID_SQL, {
        "event": event["id"], "sub": sub, "invoice": invoice_id, "pi": pi, "amount": received,
        "currency": currency, "price": tier.monthly_price, "cap": tier.fee_pct_cap,
        "period_end": _invoice_period_end(invoice),
    })).fetchone()
    if row["outcome"] in ("activated", "renewed"):
        return {"membership_id": str(row["membership_id"]), "outcome": row["outcome"]}
    if row["outcome"] == "membership_ended":
        # A refund or dispute that came first ended it as it was booked (0178): Stripe must not bill it again.
        return {"membership_id": str(row["membership_id"]), "outcome": row["outcome"], "reason": row["reason"],
                "cancel_subscription": sub}
    if row["outcome"] == "refused":
        log.error("membership payment refused: paid at Stripe, nothing booked",
                  extra={"stripe_event": event["id"], "invoice": invoice_id, "reason": row["reason"]})
    raise Ignored(row["reason"])


async def _invoice_failed(conn, redis, settings: Settings, event: dict) -> dict:
    sub = _subscription_of(event["data"]["object"])
    if sub is None:
        raise Ignored("the invoice belongs to no subscription")
    return {"memberships_failed": (await (await conn.execute(_MEMBERSHIP_FAILED_SQL, {"sub": sub})).fetchone())["n"]}


async def _subscription_updated(conn, redis, settings: Settings, event: dict) -> dict:
    sub = event["data"]["object"]
    sub_id, status = text(sub, "id"), sub.get("status")
    created = _stamp(event.get("created"))
    if created is None:
        raise ApiError(400, "bad_payload", "the Stripe event has no creation time", "created")
    tips_ended = 0
    if status in ENDED:
        tips_ended = (await (await conn.execute(_TIP_ENDED_SQL, {"sub": sub_id})).fetchone())["n"]
    cancel = sub.get("cancel_at_period_end")
    membership = (await (await conn.execute(_MEMBERSHIP_CHANGED_SQL, {
        "sub": sub_id, "status": status, "cancel": cancel if isinstance(cancel, bool) else None,
        "period_end": billing.period_end(sub),
        # Stripe delivers out of order: an update older than the state applied last is stale (0174).
        "created": created,
    })).fetchone())["outcome"]
    return _subscription_outcome(sub_id, tips_ended, membership)


async def _subscription_deleted(conn, redis, settings: Settings, event: dict) -> dict:
    sub_id = text(event["data"]["object"], "id")
    tips_ended = (await (await conn.execute(_TIP_ENDED_SQL, {"sub": sub_id})).fetchone())["n"]
    membership = (await (await conn.execute(_MEMBERSHIP_ENDED_SQL, {"sub": sub_id})).fetchone())["outcome"]
    return _subscription_outcome(sub_id, tips_ended, membership)


def _subscription_outcome(sub_id: str, tips_ended: int, membership: str) -> dict:
    if not tips_ended and membership == "no_membership":
        raise Ignored(f"subscription {sub_id} is no tip or membership of ours")
    return {"monthly_tips_ended": tips_ended, "outcome": membership}


async def _dispute(conn, redis, settings: Settings, event: dict) -> dict:
    """Funds move when Stripe withdraws them (a dispute, not an inquiry) and when it reinstates them (won)."""
    params = _dispute_params(event)
    row = await (await conn.execute(_DISPUTE_SQL, params)).fetchone()
    if row["kind"] == "unmatched":
        raise Ignored(f"PaymentIntent {params['pi']} paid nothing of ours yet: the dispute is recorded for when it "
                      "does")
    return await _taken(conn, row)


def _dispute_params(event: dict) -> dict:
    dispute = event["data"]["object"]
    pi = object_id(dispute.get("payment_intent"))
    if pi is None:
        raise Ignored("the dispute names no PaymentIntent")
    status = text(dispute, "status")
    kind = event["type"]
    withdrawn = kind == "charge.dispute.funds_withdrawn" or (
        kind == "charge.dispute.created" and not status.startswith("warning_"))
    reinstated = kind == "charge.dispute.funds_reinstated" or (kind == "charge.dispute.closed" and status == "won")
    amount = cents(dispute, "amount")
    if amount is None:
        raise ApiError(400, "bad_payload", "the dispute has no amount", "amount")
    return {"id": text(dispute, "id"), "pi": pi, "charge": object_id(dispute.get("charge")), "amount": amount,
            "status": status, "withdrawn": withdrawn, "reinstated": reinstated}


async def note_takeback(conn: psycopg.AsyncConnection, event: dict) -> None:
    """Record Stripe's side of a refund or dispute the books could not take yet (clearing short), not applying it:
    kept while Stripe retries the event, and named by reconcile (stripe_takebacks_applied) until it is applied."""
    if event["type"] == "charge.refunded":
        charge = event["data"]["object"]
        pi, refunded = object_id(charge.get("payment_intent")), cents(charge, "amount_refunded")
        if pi is not None and refunded is not None:
            await conn.execute(_NOTE_REFUND_SQL, {"pi": pi, "charge": charge.get("id"), "refunded": refunded})
    elif event["type"] in DISPUTE_EVENTS:
        await conn.execute(_NOTE_DISPUTE_SQL, _dispute_params(event))


def _subscription_of(invoice: dict) -> str | None:
    """An invoice's subscription: under ``parent`` (Stripe's API since 2025), or on itself (older)."""
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    return object_id(details.get("subscription")) or object_id(invoice.get("subscription"))


def _invoice_payment_intent(invoice: dict) -> str | None:
    """The PaymentIntent that paid an invoice, when the payload carries it (older API, or expanded payments)."""
    if (found := object_id(invoice.get("payment_intent"))) is not None:
        return found
    for payment in ((invoice.get("payments") or {}).get("data") or []):
        if isinstance(payment, dict) and payment.get("status") == "paid":
            if (found := object_id((payment.get("payment") or {}).get("payment_intent"))) is not None:
                return found
    return None


async def _paid_payment_intent(settings: Settings, invoice_id: str) -> str | None:
    """Ask Stripe which PaymentIntent paid the invoice: refunds and disputes name only that."""
    if settings.stripe_api_key is None:
        log.warning("invoice paid without a PaymentIntent and no Stripe to ask", extra={"invoice": invoice_id})
        return None
    client, http = async_stripe_client(settings)
    try:
        payments = await client.v1.invoice_payments.list_async({"invoice": invoice_id, "status": "paid"})
    except stripe.StripeError:
        log.warning("stripe unavailable while reading an invoice's payment", extra={"invoice": invoice_id})
        # 503 rolls the claim back, so Stripe's retry applies the event later.
        raise ApiError(503, "unavailable", "the payment provider is unavailable; retry later") from None
    finally:
        await http.close_async()
    return _invoice_payment_intent({"payments": payments.to_dict()})


async def pays_an_invoice(settings: Settings, pi: str) -> bool:
    """Whether Stripe says the PaymentIntent pays an invoice (a subscription's: never a checkout sale).

    A refund of a membership invoice can come before its ``invoice.paid``, when nothing of ours names the
    PaymentIntent yet. Unknown (no Stripe, or Stripe failing) is False: the refund stays a sale's, as before.
    """
    if settings.stripe_api_key is None:
        return False
    client, http = async_stripe_client(settings)
    try:
        payments = await client.v1.invoice_payments.list_async(
            {"payment": {"type": "payment_intent", "payment_intent": pi}, "limit": 1})
    except stripe.StripeError as exc:
        log.warning("stripe could not say whether a refunded payment pays an invoice",
                    extra={"payment_intent": pi, "error": str(exc)})
        return False
    finally:
        await http.close_async()
    return bool(payments.data)


def _invoice_period_end(invoice: dict) -> datetime | None:
    lines = (invoice.get("lines") or {}).get("data") or []
    raw = ((lines[0].get("period") or {}).get("end") if lines and isinstance(lines[0], dict) else None) \
        or invoice.get("period_end")
    return _stamp(raw)


def _stamp(raw: object) -> datetime | None:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        return None
    return datetime.fromtimestamp(raw, tz=UTC)


DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed",
                  "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated")

APPLIERS = {
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    **{kind: _dispute for kind in DISPUTE_EVENTS},
}
