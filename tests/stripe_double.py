"""A small local stand-in for Stripe Connect transfers, which localstripe lacks.

It keeps Stripe's contract for what the payout job relies on: form-encoded
``POST /v1/transfers`` with an ``Idempotency-Key`` (a repeated key with the
same parameters replays the first response; with different ones it is a 400
``idempotency_error``), ``GET /v1/transfers?transfer_group=``, and Stripe's
error body for an unknown destination. Faults a test can switch on:
``fail_after_accept`` (record the transfer, then answer 500, as when the
response is lost) and ``hold()`` (record, then never answer until
``release()``, so a test can kill the payer in between).

It serves from its own thread and event loop so synchronous jobs can call it.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time

from aiohttp import web


class StripeDouble:
    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.transfers: list[dict] = []
        self.requests: list[dict] = []
        self.fail_after_accept = 0
        self.accepted = threading.Event()
        self._idempotent: dict[str, tuple[dict, dict]] = {}
        self._held: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stripe-double", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> StripeDouble:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def hold(self) -> None:
        """Record the next transfers but answer none until ``release()``."""
        self._held = asyncio.Event()

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._loop.call_soon_threadsafe(held.set)

    async def _serve(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/transfers", self._create)
        app.router.add_get("/v1/transfers", self._list)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _create(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer sk_"):
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        params = dict(await request.post())
        key = request.headers.get("Idempotency-Key")
        self.requests.append({"idempotency_key": key, **params})
        if key in self._idempotent:
            first_params, response = self._idempotent[key]
            if first_params != params:
                return _error(400, "idempotency_error",
                              "Keys for idempotent requests can only be used with the same parameters")
            return self._answer(response, {"Idempotent-Replayed": "true"})
        if params.get("destination") not in self.accounts:
            return _error(400, "invalid_request_error", f"No such destination: '{params.get('destination')}'",
                          "destination")
        transfer = {
            "id": "tr_" + secrets.token_hex(12),
            "object": "transfer",
            "amount": int(params["amount"]),
            "currency": params["currency"],
            "destination": params["destination"],
            "transfer_group": params.get("transfer_group"),
            "metadata": {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[")},
            "created": int(time.time()),
            "reversed": False,
        }
        self.transfers.append(transfer)
        if key:
            self._idempotent[key] = (params, transfer)
        self.accepted.set()
        if self._held is not None:
            await self._held.wait()
        return self._answer(transfer, {})

    def _answer(self, transfer: dict, headers: dict) -> web.Response:
        """The transfer, unless a fault says this answer is lost (the transfer stays made)."""
        if self.fail_after_accept:
            self.fail_after_accept -= 1
            return _error(500, "api_error", "An unknown error occurred")
        return web.json_response(transfer, headers=headers)

    async def _list(self, request: web.Request) -> web.Response:
        group = request.query.get("transfer_group")
        data = [t for t in self.transfers if group is None or t["transfer_group"] == group]
        return web.json_response({"object": "list", "url": "/v1/transfers", "has_more": False, "data": data})


def _error(status: int, kind: str, message: str, param: str | None = None) -> web.Response:
    error = {"type": kind, "message": message}
    if param:
        error["param"] = param
    return web.json_response({"error": error}, status=status)
