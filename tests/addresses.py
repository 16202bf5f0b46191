"""Addresses every visitor-key test runs over (tests/test_load.py, tests/test_clientip.py)."""

# IPv4, IPv6 (any case, compressed or not), IPv4-mapped in both spellings, zones, and what is not an address.
ADDRESSES = ["1.2.3.4", "::ffff:1.2.3.4", "::ffff:102:304", "::FFFF:1.2.3.4", "0:0:0:0:0:ffff:1.2.3.4", "::ffff:0:0",
             "::ffff:1.2.3.4%eth0", "2001:db8:1:2:3:4:5:6", "2001:DB8:1:2::9", "2001:db8:0:0:1::1", "0:0:0:1::5", "::1",
             "::", "::1.2.3.4", "64:ff9b::1.2.3.4", "2001:db8::ffff:1.2.3.4", "fe80::1%eth0", "fe80::1%", "fe80::1%a%b",
             "::ffff:1.2.3.04", "not:an:ip", "garbage", "", "1.2.3", "1.2.3.4:80", "[::1]", "1:2:3:4:5:6:7:8:9",
             "2001:db8::g"]
