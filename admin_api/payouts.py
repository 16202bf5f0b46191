"""``POST /v1/admin/payouts``: run the payout job once, now (finance's "pay due withdrawals now").

The job is the settler's (``settler.payouts.pay_withdrawals``: Stripe Connect
transfers, each withdrawal paid at most once under its advisory lock), handed
to the app by the entrypoint like the settlement trigger; so only an API that
runs the settler's jobs (embedded ``oros dev``) takes it, otherwise 503 naming
the command. A run already in progress (the schedule's, or another admin's)
is 409: nothing is paid twice, and the caller learns it did not run.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from oros.httperrors import ApiError, conflict
from oros.settings import STRIPE_API_KEY
from oros.wire import Money

from .admin import owner_job
from .payload import respond
from .routing import Routes
from .typedefs import SETTINGS

routes = Routes()
Count = Annotated[int, Field(ge=0)]


class PayoutRun(BaseModel):
    """What this run did"""

    paid: Count
    failed: Count
    deferred: Count
    amount_paid: Money


@routes.post("/v1/admin/payouts", "Pay the requested withdrawals now (the payout job, once): Stripe transfers, "
             "each withdrawal at most once", responses={200: PayoutRun})
async def pay_now(request: web.Request) -> web.Response:
    jobs = await owner_job(request, "oros payouts --once")
    settings = request.app[SETTINGS]
    if settings.stripe_api_key is None:
        raise ApiError(503, "stripe_not_configured", f"payouts need Stripe: {STRIPE_API_KEY} is not set on this server")
    result = await asyncio.to_thread(jobs.pay_withdrawals, settings)
    if result.get("skipped"):
        raise conflict("payouts_running", "a payout run is already in progress; its results show in the list shortly")
    return respond(result)

