"""Fixtures of the supporter tests: the billing double, the admin API as ``oros_api``, and ``Flows``."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from admin_api.app import create_app

from billing_double import BillingDouble
from supporter_flows import Flows

WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(16)


@pytest.fixture
def billing(localstripe_url):
    double = BillingDouble(localstripe_url, WEBHOOK_SECRET).start()
    yield double
    double.stop()


@pytest.fixture
def stripe_settings(api_settings, billing):
    return replace(api_settings, stripe_api_base=billing.url, stripe_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
async def flows(aiohttp_client, pg, settings, stripe_settings, billing) -> Flows:
    api = await aiohttp_client(create_app(stripe_settings))
    return Flows(api=api, pg=pg, settings=settings, stripe_settings=stripe_settings, billing=billing)
