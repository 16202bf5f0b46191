"""``POST /v1/admin/adjustments`` honours ``Idempotency-Key``: a retried adjustment moves money once."""

from __future__ import annotations

import asyncio
import time

from settler.reconcile import reconcile

from admin_flows import assert_error

URL = "/v1/admin/adjustments"


def goodwill(user_id: str, amount: str = "7.00") -> dict:
    return {"reason": "goodwill", "legs": [{"platform": "clearing", "direction": "debit", "amount": amount},
                                           {"user_id": user_id, "direction": "credit", "amount": amount}]}


def adjustments(pg) -> int:
    return pg.execute("SELECT count(DISTINCT transfer_id) AS n FROM ledger_entries WHERE source_type = 'adjustment'"
                      ).fetchone()["n"]


def available(pg, user_id: str) -> str:
    return str(pg.execute("SELECT available_balance FROM wallets WHERE user_id = %s AND purpose = 'main'",
                          (user_id,)).fetchone()["available_balance"])


def assert_books_balance(settings) -> None:
    failed = [check for check in reconcile(settings) if not check.ok]
    assert not failed, failed


async def test_a_retry_returns_the_first_answer_and_moves_money_once(api, make_user, admin, pg, settings):
    user = make_user("creator")
    headers = {**admin.headers, "Idempotency-Key": "adj-1"}
    first = await api.post(URL, json=goodwill(user.id), headers=headers)
    again = await api.post(URL, json=goodwill(user.id), headers=headers)
    assert first.status == again.status == 201
    assert (await first.json()) == (await again.json())
    assert adjustments(pg) == 1 and available(pg, user.id) == "7.00"

    other = await api.post(URL, json=goodwill(user.id, "8.00"), headers=headers)
    assert other.status == 422
    assert_error(await other.json(), "idempotency_key_reused", "Idempotency-Key")
    # Without a key each request is its own adjustment.
    for _ in range(2):
        assert (await api.post(URL, json=goodwill(user.id), headers=admin.headers)).status == 201
    assert adjustments(pg) == 3 and available(pg, user.id) == "21.00"
    assert_books_balance(settings)


async def test_two_concurrent_requests_with_one_key_move_money_once(api, make_user, admin, pg, settings):
    user = make_user("creator")
    headers = {**admin.headers, "Idempotency-Key": "adj-race"}
    body = goodwill(user.id)
    # Hold the creator's wallet so both requests are in flight together, then let them go.
    with pg.transaction():
        pg.execute("SELECT 1 FROM wallets WHERE user_id = %s AND purpose = 'main' FOR UPDATE", (user.id,))
        racing = [asyncio.create_task(api.post(URL, json=body, headers=headers)) for _ in range(2)]
        await _until_waiting(pg, 2)
    first, second = await asyncio.gather(*racing)
    assert first.status == second.status == 201
    assert (await first.json()) == (await second.json())
    assert adjustments(pg) == 1 and available(pg, user.id) == "7.00"
    assert_books_balance(settings)


async def _until_waiting(pg, n: int) -> None:
    """Until ``n`` other backends of this database wait on a lock (synchronisation, not a timed assertion)."""
    deadline = time.monotonic() + 20
    query = ("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
             " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
    while pg.execute(query).fetchone()["n"] < n:
        assert time.monotonic() < deadline, "the requests never reached the database together"
        pg.execute("SELECT pg_stat_clear_snapshot()")  # activity is read once per transaction otherwise
        await asyncio.sleep(0.05)
