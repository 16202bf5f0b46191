"""Wire types (oros/wire.py): what a type documents is what it accepts. Pure: no store is touched."""

from __future__ import annotations

from decimal import Decimal

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError

from oros.money import MAX_AMOUNT, fmt
from oros.wire import Amount, Money, Timestamp, Uuid

CANDIDATES = ["0", "0.00", "0.01", "0.1", "0.10", "0.99", "1", "1.5", "12.50", "99999999.99", "100000000",
              "9999999999.99", "10000000000", "10000000000.00", "-1", "1.005", "01.00", " 5", "1e3", "NaN",
              "Infinity", "", 0, 1, -5, 99999999, 100000000, 9999999999, 10000000000, True, 1.5, None]


def _accepts(adapter: TypeAdapter, value: object) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("maximum", [MAX_AMOUNT, Decimal("99999999.99"), Decimal("999999.99")], ids=str)
def test_an_amounts_schema_allows_exactly_the_canonical_amounts_it_accepts(maximum):
    adapter = TypeAdapter(Amount(maximum))
    schema = adapter.json_schema()
    for value in CANDIDATES:
        documented = jsonschema.Draft202012Validator(schema).is_valid(value)
        accepted = _accepts(adapter, value)
        if documented:  # everything the document allows is taken
            assert accepted, (maximum, value)
        canonical = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, str) and value[:1].isdigit() and value[:2] != "01" and "e" not in value)
        if accepted and canonical:  # and every plainly written amount taken is documented
            assert documented, (maximum, value)
    assert _accepts(adapter, str(maximum)) and not _accepts(adapter, str(maximum + Decimal("0.01")))


def test_money_documents_every_amount_fmt_writes():
    pattern = TypeAdapter(Money).json_schema()
    for value in (Decimal("0"), Decimal("12.5"), MAX_AMOUNT, -MAX_AMOUNT):
        assert jsonschema.Draft202012Validator(pattern).is_valid(fmt(value)), value


def test_ids_have_one_spelling():
    adapter = TypeAdapter(Uuid)
    assert adapter.validate_python("6F1C0A52-3B57-4C55-9A8E-3F4C3D1F5E01") == "6f1c0a52-3b57-4c55-9a8e-3f4c3d1f5e01"
    for odd in ("6f1c0a523b574c559a8e3f4c3d1f5e01", "{6f1c0a52-3b57-4c55-9a8e-3f4c3d1f5e01}", 5, None):
        assert not _accepts(adapter, odd), odd


def test_a_refusal_is_a_predicate_for_the_field_to_complete():
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(Timestamp(range(2000, 3000))).validate_python("1999-12-31T23:59:59Z")
    [error] = refused.value.errors()
    assert (error["type"], error["msg"]) == ("invalid", "is out of range")
