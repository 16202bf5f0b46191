"""The shared package's pure parts: settings validation, money rules, event ids."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

import pytest

from oros import locks, reasons
from oros.events import Event, click_link_fields, encode_click, uuid7, uuid7_ms, uuid7_str
from oros.money import AmountError, fmt, parse_amount, split_fee
from oros.settings import Settings, SettingsError


def test_settings_defaults_match_the_contract():
    settings = Settings.from_env({})
    assert settings.platform_fee_pct == Decimal("10")
    assert (settings.hold_days, settings.attribution_days, settings.click_dedupe_s) == (14, 30, 3600)
    assert settings.min_withdrawal == Decimal("10.00")
    assert settings.trusted_proxies == ()


@pytest.mark.parametrize("name, value", [
    ("DATABASE_URL", "mysql://x"), ("OROS_PLATFORM_FEE_PCT", "abc"), ("OROS_PLATFORM_FEE_PCT", "101"),
    ("OROS_HOLD_DAYS", "-1"), ("OROS_TRUSTED_PROXIES", "10.0.0.0/33"), ("OROS_MIN_WITHDRAWAL", "NaN"),
    ("OROS_SETTLE_WORKERS", "0"), ("OROS_SETTLE_WORKERS", "65"),
])
def test_bad_settings_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_trusted_proxies_parse_into_networks():
    settings = Settings.from_env({"OROS_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]


@pytest.mark.parametrize("payout, fee_pct, net, fee", [
    ("1.00", "10", "0.90", "0.10"),
    ("0.05", "10", "0.04", "0.01"),   # 0.005 rounds half up to 0.01
    ("0.15", "10", "0.13", "0.02"),
    ("0.25", "10", "0.22", "0.03"),   # 0.025 -> 0.03 half up (banker's would give 0.02)
    ("12.34", "0", "12.34", "0.00"),
    ("9.99", "100", "0.00", "9.99"),
])
def test_fee_is_rounded_half_up_and_net_is_the_rest(payout, fee_pct, net, fee):
    assert split_fee(Decimal(payout), Decimal(fee_pct)) == (Decimal(net), Decimal(fee))


@pytest.mark.parametrize("raw", [1.5, "1.005", "-1", "0", "NaN", "Infinity", "1e3x", None, True, "10000000000.00",
                                 "１０.00", "10.0٠", "١٠", "1_0.00"])
def test_bad_amounts_are_refused(raw):
    with pytest.raises(AmountError):
        parse_amount(raw)


def test_amounts_parse_exactly():
    assert parse_amount("12.5") == Decimal("12.50")
    assert parse_amount(7) == Decimal("7.00")
    assert fmt(parse_amount(" 0.10 ")) == "0.10"


def test_uuid7_is_a_time_ordered_version_7_uuid():
    first, second = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert uuid7_ms(first) == 1_700_000_000_000
    assert str(first) < str(second)
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_a_forked_child_does_not_repeat_its_parents_ids():
    uuid7_str()  # the parent holds a pool of random bytes at the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, uuid7_str(1).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 36).decode() != uuid7_str(1)


def test_event_round_trips_through_the_stream_encoding():
    event = Event(event_id=str(uuid7()), event_type="sale", ts_ms=1, campaign_id=str(uuid.uuid4()),
                  value="12.50", order_id="o-1", metadata={"utm_source": "ig"})
    assert Event.decode(event.encode()) == event


def test_reason_codes_are_distinct():
    codes = {name: value for name, value in vars(reasons).items() if name.isupper() and name != "UNKNOWN_CAMPAIGN"}
    assert len(set(codes.values())) == len(codes)


def test_advisory_lock_ids_are_distinct_and_fit_their_key_types():
    bigint_keys = [locks.MIGRATION_LOCK, locks.SETTLE_LOCK, locks.PAYOUTS_LOCK]
    assert len(set(bigint_keys)) == len(bigint_keys)
    assert all(-2**63 <= key < 2**63 for key in bigint_keys)
    assert -2**31 <= locks.IDEMPOTENCY_CLASS < 2**31


@pytest.mark.parametrize(
    ("ip", "user_agent", "referrer", "reason", "source", "metadata", "supporter_id"),
    [
        ("203.0.113.9", 'Mozilla "quoted" \\ back\u00e9\n\t\x01', 'https://r.example/?q="x"', None, "redirect",
         {"utm_source": 'a"b', "utm_term": "\u2603"}, "5e000000-0000-4000-8000-000000000000"),
        (None, None, None, "head", "head", {}, None),
        ("2001:db8::1", "Slackbot 1.0", None, "preview_bot", "redirect", {}, None),
    ],
)
def test_the_click_template_writes_what_event_encode_writes(ip, user_agent, referrer, reason, source, metadata,
                                                            supporter_id):
    campaign_id, link_id, creator_id, business_id = (str(uuid.uuid4()) for _ in range(4))
    click_id, ts_ms = uuid7_str(1_700_000_000_000), 1_700_000_000_000
    expected = Event(
        event_id=click_id, event_type="click", ts_ms=ts_ms, campaign_id=campaign_id, link_id=link_id,
        creator_id=creator_id, supporter_id=supporter_id, business_id=business_id, ip=ip, user_agent=user_agent,
        referrer=referrer, is_bot=reason is not None, bot_reason=reason, source=source, metadata=metadata,
    ).encode()
    link_fields = click_link_fields(campaign_id, link_id, creator_id, supporter_id, business_id)
    encoded = encode_click(link_fields, click_id, ts_ms, ip, user_agent, referrer, reason, source, metadata)
    assert encoded == expected
    assert Event.decode(encoded).encode() == expected
