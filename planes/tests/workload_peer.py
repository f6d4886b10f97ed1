#!/usr/bin/env python3
"""A workload in Python calling fipstun's Workload API server, as real workloads do.

Modes (one JSON object per line on stdout; the Rust test reads them):
  spiffe  --socket PATH --updates N   py-spiffe (the SPIFFE project's Python library):
          fetch_x509_context once, then stream_x509_contexts until N updates arrived.
  grpcio  --socket PATH --updates N [--authority A]   grpcio alone: FetchX509SVID with the
          channel's default `:authority` (gRPC C-core's: the percent-encoded socket path), or A.
  --uid U --gid G   drop to that user and group after the imports and the client are set
          up, before connecting, so the server's SO_PEERCRED sees them (the interpreter itself
          may live where U cannot read).

Each update line: {"event": "fetch"|"update", "svids": [{"id", "chain_hex", "key_matches",
"chains_to_bundle", "valid_now"}], "bundles": [trust domains]}. A refused call prints
{"event": "error", "code": "PERMISSION_DENIED", ...} and exits 3.
"""

import argparse
import datetime
import json
import os
import queue
import sys

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: F401 (preloaded)
from cryptography import x509
from cryptography.exceptions import InvalidSignature
import cryptography.hazmat.backends.openssl  # noqa: F401 (imported lazily by ECDSA; preloaded)

import spiffe
from spiffe.workloadapi.errors import FetchX509SvidError  # noqa: F401 (preloaded)
from spiffe._proto import workload_pb2  # py-spiffe's generated messages, for the raw client

WORKLOAD_HEADER = ("workload.spiffe.io", "true")


def emit(obj):
    print(json.dumps(obj), flush=True)


def spki(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def chains_to(chain, roots):
    """Each certificate is signed by the next; the last by one of the bundle's roots.
    Returns (verdict, why not)."""
    try:
        for cert, issuer in zip(chain, chain[1:]):
            cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as e:
        return False, f"inside the chain: {e!r}"
    errors = []
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            return True, None
        except (InvalidSignature, ValueError, TypeError) as e:
            errors.append(repr(e))
    return False, f"no root of {len(roots)} signed it: {errors}"


def valid_now(chain):
    now = datetime.datetime.now(datetime.timezone.utc)
    return all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain)


def report_context(event, ctx):
    svids = []
    for svid in ctx.x509_svids:
        bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        roots = list(bundle.x509_authorities) if bundle else []
        chains, why_not = chains_to(svid.cert_chain, roots)
        svids.append(
            {
                "id": str(svid.spiffe_id),
                "chain_hex": b"".join(
                    c.public_bytes(serialization.Encoding.DER) for c in svid.cert_chain
                ).hex(),
                "key_matches": spki(svid.private_key.public_key()) == spki(svid.leaf.public_key()),
                "chains_to_bundle": chains,
                "chain_error": why_not,
                "valid_now": valid_now(svid.cert_chain),
            }
        )
    emit(
        {
            "event": event,
            "svids": svids,
            "bundles": sorted(str(b.trust_domain) for b in ctx.x509_bundle_set.bundles),
        }
    )


def error_code(err):
    text = str(err)
    for code in grpc.StatusCode:
        if code.name in text:
            return code.name
    return "UNKNOWN"


def spiffe_client(args):
    return spiffe.WorkloadApiClient(socket_path="unix://" + args.socket, default_timeout=20)


def run_spiffe(args, client):
    try:
        ctx = client.fetch_x509_context()
    except Exception as e:  # py-spiffe wraps the gRPC status in its own error
        emit({"event": "error", "code": error_code(e), "error": str(e)})
        return 3
    report_context("fetch", ctx)
    events = queue.Queue()
    handle = client.stream_x509_contexts(
        on_success=lambda c: events.put(("ok", c)),
        on_error=lambda e: events.put(("err", e)),
        retry_connect=False,
    )
    for _ in range(args.updates):
        kind, value = events.get(timeout=60)
        if kind == "err":
            emit({"event": "error", "code": error_code(value), "error": str(value)})
            return 3
        report_context("update", value)
    handle.cancel()
    client.close()
    return 0


def grpcio_channel(args):
    options = []
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))
    return grpc.insecure_channel("unix:" + args.socket, options=options)


def run_grpcio(args, channel):
    call = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
        response_deserializer=workload_pb2.X509SVIDResponse.FromString,
    )
    stream = call(workload_pb2.X509SVIDRequest(), metadata=[WORKLOAD_HEADER], timeout=60)
    try:
        for n, response in enumerate(stream):
            emit(
                {
                    "event": "update",
                    "svids": [
                        {"id": s.spiffe_id, "chain_hex": s.x509_svid.hex()} for s in response.svids
                    ],
                    "bundles": sorted(response.federated_bundles.keys()),
                }
            )
            if n + 1 == args.updates:
                break
    except grpc.RpcError as e:
        emit({"event": "error", "code": e.code().name, "error": e.details()})
        return 3
    finally:
        stream.cancel()
        channel.close()
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["spiffe", "grpcio"])
    p.add_argument("--socket", required=True)
    p.add_argument("--updates", type=int, default=1)
    p.add_argument("--authority")
    p.add_argument("--uid", type=int)
    p.add_argument("--gid", type=int)
    args = p.parse_args()
    # Build the client first: grpc and py-spiffe import modules lazily, and the user we drop to
    # may not read the interpreter's directory. gRPC channels connect lazily (on the first
    # call), so the socket is connected, and SO_PEERCRED taken, as the dropped user; were it
    # not, the server would see root and the test's per-uid expectations would fail.
    client = spiffe_client(args) if args.mode == "spiffe" else grpcio_channel(args)
    if args.gid is not None:
        os.setgroups([])
        os.setgid(args.gid)
    if args.uid is not None:
        os.setuid(args.uid)
    emit({"event": "started", "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()})
    return run_spiffe(args, client) if args.mode == "spiffe" else run_grpcio(args, client)


if __name__ == "__main__":
    sys.exit(main())
