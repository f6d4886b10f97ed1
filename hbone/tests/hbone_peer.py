#!/usr/bin/env python3
"""An independent HBONE peer for interop tests: Python's ssl (OpenSSL) for mutual TLS and the
`h2` package (python-hyper) for HTTP/2. Talks only to 127.0.0.1.

  hbone_peer.py client --connect 127.0.0.1:P --target IP:PORT [--bad-target AUTH]... \
                       --cert C --key K --ca CA --bytes N
      Opens one mTLS + h2 connection, sends CONNECT to --target, pushes N bytes, half-closes,
      reads the echo until END_STREAM; then one CONNECT per --bad-target; prints one JSON
      report line and exits 0 if the echo matched.

  hbone_peer.py server --cert C --key K --ca CA
      Listens on 127.0.0.1 (ephemeral port), prints {"listening": port}; answers every CONNECT
      with 200 and echoes its bytes, half-closing after the client did; prints one JSON line
      per finished stream. Runs until killed.
"""

import argparse
import json
import os
import select
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def tls_context(server_side, args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    # The FIPS policy of fipstun refuses anything but TLS 1.3 with AES-GCM on P-256/P-384.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if not server_side:
        ctx.check_hostname = False  # SPIFFE: identity is the URI SAN, no DNS names, no SNI
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=args.ca)
    ctx.load_cert_chain(certfile=args.cert, keyfile=args.key)
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.set_ecdh_curve("prime256v1")
    except (ValueError, ssl.SSLError):
        pass
    return ctx


def tls_facts(sock):
    cert = sock.getpeercert()
    return {
        "version": sock.version(),
        "cipher": sock.cipher()[0],
        "alpn": sock.selected_alpn_protocol(),
        "peer_subject": [list(rdn) for rdn in cert.get("subject", ())],
        "peer_san": [list(x) for x in cert.get("subjectAltName", ())],
    }


class Pump:
    """Non-blocking TLS socket + h2 state machine: never blocks writing while the peer is
    blocked writing to us."""

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.out = bytearray()
        self.closed = False
        sock.setblocking(False)

    def step(self, timeout=5.0):
        self.out += self.conn.data_to_send()
        want_write = bool(self.out)
        events = []
        if self.sock.pending() == 0:
            r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], timeout)
            if not r and not w:
                raise TimeoutError("peer silent for %ss" % timeout)
        else:
            r, w = [self.sock], []
        if w and self.out:
            try:
                n = self.sock.send(self.out[: 1 << 20])
                del self.out[:n]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if r:
            while True:
                try:
                    data = self.sock.recv(1 << 20)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not data:
                    self.closed = True
                    break
                events += self.conn.receive_data(data)
                if self.sock.pending() == 0:
                    break
        return events


def send_window(conn, sid, pending):
    """Queue as much of `pending` as flow control allows; return what is left."""
    while pending:
        n = min(len(pending), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if n <= 0:
            break
        conn.send_data(sid, bytes(pending[:n]))
        pending = pending[n:]
    return pending


def run_client(args):
    host, port = args.connect.rsplit(":", 1)
    assert host == "127.0.0.1", "tests talk to 127.0.0.1 only"
    ctx = tls_context(False, args)
    raw = socket.create_connection((host, int(port)), timeout=10)
    sock = ctx.wrap_socket(raw, server_side=False)
    report = tls_facts(sock)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    pump = Pump(sock, conn)

    payload = os.urandom(args.bytes)
    sid = conn.get_next_available_stream_id()
    # Plain CONNECT: :method and :authority only (RFC 9113 8.5), as ztunnel sends it.
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", args.target)])
    status = None
    pending = memoryview(payload)
    ended_local = False
    echoed = bytearray()
    done = False
    while not done:
        if status == 200 and not ended_local:
            pending = send_window(conn, sid, pending)
            if not pending:
                conn.end_stream(sid)
                ended_local = True
        for ev in pump.step():
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                status = int(dict(ev.headers)[":status"])
                if status != 200:
                    done = True
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                echoed += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                done = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                report["reset"] = int(ev.error_code)
                done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                report["goaway"] = int(ev.error_code)
                done = True
        if pump.closed:
            done = True
    report["status"] = status
    report["echo_ok"] = bytes(echoed) == payload
    report["echo_bytes"] = len(echoed)

    report["bad"] = {}
    for bad in args.bad_target:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", bad)], end_stream=True)
        got = None
        while got is None and not pump.closed:
            for ev in pump.step():
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    got = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    got = -int(ev.error_code)
        report["bad"][bad] = got

    conn.close_connection()
    try:
        pump.step(timeout=1.0)
    except Exception:
        pass
    print(json.dumps(report), flush=True)
    return 0 if report["echo_ok"] else 1


def run_server(args):
    ctx = tls_context(True, args)
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    print(json.dumps({"listening": lst.getsockname()[1]}), flush=True)
    while True:
        raw, _ = lst.accept()
        try:
            sock = ctx.wrap_socket(raw, server_side=True)
        except ssl.SSLError as e:
            print(json.dumps({"tls_error": str(e)}), flush=True)
            continue
        serve_connection(sock)


def serve_connection(sock):
    facts = tls_facts(sock)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    pump = Pump(sock, conn)
    streams = {}
    while not pump.closed:
        for sid, st in list(streams.items()):
            if st["pending"]:
                st["pending"] = bytearray(send_window(conn, sid, memoryview(st["pending"])))
            if st["remote_ended"] and not st["pending"] and not st["local_ended"]:
                conn.end_stream(sid)
                st["local_ended"] = True
                report = dict(facts)
                report["headers"] = st["headers"]
                report["bytes"] = st["bytes"]
                print(json.dumps(report), flush=True)
        try:
            events = pump.step(timeout=30.0)
        except TimeoutError:
            continue
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                streams[ev.stream_id] = {
                    "headers": [list(h) for h in ev.headers],
                    "pending": bytearray(),
                    "remote_ended": False,
                    "local_ended": False,
                    "bytes": 0,
                }
                conn.send_headers(ev.stream_id, [(":status", "200")])
            elif isinstance(ev, h2.events.DataReceived):
                st = streams.get(ev.stream_id)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if st is not None:
                    st["pending"] += ev.data
                    st["bytes"] += len(ev.data)
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in streams:
                    streams[ev.stream_id]["remote_ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                pump.closed = True
    sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["client", "server"])
    p.add_argument("--connect")
    p.add_argument("--target")
    p.add_argument("--bad-target", action="append", default=[])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--bytes", type=int, default=1 << 20)
    args = p.parse_args()
    if args.mode == "client":
        return run_client(args)
    return run_server(args)


if __name__ == "__main__":
    sys.exit(main())
