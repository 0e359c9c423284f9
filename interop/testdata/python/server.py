"""A third-party server (Python's websockets) for wsloop's client to dial.

Usage: python3 server.py plain|deflate|tls [CERT.pem KEY.pem]

It prints "listening PORT" once it listens, then one line per event:
"close CODE" when a connection ends (the code the client's close carried,
1006 when there was none, 1002 or 1007 when the client broke the protocol),
"error MESSAGE" for a protocol error in what the client sent. It echoes
every message with its type and answers the text "close-4001" by closing
with 4001 "bye". dial_test.go runs it; it exits when its stdin closes.
"""

import asyncio
import ssl
import sys

import websockets


async def handler(ws, path=None):
    print("open " + ws.request_headers.get("Sec-WebSocket-Extensions", "-"), flush=True)
    try:
        async for msg in ws:
            if msg == "close-4001":
                await ws.close(4001, "bye")
                break
            await ws.send(msg)
    except websockets.exceptions.ConnectionClosedError as e:
        if e.rcvd is None and e.sent is not None and e.sent.code in (1002, 1007, 1009):
            print("error " + str(e), flush=True)
    await ws.wait_closed()
    print("close %s" % ws.close_code, flush=True)


async def main():
    mode = sys.argv[1]
    ctx = None
    if mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    compression = "deflate" if mode == "deflate" else None
    async with websockets.serve(handler, "127.0.0.1", 0, ssl=ctx, compression=compression, max_size=64 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print("listening %d" % port, flush=True)
        loop = asyncio.get_running_loop()
        # Run until stdin closes: the test's end.
        await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
