"""Decided events as Postgres ``events`` rows: the columns, the COPY text, and the one-row insert.

The ``events`` primary key (the edge event id) is the record of what was
decided, paid or rejected: a run writes every event it decides, once. A
settlement writes a campaign's events with one COPY; a refund, one row.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from .verify import Candidate, unsigned_pixel

EVENT_COLUMNS = (
    "id", "campaign_id", "creator_id", "tracking_link_id", "status", "rejection_reason", "transfer_id",
    "payout_amount", "platform_fee", "paid", "paid_at", "settlement_run_id", "verified", "verified_at",
    "event_type", "value", "currency", "click_id", "order_id", "occurred_at",
    "ip_address", "user_agent", "country", "device_type", "browser", "os", "referrer_host", "first_visit",
    "unsigned_pixel", "supporter_id", "share_reward",
)
COPY_EVENTS = f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
INSERT_EVENT = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, metadata)"
                f" VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}, %s) ON CONFLICT (id) DO NOTHING")


class LedgerError(RuntimeError):
    """The books refused a settlement (a replay got past the lock, or a constraint broke)."""


def clean_ip(raw: str | None) -> str | None:
    """An address Postgres INET accepts, or None."""
    try:
        return str(ipaddress.ip_address(raw)) if raw else None
    except ValueError:
        return None


# COPY's text format: backslash escapes, \N for NULL. Only these values can hold arbitrary text.
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def _esc(value: str) -> str:
    # Most values need nothing, and these two checks run in C; translate costs a dict lookup per character.
    return value if value.isprintable() and "\\" not in value else value.translate(_ESCAPE)


def _text(value: str | None) -> str:
    return NULL if value is None else _esc(value)


def _opt(value: object) -> str:
    return NULL if value is None else str(value)


@functools.lru_cache(maxsize=1 << 16)
def _second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def _tail(event: Candidate, ip: str | None) -> str:
    """The columns from ``event_type`` on: what ClickHouse said about the event, whatever was decided."""
    seconds, ms = divmod(event.ts_ms, 1000)
    return (f"{event.event_type}\t{_opt(event.value)}\t{_text(event.currency)}\t{_opt(event.click_id)}"
            f"\t{_text(event.order_id)}\t{_second(seconds)}.{ms:03d}+00\t{_esc(ip) if ip else NULL}"
            f"\t{_esc(event.user_agent) if event.user_agent else NULL}\t{_esc(event.country)}"
            f"\t{_esc(event.device_type)}\t{_esc(event.browser)}\t{_esc(event.os)}\t{_esc(event.referrer_host)}"
            f"\t{'t' if event.first_visit else 'f'}\t{'t' if unsigned_pixel(event) else 'f'}")


def _share(event: Candidate, owned: bool, reward: Decimal | None) -> str:
    """The share columns: the link's supporter (none without a campaign) and what it earned on the event."""
    return f"\t{_opt(event.supporter_id) if owned else NULL}\t{_opt(reward)}"


def copy_lines(events: Iterable[tuple[Candidate, str]], *, campaign_id: str | None, run_id: str, now: datetime,
               clean: bool = False) -> list[str]:
    """COPY lines of events rejected with a reason (``campaign_id`` None: recorded without foreign keys)."""
    head = f"\t{_opt(campaign_id)}\t"
    middle = f"\t\\N\t\\N\t\\N\tf\t\\N\t{run_id}\tf\t{now}\t"
    owned = campaign_id is not None
    return [
        f"{e.event_id}{head}{_opt(e.creator_id) if owned else NULL}\t{_opt(e.link_id) if owned else NULL}"
        f"\trejected\t{_text(reason)}{middle}{_tail(e, clean_ip(e.ip) if clean else e.ip)}{_share(e, owned, None)}"
        for e, reason in events
    ]


def paid_lines(events: Iterable[Candidate], *, campaign_id: str, transfer_id: str, payout: Decimal, fee: Decimal,
               reward: Decimal | None, run_id: str, now: datetime, clean: bool = False) -> list[str]:
    """COPY lines of one transfer's paid events (``reward``: each one's share reward, or None)."""
    middle = f"\tpaid\t\\N\t{transfer_id}\t{payout}\t{fee}\tt\t{now}\t{run_id}\tt\t{now}\t"
    return [
        f"{e.event_id}\t{campaign_id}\t{_opt(e.creator_id)}\t{_opt(e.link_id)}{middle}"
        f"{_tail(e, clean_ip(e.ip) if clean else e.ip)}{_share(e, True, reward)}"
        for e in events
    ]


def copy_events(conn: psycopg.Connection, build: Callable[[bool], list[str]]) -> None:
    """Record decided events with one COPY of ``build(clean)``'s lines; a duplicate id aborts the
    transaction (only a lock bypass could cause one).

    IPs go in raw (the edge took them from a socket or a trusted proxy); if
    Postgres refuses one, the lines are made again with every IP checked
    (``build(True)``) and sent again.
    """
    lines = build(False)
    if not lines:
        return
    try:
        try:
            with conn.transaction(), conn.cursor().copy(COPY_EVENTS) as copy:
                copy.write(("\n".join(lines) + "\n").encode())
        except psycopg.errors.InvalidTextRepresentation:
            with conn.cursor().copy(COPY_EVENTS) as copy:
                copy.write(("\n".join(build(True)) + "\n").encode())
    except psycopg.errors.UniqueViolation as exc:
        raise LedgerError(f"an event was already decided: {exc.diag.message_detail}") from exc


def insert_event(conn: psycopg.Connection, event: Candidate, *, campaign_id: str | None, status: str,
                 reason: str | None, run_id: str, now: datetime, metadata: dict) -> None:
    """Record one decided event with its metadata (a refund); an id already recorded is left as it is."""
    owned = campaign_id is not None
    paid = status == "paid"
    conn.execute(INSERT_EVENT, (
        event.event_id, campaign_id, event.creator_id if owned else None, event.link_id if owned else None,
        status, reason, None, None, None, paid, now if paid else None, run_id, paid, now,
        event.event_type, event.value, event.currency, event.click_id, event.order_id,
        datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC), clean_ip(event.ip), event.user_agent or None,
        event.country, event.device_type, event.browser, event.os, event.referrer_host, event.first_visit,
        unsigned_pixel(event), event.supporter_id if owned else None, None, Jsonb(metadata),
    ))
