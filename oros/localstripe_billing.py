"""What ``oros dev``'s localstripe adds to localstripe 1.15 so monthly tips and memberships work on one machine.

Development only: ``oros.localstripe_child`` installs it into the localstripe
it serves; nothing else imports it, and no production process runs it.

admin_api.billing asks Stripe for a subscription in today's API shape:
``items[0][price_data]`` (an amount, not a catalogue price),
``payment_behavior=default_incomplete`` (the first invoice waits for the
customer's card), ``payment_settings`` and
``expand[]=latest_invoice.confirmation_secret`` (what Stripe.js pays that
invoice with). localstripe knows none of these: its subscriptions take a
legacy plan, and creating one charges the customer's default payment method
at once, failing when the customer has none. So, in localstripe's own
objects (its store, its PaymentIntents, its signed webhooks):

* ``price_data`` becomes a plan with a fixed id per product, amount and
  interval, made on first use (Stripe makes a Price per ``price_data`` too);
* ``default_incomplete`` opens the first invoice with a PaymentIntent that
  has no payment method yet, instead of charging; paying that intent (update
  its payment method, confirm) pays the invoice through localstripe's own
  path, which sends ``invoice.payment_succeeded`` (never ``invoice.paid``:
  admin_api.billing_events takes either, once per invoice) and makes the
  subscription ``active``;
* every invoice carries ``confirmation_secret`` (its PaymentIntent's client
  secret), so the expansion answers as Stripe's does.

Still absent in dev (docs/stripe.md): a second month (localstripe has no
clock), ``customer.subscription.updated``, idempotency keys, disputes.
"""

from __future__ import annotations

import contextvars

from localstripe.errors import UserError
from localstripe.resources import Invoice, PaymentIntent, Plan, Subscription, store

# Set while a default_incomplete subscription is created: its first invoice then waits for a card.
_WAIT_FOR_CARD = contextvars.ContextVar("wait_for_card", default=False)


def install() -> None:
    """Teach localstripe's classes the subscription shape admin_api.billing sends (once per process)."""
    create, create_invoice = Subscription._api_create, Subscription._create_invoice

    def _api_create(**data):
        waits = data.get("payment_behavior") == "default_incomplete"
        if waits:  # localstripe's nearest: an unpaid first invoice leaves the subscription incomplete
            data["payment_behavior"] = "allow_incomplete"
        data.pop("payment_settings", None)  # the card saved for renewals: localstripe bills no second month
        if isinstance(data.get("items"), list):
            data["items"] = [_with_plan(item) for item in data["items"]]
        token = _WAIT_FOR_CARD.set(waits)
        try:
            return create(**data)
        finally:
            _WAIT_FOR_CARD.reset(token)

    def _create_invoice(self):
        return _open_first_invoice(self) if _WAIT_FOR_CARD.get() else create_invoice(self)

    Subscription._api_create = staticmethod(_api_create)
    Subscription._create_invoice = _create_invoice
    Invoice.confirmation_secret = property(_confirmation_secret)


def _with_plan(item: object) -> object:
    """A ``price_data`` item as localstripe's plan item (other items as they came)."""
    if not isinstance(item, dict) or not isinstance(item.get("price_data"), dict):
        return item
    price = item.pop("price_data")
    try:
        amount = int(price["unit_amount"])
        interval = price["recurring"]["interval"]
        plan_id = f"{price['product']}_{price['currency']}_{amount}_per_{interval}"
    except (KeyError, TypeError, ValueError):
        raise UserError(400, "price_data needs product, currency, unit_amount and recurring[interval]") from None
    if f"{Plan.object}:{plan_id}" not in store:
        Plan(id=plan_id, product=price["product"], amount=amount, currency=price["currency"], interval=interval)
    return {**item, "plan": plan_id}


def _open_first_invoice(sub: Subscription) -> None:
    """The first invoice, finalized and open, its PaymentIntent waiting for the customer's card."""
    invoice = Invoice(customer=sub.customer, subscription=sub.id, items=list(sub.items._list),
                      tax_percent=sub.tax_percent,
                      default_tax_rates=[tr.id for tr in (sub.default_tax_rates or [])],
                      date=sub.current_period_start)
    invoice._finalize()
    intent = PaymentIntent(amount=invoice.total, currency=invoice.currency, customer=sub.customer,
                           payment_method_types=["card"])
    invoice.payment_intent = intent.id
    intent.invoice = invoice.id


def _confirmation_secret(invoice: Invoice) -> dict | None:
    if invoice.payment_intent is None:
        return None
    intent = PaymentIntent._api_retrieve(invoice.payment_intent)
    return {"type": "payment_intent", "client_secret": intent.client_secret}
