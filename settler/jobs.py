"""The settler's jobs an admin API may run on demand, handed to it by the entrypoints (``oros.jobs``)."""

from __future__ import annotations

from oros.jobs import OwnerJobs

from .holds import release_due
from .payouts import pay_withdrawals
from .reconcile import reconcile
from .run import settle_once

OWNER_JOBS = OwnerJobs(settle=settle_once, reconcile=reconcile, release_holds=release_due,
                       pay_withdrawals=pay_withdrawals)
