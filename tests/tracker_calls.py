"""What the tracker tests share: a browser's user agent, byte-exact requests, the known codes loaded, the stream's
events (test_tracker.py and the tracker tests beside it)."""

from __future__ import annotations

import asyncio

from oros.events import Event
from tracker.typedefs import KNOWN_CODES

# A desktop browser's user agent: the tracker records its clicks as a person's.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


async def stream_events(redis, settings) -> list[Event]:
    """The events in the stream, oldest first."""
    entries = await redis.xrange(settings.keys.stream)
    return [Event.decode(fields[b"e"]) for _, fields in entries]


async def raw_request(client, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` byte for byte (aiohttp's client would not send these bytes); its status and body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await reader.read()  # the request says Connection: close
    finally:
        writer.close()
        await writer.wait_closed()
    return int(response.split(b" ", 2)[1]), response.partition(b"\r\n\r\n")[2]


async def known_codes_loaded(app) -> None:
    """Wait until the tracker ``app`` has loaded its filter of known codes."""
    for _ in range(200):
        if app[KNOWN_CODES].loaded_at is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the known codes never loaded")
