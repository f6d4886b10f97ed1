//! Example programs for proxy authors; see `src/bin/`. This library is empty: each program
//! stands alone so it can be copied whole.
//!
//! - `hbone-client`: tunnel stdin/stdout to a target through an HBONE node.
//! - `hbone-server`: accept HBONE and forward what a policy allows.
//! - `proxy`: a local TCP listener forwarded through HBONE or WireGuard, picked by a flag.
//! - `spire-identity`: an identity streamed from SPIRE's Workload API, used for HBONE.
//!
//! ```sh
//! cargo run -p fipstun-examples --bin hbone-client -- --help
//! ```
#![forbid(unsafe_code)]
