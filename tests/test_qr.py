"""A link's QR code decodes (zxing-cpp, an independent reader) to the link's url marked as a scan;
tests/test_tracker.py proves the tracker records such a scan as ``source=qr``."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import zxingcpp

from admin_api.app import create_app
from admin_api.auth import issue_token

from factories import make_link, make_user


def png_pixels(png: bytes) -> np.ndarray:
    """The grey levels of a 1-bit greyscale PNG (segno's kind: rows filtered None or Up)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (1, 0)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1).copy()
    assert set(rows[:, 0]) <= {0, 2}
    for y in range(height):
        if rows[y, 0] == 2:  # Up: add the row above
            rows[y, 1:] += rows[y - 1, 1:] if y else 0
    return (np.unpackbits(rows[:, 1:], axis=1)[:, :width] * 255).astype(np.uint8)


def svg_pixels(svg: bytes) -> np.ndarray:
    """The grey levels of segno's SVG: one stroked path of horizontal runs, one module high, drawn a pixel a
    module (the scale checked, then dropped) and enlarged 4x for the reader.

    Only the path commands segno writes are read (absolute ``M``, relative ``m`` and ``h``): anything
    else fails here, rather than being drawn wrong.
    """
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    (path,) = root
    scale = int(re.fullmatch(r"scale\((\d+)\)", path.get("transform")).group(1))
    size = int(root.get("width")) // scale
    assert int(root.get("height")) == size * scale and path.get("stroke") == "#000"
    image = np.full((size, size), 255, dtype=np.uint8)
    x = y = 0.0
    for command, args in re.findall(r"([A-Za-z])([^A-Za-z]*)", path.get("d")):
        numbers = [float(n) for n in args.replace("-", " -").split()]
        if command in "Mm":
            x, y = (numbers[0], numbers[1]) if command == "M" else (x + numbers[0], y + numbers[1])
        else:
            assert command == "h", command
            image[int(y), int(x):int(x + numbers[0])] = 0  # a stroke 1 wide centred on y + 0.5
            x += numbers[0]
    return np.kron(image, np.ones((4, 4), dtype=np.uint8))


async def test_a_links_qr_code_encodes_its_url_marked_as_a_scan(aiohttp_client, settings, pg):
    link = make_link(pg)
    creator_auth = {"Authorization": f"Bearer {issue_token(settings, link['creator'])}"}
    api = await aiohttp_client(create_app(settings))

    png = await api.get(f"/v1/links/{link['code']}/qr.png", headers=creator_auth)
    assert png.status == 200 and png.content_type == "image/png"
    decoded = zxingcpp.read_barcodes(png_pixels(await png.read()))
    assert [(d.format, d.text) for d in decoded] == [(zxingcpp.BarcodeFormat.QRCode, f"http://t.example/{link['code']}?qr=1")]

    svg = await api.get(f"/v1/links/{link['code']}/qr.svg", params={"scale": "2"}, headers=creator_auth)
    assert svg.status == 200 and svg.content_type == "image/svg+xml"
    decoded = zxingcpp.read_barcodes(svg_pixels(await svg.read()))
    assert [(d.format, d.text) for d in decoded] == [(zxingcpp.BarcodeFormat.QRCode, f"http://t.example/{link['code']}?qr=1")]

    business_auth = {"Authorization": f"Bearer {issue_token(settings, link['business'])}"}
    assert (await api.get(f"/v1/links/{link['code']}/qr.png", headers=business_auth)).status == 200
    _, stranger = make_user(pg, settings, "creator")
    for path, headers, status in [(f"/v1/links/{link['code']}/qr.png", stranger, 404),  # not theirs to print
                                  ("/v1/links/nosuchcode/qr.svg", creator_auth, 404),
                                  ("/v1/links/bad%20code/qr.svg", creator_auth, 404),
                                  (f"/v1/links/{link['code']}/qr.png", {}, 401)]:
        assert (await api.get(path, headers=headers)).status == status, path
    bad = await api.get(f"/v1/links/{link['code']}/qr.png", params={"scale": "0"}, headers=creator_auth)
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "scale"
