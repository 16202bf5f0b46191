"""``oros reconcile``: prove the books balance, naming each broken invariant.

Each check is one read-only query (or a comparison of two) and returns a
``Check``; nothing is repaired here -- a failure is for a human to read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import psycopg

from oros.connections import clickhouse_client, pg_connect
from oros.settings import Settings

from . import state
from .run import OVERLAP, WATERMARK

SAMPLE = 5  # offenders named per failed check
STREAM_ROWS = 10_000  # Postgres rows fetched per round trip of the server-side cursor


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _check(name: str, offenders: list, ok_detail: str) -> Check:
    if not offenders:
        return Check(name, True, ok_detail)
    shown = "; ".join(str(o) for o in offenders[:SAMPLE])
    more = f" (+{len(offenders) - SAMPLE} more)" if len(offenders) > SAMPLE else ""
    return Check(name, False, f"{len(offenders)} broken: {shown}{more}")


WALLETS_SQL = """
SELECT w.id, w.purpose, w.available_balance, w.pending_balance, b.available, b.pending
  FROM wallets w JOIN oros_wallet_ledger_balances b ON b.wallet_id = w.id
 WHERE w.available_balance <> b.available OR w.pending_balance <> b.pending
"""

TRANSFERS_SQL = """
SELECT transfer_id, sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS imbalance
  FROM ledger_entries WHERE status NOT IN ('failed', 'reversed')
 GROUP BY transfer_id
HAVING sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) <> 0
"""

ESCROW_SQL = """
SELECT (SELECT available_balance FROM wallets WHERE id = oros_platform_wallet('escrow')) AS escrow,
       (SELECT coalesce(sum(remaining_budget), 0) FROM campaigns) AS remaining
"""

# What each campaign paid, three ways: its budget, the escrow legs (a live sale's name its live_sales row), and its
# paid events (net of partial refunds).
CAMPAIGN_PAID_SQL = """
SELECT c.id, c.funded_budget - c.remaining_budget AS by_budget,
       coalesce(l.paid, 0) AS by_ledger, coalesce(e.paid, 0) AS by_events
  FROM campaigns c
  LEFT JOIN (SELECT coalesce(s.campaign_id, e.source_id) AS source_id, sum(e.amount) AS paid
               FROM ledger_entries e LEFT JOIN live_sales s ON e.source_type = 'live_sale' AND s.id = e.source_id
              WHERE e.source_type IN ('campaign', 'live_sale') AND e.direction = 'debit'
                AND e.wallet_id = oros_platform_wallet('escrow') AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.source_id = c.id
  LEFT JOIN (SELECT campaign_id, sum(payout) AS paid FROM oros_paid_events GROUP BY campaign_id) e
    ON e.campaign_id = c.id
 WHERE c.funded_budget - c.remaining_budget <> coalesce(l.paid, 0)
    OR coalesce(l.paid, 0) <> coalesce(e.paid, 0)
"""

# A transfer's escrow leg says how many events it paid; the events table must agree. One
# aggregate over both sides, not a join: with statistics of tables that just grew (a new
# deployment, a backlog settled at once) the planner estimated one row per side and joined them
# in a nested loop, and this check ran for over eight minutes at 150k events (the chaos run).
TRANSFER_EVENTS_SQL = """
SELECT transfer_id, max(legs_say) AS legs_say, count(*) FILTER (WHERE NOT leg) AS events_say
  FROM (SELECT transfer_id, true AS leg, (metadata->>'events')::int AS legs_say
          FROM ledger_entries
         WHERE source_type = 'campaign' AND direction = 'debit' AND status NOT IN ('failed', 'reversed')
        UNION ALL
        SELECT transfer_id, false, NULL FROM events WHERE status = 'paid' AND transfer_id IS NOT NULL) AS sides
 GROUP BY transfer_id
HAVING bool_or(leg)
   AND (count(*) FILTER (WHERE leg) > 1 OR max(legs_say) IS DISTINCT FROM count(*) FILTER (WHERE NOT leg))
"""

# Per live sale (sql/postgres/0115): its live legs are one transfer, its current one, of source 'live_sale' and
# this row, paying its commission from escrow, its fee to the fee wallet and the rest to the creator (main and
# receivable); its events row is the sale it records, paying the same, in the same transfer; 'refunded' is what
# nothing is left of. And no live-sale leg belongs to no live sale.
LIVE_SALES_SQL = """
WITH legs AS (
  SELECT e.source_id, e.transfer_id,
         sum(e.amount) FILTER (WHERE e.wallet_id = oros_platform_wallet('escrow') AND e.direction = 'debit') AS escrow,
         sum(e.amount) FILTER (WHERE e.wallet_id = oros_platform_wallet('fees') AND e.direction = 'credit') AS fees,
         sum(e.amount) FILTER (WHERE e.wallet_id NOT IN (oros_platform_wallet('escrow'), oros_platform_wallet('fees'))
                                 AND e.direction = 'credit') AS creator
    FROM ledger_entries e
   WHERE e.source_type = 'live_sale' AND e.status NOT IN ('failed', 'reversed')
   GROUP BY e.source_id, e.transfer_id
)
SELECT 'live sale ' || s.id || ': commission ' || s.commission || ' (fee ' || s.platform_fee || ', '
       || s.status || ') vs ledger ' || coalesce(l.escrow, 0) || ' (fee ' || coalesce(l.fees, 0) || ', creator '
       || coalesce(l.creator, 0) || ') in ' || coalesce(l.transfer_id::text, 'no transfer') || ', event '
       || coalesce(v.status || ' paying ' || (v.payout_amount - v.reversed_payout) || ' (fee '
                   || (v.platform_fee - v.reversed_fee) || ')', 'missing') AS what
  FROM live_sales s
  LEFT JOIN legs l ON l.source_id = s.id
  LEFT JOIN events v ON v.id = s.event_id
 WHERE (s.commission > 0 AND l.transfer_id IS DISTINCT FROM s.transfer_id)
    OR (s.commission = 0 AND l.source_id IS NOT NULL)
    OR coalesce(l.escrow, 0) <> s.commission OR coalesce(l.fees, 0) <> s.platform_fee
    OR coalesce(l.creator, 0) <> s.commission - s.platform_fee
    OR v.id IS NULL OR v.transfer_id IS DISTINCT FROM s.transfer_id
    OR v.payout_amount - v.reversed_payout <> s.commission OR v.platform_fee - v.reversed_fee <> s.platform_fee
    OR (s.status = 'refunded') <> (v.status = 'reversed') OR v.status NOT IN ('paid', 'reversed')
UNION ALL
SELECT 'ledger transfer ' || l.transfer_id || ' is a live sale''s leg of no live sale' FROM legs l
 WHERE NOT EXISTS (SELECT 1 FROM live_sales s WHERE s.id = l.source_id)
"""

# An unsigned pixel's order id claims the order among unsigned pixels only (sql/postgres/0167, 0169): the
# business's own sale of it may be paid beside one pixel's, never two of either.
DOUBLE_ORDER_SQL = """
SELECT campaign_id, order_id, count(*) AS n FROM events
 WHERE status = 'paid' AND order_id IS NOT NULL AND event_type IN ('conversion', 'sale')
 GROUP BY campaign_id, order_id, unsigned_pixel HAVING count(*) > 1
"""

# A click pays once (a sale: once per order id); what 0030 found paid twice before it is flagged.
DOUBLE_CLICK_SQL = """
SELECT click_id, event_type, CASE WHEN event_type = 'sale' THEN coalesce(order_id, '') END AS order_key,
       count(*) AS n
  FROM events
 WHERE status IN ('paid', 'reversed') AND click_id IS NOT NULL AND event_type IN ('conversion', 'sale')
   AND duplicate_of IS NULL
 GROUP BY 1, 2, 3
HAVING count(*) > 1
"""

NEGATIVE_SQL = """
SELECT 'wallet ' || id AS what, available_balance AS available, pending_balance AS pending FROM wallets
 WHERE available_balance < 0 OR pending_balance < 0
UNION ALL
SELECT 'campaign ' || id, remaining_budget, NULL FROM campaigns WHERE remaining_budget < 0
UNION ALL
SELECT 'creator ' || creator_id || ' on campaign ' || campaign_id, total_earned, NULL FROM campaign_creators
 WHERE total_earned < 0
"""

EARNED_SQL = """
SELECT cc.campaign_id, cc.creator_id, cc.total_earned, coalesce(e.net, 0) AS by_events
  FROM campaign_creators cc
  LEFT JOIN (SELECT campaign_id, creator_id, sum(net) AS net FROM oros_paid_events
              GROUP BY campaign_id, creator_id) e
    ON e.campaign_id = cc.campaign_id AND e.creator_id = cc.creator_id
 WHERE cc.total_earned <> coalesce(e.net, 0)
"""

# Per tip, its live legs: clearing holds what it still pays, the fee wallet its fee, and the creator's
# wallets (main and receivable) its net, each less what refunds and disputes took back.
TIPS_SQL = """
SELECT t.id, t.amount - t.reversed_amount AS kept, t.platform_fee - t.reversed_fee AS fee_kept,
       t.net_amount - (t.reversed_amount - t.reversed_fee) AS net_kept,
       coalesce(l.clearing, 0) AS clearing, coalesce(l.fees, 0) AS fees, coalesce(l.creator, 0) AS creator
  FROM tips t
  LEFT JOIN (
    SELECT e.source_id,
           sum(CASE WHEN w.purpose = 'clearing' THEN CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END END)
             AS clearing,
           sum(CASE WHEN w.purpose = 'fees' THEN CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END END)
             AS fees,
           sum(CASE WHEN w.user_id = t2.to_creator_id AND w.purpose IN ('main', 'receivable')
                    THEN CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END END) AS creator
      FROM ledger_entries e JOIN wallets w ON w.id = e.wallet_id JOIN tips t2 ON t2.id = e.source_id
     WHERE e.source_type IN ('tip', 'refund') AND e.status NOT IN ('failed', 'reversed')
     GROUP BY e.source_id) l ON l.source_id = t.id
 WHERE coalesce(l.clearing, 0) <> t.amount - t.reversed_amount
    OR coalesce(l.fees, 0) <> t.platform_fee - t.reversed_fee
    OR coalesce(l.creator, 0) <> t.net_amount - (t.reversed_amount - t.reversed_fee)
"""

# Per card funding, boost and membership invoice: the cash its live clearing legs hold is what it still pays (less
# what Stripe took back, and what OROS gave back of it: issued refunds are booked when issued, sql/postgres/0103).
STRIPE_PAYMENTS_SQL = """
WITH issued AS (
  SELECT coalesce(funding_id, boost_id) AS payer, sum(amount) AS amount FROM issued_refunds
   WHERE transfer_id IS NOT NULL GROUP BY 1
)
SELECT 'funding ' || f.id AS what, f.amount - f.reversed_amount - coalesce(i.amount, 0) AS kept,
       coalesce(l.cash, 0) AS cash
  FROM campaign_fundings f
  LEFT JOIN issued i ON i.payer = f.id
  LEFT JOIN (SELECT coalesce(e.metadata->>'funding_id', e.source_id::text) AS funding,
                    sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) AS cash
               FROM ledger_entries e
              WHERE e.wallet_id = oros_platform_wallet('clearing') AND e.source_type IN ('escrow', 'refund')
                AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.funding = f.id::text
 WHERE f.status = 'succeeded' AND coalesce(l.cash, 0) <> f.amount - f.reversed_amount - coalesce(i.amount, 0)
UNION ALL
SELECT 'boost ' || b.id, b.amount - b.taken_back - coalesce(i.amount, 0), coalesce(l.cash, 0)
  FROM boosts b
  LEFT JOIN issued i ON i.payer = b.id
  LEFT JOIN (SELECT e.metadata->>'boost_id' AS boost,
                    sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) AS cash
               FROM ledger_entries e
              WHERE e.wallet_id = oros_platform_wallet('clearing') AND e.source_type IN ('boost', 'refund')
                AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.boost = b.id::text
 WHERE coalesce(l.cash, 0) <> b.amount - b.taken_back - coalesce(i.amount, 0)
UNION ALL
SELECT 'membership invoice ' || i.id, i.amount - i.reversed_amount, coalesce(l.cash, 0)
  FROM membership_invoices i
  LEFT JOIN (SELECT e.metadata->>'invoice' AS invoice,
                    sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) AS cash
               FROM ledger_entries e
              WHERE e.wallet_id = oros_platform_wallet('clearing') AND e.source_type IN ('membership', 'refund')
                AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.invoice = i.id
 WHERE coalesce(l.cash, 0) <> i.amount - i.reversed_amount
"""

# What Stripe took back of each payment of ours (refunds, disputes not reinstated) is what the books took back.
TAKEBACKS_SQL = """
SELECT x.what, x.reversed, least(x.amount, s.taken) AS expected
  FROM (SELECT 'tip ' || id AS what, stripe_payment_intent_id AS pi, amount, reversed_amount AS reversed FROM tips
         WHERE stripe_payment_intent_id IS NOT NULL
        UNION ALL
        SELECT 'funding ' || id, stripe_payment_intent_id, amount, reversed_amount FROM campaign_fundings
         WHERE method = 'stripe' AND status = 'succeeded'
        UNION ALL
        SELECT 'boost ' || id, stripe_payment_intent_id, amount, taken_back FROM boosts
        UNION ALL
        SELECT 'membership invoice ' || id, stripe_payment_intent_id, amount, reversed_amount FROM membership_invoices
         WHERE stripe_payment_intent_id IS NOT NULL) x
  CROSS JOIN LATERAL oros_stripe_taken_back(x.pi) s
 WHERE x.reversed <> least(x.amount, s.taken)
"""

# A boost is money in: its payment was one Stripe confirmed for exactly its intent's amount, its transfer raised
# escrow by exactly that, and no campaign's boosts hold more of its escrow than the campaign has left.
BOOSTS_SQL = """
SELECT 'boost ' || b.id || ': amount ' || b.amount || ', intent ' || coalesce(i.status || ' ' || i.amount, 'none')
       || ', escrow raised ' || coalesce(l.escrow, 0) AS what
  FROM boosts b
  LEFT JOIN boost_intents i ON i.id = b.intent_id
  LEFT JOIN (SELECT e.transfer_id, sum(e.amount) AS escrow FROM ledger_entries e
              WHERE e.source_type = 'boost' AND e.wallet_id = oros_platform_wallet('escrow') AND e.direction = 'credit'
                AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.transfer_id = b.transfer_id
 WHERE i.status IS DISTINCT FROM 'succeeded' OR i.amount <> b.amount OR coalesce(l.escrow, 0) <> b.amount
UNION ALL
SELECT 'campaign ' || c.id || ': boosts hold ' || round(v.held, 2) || ' of remaining ' || c.remaining_budget
  FROM campaigns c JOIN (SELECT campaign_id, sum(value) AS held FROM boost_values GROUP BY 1) v ON v.campaign_id = c.id
 WHERE round(v.held, 2) > c.remaining_budget
"""

# A boost reward is pending until its campaign completes, then paid: by transfers from the platform's rewards wallet to
# the supporter (0.00: none) whose live legs add up to exactly its amount -- one, or, once a refund lowered it
# (0155), one booked again, or the first less what the supporter owes back -- and its transfer_id is one of them.
REWARDS_SQL = """
SELECT 'reward ' || r.id || ' (' || r.status || ', ' || r.amount || ', campaign ' || c.status || '): rewards wallet '
       || coalesce(l.paid_by, 0) || ', supporter ' || coalesce(l.paid_to, 0) || ', transfer '
       || coalesce(r.transfer_id::text, 'none') AS what
  FROM rewards r
  JOIN campaigns c ON c.id = r.campaign_id
  LEFT JOIN (SELECT e.source_id,
                    sum(CASE WHEN w.purpose = 'rewards' THEN CASE e.direction WHEN 'debit' THEN e.amount
                                                                               ELSE -e.amount END END) AS paid_by,
                    sum(CASE WHEN w.purpose IN ('main', 'receivable') THEN CASE e.direction WHEN 'credit' THEN e.amount
                                                                                             ELSE -e.amount END END)
                      AS paid_to,
                    bool_and(w.user_id = x.user_id OR w.purpose = 'rewards') AS to_its_user,
                    array_agg(DISTINCT e.transfer_id) AS transfers
               FROM ledger_entries e JOIN wallets w ON w.id = e.wallet_id JOIN rewards x ON x.id = e.source_id
              WHERE e.source_type = 'boost' AND e.status NOT IN ('failed', 'reversed')
              GROUP BY e.source_id) l ON l.source_id = r.id
 WHERE r.source = 'boost'
   AND ((r.status = 'pending') = (c.status = 'completed')
        OR (r.status = 'pending' AND l.source_id IS NOT NULL)
        OR (r.status = 'paid'
            AND (coalesce(l.paid_by, 0) <> r.amount OR coalesce(l.paid_to, 0) <> r.amount
                 OR NOT coalesce(l.to_its_user, true)))
        OR (r.transfer_id IS NOT NULL AND NOT r.transfer_id = ANY(coalesce(l.transfers, '{}')))
        OR (r.amount > 0 AND r.transfer_id IS NULL))
"""

# Each share reward (0111) is what its transfer's live legs credit its supporter (main wallet, or a debt repaid)
# and what its events' share rewards still pay; and every live share-reward leg has its rewards row.
SHARE_REWARDS_SQL = """
SELECT 'share reward ' || r.id || ' (' || r.status || ', ' || r.amount || ') of transfer '
       || coalesce(r.transfer_id::text, 'none') || ': ledger ' || coalesce(l.paid, 0) || ', events '
       || coalesce(e.reward, 0) AS what
  FROM rewards r
  LEFT JOIN (SELECT le.transfer_id, w.user_id, sum(le.amount) AS paid
               FROM ledger_entries le JOIN wallets w ON w.id = le.wallet_id
              WHERE le.source_type = 'campaign' AND le.direction = 'credit' AND le.description LIKE 'share reward%'
                AND le.status NOT IN ('failed', 'reversed')
              GROUP BY 1, 2) l ON l.transfer_id = r.transfer_id AND l.user_id = r.user_id
  LEFT JOIN (SELECT transfer_id, sum(share_reward - reversed_reward) AS reward FROM events
              WHERE share_reward IS NOT NULL GROUP BY 1) e ON e.transfer_id = r.transfer_id
 WHERE r.source = 'share'
   AND (r.status <> 'paid' OR r.transfer_id IS NULL OR coalesce(l.paid, 0) <> r.amount
        OR coalesce(e.reward, 0) <> r.amount)
UNION ALL
SELECT 'transfer ' || le.transfer_id || ' credits a share reward of ' || le.amount || ' no rewards row records'
  FROM ledger_entries le
 WHERE le.source_type = 'campaign' AND le.direction = 'credit' AND le.description LIKE 'share reward%'
   AND le.status NOT IN ('failed', 'reversed')
   AND NOT EXISTS (SELECT 1 FROM rewards r JOIN wallets w ON w.user_id = r.user_id
                    WHERE r.source = 'share' AND r.transfer_id = le.transfer_id AND w.id = le.wallet_id)
"""

# The seed's third source, 'prediction', is allowed but has no specification and no flow (docs/supporters.md): a
# row of it, or of any source but these two, was written by something that is not ours.
FLOWLESS_REWARDS_SQL = """
SELECT 'reward ' || r.id || ' of ' || r.user_id || ': source ' || coalesce(r.source, 'none') || ', '
       || r.status || ', ' || r.amount AS what
  FROM rewards r
 WHERE r.source IS NULL OR r.source NOT IN ('boost', 'share')
"""

# What OROS gave back: each booked refund's transfer took exactly its amount out of escrow into clearing (one never
# booked has no legs), and no payment was given back more than it still paid (Stripe's takebacks included).
ISSUED_REFUNDS_SQL = """
SELECT 'issued refund ' || i.id || ' of ' || i.amount || ': escrow ' || coalesce(l.escrow, 0) || ', clearing '
       || coalesce(l.clearing, 0) AS what
  FROM issued_refunds i
  LEFT JOIN (SELECT e.transfer_id,
                    sum(CASE WHEN w.purpose = 'escrow' AND e.direction = 'debit' THEN e.amount ELSE 0 END) AS escrow,
                    sum(CASE WHEN w.purpose = 'clearing' AND e.direction = 'credit' THEN e.amount ELSE 0 END)
                      AS clearing,
                    count(*) AS legs
               FROM ledger_entries e JOIN wallets w ON w.id = e.wallet_id
              WHERE e.source_type = 'refund' AND e.status NOT IN ('failed', 'reversed')
              GROUP BY 1) l ON l.transfer_id = i.transfer_id
 WHERE (i.transfer_id IS NOT NULL AND (coalesce(l.escrow, 0) <> i.amount OR coalesce(l.clearing, 0) <> i.amount
                                       OR l.legs <> 2))
    OR (i.transfer_id IS NULL AND i.boost_intent_id IS NULL AND i.tip_intent_id IS NULL)
UNION ALL
SELECT 'funding ' || f.id || ' of ' || f.amount || ': taken back ' || f.reversed_amount || ', given back ' || s.given
  FROM campaign_fundings f JOIN (SELECT funding_id, sum(amount) AS given FROM issued_refunds GROUP BY 1) s
    ON s.funding_id = f.id
 WHERE f.reversed_amount + s.given > f.amount
UNION ALL
SELECT 'boost ' || b.id || ' of ' || b.amount || ': taken back ' || b.taken_back || ', given back ' || s.given
  FROM boosts b JOIN (SELECT boost_id, sum(amount) AS given FROM issued_refunds GROUP BY 1) s ON s.boost_id = b.id
 WHERE b.taken_back + s.given > b.amount
UNION ALL
SELECT 'boost intent ' || x.id || ' of ' || x.amount || ' refunded at once ' || s.given
  FROM boost_intents x JOIN (SELECT boost_intent_id, sum(amount) AS given FROM issued_refunds GROUP BY 1) s
    ON s.boost_intent_id = x.id
 WHERE x.status <> 'refunded' OR s.given <> x.amount
UNION ALL
SELECT 'tip intent ' || x.id || ' (' || x.status || ') given back ' || i.amount || ' of ' || i.payment_intent_id
  FROM tip_intents x JOIN issued_refunds i ON i.tip_intent_id = x.id
 WHERE x.status <> 'refused' OR i.transfer_id IS NOT NULL
"""

# A refused tip payment bought nothing, so it is given back; a booked one (a tip row holds it) never is (0170).
REFUSED_TIP_REFUNDS_SQL = """
SELECT i.id AS refund_id, i.amount, i.payment_intent_id, t.id AS tip_id
  FROM issued_refunds i JOIN tips t ON t.stripe_payment_intent_id = i.payment_intent_id
 WHERE i.reason = 'tip_refused'
 ORDER BY i.id
"""

# Both sides in event id order (a uuid's order is its text's order), merged in one
# pass: memory stays flat however many events there are.
PG_DECIDED_SQL = """
SELECT id::text AS id, campaign_id::text AS campaign_id, event_type, (occurred_at AT TIME ZONE 'UTC')::date AS day,
       status IN ('paid', 'reversed') AND event_type <> 'refund' AS paid
  FROM events ORDER BY id
"""
# Each id's newest row: an id with a row ingested after the horizon is the next window's to read.
CH_EVENTS_SQL = """
SELECT toString(event_id) AS id, toString(campaign_id), event_type, toDate(ts, 'UTC'), is_bot OR source = 'head',
       ingested_at < {settled_before:DateTime64(3, 'UTC')}
  FROM events
 ORDER BY id, ingested_at DESC
 LIMIT 1 BY id
"""

# The per-hour counts the settler's completeness proof relies on (0028's triggers) against the rows.
DECIDED_HOURS_SQL = """
SELECT coalesce(e.hour, d.hour) AS hour, coalesce(e.n, 0) AS events, coalesce(d.n, 0) AS counted
  FROM (SELECT date_trunc('hour', occurred_at, 'UTC') AS hour, count(*) AS n FROM events
         WHERE occurred_at IS NOT NULL GROUP BY 1) e
  FULL JOIN (SELECT hour, sum(decided) AS n FROM settle_decided_hours GROUP BY 1) d ON d.hour = e.hour
 WHERE coalesce(e.n, 0) <> coalesce(d.n, 0)
 ORDER BY 1
"""


@dataclass(frozen=True)
class RowCheck:
    """A check whose SQL returns one row per offender, named by ``offender`` (a format string of its columns)."""

    name: str
    sql: str
    offender: str
    ok_detail: str

    def __call__(self, conn) -> Check:
        return _check(self.name, [self.offender.format(**r) for r in conn.execute(self.sql)], self.ok_detail)


def _escrow(conn) -> Check:
    row = conn.execute(ESCROW_SQL).fetchone()
    offenders = [] if row["escrow"] == row["remaining"] else [
        f"escrow wallet {row['escrow']} vs campaigns' remaining_budget {row['remaining']}"]
    return _check("escrow_equals_remaining_budgets", offenders, f"escrow = sum(remaining_budget) = {row['escrow']}")


def _paid_once(conn) -> Check:
    offenders = [f"transfer {r['transfer_id']} legs pay {r['legs_say']} events, {r['events_say']} recorded"
                 for r in conn.execute(TRANSFER_EVENTS_SQL)]
    offenders += [f"order {r['order_id']} paid {r['n']} times on campaign {r['campaign_id']}"
                  for r in conn.execute(DOUBLE_ORDER_SQL)]
    offenders += [f"click {r['click_id']} paid {r['n']} {r['event_type']}s" for r in conn.execute(DOUBLE_CLICK_SQL)]
    return _check("no_event_paid_twice", offenders,
                  "each paid event is in exactly one transfer; orders and clicks pay once")


def _decided_hours(conn) -> Check:
    rows = conn.execute(DECIDED_HOURS_SQL).fetchall()
    return _check("decided_counts_match_events", [
        f"hour {r['hour'].isoformat()}: {r['events']} events, counted {r['counted']}" for r in rows
    ], "the settler's per-hour decided counts equal the events rows")


# The Postgres checks, in report order.
POSTGRES_CHECKS = (
    RowCheck("wallet_balances_match_ledger", WALLETS_SQL,
             "wallet {id} ({purpose}) available {available_balance} vs ledger {available},"
             " pending {pending_balance} vs ledger {pending}",
             "every wallet's balances equal the sum of its ledger entries"),
    RowCheck("transfers_balance", TRANSFERS_SQL, "transfer {transfer_id} off by {imbalance}",
             "every transfer's live credits equal its debits"),
    _escrow,
    RowCheck("campaign_paid_matches_budget", CAMPAIGN_PAID_SQL,
             "campaign {id}: funded-remaining {by_budget}, escrow legs {by_ledger}, paid events {by_events}",
             "per campaign, funded - remaining = escrow paid out = paid events"),
    _paid_once,
    RowCheck("total_earned_matches_events", EARNED_SQL,
             "creator {creator_id} on campaign {campaign_id}: total_earned {total_earned} vs paid events {by_events}",
             "campaign_creators.total_earned = the net of their paid events"),
    RowCheck("no_negative_balances", NEGATIVE_SQL, "{what}: {available} / {pending}",
             "no wallet, budget or earning is negative"),
    _decided_hours,
    RowCheck("tips_match_ledger", TIPS_SQL,
             "tip {id}: keeps {kept} (fee {fee_kept}, net {net_kept}) vs ledger clearing {clearing}, fees {fees},"
             " creator {creator}",
             "each tip's live legs hold its amount, fee and net, less what was taken back"),
    RowCheck("stripe_payments_match_ledger", STRIPE_PAYMENTS_SQL, "{what}: keeps {kept} vs clearing legs {cash}",
             "each card funding, boost and membership invoice holds in clearing what it still pays"),
    RowCheck("stripe_takebacks_applied", TAKEBACKS_SQL, "{what}: took back {reversed}, Stripe took back {expected}",
             "every refund and dispute Stripe reported is taken back in the books (receivables included)"),
    RowCheck("boosts_raise_escrow", BOOSTS_SQL, "{what}",
             "each boost is a confirmed payment of its intent's amount that raised escrow by it; no campaign's "
             "boosts hold more than it has left"),
    RowCheck("boost_rewards_match_ledger", REWARDS_SQL, "{what}",
             "boost rewards are pending until their campaign completes, then paid by one transfer of their "
             "amount from the rewards wallet to the supporter"),
    RowCheck("share_rewards_match_ledger", SHARE_REWARDS_SQL, "{what}",
             "each share reward is paid by its payout's transfer to its supporter, as its events say"),
    RowCheck("rewards_have_a_flow", FLOWLESS_REWARDS_SQL, "{what}",
             "every reward is a boost's or a share link's: no flow produces any other source"),
    RowCheck("issued_refunds_within_payments", ISSUED_REFUNDS_SQL, "{what}",
             "each refund OROS issued took its amount out of escrow into clearing; no payment was given back "
             "more than it paid"),
    RowCheck("refused_tip_refunds_never_booked", REFUSED_TIP_REFUNDS_SQL,
             "issued refund {refund_id} (tip_refused) gives back {amount} of {payment_intent_id}, booked as tip"
             " {tip_id}",
             "no refused tip's refund gives back a payment that a tip booked"),
    RowCheck("live_sales_match_ledger", LIVE_SALES_SQL, "{what}",
             "each live sale's live transfer pays its commission, fee and net, as its events row says"),
)


def _clickhouse(settings: Settings, conn) -> Check:
    """Per campaign and day: paid events are real billable ClickHouse events, and none was left undecided.

    Undecided is flagged only for an event whose newest row was ingested before the settle
    horizon (watermark - overlap): a successful settle run leaves none (``settler.completeness``),
    while a later one is the next window's to read.
    """
    mark = state.read_mark(conn, WATERMARK)
    settled_before = (mark - OVERLAP) if mark else None
    params = {"settled_before": settled_before or "1970-01-01 00:00:00"}
    bad: Counter = Counter()
    unsettled: Counter = Counter()
    paid = 0
    with conn.cursor(name="reconcile_decided") as decided, clickhouse_client(settings).query_rows_stream(
            CH_EVENTS_SQL, parameters=params) as raw:
        decided.itersize = STREAM_ROWS
        decided.execute(PG_DECIDED_SQL)
        for pg_row, ch_row in _merge_by_id(iter(decided), iter(raw)):
            if ch_row is not None and ch_row[5] and pg_row is None:
                unsettled[(ch_row[1], ch_row[3])] += 1
            if pg_row is None or not pg_row["paid"]:
                continue
            paid += 1
            if ch_row is None or (ch_row[1], ch_row[2], ch_row[3]) != (
                    pg_row["campaign_id"], pg_row["event_type"], pg_row["day"]) or ch_row[4]:
                bad[(pg_row["campaign_id"], pg_row["day"])] += 1
    offenders = [f"campaign {c} on {d}: {n} paid events are not billable ClickHouse events"
                 for (c, d), n in sorted(bad.items())]
    offenders += [f"campaign {c} on {d}: {n} ClickHouse events ingested before the settle horizon"
                  f" {settled_before.isoformat()} are undecided" for (c, d), n in sorted(unsettled.items())]
    return _check("paid_events_match_clickhouse", offenders,
                  f"{paid} paid events all found in ClickHouse; nothing ingested before the settle horizon undecided")


def _merge_by_id(pg_rows: Iterator[dict], ch_rows: Iterator[tuple]) -> Iterator[tuple[dict | None, tuple | None]]:
    """Pair rows of two id-ordered streams by id; a side without the id gives None."""
    pg_row, ch_row = next(pg_rows, None), next(ch_rows, None)
    while pg_row is not None or ch_row is not None:
        if ch_row is None or (pg_row is not None and pg_row["id"] < ch_row[0]):
            yield pg_row, None
            pg_row = next(pg_rows, None)
        elif pg_row is None or ch_row[0] < pg_row["id"]:
            yield None, ch_row
            ch_row = next(ch_rows, None)
        else:
            yield pg_row, ch_row
            pg_row, ch_row = next(pg_rows, None), next(ch_rows, None)


def reconcile(settings: Settings) -> list[Check]:
    """Every invariant of DESIGN.md, plus Postgres vs ClickHouse per campaign and day."""
    with pg_connect(settings) as conn:
        # One snapshot for every check, so a settlement committing meanwhile cannot fake a mismatch.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            checks = [check(conn) for check in POSTGRES_CHECKS]
            try:
                checks.append(_clickhouse(settings, conn))
            except psycopg.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - ClickHouse down is itself a failed check
                checks.append(Check("paid_events_match_clickhouse", False, f"ClickHouse unavailable: {exc}"))
        finally:
            conn.rollback()
    return checks


def reconcile_and_record(settings: Settings) -> list[Check]:
    """The scheduler's reconcile: the checks, kept as a run (kind 'reconcile', 'failed' while any check
    fails) so finance's page shows the last result at once instead of auditing the books on each view."""
    with pg_connect(settings) as conn:
        started = conn.execute("SELECT now() AS at").fetchone()["at"]
    checks = reconcile(settings)
    failing = [c.name for c in checks if not c.ok]
    report = {"ok": not failing, "checks": [asdict(c) for c in checks]}
    with pg_connect(settings) as conn:
        state.record_run(conn, "reconcile", ok=not failing, report=report, started_at=started,
                         error=f"failing: {', '.join(failing)}" if failing else None)
    return checks


def run_reconcile_command(settings: Settings) -> int:
    """``oros reconcile``: print each check; exit 1 if any fails."""
    checks = reconcile(settings)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return 0 if all(c.ok for c in checks) else 1
