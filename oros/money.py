"""Money is ``Decimal`` with two places, end to end; never a float."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12,2)


class AmountError(ValueError):
    """An amount is not a positive decimal with at most two places; the message is a predicate
    ("must be positive") that the caller puts after the field's name."""


def plain_decimal_text(text: str) -> bool:
    """Whether ``text`` may go to Decimal(): it also reads other scripts' digits ("１０.00", "10.0٠") and
    digit-group underscores, while the documented form (and every parser downstream of us) is ASCII only."""
    return text.isascii() and "_" not in text


def parse_amount(raw: object, *, allow_zero: bool = False) -> Decimal:
    """Parse user input into a money amount, refusing floats, NaN, >2 places and overflow."""
    if isinstance(raw, bool) or isinstance(raw, float) or raw is None:
        raise AmountError("must be a decimal string such as \"12.50\"")
    if isinstance(raw, str) and not plain_decimal_text(raw):
        raise AmountError("must be a decimal string of ASCII digits such as \"12.50\"")
    try:
        value = Decimal(str(raw).strip()) if isinstance(raw, (str, int, Decimal)) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise AmountError("must be a decimal string such as \"12.50\"")
    if abs(value) > MAX_AMOUNT:  # before quantize, which raises on huge exponents ("1e400")
        raise AmountError("is too large")
    if value != value.quantize(CENT):
        raise AmountError("has more than two decimal places")
    if value < 0 or (value == 0 and not allow_zero):
        raise AmountError("must be positive")
    if value > MAX_AMOUNT:
        raise AmountError("is too large")
    return value.quantize(CENT)


def round_money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def split_fee(payout: Decimal, fee_pct: Decimal) -> tuple[Decimal, Decimal]:
    """Return ``(net, fee)`` with ``fee = round_half_up(payout * pct / 100)`` and ``net = payout - fee``."""
    fee = round_money(payout * fee_pct / 100)
    return payout - fee, fee


def share_reward(payout: Decimal, fee: Decimal, share_pct: Decimal) -> Decimal:
    """A share link's reward on one payout: ``round_half_up(payout * pct / 100)``, out of the creator's net
    (``payout - fee``) and never more than it; the creator keeps ``payout - fee - reward``."""
    return min(round_money(payout * share_pct / 100), payout - fee)


def fmt(value: Decimal | None) -> str | None:
    """The wire form: a decimal string with exactly two places."""
    return None if value is None else str(value.quantize(CENT))
