"""Posting one campaign's settlement to Postgres, inside the caller's transaction.

The caller holds the run's advisory lock and one transaction per campaign;
this module takes the campaign's row lock, records every decided event
(primary key = edge event id), deducts the budget, posts balanced ledger
legs in one statement, and bumps ``total_earned`` and the link counters.

Legs: a click or conversion campaign gets one transfer per (campaign,
creator, fee percent, run) -- debit escrow, credit the creator's net
(pending, held) and the fee (pending, same hold) -- so a million clicks cost
a few thousand ledger rows. A sale can be refunded, so each paid sale gets
its own transfer, which ``settler.refunds`` reverses as a whole. The fee is
the creator's at the event's time (``fee_pct_of``, oros/fees.py), and what a
creator owes the platform (a receivable, sql/postgres/0075) is repaid from
its net before the rest is credited (``creator_credit_legs``).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from oros.money import split_fee
from oros.reasons import BUDGET_EXHAUSTED

from .budget import Allocation
from .verify import Candidate

SYSTEM_USER = "00000000-0000-0000-0000-000000000001"

EVENT_COLUMNS = (
    "id", "campaign_id", "creator_id", "tracking_link_id", "supporter_id", "event_type", "value",
    "currency", "click_id", "order_id", "occurred_at", "status", "rejection_reason",
    "settlement_run_id", "transfer_id", "verified", "verified_at", "payout_amount", "platform_fee",
    "paid", "paid_at", "ip_address", "user_agent",
    "country", "device_type", "browser", "os", "referrer_host", "first_visit",
)
COPY_EVENTS = f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"

INSERT_LEGS = """
INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, source_id, amount, direction,
                            status, hold_until, description, metadata)
SELECT w, t, 'campaign', %(campaign_id)s, a, d, s, CASE WHEN s = 'pending' THEN %(hold_until)s END,
       descr, jsonb_build_object('run_id', %(run_id)s::text, 'events', n)
  FROM unnest(%(wallets)s::uuid[], %(transfers)s::uuid[], %(amounts)s::numeric[], %(directions)s::text[],
              %(statuses)s::text[], %(descrs)s::text[], %(counts)s::int[]) AS l(w, t, a, d, s, descr, n)
"""


# The fee percent of a creator at an event's time (epoch ms): oros.fees.FeeSchedule.pct.
FeeOf = Callable[[str, int], Decimal]

# Which of these creator credits repay a receivable first (locks the receivables: before any other ledger write).
REPAYMENTS_SQL = """SELECT n, wallet_id::text AS wallet_id, repay
                     FROM oros_receivable_repayments(%s::uuid[], %s::numeric[])"""


class LedgerError(RuntimeError):
    """The books refused a settlement (a replay got past the lock, or a constraint broke)."""


@dataclass
class Posted:
    """What one campaign's transaction did; summed into the run report."""

    campaign_id: str
    paid: int = 0
    rejected: int = 0
    amount: Decimal = Decimal("0.00")
    fees: Decimal = Decimal("0.00")
    completed: bool = False
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


def platform_wallets(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT purpose, id::text AS id FROM wallets WHERE user_id = %s", (SYSTEM_USER,)
    ).fetchall()
    return {row["purpose"]: row["id"] for row in rows}


def creator_wallets(conn: psycopg.Connection, creator_ids: list[str]) -> dict[str, str]:
    # Users get a main wallet on signup; make sure anyway, so a payout never lacks a home.
    conn.execute(
        "INSERT INTO wallets (user_id) SELECT unnest(%s::uuid[]) ON CONFLICT (user_id, purpose) DO NOTHING",
        (creator_ids,),
    )
    rows = conn.execute(
        "SELECT user_id::text AS user_id, id::text AS id FROM wallets WHERE user_id = ANY(%s::uuid[]) AND purpose = 'main'",
        (creator_ids,),
    ).fetchall()
    return {row["user_id"]: row["id"] for row in rows}


def lock_campaign(conn: psycopg.Connection, campaign_id: str) -> dict:
    return conn.execute(
        "SELECT id::text AS id, status, remaining_budget, payout_per_action FROM campaigns WHERE id = %s FOR UPDATE",
        (campaign_id,),
    ).fetchone()


def clean_ip(raw: str | None) -> str | None:
    """An address Postgres INET accepts, or None."""
    try:
        return str(ipaddress.ip_address(raw)) if raw else None
    except ValueError:
        return None


IP_COLUMN = EVENT_COLUMNS.index("ip_address")


def event_row(
    event: Candidate, *, campaign_id: str | None, status: str, reason: str | None, run_id: str,
    now: datetime, transfer_id: str | None = None, payout: Decimal | None = None, fee: Decimal | None = None,
) -> tuple:
    """An events row; ``ip_address`` is the raw edge value (see ``copy_events``)."""
    paid = status == "paid"
    return (
        event.event_id, campaign_id, event.creator_id if campaign_id else None,
        event.link_id if campaign_id else None, None, event.event_type, event.value, event.currency,
        event.click_id, event.order_id, datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC),
        status, reason, run_id, transfer_id, paid, now, payout, fee, paid, now if paid else None,
        event.ip or None, event.user_agent or None,
        event.country, event.device_type, event.browser, event.os, event.referrer_host, event.first_visit,
    )


# COPY's text format: backslash escapes, \N for NULL. Only these columns can hold arbitrary text.
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_FREE_TEXT = tuple(EVENT_COLUMNS.index(c) for c in ("currency", "order_id", "ip_address", "user_agent", "country",
                                                    "device_type", "browser", "os", "referrer_host"))


def _copy_line(row: tuple) -> str:
    values = ["\\N" if v is None else str(v) for v in row]
    for i in _FREE_TEXT:
        if row[i] is not None:
            values[i] = values[i].translate(_ESCAPE)
    return "\t".join(values)


def _copy_text(rows: list[tuple]) -> bytes:
    # Built by hand: psycopg's per-row write_row costs more than the rest of the settlement.
    return ("\n".join(map(_copy_line, rows)) + "\n").encode()


def copy_events(conn: psycopg.Connection, rows: list[tuple]) -> None:
    """Record decided events; a duplicate id aborts the transaction (only a lock bypass could cause one).

    IPs go in raw (the edge took them from a socket or a trusted proxy); if
    Postgres refuses one, the batch is sent again with every IP checked.
    """
    if not rows:
        return
    try:
        try:
            with conn.transaction(), conn.cursor().copy(COPY_EVENTS) as copy:
                copy.write(_copy_text(rows))
        except psycopg.errors.InvalidTextRepresentation:
            clean = [row[:IP_COLUMN] + (clean_ip(row[IP_COLUMN]),) + row[IP_COLUMN + 1:] for row in rows]
            with conn.cursor().copy(COPY_EVENTS) as copy:
                copy.write(_copy_text(clean))
    except psycopg.errors.UniqueViolation as exc:
        raise LedgerError(f"an event was already decided: {exc.diag.message_detail}") from exc


def post_campaign(
    conn: psycopg.Connection,
    *,
    campaign_id: str,
    objective: str,
    allocation: Allocation,
    rejected: list[tuple[Candidate, str]],
    fee_pct_of: FeeOf,
    payout: Decimal,
    run_id: str,
    now: datetime,
    hold_until: datetime,
    platform: dict[str, str],
) -> Posted:
    """Everything one campaign's transaction writes, given its allocation under the row lock."""
    posted = Posted(campaign_id=campaign_id)
    rows = [event_row(e, campaign_id=campaign_id, status="rejected", reason=r, run_id=run_id, now=now)
            for e, r in rejected]
    rows += [event_row(e, campaign_id=campaign_id, status="rejected", reason=BUDGET_EXHAUSTED,
                       run_id=run_id, now=now) for e in allocation.exhausted]
    for _, reason in rejected:
        posted.rejected_by_reason[reason] = posted.rejected_by_reason.get(reason, 0) + 1
    if allocation.exhausted:
        posted.rejected_by_reason[BUDGET_EXHAUSTED] = len(allocation.exhausted)
    posted.rejected = len(rows)

    transfers = _transfers(allocation.paid, per_event=objective == "sale", fee_pct_of=fee_pct_of, payout=payout)
    for transfer_id, t in transfers.items():
        rows += [event_row(e, campaign_id=campaign_id, status="paid", reason=None, run_id=run_id, now=now,
                           transfer_id=transfer_id, payout=payout, fee=t.fee) for e in t.events]
    copy_events(conn, rows)

    if allocation.paid:
        wallets = creator_wallets(conn, sorted({e.creator_id for e in allocation.paid}))
        _insert_legs(conn, transfers, wallets=wallets, platform=platform, payout=payout,
                     campaign_id=campaign_id, run_id=run_id, hold_until=hold_until)
        _bump_earnings(conn, campaign_id, transfers)
        _bump_links(conn, allocation.paid)
    posted.completed = allocation.exhausts(payout)
    conn.execute(
        """UPDATE campaigns SET remaining_budget = remaining_budget - %(spent)s,
                  status = CASE WHEN %(complete)s AND status = 'active' THEN 'completed' ELSE status END
            WHERE id = %(id)s""",
        {"spent": allocation.spent, "complete": posted.completed, "id": campaign_id},
    )
    posted.paid = len(allocation.paid)
    posted.amount = allocation.spent
    posted.fees = sum((t.fee * len(t.events) for t in transfers.values()), Decimal("0.00"))
    return posted


@dataclass
class _Transfer:
    """Events paid by one transfer, all at one fee."""

    creator_id: str
    net: Decimal
    fee: Decimal
    events: list[Candidate] = field(default_factory=list)


def _transfers(paid: list[Candidate], *, per_event: bool, fee_pct_of: FeeOf,
               payout: Decimal) -> dict[str, _Transfer]:
    """Group paid events into transfers: one per sale, else one per creator and fee percent."""
    groups: dict[str, _Transfer] = {}
    by_creator: dict[tuple[str, Decimal], list[Candidate]] = defaultdict(list)
    splits: dict[Decimal, tuple[Decimal, Decimal]] = {}  # (net, fee) per percent: one payout, few percents
    for event in paid:
        pct = fee_pct_of(event.creator_id, event.ts_ms)
        if per_event:
            split = splits.get(pct) or splits.setdefault(pct, split_fee(payout, pct))
            groups[str(uuid.uuid4())] = _Transfer(event.creator_id, *split, [event])
        else:
            by_creator[(event.creator_id, pct)].append(event)
    for creator, pct in sorted(by_creator):
        groups[str(uuid.uuid4())] = _Transfer(creator, *split_fee(payout, pct), by_creator[(creator, pct)])
    return groups


def creator_credit_legs(conn: psycopg.Connection, credits: list[tuple[str, str, Decimal]]) -> list[list[tuple]]:
    """For each ``(creator, main wallet, net)``, the ``(wallet, amount, status, description)`` legs paying it.

    What a creator owes is repaid first, by a settled credit of its receivable
    (sql/postgres/0075, which also locks the receivables, before the ledger
    trigger locks the other wallets); the rest credits its main wallet, pending.
    """
    repay = {row["n"]: row for row in conn.execute(
        REPAYMENTS_SQL, ([c for c, _, _ in credits], [a for _, _, a in credits]))}
    legs: list[list[tuple]] = []
    for n, (_, wallet, amount) in enumerate(credits, start=1):
        owed = repay.get(n)
        paid = [] if owed is None else [(owed["wallet_id"], owed["repay"], "settled", "earnings repaying a debt")]
        legs.append([*paid, (wallet, amount - (owed["repay"] if owed else 0), "pending", "creator earnings")])
    return legs


def _insert_legs(conn, transfers, *, wallets, platform, payout, campaign_id, run_id, hold_until) -> None:
    cols: dict[str, list] = defaultdict(list)

    def leg(wallet, transfer, amount, direction, status, descr, n):
        if amount > 0:  # a zero fee (or zero net at a 100% fee) is no movement
            for key, value in zip(("wallets", "transfers", "amounts", "directions", "statuses", "descrs", "counts"),
                                  (wallet, transfer, amount, direction, status, descr, n)):
                cols[key].append(value)

    credits = creator_credit_legs(conn, [(t.creator_id, wallets[t.creator_id], t.net * len(t.events))
                                         for t in transfers.values()])
    for (transfer_id, t), creator_legs in zip(transfers.items(), credits, strict=True):
        n = len(t.events)
        leg(platform["escrow"], transfer_id, payout * n, "debit", "settled", "campaign payout from escrow", n)
        for wallet, amount, status, descr in creator_legs:
            leg(wallet, transfer_id, amount, "credit", status, descr, n)
        leg(platform["fees"], transfer_id, t.fee * n, "credit", "pending", "platform fee", n)
    conn.execute(INSERT_LEGS, {**cols, "campaign_id": campaign_id, "run_id": run_id, "hold_until": hold_until})


def _bump_earnings(conn, campaign_id: str, transfers: dict[str, _Transfer]) -> None:
    earned: dict[str, Decimal] = defaultdict(Decimal)
    for t in transfers.values():
        earned[t.creator_id] += t.net * len(t.events)
    creators = sorted(earned)
    # Lock in id order first: UPDATE ... FROM takes its row locks in no promised order.
    conn.execute(
        "SELECT 1 FROM campaign_creators WHERE campaign_id = %s AND creator_id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE",
        (campaign_id, creators),
    )
    conn.execute(
        """UPDATE campaign_creators cc SET total_earned = cc.total_earned + x.net
             FROM unnest(%(creators)s::uuid[], %(nets)s::numeric[]) AS x(creator_id, net)
            WHERE cc.campaign_id = %(campaign_id)s AND cc.creator_id = x.creator_id""",
        {"creators": creators, "nets": [earned[c] for c in creators], "campaign_id": campaign_id},
    )


def _bump_links(conn, paid: list[Candidate]) -> None:
    clicks: dict[str, int] = defaultdict(int)
    conversions: dict[str, int] = defaultdict(int)
    for event in paid:
        if event.link_id:
            (clicks if event.event_type == "click" else conversions)[event.link_id] += 1
    links = sorted(set(clicks) | set(conversions))
    if not links:
        return
    conn.execute("SELECT 1 FROM tracking_links WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE", (links,))
    conn.execute(
        """UPDATE tracking_links t SET click_count = t.click_count + x.c, conversion_count = t.conversion_count + x.v
             FROM unnest(%(links)s::uuid[], %(c)s::int[], %(v)s::int[]) AS x(id, c, v)
            WHERE t.id = x.id""",
        {"links": links, "c": [clicks[link] for link in links], "v": [conversions[link] for link in links]},
    )
