# The stream-setup load of scorecard-before-after.txt (HBONE setup peak RSS): 16 workers
# connect to 127.0.0.1:35001 (a `fipstun proxy` listener whose target is the echo server this
# script serves on 35002), send 1 byte, read it back, close; for SECS seconds.
# usage: python3 setup-load.py [SECS]
import asyncio, sys, time
SECS=float(sys.argv[1]) if len(sys.argv)>1 else 10
async def echo(r,w):
    try:
        while True:
            b=await r.read(65536)
            if not b: break
            w.write(b); await w.drain()
    except BaseException: pass
    try: w.close()
    except BaseException: pass
async def worker(stop, n):
    while time.time()<stop:
        try:
            r,w=await asyncio.open_connection('127.0.0.1',35001)
            w.write(b'x'); await w.drain()
            await r.readexactly(1)
            w.close(); await w.wait_closed()
            n[0]+=1
        except Exception as e:
            n[1]+=1
async def main():
    srv=await asyncio.start_server(echo,'127.0.0.1',35002)
    n=[0,0]
    stop=time.time()+SECS
    await asyncio.gather(*[worker(stop,n) for _ in range(16)])
    print(f"setups {n[0]} ({n[0]/SECS:.0f}/s) errors {n[1]}")
    srv.close()
asyncio.run(main())
