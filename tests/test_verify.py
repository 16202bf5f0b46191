"""Each verification rule: as a pure function, then end to end through ClickHouse and Postgres."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oros import reasons
from oros.events import uuid7
from settler import verify as v
from settler.budget import allocate
from settler.run import settle_once

from factories import DAY_MS, now_ms

NOW = 1_800_000_000_000
RULES = v.Rules(click_dedupe_s=3600, attribution_days=30)
BIZ = "b0000000-0000-0000-0000-000000000000"
CREATOR = "c0000000-0000-0000-0000-000000000000"


def campaign(objective="click", **kw) -> v.Campaign:
    fields = {"id": "a0000000-0000-0000-0000-000000000000", "business_id": BIZ, "objective": objective,
              "payout": Decimal("1.00"), "remaining": Decimal("10.00"), "status": "active", "start_ms": None,
              "end_ms": None, "history": ((NOW - 100 * DAY_MS, "draft"), (NOW - 90 * DAY_MS, "active")),
              "accepted": frozenset({CREATOR})}
    fields.update(kw)
    return v.Campaign(**fields)


def event(event_type="click", ts_ms=NOW - 1000, **kw) -> v.Candidate:
    fields = {"event_id": str(uuid7(ts_ms)), "event_type": event_type, "ts_ms": ts_ms,
              "campaign_id": campaign().id, "creator_id": CREATOR, "link_id": "l", "ip": "1.2.3.4",
              "business_id": BIZ}
    if event_type != "click":
        fields.update(click_ts_ms=ts_ms - 60_000, click_campaign_id=campaign().id, click_id=str(uuid7()))
    fields.update(kw)
    return v.Candidate(**fields)


def reason(e: v.Candidate, c: v.Campaign | None = None) -> str | None:
    c = c or campaign(objective="click" if e.event_type == "click" else e.event_type)
    verdict = v.verify([e], {c.id: c}, RULES, NOW)
    return verdict.rejected[0][1] if verdict.rejected else None


@pytest.mark.parametrize("e, c, expected", [
    (event(), None, None),
    (event(is_bot=True), None, reasons.BOT),
    (event(source="head"), None, reasons.BOT),
    (event(prev_click_ms=NOW - 1000 - 3_599_000), None, reasons.DUPLICATE_CLICK),
    (event(prev_click_ms=NOW - 1000 - 3_600_000), None, None),  # exactly the window later: counts again
    (event(), campaign(start_ms=NOW), reasons.OUTSIDE_DATES),
    (event(), campaign(end_ms=NOW - 2000), reasons.OUTSIDE_DATES),
    (event(ts_ms=NOW + 10 * 60_000), None, reasons.OUTSIDE_DATES),  # from the future
    (event(creator_id="someone-else"), None, reasons.NOT_ACCEPTED),
    (event(), campaign(history=((NOW - 5000, "paused"),)), reasons.CAMPAIGN_NOT_ACTIVE),
    # Active when it happened, paused since: still billable.
    (event(), campaign(history=((NOW - 5000, "active"), (NOW - 500, "paused"))), None),
    (event(campaign_id=None), None, reasons.NO_SUCH_CLICK),
    (event("conversion"), None, None),
    (event("conversion", click_ts_ms=None, click_campaign_id=None), None, reasons.NO_SUCH_CLICK),
    (event("conversion", click_campaign_id="other"), None, reasons.NO_SUCH_CLICK),
    (event("sale", business_id="intruder"), None, reasons.WRONG_BUSINESS),
    (event("sale", click_ts_ms=NOW - 1000 - 31 * DAY_MS), None, reasons.OUTSIDE_ATTRIBUTION_WINDOW),
    (event("conversion"), campaign(objective="sale"), reasons.WRONG_TYPE),
    # The link was disabled (its campaign's hosts narrowed, 0032): from that moment on nothing through it pays.
    (event(), campaign(disabled_links={"l": NOW - 1000}), reasons.LINK_DISABLED),
    (event(), campaign(disabled_links={"l": NOW - 999}), None),
    (event("conversion"), campaign(objective="conversion", disabled_links={"l": NOW - 5000}), reasons.LINK_DISABLED),
])
def test_rule(e, c, expected):
    assert reason(e, c) == expected


def test_duplicate_order_first_wins_and_past_orders_count():
    c = campaign(objective="sale")
    first = event("sale", ts_ms=NOW - 2000, order_id="o1")
    second = event("sale", ts_ms=NOW - 1000, order_id="o1")
    verdict = v.verify([second, first], {c.id: c}, RULES, NOW)
    assert verdict.accepted == [first] and verdict.rejected == [(second, reasons.DUPLICATE_ORDER)]
    verdict = v.verify([first], {c.id: c}, RULES, NOW, paid_orders={(c.id, "o1")})
    assert verdict.rejected == [(first, reasons.DUPLICATE_ORDER)]


def test_budget_pays_earliest_and_never_goes_negative():
    events = [event(ts_ms=NOW - i) for i in range(5)]
    allocation = allocate(events, Decimal("3.50"), Decimal("1.00"))
    assert [e.ts_ms for e in allocation.paid] == [NOW - 4, NOW - 3, NOW - 2]
    assert allocation.remaining == Decimal("0.50") and allocation.exhausts(Decimal("1.00"))
    assert len(allocation.exhausted) == 2


def test_every_rule_end_to_end(world):
    t = now_ms() - 10 * 60_000
    clicks = world.campaign(objective="click")
    alice = world.creator(clicks)
    pending = world.creator(clicks, status="pending")
    sales = world.campaign(objective="sale", payout="5.00")
    bob = world.creator(sales)
    paused = world.campaign(status="paused")
    carol = world.creator(paused)
    dated = world.campaign(start_ms=t + 3_600_000)
    dave = world.creator(dated)

    sales_too = world.campaign(world.business_of(sales), objective="sale")
    sale_click = world.click(sales, bob, ts_ms=t)
    old_click = world.click(sales, bob, ts_ms=t - 40 * DAY_MS)
    events = [
        world.click(clicks, alice, ts_ms=t, ip="9.9.9.9"),                      # paid
        world.click(clicks, alice, ts_ms=t + 1000, ip="9.9.9.9"),               # duplicate_click
        world.click(clicks, alice, ts_ms=t + 2000, is_bot=True, source="head"),  # bot
        world.click(clicks, pending, ts_ms=t),                                   # not_accepted
        world.click(paused, carol, ts_ms=t),                                     # campaign_not_active
        world.click(dated, dave, ts_ms=t),                                       # outside_dates
        sale_click, old_click,                                                   # wrong_type x2
        world.conversion(sale_click, kind="sale", order_id="o-1"),               # paid
        world.conversion(sale_click, kind="sale", order_id="o-1", ts_ms=t + 5000),  # duplicate_order
        world.conversion(sale_click, kind="sale", order_id="o-2", business_id=world.user("business")),
        world.conversion(old_click, kind="sale", order_id="o-3", ts_ms=t),       # outside_attribution_window
        world.conversion(sale_click, kind="sale", order_id="o-4", campaign_id=sales_too),  # no_such_click
    ]
    world.put(events)
    report = settle_once(world.settings)
    assert report["events_paid"] == 2
    assert report["rejected_by_reason"] == {
        "bot": 1, "campaign_not_active": 1, "duplicate_click": 1, "duplicate_order": 1,
        "no_such_click": 1, "not_accepted": 1, "outside_attribution_window": 1, "outside_dates": 1,
        "wrong_business": 1, "wrong_type": 2,
    }
    reasons = world.pg.execute("SELECT rejection_reason, count(*) AS n FROM events WHERE status = 'rejected'"
                               " GROUP BY 1").fetchall()
    assert sum(r["n"] for r in reasons) == 11
    world.assert_books()


def test_duplicate_click_across_runs(world):
    campaign_id = world.campaign()
    creator = world.creator(campaign_id)
    t = now_ms() - 60_000
    world.put([world.click(campaign_id, creator, ts_ms=t, ip="8.8.8.8")])
    settle_once(world.settings)
    later = world.click(campaign_id, creator, ts_ms=t + 30_000, ip="8.8.8.8")
    world.put([later])
    assert settle_once(world.settings)["rejected_by_reason"] == {"duplicate_click": 1}


def test_events_through_a_disabled_link_are_not_paid(world):
    """A business narrowed its campaign's hosts: the creator's link outside them is disabled (0032), and
    whatever the trackers still send through it (a stale cache, an unpublished invalidation) is not paid."""
    clicks = world.campaign(objective="click")
    creator = world.creator(clicks)
    conversions = world.campaign(objective="conversion")
    seller = world.creator(conversions)
    before = now_ms() - 60_000
    early_click = world.click(conversions, seller, ts_ms=before)
    world.put([world.click(clicks, creator, ts_ms=before), early_click])
    for campaign in (clicks, conversions):
        world.pg.execute("UPDATE campaigns SET allowed_destination_hosts = ARRAY['shop.example'],"
                         " destination_url = 'https://shop.example/' WHERE id = %s", (campaign,))
    assert world.pg.execute("SELECT count(*) AS n FROM tracking_links WHERE disabled_at IS NOT NULL"
                            ).fetchone()["n"] == 2
    after = now_ms() + 1000
    late = [world.click(clicks, creator, ts_ms=after), world.conversion(early_click, ts_ms=after)]
    world.put(late)

    report = settle_once(world.settings)

    assert report["events_paid"] == 1  # the click before the change
    assert report["rejected_by_reason"] == {"link_disabled": 2, "wrong_type": 1}
    assert [world.decision(e)["rejection_reason"] for e in late] == ["link_disabled", "link_disabled"]
    world.assert_books()
