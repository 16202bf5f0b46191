"""The one ``Idempotency-Key`` grammar, for the tracker's conversions and the admin API's money requests.

Up to 100 of letters, digits and ``_ . : -``: what the admin API always took,
fits ``idempotency_keys.key VARCHAR(100)`` (migration 0021), and covers UUIDs,
ULIDs and ``order-42:retry``-style keys. The tracker, which took any 1-255
printable ASCII characters, follows it (docs/api.md).
"""

from __future__ import annotations

import re

HEADER = "Idempotency-Key"
MAX_LENGTH = 100
PATTERN = rf"^[A-Za-z0-9_.:-]{{1,{MAX_LENGTH}}}$"  # anchored: also the OpenAPI schema's pattern
PROBLEM = f"{HEADER} must be 1 to {MAX_LENGTH} letters, digits or _ . : -"

_KEY_RE = re.compile(PATTERN)


def valid(key: str) -> bool:
    return _KEY_RE.fullmatch(key) is not None
