"""A third-party client (Python's websockets) against a wsloop server.

Usage: python3 client.py URL echo|echo-deflate|chat

It exchanges text and binary, pings, closes with 4000, and exits 0 only if
every step behaved and no protocol error was seen. interop_test.go runs it.
"""

import asyncio
import json
import ssl
import sys

import websockets


class Failure(Exception):
    """A step of the exchange did not behave."""


def fail(why):
    raise Failure(why)


async def next_json(ws, kind):
    while True:
        m = await asyncio.wait_for(ws.recv(), 5)
        if isinstance(m, bytes):
            fail("chat server sent a binary frame")
        obj = json.loads(m)
        if obj.get("type") == kind:
            return obj


async def main(url, mode):
    binary = bytes([0, 1, 2, 0xFE, 0xFF])
    kw = {}
    if url.startswith("wss:"):
        # A test server with a self-signed certificate.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        kw["ssl"] = ctx
    async with websockets.connect(url, max_size=2**22, **kw) as ws:
        if mode == "echo-deflate":
            names = [getattr(e, "name", "") for e in ws.extensions]
            if "permessage-deflate" not in names:
                fail("permessage-deflate was not negotiated: %r" % (names,))
        if mode in ("echo", "echo-deflate"):
            await ws.send("hello from python \u2713")
            m = await asyncio.wait_for(ws.recv(), 5)
            if m != "hello from python \u2713":
                fail("bad text echo: %r" % (m,))
            await ws.send(binary)
            m = await asyncio.wait_for(ws.recv(), 5)
            if m != binary:
                fail("bad binary echo: %r" % (m,))
            big = bytes(200000)
            await ws.send(big)
            if await asyncio.wait_for(ws.recv(), 5) != big:
                fail("bad large echo")
        else:
            h = await next_json(ws, "history")
            if not isinstance(h.get("messages"), list):
                fail("history without messages")
            await next_json(ws, "members")
            await ws.send(json.dumps({"type": "message", "text": "hello from python \u2713"}))
            m = await next_json(ws, "message")
            if m.get("text") != "hello from python \u2713" or m.get("from") != "python":
                fail("bad chat message: %r" % (m,))
            await ws.send(binary)
            e = await next_json(ws, "error")
            if "binary" not in e.get("text", ""):
                fail("unexpected error text: %r" % (e,))
        pong = await ws.ping(b"py-ping")
        await asyncio.wait_for(pong, 5)
        await ws.close(code=4000, reason="done")
        if ws.close_code != 4000:
            fail("server answered the close with %r" % (ws.close_code,))
    print("ok " + mode)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 15))
    except Failure as e:
        sys.exit("FAIL: %s" % (e,))
    except websockets.exceptions.WebSocketException as e:
        sys.exit("FAIL: websocket error: %r" % (e,))
    except asyncio.TimeoutError:
        sys.exit("FAIL: timed out")
