"""A small local stand-in for what localstripe lacks: Stripe Billing in today's API shape, and disputes.

localstripe (1.15) has subscriptions, but only on legacy plans (no
``items[][price_data]``, no ``latest_invoice.confirmation_secret``), no clock
to bill a second month, sends ``invoice.payment_succeeded`` but never
``invoice.paid`` nor ``customer.subscription.updated``, and has no disputes.
(``oros dev`` extends its own localstripe for the first invoice,
oros/localstripe_billing.py; the tests of everything after it need this.)
This double serves, in the API version the ``stripe`` package pins:

* ``POST /v1/customers``, ``GET|POST /v1/products`` (our own ids;
  ``resource_already_exists``), ``POST /v1/subscriptions`` (``price_data``,
  ``default_incomplete``, ``expand[]=latest_invoice.confirmation_secret``),
  ``POST /v1/subscriptions/{id}`` (``cancel_at_period_end``),
  ``DELETE /v1/subscriptions/{id}``, ``GET /v1/invoice_payments?invoice=`` (or ``payment[payment_intent]=``);
  ``POST /v1/refunds`` (of a PaymentIntent, never beyond what it paid, which
  the double reads from localstripe) and ``GET /v1/refunds?payment_intent=``
  (localstripe's refunds have no idempotency and no cap); a repeated
  ``Idempotency-Key`` replays the first answer;
* everything else is passed through to localstripe (PaymentIntents, cards).

What Stripe does on its own -- a customer paying, the next month's invoice,
a card failing, a refund or dispute filed in the dashboard -- is a method that
changes the double's state and returns the webhook Stripe would send, as
``(payload, headers)`` signed with the real scheme (``t=…,v1=HMAC-SHA256``),
for the test to post (and replay, reorder or race) itself.

It serves from its own thread and event loop, as ``stripe_double`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
import threading
import time

import aiohttp
import orjson
from aiohttp import web

MONTH_S = 30 * 86_400
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}{next(_ids)}"


def sign(payload: bytes, secret: str, stamp: int | None = None) -> dict:
    """Stripe's webhook signature header for ``payload``."""
    stamp = int(time.time()) if stamp is None else stamp
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={signature}", "Content-Type": "application/json"}


class BillingDouble:
    def __init__(self, localstripe_url: str, webhook_secret: str) -> None:
        self.upstream = localstripe_url
        self.secret = webhook_secret
        self.customers: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.refunds: list[dict] = []
        # What the next refund requests meet, one each, in order: "outage" (500 before anything is recorded),
        # "lost" (the refund is made, its answer lost: 500), "refused" (400, as for a disputed charge).
        self.refund_faults: list[str] = []
        self._idempotent: dict[str, bytes] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="billing-double", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> BillingDouble:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/customers", self._customer)
        app.router.add_get("/v1/products/{id}", self._get_product)
        app.router.add_post("/v1/products", self._create_product)
        app.router.add_post("/v1/subscriptions", self._create_subscription)
        app.router.add_post("/v1/subscriptions/{id}", self._update_subscription)
        app.router.add_delete("/v1/subscriptions/{id}", self._cancel_subscription)
        app.router.add_get("/v1/invoice_payments", self._invoice_payments)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/v1/refunds", self._list_refunds)
        app.router.add_route("*", "/{tail:.*}", self._pass_through)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    # -- the API -----------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> dict:
        self.requests.append((request.method, request.path))
        return dict(await request.post())

    def _replayed(self, request: web.Request) -> bytes | None:
        key = request.headers.get("Idempotency-Key")
        return self._idempotent.get(f"{request.path}:{key}") if key else None

    def _answer(self, request: web.Request, body: dict) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        raw = orjson.dumps(body)
        if key:
            self._idempotent[f"{request.path}:{key}"] = raw
        return web.Response(body=raw, content_type="application/json")

    async def _customer(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if (prior := self._replayed(request)) is not None:
            return web.Response(body=prior, content_type="application/json")
        customer = {"id": _id("cus"), "object": "customer", "metadata": _metadata(form)}
        self.customers[customer["id"]] = customer
        return self._answer(request, customer)

    async def _get_product(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        product = self.products.get(request.match_info["id"])
        if product is None:
            return _error(404, "resource_missing", f"No such product: '{request.match_info['id']}'")
        return web.json_response(product)

    async def _create_product(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form["id"] in self.products:
            return _error(400, "resource_already_exists", "Product already exists.")
        self.products[form["id"]] = {"id": form["id"], "object": "product", "name": form.get("name")}
        return web.json_response(self.products[form["id"]])

    async def _create_subscription(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if (prior := self._replayed(request)) is not None:
            return web.Response(body=prior, content_type="application/json")
        if form.get("customer") not in self.customers:
            return _error(400, "resource_missing", f"No such customer: '{form.get('customer')}'")
        if form.get("items[0][price_data][product]") not in self.products:
            return _error(400, "resource_missing", "No such product")
        now = int(time.time())
        sub = {
            "id": _id("sub"), "object": "subscription", "customer": form["customer"], "status": "incomplete",
            "cancel_at_period_end": False, "canceled_at": None, "ended_at": None, "metadata": _metadata(form),
            "items": {"object": "list", "data": [{
                "id": _id("si"), "object": "subscription_item", "current_period_start": now,
                "current_period_end": now + MONTH_S,
                "price": {"object": "price", "currency": form["items[0][price_data][currency]"],
                          "unit_amount": int(form["items[0][price_data][unit_amount]"]),
                          "product": form["items[0][price_data][product]"], "recurring": {"interval": "month"}},
            }]},
        }
        self.subscriptions[sub["id"]] = sub
        invoice = self._open_invoice(sub, now)
        sub["latest_invoice"] = invoice["id"]
        body = dict(sub)
        if "latest_invoice.confirmation_secret" in _expand(form):
            secret = f"{invoice['_payment_intent']}_secret_{secrets.token_hex(8)}"
            body["latest_invoice"] = {**invoice, "confirmation_secret": {"type": "payment_intent",
                                                                         "client_secret": secret}}
        return self._answer(request, _public(body))

    async def _update_subscription(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            return _error(404, "resource_missing", "No such subscription")
        if sub["status"] == "canceled":
            return _error(400, "invalid_request_error", "A canceled subscription can only update its metadata")
        if "cancel_at_period_end" in form:
            sub["cancel_at_period_end"] = form["cancel_at_period_end"] == "true"
        return web.json_response(_public(sub))

    async def _cancel_subscription(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            return _error(404, "resource_missing", "No such subscription")
        sub.update(status="canceled", canceled_at=int(time.time()), ended_at=int(time.time()))
        return web.json_response(_public(sub))

    async def _invoice_payments(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        pi = request.query.get("payment[payment_intent]")
        found = [i for i in self.invoices.values() if i["_payment_intent"] == pi] if pi else []
        invoice = found[0] if found else self.invoices.get(request.query.get("invoice", ""))
        data = [] if invoice is None or (invoice["status"] != "paid" and not pi) else [{
            "id": _id("inpay"), "object": "invoice_payment", "invoice": invoice["id"], "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": invoice["_payment_intent"]}}]
        return web.json_response({"object": "list", "url": "/v1/invoice_payments", "has_more": False, "data": data})

    async def _create_refund(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        fault = self.refund_faults.pop(0) if self.refund_faults else None
        if fault == "outage":
            return _error(500, "api_error", "An unknown error occurred", retry=False)
        if (prior := self._replayed(request)) is None:
            if fault == "refused":
                return _error(400, "charge_disputed", "This charge has been disputed and cannot be refunded.")
            paid = await self._paid(request, form.get("payment_intent", ""))
            if paid is None:
                return _error(404, "resource_missing", f"No such payment_intent: '{form.get('payment_intent')}'")
            amount = int(form["amount"])
            if self.refunded(form["payment_intent"]) + amount > paid:
                return _error(400, "charge_already_refunded", "Refund amount is greater than the unrefunded amount.")
            refund = {"id": _id("re"), "object": "refund", "payment_intent": form["payment_intent"],
                      "amount": amount, "currency": "usd", "status": "succeeded", "metadata": _metadata(form)}
            self.refunds.append(refund)
            prior = self._answer(request, refund).body
        if fault == "lost":
            return _error(500, "api_error", "An unknown error occurred", retry=False)
        return web.Response(body=prior, content_type="application/json")

    async def _list_refunds(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        pi = request.query.get("payment_intent")
        data = [r for r in reversed(self.refunds) if pi is None or r["payment_intent"] == pi]
        return web.json_response({"object": "list", "url": "/v1/refunds", "has_more": False, "data": data})

    async def _paid(self, request: web.Request, pi: str) -> int | None:
        """What a PaymentIntent asked for: an invoice's paid here, else as localstripe holds it (the test's
        webhooks say it was paid)."""
        for invoice in self.invoices.values():
            if invoice["_payment_intent"] == pi and invoice["status"] == "paid":
                return invoice["amount_paid"]
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.upstream}/v1/payment_intents/{pi}",
                headers={"Authorization": request.headers.get("Authorization", "")}) as upstream:
            return (await upstream.json())["amount"] if upstream.status == 200 else None

    def forget_idempotency_keys(self) -> None:
        """A day has passed: Stripe no longer knows the keys it was sent."""
        self._idempotent.clear()

    def refunded(self, pi: str) -> int:
        """Cents refunded of a PaymentIntent so far."""
        return sum(r["amount"] for r in self.refunds if r["payment_intent"] == pi)

    async def _pass_through(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "idempotency-key", "content-type", "stripe-version")}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, f"{self.upstream}{request.path_qs}", data=await request.read(),
                headers=headers) as upstream:
            return web.Response(body=await upstream.read(), status=upstream.status,
                                content_type=upstream.content_type)

    # -- what Stripe does on its own: each returns the event to post -----------------------------

    def _open_invoice(self, sub: dict, start: int) -> dict:
        item = sub["items"]["data"][0]
        cents = item["price"]["unit_amount"]
        invoice = {
            "id": _id("in"), "object": "invoice", "status": "open", "customer": sub["customer"],
            "currency": item["price"]["currency"], "amount_due": cents, "amount_paid": 0,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub["id"]}},
            "lines": {"object": "list", "data": [{"period": {"start": start, "end": start + MONTH_S},
                                                  "amount": cents}]},
            "_payment_intent": _id("pi"),
        }
        self.invoices[invoice["id"]] = invoice
        return invoice

    def pay(self, sub_id: str, *, amount_paid: int | None = None) -> dict:
        """The customer pays the open invoice (``amount_paid`` may be tampered): ``invoice.paid``."""
        sub = self.subscriptions[sub_id]
        invoice = next(i for i in self.invoices.values()
                       if i["parent"]["subscription_details"]["subscription"] == sub_id and i["status"] == "open")
        invoice.update(status="paid", amount_paid=invoice["amount_due"] if amount_paid is None else amount_paid)
        sub["status"] = "active"
        return _public(invoice)

    def renew(self, sub_id: str, *, amount_paid: int | None = None) -> dict:
        """A month later: the next invoice, paid by the saved card (``amount_paid`` as ``pay``'s)."""
        sub = self.subscriptions[sub_id]
        item = sub["items"]["data"][0]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] += MONTH_S
        self._open_invoice(sub, item["current_period_start"])
        return self.pay(sub_id, amount_paid=amount_paid)

    def payment_intent_of(self, invoice: dict) -> str:
        return self.invoices[invoice["id"]]["_payment_intent"]

    def end(self, sub_id: str) -> dict:
        """Stripe ends the subscription (the period after a cancel, or payment failed for good)."""
        sub = self.subscriptions[sub_id]
        sub.update(status="canceled", ended_at=int(time.time()))
        return _public(sub)

    def subscription(self, sub_id: str) -> dict:
        return _public(self.subscriptions[sub_id])

    def event(self, kind: str, obj: dict, *, event_id: str | None = None, created: int | None = None,
              secret: str | None = None) -> tuple[bytes, dict]:
        """The webhook Stripe sends: the event JSON and its signature header."""
        payload = orjson.dumps({
            "id": event_id or _id("evt"), "object": "event", "type": kind, "api_version": "2026-10-28.endive",
            "created": created or int(time.time()), "livemode": False, "data": {"object": obj},
        })
        return payload, sign(payload, secret or self.secret)


def charge(payment_intent: str, amount: int, refunded: int, *, charge_id: str | None = None) -> dict:
    """A charge as ``charge.refunded`` carries it: ``amount_refunded`` is the total so far."""
    return {"id": charge_id or f"ch_{payment_intent[3:]}", "object": "charge", "payment_intent": payment_intent,
            "amount": amount, "amount_refunded": refunded, "refunded": refunded >= amount, "currency": "usd"}


def dispute(payment_intent: str, amount: int, status: str, *, dispute_id: str) -> dict:
    return {"id": dispute_id, "object": "dispute", "payment_intent": payment_intent,
            "charge": f"ch_{payment_intent[3:]}", "amount": amount, "currency": "usd", "status": status,
            "reason": "fraudulent"}


def _public(obj: dict) -> dict:
    """Without the double's own bookkeeping fields (those starting with ``_``)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _metadata(form: dict) -> dict:
    return {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}


def _expand(form: dict) -> set[str]:
    return {v for k, v in form.items() if k.startswith("expand[")}


def _error(status: int, code: str, message: str, *, retry: bool | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "api_error"
    headers = {} if retry is None else {"Stripe-Should-Retry": str(retry).lower()}
    return web.json_response({"error": {"type": kind, "code": code, "message": message}}, status=status,
                             headers=headers)
