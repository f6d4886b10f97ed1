//! Writes the fuzz targets' committed seed corpus (`fuzz/corpus/<target>/seed-*`):
//! `cargo run -p fipstun-fips-tests --example make_fuzz_seeds` from the repo root.
//! Seeds are real, valid inputs (and a few near misses) made with a fresh CA and our FIPS
//! configs; it lives here, not in fuzz/, so it builds without the fuzzer's instrumentation.
#![allow(missing_docs)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fipstun_identity::bundle::{BundleSet, TrustStore};
use fipstun_identity::ca::{IssuerConfig, SvidIssuer};
use fipstun_identity::keys::{KeyAlgorithm, PrivateKey, csr_for};
use fipstun_identity::policy::CryptoPolicy;
use fipstun_identity::spiffe::{SpiffeId, TrustDomain};
use fipstun_identity::tls::{Authorizer, SvidSlot, client_config, server_config};

struct Seeds {
    ca: SvidIssuer,
    caller: SpiffeId,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn seeds_pki() -> Seeds {
    let td = TrustDomain::new("fuzz.test").unwrap();
    let ca = SvidIssuer::generate_root(
        td.clone(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(86400),
        IssuerConfig::default(),
    )
    .unwrap();
    let policy = CryptoPolicy::default();
    let trust = TrustStore::new(BundleSet::new().with(ca.bundle().clone()));
    let mut slots = ["spiffe://fuzz.test/client", "spiffe://fuzz.test/server"].map(|name| {
        let slot = Arc::new(SvidSlot::new());
        let svid = ca
            .issue(
                &SpiffeId::parse(name).unwrap(),
                KeyAlgorithm::EcdsaP256,
                None,
            )
            .unwrap();
        slot.set(&svid).unwrap();
        Some(slot)
    });
    let anyone = || Authorizer::trust_domains([td.clone()]);
    let client = client_config(&policy, trust.clone(), anyone(), slots[0].take().unwrap());
    let server = server_config(&policy, trust, anyone(), slots[1].take().unwrap());
    Seeds {
        caller: SpiffeId::parse("spiffe://fuzz.test/caller").unwrap(),
        ca,
        client: Arc::new(client.unwrap()),
        server: Arc::new(server.unwrap()),
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn wireguard_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use gotatun::noise::index_table::IndexTable;
    use gotatun::noise::rate_limiter::RateLimiter;
    use gotatun::noise::{Tunn, TunnResult};
    use gotatun::packet::{Packet, WgKind};
    use gotatun::x25519::{PublicKey, StaticSecret};

    let (a, b) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
    let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
    let limiter = |p: &PublicKey| Arc::new(RateLimiter::new(p, 1 << 20));
    let mut i = Tunn::new(a, pb, None, None, IndexTable::from_os_rng(), limiter(&pa));
    let mut r = Tunn::new(b, pa, None, None, IndexTable::from_os_rng(), limiter(&pb));
    let bytes_of = |k: WgKind| Packet::from(k).to_vec();
    let parse = |b: &[u8]| {
        Packet::from_bytes(bytes::BytesMut::from(b))
            .try_into_wg()
            .unwrap()
    };
    let init = bytes_of(i.format_handshake_initiation(false).unwrap().into());
    let mut out = vec![("init", init.clone())];
    let TunnResult::WriteToNetwork(resp) = r.handle_incoming_packet(parse(&init)) else {
        panic!("responder refused")
    };
    let resp = bytes_of(resp);
    out.push(("response", resp.clone()));
    if let TunnResult::WriteToNetwork(ka) = i.handle_incoming_packet(parse(&resp)) {
        out.push(("keepalive", bytes_of(ka)));
    }
    let mut syn = [0u8; 40];
    syn[0] = 0x45;
    syn[3] = 40;
    syn[8] = 64;
    syn[9] = 6;
    syn[12..16].copy_from_slice(&[10, 99, 0, 1]);
    syn[16..20].copy_from_slice(&[10, 99, 0, 2]);
    syn[22..24].copy_from_slice(&80u16.to_be_bytes());
    syn[32] = 0x50;
    syn[33] = 0x02;
    if let Ok(data) = i.encapsulate_with_session(Packet::copy_from(&syn[..])) {
        out.push(("data-syn", bytes_of(data.into())));
    }
    out
}

fn main() {
    let f = seeds_pki();
    let ids = [
        "spiffe://example.org/ns/default/sa/web",
        "spiffe://example.org",
        "SPIFFE://td/a/.../b",
        "spiffe://example.org/a//b",
        "spiffe://ex:80/a",
        "spiffe://example.org/a?x#y",
    ];
    for (i, s) in ids.iter().enumerate() {
        write("spiffe_id", &i.to_string(), s.as_bytes());
        write("spiffe_id_differential", &i.to_string(), s.as_bytes());
    }
    for (i, s) in ["example.org", "spiffe://td", "a.b-c_d", "UPPER"]
        .iter()
        .enumerate()
    {
        write("trust_domain", &i.to_string(), s.as_bytes());
        write("spiffe_id_differential", &format!("td-{i}"), s.as_bytes());
    }
    // The differential target also gets an intended difference (FUZZING.md) and the scheme's
    // case.
    write(
        "spiffe_id_differential",
        "uppercase-trust-domain",
        b"spiffe://Example.ORG/ns/default/sa/Web",
    );
    write(
        "spiffe_id_differential",
        "mixed-case-scheme",
        b"SpIfFe://example.org",
    );

    let id = SpiffeId::parse("spiffe://fuzz.test/seed").unwrap();
    let svid = f.ca.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap();
    let mut leaf = vec![255u8];
    leaf.extend_from_slice(&svid.chain()[0]);
    write("svid_der", "leaf", &leaf);
    let mut with_root = vec![128u8];
    with_root.extend_from_slice(&svid.chain()[0]);
    with_root.extend_from_slice(&f.ca.bundle().roots()[0]);
    write("svid_der", "leaf-root", &with_root);

    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    write("csr_sign", "caller", &csr_for(&f.caller, &key).unwrap());
    write("csr_sign", "other", &csr_for(&id, &key).unwrap());
    let p384 = PrivateKey::generate(KeyAlgorithm::EcdsaP384).unwrap();
    write("csr_sign", "p384", &csr_for(&f.caller, &p384).unwrap());

    // A real ClientHello from our client, and our server's real answer to it.
    let mut client =
        rustls::ClientConnection::new(f.client.clone(), "fuzz.test".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    write("tls_server", "client-hello", &hello);
    let mut server = rustls::ServerConnection::new(f.server.clone()).unwrap();
    server.read_tls(&mut &hello[..]).unwrap();
    server.process_new_packets().unwrap();
    let mut answer = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut answer).unwrap();
    }
    write("tls_client", "server-flight", &answer);

    write("pem_bundle", "root", f.ca.bundle().to_pem().as_bytes());

    write(
        "hbone_connect",
        "full",
        b"10.0.0.1:8080\xffuserId=alice\xff00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\xfffor=\"10.0.0.2\"",
    );
    write("hbone_connect", "v6", b"[fd00::1]:443");
    write("hbone_connect", "hostname", b"db.example.org:5432");
    write(
        "hbone_connect",
        "hostname-upper",
        b"Svc.NS.svc.cluster.local.:8080",
    );

    // SOCKS5: a greeting, then a request (RFC 1928 §3, §4).
    write(
        "socks5_request",
        "connect-v4",
        b"\x05\x01\x00\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50",
    );
    write(
        "socks5_request",
        "connect-v6",
        b"\x05\x02\x02\x00\x05\x01\x00\x04\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x1f\x90",
    );
    write(
        "socks5_request",
        "connect-domain",
        b"\x05\x01\x00\x05\x01\x00\x03\x18svc.ns.svc.cluster.local\x1f\x90",
    );
    write(
        "socks5_request",
        "bind",
        b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
    );

    // A WireGuard initiation and a data packet, from the keys the fuzz target's engine uses.
    for (name, datagram) in wireguard_seeds() {
        write("wireguard_datagram", name, &datagram);
    }
    write("private_key", "pem", key.to_pem().as_bytes());
    write("private_key", "pem-p384", p384.to_pem().as_bytes());

    // Identity-plane answers (the first byte picks the parser, as in the target).
    planes_seeds(&f, &svid);
}

fn planes_seeds(f: &Seeds, svid: &fipstun_identity::svid::Svid) {
    use fipstun_planes::proto::{
        IstioCertificateResponse, X509BundlesResponse, X509Svid, X509SvidResponse,
    };
    use prost::Message;
    let root = f.ca.bundle().roots()[0].to_vec();
    let chain: Vec<u8> = svid.chain().iter().flat_map(|c| c.to_vec()).collect();
    let tagged = |selector: u8, body: Vec<u8>| [vec![selector], body].concat();
    let response = X509SvidResponse {
        svids: vec![X509Svid {
            spiffe_id: svid.id().to_string(),
            x509_svid: chain.clone(),
            x509_svid_key: svid.key().to_rustls().secret_der().to_vec(),
            bundle: root.clone(),
            hint: String::new(),
        }],
        ..Default::default()
    };
    write(
        "planes_response",
        "x509-svid",
        &tagged(0, response.encode_to_vec()),
    );
    let bundles = X509BundlesResponse {
        bundles: [("fuzz.test".to_string(), root.clone())].into(),
        ..Default::default()
    };
    write(
        "planes_response",
        "bundles",
        &tagged(1, bundles.encode_to_vec()),
    );
    let istio = IstioCertificateResponse {
        cert_chain: vec![svid.chain_pem(), f.ca.bundle().to_pem()],
    };
    write(
        "planes_response",
        "istio-chain",
        &tagged(2, istio.encode_to_vec()),
    );
    write(
        "planes_response",
        "der-chain",
        &tagged(3, [chain, root].concat()),
    );
}
