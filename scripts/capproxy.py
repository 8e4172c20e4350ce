#!/usr/bin/env python3
"""A TCP proxy that caps every client *connection* at RATE bytes/s with a token bucket (64 KiB
burst, no credit for idle time), whatever the number of HTTP requests on it: a stricter
model of a per-connection CDN cap than nginx's per-request `limit_rate`, which starts each
request with a second's allowance. Usage: capproxy.py LISTEN_PORT UPSTREAM_PORT RATE"""
import asyncio, sys, time

LISTEN, UP, RATE = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pipe(reader, writer, rate=None):
    # A token bucket per connection with a 64 KiB burst: idle time earns no credit.
    tokens = 0.0; last = time.monotonic(); burst = 65536.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if rate:
                now = time.monotonic()
                tokens = min(burst, tokens + (now - last) * rate); last = now
                tokens -= len(data)
                if tokens < 0:
                    await asyncio.sleep(-tokens / rate)
                    now = time.monotonic(); tokens += (now - last) * rate; last = now
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass

async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", UP)
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw, RATE))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()

asyncio.run(main())
