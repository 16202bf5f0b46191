"""The requests a tracker benchmark sends: people clicking creators' links, not a bot on one code.

A click comes from a real browser user agent (desktop and mobile Chrome,
Safari, Firefox, Edge, Samsung Internet, and the in-app browsers of
Instagram, TikTok and Facebook, which carry most creator traffic), with the
headers that browser sends, usually a referrer, usually UTM tags, now and
then a QR scan's mark. The code is drawn from ``links`` codes with a Zipf
distribution (rank r is clicked in proportion to 1/r): a few links take most
clicks, the long tail still gets some. Deterministic for a seed.

``write_requests`` writes one request a line for ``clicks.lua`` (wrk's
script): the target, then its headers, tab-separated. The ``bot`` mix is
the benchmark before 2026-12 (one code, no headers: every click a
``no_user_agent`` bot), kept to compare with that history.
"""

from __future__ import annotations

import random
from pathlib import Path

ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
ACCEPT_SAFARI = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ACCEPT_FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
SEC_FETCH = (
    ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-User", "?1"),
    ("Sec-Fetch-Dest", "document"), ("Upgrade-Insecure-Requests", "1"),
)


def _chromium(ua: str, brand: str, mobile: bool, platform: str) -> tuple[str, tuple]:
    return ua, (
        ("sec-ch-ua", f'"{brand}";v="131", "Chromium";v="131", "Not_A Brand";v="24"'),
        ("sec-ch-ua-mobile", "?1" if mobile else "?0"), ("sec-ch-ua-platform", f'"{platform}"'),
        ("Accept", ACCEPT_HTML), ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"), *SEC_FETCH,
    )


def _webkit(ua: str) -> tuple[str, tuple]:
    return ua, (
        ("Accept", ACCEPT_SAFARI), ("Accept-Encoding", "gzip, deflate, br"), ("Accept-Language", "en-GB,en;q=0.9"),
        ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "document"),
    )


def _firefox(ua: str) -> tuple[str, tuple]:
    return ua, (
        ("Accept", ACCEPT_FIREFOX), ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "de-DE,de;q=0.8,en-US;q=0.5,en;q=0.3"), *SEC_FETCH,
    )


IOS = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko)"
# (weight, (user agent, headers)): roughly a creator's audience, mobile and in-app heavy.
BROWSERS = (
    (14, _webkit(f"{IOS} Version/18.1 Mobile/15E148 Safari/604.1")),
    (12, _chromium("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0"
                   " Mobile Safari/537.36", "Google Chrome", True, "Android")),
    (10, _chromium("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                   " Chrome/131.0.0.0 Safari/537.36", "Google Chrome", False, "Windows")),
    (4, _chromium("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko)"
                  " Chrome/131.0.0.0 Safari/537.36", "Google Chrome", False, "macOS")),
    (3, _webkit("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
                " Version/18.1 Safari/605.1.15")),
    (3, _firefox("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0")),
    (1, _firefox("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")),
    (2, _chromium("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                  " Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", "Microsoft Edge", False, "Windows")),
    (2, _chromium("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko)"
                  " SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36", "Samsung Internet", True, "Android")),
    (14, _webkit(f"{IOS} Mobile/22B83 Instagram 357.0.0.25.101 (iPhone15,3; iOS 18_1; en_US; en; scale=3.00;"
                 " 1290x2796; 659424130; IABMV/1)")),
    (6, _chromium(f"{ANDROID} Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 Instagram 357.0.0.51.97 Android"
                  " (34/14; 420dpi; 1080x2400; Google/google; Pixel 8; shiba; shiba; en_US; 664520112)",
                  "Android WebView", True, "Android")),
    (10, _webkit(f"{IOS} Mobile/15E148 musical_ly_37.6.0 JsSdk/2.0 NetType/WIFI Channel/App Store"
                 " ByteLocale/en Region/US isDarkMode/1 WKWebView/1 RevealType/Dialog BytedanceWebview/d8a21c6")),
    (5, _chromium(f"{ANDROID} Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 trill_370304 JsSdk/1.0"
                  " NetType/4G Channel/googleplay AppName/musical_ly app_version/37.3.4 ByteLocale/en"
                  " BytedanceWebview/d8a21c6", "Android WebView", True, "Android")),
    (6, _webkit(f"{IOS} Mobile/15E148 [FBAN/FBIOS;FBAV/489.0.0.51.109;FBBV/672394617;FBDV/iPhone15,3;"
                "FBMD/iPhone;FBSN/iOS;FBSV/18.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/675017021]")),
    (3, _chromium(f"{ANDROID} Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.59.109;]",
                  "Android WebView", True, "Android")),
)
REFERRERS = (  # (weight, referrer; empty: none sent, as in-app browsers and typed links often do)
    (25, "https://www.instagram.com/"), (20, "https://www.tiktok.com/"), (10, "https://l.facebook.com/"),
    (10, "https://t.co/"), (8, "https://www.youtube.com/"), (7, "https://www.google.com/"),
    (5, "https://linktr.ee/"), (15, ""),
)
SOURCES = ("instagram", "tiktok", "facebook", "twitter", "youtube", "newsletter")
MEDIUMS = ("social", "bio", "story", "video", "email")


def codes(links: int) -> list[str]:
    """The benchmark's link codes, most clicked first (rank order)."""
    return [f"bn{rank:06d}x" for rank in range(links)]


def destination(rank: int) -> str:
    """A link's stored destination: some have their own query or a fragment, as real shop links do."""
    if rank % 5 == 0:
        return f"https://shop{rank % 97}.example.com/p/{rank}"
    if rank % 7 == 0:
        return f"https://shop{rank % 97}.example.com/p/{rank}?ref=oros#reviews"
    return f"https://shop{rank % 97}.example.com/p/{rank}?ref=oros&variant={rank % 13}"


def _query(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return ""
    if roll < 0.18:
        return "?qr=1"  # a scanned QR code
    query = (f"?utm_source={rng.choice(SOURCES)}&utm_medium={rng.choice(MEDIUMS)}"
             f"&utm_campaign=spring_drop_{rng.randrange(40)}")
    if rng.random() < 0.3:
        query += f"&utm_content=post_{rng.randrange(10**9):09d}"
    if rng.random() < 0.2:
        query += f"&fbclid=IwZXh0bgNhZW0CMTEAAR{rng.randrange(10**12):012d}_aem_{rng.randrange(10**6)}"
    return query


def requests(links: int, count: int, seed: int = 18) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """``count`` clicks as (target, headers): Zipf-drawn codes of ``links``, browsers and referrers by weight."""
    rng = random.Random(seed)
    names = codes(links)
    picked = rng.choices(names, weights=[1 / (rank + 1) for rank in range(links)], k=count)
    browsers = rng.choices([b for _, b in BROWSERS], weights=[w for w, _ in BROWSERS], k=count)
    referrers = rng.choices([r for _, r in REFERRERS], weights=[w for w, _ in REFERRERS], k=count)
    out = []
    for code, (ua, headers), referrer in zip(picked, browsers, referrers, strict=True):
        extra = (("Referer", referrer),) if referrer else ()
        out.append((f"/{code}{_query(rng)}", (("User-Agent", ua), *headers, *extra)))
    return out


def every_code(links: int) -> list[tuple[str, tuple]]:
    """Each code once, the browsers in turn: the warm-up that puts every link (and user agent) in the caches."""
    return [(f"/{code}", (("User-Agent", BROWSERS[n % len(BROWSERS)][1][0]), *BROWSERS[n % len(BROWSERS)][1][1]))
            for n, code in enumerate(codes(links))]


def bot(code: str) -> list[tuple[str, tuple]]:
    """The old benchmark's request: one code, no User-Agent (a ``no_user_agent`` bot click)."""
    return [(f"/{code}", ())]


def write_requests(path: Path, reqs: list[tuple[str, tuple]]) -> Path:
    with path.open("w") as out:
        for target, headers in reqs:
            out.write("\t".join((target, *(f"{name}: {value}" for name, value in headers))) + "\n")
    return path
