"""The database is the last line: what the request role and the service roles may call, and what they may not.

Attacks run as ``oros_app`` inside a request-like transaction (``as_user``),
and as the login roles that hold only ``oros_api`` or ``oros_tracker``.
"""

from __future__ import annotations

import secrets
import uuid
from decimal import Decimal

import orjson
import psycopg
import pytest

from oros.connections import as_user, pg_pool
from settler.reconcile import reconcile

SYSTEM = "00000000-0000-0000-0000-000000000001"
SEARCH_PATH = "search_path=pg_catalog, public, pg_temp"
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidParameterValue)

# Every function some role other than the owner may execute, and who. PUBLIC may execute none.
EXECUTABLE = {
    # Called by the request role's RLS policies (a policy runs with the querying role's rights).
    "auth.uid()": {"oros_app"},
    "auth.is_admin()": {"oros_app"},  # answers only about the caller
    "auth.is_campaign_member(uuid)": {"oros_app"},  # answers only about the caller
    # A creator's withdrawal: acts only for auth.uid(), a KYC-approved non-system user.
    "oros_request_withdrawal(numeric,text)": {"oros_app"},
    # A business's pending Stripe funding: only for a campaign whose business is auth.uid().
    "oros_open_stripe_funding(uuid,uuid,numeric,text)": {"oros_app"},
    # Admin endpoints: each checks auth.is_admin().
    "oros_set_kyc(uuid,text)": {"oros_app"},
    "oros_admin_fund_campaign(uuid,numeric,text)": {"oros_app"},
    "oros_post_adjustment(text,jsonb)": {"oros_app"},
    # A business's new pixel secret: acts only for auth.uid(), who must hold the business role (0031).
    "oros_rotate_pixel_secret(text,integer)": {"oros_app"},
    # Webhook endpoints (0065): each acts only on auth.uid()'s own endpoints; create checks its roles.
    "oros_create_webhook_endpoint(text,text[],text)": {"oros_app"},
    "oros_disable_webhook_endpoint(uuid)": {"oros_app"},
    "oros_rotate_webhook_secret(uuid,text,integer)": {"oros_app"},
    "oros_retry_webhook_delivery(uuid,uuid)": {"oros_app"},
    # No user yet: the admin API's role only, never the request role.
    "oros_sign_up(text,text,text,text)": {"oros_api"},  # a bare user; roles are added as that user
    # Only a row POST /fund opened, for its amount and currency (0029).
    "oros_credit_payment_intent(text,text,numeric,text)": {"oros_api"},
    "oros_fail_stripe_funding(text)": {"oros_api"},
    # Supporters (0077-0080). As the caller: a tip or membership of auth.uid() only, terms that are public.
    "oros_remember_stripe_customer(text)": {"oros_app"},
    "oros_tip_terms(uuid,uuid)": {"oros_app"},
    "oros_open_tip(uuid,uuid,numeric,text,uuid,text,text,text)": {"oros_app"},  # only a supporter, for itself
    "oros_cancel_monthly_tip(uuid)": {"oros_app"},
    "oros_open_membership(uuid,text,text)": {"oros_app"},
    "oros_request_membership_cancel(uuid,timestamp with time zone)": {"oros_app"},
    "oros_activation_blocker(uuid)": {"oros_app"},  # public facts: a campaign frozen, a business owing
    # The webhook: only a tip or membership the API opened, for its amount; Stripe's refunds and disputes.
    "oros_credit_tip(text,text,text,text,numeric,text,numeric,integer)": {"oros_api"},
    "oros_fail_tip_intent(text)": {"oros_api"},
    "oros_end_tip_subscription(text)": {"oros_api"},
    "oros_membership_paid(text,text,text,text,numeric,text,numeric,numeric,timestamp with time zone)": {"oros_api"},
    "oros_membership_changed(text,text,boolean,timestamp with time zone,timestamp with time zone)": {"oros_api"},
    "oros_end_membership(text)": {"oros_api"},
    "oros_membership_payment_failed(text)": {"oros_api"},
    "oros_record_refund(text,text,numeric)": {"oros_api"},
    "oros_note_refund(text,text,numeric)": {"oros_api"},
    "oros_note_dispute(text,text,text,numeric,text,boolean,boolean)": {"oros_api"},
    "oros_record_dispute(text,text,text,numeric,text,boolean,boolean)": {"oros_api"},
    # Boosts (0102-0106). As the caller: a boost of auth.uid() only, if it may boost; refund-unspent only for the
    # campaign's business or an admin, under the campaign's lock.
    "oros_boost_blocker(uuid)": {"oros_app"},  # answers about the caller and a campaign's status
    "oros_open_boost(uuid,uuid,numeric,text)": {"oros_app"},
    # As the API's role (0160): the share percent and the address are its terms, not the caller's.
    "oros_open_share(uuid,text,text,text,numeric,text,inet,text)": {"oros_api"},
    "oros_refund_unspent(uuid)": {"oros_app"},
    # Display name or username of creators and businesses only: never an email, never a supporter (0165).
    "oros_public_names(uuid[])": {"oros_app"},
    "oros_live_sale_holds(uuid[])": {"oros_app"},
    # The webhook: only a boost the API opened, for its amount; the refund sender: only a pending issued refund.
    "oros_credit_boost(text,text,numeric,text,numeric)": {"oros_api"},
    "oros_fail_boost_intent(text)": {"oros_api"},
    "oros_take_issued_refund(uuid)": {"oros_api"},
    "oros_pending_issued_refunds(integer)": {"oros_api"},
    "oros_finish_issued_refund(uuid,text,boolean,text)": {"oros_api"},
    # Live shopping (0115). As the caller: open only on a campaign auth.uid() is accepted on, move only its own
    # event (on the database's clock), set a commission only as the campaign's business, before it goes live.
    "oros_open_live_event(uuid,text,timestamp with time zone,text,text)": {"oros_app"},
    "oros_move_live_event(uuid,text)": {"oros_app"},
    "oros_set_live_commission(uuid,numeric)": {"oros_app"},
}

GRANTEES_SQL = """
SELECT p.oid::regprocedure::text AS fn, p.prosecdef AS definer, p.proconfig AS config,
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public,
       array(SELECT r FROM unnest(ARRAY['oros_app', 'oros_api', 'oros_tracker', 'oros_webhooks']) r
              WHERE has_function_privilege(r, p.oid, 'EXECUTE') ORDER BY r) AS roles
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('public', 'auth')
"""


def make_user(pg, *, kyc: str = "approved") -> str:
    return pg.execute("INSERT INTO users (email, kyc_status) VALUES (%s, %s) RETURNING id::text AS id",
                      (f"{secrets.token_hex(6)}@example.com", kyc)).fetchone()["id"]


def make_campaign(pg, business: str) -> str:
    return pg.execute(
        "INSERT INTO campaigns (business_id, title, objective, payout_per_action, total_budget)"
        " VALUES (%s, 't', 'click', 1.00, 100) RETURNING id::text AS id", (business,)).fetchone()["id"]


def main_wallet(pg, user: str) -> str:
    return pg.execute("SELECT id::text AS id FROM wallets WHERE user_id = %s AND purpose = 'main'",
                      (user,)).fetchone()["id"]


def available(pg, user: str) -> Decimal:
    return pg.execute("SELECT available_balance FROM wallets WHERE user_id = %s AND purpose = 'main'",
                      (user,)).fetchone()["available_balance"]


def credit(pg, user: str, amount: str) -> None:
    pg.execute(
        """INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)
           SELECT w, t, 'adjustment', %(amount)s, d, 'settled'
             FROM (VALUES (%(wallet)s::uuid, 'credit'), (oros_platform_wallet('clearing'), 'debit')) AS legs(w, d),
                  (SELECT gen_random_uuid() AS t) AS tr""",
        {"amount": Decimal(amount), "wallet": main_wallet(pg, user)})


def money(pg) -> dict:
    return pg.execute(
        "SELECT (SELECT count(*) FROM ledger_entries) AS entries, (SELECT count(*) FROM withdrawals) AS withdrawals,"
        " (SELECT sum(available_balance) FROM wallets) AS available,"
        " (SELECT sum(pending_balance) FROM wallets) AS pending,"
        " (SELECT sum(remaining_budget) FROM campaigns) AS budgets"
    ).fetchone()


def leg(direction: str, amount: object = "5.00", **wallet) -> dict:
    return {**wallet, "direction": direction, "amount": amount}


def assert_books_balance(settings) -> None:
    failed = [check for check in reconcile(settings) if not check.ok]
    assert not failed, failed


@pytest.fixture
async def pool(settings):
    """The admin API's pool as today's code builds it (the owner's DSN in tests); requests run as_user."""
    pool = pg_pool(settings, max_size=2)
    await pool.open(wait=True)
    yield pool
    await pool.close()


async def refused(pool, user: str | None, statement: str, params=None, errors=REFUSED) -> None:
    """``statement`` inside a request transaction for ``user`` is refused, and leaves nothing behind."""
    with pytest.raises(errors):
        async with as_user(pool, user) as conn:
            await conn.execute(statement, params)


# -- the catalog -----------------------------------------------------------------------------


def test_only_the_allow_listed_functions_are_executable_and_definers_pin_search_path(pg):
    rows = pg.execute(GRANTEES_SQL).fetchall()
    assert [r["fn"] for r in rows if r["public"]] == []
    assert {r["fn"]: set(r["roles"]) for r in rows if r["roles"]} == EXECUTABLE
    unpinned = [r["fn"] for r in rows if r["definer"] and SEARCH_PATH not in (r["config"] or [])]
    assert unpinned == []


def test_a_function_created_later_is_not_executable_by_public(pg):
    pg.execute("CREATE FUNCTION public.oros_added_later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    row = pg.execute(f"SELECT * FROM ({GRANTEES_SQL}) f WHERE fn = 'oros_added_later()'").fetchone()
    assert (row["public"], row["roles"]) == (False, [])


def test_no_temp_and_no_connect_for_public_on_the_migrated_database(pg):
    row = pg.execute(
        "SELECT has_database_privilege('oros_app', current_database(), 'TEMP') AS app,"
        " has_database_privilege('oros_api', current_database(), 'TEMP') AS api,"
        " has_database_privilege('oros_tracker', current_database(), 'TEMP') AS tracker,"
        " has_database_privilege('oros_webhooks', current_database(), 'TEMP') AS webhooks,"
        " has_database_privilege('public', current_database(), 'CONNECT') AS public_connect,"
        " has_schema_privilege('oros_app', 'public', 'CREATE') AS app_create"
    ).fetchone()
    assert row == {"app": False, "api": False, "tracker": False, "webhooks": False, "public_connect": False,
                   "app_create": False}


# -- the request role (oros_app inside as_user) ----------------------------------------------


async def test_request_role_cannot_call_the_jobs_money_functions_or_write_money_tables(pool, pg, settings):
    business, creator = make_user(pg), make_user(pg)
    campaign = make_campaign(pg, business)
    credit(pg, creator, "20.00")
    withdrawal = pg.execute(
        "INSERT INTO withdrawals (wallet_id, amount, method) VALUES (%s, 5.00, 'ach') RETURNING id::text AS id",
        (main_wallet(pg, creator),)).fetchone()["id"]
    before = money(pg)
    for statement, params in [
        ("SELECT oros_fund_campaign(%s, 5000000, 'manual', 'x', NULL)", (campaign,)),
        ("SELECT oros_fund_campaign(%s, 5000000, 'stripe', 'pi_x', NULL, 'pi_x')", (campaign,)),
        ("SELECT oros_finish_withdrawal(%s, true, 'tr_forged', NULL)", (withdrawal,)),
        ("SELECT oros_release_holds(now() + interval '100 years')", None),
        ("SELECT oros_platform_wallet('escrow')", None),
        # The settler's ledger functions (0040, 0041): pay a creator, reverse a sale, move balances outright.
        ("SELECT oros_post_settlement(%s, gen_random_uuid(), now(), false, ARRAY[gen_random_uuid()],"
         " ARRAY[%s::uuid], ARRAY[1000], ARRAY[0], '{}', '{}', '{}', ARRAY[NULL]::uuid[], ARRAY[0])",
         (campaign, creator)),
        ("SELECT oros_book_payouts(%s, now(), ARRAY[gen_random_uuid()], ARRAY[%s::uuid], ARRAY[1000], ARRAY[0],"
         " ARRAY['{}'::jsonb])", (campaign, creator)),
        ("SELECT oros_reverse_sale(gen_random_uuid(), NULL, 0, 0, gen_random_uuid(), gen_random_uuid())", None),
        ("SELECT oros_move_balances(ARRAY[w.id], ARRAY[1000.00], ARRAY[0]) FROM wallets w", None),
        ("INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction, status)"
         " SELECT id, gen_random_uuid(), 'adjustment', 1000, 'credit', 'settled' FROM wallets", None),
        ("UPDATE ledger_entries SET status = 'settled'", None),
        ("DELETE FROM ledger_entries", None),
        ("INSERT INTO wallets (user_id, purpose) VALUES (%s, 'fees')", (creator,)),
        ("UPDATE wallets SET available_balance = 1000000", None),
        ("DELETE FROM wallets", None),
        ("UPDATE campaigns SET remaining_budget = 100, funded_budget = 100", None),
        ("INSERT INTO campaign_fundings (campaign_id, amount, method, status) VALUES (%s, 10, 'manual', 'succeeded')",
         (campaign,)),
    ]:
        for user in (creator, business, None):
            await refused(pool, user, statement, params, psycopg.errors.InsufficientPrivilege)
    assert money(pg) == before
    assert_books_balance(settings)


async def test_temp_table_cannot_shadow_the_ledger_in_a_definer_function(pool, pg, settings):
    """The reported attack: a temp ledger_entries swallowed the reservation of a 1,000.00 withdrawal."""
    creator = make_user(pg)
    before = money(pg)
    await refused(pool, creator, "CREATE TEMP TABLE ledger_entries (LIKE public.ledger_entries)", None,
                  psycopg.errors.InsufficientPrivilege)

    # Even a role that could create one (TEMP granted here on purpose): pg_temp is searched last.
    pg.execute(f'GRANT TEMPORARY ON DATABASE "{pg.info.dbname}" TO oros_app')
    with pytest.raises(psycopg.errors.CheckViolation, match="positive_available"):
        async with as_user(pool, creator) as conn:
            await conn.execute("CREATE TEMP TABLE ledger_entries (LIKE public.ledger_entries) ON COMMIT DROP")
            await conn.execute("SELECT oros_request_withdrawal(1000.00, 'ach')")
    assert money(pg) == before
    assert_books_balance(settings)


async def test_request_withdrawal_acts_only_for_its_caller(pool, pg, settings):
    me, victim, unverified = make_user(pg), make_user(pg), make_user(pg, kyc="pending")
    credit(pg, victim, "500.00")
    credit(pg, unverified, "50.00")
    credit(pg, me, "1.00")
    # No parameter names a user or a wallet: auth.uid() alone decides.
    args = pg.execute("SELECT oidvectortypes(proargtypes) AS args FROM pg_proc"
                      " WHERE proname = 'oros_request_withdrawal'").fetchone()["args"]
    assert args == "numeric, text"
    before = money(pg)
    call = "SELECT oros_request_withdrawal(%s, 'ach')"
    for user in (None, SYSTEM, unverified, str(uuid.uuid4())):
        await refused(pool, user, call, (Decimal("10.00"),), psycopg.errors.InsufficientPrivilege)
    for value in (None, Decimal("-5.00"), Decimal("0"), Decimal("0.001")):
        await refused(pool, me, call, (value,), psycopg.errors.InvalidParameterValue)
    # A temp wallets table naming the victim's wallet as mine (TEMP granted on purpose) is not consulted.
    pg.execute(f'GRANT TEMPORARY ON DATABASE "{pg.info.dbname}" TO oros_app')
    with pytest.raises(psycopg.errors.CheckViolation, match="positive_available"):
        async with as_user(pool, me) as conn:
            await conn.execute("CREATE TEMP TABLE wallets ON COMMIT DROP AS"
                               " SELECT id, %s::uuid AS user_id, 'main'::text AS purpose FROM public.wallets"
                               " WHERE id = %s", (me, main_wallet(pg, victim)))
            await conn.execute(call, (Decimal("400.00"),))
    assert money(pg) == before and available(pg, victim) == Decimal("500.00")
    assert_books_balance(settings)


async def test_functions_granted_to_the_request_role_refuse_other_users_nulls_and_bad_amounts(pool, pg, settings):
    business, rival, creator = make_user(pg), make_user(pg), make_user(pg)
    campaign = make_campaign(pg, business)
    admin = make_user(pg)
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'admin')", (admin,))
    credit(pg, creator, "10.00")
    before = money(pg)
    open_funding = "SELECT oros_open_stripe_funding(gen_random_uuid(), %s, %s, %s)"
    for user, params in [(rival, (campaign, 10, "pi_1")), (None, (campaign, 10, "pi_1")),
                         (business, (None, 10, "pi_1")), (business, (campaign, -10, "pi_1")),
                         (business, (campaign, None, "pi_1")), (business, (campaign, 10, None)),
                         (business, (campaign, Decimal("0.001"), "pi_1"))]:
        await refused(pool, user, open_funding, params)

    legs = orjson.dumps([{"platform": "clearing", "direction": "debit", "amount": "5.00"},
                         {"user_id": creator, "direction": "credit", "amount": "5.00"}]).decode()
    # Admin functions refuse everyone else, however their arguments look.
    for user in (creator, business, None):
        await refused(pool, user, "SELECT oros_set_kyc(%s, 'approved')", (rival,))
        await refused(pool, user, "SELECT oros_admin_fund_campaign(%s, 5000000, 'wire')", (campaign,))
        await refused(pool, user, "SELECT oros_post_adjustment('gift', %s::jsonb)", (legs,))
    # An admin's arguments are checked too.
    for params in [(campaign, None, "wire"), (campaign, -1, "wire"), (campaign, 1, None), (campaign, 1, " ")]:
        await refused(pool, admin, "SELECT oros_admin_fund_campaign(%s, %s, %s)", params)
    await refused(pool, admin, "SELECT oros_set_kyc(%s, 'approved')", (SYSTEM,), psycopg.errors.NoDataFound)
    escrow = pg.execute("SELECT oros_platform_wallet('escrow')::text AS w").fetchone()["w"]
    clearing, to_creator = {"platform": "clearing"}, {"user_id": creator}
    for bad in [
        [leg("debit", platform="escrow"), leg("credit", **to_creator)],
        [leg("debit", **clearing), leg("credit", user_id=SYSTEM)],
        [leg("credit", wallet_id=escrow), leg("debit", **clearing)],
        [leg("debit", "-5.00", **clearing), leg("credit", "-5.00", **to_creator)],
        [leg("debit", None, **clearing), leg("credit", None, **to_creator)],
        [leg("debit", 5, **clearing), leg("credit", 5, **to_creator)],
        [leg("debit", **clearing), leg("credit", "4.00", **to_creator)],
        [leg("debit", **clearing, **to_creator), leg("credit", **to_creator)],
        [leg("sideways", **clearing), leg("credit", **to_creator)],
    ]:
        await refused(pool, admin, "SELECT oros_post_adjustment('fix', %s::jsonb)", (orjson.dumps(bad).decode(),))
    await refused(pool, admin, "SELECT oros_post_adjustment(NULL, %s::jsonb)", (legs,))
    await refused(pool, admin, "SELECT oros_post_adjustment('fix', NULL)", None)
    # The functions without a user belong to the API's role, not to a request.
    for statement in (
        "SELECT oros_sign_up('x@example.com', 'h', NULL, NULL)",
        "SELECT * FROM oros_credit_payment_intent('evt_1', 'pi_1', 10, 'usd')",
        "SELECT oros_fail_stripe_funding('pi_1')",
    ):
        await refused(pool, admin, statement, None, psycopg.errors.InsufficientPrivilege)
    assert money(pg) == before
    assert pg.execute("SELECT count(*) AS n FROM campaign_fundings").fetchone()["n"] == 0
    assert_books_balance(settings)


# Functions added since share links (0110+) that pay, reverse or decide who earns what: the settler's (the owner
# only) or, for oros_open_share, the API role's, whose arguments carry the deployment's terms.
MONEY_SINCE_SHARES = ("oros_book_payouts", "oros_post_settlement", "oros_reverse_sale", "oros_book_live_legs",
                      "oros_reverse_and_rebook", "oros_sale_held_until",
                      "oros_post_live_sales", "oros_reverse_live_sale", "oros_pay_boost_rewards",
                      "oros_campaign_payouts_held_until", "oros_share_blocker", "oros_open_share",
                      "oros_give_back_unspent", "oros_unspent_boosts_due", "oros_unspent_settled")
_OPEN_SHARE = "SELECT * FROM oros_open_share(%s, %s, %s, 'https://evil.example', %s, NULL, NULL, NULL)"


async def test_request_role_cannot_open_a_share_at_terms_of_its_own(pool, pg, api_settings, settings):
    """The attack (fixed by 0160): as the request role, a share link at 100% with no address (own clicks paid)."""
    callable_ = pg.execute("SELECT p.oid::regprocedure::text AS fn FROM pg_proc p WHERE p.proname = ANY(%s)"
                           " AND has_function_privilege('oros_app', p.oid, 'EXECUTE')",
                           (list(MONEY_SINCE_SHARES),)).fetchall()
    assert callable_ == []
    supporter, business, creator = make_user(pg), make_user(pg), make_user(pg)
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'supporter'), (%s, 'creator')", (supporter, creator))
    campaign = make_campaign(pg, business)
    pg.execute("UPDATE campaigns SET status = 'active', destination_url = 'https://shop.example/' WHERE id = %s",
               (campaign,))
    pg.execute("INSERT INTO campaign_creators (campaign_id, creator_id, status) VALUES (%s, %s, 'accepted')",
               (campaign, creator))
    code = secrets.token_urlsafe(8)
    pg.execute("INSERT INTO tracking_links (campaign_id, creator_id, code, url, destination_url)"
               " VALUES (%s, %s, %s, 'http://t/x', 'https://shop.example/')",
               (campaign, creator, code))
    for user in (supporter, None):
        await refused(pool, user, _OPEN_SHARE, (supporter, code, "forged1", Decimal(100)),
                      psycopg.errors.InsufficientPrivilege)
    # The signature the request role could call is gone.
    await refused(pool, supporter, "SELECT * FROM oros_open_share(%s, 'forged2', 'https://evil.example', 100,"
                  " NULL, NULL)", (code,), psycopg.errors.UndefinedFunction)
    # The API's role: a percent out of range, or someone who is no supporter, is refused too.
    with psycopg.connect(api_settings.database_url, autocommit=True) as api:
        for pct in (None, Decimal(-1), Decimal("100.01")):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                api.execute(_OPEN_SHARE, (supporter, code, "forged3", pct))
        for user in (creator, None, str(uuid.uuid4())):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api.execute(_OPEN_SHARE, (user, code, "forged4", Decimal(10)))
        shares = pg.execute("SELECT count(*) AS n FROM tracking_links WHERE supporter_id IS NOT NULL").fetchone()
        assert shares["n"] == 0
        api.execute(_OPEN_SHARE, (supporter, code, "made1", Decimal(10)))
    made = pg.execute("SELECT supporter_id::text AS s, share_pct FROM tracking_links WHERE code = 'made1'").fetchone()
    assert (made["s"], made["share_pct"]) == (supporter, Decimal("10.00"))


async def test_public_names_are_creators_and_businesses_only_and_never_an_email(pool, pg):
    people = {}
    for role in ("creator", "business", "supporter", "admin", None):
        people[role] = make_user(pg)
        if role:
            pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", (people[role], role))
        pg.execute("UPDATE users SET display_name = %s WHERE id = %s", (f"{role} name", people[role]))
    pg.execute("UPDATE users SET display_name = '', username = 'shop_user' WHERE id = %s", (people["business"],))
    nameless, staff = make_user(pg), make_user(pg)
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator')", (nameless,))
    # An admin who also creates keeps its name private.
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator'), (%s, 'admin')", (staff, staff))
    pg.execute("UPDATE users SET display_name = 'staff name' WHERE id = %s", (staff,))
    async with as_user(pool, people["supporter"]) as conn:
        rows = await (await conn.execute("SELECT id::text AS id, name FROM oros_public_names(%s::uuid[])",
                                         ([*people.values(), nameless, staff],))).fetchall()
    assert {r["id"]: r["name"] for r in rows} == {people["creator"]: "creator name", people["business"]: "shop_user"}
    # One page at most, whatever the array's shape: a slice [1:200] of a 2-D array kept all of it.
    padded = [[str(uuid.uuid4())] * 2 for _ in range(100)] + [[people["creator"]] * 2]
    async with as_user(pool, people["supporter"]) as conn:
        assert await (await conn.execute("SELECT * FROM oros_public_names(%s::uuid[])", (padded,))).fetchall() == []


async def test_webhook_functions_act_only_for_their_caller(pool, pg):
    creator, stranger = make_user(pg), make_user(pg)
    pg.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'creator'), (%s, 'creator')", (creator, stranger))
    secret = "whsec_" + secrets.token_urlsafe(32)
    create = "SELECT id::text AS id FROM oros_create_webhook_endpoint(%s, %s, %s)"
    for user, params in [(None, ("https://x.example", ["earning.credited"], secret)),
                         (SYSTEM, ("https://x.example", ["earning.credited"], secret)),
                         (creator, ("https://x.example", ["conversion.recorded"], secret)),  # not a business
                         (creator, ("https://x.example", ["earning.*"], secret)),
                         (creator, ("https://x.example", [], secret)), (creator, ("https://x.example", None, secret)),
                         (creator, ("ftp://x.example", ["earning.credited"], secret)),
                         (creator, (None, ["earning.credited"], secret)),
                         (creator, ("https://x.example", ["earning.credited"], "short"))]:
        await refused(pool, user, create, params, REFUSED + (psycopg.errors.CheckViolation,))
    assert pg.execute("SELECT count(*) AS n FROM webhook_endpoints").fetchone()["n"] == 0
    async with as_user(pool, creator) as conn:
        endpoint = (await (await conn.execute(create, ("https://x.example", ["earning.credited"], secret))
                           ).fetchone())["id"]
    async with as_user(pool, stranger) as conn:
        for statement, params in [("SELECT * FROM oros_disable_webhook_endpoint(%s)", (endpoint,)),
                                  ("SELECT * FROM oros_rotate_webhook_secret(%s, %s, 0)", (endpoint, secret + "x")),
                                  ("SELECT * FROM oros_retry_webhook_delivery(%s, gen_random_uuid())", (endpoint,))]:
            assert await (await conn.execute(statement, params)).fetchall() == []
    for grace in (None, -1, 86401):
        await refused(pool, creator, "SELECT * FROM oros_rotate_webhook_secret(%s, %s, %s)",
                      (endpoint, secret + "y", grace))
    row = pg.execute("SELECT e.disabled_at, count(s.*) AS secrets FROM webhook_endpoints e"
                     " JOIN webhook_endpoint_secrets s ON s.endpoint_id = e.id GROUP BY e.id").fetchone()
    assert row == {"disabled_at": None, "secrets": 1}


# -- the service login roles -----------------------------------------------------------------


def owner_name(pg) -> str:
    return pg.execute("SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 'ledger_entries'::regclass"
                      ).fetchone()["o"]


def test_roles_are_unprivileged_and_request_role_belongs_to_nothing(pg, service_logins):
    names = ["oros_app", "oros_api", "oros_tracker", "oros_webhooks", *(login for login, _ in service_logins.values())]
    rows = pg.execute(
        "SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication AS privileged,"
        " rolinherit, array(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
        "  WHERE m.member = r.oid ORDER BY 1)::text[] AS member_of"
        " FROM pg_roles r WHERE rolname = ANY(%s) ORDER BY rolname", (names,)).fetchall()
    by_name = {r["rolname"]: r for r in rows}
    assert not any(r["privileged"] for r in rows)
    assert all(by_name[group]["member_of"] == [] for group in ("oros_app", "oros_tracker", "oros_webhooks"))
    assert by_name["oros_api"]["member_of"] == ["oros_app"] and by_name["oros_api"]["rolinherit"] is False
    assert by_name[service_logins["oros_api"][0]]["member_of"] == ["oros_api"]
    assert by_name[service_logins["oros_tracker"][0]]["member_of"] == ["oros_tracker"]
    assert by_name[service_logins["oros_webhooks"][0]]["member_of"] == ["oros_webhooks"]


def test_api_login_cannot_climb_to_the_owner_or_do_owner_work(pg, api_settings, settings):
    campaign = make_campaign(pg, make_user(pg))
    owner = owner_name(pg)
    before = money(pg)
    attempts = [
        (f'SET ROLE "{owner}"', None), ("SET ROLE oros_tracker", None), ("SET ROLE postgres", None),
        ("SELECT oros_fund_campaign(%s, 5000000, 'manual', 'x', NULL)", (campaign,)),
        ("SELECT oros_release_holds(now())", None),
        ("SELECT oros_finish_withdrawal(gen_random_uuid(), true, NULL, NULL)", None),
        ("SELECT oros_post_settlement(%s, gen_random_uuid(), now(), true, '{}', '{}', '{}', '{}', '{}', '{}', '{}',"
         " '{}', '{}')", (campaign,)),
        ("SELECT oros_move_balances(ARRAY[gen_random_uuid()], ARRAY[1.00], ARRAY[0])", None),
        ("INSERT INTO ledger_entries (wallet_id, transfer_id, source_type, amount, direction)"
         " SELECT id, gen_random_uuid(), 'adjustment', 1, 'credit' FROM wallets", None),
        ("UPDATE wallets SET available_balance = 1", None), ("SELECT * FROM wallets", None),
        ("SELECT kyc_status FROM users", None), ("UPDATE users SET kyc_status = 'approved'", None),
        ("INSERT INTO user_roles (user_id, role) SELECT id, 'admin' FROM users", None),
        ("CREATE TEMP TABLE ledger_entries (id int)", None), ("CREATE TABLE public.planted (id int)", None),
        ("SELECT oros_post_adjustment('x', '[]')", None),  # granted to oros_app, which oros_api does not inherit
    ]
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        for statement, params in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, params)
        # From the request role, RESET ROLE only returns to the login: still no owner work.
        with conn.transaction():
            conn.execute("SET LOCAL ROLE oros_app")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'SET ROLE "{owner}"')
        with conn.transaction():
            conn.execute("SET LOCAL ROLE oros_app")
            conn.execute("RESET ROLE")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT oros_fund_campaign(%s, 5000000, 'manual', 'x', NULL)", (campaign,))
    assert money(pg) == before
    assert_books_balance(settings)


def test_tracker_login_reads_links_and_keys_and_nothing_else(pg, tracker_settings):
    owner = owner_name(pg)
    with psycopg.connect(tracker_settings.database_url, autocommit=True) as conn:
        for statement in (f'SET ROLE "{owner}"', "SET ROLE oros_app", "SET ROLE oros_api",
                          "SELECT * FROM wallets", "SELECT email FROM users", "SELECT * FROM ledger_entries",
                          "SELECT payout_per_action FROM campaigns", "SELECT name FROM api_keys",
                          "UPDATE api_keys SET revoked_at = NULL", "UPDATE campaigns SET status = 'active'",
                          "INSERT INTO tracking_links (code, url, destination_url) VALUES ('abcd', 'x', 'https://x')",
                          "SELECT oros_request_withdrawal(1, 'ach')", "SELECT auth.uid()",
                          "CREATE TEMP TABLE t (id int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


async def test_a_spoofed_subject_does_not_outlive_its_transaction(pg, api_settings):
    """set_config is open to any session: as_user sets both settings per transaction, overriding leftovers."""
    me, other = make_user(pg), make_user(pg)
    pool = pg_pool(api_settings, min_size=1, max_size=1)
    await pool.open(wait=True)
    try:
        async with as_user(pool, me) as conn:
            await conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (other,))
        async with as_user(pool, me) as conn:
            assert (await (await conn.execute("SELECT auth.uid()::text AS u")).fetchone())["u"] == me
    finally:
        await pool.close()


def test_the_api_roles_functions_refuse_nulls_strangers_and_wrong_amounts(pg, api_settings, settings):
    business = make_user(pg)
    campaign = make_campaign(pg, business)
    for pi in ("pi_open", "pi_probe"):
        pg.execute("INSERT INTO campaign_fundings (campaign_id, amount, method, stripe_payment_intent_id, status)"
                   " VALUES (%s, 40.00, 'stripe', %s, 'pending')", (campaign, pi))
    before = money(pg)
    credit = "SELECT outcome FROM oros_credit_payment_intent('evt', %s, %s, %s)"
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        for params in [(None, "h"), ("x@example.com", None)]:
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute("SELECT oros_sign_up(%s, %s, NULL, NULL)", params)
        # An intent we did not open credits nothing, whatever it carries.
        for pi in ("pi_stranger", None):
            assert conn.execute(credit, (pi, Decimal("40.00"), "usd")).fetchone()[0] == "ignored"
        # Any other amount or currency refuses the row for good, and credits nothing.
        for value, currency in [(None, "usd"), (Decimal("-40.00"), "usd"), (Decimal("4000000.00"), "usd"),
                                (Decimal("39.99"), "usd"), (Decimal("40.00"), "eur"), (Decimal("40.00"), None)]:
            assert conn.execute(credit, ("pi_probe", value, currency)).fetchone()[0] == "refused"
        assert conn.execute(credit, ("pi_probe", Decimal("40.00"), "usd")).fetchone()[0] == "refused"
        assert conn.execute("SELECT oros_fail_stripe_funding(NULL)").fetchone()[0] == 0
        assert conn.execute("SELECT oros_fail_stripe_funding('pi_stranger')").fetchone()[0] == 0
        credited = conn.execute(credit, ("pi_open", Decimal("40.00"), "usd")).fetchone()[0]
        again = conn.execute(credit, ("pi_open", Decimal("40.00"), "usd")).fetchone()[0]
    assert (credited, again) == ("credited", "ignored")
    after = money(pg)
    assert after["budgets"] == before["budgets"] + Decimal("40.00") and after["entries"] == before["entries"] + 2
    assert_books_balance(settings)
