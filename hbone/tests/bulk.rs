//! End to end on loopback: 1 GiB each way through one HBONE stream, SHA-256 compared at the far
//! end, with half-close in both directions.

mod common;

use std::time::Instant;

use aws_lc_rs::digest;
use common::*;
use fipstun_hbone::{AllowAll, ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const GIB: u64 = 1 << 30;

/// Upstream that hashes everything it receives until EOF, then answers
/// `<count as 8 bytes LE><sha256>` and closes.
async fn hashing_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (n, hash) = hash_to_eof(&mut s).await;
        s.write_all(&n.to_le_bytes()).await.unwrap();
        s.write_all(&hash).await.unwrap();
        s.shutdown().await.unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_hash_matches_and_client_half_close_keeps_reading() {
    let pki = Pki::new();
    let target = hashing_upstream().await;
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let mut stream = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();

    let t0 = Instant::now();
    let sent_hash = send_pattern(&mut stream, GIB).await;
    // Half-close: END_STREAM upstream-bound; the reply must still arrive.
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "upload 1 GiB through HBONE: {secs:.2} s ({:.0} MiB/s)",
        1024.0 / secs
    );

    assert_eq!(reply.len(), 8 + 32, "count + SHA-256 after our half-close");
    assert_eq!(u64::from_le_bytes(reply[..8].try_into().unwrap()), GIB);
    assert_eq!(
        &reply[8..],
        &sent_hash[..],
        "SHA-256 at the far end differs"
    );
    let m = client.metrics();
    assert!(
        m.bytes_out >= GIB,
        "client counted {} bytes out",
        m.bytes_out
    );
    assert_eq!(srv.server.metrics().streams_opened, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_hash_matches_and_upstream_half_close_keeps_writing() {
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (hash_tx, hash_rx) = tokio::sync::oneshot::channel();
    let (tail_tx, tail_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let hash = send_pattern(&mut s, GIB).await;
        // The upstream closes first…
        s.shutdown().await.unwrap();
        hash_tx.send(hash).unwrap();
        // …and still receives what the client sends afterwards.
        let mut tail = Vec::new();
        s.read_to_end(&mut tail).await.unwrap();
        tail_tx.send(tail).unwrap();
    });
    let srv = start_server(&pki, ServerConfig::default(), AllowAll).await;
    let client = pki.client(ClientConfig::default());
    let mut stream = client
        .connect(
            target,
            &fipstun_hbone::HboneRoute::new(srv.addr, server_id()),
        )
        .await
        .unwrap();

    let t0 = Instant::now();
    let (n, got) = hash_to_eof(&mut stream).await;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "download 1 GiB through HBONE: {secs:.2} s ({:.0} MiB/s)",
        1024.0 / secs
    );
    assert_eq!(n, GIB);
    assert_eq!(got, hash_rx.await.unwrap(), "SHA-256 at the client differs");

    // We saw EOF; our direction is still open.
    stream.write_all(b"after your FIN").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(tail_rx.await.unwrap(), b"after your FIN");
    assert!(client.metrics().bytes_in >= GIB);
}

#[tokio::test]
async fn pattern_helpers_detect_changed_and_reordered_data() {
    // Guards the data generator and hash helpers the bulk tests rely on.
    let mut a = vec![0u8; 3 << 20];
    fill(&mut a, 0);
    let mut b = vec![0u8; 3 << 20];
    // Split inside a position stamp (4096..4104) and at odd places.
    fill(&mut b[..4100], 0);
    fill(&mut b[4100..9000], 4100);
    fill(&mut b[9000..], 9000);
    assert_eq!(a, b, "fill must depend only on the absolute position");
    let h1 = digest::digest(&digest::SHA256, &a);
    a[500] ^= 1;
    assert_ne!(h1.as_ref(), digest::digest(&digest::SHA256, &a).as_ref());
    a[500] ^= 1;
    // The 1 MiB base block repeats; the position stamps keep repeated blocks distinct.
    assert_ne!(a[..1 << 20], a[1 << 20..2 << 20]);
    let mut out = Vec::new();
    let h = send_pattern(&mut out, a.len() as u64).await;
    assert_eq!(out, a);
    assert_eq!(h, h1.as_ref());
    let (n, h2) = hash_to_eof(&mut &out[..]).await;
    assert_eq!((n, h2), (a.len() as u64, h));
}
