"""The settler's ledger functions (sql/postgres/0041) are the last line: called as the owner, they refuse
what the settler would never ask -- a fee moved without its payout, more back than a sale still pays, a
fee above its payout, a transfer without events -- and leave nothing behind."""

from __future__ import annotations

import uuid

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
    return {"campaign": campaign, "creator": creator[0], "id": event.event_id}


def books(pg) -> dict:
    return pg.execute(
        "SELECT (SELECT count(*) FROM ledger_entries) AS entries, (SELECT sum(available_balance) FROM wallets) AS a,"
        " (SELECT sum(pending_balance) FROM wallets) AS p, (SELECT sum(remaining_budget) FROM campaigns) AS budgets,"
        " (SELECT sum(total_earned) FROM campaign_creators) AS earned,"
        " (SELECT sum(reversed_payout) FROM events) AS reversed").fetchone()


@pytest.mark.parametrize(("payout_back", "fee_back"), [
    ("0.00", "0.01"),  # a fee without its payout: the defect issue 11 found
    ("10.01", "1.00"),  # more than the sale pays
    ("2.00", "2.50"),  # the creator's net would grow
    ("-1.00", "0.00"),
    ("9.99", "0.00"),  # 0.01 left paying a 1.00 fee
])
def test_reverse_sale_refuses_what_no_refund_could_take_back(world, pg, sale, payout_back, fee_back):
    before = books(pg)
    with pytest.raises(REFUSED), pg.transaction():
        pg.execute("SELECT oros_reverse_sale(%s, 80.00, %s, %s, gen_random_uuid(), gen_random_uuid())",
                   (sale["id"], D(payout_back), D(fee_back)))
    assert books(pg) == before
    world.assert_books()


def test_reverse_sale_takes_back_and_books_the_rest(world, pg, sale):
    transfer = pg.execute("SELECT oros_reverse_sale(%s, 20.00, 2.50, 0.25, gen_random_uuid(), gen_random_uuid())"
                          "::text AS t", (sale["id"],)).fetchone()["t"]
    legs = pg.execute("SELECT amount, direction FROM ledger_entries WHERE transfer_id = %s ORDER BY amount",
                      (transfer,)).fetchall()
    assert [(r["amount"], r["direction"]) for r in legs] == [
        (D("0.75"), "credit"), (D("6.75"), "credit"), (D("7.50"), "debit")]
    world.assert_books()


@pytest.mark.parametrize(("payouts", "fees"), [(["1.00"], ["1.01"]), (["0.00"], ["0.00"]), (["1.00"], ["-0.01"])])
def test_book_payouts_refuses_a_fee_outside_its_payout(world, pg, sale, payouts, fees):
    before = books(pg)
    with pytest.raises(REFUSED), pg.transaction():
        pg.execute("SELECT oros_book_payouts(%s, now(), ARRAY[gen_random_uuid()], ARRAY[%s::uuid], %s::numeric[],"
                   " %s::numeric[], ARRAY['{}'::jsonb])", (sale["campaign"], sale["creator"], payouts, fees))
    assert books(pg) == before


@pytest.mark.parametrize("counts", [[0], [-3], [1, 1]])
def test_post_settlement_refuses_a_transfer_without_events(world, pg, sale, counts):
    before = books(pg)
    with pytest.raises(REFUSED), pg.transaction():
        pg.execute("SELECT oros_post_settlement(%s, gen_random_uuid(), now(), 0.10, false, ARRAY[%s::uuid],"
                   " ARRAY[%s::uuid], %s::int[], '{}', '{}', '{}')",
                   (sale["campaign"], uuid.uuid4(), sale["creator"], counts))
    assert books(pg) == before
