//! fipstun-wireguard: a WireGuard-compatible backend, interoperable with wireguard-go.
//!
//! This crate will hold the WireGuard backend: a maintained Noise_IKpsk2 protocol engine, a
//! userspace TCP/IP stack for streams (no root, no TUN) and batched UDP I/O. It is never
//! FIPS-approved (ChaCha20-Poly1305, X25519 and BLAKE2s are not approved algorithms) and will
//! report itself as such. Nothing is implemented here yet; see `../shared/DESIGN.md` §5.
