//! fipstun-fips-tests: the FIPS conformance suite.
//!
//! The tests live in `tests/` and use only public APIs: every rustls config fipstun builds
//! reports `fips()`, handshakes between our client and server negotiate only approved
//! algorithms, non-FIPS peers are refused with a reason, and the negotiable suites, groups and
//! signature schemes equal a pinned list so a dependency upgrade cannot change them silently.
//! `tests/bad_input.rs` is the bad-input catalogue: malformed inputs across every parser of
//! untrusted bytes (SPIFFE IDs, CSRs, SVIDs, PEM, keys, HBONE CONNECT requests and headers,
//! WireGuard configuration text), each refused with its own typed error.
//! Run them with `cargo test -p fipstun-fips-tests` (the README's test command includes them).
