"""Every Postgres advisory lock OROS takes, named once so no two uses share an id by accident.

Postgres keeps two key spaces apart: one ``bigint`` key (``pg_advisory_lock(bigint)``)
and a pair of ``int`` keys (``pg_advisory_lock(int, int)``); a lock in one never blocks
the other. The values are those the code has always used (changing one would let an old
and a new process, mid-deploy, both think they hold the lock), hence their mixed styles.
"""

from __future__ import annotations

# Session locks on one bigint key, held for a whole run.
MIGRATION_LOCK = 0x0905_0001  # oros.migrate: one migration run at a time
SETTLE_LOCK = 0x0905_0004  # settler.run: settlement runs are serial (docs/settlement.md)
PAYOUTS_LOCK = 0x6F726F73_7061790A  # settler.payouts: one payout run (the bytes of "orospay\n")

# Transaction locks on an (int, int) pair: the class, then hashtext() of what is locked.
IDEMPOTENCY_CLASS = 0x1DE0  # admin_api.idempotency: one request per (user, Idempotency-Key)
ACTIVATION_CLASS = 0xAC71  # admin_api.memberships: a business's campaign activations, one at a time (its limit)

# Taken in SQL, not from Python (listed so a new id does not reuse them):
# * sql/postgres/0031_pixel_secrets.sql, oros_rotate_pixel_secret: bigint key
#   hashtextextended('oros_pixel_secret:' || business id, 0), per business, transaction-scoped.
# * sql/postgres/0065_webhook_endpoints.sql: bigint key hashtextextended('oros_webhook_endpoints:' || owner id, 0),
#   per owner, transaction-scoped (its endpoint limit).
# * sql/postgres/0171_tip_takebacks_before_credit.sql, oros_apply_takeback: bigint key
#   hashtextextended('oros_payment:' || PaymentIntent id, 0), per Stripe payment, transaction-scoped (its credit,
#   refunds and disputes, one at a time).
# * tests/conftest.py: bigint key hashtext('oros-test-template'), building the test template database.
