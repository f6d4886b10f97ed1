//! fipstun-hbone: the FIPS backend — TCP streams tunnelled as HTTP/2 `CONNECT` over mutual TLS.
//!
//! This crate will hold an HBONE client, server and connection pool (h2 over tokio-rustls on the
//! FIPS configurations built by `fipstun-identity`), wire-compatible with Istio's ztunnel on port
//! 15008. Nothing is implemented here yet; see the HBONE issue and `../shared/DESIGN.md` §4.
