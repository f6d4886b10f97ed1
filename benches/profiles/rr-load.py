#!/usr/bin/env python3
"""Closed-loop request/response load for benches/profiles/hbone-rr.txt: `rr-load.py server PORT`
(1 KiB echo) or `rr-load.py client PORT SECS` (64 connections, 1 KiB each way; prints rr/s)."""
import asyncio, sys, time
MODE=sys.argv[1]; PORT=int(sys.argv[2]); SECS=float(sys.argv[3]) if len(sys.argv)>3 else 10
async def handle(r, w):
    try:
        while True:
            d = await r.readexactly(1024)
            w.write(d)
    except Exception:
        pass
async def server():
    s = await asyncio.start_server(handle, '127.0.0.1', PORT)
    async with s: await s.serve_forever()
async def client():
    done = 0; stop = time.time() + SECS
    async def one():
        nonlocal done
        r, w = await asyncio.open_connection('127.0.0.1', PORT)
        msg = b'x' * 1024
        while time.time() < stop:
            w.write(msg); await r.readexactly(1024); done += 1
        w.close()
    t0 = time.time()
    await asyncio.gather(*[one() for _ in range(64)])
    print(f"{done/(time.time()-t0):.0f} rr/s")
asyncio.run(server() if MODE == 'server' else client())
