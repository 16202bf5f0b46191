"""The settler's ledger functions (sql/postgres/0041) are the last line: called as the owner, they refuse
what the settler would never ask -- a fee moved without its payout, more back than a sale still pays, a
fee above its payout, a transfer without events -- and leave nothing behind."""

from __future__ import annotations

import psycopg
import pytest

from settler.run import settle_once

from factories import D, now_ms

REFUSED = (psycopg.errors.CheckViolation, psycopg.errors.InvalidParameterValue)


@pytest.fixture
def sale(world):
    campaign = world.campaign(objective="sale", payout="10.00", fund="100.00")
    creator = world.creator(campaign)
    click = world.click(campaign, creator, ts_ms=now_ms() - 60_000)
    event = world.conversion(click, kind="sale", order_id="L-1", value="80.00")
    world.put([click, event])
    assert settle_once(world.settings)["events_paid"] == 1
    return {"campaign": campaign, "creator": creator[0], "sale": event.event_id}


def books(pg) -> dict:
    return pg.execute(
        "SELECT (SELECT count(*) FROM ledger_entries) AS entries, (SELECT sum(available_balance) FROM wallets) AS a,"
        " (SELECT sum(pending_balance) FROM wallets) AS p, (SELECT sum(remaining_budget) FROM campaigns) AS budgets,"
        " (SELECT sum(total_earned) FROM campaign_creators) AS earned,"
        " (SELECT sum(reversed_payout) FROM events) AS reversed").fetchone()


# Each call the settler would never make, with why the database refuses it.
REFUSED_CALLS = [
    # oros_reverse_sale(sale, refunded, payout back, fee back, run, refund)
    ("SELECT oros_reverse_sale(%(sale)s, 80.00, 0.00, 0.01, gen_random_uuid(), gen_random_uuid())",
     "a fee without its payout: the defect issue 11 found"),
    ("SELECT oros_reverse_sale(%(sale)s, 80.00, 10.01, 1.00, gen_random_uuid(), gen_random_uuid())",
     "more than the sale pays"),
    ("SELECT oros_reverse_sale(%(sale)s, 80.00, 2.00, 2.50, gen_random_uuid(), gen_random_uuid())",
     "the creator's net would grow"),
    ("SELECT oros_reverse_sale(%(sale)s, 80.00, -1.00, 0.00, gen_random_uuid(), gen_random_uuid())", "negative"),
    ("SELECT oros_reverse_sale(%(sale)s, 80.00, 9.99, 0.00, gen_random_uuid(), gen_random_uuid())",
     "0.01 left paying a 1.00 fee"),
    # oros_book_payouts(campaign, hold, transfers, creators, payouts, fees, metadata)
    ("SELECT oros_book_payouts(%(campaign)s, now(), ARRAY[gen_random_uuid()], ARRAY[%(creator)s::uuid], ARRAY[1.00],"
     " ARRAY[1.01], ARRAY['{}'::jsonb])", "a fee above its payout"),
    ("SELECT oros_book_payouts(%(campaign)s, now(), ARRAY[gen_random_uuid()], ARRAY[%(creator)s::uuid], ARRAY[0.00],"
     " ARRAY[0.00], ARRAY['{}'::jsonb])", "no payout"),
    ("SELECT oros_book_payouts(%(campaign)s, NULL, ARRAY[gen_random_uuid()], ARRAY[%(creator)s::uuid], ARRAY[1.00],"
     " ARRAY[0.10], ARRAY['{}'::jsonb])", "held credits without a hold"),
    # oros_post_settlement(campaign, run, hold, complete, transfers, creators, counts, fees, links, clicks,
    #                      conversions, shares, rewards)
    *[(f"SELECT oros_post_settlement(%(campaign)s, gen_random_uuid(), now(), false, ARRAY[gen_random_uuid()],"
       f" ARRAY[%(creator)s::uuid], {counts}, {fees}, '{{}}', '{{}}', '{{}}', ARRAY[NULL]::uuid[], ARRAY[0])",
       f"{counts} events at fees {fees}")
      for counts, fees in (("ARRAY[0]", "ARRAY[0.10]"), ("ARRAY[-3]", "ARRAY[0.10]"), ("ARRAY[1, 1]", "ARRAY[0.10]"),
                           ("ARRAY[1]", "ARRAY[]::numeric[]"), ("ARRAY[1]", "ARRAY[NULL]::numeric[]"),
                           ("ARRAY[1]", "ARRAY[-0.01]"), ("ARRAY[1]", "ARRAY[99999.00]"))],
]


def test_the_ledger_functions_refuse_what_the_settler_would_never_ask(world, pg, sale):
    before = books(pg)
    for statement, why in REFUSED_CALLS:
        with pytest.raises(REFUSED), pg.transaction():
            pg.execute(statement, sale)
            pytest.fail(f"accepted: {why}")
    assert books(pg) == before
    world.assert_books()


def test_reverse_sale_takes_back_and_books_the_rest(world, pg, sale):
    transfer = pg.execute("SELECT oros_reverse_sale(%s, 20.00, 2.50, 0.25, gen_random_uuid(), gen_random_uuid())"
                          "::text AS t", (sale["sale"],)).fetchone()["t"]
    legs = pg.execute("SELECT amount, direction FROM ledger_entries WHERE transfer_id = %s ORDER BY amount",
                      (transfer,)).fetchall()
    assert [(r["amount"], r["direction"]) for r in legs] == [
        (D("0.75"), "credit"), (D("6.75"), "credit"), (D("7.50"), "debit")]
    world.assert_books()
